"""The Dagster code location: ``defs`` (assets, checks, jobs, resources from the environment)."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from assets.bench import bench_model_partitions, bench_scores
from assets.candidate_pool import candidate_pool
from assets.corpus import corpus_100mp
from assets.purification import image_scores, purification_thresholds
from assets.raw_pool import raw_pool
from assets.release import corpus_release
from orchestration.bench_resources import bench_settings_from_env
from orchestration.partitions import shard_partitions
from orchestration.automation import INGEST_TAG, RUN_RETRY_TAGS, SCHEDULES, SENSORS, apply_automation
from orchestration.platform import executor_from_env
from orchestration.resources import platform_resources_from_env, resources_from_env

ASSETS = apply_automation([raw_pool, image_scores, purification_thresholds, candidate_pool, corpus_100mp, bench_scores,
                           corpus_release])

shard_purification_job = define_asset_job(
    "shard_purification",
    selection=AssetSelection.assets(raw_pool, image_scores),
    partitions_def=shard_partitions,
    description="Map step for one shard: raw_pool -> image_scores.",
    run_tags={**RUN_RETRY_TAGS, **INGEST_TAG},
)
candidate_job = define_asset_job(
    "candidate_selection",
    selection=AssetSelection.assets(candidate_pool),
    partitions_def=shard_partitions,
    description="Apply step for one shard (after purification_thresholds).",
    run_tags=RUN_RETRY_TAGS,
)
thresholds_job = define_asset_job(
    "purification_thresholds_job",
    selection=AssetSelection.assets(purification_thresholds),
    description="Reduce step over all shards: the global relative-cut thresholds.",
    run_tags=RUN_RETRY_TAGS,
)
corpus_job = define_asset_job(
    "corpus_100mp_job",
    selection=AssetSelection.assets(corpus_100mp),
    partitions_def=shard_partitions,
    description="Tiered SR + final filtering for one shard (after candidate_pool).",
    run_tags=RUN_RETRY_TAGS,
)
bench_job = define_asset_job(
    "bench_scores_job",
    selection=AssetSelection.assets(bench_scores),
    partitions_def=bench_model_partitions,
    description="Score one model (a folder of generated images) on the bench: bench_scores[model].",
    run_tags=RUN_RETRY_TAGS,
)
release_job = define_asset_job(
    "release_job",
    selection=AssetSelection.assets(corpus_release),
    description="Freeze the passed corpus into a named release (run config: ops.corpus_release.config.name).",
)
JOBS = [shard_purification_job, candidate_job, thresholds_job, corpus_job, bench_job, release_job]


def build_definitions(resources: dict | None = None) -> Definitions:
    """Definitions with the given resources (tests) or the ones the environment configures.

    A resource dict without ``bench`` gets the bench settings from the environment, under the
    curation settings' data root when one is given."""
    res = dict(resources or resources_from_env())
    if "bench" not in res:
        settings = res.get("settings")
        res["bench"] = bench_settings_from_env(getattr(settings, "data_root", None))
    for key, resource in platform_resources_from_env().items():  # store, mlflow, vlm, dvc, postgres
        res.setdefault(key, resource)
    return Definitions(assets=ASSETS, jobs=JOBS, resources=res, sensors=SENSORS, schedules=SCHEDULES,
                       executor=executor_from_env())


defs = build_definitions()
