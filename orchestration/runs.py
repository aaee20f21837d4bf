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

from dagster import DagsterInstance, Definitions


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
