"""Asset ``candidate_pool`` (section 3.1.2): intersection of the five detections per shard."""


from dagster import AssetExecutionContext, MaterializeResult, MetadataValue

from assets._store import prepare, publish, store_metadata
from assets._metadata import base_metadata, counts_table, sheet_and_histograms
from assets._stage import data_version, stage_asset, stage_metadata
from assets.checks import run_checks, specs
from curation.stages.conservation import conserved
from curation.stages import load_thresholds, run_candidate_pool
from orchestration.resources import CurationSettings, ObjectStoreResource


@stage_asset("candidate_pool", kinds={"python", "parquet"}, check_specs=specs("candidate_pool"))
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
    md.update(stage_metadata(cfg, "candidate_pool", res.summary))
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
        {"entropy": th.entropy, "laion_score": th.laion}, f"candidate_pool {shard}", root=layout.root,
    ))
    md["all_reasons"] = MetadataValue.json(
        {r["image_id"]: r["reject_reasons"] for r in rows if r["reject_reasons"]}
    )
    n_in = conserved(layout, "candidate_pool", shard, table=res.table)
    checks = run_checks("candidate_pool", res.table, n_in)
    published = publish(context, store, settings, "candidate_pool", shard, checks)
    md.update(store_metadata(store, prepared, published))
    return MaterializeResult(metadata=md, check_results=checks, data_version=data_version(res.data_version))
