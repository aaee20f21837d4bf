"""The Dagster code location: ``defs`` (assets, checks, jobs, resources from the environment)."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

import assets.candidate_pool  # noqa: F401  (each stage module registers its @stage_asset)
import assets.captions  # noqa: F401
import assets.corpus  # noqa: F401
import assets.purification  # noqa: F401
import assets.raw_pool  # noqa: F401
from assets._stage import STAGE_ASSETS
from assets.bench import bench_model_partitions, bench_scores
from assets.release import corpus_release
from assets.training import checkpoint, checkpoint_bench, checkpoint_partitions, tier_partitions, training_set
from curation.stages.table import STAGES
from orchestration.bench_resources import bench_settings_from_env
from orchestration.partitions import shard_partitions
from orchestration.automation import INGEST_TAG, RUN_RETRY_TAGS, SCHEDULES, SENSORS, apply_automation
from orchestration.platform import executor_from_env
from orchestration.resources import platform_resources_from_env, resources_from_env
from orchestration.training_launch import training_launcher_from_env


def stage_assets(cfg=None) -> list:
    """The assets of every stage in the stage table, in table order. With ``cfg`` (a resolved
    profile) each asset's ``code_version`` is its stage fingerprint, so Dagster marks exactly the
    partitions a config change touches as stale."""
    missing = [s.name for s in STAGES if s.name not in STAGE_ASSETS]
    if missing:
        raise RuntimeError(f"stage(s) {missing} are in the stage table but have no @stage_asset body")
    out = [STAGE_ASSETS[s.name] for s in STAGES]
    if cfg is not None:
        from curation.stages.fingerprint import fingerprints

        fps = fingerprints(cfg)
        out = [a.map_asset_specs(lambda spec, fp=fps[name]: spec.replace_attributes(code_version=fp))
               for name, a in zip(STAGES.names(), out)]
    return out


def stage_jobs() -> list:
    """One asset job per ``job`` name of the stage table (its stages, in table order).

    Run tags: the retry tags, each stage's ``run_tags`` (the run queue's tag limits: ingest one at
    a time, scores a few at once), and :data:`~orchestration.automation.INGEST_TAG` on any job
    with a stage that reads the raw shards."""
    jobs = []
    for job, names in STAGES.jobs().items():
        specs = [STAGES[n] for n in names]
        partitioned = {s.partitioned for s in specs}
        if len(partitioned) != 1:
            raise RuntimeError(f"job {job} mixes partitioned and global stages: {names}")
        tags = dict(RUN_RETRY_TAGS)
        for s in specs:
            tags.update(dict(s.run_tags))
        if any(s.reads_raw for s in specs):
            tags.update(INGEST_TAG)
        jobs.append(define_asset_job(
            job, selection=AssetSelection.assets(*names),
            partitions_def=shard_partitions if partitioned == {True} else None,
            description=(f"One shard: {' -> '.join(names)}." if partitioned == {True}
                         else f"Over all shards: {' -> '.join(names)}."),
            run_tags=tags,
        ))
    return jobs


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
training_set_job = define_asset_job(
    "training_set_job", selection=AssetSelection.assets(training_set), partitions_def=tier_partitions,
    description="The training set of one tier (4K / 8K / 10K): final corpus minus the bench split, with its release.")
checkpoint_job = define_asset_job(
    "checkpoint_job", selection=AssetSelection.assets(checkpoint, checkpoint_bench), partitions_def=checkpoint_partitions,
    description="Train one stage of a ladder (scheme x tier, through Dagster Pipes), then bench the checkpoint.",
    run_tags=RUN_RETRY_TAGS,
)
OTHER_JOBS = [bench_job, release_job, training_set_job, checkpoint_job]
TRAINING_ASSETS = [training_set, checkpoint, checkpoint_bench]
#: every asset with the stage table's code versions (``build_definitions`` uses stage fingerprints)
ASSETS = apply_automation([*stage_assets(), bench_scores, corpus_release, *TRAINING_ASSETS])


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
    settings = res.get("settings")
    cfg = settings.config() if settings is not None else None
    res.setdefault("training_launcher", training_launcher_from_env())
    assets = apply_automation([*stage_assets(cfg), bench_scores, corpus_release, *TRAINING_ASSETS])
    return Definitions(assets=assets, jobs=[*stage_jobs(), *OTHER_JOBS], resources=res, sensors=SENSORS,
                       schedules=SCHEDULES, executor=executor_from_env())


defs = build_definitions()
