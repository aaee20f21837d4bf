"""Raw pool of one shard (section 3.1.1): ingest, dedup by content hash, resolution screen.

A shard is a folder under the raw root (``<raw_root>/<shard>/``). **Every directory entry of the
folder gets a row**, whatever its name or kind, except the licence sidecars the rows read (below):

* a regular file is hashed and decoded by its content, never judged by its name (a hidden file, a
  JPEG named ``photo.JSON`` or without a suffix are images like any other);
* anything else -- a symlink (valid, broken or looping: symlinks are rejected, never followed), a
  directory, a FIFO, a socket, a device -- is a rejected row with reason ``not_a_regular_file`` and
  its kind as ``reject_detail``; it is never opened for reading (``lstat`` only; a regular file is
  opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked again with ``fstat``);
* an entry that cannot be read (permissions, removed while listed) is ``unreadable`` with the error.

Names are stored losslessly and printable (:mod:`curation.names`): ``source_path`` is the escaped
text, ``source_path_bytes`` the original bytes when they differ (a name that is not UTF-8). Rows
that hash no content (``sha256`` null) get an id from the shard and the name's bytes.

Dedup is exact (sha256 of the bytes): the first seen wins, where "first" means an earlier shard
(key order) or, inside a shard, an earlier name in byte order. The screen reads only the header
(:func:`curation.imageio.probe`).

Licence: from the sidecar ``<stem>.json`` (``{"licence": ..., "origin": ...}``; exactly the name
``Path(name).with_suffix(".json")``, a regular file next to the entry), else ``"unknown"``. A file
with that name that is not a JSON object of at most :data:`SIDECAR_MAX_BYTES` is no sidecar: it
gets its own row. ``sidecar`` records the sidecar read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from curation import reasons
from curation.config import Config
from curation.imageio import ImageReadError, image_id_from_hash, probe
from curation.names import encode_name, safe_text
from curation.screening import screen

SIDECAR_SUFFIX = ".json"
#: a sidecar larger than this (bytes) is not read as one (not in paper)
SIDECAR_MAX_BYTES = 1 << 20

_KINDS = (
    (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character_device"), (stat.S_ISBLK, "block_device"),
)


def entry_kind(mode: int) -> str:
    """``"file"`` for a regular file, else the kind (``symlink``, ``directory``, ``fifo``, ...)."""
    return next((name for test, name in _KINDS if test(mode)), "unknown")


@dataclass(frozen=True)
class ShardEntry:
    """One directory entry of a shard folder.

    ``path``: ``<shard_dir>/<name>`` (undecodable bytes of the name surrogate-escaped, as
    ``os.listdir`` gives them); ``kind``: :func:`entry_kind` of its ``lstat`` (``"missing"`` when
    even that failed: ``error`` says why); ``sidecar``: the name of the licence sidecar next to it."""

    path: Path
    kind: str
    size: int = 0
    sidecar: str | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


def sidecar_name(name: str) -> str | None:
    """The licence sidecar's name for the entry ``name`` (``a.jpg`` -> ``a.json``); None for itself."""
    try:
        side = Path(name).with_suffix(SIDECAR_SUFFIX).name
    except ValueError:
        return None
    return None if side == name else side


def _sort_key(name: str) -> bytes:
    return os.fsencode(name)


def scan_shard(shard_dir: str | os.PathLike) -> list[ShardEntry]:
    """Every directory entry of a shard folder (sidecars included), in byte order of the names.
    Only ``lstat`` is called: nothing is opened or followed."""
    shard_dir = Path(shard_dir)
    out = []
    for name in sorted(os.listdir(shard_dir), key=_sort_key):
        p = shard_dir / name
        try:
            st = os.lstat(p)
        except OSError as exc:
            out.append(ShardEntry(p, "missing", 0, error=f"lstat: {exc.strerror or exc}"))
            continue
        out.append(ShardEntry(p, entry_kind(st.st_mode), st.st_size))
    kinds = {e.name: e.kind for e in out}
    return [
        ShardEntry(e.path, e.kind, e.size, side, e.error)
        if e.kind == "file" and (side := sidecar_name(e.name)) and kinds.get(side) == "file" else e
        for e in out
    ]


def list_shard_entries(shard_dir: str | os.PathLike) -> list[ShardEntry]:
    """The entries of a shard folder that get a row: all of :func:`scan_shard` but the regular
    files some entry names as its sidecar (a sidecar that does not parse still gets a row, later)."""
    entries = scan_shard(shard_dir)
    sidecars = {e.sidecar for e in entries if e.sidecar}
    return [e for e in entries if e.name not in sidecars]


def list_shard_files(shard_dir: str | os.PathLike) -> list[Path]:
    """The paths of :func:`list_shard_entries` (every entry but the sidecars), in byte order."""
    return [e.path for e in list_shard_entries(shard_dir)]


def _shard_folders(raw_root: Path) -> list[str]:
    if not raw_root.exists():
        return []
    return sorted(d.name for d in raw_root.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and any(os.scandir(d)))


def list_shards(raw_root: str | os.PathLike) -> list[str]:
    """Shard names = sub-folders of the raw root (hidden ones excepted) that hold at least one entry
    and whose name can be a shard key (:func:`unusable_shards` lists the others)."""
    return [n for n in _shard_folders(Path(raw_root)) if encode_name(n) == n]


def unusable_shards(raw_root: str | os.PathLike) -> list[str]:
    """Shard folders whose name cannot be a shard key (not UTF-8, a control character, a
    backslash: it names partitions, manifests and object keys), escaped for printing; they are
    not ingested until renamed."""
    return [encode_name(n) for n in _shard_folders(Path(raw_root)) if encode_name(n) != n]


class NotRegularError(OSError):
    """An entry listed as a regular file that is not one when opened (swapped meanwhile)."""


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """An fd of ``path`` when it is (still) a regular file; never follows a symlink, never blocks on a FIFO."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularError(f"{entry_kind(st.st_mode)} (was a regular file when listed)")
    return fd, st


def _hash_regular(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a regular file (see :func:`_open_regular`)."""
    fd, st = _open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest(), st.st_size


def read_sidecar(path: Path) -> dict | None:
    """The JSON object of a sidecar file, or None when it is not one (not regular, too large,
    unreadable, not JSON, not an object)."""
    try:
        fd, st = _open_regular(path)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > SIDECAR_MAX_BYTES:
            return None
        try:
            data = json.loads(fh.read(SIDECAR_MAX_BYTES + 1))
        except (OSError, ValueError):
            return None
    return data if isinstance(data, dict) else None


def _name_id(shard: str, name: str) -> str:
    """The id of a row without content (not a regular file, unreadable): from the shard and the name's bytes."""
    h = hashlib.sha256(b"raw-entry\0" + os.fsencode(shard) + b"\0" + os.fsencode(name)).hexdigest()
    return image_id_from_hash(h)


def _kind_detail(entry: ShardEntry) -> str:
    """The reject detail of an entry that is not a regular file: its kind (and a symlink's target)."""
    if entry.kind != "symlink":
        return entry.kind
    try:
        target = safe_text(os.readlink(entry.path))
    except OSError as exc:
        return f"symlink (target unreadable: {exc.strerror})"
    try:
        st = os.stat(entry.path)  # follows the link; opens nothing
    except OSError as exc:
        what = "loop" if exc.errno == errno.ELOOP else f"broken: {exc.strerror}"
        return f"symlink -> {target} ({what})"
    kind = entry_kind(st.st_mode)
    return f"symlink -> {target} (to a {'regular file' if kind == 'file' else kind}; not followed)"


def resolve_sidecars(entries: list[ShardEntry]) -> tuple[list[ShardEntry], dict[str, dict]]:
    """Read the entries' sidecars. Returns (entries to row, in byte order: a named sidecar that is
    not a JSON object is added as an entry of its own; ``{entry name: sidecar dict}``)."""
    if not entries:
        return [], {}
    shard_dir = entries[0].path.parent
    read: dict[str, dict | None] = {}
    for e in entries:
        if e.sidecar and e.sidecar not in read:
            read[e.sidecar] = read_sidecar(shard_dir / e.sidecar)
    bad = {n for n, d in read.items() if d is None}
    out, sides = [], {}
    for e in entries:
        if e.sidecar in bad:
            e = ShardEntry(e.path, e.kind, e.size, None, e.error)
        elif e.sidecar:
            sides[e.name] = read[e.sidecar]
        out.append(e)
    for n in bad:
        try:
            st = os.lstat(shard_dir / n)
            out.append(ShardEntry(shard_dir / n, entry_kind(st.st_mode), st.st_size))
        except OSError as exc:
            out.append(ShardEntry(shard_dir / n, "missing", 0, error=f"lstat: {exc.strerror or exc}"))
    out.sort(key=lambda e: _sort_key(e.name))
    return out, sides


def build_raw_pool_rows(
    shard: str,
    files: Iterable[ShardEntry | Path],
    cfg: Config,
    seen: dict[str, str],
    code_version: str,
    progress: Callable[[int], None] | None = None,
    config_hash: str | None = None,
    relpath: Callable[[Path], str] = str,
) -> list[dict]:
    """One row per entry (:func:`list_shard_entries`; plain paths are looked up with ``lstat``).
    ``seen`` maps sha256 -> source path of the first copy (updated in place).

    ``config_hash``: the raw_pool stage fingerprint rows record (default: the whole config's hash);
    ``relpath``: how the shard folder is written into the manifest (relative to the data root when
    inside it); the entry's name is appended (a symlink is never resolved) and the whole escaped
    (:func:`curation.names.encode_name`).
    """
    entries = [f if isinstance(f, ShardEntry) else _entry_of(Path(f)) for f in files]
    entries, sides = resolve_sidecars(entries)
    bounds = cfg.screen_bounds()
    max_pixels = int(cfg.get("io.max_pixels"))
    folders: dict[Path, str] = {}
    rows = []
    for e in entries:
        folder = folders.get(e.path.parent)
        if folder is None:
            folder = folders[e.path.parent] = relpath(e.path.parent).rstrip("/")
        full = f"{folder}/{e.name}"
        src = encode_name(full)
        side = sides.get(e.name) or {}
        row = {
            "image_id": None,
            "sha256": None,
            "shard": shard,
            "source_path": src,
            "source_path_bytes": os.fsencode(full) if src != full else None,
            "sidecar": encode_name(e.sidecar) if e.name in sides else None,
            "licence": safe_text(str(side.get("licence") or side.get("license") or "unknown")),
            "origin": safe_text(str(side["origin"])) if side.get("origin") is not None else None,
            "file_bytes": e.size,
            "config_hash": config_hash or cfg.hash,
            "code_version": code_version,
            "passed": False,
        }
        sha = None
        if e.kind == "missing":
            row.update(reject_reason=reasons.UNREADABLE, reject_detail=e.error)
        elif e.kind != "file":
            row.update(reject_reason=reasons.NOT_A_REGULAR_FILE, reject_detail=_kind_detail(e))
        else:
            try:
                sha, row["file_bytes"] = _hash_regular(e.path)
            except NotRegularError as exc:  # swapped for a non-regular entry since the listing
                row.update(reject_reason=reasons.NOT_A_REGULAR_FILE, reject_detail=str(exc))
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink put there since the listing
                    row.update(reject_reason=reasons.NOT_A_REGULAR_FILE,
                               reject_detail="symlink (was a regular file when listed; not followed)")
                else:
                    row.update(reject_reason=reasons.UNREADABLE,
                               reject_detail=safe_text(f"open: {exc.strerror or exc}"))
        row["image_id"] = image_id_from_hash(sha) if sha else _name_id(shard, e.name)
        row["sha256"] = sha
        if sha is None:
            pass  # rejected above: no content to dedup or decode
        elif sha in seen:
            row.update(reject_reason=reasons.DUPLICATE, duplicate_of=seen[sha])
        else:
            seen[sha] = src
            try:
                head = probe(e.path, max_pixels)
            except ImageReadError as exc:
                row.update(reject_reason=exc.reason, reject_detail=safe_text(str(exc.detail or "")) or None)
            else:
                verdict, tier = screen(head.width, head.height, bounds)
                row.update(
                    format=head.format,
                    width=head.width,
                    height=head.height,
                    megapixels=head.pixels / 1e6,
                    screen_tier=tier,
                    passed=verdict == reasons.PASS,
                    reject_reason=None if verdict == reasons.PASS else verdict,
                )
        rows.append(row)
        if progress:
            progress(1)
    return rows


def _entry_of(path: Path) -> ShardEntry:
    try:
        st = os.lstat(path)
    except OSError as exc:
        return ShardEntry(path, "missing", 0, error=f"lstat: {exc.strerror or exc}")
    kind = entry_kind(st.st_mode)
    side = sidecar_name(path.name) if kind == "file" else None
    try:
        side = side if side and stat.S_ISREG(os.lstat(path.with_name(side)).st_mode) else None
    except OSError:
        side = None
    return ShardEntry(path, kind, st.st_size, side)
