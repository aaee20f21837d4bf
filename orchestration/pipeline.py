"""Run the curation assets on a Dagster instance, shard by shard, as the demo and tests do.

Order: for every shard (key order) ``raw_pool`` + ``image_scores``; then
``purification_thresholds`` once; then ``candidate_pool`` for every shard. Each step is a
Dagster run on the given instance, so the UI shows every materialisation afterwards.
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
                    log=print) -> dict:
    """Register every raw shard as a partition and materialise the graph; returns timings."""
    shards = list_shards(raw_root)
    if not shards:
        raise RuntimeError(f"no shard folders under {raw_root}")
    known = set(instance.get_dynamic_partitions("shards"))
    new = [s for s in shards if s not in known]
    if new:
        instance.add_dynamic_partitions("shards", new)
    timings: dict[str, float] = {}
    job = defs.resolve_job_def("shard_purification")
    for shard in shards:
        t0 = time.perf_counter()
        res = job.execute_in_process(partition_key=shard, instance=instance, raise_on_error=True)
        timings[f"purify {shard}"] = time.perf_counter() - t0
        log(f"  raw_pool + image_scores [{shard}]: {'ok' if res.success else 'FAILED'} "
            f"({timings[f'purify {shard}']:.1f} s)")
    t0 = time.perf_counter()
    defs.resolve_job_def("purification_thresholds_job").execute_in_process(instance=instance, raise_on_error=True)
    timings["thresholds"] = time.perf_counter() - t0
    log(f"  purification_thresholds: ok ({timings['thresholds']:.1f} s)")
    job = defs.resolve_job_def("candidate_selection")
    for shard in shards:
        t0 = time.perf_counter()
        job.execute_in_process(partition_key=shard, instance=instance, raise_on_error=True)
        timings[f"select {shard}"] = time.perf_counter() - t0
        log(f"  candidate_pool [{shard}]: ok ({timings[f'select {shard}']:.1f} s)")
    return {"shards": shards, "timings": timings}


def set_env(data_root: str | Path, profile: str, raw_root: str | Path | None = None) -> None:
    """Point the code location's resources and DAGSTER_HOME at a data root (before importing defs)."""
    os.environ["UHR_DATA_ROOT"] = str(Path(data_root).resolve())
    os.environ["UHR_PROFILE"] = profile
    if raw_root:
        os.environ["UHR_RAW_ROOT"] = str(Path(raw_root).resolve())
    os.environ["DAGSTER_HOME"] = str(dagster_home_for(data_root))
