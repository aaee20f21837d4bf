"""Top-60 % relative cuts: ceil, ties kept, the OR of the aesthetic scores, one or no scorer."""

import math

import pytest

from curation import reasons
from curation.selection import compute_thresholds, decide_candidate, top_fraction_threshold


def test_top_fraction_keeps_ceil_0_6_n():
    scores = [float(i) for i in range(10)]  # keep ceil(6.0) = 6: 4..9
    assert top_fraction_threshold(scores, 0.6) == 4.0
    scores = [float(i) for i in range(11)]  # ceil(6.6) = 7: 4..10
    t = top_fraction_threshold(scores, 0.6)
    assert t == 4.0 and sum(s >= t for s in scores) == 7 == math.ceil(0.6 * 11)
    assert top_fraction_threshold([], 0.6) is None
    assert top_fraction_threshold([3.0], 0.6) == 3.0


def test_ties_at_threshold_are_kept():
    scores = [1, 2, 5, 5, 5, 5, 9, 9, 9, 9]  # 6th highest is 5; all four 5s kept -> 8 kept
    t = top_fraction_threshold(scores, 0.6)
    assert t == 5 and sum(s >= t for s in scores) == 8


def _row(**kw):
    base = {"pass_exposure": True, "pass_sharpness": True, "pass_flatness": True, "entropy": 7.0,
            "laion_score": None, "artimuse_score": None, "reject_reason": None}
    base.update(kw)
    return base


def test_aesthetics_is_an_or_of_both_scorers():
    ent = [7.0] * 10
    laion = [float(i) for i in range(10)]           # t_L = 4
    art = [float(9 - i) for i in range(10)]          # t_A = 4 (reversed ranking)
    th = compute_thresholds(ent, laion, art, 0.6, 0.6)
    assert (th.laion, th.artimuse, th.aesthetics_applied) == (4.0, 4.0, True)
    # low S_L, high S_A -> kept ; high S_L, low S_A -> kept ; both low -> rejected
    assert decide_candidate(_row(laion_score=0.0, artimuse_score=9.0), th)["passed"]
    assert decide_candidate(_row(laion_score=9.0, artimuse_score=0.0), th)["passed"]
    d = decide_candidate(_row(laion_score=3.0, artimuse_score=3.0), th)
    assert not d["passed"] and d["reject_reason"] == reasons.LOW_AESTHETICS
    # with the OR, more than 60 % of the pool survives the aesthetics criterion
    kept = sum(decide_candidate(_row(laion_score=l, artimuse_score=a), th)["passed"] for l, a in zip(laion, art))
    assert kept == 10  # the two rankings are reversed: every image is in one top 60 %


def test_one_scorer_alone_and_none():
    ent = [7.0] * 5
    th = compute_thresholds(ent, [1.0, 2.0, 3.0, 4.0, 5.0], [None] * 5, 0.6, 0.6,
                            unavailable={"artimuse": "no endpoint"})
    assert th.aesthetics_applied and th.artimuse is None and th.laion == 3.0
    assert "artimuse" in th.aesthetics_note and "no endpoint" in th.aesthetics_note
    assert not decide_candidate(_row(laion_score=2.0), th)["passed"]
    assert decide_candidate(_row(laion_score=3.0), th)["passed"]
    none = compute_thresholds(ent, [None] * 5, [None] * 5, 0.6, 0.6,
                              unavailable={"laion": "no weights", "artimuse": "no endpoint"})
    assert not none.aesthetics_applied and "not applied" in none.aesthetics_note
    d = decide_candidate(_row(), none)
    assert d["passed"] and d["pass_aesthetics"] is None and d["aesthetics_applied"] is False


def test_each_detection_decides_on_its_own_and_order_of_reasons():
    th = compute_thresholds([1.0, 2.0, 3.0, 4.0, 5.0], [None] * 5, [None] * 5, 0.6, 0.6)
    d = decide_candidate(_row(pass_sharpness=False, pass_flatness=False, entropy=1.0), th)
    assert d["reject_reason"] == reasons.BLURRED
    assert d["reject_reasons"] == "blurred,flat,low_entropy"
    d = decide_candidate(_row(reject_reason=reasons.TRUNCATED), th)
    assert d["reject_reason"] == reasons.TRUNCATED and d["pass_richness"] is None


def test_threshold_version_changes_with_inputs():
    a = compute_thresholds([1.0, 2.0], [None] * 2, [None] * 2, 0.6, 0.6, shards=["s0"])
    b = compute_thresholds([1.0, 2.0], [None] * 2, [None] * 2, 0.6, 0.6, shards=["s0", "s1"])
    c = compute_thresholds([1.0, 2.0], [None] * 2, [None] * 2, 0.6, 0.6, shards=["s0"])
    assert a.version != b.version and a.version == c.version


def test_streaming_selection_equals_the_in_memory_cut():
    """The shard-by-shard reduce picks exactly top_fraction_threshold's value: ties, NaN, few
    distinct values, values closer than any bin, several narrowing passes."""
    import numpy as np

    from curation.selection import streaming_top_fraction_thresholds

    rng = np.random.default_rng(0)
    for trial in range(60):
        chunks = []
        for _ in range(int(rng.integers(1, 8))):
            m = int(rng.integers(0, 400))
            v = [rng.normal(7, 0.3, m), rng.integers(0, 4, m).astype(float), np.round(rng.uniform(0, 1, m), 2),
                 np.where(rng.uniform(size=m) < 0.2, np.nan, rng.normal(3, 1e-12, m))][trial % 4]
            chunks.append({"a": v, "b": -v})
        f = float(rng.uniform(0.01, 1.0))
        got = streaming_top_fraction_thresholds(lambda: iter(chunks), {"a": f, "b": 0.6},
                                                cap=int(rng.integers(1, 50)), bins=int(rng.integers(2, 16)))
        pool = np.concatenate([c["a"] for c in chunks])
        assert got == {"a": top_fraction_threshold(list(pool), f), "b": top_fraction_threshold(list(-pool), 0.6)}


def test_run_thresholds_streams_and_matches_compute_thresholds(tmp_path, test_cfg):
    """run_thresholds over shard manifests = compute_thresholds over the whole pool (same version)."""
    import numpy as np

    from curation.layout import DataLayout
    from curation.manifest import IMAGE_SCORES, to_table, write_manifest
    from curation.stages import run_thresholds

    layout = DataLayout.at(tmp_path)
    rng = np.random.default_rng(1)
    ent, lai, art = [], [], []
    digest = __import__("hashlib").sha256()  # what the in-memory reduce hashed: versions stay the same
    for s in range(5):
        digest.update(f"s{s}".encode() + b"\0")
        rows = []
        for i in range(50):
            passed = i % 9 != 0
            e = float(np.round(rng.uniform(6, 8), 3))
            la = None if i % 11 == 0 else float(rng.uniform(3, 7))
            rows.append({"image_id": f"{s:02d}{i:04d}", "shard": f"s{s}", "source_path": "x", "entropy": e,
                         "laion_score": la, "artimuse_score": None, "passed": passed,
                         "config_hash": "c", "code_version": "v"})
            if passed:
                ent.append(e), lai.append(la), art.append(None)
                digest.update(f"{s:02d}{i:04d}:{e!r}:{la!r}:None;".encode())
        write_manifest(to_table(rows, IMAGE_SCORES), layout.manifest("image_scores", f"s{s}"))
    th, _ = run_thresholds(layout, test_cfg, {"artimuse": "not installed"})
    ref = compute_thresholds(ent, lai, art, 0.6, 0.6, unavailable={"artimuse": "not installed"},
                             shards=[f"s{s}" for s in range(5)], inputs_digest=digest.hexdigest()[:16])
    assert th == ref and th.artimuse is None and th.laion is not None
