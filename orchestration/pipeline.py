"""Run the curation assets on a Dagster instance, shard by shard, as the demo and tests do.

Order: for every shard (key order) ``raw_pool`` + ``image_scores``; then
``purification_thresholds`` once; then ``candidate_pool`` for every shard. Each step is a
Dagster run on the given instance, so the UI shows every materialisation afterwards.
With an object store, each step first fetches its inputs from the store and then publishes
its outputs there (``curation.store.prepare_stage`` / ``publish_stage``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dagster import DagsterInstance, Definitions

from curation.raw_pool import list_shards


def dagster_home_for(data_root: str | Path) -> Path:
    """The embedded default: sqlite storage under ``<data_root>/dagster_home``."""
    home = Path(data_root).resolve() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    return home


def materialize_all(defs: Definitions, instance: DagsterInstance, raw_root: str | Path,
                    log=print, with_corpus: bool = True, store=None, tracking_uri: str | None = None) -> dict:
    """Register every raw shard as a partition and materialise the graph; returns timings.

    ``store`` (an :class:`~orchestration.resources.ObjectStoreResource`): around every step, fetch
    its inputs from the store first (raw shards from ``store.raw_prefix`` included) and publish
    what it wrote afterwards (blobs, then manifests), as a fresh worker would.
    ``tracking_uri``: log the round's data-flow counts and timings as one MLflow run.
    """
    sync = store if store is not None and getattr(store, "enabled", False) else None
    settings = defs.resources.get("settings") if sync else None
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

    def run(job_name: str, label: str, key: str, shard: str | None, stages: tuple[str, ...]):
        t0 = time.perf_counter()
        if sync is not None:
            sync.prepare(settings, stages[0], shard)
        res = defs.resolve_job_def(job_name).execute_in_process(partition_key=shard, instance=instance,
                                                                 raise_on_error=True)
        if sync is not None:
            for stage in stages:
                sync.publish(settings, stage, shard)
        timings[key] = time.perf_counter() - t0
        log(f"  {label}{f' [{shard}]' if shard else ''}: {'ok' if res.success else 'FAILED'} ({timings[key]:.1f} s)")
        return res

    for shard in shards:
        run("shard_purification", "raw_pool + image_scores", f"purify {shard}", shard, ("raw_pool", "image_scores"))
    run("purification_thresholds_job", "purification_thresholds", "thresholds", None, ("purification_thresholds",))
    for shard in shards:
        run("candidate_selection", "candidate_pool", f"select {shard}", shard, ("candidate_pool",))
    if with_corpus:
        for shard in shards:
            run("corpus_100mp_job", "corpus_100mp", f"corpus {shard}", shard, ("corpus_100mp",))
    out = {"shards": shards, "timings": timings}
    if tracking_uri:
        from orchestration.platform import log_curation_run

        st = settings or defs.resources.get("settings")
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
