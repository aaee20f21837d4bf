"""The four schemes' LightningModules on tiny configs: flow matching, LoRA, Scheme II, Scheme III."""

from __future__ import annotations

import pytest
import torch

from training.schemes.flow import batch_generator, flow_pair, sample_timesteps
from training.schemes.text import HashTextEncoder


def _batch(h=64, w=64, b=2, seed=0, first=0):
    g = torch.Generator().manual_seed(seed)
    return {"pixels": torch.rand(b, 3, h, w, generator=g) * 2 - 1, "prompt": [f"a red fox {i}" for i in range(b)],
            "key": None, "index": torch.arange(first, first + b)}


def _flux(scheme, **kw):
    from training.data.latents import Flux2LatentEncoder, tiny_flux2_vae
    from training.schemes import flux2

    tr = flux2.tiny_flux2_transformer(seed=0)
    cls = {"I_full": flux2.SchemeIFull, "I_lora": flux2.SchemeILoRA, "II": flux2.SchemeII}[scheme]
    return cls(tr, Flux2LatentEncoder(tiny_flux2_vae()), HashTextEncoder(dim=64), **kw)


def _step(module, batch):
    opt = module.configure_optimizers()
    loss = module.flow_loss(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def test_flow_matching_objective():
    x0, noise = torch.zeros(2, 3), torch.ones(2, 3)
    xt, v = flow_pair(x0, noise, torch.tensor([0.0, 1.0]))
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], noise[1]) and torch.equal(v, noise - x0)
    t = sample_timesteps(1000, batch_generator(0, 0))
    assert 0 < t.min() and t.max() < 1 and abs(float(t.mean()) - 0.5) < 0.05
    assert torch.equal(sample_timesteps(4, batch_generator(5, 12)), sample_timesteps(4, batch_generator(5, 12)))
    text, ids = HashTextEncoder(dim=64, max_tokens=8)(["a red fox", ""])
    assert text.shape == (2, 8, 64) and ids.shape == (8, 4) and text[1].abs().sum() == 0


def test_scheme_i_full_trains_every_parameter():
    m = _flux("I_full", lr=1e-5)
    assert m.n_trainable() == sum(p.numel() for p in m.transformer.parameters())
    assert m.configure_optimizers().param_groups[0]["lr"] == 1e-5
    before = m.transformer.proj_out.weight.detach().clone()
    assert torch.isfinite(torch.tensor(_step(m, _batch())))
    assert not torch.equal(before, m.transformer.proj_out.weight)
    # the conditioning encoders are not part of the module state
    assert not any(k.startswith(("vae", "_encoders")) for k in m.state_dict())


def test_scheme_i_lora_freezes_the_base_and_exports_the_adapter(tmp_path):
    from training.schemes.flux2 import tiny_flux2_transformer

    m = _flux("I_lora", lr=1e-4, rank=32)
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {n.split(".lora_")[0].split(".")[-1] for n in names} >= {"to_q", "to_k", "to_v", "add_q_proj",
                                                                    "to_add_out", "to_qkv_mlp_proj"}
    lora_a = next(p for n, p in m.named_parameters() if n.endswith("to_q.lora_A.default.weight"))
    assert lora_a.shape[0] == 32
    base = tiny_flux2_transformer(seed=0)
    x, e = torch.randn(1, 16, 16), torch.randn(1, 8, 64)
    from training.schemes.flux2 import position_ids

    img, txt = position_ids((4, 4), 8)
    args = dict(hidden_states=x, encoder_hidden_states=e, timestep=torch.tensor([0.4]), img_ids=img, txt_ids=txt,
                return_dict=False)
    with torch.no_grad():
        assert torch.allclose(m.transformer(**args)[0], base(**args)[0], atol=1e-6)  # B = 0 at start
    frozen = m.transformer.proj_out.weight.detach().clone()
    for i in range(3):
        _step(m, _batch(seed=i))
    assert torch.equal(frozen, m.transformer.proj_out.weight)
    with torch.no_grad():
        tuned = m.transformer(**args)[0]
    assert not torch.allclose(tuned, base(**args)[0], atol=1e-6)
    info = m.export_weights(tmp_path / "lora")
    files = sorted(p.name for p in (tmp_path / "lora").iterdir())
    assert info["format"] == "lora" and files and all(f.endswith((".safetensors", ".json")) for f in files)
    base.load_lora_adapter(str(tmp_path / "lora"), prefix=None, use_safetensors=True,
                           weight_name="pytorch_lora_weights.safetensors")
    with torch.no_grad():
        assert torch.allclose(base(**args)[0], tuned, atol=1e-5)


def test_scheme_ii_installs_the_cycle_and_trains():
    from training.schemes.window_attention import installed_factors

    sched = [(1, 1), (8, 16), (16, 8), (4, 32), (32, 4)]
    m = _flux("II", lr=5e-5, window_schedule=sched)
    assert m.layer_factors == installed_factors(m.transformer) == [(1, 1), (8, 16), (16, 8), (4, 32)]
    loss = _step(m, _batch(512, 512, b=1))     # 32 x 32 tokens: the 4K grid at linear_scale 1/8
    assert torch.isfinite(torch.tensor(loss))
    with pytest.raises(ValueError):
        _flux("II", lr=5e-5, window_schedule=None)


def test_scheme_iii_pixel_patch_model(tmp_path):
    from training.schemes.pixel import SchemeIII, TinyPatchDiffusion, patchify, resample_patch_weights, \
        tiny_pixel_model, unpatchify

    x = torch.randn(2, 3, 32, 48)
    assert torch.equal(unpatchify(patchify(x, 8), (4, 6)), x)
    model = tiny_pixel_model(patch_size=8)
    m = SchemeIII(model, HashTextEncoder(dim=64), lr=5e-5)
    b = _batch(32, 48)
    with torch.no_grad():
        v = model(b["pixels"], torch.tensor([0.2, 0.9]), HashTextEncoder(dim=64)(b["prompt"])[0])
    assert v.shape == b["pixels"].shape
    losses = [_step(m, b) for _ in range(8)]
    assert losses[-1] < losses[0]           # same batch and noise: the objective goes down
    m.export_weights(tmp_path / "iii")
    assert sorted(p.suffix for p in (tmp_path / "iii").iterdir()) == [".json", ".safetensors"]
    again = TinyPatchDiffusion.from_pretrained(str(tmp_path / "iii"))
    t = torch.tensor([0.3, 0.6])
    txt = HashTextEncoder(dim=64)(b["prompt"])[0]
    with torch.no_grad():
        assert torch.allclose(again(b["pixels"], t, txt), model(b["pixels"], t, txt), atol=1e-6)
    # a tier change (64 -> 128 px patches, here 8 -> 16) keeps every weight but the patch embedding's shape
    bigger = tiny_pixel_model(patch_size=16)
    state = resample_patch_weights(model.state_dict(), bigger.state_dict())
    bigger.load_state_dict(state)
    flat = torch.full((1, 3, 32, 32), 0.5)
    emb_small = model.patch_in(patchify(flat, 8).flatten(2))
    emb_big = bigger.patch_in(patchify(flat, 16).flatten(2))
    assert torch.allclose(emb_small[0, 0], emb_big[0, 0], atol=1e-5)   # smooth input: same embedding
