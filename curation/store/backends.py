"""Object store backends: one small interface, two implementations (no Dagster here).

* :class:`LocalStore` -- a folder (the embedded default, and handy in tests);
* :class:`S3Store` -- any S3 endpoint (MinIO in compose, SeaweedFS in the tests, AWS) through
  the ``minio`` SDK.

Keys are relative to the store's prefix; the top-level namespaces are :data:`BLOBS`,
:data:`MANIFESTS` and :data:`RAW_PREFIX` (see the package docstring for the layout).

:class:`orchestration.resources.ObjectStoreResource` (the ``store`` resource, configured by
``UHR_S3_*`` / ``UHR_STORE_ROOT``) builds the store; this package reads no environment.
Credentials live only in the client: never in ``repr``, :meth:`ObjectStore.describe`, logs or
metadata.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping

from curation.hashing import md5_file, sha256_file
from curation.retry import RetryPolicy, ServiceUnavailable, call_with_retry

BLOBS = "blobs"
MANIFESTS = "manifests"
RAW_PREFIX = "raw"
THRESHOLDS_STAGE = "purification_thresholds"
_CHUNK = 1 << 20


class StoreError(RuntimeError):
    """The store cannot give what a stage needs; the message says what is missing."""


class ObjectNotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else "object not found"


class BlobIntegrityError(StoreError):
    """A blob's bytes do not hash to its key."""


class StoreUnavailable(StoreError, ServiceUnavailable):
    """The store could not be reached within its retry budget (a one-line message: operation,
    key, attempts, seconds, last error)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None
    last_modified: float | None = None  # seconds since the epoch
    metadata: Mapping[str, str] | None = None


# -- keys ---------------------------------------------------------------------------------

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


def _ca_certs() -> str | None:
    try:
        import certifi

        return certifi.where()
    except ImportError:  # pragma: no cover - minio depends on certifi
        return None


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

    def exists(self, key) -> bool:
        """One ``stat`` (as S3's HEAD): not :meth:`stat`, which reads the whole file for its md5 etag."""
        key = str(key).lstrip("/")
        if not key or any(p in ("..", ".") for p in key.split("/")):
            _check_key(key)  # raises
        return os.path.isfile(os.path.join(self._root_str, key))

    @property
    def _root_str(self) -> str:
        return str(self.root)

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
                 create_bucket: bool = True, retry: RetryPolicy | None = None, connect_timeout_s: float = 10.0,
                 read_timeout_s: float = 120.0):
        import urllib3
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
        #: every call is retried within this budget (a restarting server, a dropped connection)
        self.retry = retry or RetryPolicy()
        # one try = one HTTP exchange (urllib3 does not retry on its own); the loop is ours, so a
        # down server costs at most the policy's deadline and every failure says how long it tried
        http = urllib3.PoolManager(
            timeout=urllib3.util.Timeout(connect=float(connect_timeout_s), read=float(read_timeout_s)),
            maxsize=10, cert_reqs="CERT_REQUIRED", ca_certs=_ca_certs(),
            retries=urllib3.Retry(total=0, raise_on_redirect=False, raise_on_status=False))
        # the credentials go into the client and nowhere else on this object
        self._client = Minio(self.endpoint, access_key=access_key or None, secret_key=secret_key or None,
                             secure=self.secure, region=region, http_client=http)
        self._create_bucket = create_bucket
        self._bucket_ok = False

    # -- helpers
    def _full(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _rel(self, full: str) -> str:
        return full[len(self.prefix):] if self.prefix and full.startswith(self.prefix) else full

    def _call(self, what: str, key: str, fn):
        """``fn()`` within the retry budget; :class:`StoreUnavailable` (one line) when it is spent."""
        try:
            return call_with_retry(fn, f"S3 {what} {self.url(key)} at {self.endpoint_url()}", self.retry)
        except ServiceUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc.__cause__

    def _ensure_bucket(self) -> None:
        if self._bucket_ok:
            return

        def make():
            if self._create_bucket and not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                except Exception as exc:  # another worker made it in between
                    if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                        raise

        self._call("bucket check", "", make)
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
        res = self._call("put", key, lambda: self._client.fput_object(
            self.bucket, self._full(key), str(path), content_type=content_type,
            metadata=dict(metadata) if metadata else None))
        return ObjectInfo(_check_key(key), Path(path).stat().st_size, res.etag, None, dict(metadata or {}) or None)

    def put_bytes(self, key, data, content_type="application/octet-stream", metadata=None) -> ObjectInfo:
        self._ensure_bucket()
        res = self._call("put", key, lambda: self._client.put_object(
            self.bucket, self._full(key), io.BytesIO(data), len(data), content_type=content_type,
            metadata=dict(metadata) if metadata else None))
        return ObjectInfo(_check_key(key), len(data), res.etag, None, dict(metadata or {}) or None)

    def get_file(self, key, path) -> Path:
        from minio.error import S3Error

        dest = Path(path)
        tmp = _atomic_target(dest)

        def fetch():  # every try writes the temporary file from its start
            resp = self._client.get_object(self.bucket, self._full(key))
            try:
                with open(tmp, "wb") as fh:
                    for chunk in resp.stream(_CHUNK):
                        fh.write(chunk)
            finally:
                resp.close()
                resp.release_conn()

        try:
            self._call("get", key, fetch)
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

        def fetch() -> bytes:
            resp = self._client.get_object(self.bucket, self._full(key))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        try:
            return self._call("get", key, fetch)
        except S3Error as exc:
            if self._missing(exc):
                raise ObjectNotFound(f"{self.url(key)} does not exist") from None
            raise

    def stat(self, key) -> ObjectInfo:
        from minio.error import S3Error

        try:
            st = self._call("stat", key, lambda: self._client.stat_object(self.bucket, self._full(key)))
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

        def listing() -> list[ObjectInfo]:  # the whole listing per try: a page lost mid-way is listed again
            objs = self._client.list_objects(self.bucket, prefix=self.prefix + str(prefix or "").lstrip("/"),
                                             recursive=True)
            return [ObjectInfo(self._rel(o.object_name), int(o.size or 0), (o.etag or "").strip('"') or None,
                               o.last_modified.timestamp() if o.last_modified else None)
                    for o in objs if not o.is_dir]

        try:
            out = self._call("list", str(prefix or ""), listing)
        except S3Error as exc:
            if self._missing(exc):
                return []
            raise
        return sorted(out, key=lambda o: o.key)

    def delete(self, key) -> None:
        self._call("delete", key, lambda: self._client.remove_object(self.bucket, self._full(key)))



