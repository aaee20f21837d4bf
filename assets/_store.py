"""Object-store sync inside a curation asset: fetch the inputs first, publish the outputs last.

Every curation asset takes the ``store`` resource (:class:`~orchestration.resources.ObjectStoreResource`)
and calls :func:`prepare` before it runs and :func:`publish` after its manifest is written, so a
Dagster run works on any worker -- a fresh pod with an empty data root included -- not only when
a driver (``orchestration.pipeline.materialize_all``) prepared the data root for it. Without a
store (the laptop default) both do nothing.

:func:`publish` uploads blobs first and the manifest last (the manifest in the store is the
shard's commit marker); when a *blocking* check of the materialisation failed it publishes
nothing, so no other worker builds on a manifest Dagster refused.
"""

from __future__ import annotations

from typing import Iterable

from dagster import AssetCheckResult, MetadataValue


def prepare(context, store, settings, stage: str, shard: str | None) -> dict:
    """``store.prepare`` for this asset (``{}`` without a store), logged."""
    if not store.enabled:
        return {}
    summary = store.prepare(settings, stage, shard)
    counts = sync_counts(summary, {})
    context.log.info(f"store {store.describe().get('kind')}: inputs of {stage}"
                     f"{f' [{shard}]' if shard else ''} ready ({counts})")
    return summary


def _blocking_checks(context) -> set[str]:
    try:
        specs = context.assets_def.check_specs
    except Exception:  # no assets definition in this context (direct invocation)
        return set()
    return {s.name for s in specs if s.blocking}


def publish(context, store, settings, stage: str, shard: str | None,
            check_results: Iterable[AssetCheckResult] = ()) -> dict:
    """``store.publish`` for this asset after its manifest is written (``{}`` without a store).

    Nothing is published when one of ``check_results`` is a failed blocking check; the summary
    then names the failed checks under ``"not_published"``.
    """
    if not store.enabled:
        return {}
    blocking = _blocking_checks(context)
    failed = sorted(r.check_name for r in check_results if not r.passed and r.check_name in blocking)
    if failed:
        context.log.warning(f"{stage}{f' [{shard}]' if shard else ''} not published to the store: "
                            f"blocking check(s) failed: {', '.join(failed)}")
        return {"stage": stage, "shard": shard, "keys": [], "not_published": failed}
    summary = store.publish(settings, stage, shard)
    context.log.info(f"store {store.describe().get('kind')}: published {len(summary.get('keys', []))} key(s) "
                     f"of {stage}{f' [{shard}]' if shard else ''}")
    return summary


def sync_counts(prepared: dict, published: dict) -> dict:
    """The cheap counts of a prepare and a publish summary (no key lists: they grow with the shards)."""
    out: dict = {}
    if prepared:
        out["fetched_manifests"] = len(prepared.get("fetched", []))
        raw = prepared.get("raw")
        if raw:
            out["raw_files"] = raw.get("files", 0)
            out["raw_downloaded"] = raw.get("downloaded", 0)
            out["raw_downloaded_bytes"] = raw.get("bytes", 0)
        sources = prepared.get("sources")
        if sources:
            out["sources_restored"] = sources.get("restored", 0)
            out["sources_present"] = sources.get("present", 0)
    if published:
        out["published_keys"] = len(published.get("keys", []))
        blobs = published.get("blobs")
        if blobs:
            out["blobs_uploaded"] = blobs.get("uploaded", 0)
            out["blobs_present"] = blobs.get("present", 0)
            out["blobs_uploaded_bytes"] = blobs.get("bytes", 0)
        if published.get("not_published"):
            out["not_published"] = list(published["not_published"])
    return out


def store_metadata(store, prepared: dict, published: dict) -> dict:
    """Materialisation metadata: ``store`` (where, never credentials) and ``store_sync`` (counts)."""
    md = {"store": MetadataValue.json(store.describe())}
    if store.enabled:
        md["store_sync"] = MetadataValue.json(sync_counts(prepared, published))
    return md
