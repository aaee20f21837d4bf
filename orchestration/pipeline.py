"""Run the curation assets on a Dagster instance, shard by shard, as the demo, tests and DVC do.

Order: for every shard (key order) ``raw_pool`` + ``image_scores``; then
``purification_thresholds`` once; then ``candidate_pool`` (and ``corpus_100mp``) for every
shard. Each step is a Dagster run on the given instance, so the UI shows every materialisation
afterwards. ``assets=[...]`` runs only the named assets (one DVC stage each, ``uhr materialize
--asset``), through the same jobs restricted to that asset.

The object store is synced by the assets themselves (``assets._store``: inputs fetched before,
outputs published after, through the ``store`` resource), so a run on any fresh worker works;
here the store only lists the raw shards when it is their source (``raw_prefix``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions

from curation.raw_pool import list_shards, unusable_shards
from curation.retry import RetryPolicy, call_with_retry, is_database_unavailable
from orchestration.runs import fail_orphaned_runs, worker_tags

def curation_assets() -> tuple[str, ...]:
    """The stage-table stages in materialisation order (= ``uhr materialize --asset`` choices)."""
    from curation.stages.table import STAGES

    return STAGES.names()


#: the ``dagster.yaml`` written into a new Dagster home (values not in paper: operations settings).
#: ``run_monitoring``: the daemon (``make ui`` / ``dagster dev``) fails a run stuck starting or
#: canceling for 3 minutes, a run whose launcher reports its worker dead, and frees the concurrency
#: slots of a finished run after a minute; runs that ``uhr`` executes itself carry their worker
#: process (:data:`orchestration.runs.WORKER_TAG`) and are failed by
#: :func:`orchestration.runs.fail_orphaned_runs` once that process is gone.
#: ``concurrency: runs:`` the run queue's tag limits for the runs the sensors launch (the same as
#: ``infra/dagster/*.yaml``, where the memory rule for the scores limit is spelled out): one ingest
#: run at a time, up to two scores runs at once. ``uhr materialize`` runs jobs in its own process,
#: one after the other, outside the queue.
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 60
  free_slots_after_run_end_seconds: 60
concurrency:
  runs:
    tag_concurrency_limits:
      - key: uhrforge/ingest
        value: raw_pool
        limit: 1
      - key: uhrforge/pool
        value: scores
        limit: 2
"""

#: what earlier versions wrote (upgraded to :data:`DAGSTER_YAML` when found unchanged)
_OLD_DAGSTER_YAMLS = (
    "telemetry:\n  enabled: false\n",
    DAGSTER_YAML.split("concurrency:\n", 1)[0],  # before the run queue's tag limits
)


#: a job whose run storage could not be reached is run again within this budget (not in paper)
RUN_STORAGE_RETRY = RetryPolicy(attempts=5, backoff_s=2.0, backoff_max_s=30.0, deadline_s=180.0)


def fail_abandoned_attempts(instance: DagsterInstance, keep: str) -> list[str]:
    """Mark FAILED the unfinished runs of this process (its worker tag) other than ``keep``: the
    attempts of a job that the run storage outage cut off before they could record their end
    (materialize_all runs its jobs one at a time, so any other such run of this process is one)."""
    from dagster import DagsterRunStatus, RunsFilter

    tag = worker_tags()
    recs = instance.get_run_records(RunsFilter(tags=tag, statuses=[
        DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]))
    failed = []
    for rec in recs:
        if rec.dagster_run.run_id != keep:
            instance.report_run_failed(rec.dagster_run, "the run storage (Postgres) could not be reached during "
                                       "this attempt; the job was run again")
            failed.append(rec.dagster_run.run_id)
    return failed


def dagster_home_for(data_root: str | Path) -> Path:
    """The embedded default: sqlite storage under ``<data_root>/dagster_home`` (its ``dagster.yaml``
    is :data:`DAGSTER_YAML` unless someone wrote their own)."""
    home = Path(data_root).resolve() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists() or cfg.read_text() in _OLD_DAGSTER_YAMLS:
        tmp = cfg.with_name(f".dagster.yaml.{os.getpid()}.tmp")
        tmp.write_text(DAGSTER_YAML)
        os.replace(tmp, cfg)
    return home


def with_store(defs: Definitions, store) -> Definitions:
    """``defs`` with its ``store`` resource replaced (the same assets, checks, jobs and the rest)."""
    if defs.resources.get("store") is store:
        return defs
    return Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs,
                       resources={**defs.resources, "store": store}, sensors=defs.sensors,
                       schedules=defs.schedules, executor=defs.executor, loggers=defs.loggers,
                       metadata=defs.metadata)


def _check_assets(assets) -> list[str]:
    names = [assets] if isinstance(assets, str) else list(assets)
    known = curation_assets()
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        raise ValueError(f"unknown curation asset(s) {unknown or names}: choose from {', '.join(known)}")
    return [a for a in known if a in names]


def stage_counts(result, counts: dict[str, dict]) -> None:
    """Add one run's materialisations to ``counts``: per stage, partitions and images computed / reused
    (from the ``uhr/images_*`` metadata every stage asset reports)."""
    from assets._stage import COMPUTED, REUSED

    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        name = mat.asset_key.to_user_string()
        if name not in counts:
            continue
        md = mat.metadata
        c = counts[name]
        c["partitions"] += 1
        c["computed"] += int(md[COMPUTED].value) if COMPUTED in md else 0
        c["reused"] += int(md[REUSED].value) if REUSED in md else 0


def materialize_all(defs: Definitions, instance: DagsterInstance, raw_root: str | Path,
                    log=print, with_corpus: bool = True, store=None, tracking_uri: str | None = None,
                    assets=None) -> dict:
    """Register every raw shard as a partition and materialise the stage table's graph.

    Jobs run in stage-table order: a partitioned job once per shard (key order), a global one
    once. ``store`` (an :class:`~orchestration.resources.ObjectStoreResource`, default: the
    ``store`` resource of ``defs``): the assets run with it -- each fetches its inputs from the
    store and publishes what it wrote -- and, with ``raw_prefix``, the shards are those under
    ``store.raw_prefix``. A store other than the one in ``defs`` replaces it for these runs.
    ``assets``: materialise only these (stage names, run in table order, every shard for the
    partitioned ones); ``with_corpus=False`` (only when ``assets`` is None) stops before
    ``corpus_100mp`` and what depends on it.
    ``tracking_uri``: log the round's data-flow counts and timings as one MLflow run.

    Returns ``{"shards", "timings", "stages"}``; ``stages`` lists per stage (table order) the
    partitions materialised and the images computed and reused.
    """
    from curation.stages.table import STAGES

    if store is not None:
        defs = with_store(defs, store)
    store = defs.resources.get("store")
    sync = store if store is not None and getattr(store, "enabled", False) else None
    selected = _check_assets(assets) if assets is not None else None
    if sync is not None and sync.raw_prefix:
        shards = sync.list_raw_shards()
        where = sync.get_store().url(sync.raw_prefix)
    else:
        shards = list_shards(raw_root)
        where = str(raw_root)
        for name in unusable_shards(raw_root):  # never ingested under a mangled key: said, not hidden
            log(f"  shard folder '{name}' skipped: its name is not a printable UTF-8 shard key; rename it")
    if not shards:
        raise RuntimeError(f"no shard folders under {where}")
    for run_id in fail_orphaned_runs(instance):  # a killed earlier run holds no slot, shows no STARTED
        log(f"  run {run_id}: its process is gone, marked failed")
    known = set(instance.get_dynamic_partitions("shards"))
    new = [s for s in shards if s not in known]
    if new:
        instance.add_dynamic_partitions("shards", new)
    timings: dict[str, float] = {}
    if selected is None:
        skip = set() if with_corpus or "corpus_100mp" not in STAGES else set(STAGES.downstream("corpus_100mp"))
        selected = [n for n in STAGES.names() if n not in skip]
        whole_jobs = True
    else:
        whole_jobs = False
    counts = {n: {"stage": n, "partitions": 0, "computed": 0, "reused": 0} for n in selected}

    def run(job_name: str, label: str, key: str, shard: str | None, only: list[str] | None = None):
        t0 = time.perf_counter()
        # run storage briefly unreachable (Postgres restarting): the job again, bounded; its stages
        # reuse what they committed. Any other failure propagates at once.
        retried = []

        def storage_down(exc: BaseException) -> bool:
            down = is_database_unavailable(exc)
            retried.append(down)
            return down

        res = call_with_retry(lambda: defs.resolve_job_def(job_name).execute_in_process(
            partition_key=shard, instance=instance, raise_on_error=True, tags=worker_tags(),
            asset_selection=[AssetKey(a) for a in only] if only else None),
            f"{label}{f' [{shard}]' if shard else ''}: Dagster run storage", RUN_STORAGE_RETRY,
            transient=storage_down)
        if any(retried):  # the attempts cut off by the outage must not stay NOT_STARTED / STARTED
            for run_id in fail_abandoned_attempts(instance, res.run_id):
                log(f"  run {run_id}: an attempt cut off by the run storage outage, marked failed")
        timings[key] = time.perf_counter() - t0
        stage_counts(res, counts)
        log(f"  {label}{f' [{shard}]' if shard else ''}: {'ok' if res.success else 'FAILED'} ({timings[key]:.1f} s)")
        return res

    if whole_jobs:  # each job of the table once per shard (or once), its stages together
        for job_name, names in STAGES.jobs().items():
            names = [n for n in names if n in selected]
            if not names:
                continue
            full = len(names) == len(STAGES.jobs()[job_name])
            label = " + ".join(names)
            for shard in (shards if STAGES[names[0]].partitioned else [None]):
                run(job_name, label, f"{job_name} {shard}" if shard else job_name, shard,
                    only=None if full else names)
    else:
        for name in selected:
            spec = STAGES[name]
            for shard in (shards if spec.partitioned else [None]):  # the job restricted to this asset
                run(spec.job, name, f"{name} {shard}" if shard else name, shard, only=[name])
    out = {"shards": shards, "timings": timings, "stages": list(counts.values())}
    if tracking_uri:
        from orchestration.platform import log_curation_run

        st = defs.resources.get("settings")
        out["mlflow"] = log_curation_run(st.layout(), st.config(), tracking_uri, shards=shards, timings=timings,
                                         store=sync.describe() if sync is not None else None)
        log(f"  mlflow run {out['mlflow']['run_id']} at {tracking_uri}")
    return out


def stages_table(stages: list[dict]) -> str:
    """The per-stage summary ``uhr materialize`` prints: stage, partitions, images computed / reused."""
    rows = [("stage", "partitions", "computed", "reused")]
    rows += [(s["stage"], str(s["partitions"]), str(s["computed"]), str(s["reused"])) for s in stages]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(rows[0]), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows[1:]])


