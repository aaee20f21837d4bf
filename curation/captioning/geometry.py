"""Boxes, mask IoU, NMS, the area filter, instance crops and the highlighted full image.

Coordinates: a box is ``(x0, y0, x1, y1)`` in **full-image pixels**, ``x1``/``y1`` exclusive
(``width = x1 - x0``); floats are allowed for model outputs, :func:`crop_box` returns integers.

The instance *visual pair* (paper 3.1.5) is built here, always through region reads of the
tiled corpus file (:func:`curation.upscale.storage.open_source`, ``.read(y0, y1, x0, x1)``), so
a 100 MP image is never decoded whole into memory:

* the **crop** (:func:`crop_box`, :func:`read_crop`): the instance box grown on every side by
  ``padding`` (default 0.05 = 5 %) **of the box's own side length** -- left and right by
  ``0.05 x box width``, top and bottom by ``0.05 x box height`` -- so the crop stays centred on
  the box and is 10 % wider and taller than it; at an image border the crop is clipped (it is
  not shifted), so it then has less margin on that side only. A crop larger than
  ``max_long_edge`` or ``max_pixels`` (the VLM's image budget, ``captions.vlm_max_pixels``: its
  image processor would resize it to that anyway) is downscaled while it is read
  (:func:`read_region`), from the coarsest stored level of the file that still has the output's
  resolution (full resolution otherwise), by block means then bilinear (:func:`reduce_fast`);
* the **highlighted full image** (:func:`downscaled_read`, :func:`render_highlight`,
  :func:`highlight_image`): the whole image downscaled to ``long_edge`` by reading row bands
  (of a pyramid level when the file has one) and area-resampling each one (bounded memory),
  the instance's mask sampled on the same grid
  from its RLE (:func:`curation.captioning.rle.decode_resized`, no full-size mask), everything
  outside the mask darkened to ``dim`` x its brightness and the mask outlined just outside its
  edge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]


# =============================================================================================
# boxes and masks
# =============================================================================================
def box_area(box: Sequence[float]) -> float:
    x0, y0, x1, y1 = box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def valid_box(box: Any, width: int | None = None, height: int | None = None, min_side: float = 0.0) -> Box | None:
    """``box`` as four finite floats with ``x1 > x0`` and ``y1 > y0``, clipped to the image when
    its size is given; None when it is not a box, nothing of it is inside the image, or a side
    (after clipping) is shorter than ``min_side``."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None
    if width is not None and height is not None:
        x0, x1 = max(0.0, x0), min(float(width), x1)
        y0, y1 = max(0.0, y0), min(float(height), y1)
    if x1 <= x0 or y1 <= y0 or x1 - x0 < min_side or y1 - y0 < min_side:
        return None
    return x0, y0, x1, y1


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one shape (0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def mask_iou_matrix(masks: Sequence[np.ndarray]) -> np.ndarray:
    n = len(masks)
    m = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            m[i, j] = m[j, i] = mask_iou(masks[i], masks[j])
    return m


def nms(scores: Sequence[float], iou: np.ndarray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression: visit by decreasing score (ties: lower index first),
    keep an item unless its IoU with an already kept item is ``> threshold``. Returns the kept
    indices in visiting order."""
    s = np.asarray(scores, dtype=np.float64)
    iou = np.asarray(iou, dtype=np.float64)
    if iou.shape != (len(s), len(s)):
        raise ValueError(f"iou matrix shape {iou.shape} does not match {len(s)} scores")
    order = sorted(range(len(s)), key=lambda i: (-s[i] if math.isfinite(s[i]) else math.inf, i))
    kept: list[int] = []
    for i in order:
        if all(iou[i, k] <= threshold for k in kept):
            kept.append(i)
    return kept


def mask_nms(masks: Sequence[np.ndarray], scores: Sequence[float], threshold: float) -> list[int]:
    """:func:`nms` on the mask IoU of boolean masks."""
    return nms(scores, mask_iou_matrix(masks), threshold)


def area_filter(areas: Sequence[float], image_area: float, min_fraction: float) -> list[int]:
    """Indices whose area is at least ``min_fraction`` of ``image_area`` (trivial objects out)."""
    lim = float(min_fraction) * float(image_area)
    return [i for i, a in enumerate(areas) if float(a) >= lim and float(a) > 0]


# =============================================================================================
# crops
# =============================================================================================
def crop_box(box: Sequence[float], width: int, height: int, padding: float = 0.05) -> tuple[int, int, int, int]:
    """The instance crop: ``box`` grown by ``padding x box width`` left and right and
    ``padding x box height`` top and bottom (centred on the box), rounded outwards to whole
    pixels and clipped at the image borders. Raises ``ValueError`` for a box outside the image."""
    vb = valid_box(box)
    if vb is None:
        raise ValueError(f"not a box: {box!r}")
    x0, y0, x1, y1 = vb
    px, py = float(padding) * (x1 - x0), float(padding) * (y1 - y0)
    cx0, cy0 = max(0, math.floor(x0 - px)), max(0, math.floor(y0 - py))
    cx1, cy1 = min(int(width), math.ceil(x1 + px)), min(int(height), math.ceil(y1 + py))
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"box {box!r} lies outside the {width}x{height} image")
    return cx0, cy0, cx1, cy1


def target_size(w: int, h: int, long_edge: int | None, max_pixels: int | None = None) -> tuple[int, int]:
    """``(tw, th)``: ``w x h`` scaled by one factor (never up) so that its long edge is at most
    ``long_edge`` (sides rounded) and then its area at most ``max_pixels`` (sides floored, so
    ``tw * th <= max_pixels``); ``None`` / 0 drops a limit. ``max_pixels`` is the budget of the
    VLM's image processor (``captions.vlm_max_pixels``): it resizes every image to at most that
    many pixels, so a larger image only costs decode and transfer."""
    tw, th = w, h
    if long_edge and max(w, h) > long_edge:
        s = long_edge / max(w, h)
        tw, th = max(1, round(w * s)), max(1, round(h * s))
    if max_pixels and tw * th > max_pixels:
        s = math.sqrt(float(max_pixels) / (w * h))
        tw, th = max(1, math.floor(w * s)), max(1, math.floor(h * s))
    return tw, th


def reduce_fast(a: np.ndarray, tw: int, th: int) -> np.ndarray:
    """``(th, tw, 3)`` uint8: ``a`` (``(h, w, 3)``, at least ``tw x th``) downscaled the way a
    pyramid level is read -- means of ``k x k`` blocks for the integer part ``k`` of the
    reduction (:func:`curation.upscale.storage.block_mean`, OpenCV's fast integer area path),
    then bilinear for the remaining factor (< 2). An antialiased downscale within ~1-2 grey
    levels (mean) of the area resampling (``cv2.INTER_AREA``), which at a non-integer factor
    costs about as much as decoding the pixels (~5-10x this)."""
    import cv2

    from curation.upscale.storage import block_mean

    a = np.ascontiguousarray(a)
    h, w = a.shape[:2]
    k = max(1, min(w // tw, h // th))
    if k > 1:
        a = block_mean(a, k)
    if a.shape[:2] == (th, tw):
        return a
    return cv2.resize(a, (tw, th), interpolation=cv2.INTER_LINEAR).reshape(th, tw, -1)


def read_region(src: Any, box: Sequence[int], max_long_edge: int | None = None, band_rows: int = 1024,
                max_pixels: int | None = None, fast: bool = False) -> np.ndarray:
    """RGB uint8 ``(th, tw, 3)`` of ``box = (x0, y0, x1, y1)`` (full-image pixels) from a region
    source, downscaled (area) to :func:`target_size` ``(w, h, max_long_edge, max_pixels)`` when
    that is smaller than the box. Reads ``band_rows`` rows at a time and resamples each band,
    so memory stays ~ one band plus the output.

    A source with reduced-resolution levels (a TIFF with an overview / pyramid,
    ``src.reduced(fx, fy)``) is read from its coarsest level that still has the output's
    resolution, the box mapped to level pixels (``/ fx``, ``/ fy``, rounded: at most half a
    level pixel off at an edge, under half an output pixel). The overview is the band-wise area
    downscale of the whole image to its size (the same pixels as reading it here without
    levels); a pyramid level is made of ``f x f`` block means, so a read from it is an
    antialiased downscale of the image like the area one, not the same pixels (fine texture
    differs by a few grey levels).

    ``fast``: resample with :func:`reduce_fast` (block means, then bilinear) instead of the
    band-wise area resampling -- the instance crops, whose resampling at a non-integer factor
    would otherwise cost about as much as their decode; memory is then one band plus the block
    means (under 4x the output). The whole-image views keep the area resampling (the overview
    stores exactly its pixels)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0:
        raise ValueError(f"empty region {box!r}")
    tw, th = target_size(w, h, max_long_edge, max_pixels)
    return read_resized(src, (x0, y0, x1, y1), tw, th, band_rows, fast)


def read_resized(src: Any, box: Sequence[int], tw: int, th: int, band_rows: int = 1024,
                 fast: bool = False) -> np.ndarray:
    """RGB uint8 ``(th, tw, 3)``: ``box`` of ``src`` downscaled to ``tw x th`` (at most the
    box's size), from the coarsest stored level that still has that resolution (see
    :func:`read_region`)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    w, h = x1 - x0, y1 - y0
    if not (0 < tw <= w and 0 < th <= h):
        raise ValueError(f"cannot read {box!r} at {tw}x{th}: only downscaling")
    if (tw, th) == (w, h):
        return np.ascontiguousarray(src.read(y0, y1, x0, x1))
    if hasattr(src, "reduced"):
        lv = src.reduced(w / tw, h / th)
        if lv is not src:
            lx0, ly0 = min(lv.width - 1, round(x0 / lv.fx)), min(lv.height - 1, round(y0 / lv.fy))
            lx1 = max(lx0 + 1, min(lv.width, round(x1 / lv.fx)))
            ly1 = max(ly0 + 1, min(lv.height, round(y1 / lv.fy)))
            src, (x0, y0, x1, y1) = lv, (lx0, ly0, lx1, ly1)
    if fast:
        return _reduced_fast(src, (x0, y0, x1, y1), tw, th, band_rows)
    return _resampled(src, (x0, y0, x1, y1), tw, th, band_rows)


def _reduced_fast(src: Any, box: tuple[int, int, int, int], tw: int, th: int, band_rows: int) -> np.ndarray:
    """:func:`reduce_fast` of ``box`` of ``src``: bands of a multiple of ``k`` rows reduced to
    their block means as they are read, the bilinear step on the gathered means."""
    from curation.upscale.storage import block_mean

    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    k = max(1, min(w // tw, h // th))
    if k == 1 or h <= band_rows:
        return reduce_fast(src.read(y0, y1, x0, x1), tw, th)
    step = max(k, int(band_rows) - int(band_rows) % k)
    means = np.concatenate([block_mean(np.ascontiguousarray(src.read(y0 + b0, min(y1, y0 + b0 + step), x0, x1)), k)
                            for b0 in range(0, h, step)], axis=0)
    return reduce_fast(means, tw, th)


def _resampled(src: Any, box: tuple[int, int, int, int], tw: int, th: int, band_rows: int) -> np.ndarray:
    """``box`` of ``src`` area-resampled to ``tw x th``, ``band_rows`` source rows at a time."""
    import cv2

    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if (tw, th) == (w, h):
        return np.ascontiguousarray(src.read(y0, y1, x0, x1))
    step = max(int(band_rows), math.ceil(h / th))  # at least one output row per band
    parts = []
    for b0 in range(0, h, step):
        b1 = min(h, b0 + step)
        r0, r1 = round(b0 * th / h), round(b1 * th / h)
        if r1 <= r0:
            continue
        band = src.read(y0 + b0, y0 + b1, x0, x1)
        parts.append(cv2.resize(band, (tw, r1 - r0), interpolation=cv2.INTER_AREA))
    return np.ascontiguousarray(np.concatenate(parts, axis=0))


def read_crop(src: Any, box: Sequence[float], padding: float = 0.05, max_long_edge: int | None = 2048,
              band_rows: int = 1024, max_pixels: int | None = None,
              fast: bool = False) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The padded instance crop (see :func:`crop_box`), at most ``max_long_edge`` long and
    ``max_pixels`` large (:func:`read_region`: from the coarsest stored level that still has
    that resolution; ``fast``: block means + bilinear), and its box in full-image pixels."""
    cb = crop_box(box, src.width, src.height, padding)
    return read_region(src, cb, max_long_edge, band_rows, max_pixels, fast), cb


def downscaled_read(src: Any, long_edge: int | None, band_rows: int = 1024, max_pixels: int | None = None) -> np.ndarray:
    """The whole image with its long edge at ``long_edge`` and at most ``max_pixels`` pixels
    (:func:`target_size`, never upscaled), read in bands."""
    return read_region(src, (0, 0, src.width, src.height), long_edge, band_rows, max_pixels)


# =============================================================================================
# highlight
# =============================================================================================
def dimmed(image: np.ndarray, dim: float = 0.35) -> np.ndarray:
    """``image`` with every pixel darkened to ``dim`` x its value (rounded): the background of
    every highlight of one image, computed once (:func:`render_highlight`)."""
    return (np.asarray(image).astype(np.float32) * float(dim)).round().clip(0, 255).astype(np.uint8)


def render_highlight(image: np.ndarray, mask: np.ndarray, dim: float = 0.35, outline_px: int = 3,
                     outline_rgb: Sequence[int] = (255, 64, 0), dark: np.ndarray | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
    """``image`` with the pixels outside ``mask`` darkened to ``dim`` x their value and a
    ``outline_px`` wide outline drawn just outside the mask edge; pixels inside the mask keep
    their values. ``mask`` has the image's height and width. ``dark``: :func:`dimmed` of the
    image when the caller has it (several highlights of one image); ``out``: a uint8 array of
    the image's shape to draw into (returned), e.g. one slot of a batch allocated at once."""
    import cv2

    img = np.asarray(image)
    m = np.asarray(mask, bool)
    if img.shape[:2] != m.shape:
        raise ValueError(f"mask {m.shape} does not match image {img.shape[:2]}")
    if dark is None:
        dark = dimmed(img, dim)
    if out is None:
        out = np.array(dark, dtype=np.uint8, copy=True)
    else:
        np.copyto(out, dark)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return out
    pad = max(0, int(outline_px))   # the mask and its outline lie in its bounding box grown by pad
    y0, y1 = max(0, int(rows[0]) - pad), min(m.shape[0], int(rows[-1]) + 1 + pad)
    x0, x1 = max(0, int(cols[0]) - pad), min(m.shape[1], int(cols[-1]) + 1 + pad)
    sub_m, sub_o = m[y0:y1, x0:x1], out[y0:y1, x0:x1]
    np.copyto(sub_o, img[y0:y1, x0:x1], where=sub_m[..., None])
    if pad > 0:
        k = 2 * pad + 1
        ring = cv2.dilate(sub_m.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool) & ~sub_m
        np.copyto(sub_o, np.asarray(outline_rgb, dtype=np.uint8), where=ring[..., None])
    return out


def highlight_image(src: Any, rle: Mapping[str, Any], long_edge: int = 1024, dim: float = 0.35,
                    outline_px: int = 3, outline_rgb: Sequence[int] = (255, 64, 0), band_rows: int = 1024,
                    thumbnail: np.ndarray | None = None, dark: np.ndarray | None = None,
                    out: np.ndarray | None = None) -> np.ndarray:
    """The highlighted full image of one instance: a downscaled read of the image (or the given
    ``thumbnail`` of it, reused across instances, and its :func:`dimmed` copy ``dark``) with
    the instance's RLE mask sampled on the thumbnail grid (:func:`render_highlight`, drawn into
    ``out`` when given)."""
    from curation.captioning import rle as rle_mod

    thumb = thumbnail if thumbnail is not None else downscaled_read(src, long_edge, band_rows)
    if tuple(int(v) for v in rle["size"]) != (src.height, src.width):
        raise ValueError(f"mask size {rle['size']} does not match the image {src.height}x{src.width}")
    small = rle_mod.decode_resized(rle, thumb.shape[0], thumb.shape[1])
    return render_highlight(thumb, small, dim, outline_px, outline_rgb, dark=dark if thumbnail is not None else None,
                            out=out)
