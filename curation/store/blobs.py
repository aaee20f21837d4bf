"""Content-addressed blobs: ``blobs/<sha[:2]>/<sha>`` holds the bytes whose sha256 is ``<sha>``.

Uploads skip blobs already present; downloads are atomic and (by default) hash-checked, so a
restored source file is never a corrupt one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping

from curation.store.backends import (BLOBS, BlobIntegrityError, ObjectNotFound, ObjectStore, StoreError,
                                     _atomic_target, sha256_file)

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def blob_key(sha256: str) -> str:
    sha = str(sha256).lower()
    if not _SHA_RE.match(sha):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"{BLOBS}/{sha[:2]}/{sha}"


def put_blob(store: ObjectStore, path: str | os.PathLike, sha256: str | None = None) -> tuple[str, bool]:
    """Upload a file under its content address; ``(key, uploaded)`` (False: already there)."""
    sha = sha256 or sha256_file(path)
    key = blob_key(sha)
    size = Path(path).stat().st_size
    try:
        if store.stat(key).size == size:
            return key, False
    except ObjectNotFound:
        pass
    store.put_file(key, path, metadata={"sha256": sha})
    return key, True


def get_blob(store: ObjectStore, sha256: str, dest: str | os.PathLike, verify: bool = True) -> Path:
    """Download a blob to ``dest``; with ``verify`` the bytes must hash to the key (else nothing is written)."""
    dest = Path(dest)
    tmp = _atomic_target(dest)
    try:
        store.get_file(blob_key(sha256), tmp)
        if verify:
            got = sha256_file(tmp)
            if got != sha256.lower():
                raise BlobIntegrityError(f"blob {sha256} from {store.url(blob_key(sha256))} hashes to {got}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def blob_digest(store: ObjectStore, sha256: str) -> str | None:
    """The sha256 the stored blob ``sha256`` really hashes to (streamed), None when it is absent."""
    try:
        return store.sha256(blob_key(sha256))
    except ObjectNotFound:
        return None


def verify_blob(store: ObjectStore, sha256: str) -> bool:
    """True when the blob exists and its bytes hash to its key."""
    return blob_digest(store, sha256) == sha256.lower()


def _local(path, root) -> Path:
    """A manifest path on this worker: relative paths are under ``root`` (the data root)."""
    from curation.names import fs_path

    p = Path(fs_path(path) if isinstance(path, str) else path)
    return p if p.is_absolute() or root is None else Path(root) / p


def publish_blobs(store: ObjectStore, rows: Iterable[Mapping], only_passed: bool = True,
                  path_field: str = "source_path", sha_field: str = "sha256", root=None) -> dict:
    """Upload the rows' files as content-addressed blobs (duplicates and files without a hash skipped).
    Relative paths are resolved under ``root`` (the data root).

    Returns counts ``{"uploaded", "present", "skipped", "bytes"}``.
    """
    out = {"uploaded": 0, "present": 0, "skipped": 0, "bytes": 0}
    done: set[str] = set()
    for r in rows:
        sha = r.get(sha_field)
        path = r.get(path_field)
        if not sha or not path or (only_passed and not r.get("passed")) or sha in done:
            out["skipped"] += 1
            continue
        if r.get("duplicate_of"):
            out["skipped"] += 1
            continue
        path = _local(path, root)
        if not path.is_file():
            raise StoreError(f"blob source {path} (sha256 {sha}) is not on this worker")
        _, uploaded = put_blob(store, path, sha)
        done.add(sha)
        out["uploaded" if uploaded else "present"] += 1
        out["bytes"] += Path(path).stat().st_size if uploaded else 0
    return out


def restore_sources(store: ObjectStore, rows: Iterable[Mapping], only_passed: bool = True,
                    path_field: str = "source_path", sha_field: str = "sha256", root=None) -> dict:
    """Re-create every row's missing source file from its blob (hash checked); counts.
    Relative paths are resolved under ``root`` (the data root)."""
    out = {"restored": 0, "present": 0}
    for r in rows:
        if only_passed and not r.get("passed"):
            continue
        path = r.get(path_field)
        if not path:
            continue
        path = _local(path, root)
        if path.is_file():
            out["present"] += 1
            continue
        sha = r.get(sha_field)
        if not sha:
            raise StoreError(f"{path} is missing on this worker and its row has no {sha_field} to fetch it by")
        try:
            get_blob(store, sha, path)
        except ObjectNotFound:
            raise StoreError(f"{path} is missing on this worker and blob {sha} is not in {store.url(BLOBS)}") from None
        out["restored"] += 1
    return out
