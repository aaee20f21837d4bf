"""Assets ``captions`` (per shard), ``final_corpus`` (per shard) and ``bench_split`` (global).

Paper 3.1.5 (captions), 3.1.4 (instance-level artifact check), 3.3 (the bench's 200 images).
The library does the work (:mod:`curation.captioning.stage`, :mod:`curation.stages.final`);
these bodies sync with the store, attach metadata (counts, model calls, tokens and seconds per
client, caption quality distributions, one image's boxes and masks drawn on a thumbnail) and
run the checks.
"""


from dagster import AssetExecutionContext, MaterializeResult, MetadataValue

from assets._metadata import base_metadata, counts_table
from assets._stage import data_version, stage_asset, stage_metadata
from assets._store import prepare, publish, store_metadata
from assets.checks import run_checks, specs
from curation.stages.conservation import conserved
from orchestration.resources import CurationSettings, ObjectStoreResource, VLMEndpoint


def _quantiles(values: list) -> dict:
    import numpy as np

    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not v.size:
        return {"n": 0}
    q = np.quantile(v, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {"n": int(v.size), "mean": round(float(v.mean()), 4), "min": round(float(q[0]), 4),
            "p25": round(float(q[1]), 4), "median": round(float(q[2]), 4), "p75": round(float(q[3]), 4),
            "max": round(float(q[4]), 4)}


@stage_asset("captions", kinds={"python", "parquet"}, check_specs=specs("captions", with_scores=False))
def captions(context: AssetExecutionContext, settings: CurationSettings, store: ObjectStoreResource,
             vlm: VLMEndpoint) -> MaterializeResult:
    from curation.captioning.stage import run_captions
    from curation.reports import caption_overlay

    cfg = settings.config()
    layout = settings.layout()
    shard = context.partition_key
    prepared = prepare(context, store, settings, "captions", shard)
    clients = {use: vlm.client(cfg, name, base_dir=layout.root)
               for use, name in (("llm", "captions_llm"), ("vlm", "captions"), ("judge", "corpus"))}
    try:
        res = run_captions(layout, shard, cfg, clients)
    finally:
        for c in clients.values():
            if hasattr(c, "close"):
                c.close()
    rows, s = res.rows, res.summary
    md = base_metadata(res.table, res.path, s)
    md.update(stage_metadata(cfg, "captions", s))
    md["clients"] = MetadataValue.json(s.get("clients", {}))
    md["step_seconds"] = MetadataValue.json(s.get("step_seconds", {}))
    md["caption_quality"] = MetadataValue.json({
        "long_words (Table 2: 234.1 on average)": _quantiles([r.get("long_words") for r in rows]),
        "short_words": _quantiles([r.get("short_words") for r in rows]),
        "instance_coverage": _quantiles([r.get("instance_coverage") for r in rows]),
        "noun_match (hallucination proxy)": _quantiles([r.get("noun_match") for r in rows]),
        "instances_per_image": _quantiles([r.get("n_instances") for r in rows]),
    })
    md["instance_check"] = counts_table(
        [[d, sum(1 for r in rows if r.get("instance_decision") == d)] for d in ("pass", "fail", "judge_failed")],
        [("decision", "string"), ("images", "int")])
    md["backends"] = MetadataValue.json(sorted({r["backends"] for r in rows if r.get("backends")}))
    pick = next((r for r in rows if r.get("record") and r.get("n_instances")), None)
    if pick is not None:
        sheet = caption_overlay(layout, pick, layout.report_dir("captions", shard) / "instances.png")
        if sheet:
            md["instances_overlay"] = MetadataValue.path(str(sheet))
            md["instances_overlay_image"] = pick["image_id"]
    n_in = conserved(layout, "captions", shard, table=res.table)
    checks = run_checks("captions", res.table, n_in, with_scores=False)
    published = publish(context, store, settings, "captions", shard, checks)
    md.update(store_metadata(store, prepared, published))
    return MaterializeResult(metadata=md, check_results=checks, data_version=data_version(res.data_version))


@stage_asset("final_corpus", kinds={"python", "parquet"}, check_specs=specs("final_corpus", with_scores=False))
def final_corpus(context: AssetExecutionContext, settings: CurationSettings,
                 store: ObjectStoreResource) -> MaterializeResult:
    from curation.stages.final import run_final_corpus

    cfg = settings.config()
    layout = settings.layout()
    shard = context.partition_key
    prepared = prepare(context, store, settings, "final_corpus", shard)
    res = run_final_corpus(layout, shard, cfg)
    md = base_metadata(res.table, res.path, res.summary)
    md.update(stage_metadata(cfg, "final_corpus", res.summary))
    n_in = conserved(layout, "final_corpus", shard, table=res.table)
    checks = run_checks("final_corpus", res.table, n_in, with_scores=False)
    published = publish(context, store, settings, "final_corpus", shard, checks)
    md.update(store_metadata(store, prepared, published))
    return MaterializeResult(metadata=md, check_results=checks, data_version=data_version(res.data_version))


@stage_asset("bench_split", kinds={"python", "json"})
def bench_split(context: AssetExecutionContext, settings: CurationSettings,
                store: ObjectStoreResource) -> MaterializeResult:
    from curation.stages.final import PROMPTS_FILE, REFERENCE_DIR, run_bench_split, split_dir

    cfg = settings.config()
    layout = settings.layout()
    prepared = prepare(context, store, settings, "bench_split", None)
    split, counts = run_bench_split(layout, cfg)
    if len(split["image_ids"]) < split["n_requested"]:
        context.log.warning(f"bench split holds {len(split['image_ids'])} of {split['n_requested']} requested images "
                            f"(the final corpus has {split['n_final']})")
    published = publish(context, store, settings, "bench_split", None)
    d = split_dir(layout)
    return MaterializeResult(
        metadata={
            **stage_metadata(cfg, "bench_split", counts),
            "n_bench": len(split["image_ids"]), "n_requested": split["n_requested"], "n_final": split["n_final"],
            "rule": split["rule"], "split_version": split["version"],
            "image_ids": MetadataValue.json(split["image_ids"][:50]),
            "prompts_file": MetadataValue.path(str(d / PROMPTS_FILE)),
            "reference_dir": MetadataValue.path(str(d / REFERENCE_DIR)),
            "uhr_bench": f"uhr bench MODEL_DIR --prompts {d / PROMPTS_FILE} --reference {d / REFERENCE_DIR}",
            **store_metadata(store, prepared, published),
        },
        data_version=data_version(split["version"]),
    )

