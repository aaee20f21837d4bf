"""train_stage on CPU: safetensors checkpoints (no pickle), reload, resume after an interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from curation.config import load_config
from curation.upscale.storage import write_array
from training.checkpoint_io import load_tree, save_tree
from training.trainer import latest_checkpoint, train_stage

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    prof = d / "tiny.yaml"
    prof.write_text("profile: tiny\ntraining:\n  linear_scale: 0.03125\n")   # 4K -> 128 px, 8x8 Flux2 tokens
    rng = np.random.default_rng(0)
    recs = []
    for i, (h, w) in enumerate([(300, 400), (400, 300), (350, 350), (320, 330)]):
        p = d / f"img{i}.tif"
        write_array(p, (rng.random((h, w, 3)) * 255).astype(np.uint8))
        recs.append({"image_id": f"im{i}", "path": str(p), "long_caption": f"a photo of thing {i}",
                     "width": w, "height": h})
    return load_config(str(prof)), recs, d, prof


def _files(folder: Path) -> set[str]:
    return {p.suffix for p in folder.rglob("*") if p.is_file()}


def test_checkpoint_tree_roundtrip_without_pickle(tmp_path):
    ck = {"a": torch.arange(3), "opt": {0: {"step": torch.tensor(2.0), "betas": (0.9, 0.999)}},
          "f": float("inf"), "s": torch.Size([2, 3]), "nested": [{"__weird__": 1}], "none": None}
    save_tree(ck, tmp_path / "c")
    assert _files(tmp_path / "c") == {".json", ".safetensors"}
    back = load_tree(tmp_path / "c")
    assert torch.equal(back["a"], ck["a"]) and back["opt"][0]["betas"] == (0.9, 0.999)
    assert back["f"] == float("inf") and back["s"] == torch.Size([2, 3]) and back["nested"] == [{"__weird__": 1}]
    with pytest.raises(TypeError, match="no pickle"):
        save_tree({"x": object()}, tmp_path / "d")


def test_resume_gives_the_uninterrupted_loss_trajectory(setup, tmp_path):
    from diffusers import Flux2Transformer2DModel

    from training.ledger import LedgerRow

    cfg, recs, _, _ = setup
    full = train_stage(cfg, "I_full", "4K", recs, tmp_path / "a", max_steps=6, batch_size=2)
    part = train_stage(cfg, "I_full", "4K", recs, tmp_path / "b", max_steps=3, batch_size=2, checkpoint_every=2)
    assert latest_checkpoint(tmp_path / "b" / "checkpoints")[1] == 3
    rest = train_stage(cfg, "I_full", "4K", recs, tmp_path / "b", max_steps=6, batch_size=2, resume=True)
    assert rest.resumed_from_step == 3 and [s for s, _ in rest.losses] == [3, 4, 5]
    a = np.array([v for _, v in full.losses])
    b = np.array([v for _, v in part.losses + rest.losses])
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6), (a, b)
    # nothing pickled: checkpoints and exported weights are safetensors + JSON
    assert _files(tmp_path / "b" / "checkpoints") <= {".json", ".safetensors"}
    assert _files(tmp_path / "b" / "weights") == {".json", ".safetensors"}
    # the exported weights reload to the trained model, and equal the last checkpoint's weights
    model = Flux2Transformer2DModel.from_pretrained(str(tmp_path / "b" / "weights"))
    state = load_tree(rest.checkpoint)["state_dict"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["transformer." + k]), k
    # ledger row of this CPU run: CPU hours = 1 device x its wall clock, never GPU hours
    row = LedgerRow.from_result(rest, profile="tiny")
    assert row.unit == "CPU" and row.gpu_hours is None
    assert row.device_hours == pytest.approx(rest.wall_clock_s / 3600) and row.samples == rest.samples


def test_scheme_iii_resume_and_init_from_a_lower_tier(setup, tmp_path):
    cfg, recs, _, _ = setup
    full = train_stage(cfg, "III", "4K", recs, tmp_path / "a", max_steps=4, batch_size=1)
    train_stage(cfg, "III", "4K", recs, tmp_path / "b", max_steps=2, batch_size=1, checkpoint_every=1)
    rest = train_stage(cfg, "III", "4K", recs, tmp_path / "b", max_steps=4, batch_size=1, resume=True)
    assert np.allclose([v for _, v in full.losses][2:], [v for _, v in rest.losses], rtol=1e-5, atol=1e-6)
    assert full.extra["grid"] == [64, 64] and full.extra["token_px"] == 2   # 64^2 patches at 4K, any scale
    # 8K starts from the 4K checkpoint (init_from: {tier: 4K}); its patch is twice as large
    up = train_stage(cfg, "III", "8K", recs, tmp_path / "c", max_steps=1, batch_size=1,
                     init_checkpoint=full.checkpoint)
    assert up.extra["token_px"] == 4 and np.isfinite(up.losses[0][1])


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(setup, tmp_path):
    """A real SIGKILL of a training subprocess; the resumed run matches an uninterrupted one."""
    cfg, recs, d, prof = setup
    (d / "recs.json").write_text(json.dumps(recs))
    out = tmp_path / "killed"
    script = ("import json,sys; from curation.config import load_config; from training.trainer import train_stage; "
              f"train_stage(load_config({str(prof)!r}), 'I_full', '4K', json.load(open({str(d / 'recs.json')!r})), "
              f"{str(out)!r}, max_steps=400, batch_size=2, checkpoint_every=2)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=str(ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "losses.jsonl"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if log.exists() and len(log.read_text().splitlines()) >= 7:
                break
            assert proc.poll() is None, "the training subprocess ended before it was killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    ck, step = latest_checkpoint(out / "checkpoints")
    # a kill during a save may leave that save's ``.tmp`` folder; it is never taken for a checkpoint
    assert step >= 2 and ck.exists() and not ck.name.endswith(".tmp")
    for left in (out / "checkpoints").glob("*.tmp"):
        assert int(left.name.split("-")[1].split(".")[0]) > step
    target = step + 6
    rest = train_stage(cfg, "I_full", "4K", recs, out, max_steps=target, batch_size=2, resume=True)
    ref = train_stage(cfg, "I_full", "4K", recs, tmp_path / "ref", max_steps=target, batch_size=2)
    assert [s for s, _ in rest.losses] == list(range(step, target))
    assert np.allclose([v for _, v in ref.losses][step:], [v for _, v in rest.losses], rtol=1e-5, atol=1e-6)


def test_resume_with_gradient_accumulation(setup, tmp_path):
    """With 2 batches per optimizer step the resumed stream restarts at batch 2 x step."""
    cfg, recs, _, _ = setup
    acc = {"training": {**cfg.data["training"], "grad_accumulation": 2}}
    full = train_stage(acc, "I_lora", "4K", recs, tmp_path / "a", max_steps=4, batch_size=1, export=False)
    part = train_stage(acc, "I_lora", "4K", recs, tmp_path / "b", max_steps=3, batch_size=1, checkpoint_every=2,
                       export=False)
    assert part.checkpoint.endswith("step-00000003")
    import shutil
    shutil.rmtree(part.checkpoint)   # resume from step 2 (saved right after its optimizer step, not mid-accumulation)
    (tmp_path / "b" / "checkpoints" / "latest.json").write_text('{"checkpoint": "step-00000002", "global_step": 2}')
    rest = train_stage(acc, "I_lora", "4K", recs, tmp_path / "b", max_steps=4, batch_size=1, resume=True,
                       export=False)
    assert len(full.losses) == 8 and full.samples == 8 and full.epochs == 2.0   # 4 steps x 2 batches x 1 of 4 images
    assert np.allclose([v for _, v in full.losses][4:], [v for _, v in rest.losses], rtol=1e-5, atol=1e-6)


def test_ladder_i_full_4k_then_8k_from_the_epoch_3_checkpoint(setup, tmp_path):
    """Table A1 / E.1: I-Full 8K starts from the 4K checkpoint after 3 epochs (not the last one)."""
    from training import curriculum
    from training.trainer import stage_checkpoints

    cfg, recs, _, _ = setup
    four = train_stage(cfg, "I_full", "4K", recs, tmp_path / "4K", epochs=3.5, batch_size=2, export=False)
    # 4 images in 3 aspect buckets at batch 2: 3 batches per epoch; ceil(3.5 x 3) = 11 steps
    assert four.steps == 11 and four.epochs == pytest.approx(11 / 3) and four.extra["batches_per_epoch"] == 3
    ck = stage_checkpoints(tmp_path / "4K", "I_full", "4K")
    assert set(ck) == {"I_full/4K/epoch-3", "I_full/4K/final"}
    assert load_tree(ck["I_full/4K/epoch-3"])["global_step"] == 9
    stage8 = curriculum.ladder(cfg, "I_full")[1]
    start = curriculum.resolve_init(stage8, ck)
    assert start == ck["I_full/4K/epoch-3"]
    eight = train_stage(cfg, "I_full", "8K", recs, tmp_path / "8K", max_steps=1, batch_size=1, init_checkpoint=start,
                        export=False)
    assert eight.extra["grid"] == [16, 16] and np.isfinite(eight.losses[0][1])
