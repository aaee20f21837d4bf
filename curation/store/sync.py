"""Sync a worker's local data root with the object store, so a fresh worker (a new pod with an
empty data root) can run any stage.

:func:`prepare_stage` fetches a stage's inputs (manifests, raw shard files, source images
restored from their blobs with the hash checked); :func:`publish_stage` uploads what the stage
wrote -- blobs first, the manifest last, so the manifest's presence in the store stays the
shard's commit marker. Also: the purification thresholds, config snapshots, raw shards under a
store prefix, and :func:`sync_manifests` for lineage/audit on a worker that ran nothing.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Iterable

from curation.store.backends import (MANIFESTS, RAW_PREFIX, THRESHOLDS_STAGE, ObjectInfo, ObjectNotFound,
                                     ObjectStore, StoreError, _check_key, _norm_prefix, manifest_key, md5_file,
                                     raw_shard_prefix)
from curation.stages.table import STAGES
from curation.store.blobs import publish_blobs, restore_sources


# -- what each stage reads and keeps: from the stage table -------------------------------------

def stage_inputs(stage: str) -> tuple[str, ...]:
    """Same-shard manifests ``stage`` reads (the stage table's ``inputs``)."""
    return STAGES[stage].inputs


def stage_blobs(stage: str) -> tuple[str, str] | None:
    """``(path column, sha256 column)`` of the files ``stage`` keeps as blobs (table ``blobs``), or None."""
    return STAGES[stage].blobs


# -- manifests and other data-root files ------------------------------------------------------

def data_key(layout, path: str | os.PathLike) -> str:
    """The store key of a file under the data root: its path relative to the root."""
    return Path(path).resolve().relative_to(layout.root).as_posix()


def publish_file(store: ObjectStore, layout, path: str | os.PathLike,
                 content_type: str = "application/octet-stream") -> str:
    key = data_key(layout, path)
    store.put_file(key, path, content_type=content_type)
    return key


def publish_manifest(store: ObjectStore, layout, stage: str, shard: str) -> str:
    """Upload ``manifests/<stage>/<shard>.parquet`` (call after the stage's blobs)."""
    path = layout.manifest(stage, shard)
    if not path.exists():
        raise StoreError(f"{stage} manifest for {shard} is not on this worker ({path})")
    key = manifest_key(stage, shard)
    store.put_file(key, path, content_type="application/vnd.apache.parquet")
    return key


def _same_as_remote(local: Path, info: ObjectInfo) -> bool:
    if local.stat().st_size != info.size:
        return False
    if info.etag and "-" not in info.etag and len(info.etag) == 32:
        return md5_file(local) == info.etag
    return True  # multipart etag: size is all we can compare cheaply


def ensure_local(store: ObjectStore, key: str, dest: str | os.PathLike, refresh: bool = False) -> bool:
    """Make ``dest`` hold the object ``key``: download when missing (or different, with ``refresh``).

    Returns True when the file is there afterwards, False when neither side has it.
    """
    dest = Path(dest)
    if dest.exists() and not refresh:
        return True
    try:
        info = store.stat(key)
    except ObjectNotFound:
        return dest.exists()
    if dest.exists() and _same_as_remote(dest, info):
        return True
    store.get_file(key, dest)
    return True


def ensure_local_manifest(store: ObjectStore, layout, stage: str, shard: str, refresh: bool = False) -> bool:
    return ensure_local(store, manifest_key(stage, shard), layout.manifest(stage, shard), refresh)


def remote_shards(store: ObjectStore, stage: str) -> list[str]:
    """Shards whose ``stage`` manifest is committed in the store."""
    pre = f"{MANIFESTS}/{stage}/"
    return sorted(PurePosixPath(k).stem for k in store.list(pre) if k.endswith(".parquet") and "/" not in k[len(pre):])


def publish_thresholds(store: ObjectStore, layout) -> list[str]:
    """Upload the thresholds' versioned file and ``latest.json`` (latest last)."""
    d = layout.thresholds_dir()
    latest = d / "latest.json"
    if not latest.exists():
        raise StoreError(f"no purification thresholds on this worker ({latest})")
    import json

    version = json.loads(latest.read_text()).get("version")
    keys = []
    versioned = d / f"{version}.json"
    if version and versioned.exists():
        keys.append(publish_file(store, layout, versioned, "application/json"))
    keys.append(publish_file(store, layout, latest, "application/json"))
    return keys


def ensure_local_thresholds(store: ObjectStore, layout, refresh: bool = True) -> bool:
    return ensure_local(store, f"{MANIFESTS}/{THRESHOLDS_STAGE}/latest.json",
                        layout.thresholds_dir() / "latest.json", refresh)


# -- raw shards under a store prefix ---------------------------------------------------------

def raw_shard_status(store: ObjectStore, prefix: str = RAW_PREFIX) -> dict[str, dict]:
    """``{shard: {"files", "bytes", "last_modified"}}`` for every shard folder under ``prefix``
    holding at least one object. ``files``: the entries :func:`curation.raw_pool.list_shard_files`
    gives once the shard is downloaded (every top-level name -- a nested key is one ``directory``
    entry -- but the licence sidecars of a sibling, by exact name); ``bytes``: their sizes."""
    from curation.raw_pool import sidecar_name

    pre = _norm_prefix(prefix)
    names: dict[str, dict[str, int]] = {}
    modified: dict[str, float] = {}
    for o in store.list_info(pre):
        rel = o.key[len(pre):]
        if "/" not in rel:
            continue
        shard, rest = rel.split("/", 1)
        if shard.startswith(".") or not rest:
            continue
        top, _, nested = rest.partition("/")
        entries = names.setdefault(shard, {})
        entries[top] = entries.get(top, 0) + o.size
        if nested:
            entries.setdefault("/" + top, 0)  # marks a directory: never a sidecar
        modified[shard] = max(modified.get(shard, 0.0), o.last_modified or 0.0)
    out: dict[str, dict] = {}
    for shard in sorted(names):
        entries = names[shard]
        dirs = {n[1:] for n in entries if n.startswith("/")}
        files = {n: b for n, b in entries.items() if not n.startswith("/")}
        sidecars = {sd for n in files if n not in dirs and (sd := sidecar_name(n)) in files and sd not in dirs}
        kept = {n: b for n, b in files.items() if n not in sidecars}
        if kept:
            out[shard] = {"files": len(kept), "bytes": sum(kept.values()), "last_modified": modified[shard]}
    return out


def list_raw_shards(store: ObjectStore, prefix: str = RAW_PREFIX) -> list[str]:
    """Shard names under ``<prefix>/<shard>/...`` that hold at least one ingestible file."""
    return list(raw_shard_status(store, prefix))


def upload_shard(store: ObjectStore, shard_dir: str | os.PathLike, prefix: str = RAW_PREFIX) -> int:
    """Upload a local shard folder (sidecars included) to ``<prefix>/<shard>/``; files uploaded.

    An object store holds regular files under UTF-8 keys only, while the local ``raw_pool``
    gives every entry a row (a symlink, FIFO or sub-folder a ``not_a_regular_file`` one; a name
    that is not UTF-8 an escaped one). So that a shard gets the same rows from the store as from
    its folder, a shard holding such entries is refused before anything is uploaded, with a
    one-line ``StoreError`` naming them (escaped), instead of being uploaded without them."""
    import stat as stat_mod

    from curation.names import encode_name

    shard_dir = Path(shard_dir)
    base = raw_shard_prefix(shard_dir.name, prefix)
    files, unstorable = [], []
    with os.scandir(shard_dir) as it:
        entries = sorted(it, key=lambda e: os.fsencode(e.name))
    for e in entries:
        mode = e.stat(follow_symlinks=False).st_mode
        try:
            e.name.encode("utf-8")
            utf8 = True
        except UnicodeEncodeError:
            utf8 = False
        if stat_mod.S_ISREG(mode) and utf8:
            files.append(Path(e.path))
        else:
            unstorable.append(encode_name(os.fsencode(e.name)) + ("" if utf8 else " (name not UTF-8)")
                              + ("" if stat_mod.S_ISREG(mode) else " (not a regular file)"))
    if unstorable:
        raise StoreError(f"shard {shard_dir.name}: {len(unstorable)} entr{'y' if len(unstorable) == 1 else 'ies'} "
                         f"an object store cannot hold, nothing uploaded (run it from the folder, or remove "
                         f"them): {', '.join(unstorable[:10])}" + (" ..." if len(unstorable) > 10 else ""))
    for p in files:
        store.put_file(base + p.name, p)
    return len(files)


def download_shard(store: ObjectStore, shard: str, raw_root: str | os.PathLike, prefix: str = RAW_PREFIX) -> dict:
    """Materialise ``<prefix>/<shard>/`` as ``<raw_root>/<shard>/`` (files already there with the
    same size are kept); counts ``{"files", "downloaded", "bytes"}``."""
    base = raw_shard_prefix(shard, prefix)
    dest_dir = Path(raw_root) / shard
    out = {"files": 0, "downloaded": 0, "bytes": 0}
    infos = store.list_info(base)
    if not infos:
        raise StoreError(f"no raw shard {shard!r} under {store.url(base)}")
    for o in infos:
        rel = o.key[len(base):]
        dest = dest_dir / _check_key(rel)
        out["files"] += 1
        if dest.is_file() and dest.stat().st_size == o.size:
            continue
        store.get_file(o.key, dest)
        out["downloaded"] += 1
        out["bytes"] += o.size
    return out


# -- stage sync -------------------------------------------------------------------------------

def prepare_stage(store: ObjectStore, layout, stage: str, shard: str | None = None,
                  raw_root: str | os.PathLike | None = None, raw_prefix: str | None = None) -> dict:
    """Fetch what ``stage`` reads for ``shard`` into the local data root (a fresh worker can then run it).

    * ``raw_pool``: the raw shard folder from ``<raw_prefix>/<shard>/`` (when ``raw_prefix``),
      and every earlier shard's ``raw_pool`` manifest (dedup is first-seen-wins across shards);
      an earlier raw shard in the store without a committed manifest is an error;
    * ``image_scores``: the shard's ``raw_pool`` manifest and the passed source images (restored
      from their blobs, hash checked, at the path the manifest records);
    * ``purification_thresholds``: every committed ``image_scores`` manifest (refreshed);
    * ``candidate_pool``: the shard's ``image_scores`` manifest and the latest thresholds;
    * ``corpus_100mp``: the shard's ``candidate_pool`` and ``raw_pool`` manifests and the passed
      candidates' source images (from their blobs).

    Other stages: the same-shard manifests of their ``inputs`` in the stage table. Returns a summary dict.
    """
    summary: dict = {"stage": stage, "shard": shard, "fetched": []}
    if stage == "raw_pool":
        if shard is None:
            raise ValueError("raw_pool is per shard")
        if raw_prefix is not None:
            if raw_root is None:
                raise ValueError("raw_root is needed to materialise a raw shard from the store")
            summary["raw"] = download_shard(store, shard, raw_root, raw_prefix)
            committed = set(remote_shards(store, "raw_pool"))
            missing = [s for s in list_raw_shards(store, raw_prefix) if s < shard and s not in committed]
            if missing:
                raise StoreError(
                    f"shard {shard}: earlier shards {missing} are in {store.url(_norm_prefix(raw_prefix))} but have no "
                    "committed raw_pool manifest; raw_pool dedups against every earlier shard, so ingest them first"
                )
        for s in remote_shards(store, "raw_pool"):
            if s < shard and ensure_local_manifest(store, layout, "raw_pool", s, refresh=True):
                summary["fetched"].append(manifest_key("raw_pool", s))
        return summary
    if _is_global(stage):  # a reduce: every committed shard of its upstream per-shard stages
        for dep in _partitioned_upstream(stage):
            for s in remote_shards(store, dep):
                ensure_local_manifest(store, layout, dep, s, refresh=True)
                summary["fetched"].append(manifest_key(dep, s))
        if stage == "bench_split":  # the reference links point at the corpus files
            from curation.manifest import read_manifest

            rows = [r for p in layout.manifests("final_corpus") for r in read_manifest(p).to_pylist() if r["passed"]]
            summary["sources"] = restore_sources(store, rows, path_field="output_path", root=layout.root)
        return summary
    if shard is None:
        raise ValueError(f"{stage} is per shard")
    for dep in stage_inputs(stage):
        if not ensure_local_manifest(store, layout, dep, shard, refresh=True):
            raise StoreError(f"{dep} manifest for {shard} is neither on this worker nor in {store.url(manifest_key(dep, shard))}")
        summary["fetched"].append(manifest_key(dep, shard))
    if stage == "image_scores":
        from curation.manifest import read_manifest

        rows = read_manifest(layout.manifest("raw_pool", shard)).to_pylist()
        summary["sources"] = restore_sources(store, rows, root=layout.root)
    if stage == "candidate_pool":
        ensure_local_thresholds(store, layout, refresh=True)
    if stage == "corpus_100mp":
        from curation.manifest import read_manifest

        keep = {r["image_id"] for r in read_manifest(layout.manifest("candidate_pool", shard)).to_pylist() if r["passed"]}
        rows = [r for r in read_manifest(layout.manifest("raw_pool", shard)).to_pylist() if r["image_id"] in keep]
        summary["sources"] = restore_sources(store, rows, root=layout.root)
    if stage == "captions":  # the corpus files, read by regions
        from curation.manifest import read_manifest

        rows = read_manifest(layout.manifest("corpus_100mp", shard)).to_pylist()
        summary["sources"] = restore_sources(store, rows, path_field="output_path", root=layout.root)
    return summary


def _is_global(stage: str) -> bool:
    return stage in STAGES and not STAGES[stage].partitioned


def _partitioned_upstream(stage: str) -> list[str]:
    return [u for u in STAGES[stage].upstream if STAGES[u].partitioned]


def publish_global_files(store: ObjectStore, layout, stage: str) -> list[str]:
    """Upload the files a global stage wrote under ``manifests/<stage>/`` (links resolved to their
    targets' keys are skipped: the blobs hold the bytes); the stage's main file last."""
    d = layout.root / MANIFESTS / stage
    files = sorted(p for p in d.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_nlink == 1)
    files.sort(key=lambda p: p.name == "split.json")
    return [publish_file(store, layout, p, "application/json" if p.suffix == ".json" else "application/octet-stream") for p in files]


def publish_stage(store: ObjectStore, layout, stage: str, shard: str | None = None, blobs: bool = True) -> dict:
    """Upload what ``stage`` wrote for ``shard``: blobs first (the passed rows' files named by
    the stage table's ``blobs``), the manifest last."""
    summary: dict = {"stage": stage, "shard": shard, "keys": []}
    if stage == THRESHOLDS_STAGE:
        summary["keys"] = publish_thresholds(store, layout)
        return summary
    if _is_global(stage):
        summary["keys"] = publish_global_files(store, layout, stage)
        return summary
    if shard is None:
        raise ValueError(f"{stage} is per shard")
    if blobs and stage_blobs(stage):
        from curation.manifest import read_manifest

        path_field, sha_field = stage_blobs(stage)
        rows = read_manifest(layout.manifest(stage, shard)).to_pylist()
        summary["blobs"] = publish_blobs(store, rows, path_field=path_field, sha_field=sha_field,
                                          root=layout.root)
    summary["configs"] = publish_configs(store, layout)
    summary["keys"].append(publish_manifest(store, layout, stage, shard))
    return summary


def publish_configs(store: ObjectStore, layout) -> int:
    """Upload the config snapshots (``manifests/configs/<hash>.json``) the store lacks; count."""
    d = layout.root / MANIFESTS / "configs"
    n = 0
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        key = data_key(layout, p)
        if not store.exists(key):
            store.put_file(key, p, content_type="application/json")
            n += 1
    return n


def sync_manifests(store: ObjectStore, layout, stages: Iterable[str] | None = None) -> dict:
    """Bring every committed manifest of ``stages``, the config snapshots and the releases (table
    entries and release folders) from the store to this worker; counts per kind. For lineage and
    audit on a worker that did not run the stages."""
    if stages is None:  # every per-shard stage of the stage table
            stages = [s.name for s in STAGES if s.partitioned]
    out = {"manifests": 0, "configs": 0, "bench_split": 0, "releases": 0}
    for stage in stages:
        for shard in remote_shards(store, stage):
            ensure_local_manifest(store, layout, stage, shard, refresh=True)
            out["manifests"] += 1
    for prefix, kind in ((f"{MANIFESTS}/configs/", "configs"), (f"{MANIFESTS}/bench_split/", "bench_split"),
                         ("releases/", "releases")):
        for key in store.list(prefix):
            ensure_local(store, key, layout.root / key, refresh=True)
            out[kind] += 1
    return out
