"""Asset ``raw_pool`` (section 3.1.1): ingest a shard, dedup by content hash, resolution screen."""


from dagster import AssetExecutionContext, MaterializeResult, MetadataValue

from assets._store import prepare, publish, store_metadata
from assets._metadata import base_metadata, counts_table, sheet_and_histograms
from assets._stage import data_version, stage_asset, stage_metadata
from assets.checks import run_checks, specs
from curation.stages.conservation import conserved
from curation.stages import run_raw_pool
from orchestration.resources import CurationSettings, ObjectStoreResource


@stage_asset("raw_pool", kinds={"python", "parquet"}, check_specs=specs("raw_pool"))
def raw_pool(context: AssetExecutionContext, settings: CurationSettings,
             store: ObjectStoreResource) -> MaterializeResult:
    cfg = settings.config()
    layout = settings.layout()
    prepared = prepare(context, store, settings, "raw_pool", context.partition_key)
    res = run_raw_pool(layout, settings.raw_dir(), context.partition_key, cfg)
    rows = res.rows
    md = base_metadata(res.table, res.path, res.summary)
    md.update(stage_metadata(cfg, "raw_pool", res.summary))
    md["config_hash"] = md["uhr/fingerprint"]
    md["profile"] = cfg.name
    md["by_tier"] = counts_table(
        [[k or "none", v] for k, v in sorted(res.summary["by_tier"].items(), key=lambda kv: str(kv[0]))],
        [("tier", "string"), ("images", "int")],
    )
    md["megapixels_total"] = float(sum(r["megapixels"] or 0 for r in rows))
    md.update(sheet_and_histograms(
        [dict(r, thumb_path=None) for r in rows], layout.report_dir("raw_pool", context.partition_key),
        ["megapixels"], {}, f"raw_pool {context.partition_key}", with_sheet=False, root=layout.root,
    ))
    md["licences"] = MetadataValue.json(
        {k: sum(1 for r in rows if r["licence"] == k) for k in sorted({r["licence"] for r in rows})}
    )
    expected = conserved(layout, "raw_pool", context.partition_key, settings.raw_dir(), res.table)
    checks = run_checks("raw_pool", res.table, expected, with_scores=True)
    published = publish(context, store, settings, "raw_pool", context.partition_key, checks)
    md.update(store_metadata(store, prepared, published))
    return MaterializeResult(metadata=md, check_results=checks, data_version=data_version(res.data_version))
