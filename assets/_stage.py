"""``@stage_asset(name)``: a Dagster asset whose declaration comes from the stage table.

The decorator reads the :class:`~curation.stages.table.StageSpec` of ``name`` and fills in what
every stage asset shares: partitions (shards or none), ``deps`` (the upstream stages), the
``code_version`` (replaced by the stage fingerprint when the Definitions are built for a
profile), the UI group, the concurrency pool (``gpu`` stages) and the description. The body
stays the stage's own (library call + metadata + checks). Each decorated asset is kept in
:data:`STAGE_ASSETS`, which ``orchestration/definitions.py`` turns into assets and jobs in table
order -- a stage in the table without an asset body is an error there.

:func:`stage_metadata` is the metadata every stage materialisation carries: its fingerprint and
the images it computed or reused (``uhr materialize`` adds these up per stage).
"""

from __future__ import annotations

import functools
import time
from typing import Callable

from dagster import AssetsDefinition, DataVersion, MetadataValue, asset

from curation.stages.table import STAGES
from orchestration.partitions import shard_partitions

#: stage name -> its asset (filled by :func:`stage_asset` at import)
STAGE_ASSETS: dict[str, AssetsDefinition] = {}

COMPUTED = "uhr/images_computed"
REUSED = "uhr/images_reused"
FINGERPRINT = "uhr/fingerprint"


def stage_asset(name: str, **kwargs) -> Callable[[Callable], AssetsDefinition]:
    """``@asset`` with the stage table's declaration of ``name``; ``kwargs`` add the rest
    (``kinds``, ``check_specs``, ...)."""
    spec = STAGES[name]
    decl = dict(
        name=name,
        deps=list(spec.upstream),
        code_version=spec.code_version,
        group_name=spec.group,
        description=spec.description,
    )
    if spec.partitioned:
        decl["partitions_def"] = shard_partitions
    if spec.pool == "gpu":
        from orchestration.automation import GPU_POOL

        decl["pool"] = GPU_POOL
    decl.update(kwargs)

    def wrap(fn: Callable) -> AssetsDefinition:
        a = asset(**decl)(_with_device_ledger(name, fn) if spec.pool == "gpu" else fn)
        STAGE_ASSETS[name] = a
        return a

    return wrap


def stage_metadata(cfg, stage: str, summary: dict) -> dict:
    """Fingerprint + images computed / reused of one stage materialisation."""
    from curation.stages.fingerprint import stage_fingerprint

    md = {
        FINGERPRINT: stage_fingerprint(cfg, stage),
        COMPUTED: int(summary.get("computed", 0)),
        REUSED: int(summary.get("reused", 0)),
    }
    if summary.get("manifest_reused"):
        md["uhr/manifest_reused"] = MetadataValue.bool(True)
    return md


def data_version(version: str | None) -> DataVersion | None:
    return DataVersion(version) if version else None


def _with_device_ledger(name: str, fn: Callable) -> Callable:
    """A GPU-pool stage body that also appends its device time to the ledger
    (``<data root>/ledger/curation.jsonl``, :func:`training.ledger.append_stage`) when it
    computed images: the stage, shard, device type and count, wall clock, images."""

    @functools.wraps(fn)
    def timed(context, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(context, *args, **kwargs)
        wall = time.perf_counter() - t0
        settings = kwargs.get("settings")
        md = getattr(out, "metadata", None) or {}
        computed = md.get(COMPUTED)
        computed = int(getattr(computed, "value", computed) or 0)
        if settings is not None and computed > 0:
            from training.ledger import StageRow, append_stage

            append_stage(settings.layout().root, StageRow.now(name, context.partition_key if context.has_partition_key
                                                              else None, wall, computed, settings.profile))
        return out

    return timed
