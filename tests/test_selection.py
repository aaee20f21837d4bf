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
