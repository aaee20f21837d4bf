"""Assets ``image_scores`` (map, per shard) and ``purification_thresholds`` (reduce, all shards).

Section 3.1.2: the five detections run on every screened image of the raw pool. One
decode per image yields every score; the absolute filters decide per image, the relative
cuts (entropy, aesthetics) get one global threshold over all shards.
"""


from dagster import AssetExecutionContext, MaterializeResult, MetadataValue

from assets._store import prepare, publish, store_metadata
from assets._metadata import base_metadata, counts_table, sheet_and_histograms
from assets._stage import data_version, stage_asset, stage_metadata
from assets.checks import run_checks, specs
from curation.stages.conservation import conserved
from curation.stages import run_image_scores, run_thresholds
from curation.stages.purification import previous_thresholds_version
from orchestration.resources import AestheticModels, CurationSettings, ObjectStoreResource, VLMEndpoint


@stage_asset("image_scores", kinds={"python", "parquet"}, check_specs=specs("image_scores"))
def image_scores(context: AssetExecutionContext, settings: CurationSettings, aesthetics: AestheticModels,
                 store: ObjectStoreResource, vlm: VLMEndpoint) -> MaterializeResult:
    cfg = settings.config()
    layout = settings.layout()
    shard = context.partition_key
    prepared = prepare(context, store, settings, "image_scores", shard)
    scorers, unavailable = aesthetics.load(cfg, vlm)
    for name, reason in unavailable.items():
        context.log.warning(f"aesthetic scorer {name} not available: {reason}")
    res = run_image_scores(layout, shard, cfg, scorers, unavailable)
    rows = res.rows
    pur = cfg["purification"]
    md = base_metadata(res.table, res.path, res.summary)
    md.update(stage_metadata(cfg, "image_scores", res.summary))
    md["absolute_filters"] = counts_table(
        [[name, sum(1 for r in rows if r[col] is not None), sum(1 for r in rows if r[col])]
         for name, col in (("exposure", "pass_exposure"), ("sharpness", "pass_sharpness"), ("flatness", "pass_flatness"))],
        [("filter", "string"), ("evaluated", "int"), ("passed", "int")],
    )
    md["aesthetic_scorers"] = MetadataValue.json(
        {"available": [s.name for s in scorers], "unavailable": unavailable}
    )
    md["decode_and_score_seconds"] = res.summary["seconds_total"]
    md.update(sheet_and_histograms(
        rows, layout.report_dir("image_scores", shard),
        ["exposure_fraction", "laplacian_var", "flat_fraction", "entropy", "laion_score"],
        {"exposure_fraction": pur["exposure"]["max_fraction"], "laplacian_var": pur["sharpness"]["min_laplacian_var"],
         "flat_fraction": pur["flatness"]["max_textureless_fraction"]},
        f"image_scores {shard}", root=layout.root,
    ))
    n_in = conserved(layout, "image_scores", shard, table=res.table)
    checks = run_checks("image_scores", res.table, n_in)
    published = publish(context, store, settings, "image_scores", shard, checks)
    md.update(store_metadata(store, prepared, published))
    return MaterializeResult(metadata=md, check_results=checks, data_version=data_version(res.data_version))


@stage_asset("purification_thresholds", kinds={"python", "json"})
def purification_thresholds(context: AssetExecutionContext, settings: CurationSettings,
                            aesthetics: AestheticModels, store: ObjectStoreResource,
                            vlm: VLMEndpoint) -> MaterializeResult:
    cfg = settings.config()
    prepared = prepare(context, store, settings, "purification_thresholds", None)
    _, unavailable = aesthetics.load(cfg, vlm)
    before = previous_thresholds_version(settings.layout())
    th, path = run_thresholds(settings.layout(), cfg, unavailable)
    same = before == th.version
    context.log.info(th.aesthetics_note)
    published = publish(context, store, settings, "purification_thresholds", None)
    return MaterializeResult(
        metadata={
            "threshold_version": th.version,
            "entropy_threshold": th.entropy,
            "laion_threshold": th.laion,
            "artimuse_threshold": th.artimuse,
            "pool_size": th.n_pool,
            "kept_by_rank": int(-(-th.keep_fraction_entropy * th.n_pool // 1)),
            "aesthetics_applied": th.aesthetics_applied,
            "aesthetics_note": th.aesthetics_note,
            "shards": MetadataValue.json(th.shards),
            "thresholds_file": MetadataValue.path(str(path)),
            **stage_metadata(cfg, "purification_thresholds",
                             {"computed": 0 if same else th.n_pool, "reused": th.n_pool if same else 0}),
            **store_metadata(store, prepared, published),
        },
        data_version=data_version(th.version),
    )
