"""Curriculum: tiers, Table A1 ladders, init_from, profile scaling (training/curriculum.py)."""

from __future__ import annotations

import pytest

from curation.config import ProfileError, load_config
from training import curriculum as cur


@pytest.fixture(scope="module")
def paper():
    return load_config("paper")


def _profile(tmp_path, body: str):
    p = tmp_path / "p.yaml"
    p.write_text("profile: tiny\n" + body)
    return load_config(str(p))


def test_tiers_at_the_papers_sizes(paper):
    expect = {"4K": (4096, 256, 65536), "8K": (8192, 512, 262144), "10K": (10240, 640, 409600)}
    for name, (side, g, tokens) in expect.items():
        t = cur.tier(paper, name)
        assert (t.side, t.grid, t.tokens, t.pixels, t.token_px) == (side, (g, g), tokens, side * side, 16)
    assert cur.tier(paper, "4K").pixels / 1e6 == pytest.approx(16.78, abs=0.01)     # ~16 MP
    assert cur.tier(paper, "10K").pixels / 1e6 == pytest.approx(104.86, abs=0.01)   # 100 MP tier
    # Scheme III: patches 64 / 128 / 320 (section 4.1) -> 64^2, 64^2, 32^2 tokens; public code's 160 at 10K
    assert [cur.tier(paper, n, "III").token_px for n in ("4K", "8K", "10K")] == [64, 128, 320]
    assert [cur.tier(paper, n, "III").grid[0] for n in ("4K", "8K", "10K")] == [64, 64, 32]
    assert cur.tier(paper, "10K", "III", patch_source="public_code").token_px == 160
    assert cur.patch_sizes(paper) == {"4K": 64, "8K": 128, "10K": 320}


def test_ladders_follow_table_a1(paper):
    lad = {s: cur.ladder(paper, s) for s in cur.SCHEMES}
    rows = {s: [(st.tier.name, st.epochs, st.paper_gpu_hours, str(st.init_from)) for st in lad[s]] for s in lad}
    assert rows["I_full"] == [("4K", 6, 21888, "base"), ("8K", 0.25, 10752, "4K@3")]
    assert rows["I_lora"] == [("4K", 3, 10368, "base"), ("8K", 0.25, 10752, "base"), ("10K", 0.32, 28416, "base")]
    assert rows["II"] == [("4K", 3, 9216, "base")]
    assert rows["III"] == [("4K", 4.3, 8448, "base"), ("8K", 2.9, 18432, "4K@final"), ("10K", 1.7, 23040, "8K@1")]
    assert {s: lad[s][0].lr for s in lad} == {"I_full": 1e-5, "I_lora": 1e-4, "II": 5e-5, "III": 5e-5}
    assert lad["I_lora"][0].extra["rank"] == 32
    assert lad["II"][0].partition_factors == ((1, 1), (8, 16), (16, 8), (4, 32), (32, 4))
    t = paper.data["training"]
    assert t["schemes"]["II"]["partition_factors"]["8K"] == t["schemes"]["II"]["partition_factors"]["10K"] == [
        [1, 1], [16, 32], [32, 16], [8, 64], [64, 8]]
    a2 = t["inference_table_a2"]
    assert (a2["I_full"]["8K"], a2["I_lora"]["10K"], a2["II"]["4K"], a2["III"]["10K"]) == (
        {"gpus": 8, "seconds": 1234}, {"gpus": 8, "seconds": 2977}, {"gpus": 8, "seconds": 71},
        {"gpus": 1, "seconds": 88})
    assert cur.checkpoint_epochs(lad["I_full"]) == {"4K": [3.0]}
    assert cur.checkpoint_epochs(lad["III"]) == {"8K": [1.0]}
    assert lad["I_full"][1].steps(95735, 8) == 2992  # 0.25 epoch of 95,735 images at batch 8


def test_init_from_resolution(paper):
    full8k = cur.ladder(paper, "I_full")[1]
    with pytest.raises(cur.CurriculumError, match="not been trained"):
        cur.resolve_init(full8k, {})
    ck = {cur.checkpoint_key("I_full", "4K", 3): "/ckpt/I_full/4K/epoch-3"}
    assert cur.resolve_init(full8k, ck) == "/ckpt/I_full/4K/epoch-3"
    assert cur.resolve_init(cur.ladder(paper, "I_lora")[2], {}) == "base"
    assert cur.checkpoint_key("III", "4K", None) == "III/4K/final"
    # a broken ladder is refused: init_from a later tier, or past that tier's epochs
    bad = {"training": {**paper.data["training"], "schemes": {"X": {"lr": 1e-4, "ladder": [
        {"tier": "4K", "epochs": 1, "init_from": {"tier": "8K", "epoch": 1}}]}}}}
    with pytest.raises(cur.CurriculumError, match="no earlier stage"):
        cur.ladder(bad, "X")
    bad["training"]["schemes"]["X"]["ladder"] = [{"tier": "4K", "epochs": 1},
                                                 {"tier": "8K", "epochs": 1, "init_from": {"tier": "4K", "epoch": 2}}]
    with pytest.raises(cur.CurriculumError, match="trains 1.0 epochs"):
        cur.ladder(bad, "X")


def test_profile_scales_sizes_not_logic(tmp_path):
    cfg = _profile(tmp_path, "training:\n  linear_scale: 0.125\n")
    t4 = cur.tier(cfg, "4K")
    assert (t4.side, t4.grid) == (512, (32, 32))
    # Scheme III's patch scales with the side: the token grid is the paper's
    assert [(cur.tier(cfg, n, "III").token_px, cur.tier(cfg, n, "III").grid[0]) for n in ("4K", "8K", "10K")] == [
        (8, 64), (16, 64), (40, 32)]
    # the factors of Scheme II never change; 1/8 is the smallest scale they fit
    assert cur.ladder(cfg, "II")[0].partition_factors[3] == (4, 32)
    small = _profile(tmp_path, "training:\n  linear_scale: 0.0625\n")
    with pytest.raises(cur.CurriculumError, match="partition factor"):
        cur.ladder(small, "II")
    assert cur.ladder(small, "I_full")[0].tier.grid == (16, 16)
    # a profile may not change a learning rate
    p = tmp_path / "lr.yaml"
    p.write_text("profile: x\ntraining:\n  schemes:\n    I_full:\n      lr: 0.1\n")
    with pytest.raises(ProfileError):
        load_config(str(p))


def test_training_library_imports_neither_dagster_nor_the_bench():
    """training/ is a library: no Dagster (the assets come later, in assets/) and no ``evaluation``;
    lazy imports inside functions count (parsed with ast)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    bad = []
    for path in sorted((root / "training").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            bad += [f"{path.relative_to(root)}:{node.lineno} {n}" for n in names
                    if n.split(".")[0] in ("dagster", "dagster_mlflow", "dagster_pipes", "evaluation", "assets",
                                           "orchestration")]
    assert not bad, bad
