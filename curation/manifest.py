"""Typed Parquet manifests, one table per stage and shard.

Rows are never deleted: each row carries ``passed``, ``reject_reason``, the scores, the
thresholds and ``config_hash`` that decided it, and the stage's ``code_version``.
Writes are atomic (temp file + rename), so the manifest's presence is the commit marker
of a shard: a crash leaves no half-visible shard.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

_COMMON = [
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("source_path", pa.string(), nullable=False),
]
_DECISION = [
    pa.field("passed", pa.bool_(), nullable=False),
    pa.field("reject_reason", pa.string()),
    pa.field("reject_detail", pa.string()),
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("code_version", pa.string(), nullable=False),
]

RAW_POOL = pa.schema(
    _COMMON
    + [
        # the original bytes of source_path when they are not its text (a name that is not UTF-8 or
        # holds a control character: source_path is then escaped, see curation.names)
        pa.field("source_path_bytes", pa.binary()),
        pa.field("sha256", pa.string()),  # null: no content read (not a regular file, unreadable)
        pa.field("licence", pa.string(), nullable=False),
        pa.field("origin", pa.string()),
        pa.field("sidecar", pa.string()),  # the licence sidecar read for this entry (its name)
        pa.field("file_bytes", pa.int64(), nullable=False),
        pa.field("format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("megapixels", pa.float64()),
        pa.field("duplicate_of", pa.string()),
        pa.field("screen_tier", pa.string()),  # "large" (> 25 MP) | "medium" (10-25 MP) | null
    ]
    + _DECISION,
    metadata={"stage": "raw_pool"},
)

# the per-image scores both purification manifests carry (in this order; image_scores adds
# flat_patches after flat_fraction)
_SIZE = [pa.field("width", pa.int32()), pa.field("height", pa.int32()), pa.field("megapixels", pa.float64())]
_ABSOLUTE = [pa.field(n, pa.float64()) for n in ("exposure_fraction", "laplacian_var", "flat_fraction")]
_RELATIVE = [pa.field(n, pa.float64()) for n in ("entropy", "laion_score", "artimuse_score")]
_PASSES = [pa.field(f"pass_{n}", pa.bool_()) for n in ("exposure", "sharpness", "flatness")]

IMAGE_SCORES = pa.schema(
    _COMMON
    + _SIZE + _ABSOLUTE + [pa.field("flat_patches", pa.int32())] + _RELATIVE + _PASSES
    + [
        pa.field("thumb_path", pa.string()),
        pa.field("aesthetic_models", pa.string()),
        pa.field("seconds", pa.float64()),
    ]
    + _DECISION,
    metadata={"stage": "image_scores"},
)

CANDIDATE_POOL = pa.schema(
    _COMMON
    + _SIZE + _ABSOLUTE + _RELATIVE + _PASSES
    + [
        pa.field("pass_richness", pa.bool_()),
        pa.field("pass_aesthetics", pa.bool_()),
        pa.field("aesthetics_applied", pa.bool_(), nullable=False),
        pa.field("reject_reasons", pa.string()),  # every failing criterion, comma-separated
        pa.field("entropy_threshold", pa.float64()),
        pa.field("laion_threshold", pa.float64()),
        pa.field("artimuse_threshold", pa.float64()),
        pa.field("threshold_version", pa.string(), nullable=False),
        pa.field("thumb_path", pa.string()),
    ]
    + _DECISION,
    metadata={"stage": "candidate_pool"},
)

CORPUS = pa.schema(
    _COMMON
    + [
        pa.field("parent_id", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("output_path", pa.string()),
        pa.field("tier", pa.string()),  # archive | 2x | 4x
        pa.field("scale", pa.int32()),
        pa.field("backend", pa.string()),
        pa.field("backend_detail", pa.string()),
        pa.field("tile", pa.int32()),
        pa.field("overlap", pa.int32()),
        pa.field("ramp", pa.string()),
        pa.field("file_format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("megapixels", pa.float64()),
        pa.field("checks", pa.string()),
        pa.field("seam_max_ratio", pa.float64()),
        pa.field("seam_count", pa.int32()),
        pa.field("seam_flagged", pa.bool_()),
        pa.field("psnr", pa.float64()),
        pa.field("ssim", pa.float64()),
        pa.field("psnr_block_min", pa.float64()),
        pa.field("ssim_block_min", pa.float64()),
        pa.field("lpips", pa.float64()),
        pa.field("lpips_reason", pa.string()),
        pa.field("consistency_passed", pa.bool_()),
        pa.field("consistency_failed", pa.string()),
        pa.field("region_patches", pa.int32()),
        pa.field("region_flagged", pa.int32()),
        pa.field("region_judge_failed", pa.int32()),
        pa.field("region_decision", pa.string()),
        pa.field("region_passed", pa.bool_()),
        pa.field("judge_backend", pa.string()),
        pa.field("instance_status", pa.string()),
        pa.field("instance_reason", pa.string()),
        pa.field("seconds", pa.float64()),
    ]
    + _DECISION,
    metadata={"stage": "corpus_100mp"},
)

RELEASE = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("blob_key", pa.string(), nullable=False),
        pa.field("file_format", pa.string()),
        pa.field("file_bytes", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("megapixels", pa.float64()),
        pa.field("tier", pa.string()),
        pa.field("parent_id", pa.string(), nullable=False),
        pa.field("raw_sha256", pa.string()),
        pa.field("raw_blob_key", pa.string()),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("licence", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("source_path", pa.string()),
        pa.field("short_caption", pa.string()),
        pa.field("long_caption", pa.string()),
        pa.field("caption_record", pa.string()),  # JSON pointer to the captions record (manifest, sha256, provenance)
        pa.field("corpus_config_hash", pa.string()),
        pa.field("corpus_code_version", pa.string()),
        pa.field("threshold_version", pa.string()),
    ],
    metadata={"stage": "release"},
)

#: captions of one corpus image (paper 3.1.5) and the instance artifact check (3.1.4); the whole
#: record (tags, instances with box / COCO RLE mask / area / description / importance, aesthetics
#: analysis, captions, per-field provenance) is the JSON column ``record``
CAPTIONS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("output_path", pa.string()),  # the corpus file captioned (relative to the data root)
        pa.field("parent_id", pa.string()),
        pa.field("n_tags", pa.int32()),
        pa.field("n_instances", pa.int32()),
        pa.field("long_caption", pa.string()),
        pa.field("short_caption", pa.string()),
        pa.field("caption_complete", pa.bool_()),
        pa.field("caption_failures", pa.string()),  # JSON {field: reason}
        pa.field("instance_status", pa.string()),  # applied | not_applied
        pa.field("instance_decision", pa.string()),  # pass | fail | judge_failed
        pa.field("instance_flagged", pa.int32()),
        pa.field("instance_passed", pa.bool_()),
        pa.field("instance_coverage", pa.float64()),
        pa.field("noun_match", pa.float64()),
        pa.field("long_words", pa.int32()),
        pa.field("short_words", pa.int32()),
        pa.field("backends", pa.string()),  # JSON {field: "backend/model"}
        pa.field("record", pa.string()),  # the CaptionRecord as JSON
        pa.field("seconds", pa.float64()),
    ]
    + _DECISION,
    metadata={"stage": "captions"},
)

#: the final corpus (corpus passed AND instance check passed AND captions complete) and its split
FINAL_CORPUS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("output_path", pa.string()),
        pa.field("parent_id", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("megapixels", pa.float64()),
        pa.field("short_caption", pa.string()),
        pa.field("long_caption", pa.string()),
    ]
    + _DECISION,
    metadata={"stage": "final_corpus"},
)

SCHEMAS: dict[str, pa.Schema] = {
    "raw_pool": RAW_POOL,
    "image_scores": IMAGE_SCORES,
    "candidate_pool": CANDIDATE_POOL,
    "corpus_100mp": CORPUS,
    "captions": CAPTIONS,
    "final_corpus": FINAL_CORPUS,
}


def to_table(rows: Iterable[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) -> a table of exactly ``schema``; missing keys become null, extras fail."""
    rows = list(rows)
    names = set(schema.names)
    for r in rows:
        extra = set(r) - names
        if extra:
            raise KeyError(f"columns not in schema {schema.metadata.get(b'stage')}: {sorted(extra)}")
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    try:
        return pa.Table.from_pydict(cols, schema=schema)
    except UnicodeEncodeError:  # a str with surrogates (a file name that is not UTF-8 in an error message)
        from curation.names import safe_text

        def fix(v):
            try:
                v.encode("utf-8")
                return v
            except UnicodeEncodeError:
                return safe_text(v)

        for f in schema:
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
                cols[f.name] = [fix(v) if isinstance(v, str) else v for v in cols[f.name]]
        return pa.Table.from_pydict(cols, schema=schema)


def write_manifest(table: pa.Table, path: str | os.PathLike, row_group_size: int | None = None) -> Path:
    """Atomically write a Parquet manifest (tmp + rename). A stage manifest
    (``<data_root>/manifests/<stage>/<shard>.parquet`` with an ``image_id`` column) is then added
    to the data root's lineage id index (:func:`curation.lineage.index.note_commit`; a failure
    there is logged, never raised: the index re-checks the manifests before it answers).
    ``row_group_size``: rows per Parquet row group (default: Arrow's, one group for a shard); a
    release manifest uses small groups so a lookup by row decodes a few rows, not the release."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from curation.atomic import replacing

    with replacing(path) as tmp:  # a failed write (a full disk) leaves neither the manifest nor a partial file
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
    if path.parent.parent.name == "manifests" and "image_id" in table.column_names:
        try:
            from curation.lineage.index import note_commit

            note_commit(path, table)
        except Exception as exc:  # noqa: BLE001 - a cache: lookups re-verify
            logging.getLogger(__name__).warning("lineage id index not updated for %s: %s", path, exc)
    return path


def read_manifest(path: str | os.PathLike, schema: pa.Schema | None = None) -> pa.Table:
    table = pq.read_table(path)
    if schema is not None and not table.schema.equals(schema, check_metadata=False):
        raise ValueError(f"{path}: schema differs from the stage schema")
    return table
