"""The code location on an explicit data root, for the CLI and the demo (no environment writes).

* :func:`definitions_for` -- ``build_definitions`` with the curation settings given explicitly
  (data root, raw root, profile) and every other resource from the environment;
* :func:`instance_for` -- the Dagster instance of ``<data_root>/dagster_home``, opened directly
  (``DagsterInstance.from_config``), so runs land where ``make ui`` looks, whatever
  ``DAGSTER_HOME`` says;
* :func:`run_release_job` -- one ``release_job`` run (``uhr release`` and the demo).
"""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions


def definitions_for(data_root: str | Path, raw_root: str | Path | None = None, profile: str = "paper") -> Definitions:
    """Definitions for an explicit data root, raw root and profile (paths made absolute); the
    aesthetic models, the platform and the bench settings from the environment."""
    from orchestration.definitions import build_definitions
    from orchestration.resources import curation_resources

    raw = Path(raw_root).resolve() if raw_root else None
    return build_definitions(curation_resources(Path(data_root).resolve(), raw, profile))


def instance_for(data_root: str | Path) -> DagsterInstance:
    """The Dagster instance under ``<data_root>/dagster_home`` (sqlite by default; its
    ``dagster.yaml`` may point at Postgres)."""
    from orchestration.pipeline import dagster_home_for

    return DagsterInstance.from_config(str(dagster_home_for(data_root)))


def run_release_job(defs: Definitions, instance: DagsterInstance, name: str, tag: bool = True, push: bool = True):
    """Run ``release_job`` for ``name``; returns the materialisation metadata (plain values) and
    the ``release_audit`` check evaluation. A failed run raises RuntimeError with its root cause."""
    res = defs.resolve_job_def("release_job").execute_in_process(
        run_config={"ops": {"corpus_release": {"config": {"name": name, "tag": tag, "push": push}}}},
        instance=instance, raise_on_error=False)
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
                                        raise_on_error=False)
        if not res.success:
            raise RuntimeError(f"training_set[{tier}] failed: {_root_cause(res)}")
        part = partition_key(key, tier)
        job = ck_job if bench else ck_job.get_subset(asset_selection={AssetKey("checkpoint")})
        log(f"checkpoint[{part}] ...")
        res = job.execute_in_process(partition_key=part, instance=instance, raise_on_error=False,
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
