"""Per-stage fingerprints and data versions.

* **fingerprint** of a stage = sha256 of (the config keys it ``reads``, its ``code_version``, the
  content of the prompt files its model calls use, the fingerprints of its upstream stages),
  16 hex chars. Per-image caches live under
  ``cache/<stage>/<fingerprint>/``, every manifest row's ``config_hash`` is its stage's
  fingerprint, and the Dagster asset's ``code_version`` is it: a change to ``corpus.*`` changes
  the corpus fingerprint and nothing upstream; a bench or captions key changes no curation stage.
* **input key** of a materialisation = sha256 of (fingerprint, the data versions of the manifests
  it reads, stage-specific extras such as the raw file listing or the threshold version). A
  manifest whose recorded input key equals the new one is reused as it is.
* **data version** of a manifest = sha256 of its rows (volatile timing columns left out); the
  asset reports it as Dagster's ``DataVersion`` and downstream input keys use it.

Both keys are stored in the Parquet schema metadata (``uhrforge.input_key``,
``uhrforge.data_version``), so reading them costs one footer read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from curation.stages.table import STAGES, StageTable

INPUT_KEY = b"uhrforge.input_key"
DATA_VERSION = b"uhrforge.data_version"
#: columns that change from run to run without changing the result (left out of data versions)
VOLATILE_COLUMNS = frozenset({"seconds"})


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stage_reads(cfg, name: str, table: StageTable = STAGES) -> dict[str, Any]:
    """``{dotted key: value}`` of the config keys stage ``name`` reads (missing keys -> None)."""
    return {key: cfg.get(key) for key in table[name].reads}


def stage_fingerprint(cfg, name: str, table: StageTable = STAGES) -> str:
    """hash(config keys read, code version, upstream fingerprints) of stage ``name``."""
    return fingerprints(cfg, table)[name]


def prompt_hashes(names) -> dict[str, str | None]:
    """sha256 of each default prompt file ``prompts/<name>.md`` (None when missing)."""
    from curation.vlm.prompts import DEFAULT_PROMPT_DIR

    out = {}
    for n in names:
        p = DEFAULT_PROMPT_DIR / f"{n}.md"
        out[n] = hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.exists() else None
    return out


def fingerprints(cfg, table: StageTable = STAGES) -> dict[str, str]:
    """Every stage's fingerprint under ``cfg`` (table order)."""
    out: dict[str, str] = {}
    for spec in table:
        parts = {
            "stage": spec.name,
            "code_version": spec.code_version,
            "reads": stage_reads(cfg, spec.name, table),
            "upstream": {u: out[u] for u in spec.upstream},
        }
        if spec.prompts:
            parts["prompts"] = prompt_hashes(spec.prompts)
        out[spec.name] = _digest(parts)
    return out


def snapshot_config(layout, cfg, stage: str, table: StageTable = STAGES) -> Path:
    """Keep what a stage ran with under ``manifests/configs/<fingerprint>.json`` (written once):
    the keys it reads, its code version and upstream fingerprints, and the whole resolved config
    (lineage shows the exact thresholds behind a row's ``config_hash``)."""
    fps = fingerprints(cfg, table)
    fp = fps[stage]
    path = layout.config_snapshot(fp)
    if not path.exists():
        spec = table[stage]
        path.parent.mkdir(parents=True, exist_ok=True)
        from curation.atomic import write_text

        write_text(path, json.dumps({  # a failed write (full disk) leaves no temporary file
            "config_hash": fp, "stage": stage, "code_version": spec.code_version, "profile": cfg.name,
            "reads": stage_reads(cfg, stage, table), "upstream": {u: fps[u] for u in spec.upstream},
            "config": cfg.data,
        }, sort_keys=True, indent=1, default=str))
    return path


# -- data versions and input keys ---------------------------------------------------------------

def table_data_version(table: pa.Table) -> str:
    """sha256 of the rows of a manifest table (column order fixed by the schema, volatile columns out)."""
    cols = [c for c in table.column_names if c not in VOLATILE_COLUMNS]
    h = hashlib.sha256()
    for c in cols:
        h.update(c.encode() + b"\0")
        h.update(json.dumps(table.column(c).to_pylist(), default=str, separators=(",", ":")).encode())
    return h.hexdigest()[:16]


def with_versions(table: pa.Table, input_key: str) -> pa.Table:
    """``table`` with ``uhrforge.input_key`` and ``uhrforge.data_version`` in its schema metadata."""
    md = dict(table.schema.metadata or {})
    md[INPUT_KEY] = input_key.encode()
    md[DATA_VERSION] = table_data_version(table).encode()
    return table.replace_schema_metadata(md)


def manifest_versions(path: str | os.PathLike) -> dict[str, str | None]:
    """``{"input_key", "data_version"}`` recorded in a manifest's footer (None when absent/unreadable)."""
    try:
        md = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return {"input_key": None, "data_version": None}
    return {"input_key": (md.get(INPUT_KEY) or b"").decode() or None,
            "data_version": (md.get(DATA_VERSION) or b"").decode() or None}


def input_key(fingerprint: str, upstream_versions: dict[str, str | None], extra: Any = None) -> str:
    """The key of one materialisation: fingerprint + the data versions it reads + extras."""
    return _digest({"fingerprint": fingerprint, "upstream": upstream_versions, "extra": extra})


def reusable(path: str | os.PathLike, key: str) -> bool:
    """True when the manifest at ``path`` was written from exactly these inputs."""
    return Path(path).exists() and manifest_versions(path)["input_key"] == key


def file_listing(paths: Iterable[Path], root: Path) -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime_ns)`` of directory entries (``lstat``: a symlink is not
    followed, an entry gone meanwhile is ``(-1, -1)``): the raw-shard part of raw_pool's input key."""
    out = []
    for p in paths:
        try:
            st = os.lstat(p)
            out.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((p.relative_to(root).as_posix(), -1, -1))
    return out
