"""Raw pool of one shard (section 3.1.1): ingest, dedup by content hash, resolution screen.

A shard is a folder of files under the raw root (``<raw_root>/<shard>/``). Every file
gets a row, images or not. Dedup is exact (sha256 of the bytes): the first seen wins,
where "first" means an earlier shard (key order) or, inside a shard, an earlier path in
sorted order. The screen reads only the header (:func:`curation.imageio.probe`).

Licence: from the sidecar ``<stem>.json`` (``{"licence": ..., "origin": ...}``) next
to the file, else ``"unknown"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

from curation import reasons
from curation.config import Config
from curation.imageio import ImageReadError, content_hash, image_id_from_hash, probe
from curation.screening import screen

SIDECAR_SUFFIX = ".json"
SKIP_NAMES = {"labels.jsonl"}


def list_shard_files(shard_dir: str | os.PathLike) -> list[Path]:
    """Candidate files of a shard folder in sorted order (sidecars and hidden files skipped)."""
    shard_dir = Path(shard_dir)
    out = []
    for p in sorted(shard_dir.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.name in SKIP_NAMES:
            continue
        if p.suffix.lower() == SIDECAR_SUFFIX:
            continue
        out.append(p)
    return out


def list_shards(raw_root: str | os.PathLike) -> list[str]:
    """Shard names = sub-folders of the raw root that hold at least one file."""
    raw_root = Path(raw_root)
    if not raw_root.exists():
        return []
    return sorted(d.name for d in raw_root.iterdir() if d.is_dir() and not d.name.startswith(".") and list_shard_files(d))


def read_sidecar(path: Path) -> dict:
    side = path.with_suffix(SIDECAR_SUFFIX)
    if not side.exists():
        return {}
    try:
        with open(side) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def build_raw_pool_rows(
    shard: str,
    files: Iterable[Path],
    cfg: Config,
    seen: dict[str, str],
    code_version: str,
    progress: Callable[[int], None] | None = None,
    config_hash: str | None = None,
    relpath: Callable[[Path], str] = str,
) -> list[dict]:
    """One row per file. ``seen`` maps sha256 -> source path of the first copy (updated in place).

    ``config_hash``: the raw_pool stage fingerprint rows record (default: the whole config's hash);
    ``relpath``: how a path is written into the manifest (relative to the data root when inside it).
    """
    bounds = cfg.screen_bounds()
    max_pixels = int(cfg.get("io.max_pixels"))
    rows = []
    for path in files:
        sha = content_hash(path)
        side = read_sidecar(path)
        row = {
            "image_id": image_id_from_hash(sha),
            "sha256": sha,
            "shard": shard,
            "source_path": relpath(path),
            "licence": str(side.get("licence") or side.get("license") or "unknown"),
            "origin": side.get("origin"),
            "file_bytes": path.stat().st_size,
            "config_hash": config_hash or cfg.hash,
            "code_version": code_version,
            "passed": False,
        }
        if sha in seen:
            row.update(reject_reason=reasons.DUPLICATE, duplicate_of=seen[sha])
        else:
            seen[sha] = relpath(path)
            try:
                head = probe(path, max_pixels)
            except ImageReadError as exc:
                row.update(reject_reason=exc.reason, reject_detail=exc.detail)
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
