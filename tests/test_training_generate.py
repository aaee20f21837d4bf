"""Trained checkpoints as image generators (training/generate.py): the Euler flow sampler, the
latent decode, and each scheme's exported weights reloaded into a deterministic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from curation.config import load_config
from curation.upscale.storage import write_array
from evaluation.generation import ImageGenerator
from training.generate import decode_latents, euler_sample, load_generator, timesteps, unpatchify_latents
from training.trainer import train_stage


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each scheme trained 2 steps at 4K under linear_scale 1/8 (512 px, the smallest II runs at)."""
    d = tmp_path_factory.mktemp("gen")
    prof = d / "gen.yaml"
    prof.write_text("profile: gen\ntraining:\n  linear_scale: 0.125\n  sampling: {steps: 3}\n")
    cfg = load_config(str(prof))
    rng = np.random.default_rng(0)
    recs = []
    for i, (h, w) in enumerate([(600, 800), (800, 600), (700, 700)]):
        p = d / f"img{i}.tif"
        write_array(p, (rng.random((h, w, 3)) * 255).astype(np.uint8))
        recs.append({"image_id": f"im{i}", "path": str(p), "long_caption": f"a photo of thing {i}",
                     "width": w, "height": h})
    out = {}
    for scheme in ("I_full", "I_lora", "II", "III"):
        out[scheme] = train_stage(cfg, scheme, "4K", recs, d / scheme, max_steps=2, batch_size=1)
    return cfg, d, out


def test_timesteps_run_from_noise_to_data_and_shift_towards_noise():
    t = timesteps(4)
    assert torch.allclose(t, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    s = timesteps(4, shift=3.0)
    assert s[0] == 1 and s[-1] == 0 and bool((s[1:-1] > t[1:-1]).all()) and bool((s[:-1] > s[1:]).all())
    with pytest.raises(ValueError):
        timesteps(0)


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (3, 1.0), (7, 3.0)])
def test_euler_reaches_the_data_point_under_its_exact_velocity(steps, shift):
    # one-point data distribution c: x_t = (1 - t) c + t eps, so v(x, t) = eps - c = (x - c) / t,
    # which Euler integrates exactly to c at t = 0 whatever the step count
    c = torch.tensor([[0.3, -0.7, 0.1]])
    noise = torch.randn(1, 3, generator=torch.Generator().manual_seed(0))
    x0 = euler_sample(lambda x, t: (x - c) / t.view(-1, 1), noise, steps, shift)
    assert torch.allclose(x0, c, atol=1e-5)


def test_decode_inverts_the_latent_encoder():
    from training.data.latents import Flux2LatentEncoder, patchify_latents, tiny_flux2_vae

    z = torch.randn(2, 4, 6, 10)
    assert torch.equal(unpatchify_latents(patchify_latents(z)), z)
    vae = tiny_flux2_vae(seed=0)
    vae.bn.running_mean.uniform_(-1, 1)  # non-trivial batch-norm statistics, undone by the decode
    vae.bn.running_var.uniform_(0.5, 2)
    pixels = torch.rand(1, 3, 64, 48) * 2 - 1
    enc = Flux2LatentEncoder(vae)
    z = enc(pixels)
    assert z.shape == (1, 16, 4, 3)  # one token per 16 x 16 px
    direct = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
    assert torch.allclose(decode_latents(vae, z), direct, atol=1e-4)


@pytest.mark.parametrize("scheme,side", [("I_full", 128), ("I_lora", 128), ("II", 512), ("III", 128)])
def test_each_scheme_generates_deterministic_images_from_its_exported_weights(trained, scheme, side):
    cfg, d, res = trained
    gen = load_generator(cfg, scheme, "4K", d / scheme / "weights", name=f"ckpt-{scheme}")
    assert isinstance(gen, ImageGenerator) and gen.availability() == (True, None)
    a = gen.generate("a red house by a lake", side, side, seed=1)
    assert a.shape == (side, side, 3) and a.dtype == np.uint8 and a.std() > 0
    assert np.array_equal(a, gen.generate("a red house by a lake", side, side, seed=1))
    assert not np.array_equal(a, gen.generate("a red house by a lake", side, side, seed=2))
    wide = gen.generate("a red house by a lake", side * 2, side, seed=1)
    assert wide.shape == (side, side * 2, 3)
    info = gen.describe()
    assert info["steps"] == 3 and info["scheme"] == scheme and "offline_note" in info  # tiny backbone says so
    with pytest.raises(ValueError, match="not a multiple"):
        gen.generate("x", side + 4, side, seed=0)


def test_the_generator_holds_the_trained_weights(trained):
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    from training.checkpoint_io import load_tree
    from training.schemes.window_attention import installed_factors
    from training.schemes.windows import layer_factors

    cfg, d, res = trained
    # I-Full: the transformer equals the last checkpoint's weights
    gen = load_generator(cfg, "I_full", "4K", d / "I_full" / "weights")
    gen.generate("x", 32, 32, 0)
    state = load_tree(res["I_full"].checkpoint)["state_dict"]
    for k, v in gen._parts["transformer"].state_dict().items():
        assert torch.equal(v, state["transformer." + k]), k
    # I-LoRA: the base of the same seed plus exactly the trained adapter (B no longer zero)
    gen = load_generator(cfg, "I_lora", "4K", d / "I_lora" / "weights")
    gen.generate("x", 32, 32, 0)
    saved = load_file(str(next((d / "I_lora" / "weights").glob("*.safetensors"))))
    loaded = get_peft_model_state_dict(gen._parts["transformer"], adapter_name="uhrforge")
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in saved.items())
    # II: the window attention of the tier is installed again at load
    gen = load_generator(cfg, "II", "4K", d / "II" / "weights")
    gen.generate("x", 512, 512, 0)
    t = gen._parts["transformer"]
    assert installed_factors(t) == layer_factors(gen.window_schedule, len(t.transformer_blocks),
                                                 len(t.single_transformer_blocks))


def test_a_missing_checkpoint_is_unavailable_with_the_reason(trained, tmp_path):
    cfg, _, _ = trained
    gen = load_generator(cfg, "III", "4K", tmp_path / "nothing")
    ok, why = gen.availability()
    assert not ok and "no exported weights" in why
    with pytest.raises(RuntimeError, match="not available"):
        gen.generate("x", 64, 64, 0)
    (tmp_path / "empty").mkdir()
    assert "no safetensors" in load_generator(cfg, "III", "4K", tmp_path / "empty").availability()[1]
