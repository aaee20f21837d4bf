"""Asset ``candidate_pool`` (section 3.1.2): intersection of the five detections per shard."""


from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets._store import prepare, publish, store_metadata
from assets._metadata import base_metadata, counts_table, sheet_and_histograms
from assets.checks import run_checks, specs
from curation.manifest import read_manifest
from curation.stages import CODE_VERSIONS, load_thresholds, run_candidate_pool
from orchestration.partitions import shard_partitions
from orchestration.resources import CurationSettings, ObjectStoreResource


@asset(
    partitions_def=shard_partitions,
    deps=["image_scores", "purification_thresholds"],
    code_version=CODE_VERSIONS["candidate_pool"],
    group_name="curation",
    kinds={"python", "parquet"},
    check_specs=specs("candidate_pool"),
    description="Candidates: pass exposure AND sharpness AND flatness AND entropy top 60 % AND (S_L or S_A top 60 %).",
)
def candidate_pool(context: AssetExecutionContext, settings: CurationSettings,
                   store: ObjectStoreResource) -> MaterializeResult:
    cfg = settings.config()
    layout = settings.layout()
    shard = context.partition_key
    prepared = prepare(context, store, settings, "candidate_pool", shard)
    th = load_thresholds(layout)
    res = run_candidate_pool(layout, shard, cfg, th)
    rows = res.rows
    md = base_metadata(res.table, res.path, res.summary)
    crit = res.summary["criteria"]
    md["criteria"] = counts_table(
        [[k, v["evaluated"], v["passed"], v["evaluated"] - v["passed"], v["applied"]] for k, v in crit.items()],
        [("criterion", "string"), ("in", "int"), ("passed", "int"), ("rejected", "int"), ("applied", "bool")],
    )
    md["threshold_version"] = th.version
    md["aesthetics_note"] = th.aesthetics_note
    md["pass_rate"] = res.summary["passed"] / max(1, res.summary["rows_in"])
    md.update(sheet_and_histograms(
        rows, layout.report_dir("candidate_pool", shard), ["entropy", "laion_score"],
        {"entropy": th.entropy, "laion_score": th.laion}, f"candidate_pool {shard}",
    ))
    md["all_reasons"] = MetadataValue.json(
        {r["image_id"]: r["reject_reasons"] for r in rows if r["reject_reasons"]}
    )
    n_in = read_manifest(layout.manifest("image_scores", shard)).num_rows
    checks = run_checks("candidate_pool", res.table, n_in)
    published = publish(context, store, settings, "candidate_pool", shard, checks)
    md.update(store_metadata(store, prepared, published))
    return MaterializeResult(metadata=md, check_results=checks)
