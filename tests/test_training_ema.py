"""EMA of the trained weights (training/ema.py) and gradient checkpointing (not in the paper)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from curation.config import load_config
from curation.upscale.storage import write_array
from training.ema import EMACallback


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ema")
    prof = d / "tiny.yaml"
    prof.write_text("profile: tiny\ntraining:\n  linear_scale: 0.03125\n")   # 4K -> 128 px
    rng = np.random.default_rng(0)
    recs = []
    for i, (h, w) in enumerate([(300, 400), (400, 300), (350, 350)]):
        p = d / f"img{i}.tif"
        write_array(p, (rng.random((h, w, 3)) * 255).astype(np.uint8))
        recs.append({"image_id": f"im{i}", "path": str(p), "long_caption": f"a photo of thing {i}", "width": w,
                     "height": h})
    return load_config(str(prof)), recs


def _with(cfg, **training):
    c = copy.deepcopy(cfg)
    c.data["training"].update(training)
    return c


def test_the_average_follows_the_formula_with_warm_up():
    lin = torch.nn.Linear(2, 1, bias=False)
    frozen = torch.nn.Linear(2, 1, bias=False).requires_grad_(False)
    module = torch.nn.ModuleDict({"a": lin, "b": frozen})
    module.device = torch.device("cpu")
    cb = EMACallback(0.9)
    trainer = SimpleNamespace(global_step=0)
    cb.on_train_start(trainer, module)
    assert set(cb.shadow) == {"a.weight"}  # trainable parameters only
    expect = lin.weight.detach().clone()
    for step in range(1, 6):
        with torch.no_grad():
            lin.weight.add_(1.0)
        trainer.global_step = step
        d = min(0.9, (1 + step - 1) / (10 + step - 1))
        expect = d * expect + (1 - d) * lin.weight.detach()
        cb.on_train_batch_end(trainer, module, None, None, 0)
        cb.on_train_batch_end(trainer, module, None, None, 0)  # same step again (accumulation): no update
    assert cb.updates == 5 and torch.allclose(cb.shadow["a.weight"], expect)
    live = lin.weight.detach().clone()
    with cb.swapped(module):
        assert torch.allclose(lin.weight, expect)
    assert torch.equal(lin.weight, live)
    with pytest.raises(ValueError):
        EMACallback(1.0)


@pytest.mark.parametrize("scheme", ["I_full", "III"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(setup, scheme):
    from training import curriculum
    from training.trainer import build_module

    cfg, _ = setup
    stage = next(s for s in curriculum.ladder(cfg, scheme) if s.tier.name == "4K")
    g = torch.Generator().manual_seed(0)
    batch = {"pixels": torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, "prompt": ["a cat", "a dog"],
             "index": torch.tensor([0, 1]), "key": ["k0", "k1"]}
    out = []
    for ckpt in (False, True):
        m = build_module(stage, cfg, seed=0)
        if ckpt:
            m.enable_gradient_checkpointing()
        loss = m.flow_loss(batch)
        loss.backward()
        out.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = out
    assert torch.allclose(l0, l1) and set(g0) == set(g1) and len(g0) > 0
    assert all(torch.allclose(g0[k], g1[k], atol=1e-6, rtol=1e-4) for k in g0)


def test_training_with_ema_exports_the_average_and_resumes_it(setup, tmp_path):
    from diffusers import Flux2Transformer2DModel

    from training.trainer import train_stage

    cfg, recs = setup
    cfg = _with(cfg, ema={"decay": 0.5}, gradient_checkpointing=True)
    full = train_stage(cfg, "I_full", "4K", recs, tmp_path / "a", max_steps=4, batch_size=1)
    assert full.weights["ema"]["updates"] == 4
    avg = Flux2Transformer2DModel.from_pretrained(str(tmp_path / "a" / "weights")).state_dict()
    raw = Flux2Transformer2DModel.from_pretrained(str(tmp_path / "a" / "weights_raw")).state_dict()
    assert any(not torch.equal(avg[k], raw[k]) for k in avg)
    # interrupted after 2 steps, resumed: the same average (the shadow travels in the checkpoint)
    train_stage(cfg, "I_full", "4K", recs, tmp_path / "b", max_steps=2, batch_size=1, checkpoint_every=1, export=False)
    rest = train_stage(cfg, "I_full", "4K", recs, tmp_path / "b", max_steps=4, batch_size=1, resume=True)
    assert rest.resumed_from_step == 2 and rest.weights["ema"]["updates"] == 4
    again = Flux2Transformer2DModel.from_pretrained(str(tmp_path / "b" / "weights")).state_dict()
    assert all(torch.allclose(avg[k], again[k], atol=1e-6) for k in avg)
