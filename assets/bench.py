"""Asset ``bench_scores`` (PixVerve-Bench, paper 3.3 / appendix F): one partition per model.

A model is a folder of generated images under the bench root (``BenchSettings.bench_root``);
its name is the partition key of the dynamic partitions ``bench_models``
(:func:`register_bench_models` adds every model folder). Materialising a partition runs
:func:`evaluation.runner.run_bench` on that folder with the bench prompts file and the
reference set, logs one MLflow run, and rewrites the Table-3-like report over every model
materialised so far (``<data root>/reports/bench/all/table3.{md,csv,html}``).
"""


import hashlib
from pathlib import Path

from dagster import AssetExecutionContext, DynamicPartitionsDefinition, MaterializeResult, MetadataValue, asset

from orchestration.bench_resources import BenchSettings
from orchestration.resources import VLMEndpoint

bench_model_partitions = DynamicPartitionsDefinition(name="bench_models")


def _code_version() -> str:
    """Changes whenever a metric's protocol version (hence possibly its numbers) changes."""
    from evaluation.metrics import METRICS

    protos = ";".join(f"{n}={c.protocol_version}" for n, c in sorted(METRICS.items()))
    return "bench-runner/1+" + hashlib.sha256(protos.encode()).hexdigest()[:12]


BENCH_CODE_VERSION = _code_version()


def model_folders(bench_root: str | Path, exclude: tuple[str, ...] = ()) -> list[str]:
    """Sub-folders of the bench root that hold at least one image (sorted)."""
    from evaluation.runner import IMAGE_EXTS

    root = Path(bench_root)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in exclude and not p.name.startswith(".")):
        if any(f.suffix.lower() in IMAGE_EXTS for f in d.iterdir() if f.is_file()):
            out.append(d.name)
    return out


def register_bench_models(instance, bench_root: str | Path, models: list[str] | None = None) -> list[str]:
    """Add every model folder (or ``models``) as a ``bench_models`` partition; returns the keys."""
    keys = models if models is not None else model_folders(bench_root)
    known = set(instance.get_dynamic_partitions(bench_model_partitions.name))
    new = [k for k in keys if k not in known]
    if new:
        instance.add_dynamic_partitions(bench_model_partitions.name, new)
    return keys


def materialised_results(settings: BenchSettings, keys: list[str]) -> list:
    """The saved results of the given models that have been scored (partition order)."""
    from evaluation.runner import RESULT_FILE, load_result

    out = []
    for k in keys:
        p = settings.out_dir(k) / RESULT_FILE
        if p.exists():
            try:
                out.append(load_result(p))
            except (OSError, ValueError, TypeError, KeyError):
                continue
    return out


@asset(
    partitions_def=bench_model_partitions,
    code_version=BENCH_CODE_VERSION,
    group_name="bench",
    kinds={"python", "mlflow"},
    description="PixVerve-Bench scores of one model (a folder of generated images): every registered metric, "
                "unavailable ones with their reason; Table-3-like report over all scored models.",
)
def bench_scores(context: AssetExecutionContext, bench: BenchSettings, vlm: VLMEndpoint) -> MaterializeResult:
    from evaluation.reports import display_name, write_table3
    from evaluation.runner import run_bench

    model = context.partition_key
    folder = bench.model_dir(model)
    if not folder.is_dir():
        raise FileNotFoundError(f"bench model folder {folder} does not exist (partition {model!r})")
    result = run_bench(folder, bench.prompts_file, reference=bench.reference_dir, out_dir=bench.out_dir(model),
                       config=bench.bench_config(vlm), name=model, log=context.log.info)
    keys = list(context.instance.get_dynamic_partitions(bench_model_partitions.name))
    results = materialised_results(bench, keys)
    if not any(r.model == model for r in results):
        results.append(result)
    files = write_table3(results, bench.report_dir())
    md = Path(files["md"]).read_text()
    meta: dict = {
        "table": MetadataValue.md(md),
        "dagster/row_count": len(result.rows),
        "table_csv": MetadataValue.path(files["csv"]),
        "table_html": MetadataValue.path(files["html"]),
        "per_image_html": MetadataValue.path(result.files["html"]),
        "per_image_csv": MetadataValue.path(result.files["per_image_csv"]),
        "scores_json": MetadataValue.path(result.files["scores_json"]),
        "images": result.n_images,
        "missing": len(result.missing),
        "models_in_table": len(results),
        "judge_backend": str(result.judge.get("backend")),
        "scoring_s": float(result.timings["scoring_s"]),
        "unavailable": MetadataValue.json({k: v["reason"] for k, v in result.metrics.items() if v["value"] is None}),
        "protocols": MetadataValue.json(result.protocols),
    }
    for k, v in result.metrics.items():
        if v["value"] is not None:
            meta[f"score/{k}"] = MetadataValue.float(float(v["value"]))
    if result.mlflow:
        meta["mlflow_run_id"] = result.mlflow["run_id"]
        meta["mlflow_tracking_uri"] = result.mlflow["tracking_uri"]
    context.log.info("bench %s: %s", model, ", ".join(
        f"{display_name(k)}={v['value']:.4g}" for k, v in result.metrics.items() if v["value"] is not None))
    return MaterializeResult(metadata=meta)
