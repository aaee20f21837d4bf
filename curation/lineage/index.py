"""The per-id index: image id -> (stage, manifest, row), so a lineage lookup reads a handful of rows
instead of the id column of every shard manifest.

``<data_root>/index/ids.sqlite`` (:meth:`curation.layout.DataLayout.id_index`) holds

* ``files``: one row per indexed manifest (stage, file name, the file's identity -- inode, size,
  mtime and ctime in ns -- when it was indexed, row count, data version);
* ``keys``: ``(key, kind, file, row)`` for every row of every indexed manifest, ``kind`` 0 for its
  ``image_id`` and 1 for its ``parent_id`` (the corpus walk asks for children by parent), in one
  B-tree keyed by the id (``WITHOUT ROWID``): a lookup is O(log n) page reads and an id prefix
  (``uhr lineage 5cd2c4``) is a range scan;
* ``dirs``: per stage folder, its identity when it was last scanned in full.

**Why SQLite and not one small index file per manifest plus a merged lookup**: the lookup must be
a B-tree (point and prefix queries over ~10^7 ids without loading them), the update must replace
one manifest's entries atomically while other shards commit in parallel processes (Dagster's
multiprocess executor), and readers must never see half an update. SQLite gives all three from
the standard library in one file (WAL: readers do not block the committing writer); a merged
lookup of per-manifest files would need its own compaction, locking and crash recovery. The
index is a cache, never a source of truth: it lives outside ``manifests/`` (not synced to the
object store, not a DVC output), and deleting it only costs a rebuild.

**Maintained on commit**: :func:`curation.manifest.write_manifest` calls :func:`note_commit` after
the atomic rename of a stage manifest (``manifests/<stage>/<shard>.parquet``); every stage commits
through it (``curation.stages.purification.commit``). A failure there is logged and ignored.

**Never stale**: a lookup does not trust the commit hook alone. Before the first lookup of a stage
(per :class:`~curation.lineage.LineageContext`) :meth:`IdIndex.refresh` compares the stage folder's
identity (inode, mtime) with the one recorded at its last full scan: every commit (write to a
temporary file + rename), download from the object store (same), deletion or ``dvc checkout``
changes it; then the folder is scanned (one ``stat`` per manifest, no reads) and every manifest
whose identity (inode, size, mtime, ctime) differs from its entry, or that is new, is re-indexed,
entries of removed ones dropped. A re-run that rewrites a shard therefore re-indexes it even when
the hook did not run (another machine, a crash between rename and hook, a copied data root). A
rename always brings a new inode (the temporary file exists next to the old one), so a rewrite is
seen even within one timestamp tick. Folder timestamps are coarse (a kernel tick; 1-2 s on some
file systems): a scan less than :data:`RACY_NS` after the folder's last change is "racy" (the
folder could change again within the same timestamp) and is not trusted, so the next lookup
scans again, as git does with its index. The index only says *which manifests* hold an id: each
of them is checked against its entry before it is read (identity; a changed one is re-indexed
and the lookup repeated) and the rows are read from it filtered by the ids themselves, so a
manifest rewritten *in place* (no rename: the folder does not change) is caught for every id it
held. What stays outside the guarantee: a writer that rewrites a manifest in place *and* adds
ids no indexed row held; none of this project's writers does (they all rename), and
:meth:`IdIndex.rebuild` starts over.

Cost: a lookup of k ids is k B-tree probes, one ``stat`` per manifest named and one filtered read
of each, independent of the number of shards; the folder check is one ``stat`` per stage. Build:
one read of the id columns of every manifest. Size: ~85 bytes per key on disk (~390 MB per
million images at six stages and a release).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pyarrow.parquet as pq

from curation.layout import DataLayout

log = logging.getLogger(__name__)

INDEX_FORMAT = "1"
#: the columns whose values are keys: ``image_id`` (kind 0) and ``parent_id`` (kind 1)
KEY_COLUMNS = {"image_id": 0, "parent_id": 1}
#: a folder scanned less than this after its last change is scanned again at the next lookup
RACY_NS = 2_000_000_000
#: False turns the index off in this process: lookups scan the manifests, commits do not index
#: (a library reads no environment variable; a caller that wants it off sets this)
ENABLED = True
#: the collection of release ``<name>``'s manifest is ``release:<name>`` (folder ``releases/<name>``)
RELEASE_PREFIX = "release:"
#: manifests (re-)indexed per transaction by a folder scan
_BATCH = 200
#: above this many ids a lookup goes through a temporary table instead of ``IN (...)``
_IN_LIMIT = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY AUTOINCREMENT, stage TEXT NOT NULL, name TEXT NOT NULL,
    ino INTEGER, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, indexed_ns INTEGER,
    n_rows INTEGER, data_version TEXT, UNIQUE(stage, name));
CREATE TABLE IF NOT EXISTS keys(
    key TEXT NOT NULL, kind INTEGER NOT NULL, file INTEGER NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY(key, kind, file, row)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirs(stage TEXT PRIMARY KEY, ino INTEGER, mtime_ns INTEGER, scanned_ns INTEGER);
"""


def enabled() -> bool:
    return bool(ENABLED)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class Hit:
    """One indexed row: ``stage``'s manifest ``name`` (``<shard>.parquet``), row ``row``, holding ``key``."""

    key: str
    name: str
    row: int


class StaleIndex(RuntimeError):
    """A row the index pointed at no longer holds its id (the manifest changed in place)."""


class IdIndex:
    """The id index of one data root (see the module docstring). Open with :meth:`open`; every
    method is safe to call from several processes at once."""

    def __init__(self, layout: DataLayout, path: Path | None = None):
        self.layout = layout
        self.path = Path(path) if path else layout.id_index()
        self._db: sqlite3.Connection | None = None
        self._pid = os.getpid()

    @classmethod
    def open(cls, layout: DataLayout) -> "IdIndex | None":
        """The data root's index, created when missing; None when it is turned off (:data:`ENABLED`)
        or cannot be opened (a read-only data root): callers then scan the manifests."""
        if not enabled():
            return None
        idx = cls(layout)
        try:
            idx.db
        except (OSError, sqlite3.Error) as exc:
            log.warning("lineage id index unavailable at %s (%s): scanning manifests", idx.path, exc)
            return None
        return idx

    # -- connection ---------------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():  # a forked child opens its own connection
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), timeout=120, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=120000")
            try:
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:  # a file system without shared memory: rollback journal
                pass
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache
            db.executescript(_SCHEMA)
            fmt = db.execute("SELECT v FROM meta WHERE k='format'").fetchone()
            if fmt is None or fmt[0] != INDEX_FORMAT:
                with _tx(db):
                    for t in ("keys", "files", "dirs", "meta"):
                        db.execute(f"DELETE FROM {t}")
                    db.execute("INSERT INTO meta VALUES ('format', ?), ('garbage', '0')", (INDEX_FORMAT,))
            self._db, self._pid = db, os.getpid()
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def stage_dir(self, stage: str) -> Path:
        """The folder of a collection: ``manifests/<stage>`` for a stage, ``releases/<name>`` for
        ``release:<name>`` (a release manifest: :data:`RELEASE_PREFIX`)."""
        if stage.startswith(RELEASE_PREFIX):
            return self.layout.release_dir(stage[len(RELEASE_PREFIX):])
        return self.layout.root / "manifests" / stage

    # -- writing ------------------------------------------------------------------------------

    def index_file(self, stage: str, path: Path, table=None, st: os.stat_result | None = None) -> int:
        """(Re-)index one manifest: its entries replace the old ones in one transaction. ``table``:
        the rows just written (saves reading them back). Returns the rows indexed."""
        return self.index_files(stage, [(Path(path), st, table)], strict=True)

    def index_files(self, stage: str, items: list, strict: bool = False) -> int:
        """(Re-)index manifests ``[(path, stat or None, table or None)]`` in one transaction, their
        keys inserted in key order (a rebuild touches each B-tree page once per batch, not once per
        key). An unreadable manifest is forgotten (logged; ``strict``: raised). Returns the rows indexed."""
        now = time.time_ns()
        files, keys, gone = [], [], []
        for path, st, table in items:
            path = Path(path)
            try:
                st = st or os.stat(path)
                if table is None:
                    names = pq.read_schema(path).names
                    table = pq.read_table(path, columns=[c for c in KEY_COLUMNS if c in names])
            except FileNotFoundError:
                gone.append(path.name)
                continue
            except Exception as exc:  # an unreadable manifest: no entries (as a scan would fail on it)
                if strict:
                    raise
                log.warning("lineage index: cannot index %s (%s)", path, exc)
                gone.append(path.name)
                continue
            md = table.schema.metadata or {}
            dv = (md.get(b"uhrforge.data_version") or b"").decode() or None
            n = len(files)
            for col, kind in KEY_COLUMNS.items():
                if col in table.column_names:
                    keys.extend((v, kind, n, r) for r, v in enumerate(table.column(col).to_pylist()) if v is not None)
            files.append((path.name, _identity(st), table.num_rows, dv))
        keys.sort()
        db = self.db
        with _tx(db):
            fids = []
            for name in gone:
                self._drop(stage, name)
            for name, ident, n_rows, dv in files:
                self._drop(stage, name)
                fids.append(db.execute(
                    "INSERT INTO files(stage, name, ino, size, mtime_ns, ctime_ns, indexed_ns, n_rows, data_version) "
                    "VALUES (?,?,?,?,?,?,?,?,?)", (stage, name, *ident, now, n_rows, dv)).lastrowid)
            db.executemany("INSERT OR IGNORE INTO keys(key, kind, file, row) VALUES (?,?,?,?)",
                           ((k, kind, fids[n], r) for k, kind, n, r in keys))
        return sum(f[2] for f in files)

    def _drop(self, stage: str, name: str) -> None:
        """Forget one manifest (inside a transaction): its ``files`` row goes, its keys become
        garbage (a lookup joins on ``files``, so they are invisible) until :meth:`collect`."""
        row = self.db.execute("SELECT id, n_rows FROM files WHERE stage=? AND name=?", (stage, name)).fetchone()
        if row is not None:
            self.db.execute("DELETE FROM files WHERE id=?", (row[0],))
            self.db.execute("UPDATE meta SET v = CAST(v AS INTEGER) + ? WHERE k='garbage'", (row[1] or 0,))

    def collect(self, force: bool = False) -> int:
        """Delete the keys of forgotten manifests once they outnumber the live ones (or ``force``)."""
        db = self.db
        garbage = int(db.execute("SELECT v FROM meta WHERE k='garbage'").fetchone()[0])
        live = db.execute("SELECT COALESCE(SUM(n_rows), 0) FROM files").fetchone()[0]
        if not garbage or (not force and garbage < max(live, 100_000)):
            return 0
        with _tx(db):
            n = db.execute("DELETE FROM keys WHERE file NOT IN (SELECT id FROM files)").rowcount
            db.execute("UPDATE meta SET v='0' WHERE k='garbage'")
        return n

    def refresh(self, stage: str, force: bool = False) -> bool:
        """Make ``stage``'s entries match its manifests (see the module docstring). Cheap when the
        folder did not change since its last full scan (one ``stat``); else one ``stat`` per
        manifest and a re-index of those that changed. Returns True when it scanned."""
        d = self.stage_dir(stage)
        db = self.db
        try:
            dst = os.stat(d)
        except FileNotFoundError:
            if db.execute("SELECT 1 FROM files WHERE stage=? LIMIT 1", (stage,)).fetchone():
                with _tx(db):
                    for (name,) in db.execute("SELECT name FROM files WHERE stage=?", (stage,)).fetchall():
                        self._drop(stage, name)
                    db.execute("DELETE FROM dirs WHERE stage=?", (stage,))
            return False
        rec = db.execute("SELECT ino, mtime_ns, scanned_ns FROM dirs WHERE stage=?", (stage,)).fetchone()
        if (not force and rec is not None and rec[0] == dst.st_ino and rec[1] == dst.st_mtime_ns
                and rec[1] + RACY_NS < rec[2]):
            return False
        scanned = time.time_ns()
        on_disk: dict[str, os.stat_result] = {}
        with os.scandir(d) as it:
            for e in it:
                if e.name.endswith(".parquet") and not e.name.startswith("."):
                    try:
                        on_disk[e.name] = e.stat()
                    except FileNotFoundError:
                        pass
        known = {r[0]: r[1:] for r in db.execute(
            "SELECT name, ino, size, mtime_ns, ctime_ns, indexed_ns FROM files WHERE stage=?", (stage,))}
        gone = sorted(set(known) - set(on_disk))
        if gone:
            with _tx(db):
                for name in gone:
                    self._drop(stage, name)
        todo = [(d / name, st, None) for name, st in sorted(on_disk.items())
                if known.get(name) is None or not _trusted(known[name], st)]
        for i in range(0, len(todo), _BATCH):
            self.index_files(stage, todo[i:i + _BATCH])
        with _tx(db):
            db.execute("INSERT OR REPLACE INTO dirs(stage, ino, mtime_ns, scanned_ns) VALUES (?,?,?,?)",
                       (stage, dst.st_ino, dst.st_mtime_ns, scanned))
        self.collect()
        return True

    def rebuild(self, stages: Iterable[str] | None = None) -> dict[str, int]:
        """Forget everything and index every manifest again, stages and releases (``{collection: manifests}``)."""
        if stages is None:
            stages = self.collections()
        db = self.db
        with _tx(db):  # (not executescript: it commits first)
            for t in ("keys", "files", "dirs"):
                db.execute(f"DELETE FROM {t}")
            db.execute("UPDATE meta SET v='0' WHERE k='garbage'")
        out = {}
        for s in stages:
            self.refresh(s, force=True)
            out[s] = db.execute("SELECT COUNT(*) FROM files WHERE stage=?", (s,)).fetchone()[0]
        return out

    def collections(self) -> list[str]:
        """Every stage folder under ``manifests/`` and every release (``release:<name>``) on disk."""
        out = []
        for base, prefix in ((self.layout.root / "manifests", ""), (self.layout.root / "releases", RELEASE_PREFIX)):
            if base.is_dir():
                out += [prefix + p.name for p in sorted(base.iterdir())
                        if p.is_dir() and not p.name.startswith((".", "_"))]
        return out

    # -- reading ------------------------------------------------------------------------------

    def lookup(self, stage: str, keys: Iterable[str], column: str = "image_id") -> list[Hit]:
        """Every indexed row of ``stage`` whose ``column`` (``image_id`` or ``parent_id``) is one
        of ``keys``, ordered by manifest and row. Call :meth:`refresh` first."""
        return [Hit(*r) for r in self._probe(stage, keys, column, "k.key, f.name, k.row", "ORDER BY f.name, k.row")]

    def _probe(self, stage: str, keys: Iterable[str], column: str, select: str, tail: str = "") -> list[tuple]:
        kind = KEY_COLUMNS[column]
        keys = sorted(set(keys))
        if not keys:
            return []
        db = self.db
        # keys first, files second: one B-tree probe per asked id (CROSS JOIN fixes SQLite's loop order)
        if len(keys) <= _IN_LIMIT:
            rows = db.execute(
                f"SELECT {select} FROM keys k CROSS JOIN files f ON f.id = k.file "
                f"WHERE k.key IN ({','.join('?' * len(keys))}) AND k.kind = ? AND f.stage = ? {tail}",
                (*keys, kind, stage)).fetchall()
        else:
            with _tx(db):
                db.execute("CREATE TEMP TABLE IF NOT EXISTS q(key TEXT PRIMARY KEY) WITHOUT ROWID")
                db.execute("DELETE FROM temp.q")
                db.executemany("INSERT OR IGNORE INTO temp.q(key) VALUES (?)", ((k,) for k in keys))
                rows = db.execute(
                    f"SELECT {select} FROM temp.q CROSS JOIN keys k CROSS JOIN files f "
                    f"ON k.key = q.key AND f.id = k.file WHERE k.kind = ? AND f.stage = ? {tail}",
                    (kind, stage)).fetchall()
        return rows

    def files_of(self, stage: str, keys: Iterable[str], column: str = "image_id") -> dict[str, tuple]:
        """``{manifest name: its entry's identity}`` of the manifests of ``stage`` holding one of
        ``keys`` in ``column`` (what :meth:`check` compares with the files on disk)."""
        return {r[0]: r[1:] for r in self._probe(stage, keys, column, "DISTINCT f.name, f.ino, f.size, f.mtime_ns, "
                                                            "f.ctime_ns, f.indexed_ns")}

    def check(self, stage: str, files: dict[str, tuple]) -> bool:
        """True when every manifest of ``files`` (:meth:`files_of`) is on disk as indexed; the
        others are re-indexed (or forgotten, when gone) and False returned."""
        d = self.stage_dir(stage)
        changed = []
        for name, rec in files.items():
            try:
                st = os.stat(d / name)
            except FileNotFoundError:
                changed.append((d / name, None, None))
                continue
            if not _trusted(rec, st):
                changed.append((d / name, st, None))
        if changed:
            self.index_files(stage, changed)
        return not changed

    def prefix(self, stages: Iterable[str], prefix: str, limit: int = 6) -> set[str]:
        """Ids (``image_id``) of ``stages`` starting with ``prefix`` (at most ``limit``)."""
        stages = list(stages)
        if not prefix or not stages:
            return set()
        hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self.db.execute(
            f"SELECT DISTINCT k.key FROM keys k CROSS JOIN files f ON f.id = k.file WHERE k.kind = 0 "
            f"AND k.key >= ? AND k.key < ? AND f.stage IN ({','.join('?' * len(stages))}) LIMIT ?",
            (prefix, hi, *stages, limit)).fetchall()
        return {r[0] for r in rows}

    def verify(self, stage: str, name: str) -> bool:
        """True when manifest ``name`` is on disk exactly as it was indexed; else it
        is re-indexed (or forgotten, when gone) and False returned."""
        p = self.stage_dir(stage) / name
        rec = self.db.execute("SELECT ino, size, mtime_ns, ctime_ns, indexed_ns FROM files WHERE stage=? AND name=?",
                              (stage, name)).fetchone()
        try:
            st = os.stat(p)
        except FileNotFoundError:
            with _tx(self.db):
                self._drop(stage, name)
            return False
        if rec is not None and _trusted(rec, st):
            return True
        self.index_file(stage, p, st=st)
        return False

    def stats(self) -> dict:
        db = self.db
        return {"files": db.execute("SELECT COUNT(*) FROM files").fetchone()[0],
                "rows": db.execute("SELECT COALESCE(SUM(n_rows), 0) FROM files").fetchone()[0],
                "bytes": sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))}


def read_hits(path: str | os.PathLike, hits: list[Hit], column: str = "image_id",
              columns: list[str] | None = None) -> list[dict]:
    """The rows ``hits`` point at in the manifest ``path`` (hits of that file), reading only the
    row groups that hold them; :class:`StaleIndex` when a row does not hold its id."""
    import bisect

    import pyarrow as pa

    pf = pq.ParquetFile(path)
    starts, n = [], 0
    for g in range(pf.metadata.num_row_groups):
        starts.append(n)
        n += pf.metadata.row_group(g).num_rows
    by_group: dict[int, list[Hit]] = {}
    for h in hits:
        if not 0 <= h.row < n:
            raise StaleIndex(str(path))
        by_group.setdefault(bisect.bisect_right(starts, h.row) - 1, []).append(h)
    out = []
    for g in sorted(by_group):
        t = pf.read_row_group(g, columns=columns)
        got = t.take(pa.array([h.row - starts[g] for h in by_group[g]], pa.int64())).to_pylist()
        for h, r in zip(by_group[g], got):
            if r.get(column) != h.key:
                raise StaleIndex(str(path))
            out.append(r)
    return out


def _trusted(rec, st: os.stat_result) -> bool:
    """An entry ``(ino, size, mtime_ns, ctime_ns, indexed_ns)`` still describes the file ``st``."""
    return tuple(rec[:4]) == _identity(st)


class _tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


#: indexes the commit hook keeps open, most recent last (a few data roots per process)
_OPEN: dict[Path, IdIndex] = {}
_MAX_OPEN = 4


def note_commit(path: str | os.PathLike, table=None) -> bool:
    """Index a stage manifest that was just committed at ``<data_root>/manifests/<stage>/<name>``
    (called by :func:`curation.manifest.write_manifest`). False when the index is off."""
    if not enabled():
        return False
    path = Path(path).resolve()
    root = path.parent.parent.parent
    idx = _OPEN.pop(root, None) or IdIndex(DataLayout.at(root))
    _OPEN[root] = idx
    while len(_OPEN) > _MAX_OPEN:
        _OPEN.pop(next(iter(_OPEN))).close()
    idx.index_file(path.parent.name, path, table)
    return True
