"""Shape of the split modules: the public import paths still work and the bench runner and its
reports do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_reports_and_runner_share_results_without_a_cycle():
    assert "evaluation.runner" not in _imports(ROOT / "evaluation" / "reports.py")
    assert "evaluation.runner" not in _imports(ROOT / "evaluation" / "results.py")
    assert "evaluation.reports" not in _imports(ROOT / "evaluation" / "results.py")
    from evaluation import reports, results, runner

    assert runner.NOT_SELECTED is results.NOT_SELECTED and runner.BenchResult is results.BenchResult
    assert reports.NOT_SELECTED is results.NOT_SELECTED


def test_run_bench_is_named_phases_with_docstrings():
    from evaluation import runner

    for name in ("resolve_inputs", "load_metrics", "score_images", "aggregate_scores", "complete_records",
                 "assemble_result", "write_outputs", "log_run"):
        fn = getattr(runner, name)
        assert callable(fn) and (fn.__doc__ or "").strip(), name


def test_store_and_synth_packages_keep_their_public_names():
    import curation.store as store
    import curation.synth as synth
    from curation.hashing import md5_file, sha256_file
    from curation.imageio import content_hash

    for name in store.__all__:
        assert hasattr(store, name), name
    for name in synth.__all__:
        assert hasattr(synth, name), name
    assert store.sha256_file is sha256_file and store.md5_file is md5_file and content_hash is sha256_file


def test_one_registry_class_for_metrics_and_lineage_links():
    from curation.lineage import core
    from curation.registry import Registry
    from evaluation.metrics import METRICS, create_metric, list_metrics

    assert isinstance(METRICS, Registry) and isinstance(core._PROVIDERS, Registry)
    assert list_metrics() == METRICS.names() and "glcm" in METRICS
    assert type(create_metric("glcm")) is METRICS["glcm"]
    assert [p.stage for p in core.link_providers()]  # discovered through the registry
    reg = Registry("thing")
    reg.register("a", dict)
    assert reg.items() == [("a", dict)] and reg.values() == [dict]
    assert reg.unregister("a") is dict and "a" not in reg and reg.unregister("a") is None


def test_every_reject_reason_is_defined_in_reasons():
    from curation import corpus, reasons
    from curation.final_filters import judging

    for name in ("SEAM_DISCONTINUITY", "INCONSISTENT", "REGION_ARTIFACTS", "JUDGE_FAILED", "INSTANCE_ARTIFACTS",
                 "BELOW_100MP", "UPSCALE_FAILED", "DEFERRED"):
        assert getattr(corpus, name) == getattr(reasons, name) and getattr(reasons, name) in reasons.CORPUS_REASONS
    assert judging.JUDGE_FAILED is reasons.JUDGE_FAILED
    assert len(set(reasons.ALL + reasons.CORPUS_REASONS)) == len(reasons.ALL) + len(reasons.CORPUS_REASONS)
