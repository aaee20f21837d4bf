"""The code location on an explicit data root, for the CLI and the demo (no environment writes).

* :func:`definitions_for` -- ``build_definitions`` with the curation settings given explicitly
  (data root, raw root, profile) and every other resource from the environment;
* :func:`instance_for` -- the Dagster instance of ``<data_root>/dagster_home``, opened directly
  (``DagsterInstance.from_config``), so runs land where ``make ui`` looks, whatever
  ``DAGSTER_HOME`` says;
* :func:`run_release_job` -- one ``release_job`` run (``uhr release`` and the demo);
* :func:`worker_tags` / :func:`fail_orphaned_runs` -- a run executed in this process carries its
  worker (host, pid, process start time); a run whose worker is gone (killed with ``kill -9``, the
  machine rebooted) is marked FAILED when the instance is next opened here, and its concurrency
  slots are freed, so a re-run is not blocked behind it. Runs launched by the daemon are watched by
  Dagster's run monitoring (``run_monitoring`` in the ``dagster.yaml`` the project writes).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions, DagsterRunStatus, RunsFilter

#: run tag naming the process that executes a run in-process: ``<host>:<pid>:<start time>``
WORKER_TAG = "uhrforge/worker"

_log = logging.getLogger(__name__)


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks after boot, ``/proc``), or None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()[19].decode()  # field 22 of proc(5)


def worker_tags() -> dict[str, str]:
    """Tags of a run executed in this process (pass to ``execute_in_process(tags=...)``)."""
    pid = os.getpid()
    return {WORKER_TAG: f"{socket.gethostname()}:{pid}:{_start_time(pid) or ''}"}


def _worker_alive(tag: str) -> bool | None:
    """True / False for a worker tag of this host; None when it names another host (unknowable here)."""
    parts = tag.rsplit(":", 2)
    if len(parts) != 3:
        return None
    host, pid, started = parts
    if host != socket.gethostname() or not pid.isdigit():
        return None
    now = _start_time(int(pid))
    if now is not None:
        return not started or now == started  # a live process with another start time: the pid was reused
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Mark FAILED every unfinished run executed by a process of this host that no longer exists,
    and free the concurrency slots it held; returns their run ids."""
    records = instance.get_run_records(RunsFilter(
        statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.CANCELING]))
    failed = []
    for rec in records:
        run = rec.dagster_run
        tag = run.tags.get(WORKER_TAG)
        if not tag or _worker_alive(tag) is not False:
            continue
        host, pid, _ = tag.rsplit(":", 2)
        msg = (f"the process that executed this run (pid {pid} on {host}) is gone (killed or crashed): "
               "marked failed so that a re-run can start")
        instance.report_run_failed(run, msg)
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        _log.warning("run %s: %s", run.run_id, msg)
        failed.append(run.run_id)
    return failed


def definitions_for(data_root: str | Path, raw_root: str | Path | None = None, profile: str = "paper") -> Definitions:
    """Definitions for an explicit data root, raw root and profile (paths made absolute); the
    aesthetic models, the platform and the bench settings from the environment."""
    from orchestration.definitions import build_definitions
    from orchestration.resources import curation_resources

    raw = Path(raw_root).resolve() if raw_root else None
    return build_definitions(curation_resources(Path(data_root).resolve(), raw, profile))


def instance_for(data_root: str | Path) -> DagsterInstance:
    """The Dagster instance under ``<data_root>/dagster_home`` (sqlite by default; its
    ``dagster.yaml`` may point at Postgres); runs of this host whose process is gone are marked
    failed first (:func:`fail_orphaned_runs`)."""
    from orchestration.pipeline import dagster_home_for

    instance = DagsterInstance.from_config(str(dagster_home_for(data_root)))
    fail_orphaned_runs(instance)
    return instance


def run_release_job(defs: Definitions, instance: DagsterInstance, name: str, tag: bool = True, push: bool = True):
    """Run ``release_job`` for ``name``; returns the materialisation metadata (plain values) and
    the ``release_audit`` check evaluation. A failed run raises RuntimeError with its root cause."""
    res = defs.resolve_job_def("release_job").execute_in_process(
        run_config={"ops": {"corpus_release": {"config": {"name": name, "tag": tag, "push": push}}}},
        instance=instance, raise_on_error=False, tags=worker_tags())
    if not res.success:
        err = next((e.event_specific_data.error for e in res.all_events
                    if e.is_failure and getattr(e.event_specific_data, "error", None)), None)
        while err is not None and getattr(err, "cause", None) is not None:  # the root cause, not Dagster's wrapper
            err = err.cause
        why = err.message.strip().splitlines()[-1] if err else "see the Dagster run"
        raise RuntimeError(f"release {name} failed: {why}")
    md = {k: getattr(v, "value", v) for k, v in res.asset_materializations_for_node("corpus_release")[0].metadata.items()}
    return md, res.get_asset_check_evaluations()[0]


#: the line a Pipes training process logs before it fails (orchestration/pipes_train.py)
PIPES_FAILURE_PREFIX = "training failed: "


def _root_cause(res, instance: DagsterInstance | None = None) -> str:
    """The deepest error of a failed in-process run; for a Pipes process that failed, the
    reason it logged (``PIPES_FAILURE_PREFIX``) instead of "External execution process failed"."""
    if instance is not None:
        for entry in reversed(instance.all_logs(res.run_id)):
            msg = entry.user_message or ""
            if msg.startswith(PIPES_FAILURE_PREFIX):
                return msg[len(PIPES_FAILURE_PREFIX):]
    err = next((e.event_specific_data.error for e in res.all_events
                if e.is_failure and getattr(e.event_specific_data, "error", None)), None)
    while err is not None and getattr(err, "cause", None) is not None:
        err = err.cause
    return err.message.strip().splitlines()[-1] if err else "see the Dagster run"


def run_training_ladder(defs: Definitions, instance: DagsterInstance, scheme: str, tiers: list[str] | None = None,
                        *, backbone: str = "tiny", release: str | None = None, bench: bool = True,
                        log=print) -> list[dict]:
    """Materialise one scheme's ladder in order (``uhr train`` and the demo): each tier's
    ``training_set``, then ``checkpoint`` (Dagster Pipes subprocess) and, with ``bench``,
    ``checkpoint_bench`` per stage. ``tiers``: a subset of the ladder (a stage whose ``init_from``
    tier is neither listed nor trained before fails with that reason). Returns one dict per
    stage: the checkpoint report (:func:`training.run.current`) plus the bench scores."""
    from curation.layout import DataLayout
    from training import curriculum
    from training.run import CLI_NAMES, current, partition_key, scheme_key

    settings = defs.resources["settings"]
    cfg = settings.config()
    key = scheme_key(scheme)
    ladder = [s.tier.name for s in curriculum.ladder(cfg, key)]
    wanted = list(tiers) if tiers else ladder
    unknown = [t for t in wanted if t not in ladder]
    if unknown:
        raise ValueError(f"{CLI_NAMES[key]} has no tier(s) {unknown}: its ladder is {' -> '.join(ladder)}")
    layout = DataLayout.at(settings.data_root)
    ts_job, ck_job = defs.resolve_job_def("training_set_job"), defs.resolve_job_def("checkpoint_job")
    out = []
    for tier in [t for t in ladder if t in wanted]:
        run_config = {"ops": {"training_set": {"config": {"release": release}}}} if release else None
        res = ts_job.execute_in_process(partition_key=tier, instance=instance, run_config=run_config,
                                        raise_on_error=False, tags=worker_tags())
        if not res.success:
            raise RuntimeError(f"training_set[{tier}] failed: {_root_cause(res)}")
        part = partition_key(key, tier)
        job = ck_job if bench else ck_job.get_subset(asset_selection={AssetKey("checkpoint")})
        log(f"checkpoint[{part}] ...")
        res = job.execute_in_process(partition_key=part, instance=instance, raise_on_error=False, tags=worker_tags(),
                                     run_config={"ops": {"checkpoint": {"config": {"backbone": backbone}}}})
        if not res.success:
            raise RuntimeError(f"checkpoint[{part}] failed: {_root_cause(res, instance)}")
        rep = dict(current(layout, key, tier) or {})
        ck = res.asset_materializations_for_node("checkpoint")
        if ck and "reused" in ck[0].metadata:  # this run's answer, not the first run's report
            rep["reused"] = bool(getattr(ck[0].metadata["reused"], "value", ck[0].metadata["reused"]))
        scores = {}
        if bench:
            mats = res.asset_materializations_for_node("checkpoint_bench")
            if mats:
                scores = {k[len("score/"):]: getattr(v, "value", v) for k, v in mats[0].metadata.items()
                          if k.startswith("score/")}
                rep["bench_model"] = getattr(mats[0].metadata.get("model"), "value", None)
                rep["bench_run"] = getattr(mats[0].metadata.get("bench_run"), "value", None)
        rep["bench_scores"] = scores
        out.append(rep)
    return out
