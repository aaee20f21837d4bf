"""The Dagster code location: ``defs`` (assets, checks, jobs, resources from the environment)."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from assets.candidate_pool import candidate_pool
from assets.purification import image_scores, purification_thresholds
from assets.raw_pool import raw_pool
from orchestration.partitions import shard_partitions
from orchestration.resources import resources_from_env

ASSETS = [raw_pool, image_scores, purification_thresholds, candidate_pool]

shard_purification_job = define_asset_job(
    "shard_purification",
    selection=AssetSelection.assets(raw_pool, image_scores),
    partitions_def=shard_partitions,
    description="Map step for one shard: raw_pool -> image_scores.",
)
candidate_job = define_asset_job(
    "candidate_selection",
    selection=AssetSelection.assets(candidate_pool),
    partitions_def=shard_partitions,
    description="Apply step for one shard (after purification_thresholds).",
)
thresholds_job = define_asset_job(
    "purification_thresholds_job",
    selection=AssetSelection.assets(purification_thresholds),
    description="Reduce step over all shards: the global relative-cut thresholds.",
)
JOBS = [shard_purification_job, candidate_job, thresholds_job]


def build_definitions(resources: dict | None = None) -> Definitions:
    """Definitions with the given resources (tests) or the ones the environment configures."""
    return Definitions(assets=ASSETS, jobs=JOBS, resources=resources or resources_from_env())


defs = build_definitions()
