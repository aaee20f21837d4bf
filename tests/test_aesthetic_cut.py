"""The aesthetics criterion end to end with a tiny random-weight CLIP (one scorer available)."""

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from curation.config import load_config  # noqa: E402
from curation.layout import DataLayout  # noqa: E402
from curation.stages import run_candidate_pool, run_image_scores, run_raw_pool, run_thresholds  # noqa: E402
from orchestration.resources import AestheticModels  # noqa: E402


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("clip")
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, image_size=32, patch_size=8, projection_dim=768)
    transformers.CLIPVisionModelWithProjection(cfg).eval().save_pretrained(root / "clip")
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    head = torch.nn.Linear(768, 1)
    torch.save(head.state_dict(), root / "head.pth")
    return root / "clip", root / "head.pth"


def test_laion_only_cut(tmp_path, tiny_clip):
    from curation.synth import make_raw_pool

    cfg = load_config("test")
    make_raw_pool(tmp_path / "raw", 24, 3, cfg)
    layout = DataLayout.at(tmp_path / "data")
    models = AestheticModels(clip_model=str(tiny_clip[0]), head_path=str(tiny_clip[1]))
    scorers, unavailable = models.load(cfg)
    assert [s.name for s in scorers] == ["laion"] and "artimuse" in unavailable
    shard = "shard-00000"
    run_raw_pool(layout, tmp_path / "raw", shard, cfg)
    scored = run_image_scores(layout, shard, cfg, scorers, unavailable).rows
    ok = [r for r in scored if r["passed"]]
    assert ok and all(r["laion_score"] is not None and r["artimuse_score"] is None for r in ok)
    assert all("laion=" in r["aesthetic_models"] for r in scored)
    th, _ = run_thresholds(layout, cfg, unavailable)
    assert th.aesthetics_applied and th.laion is not None and th.artimuse is None
    assert "artimuse" in th.aesthetics_note
    cand = run_candidate_pool(layout, shard, cfg, th).rows
    kept = [r for r in cand if r["pass_aesthetics"]]
    assert len(kept) >= math.ceil(0.6 * len(ok))
    assert all(r["laion_score"] >= th.laion for r in kept)
    assert all(r["aesthetics_applied"] for r in cand)
