"""Automation: new-shard sensor, nightly re-run of what is stale, weekly bench, GPU pool, run retries.

* :data:`new_shard_sensor` -- watches the raw root (a local folder, or ``<store>/<raw_prefix>/``
  when the object store is the raw source) for shard folders it has not seen, registers them as
  ``shards`` dynamic partitions and requests a ``shard_ingest`` run (``raw_pool``) for each, in
  key order. Ingest runs carry :data:`INGEST_TAG`, which the run queue limits to one at a time
  (``raw_pool`` dedups first-seen-wins across shards). Its cursor holds the shards already
  handled; a shard still being written (newest file younger than ``UHR_SHARD_SETTLE_S``,
  default 120 s) waits for the next tick.
* :data:`scores_after_ingest_sensor` -- each ``shard_ingest`` run that succeeded since its cursor
  (the storage id of the last RUN_SUCCESS event handled: sensor-launched, a retry, a re-run from
  the UI) requests a ``shard_scores`` run (``image_scores``) for the same partition, run key
  ``scores-after-ingest:<ingest run id>``: one scores run per ingest run, whatever the sensor
  re-evaluates, and every success of a tick is handled in that tick, in order. Scores runs carry
  :data:`SCORES_TAG`, which the run queue limits to a few at once (``concurrency: runs:
  tag_concurrency_limits`` in ``infra/dagster/*.yaml``): shards score side by side while the next
  one ingests. Runs ``uhr`` executes in its own process (``uhrforge/worker`` tag: ``uhr
  materialize``, the demo) are not followed: ``materialize_all`` runs the scores job itself.
* Nightly, declaratively: :func:`apply_automation` puts :func:`nightly_if_stale` on the curation
  assets downstream of ``raw_pool``; :func:`automation_sensors` evaluate them (one sensor per
  run-queue tag set of the stage table, so nightly ingest and scores runs keep their limits). At the
  nightly tick an asset partition is requested only if it is missing, one of its parents was
  updated since it last ran, or its code version changed -- so only what is stale re-runs.
* :data:`weekly_bench_schedule` -- benches the newest registered checkpoint (today: the newest
  ``bench_models`` partition) unless it is already scored with the current bench code version.
* GPU pool: GPU assets carry ``pool="gpu"``; the instance caps it (``concurrency: pools:``
  in ``infra/dagster/*.yaml``; ``dagster instance concurrency set gpu N`` per host).
* Retries: ``run_retries`` in the instance yaml, :data:`RUN_RETRY_TAGS` on the jobs.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    map_asset_specs,
    schedule,
    sensor,
)

from curation.stages.table import STAGES
from orchestration.partitions import shard_partitions
from orchestration.resources import CurationSettings, ObjectStoreResource, env_setting

NIGHTLY_CRON = env_setting("UHR_NIGHTLY_CRON", default="0 2 * * *")
WEEKLY_BENCH_CRON = env_setting("UHR_WEEKLY_BENCH_CRON", default="0 4 * * 1")
TIMEZONE = env_setting("UHR_SCHEDULE_TZ", default="UTC")

#: the Dagster concurrency pool of the GPU stages (instance: ``concurrency: pools:``)
GPU_POOL = "gpu"
def _gpu_assets() -> tuple[str, ...]:
    """Assets (= step keys) that hold a GPU: the stage table's ``gpu`` stages (SR, captions), plus
    ``image_scores`` (the CLIP aesthetic scorer on a GPU pod, not pool-limited) and the bench models."""
    return tuple(dict.fromkeys(["image_scores", *(s.name for s in STAGES if s.pool == "gpu"), "bench_scores"]))


GPU_ASSETS = _gpu_assets()
#: run tags for transient failures (the daemon re-launches a failed run; needs ``run_retries``)
RUN_RETRY_TAGS = {"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"}
#: ingest runs share this tag; the run queue serialises it so shards ingest in key order
INGEST_TAG = {"uhrforge/ingest": "raw_pool"}
#: scores runs share this tag; the run queue runs up to N at once (``tag_concurrency_limits`` in
#: the instance yaml, default :data:`SCORES_RUN_LIMIT`). Each holds ``runtime.workers`` processes
#: within ``runtime.memory_budget_mb``: N x that budget must fit the node that runs them.
SCORES_TAG = {"uhrforge/pool": "scores"}
#: the limit the shipped instance configs give :data:`SCORES_TAG` (tests keep them equal)
SCORES_RUN_LIMIT = 2

#: ``UHR_AUTOMATION_STATUS=stopped`` starts the sensors and schedules switched off (a laptop
#: running ``dagster dev`` on demo data); production leaves them running
_STOPPED = (env_setting("UHR_AUTOMATION_STATUS") or "running").lower() == "stopped"
SENSOR_STATUS = DefaultSensorStatus.STOPPED if _STOPPED else DefaultSensorStatus.RUNNING
SCHEDULE_STATUS = DefaultScheduleStatus.STOPPED if _STOPPED else DefaultScheduleStatus.RUNNING

#: the per-shard jobs of the stage table that automation launches: ingest (``raw_pool``, serial)
#: and scores (``image_scores``, parallel up to the scores tag limit)
INGEST_JOB = "shard_ingest"
SCORES_JOB = "shard_scores"
BENCH_JOB = "bench_scores_job"


# -- declarative automation (the nightly re-run of what is stale) ------------------------------

def nightly_if_stale(cron: str = NIGHTLY_CRON, tz: str = TIMEZONE) -> AutomationCondition:
    """True at the first evaluation after each ``cron`` tick for an asset partition that is stale:
    missing, a parent updated since it was last requested or updated, or its code version
    changed -- and no parent missing or running, and not itself running."""
    stale = (
        AutomationCondition.missing()
        | (AutomationCondition.any_deps_updated() | AutomationCondition.code_version_changed()).since_last_handled()
    )
    ready = ~AutomationCondition.any_deps_missing() & ~AutomationCondition.any_deps_in_progress() \
        & ~AutomationCondition.in_progress()
    return (AutomationCondition.cron_tick_passed(cron, tz) & stale & ready).with_label(f"nightly_if_stale({cron})")


def code_changed_nightly(cron: str = NIGHTLY_CRON, tz: str = TIMEZONE) -> AutomationCondition:
    """For ``raw_pool`` (new shards come from the sensor): re-run nightly only after a code change."""
    return (
        AutomationCondition.cron_tick_passed(cron, tz)
        & AutomationCondition.code_version_changed().since_last_handled()
        & ~AutomationCondition.missing()
        & ~AutomationCondition.in_progress()
    ).with_label(f"code_changed_nightly({cron})")


def automation_conditions() -> dict[str, AutomationCondition]:
    """Asset name -> condition (what :func:`apply_automation` sets)."""
    nightly, ingest = nightly_if_stale(), code_changed_nightly()
    # stages that read the raw shards get new shards from the sensor: nightly only after a code change
    return {s.name: ingest if s.reads_raw else nightly for s in STAGES}


def apply_automation(assets: list) -> list:
    """The assets with :func:`automation_conditions` set (asset modules stay unchanged)."""
    conds = automation_conditions()

    def _set(spec):
        cond = conds.get(spec.key.to_user_string())
        return spec.replace_attributes(automation_condition=cond) if cond is not None else spec

    return list(map_asset_specs(_set, assets))


def automation_sensors() -> list[AutomationConditionSensorDefinition]:
    """The sensors that evaluate the stage table's automation conditions: one per distinct set of
    stage ``run_tags`` (the run queue's tag limits: a nightly ``raw_pool`` re-run still ingests one
    shard at a time, nightly ``image_scores`` runs count against the scores limit), named
    ``curation_nightly_automation_<tag value>``, and ``curation_nightly_automation`` for every
    other stage. A run an automation sensor launches carries its sensor's ``run_tags`` only, and
    an asset may be targeted by one automation sensor, hence one sensor per queue."""
    by_tags: dict[tuple, list[str]] = {}
    for st in STAGES:
        by_tags.setdefault(tuple(st.run_tags), []).append(st.name)
    out = []
    for tags, names in by_tags.items():
        suffix = "_".join(v for _, v in tags)
        out.append(AutomationConditionSensorDefinition(
            "curation_nightly_automation" + (f"_{suffix}" if suffix else ""),
            target=AssetSelection.assets(*names),
            run_tags={**RUN_RETRY_TAGS, **dict(tags)},
            default_status=SENSOR_STATUS,
            minimum_interval_seconds=60,
            description=f"Evaluates the automation conditions of {', '.join(names)}: at the nightly tick, only "
                        "stale partitions (missing, parent updated, code version changed) are requested"
                        + (f"; runs tagged {dict(tags)} for the run queue." if tags else "."),
        ))
    return out


AUTOMATION_SENSORS = automation_sensors()
#: the sensor of the stages without queue tags (the curation assets after purification)
curation_automation_sensor = next(s for s in AUTOMATION_SENSORS if s.name == "curation_nightly_automation")


# -- new shards -----------------------------------------------------------------------------

def _local_shard_status(raw_root: Path) -> dict[str, float]:
    """``{shard: newest entry mtime}`` for the shard folders :func:`list_shards` would ingest
    (every entry, sidecars included; ``lstat``: nothing followed or opened)."""
    from curation.raw_pool import list_shards, scan_shard

    out = {}
    for s in list_shards(raw_root):
        entries = scan_shard(raw_root / s)
        out[s] = max((_lstat_mtime(e.path) for e in entries), default=0.0)
    return out


def _lstat_mtime(path: Path) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def raw_shard_snapshot(settings: CurationSettings, store: ObjectStoreResource | None) -> tuple[str, dict[str, float]]:
    """(where, ``{shard: newest modification time}``) from the store's raw prefix or the local raw root."""
    if store is not None and store.enabled and store.raw_prefix:
        from curation.store import raw_shard_status

        st = store.get_store()
        status = raw_shard_status(st, store.raw_prefix)
        return st.url(store.raw_prefix.strip("/") + "/"), {k: v["last_modified"] for k, v in status.items()}
    root = settings.raw_dir()
    return str(root), _local_shard_status(root)


def _read_cursor(cursor: str | None) -> set[str]:
    if not cursor:
        return set()
    try:
        data = json.loads(cursor)
    except ValueError:
        return set()
    return set(data.get("seen", [])) if isinstance(data, dict) else set()


def new_shard_requests(context: SensorEvaluationContext, settings: CurationSettings,
                       store: ObjectStoreResource | None, settle_s: float | None = None,
                       job_name: str = INGEST_JOB) -> SensorResult | SkipReason:
    """The sensor's body (a plain function, so it can be tested and reused)."""
    settle = float(env_setting("UHR_SHARD_SETTLE_S", default="120") if settle_s is None else settle_s)
    where, status = raw_shard_snapshot(settings, store)
    seen = _read_cursor(context.cursor)
    now = time.time()
    fresh = sorted(s for s in status if s not in seen)
    ready = [s for s in fresh if now - status[s] >= settle]
    waiting = [s for s in fresh if s not in ready]
    if not ready:
        msg = f"no new shard under {where}"
        if waiting:
            msg += f" ({len(waiting)} still being written: {waiting[:5]})"
        return SkipReason(msg)
    known = set(context.instance.get_dynamic_partitions(shard_partitions.name))
    new = [s for s in ready if s not in known]
    requests = [
        RunRequest(run_key=f"new-shard:{s}", partition_key=s, job_name=job_name,
                   tags={**RUN_RETRY_TAGS, **INGEST_TAG, "uhrforge/trigger": "new_shard_sensor"})
        for s in new
    ]
    if waiting:
        context.log.info(f"{len(waiting)} shard(s) still being written, next tick: {waiting[:5]}")
    already = [s for s in ready if s in known]
    if already:
        context.log.info(f"{len(already)} shard(s) already registered, not re-run: {already[:5]}")
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[shard_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps({"seen": sorted(seen | set(ready))}, separators=(",", ":")),
    )


@sensor(
    name="new_shard_sensor",
    job_name=INGEST_JOB,
    minimum_interval_seconds=int(env_setting("UHR_SHARD_SENSOR_INTERVAL_S", default="60")),
    default_status=SENSOR_STATUS,
    description="New raw shard folder (local raw root or the store's raw prefix) -> a `shards` partition "
                f"and a {INGEST_JOB} run for it ({SCORES_JOB} follows from scores_after_ingest_sensor).",
)
def new_shard_sensor(context: SensorEvaluationContext, settings: CurationSettings, store: ObjectStoreResource):
    return new_shard_requests(context, settings, store)


# -- scores after ingest -------------------------------------------------------------------------

SCORES_SENSOR = "scores_after_ingest_sensor"
#: ingest successes one tick handles at most (the rest wait for the next tick, in order)
SCORES_SENSOR_BATCH = 100


def scores_run_key(ingest_run_id: str) -> str:
    """The run key of the scores run an ingest run requests: one per ingest run."""
    return f"scores-after-ingest:{ingest_run_id}"


def scores_after_ingest_request(dagster_run, job_name: str = SCORES_JOB) -> RunRequest | SkipReason:
    """The scores run for the partition of the successful ingest run ``dagster_run``, or why none."""
    from dagster._core.storage.tags import PARTITION_NAME_TAG

    from orchestration.runs import WORKER_TAG

    if dagster_run.job_name != INGEST_JOB:
        return SkipReason(f"run {dagster_run.run_id} is a {dagster_run.job_name} run, not {INGEST_JOB}")
    if WORKER_TAG in dagster_run.tags:  # uhr materialize / the demo: materialize_all runs the scores job itself
        return SkipReason(f"run {dagster_run.run_id} was executed by uhr in its own process, which runs "
                          f"{job_name} itself")
    shard = dagster_run.tags.get(PARTITION_NAME_TAG)
    if not shard:
        return SkipReason(f"run {dagster_run.run_id} has no shard partition")
    return RunRequest(run_key=scores_run_key(dagster_run.run_id), partition_key=shard, job_name=job_name,
                      tags={**RUN_RETRY_TAGS, **SCORES_TAG, "uhrforge/trigger": SCORES_SENSOR,
                            "uhrforge/after_run": dagster_run.run_id})


def _read_event_cursor(cursor: str | None) -> int | None:
    try:
        data = json.loads(cursor) if cursor else None
    except ValueError:
        return None
    after = data.get("after_event") if isinstance(data, dict) else None
    return after if isinstance(after, int) else None


def _ingest_successes(instance, after: int | None, limit: int, ascending: bool = True):
    from dagster import DagsterEventType, RunStatusChangeRecordsFilter

    by_job = getattr(instance.event_log_storage, "supports_run_status_change_job_name_filter", False)
    flt = RunStatusChangeRecordsFilter(event_type=DagsterEventType.RUN_SUCCESS, after_storage_id=after,
                                       job_names=[INGEST_JOB] if by_job else None)
    return instance.fetch_run_status_changes(flt, limit=limit, ascending=ascending).records


def scores_after_ingest_requests(context: SensorEvaluationContext, job_name: str = SCORES_JOB,
                                 batch: int = SCORES_SENSOR_BATCH) -> SensorResult:
    """The sensor's body: one scores run per ingest run that succeeded since the cursor (the
    storage id of the last RUN_SUCCESS event handled), in the order they succeeded. The first tick
    starts the cursor at the newest ingest success (history is not replayed: the nightly automation
    scores what is missing)."""
    from dagster import RunsFilter

    instance = context.instance
    after = _read_event_cursor(context.cursor)
    cursor = lambda storage_id: json.dumps({"after_event": storage_id}, separators=(",", ":"))
    if after is None:
        newest = _ingest_successes(instance, None, 1, ascending=False)
        start = newest[0].storage_id if newest else 0
        return SensorResult(skip_reason=SkipReason(f"{SCORES_SENSOR} starts after event {start}"),
                            cursor=cursor(start))
    records = _ingest_successes(instance, after, batch)
    if not records:
        return SensorResult(skip_reason=SkipReason(f"no {INGEST_JOB} run succeeded since event {after}"),
                            cursor=cursor(after))
    ids = list(dict.fromkeys(r.event_log_entry.run_id for r in records))
    runs = {r.run_id: r for r in instance.get_runs(RunsFilter(run_ids=ids))}
    requests, skipped = [], []
    for run_id in ids:
        run = runs.get(run_id)
        if run is None or run.job_name != INGEST_JOB:  # deleted, or another job (storage without job filter)
            continue
        out = scores_after_ingest_request(run, job_name)
        (requests if isinstance(out, RunRequest) else skipped).append(out)
    for why in skipped:
        context.log.info(why.skip_message)
    return SensorResult(
        run_requests=requests, cursor=cursor(records[-1].storage_id),
        skip_reason=None if requests else SkipReason(f"{len(skipped)} {INGEST_JOB} success(es), none to score: "
                                                     + "; ".join(w.skip_message for w in skipped[:3])),
    )


@sensor(
    name=SCORES_SENSOR,
    job_name=SCORES_JOB,
    minimum_interval_seconds=int(env_setting("UHR_SHARD_SENSOR_INTERVAL_S", default="60")),
    default_status=SENSOR_STATUS,
    description=f"A successful {INGEST_JOB} run for a shard -> a {SCORES_JOB} run for that shard, run key "
                f"{scores_run_key('<ingest run id>')}; scores runs of different shards run in parallel up to "
                "the instance's uhrforge/pool=scores limit.",
)
def scores_after_ingest_sensor(context: SensorEvaluationContext):
    return scores_after_ingest_requests(context)


# -- weekly bench ------------------------------------------------------------------------------

def newest_checkpoint(instance) -> str | None:
    """The newest registered checkpoint: today the last-added ``bench_models`` partition.

    (When checkpoints are registered in the MLflow model registry, this is where the newest
    registered version is looked up and its bench folder registered.)"""
    from assets.bench import bench_model_partitions

    keys = list(instance.get_dynamic_partitions(bench_model_partitions.name))
    return keys[-1] if keys else None


def _benched_code_version(instance, partition: str) -> str | None:
    recs = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("bench_scores"), asset_partitions=[partition]), limit=1
    ).records
    if not recs:
        return None
    tags = recs[0].event_log_entry.dagster_event.event_specific_data.materialization.tags or {}
    return tags.get("dagster/code_version")


def weekly_bench_request(context: ScheduleEvaluationContext, job_name: str = BENCH_JOB):
    from assets.bench import BENCH_CODE_VERSION

    newest = newest_checkpoint(context.instance)
    if newest is None:
        return SkipReason("no checkpoint registered (no bench_models partition)")
    if _benched_code_version(context.instance, newest) == BENCH_CODE_VERSION:
        return SkipReason(f"{newest} is already scored with bench code version {BENCH_CODE_VERSION}")
    when = (context.scheduled_execution_time or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
    return RunRequest(run_key=f"weekly-bench:{newest}:{when}", partition_key=newest, job_name=job_name,
                      tags={**RUN_RETRY_TAGS, "uhrforge/trigger": "weekly_bench_schedule"})


@schedule(
    name="weekly_bench_schedule",
    cron_schedule=WEEKLY_BENCH_CRON,
    job_name=BENCH_JOB,
    execution_timezone=TIMEZONE,
    default_status=SCHEDULE_STATUS,
    description="Weekly: bench the newest registered checkpoint (skipped when already scored with this code).",
)
def weekly_bench_schedule(context: ScheduleEvaluationContext):
    return weekly_bench_request(context)


SENSORS = [new_shard_sensor, scores_after_ingest_sensor, *AUTOMATION_SENSORS]
SCHEDULES = [weekly_bench_schedule]
