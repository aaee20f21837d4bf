"""Training sets per tier: the released corpus minus the bench split, with captions as prompts.

:func:`build_training_set` writes, for one tier, ``manifests/training_set/<tier>.parquet`` (one
row per image: ``image_id``, ``path`` relative to the data root, ``caption`` (the configured
caption field, ``training.buckets.caption_field``), both captions, ``width``, ``height``, the
aspect bucket ``bucket_h`` x ``bucket_w`` at the tier's pixel budget (Scheme II may leave out
buckets narrower than its partition factors; see :class:`~training.data.datasets.TierDataset`))
and ``<tier>.json`` describing where the rows came from:

* ``release``: the release the rows belong to: its name, manifest sha256, DVC md5 and git tag
  (``curation.release.release_tags``), found as the named release, or else the newest release
  whose manifest digest equals the current ``final_corpus`` minus the bench split; ``null``
  when the current corpus is not released (``unreleased: true`` then, with the rows' digest);
* ``bench_split``: the version of the held-out split and a check that no held-out id is in the
  set (a set that would contain one is refused);
* the tier (side, pixel budget, ratios), buckets and their counts.

Pixels are read by region (:mod:`training.data.datasets`): a corpus file that is not a tiled
TIFF (an archived native PNG / JPEG) is converted once into a tiled TIFF under
``cache/training_tiles/<sha256>.tif`` (one decode per image, then region reads for every
sample); ``region_readable`` in the JSON counts both.

The set's ``version`` is a hash of its rows and tier parameters: building it again with the
same inputs rewrites nothing (``reused: true``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

STAGE = "training_set"


class TrainingSetError(RuntimeError):
    pass


def set_paths(layout, tier: str) -> tuple[Path, Path]:
    """``(parquet, json)`` of a tier's training set."""
    d = layout.root / "manifests" / STAGE
    return d / f"{tier}.parquet", d / f"{tier}.json"


def _release_for(layout, rows: list[dict], release: str | None) -> tuple[dict | None, str]:
    """The release entry the rows come from and the rows' digest."""
    from curation.release import read_entry, releases_table, rows_digest

    digest = rows_digest(rows)
    if release:
        entry = read_entry(layout, release)
        if entry is None:
            raise TrainingSetError(f"no release named {release!r} under {layout.root / 'releases'}")
        return entry, digest
    matches = [e for e in releases_table(layout) if e.get("manifest_sha256") == digest]
    matches.sort(key=lambda e: str(e.get("created_at") or ""))
    return (matches[-1] if matches else None), digest


def _release_rows(layout, release: str | None) -> tuple[list[dict], dict | None, str]:
    """The rows to train on: a named release's manifest, else the current release rows."""
    from curation.release import read_release_manifest, release_rows

    if release:
        rows = read_release_manifest(layout, release).to_pylist()
        entry, _ = _release_for(layout, rows, release)
        from curation.release import rows_digest

        return rows, entry, rows_digest(rows)
    rows = release_rows(layout)
    entry, digest = _release_for(layout, rows, None)
    return rows, entry, digest


def _corpus_paths(layout) -> dict[str, str]:
    from curation.manifest import read_manifest

    out: dict[str, str] = {}
    for p in layout.manifests("corpus_100mp"):
        for r in read_manifest(p).select(["image_id", "passed", "output_path"]).to_pylist():
            if r["passed"] and r.get("output_path"):
                out.setdefault(r["image_id"], r["output_path"])
    return out


def region_readable(path: str | os.PathLike) -> bool:
    """True when samples can be read by region without decoding the image (tiled TIFF, .npy)."""
    from curation.upscale.storage import TiffRegionSource, open_source

    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        return True
    if suffix not in (".tif", ".tiff"):
        return False
    try:
        src = open_source(path)
    except (OSError, ValueError):
        return False
    try:
        return isinstance(src, TiffRegionSource)
    finally:
        getattr(src, "close", lambda: None)()


def tiled_copy(layout, path: Path, sha256: str) -> Path:
    """A tiled TIFF copy of a corpus file that has no region reads (decoded once, cached)."""
    from curation.upscale.storage import read_image, write_array

    dst = layout.root / "cache" / "training_tiles" / f"{sha256}.tif"
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_array(dst, read_image(path), "tiff")  # written to <dst>.tmp, then renamed
    return dst


def build_training_set(layout, cfg, tier: str, *, release: str | None = None, scheme: str = "I_full",
                       scale: float | None = None) -> dict:
    """Write (or reuse) the training set of ``tier``; returns its JSON description."""
    import pyarrow as pa

    from curation.manifest import write_manifest
    from curation.stages.final import bench_ids, load_split
    from training import curriculum
    from training.data.buckets import assign_bucket, make_buckets
    from training.data.datasets import _caption

    t = curriculum._training(cfg)
    tr = curriculum.tier(cfg, tier, scheme, scale)
    rows, entry, digest = _release_rows(layout, release)
    held = bench_ids(layout)
    leaked = sorted(held & {r["image_id"] for r in rows})
    if leaked:
        raise TrainingSetError(f"{len(leaked)} bench-split image(s) in the training rows ({leaked[:3]}...): "
                               "the bench split is never trained on")
    if not rows:
        raise TrainingSetError("no training images: the final corpus minus the bench split is empty "
                               "(materialise final_corpus and bench_split first)")
    paths = _corpus_paths(layout)
    field = t.get("buckets", {}).get("caption_field", "long_caption")
    buckets = make_buckets(tr.pixels, t["buckets"]["ratios"], tr.token_px)
    out_rows, converted, missing = [], 0, []
    for r in sorted(rows, key=lambda r: r["image_id"]):
        rel = paths.get(r["image_id"])
        p = layout.resolve(rel) if rel else None
        if p is None or not p.is_file():
            missing.append(r["image_id"])
            continue
        if not region_readable(p):
            p = tiled_copy(layout, p, r["sha256"])
            converted += 1
        b = buckets[assign_bucket(int(r["height"]), int(r["width"]), buckets)]
        out_rows.append({"image_id": r["image_id"], "path": layout.rel(p), "caption": _caption(r, field),
                         "long_caption": r.get("long_caption"), "short_caption": r.get("short_caption"),
                         "width": int(r["width"]), "height": int(r["height"]),
                         "bucket_h": b.height, "bucket_w": b.width, "sha256": r["sha256"]})
    if missing:
        raise TrainingSetError(f"{len(missing)} released image(s) have no local corpus file "
                               f"(first: {missing[0]}); fetch the release's blobs first")
    params = {"tier": tier, "side": tr.side, "pixels": tr.pixels, "token_px": tr.token_px,
              "ratios": t["buckets"]["ratios"], "caption_field": field}
    version = hashlib.sha256(json.dumps([params, digest, [r["path"] for r in out_rows]], sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
    pq_path, js_path = set_paths(layout, tier)
    if js_path.exists() and pq_path.exists():
        old = json.loads(js_path.read_text())
        if old.get("version") == version:
            return {**old, "reused": True}
    from curation.release import release_tags

    split = load_split(layout) or {}
    counts: dict[str, int] = {}
    for r in out_rows:
        k = f"{r['bucket_h']}x{r['bucket_w']}"
        counts[k] = counts.get(k, 0) + 1
    info: dict[str, Any] = {
        "stage": STAGE, "tier": tier, "version": version, "n_images": len(out_rows), "params": params,
        "rows_sha256": digest, "unreleased": entry is None,
        "release": ({"name": entry["name"], "manifest_sha256": entry.get("manifest_sha256"),
                     "dvc_md5": (entry.get("dvc") or {}).get("md5"), "git_tag": (entry.get("git") or {}).get("tag"),
                     "tags": release_tags(entry)} if entry else None),
        "bench_split": {"version": split.get("version"), "n_held_out": len(held), "overlap": 0},
        "buckets": counts, "region_readable": {"native": len(out_rows) - converted, "converted": converted},
        "manifest": layout.rel(pq_path), "reused": False,
    }
    pq_path.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(pa.Table.from_pylist(out_rows), pq_path)
    from curation.atomic import write_text

    write_text(js_path, json.dumps(info, indent=1, sort_keys=True, default=str))
    return info


def load_training_set(layout, tier: str) -> tuple[list[dict], dict]:
    """``(rows with absolute paths, description)`` of a built training set."""
    from curation.manifest import read_manifest

    pq_path, js_path = set_paths(layout, tier)
    if not pq_path.exists() or not js_path.exists():
        raise TrainingSetError(f"no training set for tier {tier} under {pq_path.parent} (materialise training_set)")
    rows = read_manifest(pq_path).to_pylist()
    for r in rows:
        r["path"] = str(layout.resolve(r["path"]))
    return rows, json.loads(js_path.read_text())
