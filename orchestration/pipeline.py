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

from curation.raw_pool import list_shards

#: the curation assets in materialisation order
CURATION_ASSETS = ("raw_pool", "image_scores", "purification_thresholds", "candidate_pool", "corpus_100mp")
#: asset -> (job that materialises it, partitioned by shard)
ASSET_JOBS: dict[str, tuple[str, bool]] = {
    "raw_pool": ("shard_purification", True),
    "image_scores": ("shard_purification", True),
    "purification_thresholds": ("purification_thresholds_job", False),
    "candidate_pool": ("candidate_selection", True),
    "corpus_100mp": ("corpus_100mp_job", True),
}


def dagster_home_for(data_root: str | Path) -> Path:
    """The embedded default: sqlite storage under ``<data_root>/dagster_home``."""
    home = Path(data_root).resolve() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
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
    unknown = sorted(set(names) - set(CURATION_ASSETS))
    if unknown or not names:
        raise ValueError(f"unknown curation asset(s) {unknown or names}: choose from {', '.join(CURATION_ASSETS)}")
    return [a for a in CURATION_ASSETS if a in names]


def materialize_all(defs: Definitions, instance: DagsterInstance, raw_root: str | Path,
                    log=print, with_corpus: bool = True, store=None, tracking_uri: str | None = None,
                    assets=None) -> dict:
    """Register every raw shard as a partition and materialise the graph; returns timings.

    ``store`` (an :class:`~orchestration.resources.ObjectStoreResource`, default: the ``store``
    resource of ``defs``): the assets run with it -- each fetches its inputs from the store and
    publishes what it wrote -- and, with ``raw_prefix``, the shards are those under
    ``store.raw_prefix``. A store other than the one in ``defs`` replaces it for these runs.
    ``assets``: materialise only these (names from :data:`CURATION_ASSETS`, run in that order,
    every shard for the partitioned ones); ``with_corpus`` applies only when ``assets`` is None.
    ``tracking_uri``: log the round's data-flow counts and timings as one MLflow run.
    """
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
    if not shards:
        raise RuntimeError(f"no shard folders under {where}")
    known = set(instance.get_dynamic_partitions("shards"))
    new = [s for s in shards if s not in known]
    if new:
        instance.add_dynamic_partitions("shards", new)
    timings: dict[str, float] = {}

    def run(job_name: str, label: str, key: str, shard: str | None, only: str | None = None):
        t0 = time.perf_counter()
        res = defs.resolve_job_def(job_name).execute_in_process(
            partition_key=shard, instance=instance, raise_on_error=True,
            asset_selection=[AssetKey(only)] if only else None)
        timings[key] = time.perf_counter() - t0
        log(f"  {label}{f' [{shard}]' if shard else ''}: {'ok' if res.success else 'FAILED'} ({timings[key]:.1f} s)")
        return res

    if selected is None:
        for shard in shards:
            run("shard_purification", "raw_pool + image_scores", f"purify {shard}", shard)
        run("purification_thresholds_job", "purification_thresholds", "thresholds", None)
        for shard in shards:
            run("candidate_selection", "candidate_pool", f"select {shard}", shard)
        if with_corpus:
            for shard in shards:
                run("corpus_100mp_job", "corpus_100mp", f"corpus {shard}", shard)
    else:
        for name in selected:
            job_name, per_shard = ASSET_JOBS[name]
            for shard in (shards if per_shard else [None]):  # the job restricted to this asset
                run(job_name, name, f"{name} {shard}" if shard else name, shard, only=name)
    out = {"shards": shards, "timings": timings}
    if tracking_uri:
        from orchestration.platform import log_curation_run

        st = defs.resources.get("settings")
        out["mlflow"] = log_curation_run(st.layout(), st.config(), tracking_uri, shards=shards, timings=timings,
                                         store=sync.describe() if sync is not None else None)
        log(f"  mlflow run {out['mlflow']['run_id']} at {tracking_uri}")
    return out


def set_env(data_root: str | Path, profile: str, raw_root: str | Path | None = None) -> None:
    """Point the code location's resources and DAGSTER_HOME at a data root (before importing defs)."""
    os.environ["UHR_DATA_ROOT"] = str(Path(data_root).resolve())
    os.environ["UHR_PROFILE"] = profile
    if raw_root:
        os.environ["UHR_RAW_ROOT"] = str(Path(raw_root).resolve())
    os.environ["DAGSTER_HOME"] = str(dagster_home_for(data_root))
