"""Corpus releases (no Dagster here): freeze the passed corpus into a named, versioned release.

A release is

* ``<data_root>/releases/<name>/manifest.parquet`` -- one row per image (:data:`RELEASE`):
  id, content hash and blob key, size, tier, parent and raw source hash, licence and origin,
  the short and long caption and ``caption_record`` (a compact JSON reference to the image's
  captions record: manifest, config hash, sha256 of the full record, per-field provenance),
  config hash and code version;
* ``<data_root>/releases/<name>/release.json`` -- counts, shards, config hashes, code versions,
  the manifest digest, the stages the audit requires (``required_stages``), the bench split it
  left out (``bench_split``: version, how many ids) and where its training export comes from;
  deterministic, so re-releasing the same content is a no-op;
* the images themselves as content-addressed blobs in the object store (uploaded when missing;
  the release lists their keys, so storage is never doubled);
* that folder tracked by DVC (``<repo>/releases/<name>.dvc``) and pushed to the DVC remote;
* an annotated git tag ``release/<name>`` on a commit holding the ``.dvc`` file;
* an entry in the releases table (``releases/_index/<name>.json``, written last: the entry's
  presence is the release's commit marker; ``releases/releases.parquet`` is the table view).

Where the rows come from: with ``final_corpus`` manifests on the data root, the passed
``final_corpus`` rows (corpus passed AND instance check passed AND captions complete) minus
every PixVerve-Bench id (:func:`curation.stages.final.bench_ids`); the audit then requires the
``captions`` and ``final_corpus`` records too. A data root without them releases the passed
``corpus_100mp`` rows with null caption columns, as releases made before the captions stage did.

Release names are immutable: the same name with the same content returns the existing
release; with different content it is refused. A name is checked by :func:`check_name` (the one
validator: a full match that is also a valid git ref and a DVC path of its own) before anything
is read or written, and every reader by name goes through it (no traversal). A release that
fails at any step takes back what it wrote (:class:`_Undo`), so a retry starts clean.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Callable

import pyarrow as pa

from curation.hashing import sha256_file
from curation.layout import DataLayout
from curation.manifest import RELEASE, read_manifest, to_table, write_manifest
from curation.store import BlobIntegrityError, ObjectStore, blob_key, data_key, ensure_local, put_blob

#: a release name: a letter or digit, then letters, digits, '.', '_' or '-'; 64 characters at most (the
#: SQL table's column). Matched with ``re.fullmatch`` (``$`` would accept a trailing newline);
#: :func:`check_name` adds the rules that keep ``release/<name>`` a valid git ref and
#: ``releases/<name>`` / ``releases/<name>.dvc`` distinct paths of their own
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: names a release may not take: files the data root's ``releases/`` folder holds itself
RESERVED_NAMES = frozenset({"releases.parquet"})
CAPTIONS_NOTE = ("captions from the captions stage (paper 3.1.5): short_caption and long_caption; caption_record = "
                 "JSON reference to the full record (captions manifest, config hash, record sha256, per-field "
                 "provenance); `uhr captions IMAGE_ID` prints the whole record")
NO_CAPTIONS_NOTE = ("no captions: this data root had no final_corpus manifests when the release was made "
                    "(released from corpus_100mp); caption columns are null")
RELEASE_FORMAT = 1
#: the stages every release requires (what ``uhr audit`` checks for a release.json without ``required_stages``)
LEGACY_REQUIRED_STAGES = ("raw_pool", "image_scores", "candidate_pool", "corpus_100mp")
#: release.json's ``training_export``: the folder is not part of the release (DVC would hash every
#: 100 MP image again); it is rebuilt from the release's manifest, images as hard links
TRAINING_EXPORT_NOTE = ("diffusers image folder (metadata.jsonl: file_name, text, short_caption, long_caption; "
                        "images hard-linked): `uhr export-training OUT_DIR --release {name}` "
                        "(curation.captioning.export.export_training_set(layout, out_dir, release='{name}'))")
LOCAL_FIELDS = ("file_bytes", "source_path")
#: rows per row group of a release manifest: lineage reads an image's row without decoding the release
RELEASE_ROW_GROUP = 1024


class ReleaseError(RuntimeError):
    """A release cannot be made or read; the message says why."""


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a release name (one phrase naming the rule), or None when it can.

    The one validator of release names (:func:`check_name` raises with it): every command and
    function that takes a release name goes through it before it reads or writes anything. A
    valid name is a single path component under ``releases/`` (no ``/``, no ``..``, not hidden),
    a valid git ref as ``release/<name>`` (``git check-ref-format``: no ``..``, no control
    character or space, no trailing ``.``, no ``.lock`` suffix) and a DVC path whose ``.dvc``
    file is no other release's folder (no ``.dvc`` suffix)."""
    if not isinstance(name, str) or not name:
        return "a release name is required"
    if not NAME_RE.fullmatch(name):
        return ("use letters, digits, '.', '_' and '-' only, at most 64 characters, starting with a letter or "
                "digit (no '/', spaces, control characters or newlines)")
    if ".." in name:
        return "'..' is not allowed (path traversal; not a valid git ref)"
    if name.endswith("."):
        return "a name may not end with '.' (not a valid git ref)"
    if name.lower().endswith(".lock"):
        return "a name may not end with '.lock' (git reserves it for its lock files)"
    if name.lower().endswith(".dvc"):
        return "a name may not end with '.dvc' (it would be the DVC file of release " + repr(name[:-4]) + ")"
    if name in RESERVED_NAMES:
        return f"{name!r} is reserved (the releases table's own file)"
    return None


def check_name(name: str) -> str:
    """``name`` when it is a valid release name (:func:`name_problem`), else :class:`ReleaseError`."""
    why = name_problem(name)
    if why:
        raise ReleaseError(f"bad release name {name!r}: {why}")
    return name


def release_dir(layout: DataLayout, name: str) -> Path:
    """``<data_root>/releases/<name>`` for a valid release name (:func:`check_name` first)."""
    return layout.release_dir(check_name(name))


# -- rows -------------------------------------------------------------------------------------

def release_source(layout: DataLayout) -> str:
    """``final_corpus`` when the data root has final_corpus manifests, else ``corpus_100mp``
    (a data root from before the captions stage)."""
    return "final_corpus" if layout.manifests("final_corpus") else "corpus_100mp"


def required_stages(source: str) -> list[str]:
    """The lineage stages a release made from ``source`` requires (recorded in release.json):
    every provider marked ``required``, plus those marked ``required_with_captions`` for a
    release made from the final corpus."""
    from curation.lineage import link_providers

    return [p.stage for p in link_providers()
            if p.required or (source == "final_corpus" and getattr(p, "required_with_captions", False))]


def caption_reference(cap: dict) -> str:
    """The release's ``caption_record``: a compact, deterministic JSON pointing at the image's full
    captions record (its manifest, config hash, code version and the record's sha256) with the
    provenance of every field (backend, model, prompt hash, status) and the instance check."""
    rec = json.loads(cap["record"]) if cap.get("record") else {}
    prov = {k: {f: v.get(f) for f in ("backend", "model", "prompt_hash", "status")}
            for k, v in sorted((rec.get("provenance") or {}).items())}
    return json.dumps({
        "manifest": f"manifests/captions/{cap['shard']}.parquet",
        "config_hash": cap.get("config_hash"), "code_version": cap.get("code_version"),
        "record_sha256": hashlib.sha256((cap.get("record") or "").encode()).hexdigest(),
        "n_tags": cap.get("n_tags"), "n_instances": cap.get("n_instances"),
        "instance_decision": cap.get("instance_decision"), "provenance": prov,
    }, sort_keys=True)


def _select(layout: DataLayout, stage: str, columns: list[str], passed: bool = False,
            ids: set[str] | None = None, column: str = "image_id") -> list[dict]:
    """Rows of every ``stage`` manifest, only ``columns``, only passed rows (``passed``) and/or
    rows whose ``column`` is in ``ids``; manifest order. Reads only these columns, batch by batch
    (Arrow's threaded scanner), and keeps only the rows it returns: memory follows them, not the
    manifests read."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from curation.manifest import SCHEMAS

    paths = [str(p) for p in layout.manifests(stage)]
    if not paths:
        return []
    schema = SCHEMAS.get(stage)
    data = ds.dataset(paths, format="parquet", schema=schema)
    names = data.schema.names
    read = [c for c in dict.fromkeys(columns + (["passed"] if passed else []) + ([column] if ids is not None else []))
            if c in names]
    keep = [c for c in columns if c in names]
    out: list[dict] = []
    for batch in data.to_batches(columns=read):
        mask = pc.fill_null(batch.column("passed"), False) if passed else None
        if ids is not None:  # a Python set probe per row: pc.is_in would hash the whole set for every batch
            m = pa.array([v in ids for v in batch.column(column).to_pylist()], pa.bool_())
            mask = m if mask is None else pc.and_(mask, m)
        if mask is not None:
            batch = batch.filter(mask)
        if batch.num_rows:
            out.extend(batch.select(keep).to_pylist())
    return out


def _captions_for(layout: DataLayout, ids: set[str]) -> dict[str, dict]:
    cols = ["image_id", "shard", "record", "n_tags", "n_instances", "instance_decision", "config_hash", "code_version"]
    return {r["image_id"]: r for r in _select(layout, "captions", cols, ids=ids)}


_CORPUS_COLUMNS = ["image_id", "sha256", "output_path", "file_format", "width", "height", "megapixels", "tier",
                   "parent_id", "shard", "config_hash", "code_version", "passed"]


def release_plan(layout: DataLayout) -> tuple[list[dict], dict]:
    """``(rows, info)``: the release rows (:func:`release_rows`) and what release.json says about
    where they came from (``source``, ``required_stages``, ``bench_split``, ``captions``).

    Reads only the columns it needs, and only the rows it keeps (Arrow filters), one manifest at
    a time: the cost is one pass over those columns of every manifest, memory the rows released."""
    from curation.stages.final import bench_ids, load_split

    source = release_source(layout)
    info: dict = {"source": source, "required_stages": required_stages(source)}
    final: dict[str, dict] = {}
    caps: dict[str, dict] = {}
    if source == "final_corpus":
        final = {r["image_id"]: r for r in _select(layout, "final_corpus",
                                                   ["image_id", "short_caption", "long_caption"], passed=True)}
        held = bench_ids(layout)
        split = load_split(layout) or {}
        info["bench_split"] = {
            "version": split.get("version"), "rule": split.get("rule"), "n_split": len(held),
            "n_held_out": len(held & set(final)), "image_ids": sorted(held),
            "file": "manifests/bench_split/split.json" if split else None,
        }
        corpus = _select(layout, "corpus_100mp", _CORPUS_COLUMNS, passed=True, ids=set(final) - held)
        caps = _captions_for(layout, {r["image_id"] for r in corpus})
        info["captions"] = CAPTIONS_NOTE
    else:
        corpus = _select(layout, "corpus_100mp", _CORPUS_COLUMNS, passed=True)
        info["captions"] = NO_CAPTIONS_NOTE
    if not corpus:
        return [], info
    parents = {r["parent_id"] for r in corpus}
    raw: dict[str, dict] = {}
    for r in _select(layout, "raw_pool", ["image_id", "passed", "sha256", "licence", "origin", "source_path"],
                     ids=parents):
        if r["image_id"] not in raw or r["passed"] and not raw[r["image_id"]]["passed"]:
            raw[r["image_id"]] = r  # the passed row (a later duplicate of the file is rejected)
    cand = {r["image_id"]: r["threshold_version"]
            for r in _select(layout, "candidate_pool", ["image_id", "threshold_version"], ids=parents)}
    rows, seen = [], set()
    for r in sorted(corpus, key=lambda r: (r["image_id"], r["shard"])):
        if r["image_id"] in seen:
            continue  # the same output from two shards (identical bytes): one row
        seen.add(r["image_id"])
        src = raw.get(r["parent_id"], {})
        out_path = layout.resolve(r.get("output_path"))
        fin, cap = final.get(r["image_id"]), caps.get(r["image_id"])
        rows.append({
            "image_id": r["image_id"], "sha256": r["sha256"], "blob_key": blob_key(r["sha256"]),
            "file_format": r.get("file_format"),
            "file_bytes": out_path.stat().st_size if out_path and out_path.is_file() else None,
            "width": r.get("width"), "height": r.get("height"), "megapixels": r.get("megapixels"),
            "tier": r.get("tier"), "parent_id": r["parent_id"],
            "raw_sha256": src.get("sha256"), "raw_blob_key": blob_key(src["sha256"]) if src.get("sha256") else None,
            "shard": r["shard"], "licence": src.get("licence"), "origin": src.get("origin"),
            "source_path": src.get("source_path"),
            "short_caption": fin.get("short_caption") if fin else None,
            "long_caption": fin.get("long_caption") if fin else None,
            "caption_record": caption_reference(cap) if cap else None,
            "corpus_config_hash": r["config_hash"], "corpus_code_version": r["code_version"],
            "threshold_version": cand.get(r["parent_id"]),
        })
    return rows, info


def release_rows(layout: DataLayout) -> list[dict]:
    """One row per released image over every shard, joined with its raw source: the passed
    ``final_corpus`` rows minus the bench split, with their captions (a data root without
    final_corpus manifests: the passed ``corpus_100mp`` rows, caption columns null)."""
    return release_plan(layout)[0]


def rows_digest(rows: list[dict]) -> str:
    """sha256 of the release's content, independent of Parquet encoding (sorted canonical JSON).
    Worker-local fields are left out (:data:`LOCAL_FIELDS`: the file size read from this worker,
    implied by the hash, and the path the raw file had on the ingesting worker), so the same
    content released from two workers has one digest."""
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r["image_id"]):
        h.update(json.dumps({k: v for k, v in r.items() if k not in LOCAL_FIELDS}, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def describe_rows(rows: list[dict]) -> dict:
    return {
        "n_images": len(rows),
        "shards": sorted({r["shard"] for r in rows}),
        "tiers": dict(sorted(Counter(r["tier"] for r in rows).items())),
        "licences": dict(sorted(Counter(str(r["licence"]) for r in rows).items())),
        "config_hashes": sorted({r["corpus_config_hash"] for r in rows}),
        "code_versions": sorted({r["corpus_code_version"] for r in rows}),
        "threshold_versions": sorted({str(r["threshold_version"]) for r in rows}),
        "megapixels_min": min((r["megapixels"] or 0 for r in rows), default=None),
    }


# -- blobs ------------------------------------------------------------------------------------

def ensure_release_blobs(store: ObjectStore, rows: list[dict], corpus_paths: dict[str, str],
                         progress: Callable[[int], None] | None = None, resolve: Callable | None = None) -> dict:
    """Every release image and its raw source as a blob in ``store`` (uploaded from this worker
    when missing, hash checked first). Missing everywhere -> :class:`ReleaseError` naming them."""
    out = {"uploaded": 0, "present": 0, "bytes": 0}
    missing = []
    wanted: dict[str, str | None] = {}
    for r in rows:
        wanted.setdefault(r["sha256"], corpus_paths.get(r["image_id"]))
        if r.get("raw_sha256"):
            src = r.get("source_path")
            wanted.setdefault(r["raw_sha256"], resolve(src) if resolve and src else src)
    for sha, path in wanted.items():
        key = blob_key(sha)
        if store.exists(key):
            out["present"] += 1
        elif path and Path(path).is_file():
            got = sha256_file(path)
            if got != sha:
                raise BlobIntegrityError(f"{path} should hash to {sha} (its manifest row) but hashes to {got}")
            put_blob(store, path, sha)
            out["uploaded"] += 1
            out["bytes"] += Path(path).stat().st_size
        else:
            missing.append(f"{sha} ({path or 'no local path'})")
        if progress:
            progress(1)
    if missing:
        raise ReleaseError(f"{len(missing)} blob(s) are neither in {store.url('blobs')} nor on this worker: "
                           + "; ".join(missing[:5]))
    return out


# -- the releases table -------------------------------------------------------------------------

def entry_path(layout: DataLayout, name: str) -> Path:
    """The releases table entry of ``name`` (a valid release name, :func:`check_name`)."""
    return layout.release_index() / f"{check_name(name)}.json"


def read_entry(layout: DataLayout, name: str, store: ObjectStore | None = None) -> dict | None:
    """A release's table entry (fetched from the store when not on this worker)."""
    p = entry_path(layout, name)
    if store is not None:
        ensure_local(store, data_key(layout, p), p)
    return json.loads(p.read_text()) if p.exists() else None


def releases_table(layout: DataLayout) -> list[dict]:
    d = layout.release_index()
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


_TABLE = pa.schema([
    ("name", pa.string()), ("created_at", pa.string()), ("n_images", pa.int64()),
    ("manifest_sha256", pa.string()), ("dvc_md5", pa.string()), ("dvc_remote", pa.string()),
    ("pushed", pa.bool_()), ("git_tag", pa.string()), ("git_commit", pa.string()), ("store", pa.string()),
])


def write_releases_parquet(layout: DataLayout) -> Path:
    rows = [{
        "name": e["name"], "created_at": e["created_at"], "n_images": e["n_images"],
        "manifest_sha256": e["manifest_sha256"], "dvc_md5": (e.get("dvc") or {}).get("md5"),
        "dvc_remote": (e.get("dvc") or {}).get("remote_url"), "pushed": bool((e.get("dvc") or {}).get("pushed")),
        "git_tag": (e.get("git") or {}).get("tag"), "git_commit": (e.get("git") or {}).get("commit"),
        "store": json.dumps(e.get("store"), sort_keys=True),
    } for e in releases_table(layout)]
    return write_manifest(pa.Table.from_pylist(rows, schema=_TABLE), layout.root / "releases" / "releases.parquet")


def release_tags(entry: dict) -> dict[str, str]:
    """MLflow tags a checkpoint run sets to record the release it trained on (lineage finds it by them)."""
    return {k: str(v) for k, v in {
        "uhrforge.release": entry["name"],
        "uhrforge.release_manifest_sha256": entry["manifest_sha256"],
        "uhrforge.dvc_md5": (entry.get("dvc") or {}).get("md5"),
        "uhrforge.git_tag": (entry.get("git") or {}).get("tag"),
        "uhrforge.git_commit": (entry.get("git") or {}).get("commit"),
    }.items() if v}


def read_release_info(layout: DataLayout, name: str, store: ObjectStore | None = None) -> dict | None:
    """A release's ``release.json`` (fetched from the store when not on this worker), or None."""
    p = release_dir(layout, name) / "release.json"
    if store is not None:
        ensure_local(store, data_key(layout, p), p)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def release_required_stages(info: dict | None, entry: dict | None = None) -> list[str]:
    """The stages a release's audit requires: release.json's ``required_stages`` (the entry's when
    release.json is unreadable), else the list every release required before captions existed."""
    for d in (info, entry):
        if d and d.get("required_stages") is not None:
            return list(d["required_stages"])
    return list(LEGACY_REQUIRED_STAGES)


def read_release_manifest(layout: DataLayout, name: str, store: ObjectStore | None = None) -> pa.Table:
    p = release_dir(layout, name) / "manifest.parquet"
    if store is not None:
        ensure_local(store, data_key(layout, p), p)
    if not p.exists():
        raise ReleaseError(f"release {name}: no manifest at {p}" + (f" nor in {store.url(data_key(layout, p))}" if store else ""))
    return read_manifest(p, RELEASE)


# -- making a release ------------------------------------------------------------------------------

def _refresh_lineage_index(layout: DataLayout, name: str) -> None:
    """The lineage id index learns (or forgets) release ``name`` now, else at its first lookup."""
    try:
        from curation.lineage.index import RELEASE_PREFIX, IdIndex

        idx = IdIndex.open(layout)
        if idx is not None:
            idx.refresh(RELEASE_PREFIX + name, force=True)
            idx.close()
    except Exception as exc:  # noqa: BLE001 - a cache
        import logging

        logging.getLogger(__name__).warning("lineage id index not updated for release %s: %s", name, exc)


def _write_release_dir(layout: DataLayout, name: str, rows: list[dict], info: dict) -> Path:
    final = release_dir(layout, name)
    tmp = final.with_name(f".{name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write_manifest(to_table(rows, RELEASE), tmp / "manifest.parquet", row_group_size=RELEASE_ROW_GROUP)
        (tmp / "release.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _refresh_lineage_index(layout, name)
    return final


class _Undo:
    """What one :func:`make_release` attempt wrote, and how to take it back when a later step
    fails: the release folder, the ``.dvc`` file (its previous bytes restored, if any), the git tag
    (only one this attempt made), the table entry and the table view, the copies in the object
    store, and the folders the attempt created that are empty again. The image blobs stay: they are
    content-addressed and shared with other releases (as are the DVC cache and remote)."""

    def __init__(self, layout: DataLayout, name: str, store: ObjectStore, dvc=None):
        self.layout, self.name, self.store, self.dvc = layout, name, store, dvc
        self.folder = release_dir(layout, name)
        self.entry = entry_path(layout, name)
        self.table = layout.root / "releases" / "releases.parquet"
        self.table_before = self.table.exists()
        self.dvc_file = dvc.dvc_file_for(name) if dvc is not None else None
        self.dvc_before = self.dvc_file.read_bytes() if self.dvc_file is not None and self.dvc_file.is_file() else None
        self.tag = f"release/{name}"
        self.tag_before = dvc.tag_commit(self.tag) if dvc is not None and dvc.has_git() else None
        self.dirs = [d for d in (self.entry.parent, self.folder.parent,
                                 self.dvc_file.parent if self.dvc_file is not None else None)
                     if d is not None and not d.exists()]
        self.put: list[str] = []

    def run(self, log: Callable[[str], None]) -> None:
        """Undo, each step on its own (one that fails is logged, the others still run)."""
        steps = [("store copies", self._store), ("table entry", self._entry), ("git tag", self._tag),
                 ("DVC file", self._dvc_file), ("release folder", self._folder), ("folders", self._dirs)]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - report, keep undoing
                log(f"release {self.name}: could not undo the {what}: {type(exc).__name__}: {exc}")

    def _store(self) -> None:
        table_key = data_key(self.layout, self.table)
        for key in reversed(self.put):  # the entry (the store's commit marker) first
            if key != table_key:
                self.store.delete(key)

    def _entry(self) -> None:
        self.entry.unlink(missing_ok=True)
        key = data_key(self.layout, self.table)
        if self.table_before or releases_table(self.layout):  # the table view, without this release
            if self.table.exists() or key in self.put:
                write_releases_parquet(self.layout)
            if key in self.put:
                self.store.put_file(key, self.table)
        else:  # the attempt made the first table: none again
            self.table.unlink(missing_ok=True)
            if key in self.put:
                self.store.delete(key)

    def _tag(self) -> None:
        if self.dvc is not None and self.tag_before is None and self.dvc.tag_commit(self.tag):
            self.dvc.git("tag", "-d", self.tag)

    def _dvc_file(self) -> None:
        if self.dvc_file is None:
            return
        if self.dvc_before is None:
            self.dvc_file.unlink(missing_ok=True)
        else:
            self.dvc_file.write_bytes(self.dvc_before)

    def _folder(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self.folder.with_name(f".{self.name}.{os.getpid()}.tmp"), ignore_errors=True)
        _refresh_lineage_index(self.layout, self.name)

    def _dirs(self) -> None:
        for d in sorted(set(self.dirs), key=lambda d: len(d.parts), reverse=True):  # _index before releases/
            try:
                d.rmdir()  # only when empty again
            except OSError:
                pass


def make_release(layout: DataLayout, name: str, store: ObjectStore, dvc=None, remote: dict | None = None,
                 tag: bool = True, push: bool = True, log: Callable[[str], None] = print,
                 progress: Callable[[int], None] | None = None,
                 record: Callable[[dict], None] | None = None) -> dict:
    """Freeze the passed corpus into release ``name``; returns its table entry.

    ``dvc``: a :class:`curation.dvc_repo.DvcRepo` (None: no DVC tracking, no tag). ``remote``:
    ``{"name", "url", "endpoint_url"}`` to configure as the default DVC remote before pushing.
    ``record``: called with the entry as the last step (e.g. :func:`record_release_sql`).

    The name is checked first (:func:`check_name`), before anything is written. All or nothing:
    when a step fails (the manifest, ``dvc push``, the git tag, the releases table, ``record``),
    what this attempt wrote is taken back (:class:`_Undo`) and the error raised, so a retry starts
    clean. Re-running after a crash (no undo ran) resumes: the entry is written last.
    """
    check_name(name)
    rows, plan = release_plan(layout)
    if not rows:
        what = ("no passed final_corpus rows outside the bench split" if plan["source"] == "final_corpus"
                else "no passed corpus_100mp rows")
        raise ReleaseError(f"nothing to release: {what} under {layout.root}/manifests")
    digest = rows_digest(rows)
    existing = read_entry(layout, name, store)
    if existing is not None:
        if existing["manifest_sha256"] != digest:
            raise ReleaseError(f"release {name} already exists with other content (manifest {existing['manifest_sha256'][:12]}, "
                               f"now {digest[:12]}): release names are immutable, choose a new name")
        log(f"release {name} already exists with this content ({existing['n_images']} images)")
        return dict(existing, existing=True)

    corpus_paths = {r["image_id"]: layout.resolve(r.get("output_path"))
                    for r in _select(layout, "corpus_100mp", ["image_id", "output_path"], passed=True,
                                     ids={r["image_id"] for r in rows})}
    blobs = ensure_release_blobs(store, rows, corpus_paths, progress, resolve=layout.resolve)
    log(f"blobs: {blobs['uploaded']} uploaded ({blobs['bytes'] / 1e6:.1f} MB), {blobs['present']} already in {store.url('blobs')}")
    undo = _Undo(layout, name, store, dvc)
    try:
        entry = _commit_release(layout, name, store, dvc, remote, tag, push, log, rows, plan, digest, blobs, undo)
        if record is not None:
            record(entry)
    except BaseException as exc:
        log(f"release {name} failed ({type(exc).__name__}: {exc}); taking back what this attempt wrote")
        undo.run(log)
        raise
    log(f"release {name}: {len(rows)} images, manifest sha256 {digest[:16]}")
    return entry


def _commit_release(layout: DataLayout, name: str, store: ObjectStore, dvc, remote: dict | None, tag: bool,
                    push: bool, log: Callable[[str], None], rows: list[dict], plan: dict, digest: str, blobs: dict,
                    undo: _Undo) -> dict:
    """The writing steps of :func:`make_release`, in order: release folder, DVC (track, push),
    git tag, table entry (the commit marker) and table view, their copies in the store."""
    info = {"name": name, "format": RELEASE_FORMAT, "manifest_sha256": digest, "blob_store": store.describe(),
            "columns": RELEASE.names, **plan, **describe_rows(rows)}
    if plan["source"] == "final_corpus":
        info["training_export"] = TRAINING_EXPORT_NOTE.format(name=name)
    folder = _write_release_dir(layout, name, rows, info)
    entry = {"name": name, "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             **{k: info[k] for k in ("n_images", "manifest_sha256", "shards", "tiers", "licences", "config_hashes",
                                     "code_versions", "threshold_versions", "captions", "source", "required_stages")},
             "bench_held_out": (info.get("bench_split") or {}).get("n_held_out"),
             "bench_split_version": (info.get("bench_split") or {}).get("version"),
             "release_dir": data_key(layout, folder), "store": store.describe(), "blobs": blobs, "dvc": None, "git": None}

    if dvc is not None:
        if remote and remote.get("url"):
            dvc.configure_remote(remote.get("name") or "storage", remote["url"], remote.get("endpoint_url"))
        dvc_file = dvc.dvc_file_for(name)
        out = dvc.track(dvc_file, folder)
        d = {"repo": str(dvc.root), "file": dvc_file.relative_to(dvc.root).as_posix(), "md5": out.get("md5"),
             "nfiles": out.get("nfiles"), "size": out.get("size"), "remote_name": (remote or {}).get("name"),
             "remote_url": (remote or {}).get("url"), "pushed": False}
        if push:
            dvc.push(dvc_file, (remote or {}).get("name"))
            d["pushed"] = dvc.in_remote(dvc_file, (remote or {}).get("name"))
            if not d["pushed"]:
                raise ReleaseError(f"release {name}: `dvc push` left files missing from the remote")
            log(f"dvc: {d['file']} ({d['md5']}) pushed to {d['remote_url'] or 'the default remote'}")
        entry["dvc"] = d
        if tag and dvc.has_git():
            tag_name = f"release/{name}"
            commit = dvc.tag_commit(tag_name)
            if commit:  # a killed run got this far: the tag must hold this very .dvc file
                held = dvc.git("show", f"{commit}:{d['file']}", check=False).stdout
                if (yaml_md5 := _md5_in(held)) != d["md5"]:
                    raise ReleaseError(f"tag {tag_name} exists for other content ({yaml_md5})")
            else:
                commit = dvc.tag_release(tag_name, [dvc_file], f"uhrforge release {name}: {len(rows)} images, "
                                         f"manifest sha256 {digest}, DVC {d['md5']}")
            entry["git"] = {"tag": tag_name, "commit": commit}
            log(f"git: tag {tag_name} -> {commit[:12]}")

    # the entry is the commit marker: written last, locally and in the store
    p = entry_path(layout, name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    table = write_releases_parquet(layout)
    for f in (folder / "manifest.parquet", folder / "release.json", table, p):
        key = data_key(layout, f)
        undo.put.append(key)
        store.put_file(key, f)
    return entry


def _md5_in(dvc_yaml: str) -> str | None:
    import yaml

    try:
        return ((yaml.safe_load(dvc_yaml) or {}).get("outs") or [{}])[0].get("md5")
    except Exception:
        return None


# -- the releases table in SQL (a lab's Postgres; any SQLAlchemy URL) -------------------------------

SQL_TABLE = "uhr_releases"


def record_release_sql(url: str, entry: dict) -> bool:
    """Insert the release's entry into table ``uhr_releases`` (created when missing) at ``url``.

    One row per release name; an existing row with the same manifest digest is left as is
    (True), another digest under the name raises :class:`ReleaseError` (names are immutable).
    """
    import sqlalchemy as sa

    meta = sa.MetaData()
    table = sa.Table(
        SQL_TABLE, meta,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("n_images", sa.Integer, nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("dvc_md5", sa.String(80)),
        sa.Column("dvc_remote", sa.Text),
        sa.Column("git_tag", sa.String(200)),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("entry", sa.Text, nullable=False),  # the whole entry as JSON
    )
    engine = sa.create_engine(url)
    try:
        meta.create_all(engine, checkfirst=True)
        with engine.begin() as conn:
            row = conn.execute(sa.select(table.c.manifest_sha256).where(table.c.name == entry["name"])).first()
            if row is not None:
                if row[0] != entry["manifest_sha256"]:
                    raise ReleaseError(f"release {entry['name']} is in {SQL_TABLE} with manifest {row[0][:12]}")
                return True
            dvc, git = entry.get("dvc") or {}, entry.get("git") or {}
            conn.execute(table.insert().values(
                name=entry["name"], created_at=entry["created_at"], n_images=entry["n_images"],
                manifest_sha256=entry["manifest_sha256"], dvc_md5=dvc.get("md5"), dvc_remote=dvc.get("remote_url"),
                git_tag=git.get("tag"), git_commit=git.get("commit"),
                entry=json.dumps({k: v for k, v in entry.items() if k != "existing"}, sort_keys=True)))
        return True
    finally:
        engine.dispose()


# -- reports (``uhr release`` / ``uhr releases``, the demo) ---------------------------------------

def release_summary(name: str, md: dict, audit_ok: bool, failures: int) -> str:
    """What a finished release says: images and manifest digest, DVC and git, lineage file, audit.
    ``md`` is the ``corpus_release`` materialisation metadata as plain values."""
    return "\n".join([
        f"release {name}: {md['dagster/row_count']} images, manifest sha256 {md['manifest_sha256']}",
        f"  dvc {md['dvc_md5']} -> {md['dvc_remote']} (pushed: {md['dvc_pushed']}); git tag {md['git_tag']} "
        f"@ {md['git_commit'][:12]}",
        f"  lineage: {md['lineage_file']}",
        f"  audit: {'OK' if audit_ok else 'FAILED'} ({failures} failures)",
    ])


def releases_text(layout: DataLayout, table: list[dict] | None = None) -> str:
    """The releases table, one line per release (or a line saying there is none)."""
    table = releases_table(layout) if table is None else table
    if not table:
        return f"no releases under {layout.root}/releases"
    return "\n".join(
        f"{e['name']:<20} {e['created_at']}  {e['n_images']:>6} images  manifest {e['manifest_sha256'][:12]}  "
        f"dvc {(e.get('dvc') or {}).get('md5') or '-'}  tag {(e.get('git') or {}).get('tag') or '-'}"
        for e in table)


def release_size(layout: DataLayout, name: str, store: ObjectStore | None = None) -> int:
    """Images in release ``name`` (0 when it cannot be read: the audit says why)."""
    try:
        return read_release_manifest(layout, name, store).num_rows
    except Exception:
        return 0
