"""The labelled synthetic raw pool (``uhr make-raw-pool``): plan, files, sidecars, labels.

With ``verify=True`` (default) every generated image is decoded back from its file with
:func:`curation.imageio.decode_rgb` and scored with :func:`curation.scores.purification_scores`;
an image that misses its calibration target (with margin, see ``_TARGETS``) is regenerated
with the next sub-seed, so every label is checked, not assumed. The score ranges per class are
returned in the summary.

Layout written under ``out_dir``::

    shard-00000/img-000000.jpg  img-000000.json (licence sidecar, ~90 % of files) ...
    shard-00001/...
    labels.jsonl   one line per file: file, defect, expected_reason, width, height, format,
                   variant, licence, duplicate_of
    synth.json     the generation parameters (no timings, so the pool is byte-reproducible)

Same ``(n, seed, cfg)`` -> byte-identical files: every random draw comes from a
``numpy.random.Generator`` seeded by ``(seed, index, attempt)``, strip heights depend only on
the image width, and no writer stores a timestamp.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from curation import reasons
from curation.config import Config
from curation.imageio import ImageReadError, check_complete, decode_rgb, probe
from curation.scores import purification_scores
from curation.screening import screen
from curation.synth.photos import (JPEG_QUALITY, _alpha, _bgr, _blurred_scene, _clean_scene, _exposed_scene,
                                   _flat_scene, _jpeg, _not_an_image_bytes, _pil_bytes, _png, _poster_scene,
                                   _render, _rng, _tiff)

# -- classes ------------------------------------------------------------------------------

CLEAN = "clean"
DEFECTS = (
    "too_few_pixels",
    "min_side_too_short",
    "over_exposed",
    "under_exposed",
    "blurred",
    "flat",
    "low_entropy",
    "duplicate",
    "truncated",
    "not_an_image",
)
EXPECTED_REASON = {
    CLEAN: reasons.PASS,
    "too_few_pixels": reasons.TOO_FEW_PIXELS,
    "min_side_too_short": reasons.MIN_SIDE_TOO_SHORT,
    "over_exposed": reasons.OVER_OR_UNDER_EXPOSED,
    "under_exposed": reasons.OVER_OR_UNDER_EXPOSED,
    "blurred": reasons.BLURRED,
    "flat": reasons.FLAT,
    "low_entropy": reasons.LOW_ENTROPY,
    "duplicate": reasons.DUPLICATE,
    "truncated": reasons.TRUNCATED,
    "not_an_image": reasons.NOT_AN_IMAGE,
}
PLAIN = "plain"
VARIANTS = ("png16", "rgba", "grey", "cmyk", "exif_rotated", "tiff", "webp")
LICENCES = ("CC0-1.0", "Unsplash", "CC-BY-4.0", "Pexels")
_LICENCE_P = (0.4, 0.3, 0.2, 0.1)
NO_SIDECAR_FRACTION = 0.10
ORIGIN = "synthetic:uhrforge"
_EXT = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif", "webp": ".webp"}
MIN_N = len(DEFECTS) + len(VARIANTS) + 1  # one of each defect and variant + one plain clean

# Calibration targets checked on the decoded file (with margin to the paper thresholds:
# exposure <= 0.20, laplacian_var >= 10, flat_fraction <= 0.975). ``None`` = not checked.
_CLEAN_T = dict(max_exposure=0.10, min_lap=30.0, max_flat=0.85, min_entropy=7.0)
_TARGETS: dict[str, dict] = {
    CLEAN: _CLEAN_T,
    "over_exposed": dict(min_exposure=0.35, min_lap=30.0, max_flat=0.90),
    "under_exposed": dict(min_exposure=0.35, min_lap=30.0, max_flat=0.90),
    "blurred": dict(max_exposure=0.10, max_lap=6.0, max_flat=0.90, need_patches=True),
    "flat": dict(max_exposure=0.10, min_lap=20.0, min_flat=1.0, need_patches=True),
    "low_entropy": dict(max_exposure=0.10, min_lap=30.0, max_flat=0.85, max_entropy=4.0),
    "too_few_pixels": dict(),
    "min_side_too_short": dict(),
}
MAX_ATTEMPTS = 6


# -- plan ---------------------------------------------------------------------------------

@dataclass
class _Item:
    defect: str
    variant: str = PLAIN
    fmt: str = "jpeg"
    width: int | None = None
    height: int | None = None
    large: bool = False
    source: int | None = None  # duplicate: position of the source in the final order
    licence: str | None = None


def _screen(width: int, height: int, b: dict) -> str:
    """The screen's verdict for a planned size (the same rule the raw pool applies)."""
    return screen(width, height, b)[0]


def _dims(rng, pixels: float, aspect: float) -> tuple[int, int]:
    w = max(1, int(round(math.sqrt(pixels * aspect))))
    h = max(1, int(round(pixels / w)))
    if rng.random() < 0.25:  # some portraits
        w, h = h, w
    return w, h


def _passing_dims(rng, mp_range, s2: float, b: dict, min_side: int = 0) -> tuple[int, int]:
    """Width and height from megapixels * s^2 and an aspect of 1:1..16:9 that pass the screen."""
    lo, hi = float(mp_range[0]), float(mp_range[1])
    for _ in range(200):
        p = rng.uniform(lo, hi) * 1e6 * s2
        w, h = _dims(rng, p, math.exp(rng.uniform(0, math.log(16 / 9))))
        if _screen(w, h, b) == reasons.PASS and min(w, h) >= min_side:
            return w, h
    raise ValueError(f"cannot draw an image size from {mp_range} MP (x{s2:g}) that passes the resolution screen")


def _defect_dims(rng, defect: str, b: dict) -> tuple[int, int]:
    if defect == "too_few_pixels":
        for _ in range(200):
            w, h = _dims(rng, b["medium_min_pixels_inclusive"] * rng.uniform(0.3, 0.85),
                         math.exp(rng.uniform(0, math.log(16 / 9))))
            if _screen(w, h, b) == reasons.TOO_FEW_PIXELS:
                return w, h
    else:  # min_side_too_short: a panorama with enough pixels
        for _ in range(200):
            if rng.random() < 0.5:
                short = b["medium_min_side"] * rng.uniform(0.55, 0.9)
                p = rng.uniform(b["medium_min_pixels_inclusive"] * 1.05, b["medium_max_pixels_inclusive"] * 0.95)
            else:
                short = b["large_min_side"] * rng.uniform(0.55, 0.9)
                p = b["large_min_pixels_exclusive"] * rng.uniform(1.05, 1.4)
            h = max(1, int(short))
            w = int(math.ceil(p / h))
            if _screen(w, h, b) == reasons.MIN_SIDE_TOO_SHORT:
                return w, h
    raise ValueError(f"cannot draw a size for {defect} under bounds {b}")


def _plan(n: int, seed: int, cfg: Config) -> list[_Item]:
    syn = cfg["synth"]
    if n < MIN_N:
        raise ValueError(
            f"n={n} is too small for a labelled raw pool: it needs at least {MIN_N} files "
            f"(one of each of the {len(DEFECTS)} defect classes, one clean image of each of the "
            f"{len(VARIANTS)} variants, and one plain clean image)"
        )
    rng = _rng(seed, 0x5EED)
    s2 = cfg.linear_scale**2
    b = cfg.screen_bounds()
    n_def = max(len(DEFECTS), int(round(float(syn.get("defect_fraction", 0.3)) * n)))
    n_def = min(n_def, n - len(VARIANTS) - 1)
    counts = {d: 1 for d in DEFECTS}
    for d in rng.choice(DEFECTS, n_def - len(DEFECTS)):
        counts[str(d)] += 1
    n_plain = n - n_def - len(VARIANTS)
    n_large = min(int(syn.get("n_large", 0)), n_plain - 1)  # keep one ordinary plain image (duplicate source)
    n_png = int(round(float(syn.get("png_fraction", 0.25)) * (n_plain - n_large)))

    cm = syn["clean_megapixels"]
    lo, hi = float(cm[0]), float(cm[1])
    small = (lo, lo + 0.3 * (hi - lo))  # variants and defects: lower part of the range (speed)
    items: list[_Item] = []
    png_idx = set(rng.choice(n_plain - n_large, n_png, replace=False).tolist()) if n_png else set()
    for i in range(n_plain):
        it = _Item(CLEAN)
        if i < n_large:
            it.large = True
            it.width, it.height = _passing_dims(rng, syn["large_megapixels"], s2, b)
        else:
            it.fmt = "png" if (i - n_large) in png_idx else "jpeg"
            it.width, it.height = _passing_dims(rng, cm, s2, b)
        items.append(it)
    vfmt = {"png16": "png", "rgba": "png", "grey": "jpeg", "cmyk": "jpeg", "exif_rotated": "jpeg",
            "tiff": "tiff", "webp": "webp"}
    for v in VARIANTS:
        it = _Item(CLEAN, v, vfmt[v])
        it.width, it.height = _passing_dims(rng, small, s2, b)
        items.append(it)
    for d in DEFECTS:
        if d == "duplicate":
            continue
        for k in range(counts[d]):
            it = _Item(d)
            if d in ("too_few_pixels", "min_side_too_short"):
                it.width, it.height = _defect_dims(rng, d, b)
            elif d == "not_an_image":
                it.fmt = "jpeg"
            elif d == "truncated":
                it.fmt = "jpeg" if k % 2 == 0 else "png"
                it.width, it.height = _passing_dims(rng, (lo, lo + 0.1 * (hi - lo)), s2, b)
            else:
                it.fmt = "png" if d == "low_entropy" else "jpeg"
                # at least two flatness patches across the short side where the profile allows
                it.width, it.height = _passing_dims(rng, small, s2, b, min_side=min(480, int(math.sqrt(lo * 1e6 * s2))))
            items.append(it)
    order = [items[int(i)] for i in rng.permutation(len(items))]
    # duplicates: exact copies of earlier plain clean (not large) images, placed later
    # (preferably in the second half, so often in a later shard than their source)
    src_of: dict[int, _Item] = {}
    for _ in range(counts["duplicate"]):
        cands = [p for p, it in enumerate(order) if it.defect == CLEAN and it.variant == PLAIN and not it.large]
        cands = cands or [p for p, it in enumerate(order) if it.defect == CLEAN and it.variant == PLAIN]
        early = [p for p in cands if p < len(order) // 2] or cands
        src = int(early[int(rng.integers(len(early)))])
        pos = int(rng.integers(max(src + 1, len(order) // 2), len(order) + 1))
        s = order[src]
        dup = _Item("duplicate", s.variant, s.fmt, s.width, s.height)
        src_of[id(dup)] = s
        order.insert(pos, dup)
    where = {id(it): p for p, it in enumerate(order)}
    for it in order:
        if it.defect == "duplicate":
            it.source = where[id(src_of[id(it)])]
            assert it.source < where[id(it)]
    no_side = set(rng.choice(n, max(1 if n >= 10 else 0, int(round(NO_SIDECAR_FRACTION * n))), replace=False).tolist())
    for p, it in enumerate(order):
        lic = str(rng.choice(LICENCES, p=_LICENCE_P))
        it.licence = None if p in no_side else lic
    return order


# -- one file -----------------------------------------------------------------------------

def _make_bytes(it: _Item, rng, out: Path, rel_of: list[str]) -> bytes:
    d, w, h = it.defect, it.width, it.height
    if d == "not_an_image":
        return _not_an_image_bytes(rng)
    if d == "duplicate":
        return (out / rel_of[it.source]).read_bytes()
    if d == CLEAN and it.variant == "grey":
        return _jpeg(_render(_clean_scene(rng, h, w, grey=True), rng))
    if d == CLEAN and it.variant == "png16":
        return _png(cv2.cvtColor(_render(_clean_scene(rng, h, w), rng, depth=16), cv2.COLOR_RGB2BGR))
    if d in ("over_exposed", "under_exposed"):
        sc = _exposed_scene(rng, h, w, "over" if d == "over_exposed" else "under")
    elif d == "blurred":
        sc = _blurred_scene(rng, h, w)
    elif d == "flat":
        sc = _flat_scene(rng, h, w)
    elif d == "low_entropy":
        sc = _poster_scene(rng, h, w)
    else:
        sc = _clean_scene(rng, h, w)
    img = _render(sc, rng)
    del sc
    if d == "truncated":
        data = _jpeg(img) if it.fmt == "jpeg" else _png(_bgr(img))
        return data[: int(len(data) * rng.uniform(0.4, 0.8))]
    v = it.variant
    if v == "rgba":
        return _png(np.dstack([_bgr(img), _alpha(rng, h, w)]))
    if v == "cmyk":
        return _pil_bytes(Image.fromarray(img).convert("CMYK"), "JPEG", quality=JPEG_QUALITY)
    if v == "exif_rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # display = stored rotated 90 deg clockwise
        stored = np.ascontiguousarray(np.rot90(img, 1))  # upright rotated 90 deg counter-clockwise
        return _pil_bytes(Image.fromarray(stored), "JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())
    if v == "tiff":
        return _tiff(img)
    if v == "webp":
        return _pil_bytes(Image.fromarray(img), "WEBP", lossless=True, quality=0, method=0)
    if it.fmt == "png":
        return _png(_bgr(img))
    return _jpeg(img)


def _check(path: Path, it: _Item, cfg: Config) -> tuple[bool, dict | None, str]:
    """Does the written file behave as its label says (with the calibration margins)?"""
    max_px = int(cfg.get("io.max_pixels", 250_000_000))
    d = it.defect
    if d in ("not_an_image", "truncated"):
        try:
            decode_rgb(path, max_px)
        except ImageReadError as exc:
            return exc.reason == EXPECTED_REASON[d], None, f"reason {exc.reason}"
        return False, None, "decoded without error"
    hdr = probe(path, max_px)
    check_complete(path, hdr.format)
    if (hdr.width, hdr.height) != (it.width, it.height):
        return False, None, f"header {hdr.width}x{hdr.height} != label {it.width}x{it.height}"
    scr = _screen(hdr.width, hdr.height, cfg.screen_bounds())
    want = EXPECTED_REASON[d] if d in ("too_few_pixels", "min_side_too_short") else reasons.PASS
    if scr != want:
        return False, None, f"screen {scr} != {want}"
    t = _TARGETS.get(d, {})
    if not t:
        return True, None, ""
    s = purification_scores(decode_rgb(path, max_px, hdr), cfg["purification"]).as_dict()
    ff = s["flat_fraction"]
    bad = []
    if "max_exposure" in t and s["exposure_fraction"] > t["max_exposure"]:
        bad.append("exposure too high")
    if "min_exposure" in t and s["exposure_fraction"] < t["min_exposure"]:
        bad.append("exposure too low")
    if "min_lap" in t and s["laplacian_var"] < t["min_lap"]:
        bad.append("laplacian too low")
    if "max_lap" in t and s["laplacian_var"] > t["max_lap"]:
        bad.append("laplacian too high")
    if t.get("need_patches") and ff is None:
        bad.append("no full flatness patch")
    if "max_flat" in t and ff is not None and ff > t["max_flat"]:
        bad.append("too flat")
    if "min_flat" in t and (ff is None or ff < t["min_flat"]):
        bad.append("not flat enough")
    if "min_entropy" in t and s["entropy"] < t["min_entropy"]:
        bad.append("entropy too low")
    if "max_entropy" in t and s["entropy"] > t["max_entropy"]:
        bad.append("entropy too high")
    return not bad, s, ", ".join(bad)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _prepare(out: Path) -> None:
    """Create ``out``; a previous pool there (labels.jsonl / synth.json) is replaced."""
    if out.exists() and any(out.iterdir()):
        ours = (out / "labels.jsonl").exists() or (out / "synth.json").exists()
        if not ours:
            raise FileExistsError(f"{out} is not empty and holds no previous synthetic pool; refusing to write there")
        for p in out.iterdir():
            if p.is_dir() and p.name.startswith("shard-"):
                shutil.rmtree(p)
            elif p.name in ("labels.jsonl", "synth.json"):
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


# -- the pool -----------------------------------------------------------------------------

def make_raw_pool(out_dir: str | os.PathLike, n: int, seed: int, cfg: Config, progress: bool = False,
                  verify: bool = True) -> dict:
    """Write a labelled synthetic raw pool of ``n`` files under ``out_dir``; return a summary.

    ``n`` counts every file (clean, variants and defects). About ``synth.defect_fraction`` of
    them are defects, every class at least once (``ValueError`` below ``MIN_N`` files).
    ``verify`` decodes and scores each generated image and regenerates it (next sub-seed) until
    it meets its calibration target; the summary's ``score_ranges`` gives min/max per class.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    n, seed = int(n), int(seed)
    out = Path(out_dir)
    plan = _plan(n, seed, cfg)
    _prepare(out)
    shard_size = int(cfg["sizes"]["shard_size"])
    rel_of: list[str] = []
    labels: list[dict] = []
    per_defect: dict[str, int] = {}
    per_format: dict[str, int] = {}
    per_variant: dict[str, int] = {}
    ranges: dict[str, dict[str, list[float]]] = {}
    total_bytes = 0
    retries = 0
    t_verify = 0.0
    bar = tqdm(total=n, disable=not progress, desc="make-raw-pool", unit="img")
    try:
        for p, it in enumerate(plan):
            shard = f"shard-{p // shard_size:05d}"
            (out / shard).mkdir(exist_ok=True)
            rel = f"{shard}/img-{p:06d}{_EXT[it.fmt]}"
            rel_of.append(rel)
            path = out / rel
            why = ""
            for attempt in range(MAX_ATTEMPTS):
                rng = _rng(seed, p, attempt, 0xA11CE)
                _write(path, _make_bytes(it, rng, out, rel_of))
                if not verify or it.defect == "duplicate":
                    scores = None
                    break
                tv = time.perf_counter()
                ok, scores, why = _check(path, it, cfg)
                t_verify += time.perf_counter() - tv
                if ok:
                    break
                retries += 1
            else:
                raise RuntimeError(f"{rel} ({it.defect}/{it.variant}, {it.width}x{it.height}) missed its "
                                   f"calibration target {MAX_ATTEMPTS} times: {why}")
            if scores:
                key = it.defect
                r = ranges.setdefault(key, {})
                for k, v in scores.items():
                    if v is None or k == "flat_patches":
                        continue
                    lo_hi = r.setdefault(k, [v, v])
                    lo_hi[0], lo_hi[1] = min(lo_hi[0], v), max(lo_hi[1], v)
            if it.licence is not None:
                side = {"licence": it.licence, "origin": ORIGIN, "seed": seed, "index": p}
                _write(path.with_suffix(".json"), (json.dumps(side, sort_keys=True) + "\n").encode())
            fmt = None if it.defect == "not_an_image" else it.fmt
            labels.append({
                "file": rel,
                "defect": it.defect,
                "expected_reason": EXPECTED_REASON[it.defect],
                "width": it.width,
                "height": it.height,
                "format": fmt,
                "variant": it.variant,
                "licence": it.licence or "unknown",
                "duplicate_of": rel_of[it.source] if it.defect == "duplicate" else None,
            })
            per_defect[it.defect] = per_defect.get(it.defect, 0) + 1
            per_format[fmt or "none"] = per_format.get(fmt or "none", 0) + 1
            per_variant[it.variant] = per_variant.get(it.variant, 0) + 1
            total_bytes += path.stat().st_size
            bar.update(1)
    finally:
        bar.close()
    with open(out / "labels.jsonl", "w") as fh:
        for lab in labels:
            fh.write(json.dumps(lab, sort_keys=True) + "\n")
    params = {"generator": "curation.synth", "n": n, "seed": seed, "profile": cfg.name,
              "config_hash": cfg.hash, "linear_scale": cfg.linear_scale, "shard_size": shard_size,
              "verified": bool(verify)}
    (out / "synth.json").write_text(json.dumps(params, sort_keys=True, indent=2) + "\n")
    return {
        "out_dir": str(out),
        "n": n,
        "seed": seed,
        "profile": cfg.name,
        "shards": (n + shard_size - 1) // shard_size,
        "per_defect": dict(sorted(per_defect.items())),
        "per_format": dict(sorted(per_format.items())),
        "per_variant": dict(sorted(per_variant.items())),
        "bytes": total_bytes,
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_verify": round(t_verify, 2),
        "regenerated": retries,
        "score_ranges": ranges,
    }
