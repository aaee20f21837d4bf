"""Object store: blobs and manifests under content-addressed / stage keys (no Dagster here).

Two implementations of one small interface:

* :class:`LocalStore` -- a folder (the embedded default, and handy in tests);
* :class:`S3Store` -- any S3 endpoint (MinIO in compose, SeaweedFS in the tests, AWS) through
  the ``minio`` SDK.

Keys (relative to the store's prefix)::

    blobs/<sha[:2]>/<sha>                    content-addressed image bytes (sha256 hex)
    manifests/<stage>/<shard>.parquet        one manifest per stage and shard (commit marker)
    manifests/purification_thresholds/<version>.json, latest.json
    raw/<shard>/<file>                       raw shards dropped into the store (ingest source)

:func:`store_from_env` builds the store from ``UHR_S3_ENDPOINT``, ``UHR_S3_BUCKET``,
``UHR_S3_PREFIX``, ``UHR_S3_ACCESS_KEY`` / ``UHR_S3_SECRET_KEY`` (``UHR_S3_SECURE``); with no
endpoint it is a local folder. Credentials live only in the client: never in ``repr``,
:meth:`ObjectStore.describe`, logs or metadata.

The second half of the module syncs a worker's local data root with the store, so a fresh
worker (a new pod with an empty data root) can run any stage: :func:`prepare_stage` fetches
a stage's inputs (manifests, raw shard files, source images restored from their blobs with
the hash checked), :func:`publish_stage` uploads what the stage wrote -- blobs first, the
manifest last, so the manifest's presence in the store stays the shard's commit marker.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping

BLOBS = "blobs"
MANIFESTS = "manifests"
RAW_PREFIX = "raw"
THRESHOLDS_STAGE = "purification_thresholds"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class StoreError(RuntimeError):
    """The store cannot give what a stage needs; the message says what is missing."""


class ObjectNotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else "object not found"


class BlobIntegrityError(StoreError):
    """A blob's bytes do not hash to its key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None
    last_modified: float | None = None  # seconds since the epoch
    metadata: Mapping[str, str] | None = None


# -- keys ---------------------------------------------------------------------------------

def blob_key(sha256: str) -> str:
    sha = str(sha256).lower()
    if not _SHA_RE.match(sha):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"{BLOBS}/{sha[:2]}/{sha}"


def manifest_key(stage: str, shard: str) -> str:
    return f"{MANIFESTS}/{stage}/{shard}.parquet"


def raw_shard_prefix(shard: str, prefix: str = RAW_PREFIX) -> str:
    return f"{_norm_prefix(prefix)}{shard}/"


def _norm_prefix(prefix: str | None) -> str:
    p = (prefix or "").strip("/")
    return f"{p}/" if p else ""


def _check_key(key: str) -> str:
    key = str(key).lstrip("/")
    parts = PurePosixPath(key).parts
    if not key or any(p in ("..", ".") for p in parts):
        raise ValueError(f"bad object key {key!r}")
    return key


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def md5_file(path: str | os.PathLike) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _atomic_target(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    return Path(tmp)


# -- the interface --------------------------------------------------------------------------

class ObjectStore:
    """put/get files and bytes, exists, list, stat, delete -- keys relative to the store's prefix."""

    kind = "abstract"

    def url(self, key: str = "") -> str:
        raise NotImplementedError

    def describe(self) -> dict:
        """What the store is, safe for logs and metadata (never credentials)."""
        raise NotImplementedError

    def put_file(self, key: str, path: str | os.PathLike, content_type: str = "application/octet-stream",
                 metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        raise NotImplementedError

    def get_file(self, key: str, path: str | os.PathLike) -> Path:
        """Download atomically (temporary file + rename); returns the path."""
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream",
                  metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def stat(self, key: str) -> ObjectInfo:
        """Size, etag, modification time; :class:`ObjectNotFound` when absent."""
        raise NotImplementedError

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive), sorted by key."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
            return True
        except ObjectNotFound:
            return False

    def sha256(self, key: str) -> str:
        """sha256 of the object's bytes, streamed (never whole in memory); :class:`ObjectNotFound`."""
        with tempfile.TemporaryDirectory() as tmp:
            return sha256_file(self.get_file(key, Path(tmp) / "obj"))

    def list(self, prefix: str = "") -> list[str]:
        return [o.key for o in self.list_info(prefix)]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "kind")
        return f"{type(self).__name__}({inner})"


class LocalStore(ObjectStore):
    """A folder: ``<root>/<key>``. Etags are the md5 of the bytes (as S3 gives for one-part puts)."""

    kind = "local"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def url(self, key: str = "") -> str:
        return str(self._path(key)) if key else str(self.root)

    def describe(self) -> dict:
        return {"kind": self.kind, "root": str(self.root)}

    def _write_meta(self, key: str, metadata: Mapping[str, str] | None) -> None:
        meta = self.root / ".meta" / (_check_key(key) + ".json")
        if metadata:
            import json

            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps(dict(metadata), sort_keys=True))
        elif meta.exists():
            meta.unlink()

    def _read_meta(self, key: str) -> dict | None:
        meta = self.root / ".meta" / (_check_key(key) + ".json")
        if not meta.exists():
            return None
        import json

        return json.loads(meta.read_text())

    def put_file(self, key, path, content_type="application/octet-stream", metadata=None) -> ObjectInfo:
        dest = self._path(key)
        tmp = _atomic_target(dest)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        self._write_meta(key, metadata)
        return self.stat(key)

    def put_bytes(self, key, data, content_type="application/octet-stream", metadata=None) -> ObjectInfo:
        dest = self._path(key)
        tmp = _atomic_target(dest)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        self._write_meta(key, metadata)
        return self.stat(key)

    def get_file(self, key, path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"{self.url(key)} does not exist")
        dest = Path(path)
        tmp = _atomic_target(dest)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def get_bytes(self, key) -> bytes:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"{self.url(key)} does not exist")
        return src.read_bytes()

    def sha256(self, key) -> str:
        p = self._path(key)
        if not p.is_file():
            raise ObjectNotFound(f"{self.url(key)} does not exist")
        return sha256_file(p)

    def stat(self, key) -> ObjectInfo:
        p = self._path(key)
        if not p.is_file():
            raise ObjectNotFound(f"{self.url(key)} does not exist")
        st = p.stat()
        return ObjectInfo(_check_key(key), st.st_size, md5_file(p), st.st_mtime, self._read_meta(key))

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        prefix = str(prefix or "").lstrip("/")
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for p in sorted(base.rglob("*")):
            if not p.is_file():
                continue
            key = p.relative_to(self.root).as_posix()
            if key.startswith(".meta/") or p.name.endswith(".part") and p.name.startswith("."):
                continue
            if key.startswith(prefix):
                st = p.stat()
                out.append(ObjectInfo(key, st.st_size, None, st.st_mtime))
        return out

    def delete(self, key) -> None:
        self._path(key).unlink(missing_ok=True)
        self._write_meta(key, None)


class S3Store(ObjectStore):
    """An S3 bucket (optionally under a key prefix) through the ``minio`` SDK.

    ``endpoint`` is ``host:port`` or a URL (``http://`` / ``https://`` decides ``secure``).
    The bucket is created on first use when missing (``create_bucket``).
    """

    kind = "s3"

    def __init__(self, endpoint: str, bucket: str, prefix: str = "", access_key: str | None = None,
                 secret_key: str | None = None, secure: bool | None = None, region: str | None = None,
                 create_bucket: bool = True):
        from minio import Minio

        ep = str(endpoint).strip()
        if ep.startswith(("http://", "https://")):
            scheme, ep = ep.split("://", 1)
            secure = (scheme == "https") if secure is None else secure
        self.endpoint = ep.rstrip("/")
        self.secure = bool(secure)
        self.bucket = bucket
        self.prefix = _norm_prefix(prefix)
        self.region = region
        # the credentials go into the client and nowhere else on this object
        self._client = Minio(self.endpoint, access_key=access_key or None, secret_key=secret_key or None,
                             secure=self.secure, region=region)
        self._create_bucket = create_bucket
        self._bucket_ok = False

    # -- helpers
    def _full(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _rel(self, full: str) -> str:
        return full[len(self.prefix):] if self.prefix and full.startswith(self.prefix) else full

    def _ensure_bucket(self) -> None:
        if self._bucket_ok:
            return
        if self._create_bucket and not self._client.bucket_exists(self.bucket):
            try:
                self._client.make_bucket(self.bucket)
            except Exception as exc:  # another worker made it in between
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                    raise
        self._bucket_ok = True

    @staticmethod
    def _missing(exc: Exception) -> bool:
        code = getattr(exc, "code", None)
        return code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound")

    # -- interface
    @property
    def client(self):
        return self._client

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def endpoint_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    def describe(self) -> dict:
        return {"kind": self.kind, "endpoint": self.endpoint_url(), "bucket": self.bucket, "prefix": self.prefix}

    def put_file(self, key, path, content_type="application/octet-stream", metadata=None) -> ObjectInfo:
        self._ensure_bucket()
        res = self._client.fput_object(self.bucket, self._full(key), str(path), content_type=content_type,
                                       metadata=dict(metadata) if metadata else None)
        return ObjectInfo(_check_key(key), Path(path).stat().st_size, res.etag, None, dict(metadata or {}) or None)

    def put_bytes(self, key, data, content_type="application/octet-stream", metadata=None) -> ObjectInfo:
        self._ensure_bucket()
        res = self._client.put_object(self.bucket, self._full(key), io.BytesIO(data), len(data),
                                      content_type=content_type, metadata=dict(metadata) if metadata else None)
        return ObjectInfo(_check_key(key), len(data), res.etag, None, dict(metadata or {}) or None)

    def get_file(self, key, path) -> Path:
        from minio.error import S3Error

        dest = Path(path)
        tmp = _atomic_target(dest)
        try:
            resp = self._client.get_object(self.bucket, self._full(key))
            try:
                with open(tmp, "wb") as fh:
                    for chunk in resp.stream(_CHUNK):
                        fh.write(chunk)
            finally:
                resp.close()
                resp.release_conn()
            os.replace(tmp, dest)
        except S3Error as exc:
            if self._missing(exc):
                raise ObjectNotFound(f"{self.url(key)} does not exist") from None
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def get_bytes(self, key) -> bytes:
        from minio.error import S3Error

        try:
            resp = self._client.get_object(self.bucket, self._full(key))
        except S3Error as exc:
            if self._missing(exc):
                raise ObjectNotFound(f"{self.url(key)} does not exist") from None
            raise
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def stat(self, key) -> ObjectInfo:
        from minio.error import S3Error

        try:
            st = self._client.stat_object(self.bucket, self._full(key))
        except S3Error as exc:
            if self._missing(exc):
                raise ObjectNotFound(f"{self.url(key)} does not exist") from None
            raise
        meta = {k[len("x-amz-meta-"):].lower(): v for k, v in (st.metadata or {}).items()
                if k.lower().startswith("x-amz-meta-")}
        lm = st.last_modified.timestamp() if st.last_modified else None
        return ObjectInfo(_check_key(key), int(st.size or 0), (st.etag or "").strip('"') or None, lm, meta or None)

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        from minio.error import S3Error

        try:
            objs = self._client.list_objects(self.bucket, prefix=self.prefix + str(prefix or "").lstrip("/"),
                                             recursive=True)
            out = [ObjectInfo(self._rel(o.object_name), int(o.size or 0), (o.etag or "").strip('"') or None,
                              o.last_modified.timestamp() if o.last_modified else None)
                   for o in objs if not o.is_dir]
        except S3Error as exc:
            if self._missing(exc):
                return []
            raise
        return sorted(out, key=lambda o: o.key)

    def delete(self, key) -> None:
        self._client.remove_object(self.bucket, self._full(key))


def _truthy(v: str | None) -> bool:
    return str(v or "").strip().lower() in ("1", "true", "yes", "on")


def store_from_env(env: Mapping[str, str] | None = None, local_root: str | os.PathLike | None = None) -> ObjectStore:
    """S3 when ``UHR_S3_ENDPOINT`` is set, else a local folder.

    The local folder is ``local_root``, else ``UHR_STORE_ROOT``, else ``<UHR_DATA_ROOT>/store``.
    Credentials: ``UHR_S3_ACCESS_KEY`` / ``UHR_S3_SECRET_KEY`` (falling back to the standard
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``).
    """
    env = os.environ if env is None else env
    endpoint = (env.get("UHR_S3_ENDPOINT") or "").strip()
    if endpoint:
        secure = True if _truthy(env.get("UHR_S3_SECURE")) else None
        return S3Store(
            endpoint,
            bucket=env.get("UHR_S3_BUCKET") or "uhrforge",
            prefix=env.get("UHR_S3_PREFIX") or "",
            access_key=env.get("UHR_S3_ACCESS_KEY") or env.get("AWS_ACCESS_KEY_ID"),
            secret_key=env.get("UHR_S3_SECRET_KEY") or env.get("AWS_SECRET_ACCESS_KEY"),
            secure=secure,
            region=env.get("UHR_S3_REGION") or None,
        )
    root = local_root or env.get("UHR_STORE_ROOT") or Path(env.get("UHR_DATA_ROOT") or Path("data") / "demo") / "store"
    return LocalStore(root)


# -- blobs --------------------------------------------------------------------------------

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


def publish_blobs(store: ObjectStore, rows: Iterable[Mapping], only_passed: bool = True,
                  path_field: str = "source_path", sha_field: str = "sha256") -> dict:
    """Upload the rows' files as content-addressed blobs (duplicates and files without a hash skipped).

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
        if not Path(path).is_file():
            raise StoreError(f"blob source {path} (sha256 {sha}) is not on this worker")
        _, uploaded = put_blob(store, path, sha)
        done.add(sha)
        out["uploaded" if uploaded else "present"] += 1
        out["bytes"] += Path(path).stat().st_size if uploaded else 0
    return out


def restore_sources(store: ObjectStore, rows: Iterable[Mapping], only_passed: bool = True,
                    path_field: str = "source_path", sha_field: str = "sha256") -> dict:
    """Re-create every row's missing source file from its blob (hash checked); counts."""
    out = {"restored": 0, "present": 0}
    for r in rows:
        if only_passed and not r.get("passed"):
            continue
        path = r.get(path_field)
        if not path:
            continue
        if Path(path).is_file():
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

_SKIP_NAMES = {"labels.jsonl"}


def _is_image_candidate(name: str) -> bool:
    """The files :func:`curation.raw_pool.list_shard_files` would ingest (sidecars and hidden skipped)."""
    return not name.startswith(".") and name not in _SKIP_NAMES and not name.lower().endswith(".json")


def raw_shard_status(store: ObjectStore, prefix: str = RAW_PREFIX) -> dict[str, dict]:
    """``{shard: {"files", "bytes", "last_modified"}}`` for every shard folder under ``prefix``
    holding at least one ingestible file."""
    pre = _norm_prefix(prefix)
    out: dict[str, dict] = {}
    for o in store.list_info(pre):
        rel = o.key[len(pre):]
        if "/" not in rel:
            continue
        shard, rest = rel.split("/", 1)
        if shard.startswith("."):
            continue
        st = out.setdefault(shard, {"files": 0, "bytes": 0, "last_modified": 0.0})
        st["last_modified"] = max(st["last_modified"], o.last_modified or 0.0)
        if _is_image_candidate(PurePosixPath(rest).name):
            st["files"] += 1
            st["bytes"] += o.size
    return {k: v for k, v in sorted(out.items()) if v["files"]}


def list_raw_shards(store: ObjectStore, prefix: str = RAW_PREFIX) -> list[str]:
    """Shard names under ``<prefix>/<shard>/...`` that hold at least one ingestible file."""
    return list(raw_shard_status(store, prefix))


def upload_shard(store: ObjectStore, shard_dir: str | os.PathLike, prefix: str = RAW_PREFIX) -> int:
    """Upload a local shard folder (sidecars included) to ``<prefix>/<shard>/``; files uploaded."""
    shard_dir = Path(shard_dir)
    base = raw_shard_prefix(shard_dir.name, prefix)
    n = 0
    for p in sorted(shard_dir.rglob("*")):
        if p.is_file():
            store.put_file(base + p.relative_to(shard_dir).as_posix(), p)
            n += 1
    return n


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

#: per-shard manifests each stage reads (same shard); extended as stages land
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "raw_pool": (),
    "image_scores": ("raw_pool",),
    "purification_thresholds": (),
    "candidate_pool": ("image_scores",),
    "corpus_100mp": ("candidate_pool", "raw_pool"),
}

#: stages whose passed rows name files to keep as blobs: {stage: (path column, sha256 column)}
STAGE_BLOBS: dict[str, tuple[str, str]] = {
    "raw_pool": ("source_path", "sha256"),
    "corpus_100mp": ("output_path", "sha256"),
}


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

    Other stages: the shard manifests of :data:`STAGE_INPUTS`. Returns a summary dict.
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
    if stage == THRESHOLDS_STAGE:
        for s in remote_shards(store, "image_scores"):
            ensure_local_manifest(store, layout, "image_scores", s, refresh=True)
            summary["fetched"].append(manifest_key("image_scores", s))
        return summary
    if shard is None:
        raise ValueError(f"{stage} is per shard")
    for dep in STAGE_INPUTS.get(stage, ()):
        if not ensure_local_manifest(store, layout, dep, shard, refresh=True):
            raise StoreError(f"{dep} manifest for {shard} is neither on this worker nor in {store.url(manifest_key(dep, shard))}")
        summary["fetched"].append(manifest_key(dep, shard))
    if stage == "image_scores":
        from curation.manifest import read_manifest

        rows = read_manifest(layout.manifest("raw_pool", shard)).to_pylist()
        summary["sources"] = restore_sources(store, rows)
    if stage == "candidate_pool":
        ensure_local_thresholds(store, layout, refresh=True)
    if stage == "corpus_100mp":
        from curation.manifest import read_manifest

        keep = {r["image_id"] for r in read_manifest(layout.manifest("candidate_pool", shard)).to_pylist() if r["passed"]}
        rows = [r for r in read_manifest(layout.manifest("raw_pool", shard)).to_pylist() if r["image_id"] in keep]
        summary["sources"] = restore_sources(store, rows)
    return summary


def publish_stage(store: ObjectStore, layout, stage: str, shard: str | None = None, blobs: bool = True) -> dict:
    """Upload what ``stage`` wrote for ``shard``: blobs first (the passed rows' files named by
    :data:`STAGE_BLOBS`), the manifest last."""
    summary: dict = {"stage": stage, "shard": shard, "keys": []}
    if stage == THRESHOLDS_STAGE:
        summary["keys"] = publish_thresholds(store, layout)
        return summary
    if shard is None:
        raise ValueError(f"{stage} is per shard")
    if blobs and stage in STAGE_BLOBS:
        from curation.manifest import read_manifest

        path_field, sha_field = STAGE_BLOBS[stage]
        rows = read_manifest(layout.manifest(stage, shard)).to_pylist()
        summary["blobs"] = publish_blobs(store, rows, path_field=path_field, sha_field=sha_field)
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


def sync_manifests(store: ObjectStore, layout, stages: Iterable[str] = ("raw_pool", "image_scores", "candidate_pool",
                                                                    "corpus_100mp")) -> dict:
    """Bring every committed manifest of ``stages``, the config snapshots and the releases (table
    entries and release folders) from the store to this worker; counts per kind. For lineage and
    audit on a worker that did not run the stages."""
    out = {"manifests": 0, "configs": 0, "releases": 0}
    for stage in stages:
        for shard in remote_shards(store, stage):
            ensure_local_manifest(store, layout, stage, shard, refresh=True)
            out["manifests"] += 1
    for prefix, kind in ((f"{MANIFESTS}/configs/", "configs"), ("releases/", "releases")):
        for key in store.list(prefix):
            ensure_local(store, key, layout.root / key, refresh=True)
            out[kind] += 1
    return out
