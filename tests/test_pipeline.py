"""End to end on the test profile: synthetic pool -> raw_pool -> image_scores -> thresholds -> candidate_pool.

Runs the real Dagster jobs on an ephemeral instance, then checks every labelled defect,
rows conserved, metadata and checks, idempotent re-runs and resuming from the cache.
"""

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation import reasons
from curation.config import load_config
from curation.filter_eval import evaluate, load_labels
from curation.layout import DataLayout
from orchestration.definitions import build_definitions
from orchestration.pipeline import materialize_all
from orchestration.resources import AestheticModels, CurationSettings


def _rows(layout, stage):
    out = []
    for p in layout.manifests(stage):
        out += pq.read_table(p).to_pylist()
    return out


@pytest.fixture(scope="module")
def run(materialised, tmp_path_factory):
    """A private copy of the session's materialised test profile (these tests re-run jobs on it)."""
    from orchestration.resources import ObjectStoreResource
    from orchestration.runs import instance_for

    data = materialised.copy(tmp_path_factory.mktemp("pipe") / "data")
    raw = data / "raw"
    defs = build_definitions({
        "settings": CurationSettings(data_root=str(data), raw_root=str(raw), profile="test"),
        "aesthetics": AestheticModels(),
        "store": ObjectStoreResource(),
    })
    instance = instance_for(data)
    yield {"cfg": load_config("test"), "raw": raw, "data": data, "defs": defs, "instance": instance,
           "out": materialised.out, "layout": DataLayout.at(data), "labels": load_labels(raw)}
    instance.dispose()


def _source(layout, row) -> str:
    """A row's source file as an absolute path (raw under the data root is written relative)."""
    return str(layout.resolve(row["source_path"]).resolve())


def test_every_file_has_a_row_and_rows_are_conserved(run):
    layout, labels = run["layout"], run["labels"]
    raw_rows = _rows(layout, "raw_pool")
    assert len(run["out"]["shards"]) >= 2
    assert {_source(layout, r) for r in raw_rows} == set(labels)
    scored = _rows(layout, "image_scores")
    cand = _rows(layout, "candidate_pool")
    assert len(scored) == sum(r["passed"] for r in raw_rows)
    assert len(cand) == len(scored)
    from curation.stages.fingerprint import fingerprints

    fps = fingerprints(run["cfg"])
    for stage, rows in (("raw_pool", raw_rows), ("image_scores", scored), ("candidate_pool", cand)):
        for r in rows:  # every row records its own stage's fingerprint, not the whole config's hash
            assert r["config_hash"] == fps[stage]
            assert r["passed"] == (r["reject_reason"] is None)


def test_labelled_defects_get_their_reason(run):
    layout, labels = run["layout"], run["labels"]
    raw_by = {_source(layout, r): r for r in _rows(layout, "raw_pool")}
    cand_by = {_source(layout, r): r for r in _rows(layout, "candidate_pool")}
    for path, lab in labels.items():
        exp = lab["expected_reason"]
        raw = raw_by[path]
        if exp in (reasons.DUPLICATE, reasons.NOT_AN_IMAGE, reasons.TOO_FEW_PIXELS, reasons.MIN_SIDE_TOO_SHORT):
            assert raw["reject_reason"] == exp, (lab, raw)
            continue
        assert raw["passed"], (lab, raw)
        c = cand_by[path]
        if exp == reasons.PASS:
            assert c["pass_exposure"] and c["pass_sharpness"] and c["pass_flatness"], (lab, c)
        elif exp == reasons.LOW_ENTROPY:
            assert c["pass_richness"] is False, (lab, c)
        else:
            assert c["reject_reason"] == exp, (lab, c)


def test_relative_cut_keeps_ceil_60_percent_and_aesthetics_not_applied(run):
    layout = run["layout"]
    th = json.loads((layout.thresholds_dir() / "latest.json").read_text())
    scored = [r for r in _rows(layout, "image_scores") if r["passed"]]
    n_keep = sum(r["entropy"] >= th["entropy"] for r in scored)
    assert n_keep >= math.ceil(0.6 * len(scored)) and th["n_pool"] == len(scored)
    assert th["aesthetics_applied"] is False and "not applied" in th["aesthetics_note"]
    cand = _rows(layout, "candidate_pool")
    assert all(r["threshold_version"] == th["version"] for r in cand)
    assert all(r["pass_aesthetics"] is None for r in cand)


def test_filter_precision_recall_from_labels(run):
    layout = run["layout"]
    ev = {e["reason"]: e for e in evaluate(run["labels"], _rows(layout, "raw_pool"), _rows(layout, "candidate_pool"),
                                           root=layout.root)}
    for reason in (reasons.DUPLICATE, reasons.TOO_FEW_PIXELS, reasons.MIN_SIDE_TOO_SHORT, reasons.TRUNCATED,
                   reasons.NOT_AN_IMAGE, reasons.OVER_OR_UNDER_EXPOSED, reasons.BLURRED, reasons.FLAT):
        assert ev[reason]["labelled"] >= 1, reason
        assert ev[reason]["recall"] == 1.0 and ev[reason]["precision"] == 1.0, ev[reason]
    assert ev[reasons.LOW_ENTROPY]["recall"] == 1.0


def test_materialisations_carry_metadata_and_checks_pass(run):
    instance = run["instance"]
    from dagster import AssetKey

    shard = run["out"]["shards"][0]
    for key in ("raw_pool", "image_scores", "candidate_pool"):
        ev = instance.get_latest_materialization_event(AssetKey(key))
        assert ev is not None, key
        md = ev.asset_materialization.metadata
        assert md["dagster/row_count"].value > 0
        assert "dagster/column_schema" in md
        assert "outcomes" in md
    md = instance.get_latest_materialization_event(AssetKey("candidate_pool")).asset_materialization.metadata
    assert Path(md["contact_sheet"].value).exists() and Path(md["histograms"].value).exists()
    cmd = instance.get_latest_materialization_event(AssetKey("corpus_100mp")).asset_materialization.metadata
    assert "by_tier" in cmd and "check_pass_rates" in cmd and Path(cmd["contact_sheet"].value).exists()
    for check in ("rows_conserved", "passed_at_least_100mp", "lineage_and_scores_present"):
        rec = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [__import__("dagster").AssetCheckKey(AssetKey("corpus_100mp"), check)])
        ex = list(rec.values())[0]
        assert ex.evaluation is not None and ex.evaluation.passed, check
    assert "criteria" in md
    for key in ("raw_pool", "image_scores", "candidate_pool"):
        for check in ("manifest_schema", "rows_conserved", "score_ranges"):
            rec = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [__import__("dagster").AssetCheckKey(AssetKey(key), check)]
            )
            ex = list(rec.values())[0]
            assert ex.evaluation is not None and ex.evaluation.passed, (key, check)
    assert shard in instance.get_dynamic_partitions("shards")


def test_rerun_is_idempotent_and_resumes_from_cache(run, monkeypatch):
    layout = run["layout"]
    shard = run["out"]["shards"][0]
    before = pq.read_table(layout.manifest("image_scores", shard)).drop_columns(["seconds"])
    # a killed run: the manifest (commit marker) is gone, the per-image cache is there
    layout.manifest("image_scores", shard).unlink()

    def boom(*a, **k):
        raise AssertionError("cached images must not be decoded again")

    monkeypatch.setattr("curation.purify.score_one", boom)
    from curation.stages import run_image_scores

    res = run_image_scores(layout, shard, run["cfg"])
    assert res.table.drop_columns(["seconds"]).equals(before)
    monkeypatch.undo()
    # a full re-run through Dagster writes the same candidate rows
    cand_before = pq.read_table(layout.manifest("candidate_pool", shard))
    materialize_all(run["defs"], run["instance"], run["raw"], log=lambda *_: None)
    assert pq.read_table(layout.manifest("candidate_pool", shard)).equals(cand_before)


def test_lost_row_fails_the_blocking_check(run):
    from assets.checks import run_checks

    t = pq.read_table(run["layout"].manifest("candidate_pool", run["out"]["shards"][0]))
    results = {r.check_name: r for r in run_checks("candidate_pool", t.slice(1), t.num_rows)}
    assert results["rows_conserved"].passed is False
    assert results["manifest_schema"].passed is True


def test_materialize_selected_assets_runs_only_those(run):
    """``assets=[...]`` (``uhr materialize --asset``, one DVC stage): the same jobs, restricted to the
    asset, one run per shard (one in all for the thresholds), nothing else materialised."""
    from dagster import AssetKey, DagsterRunStatus

    instance, shards = run["instance"], run["out"]["shards"]
    before = {r.run_id for r in instance.get_runs()}
    out = materialize_all(run["defs"], instance, run["raw"], log=lambda *_: None,
                          assets=["purification_thresholds", "image_scores"])
    new = [r for r in instance.get_runs() if r.run_id not in before]
    assert sorted(out["timings"]) == sorted([f"image_scores {s}" for s in shards] + ["purification_thresholds"])
    assert sorted((r.job_name, tuple(k.to_user_string() for k in r.asset_selection)) for r in new) == sorted(
        [("shard_scores", ("image_scores",))] * len(shards)
        + [("purification_thresholds_job", ("purification_thresholds",))])
    assert all(r.status == DagsterRunStatus.SUCCESS for r in new)
    # image_scores ran before the thresholds (asset order, not argument order)
    first = {r.job_name: r for r in sorted(new, key=lambda r: instance.get_run_stats(r.run_id).start_time)}
    assert list(first)[0] == "shard_scores"
    for key in ("raw_pool", "candidate_pool", "corpus_100mp"):
        ev = instance.get_latest_materialization_event(AssetKey(key))
        assert ev.run_id in before, key
    with pytest.raises(ValueError, match="unknown curation asset"):
        materialize_all(run["defs"], instance, run["raw"], assets=["candidates"])
