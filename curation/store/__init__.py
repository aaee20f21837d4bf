"""Object store: blobs and manifests under content-addressed / stage keys (no Dagster here).

Keys (relative to the store's prefix)::

    blobs/<sha[:2]>/<sha>                    content-addressed image bytes (sha256 hex)
    manifests/<stage>/<shard>.parquet        one manifest per stage and shard (commit marker)
    manifests/purification_thresholds/<version>.json, latest.json
    raw/<shard>/<file>                       raw shards dropped into the store (ingest source)

Modules:

* :mod:`curation.store.backends` -- the :class:`ObjectStore` interface, :class:`LocalStore`,
  :class:`S3Store` (every call retried with backoff within a :class:`RetryPolicy`, then
  :class:`StoreUnavailable` with a one-line message), the errors and key helpers;
* :mod:`curation.retry` (re-exported) -- :func:`call_with_retry` and :class:`RetryPolicy` (bounded
  attempts and deadline, exponential backoff with jitter);
* :mod:`curation.store.blobs` -- content-addressed blobs: put/get (hash checked), digest and
  verify, :func:`publish_blobs`, :func:`restore_sources`;
* :mod:`curation.store.sync` -- a worker's data root against the store: manifests, thresholds,
  config snapshots, raw shards, :func:`prepare_stage` / :func:`publish_stage`,
  :func:`sync_manifests`.

Everything is re-exported here: ``from curation.store import ...`` is the public path.
"""

from curation.store.backends import (
    BLOBS,
    MANIFESTS,
    RAW_PREFIX,
    THRESHOLDS_STAGE,
    BlobIntegrityError,
    LocalStore,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StoreError,
    StoreUnavailable,
    manifest_key,
    md5_file,
    raw_shard_prefix,
    sha256_file,
)
from curation.retry import RetryPolicy, ServiceUnavailable, call_with_retry
from curation.store.blobs import (
    blob_digest,
    blob_key,
    get_blob,
    publish_blobs,
    put_blob,
    restore_sources,
    verify_blob,
)
from curation.store.sync import (
    stage_blobs,
    stage_inputs,
    data_key,
    download_shard,
    ensure_local,
    ensure_local_manifest,
    ensure_local_thresholds,
    list_raw_shards,
    prepare_stage,
    publish_configs,
    publish_file,
    publish_manifest,
    publish_stage,
    publish_thresholds,
    raw_shard_status,
    remote_shards,
    sync_manifests,
    upload_shard,
)

__all__ = [
    "BLOBS", "MANIFESTS", "RAW_PREFIX", "THRESHOLDS_STAGE", "stage_blobs", "stage_inputs",
    "StoreError", "StoreUnavailable", "ServiceUnavailable", "RetryPolicy", "call_with_retry", "ObjectNotFound", "BlobIntegrityError", "ObjectInfo",
    "ObjectStore", "LocalStore", "S3Store",
    "manifest_key", "raw_shard_prefix", "sha256_file", "md5_file",
    "blob_key", "put_blob", "get_blob", "blob_digest", "verify_blob", "publish_blobs", "restore_sources",
    "data_key", "publish_file", "publish_manifest", "ensure_local", "ensure_local_manifest", "remote_shards",
    "publish_thresholds", "ensure_local_thresholds", "raw_shard_status", "list_raw_shards", "upload_shard",
    "download_shard", "prepare_stage", "publish_stage", "publish_configs", "sync_manifests",
]
