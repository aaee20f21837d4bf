"""COCO run-length encoding of instance masks (pycocotools), with a streamed encoder for 100 MP.

Format: the COCO compressed RLE, ``{"size": [height, width], "counts": "<ascii>"}``; runs are
counted in **column-major (Fortran) order** (down the first column, then the next), starting
with a run of zeros (possibly of length 0). ``counts`` is a ``str`` here so a record is plain
JSON; pycocotools wants ``bytes`` and :func:`_coco` converts.

Two ways in:

* :func:`encode` -- an in-memory boolean mask (pycocotools ``mask.encode``). Fine for small
  masks; a 100 MP mask needs the 100 MB Fortran-ordered copy pycocotools requires.
* :func:`encode_lowres` -- what the pipeline uses: a segmenter's *low-resolution* mask
  (probabilities or booleans) covering a ``frame`` of the image (full-image pixel coordinates),
  upsampled bilinearly and thresholded **column chunk by column chunk** into the runs, so the
  full-resolution mask never exists in memory (peak ~ ``height x chunk_columns`` floats).
  The runs are turned into the compressed string by pycocotools (``frPyObjects``).

Ways out: :func:`decode` (full mask, pycocotools), :func:`decode_resized` (the mask sampled on a
smaller grid without decoding it whole: the highlight rendering), :func:`decode_region` (a
crop), :func:`area`, :func:`bbox` (``x0, y0, x1, y1`` exclusive), :func:`iou_matrix` (mask IoU
on the runs, pycocotools ``mask.iou``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RLE = dict  # {"size": [h, w], "counts": str}


def _coco(rle: Mapping[str, Any]) -> dict:
    """The pycocotools form of ``rle`` (counts as bytes)."""
    c = rle["counts"]
    if isinstance(c, str):
        c = c.encode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": c}


def _ours(rle: Mapping[str, Any]) -> RLE:
    c = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": c.decode("ascii") if isinstance(c, (bytes, bytearray)) else str(c)}


def encode(mask: np.ndarray) -> RLE:
    """COCO RLE of a 2-D mask (anything non-zero is foreground)."""
    from pycocotools import mask as mu

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    return _ours(mu.encode(np.asfortranarray(m != 0, dtype=np.uint8)))


def decode(rle: Mapping[str, Any]) -> np.ndarray:
    """The full ``(height, width)`` boolean mask."""
    from pycocotools import mask as mu

    return mu.decode(_coco(rle)).astype(bool)


def area(rle: Mapping[str, Any]) -> int:
    """Foreground pixel count."""
    from pycocotools import mask as mu

    return int(mu.area(_coco(rle)))


def bbox(rle: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    """Tight box ``(x0, y0, x1, y1)`` (exclusive ends) of the foreground; None if empty."""
    from pycocotools import mask as mu

    if area(rle) == 0:
        return None
    x, y, w, h = (int(round(v)) for v in mu.toBbox(_coco(rle)))
    return x, y, x + w, y + h


def iou_matrix(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Pairwise mask IoU ``(n, n)`` computed on the runs (no decode)."""
    from pycocotools import mask as mu

    n = len(rles)
    if n == 0:
        return np.zeros((0, 0))
    cs = [_coco(r) for r in rles]
    return np.asarray(mu.iou(cs, cs, [0] * n), dtype=np.float64).reshape(n, n)


def counts_from_string(s: str | bytes) -> np.ndarray:
    """Uncompressed run lengths of a COCO counts string (inverse of pycocotools' string form:
    5-bit groups offset by 48, bit 0x20 = more groups follow, bit 0x10 of the last group =
    negative; from the third run on, each value is stored as the difference to the run two
    places before)."""
    b = s.encode("ascii") if isinstance(s, str) else bytes(s)
    out: list[int] = []
    p, n = 0, len(b)
    while p < n:
        x = k = 0
        more = True
        while more:
            c = b[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return np.asarray(out, dtype=np.int64)


def from_counts(counts: Sequence[int] | np.ndarray, height: int, width: int) -> RLE:
    """Compressed RLE from uncompressed column-major run lengths (pycocotools ``frPyObjects``)."""
    from pycocotools import mask as mu

    c = [int(v) for v in np.asarray(counts, dtype=np.int64)]
    if sum(c) != height * width:
        raise ValueError(f"run lengths sum to {sum(c)}, expected {height * width}")
    return _ours(mu.frPyObjects({"size": [int(height), int(width)], "counts": c}, int(height), int(width)))


def _interp_index(n_out: int, start: float, length: float, n_low: int, offset: int = 0):
    """For output pixels ``offset .. offset+n_out-1`` (full-image units), the low-res sample
    position of each pixel centre: indices i0, i1, weight w, and which pixels lie in the frame."""
    pos = np.arange(offset, offset + n_out, dtype=np.float64) + 0.5
    inside = (pos >= start) & (pos < start + length)
    u = (pos - start) * (n_low / length) - 0.5
    u = np.clip(u, 0.0, n_low - 1)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_low - 1)
    w = (u - i0).astype(np.float32)
    return i0, i1, w, inside


def encode_lowres(low: np.ndarray, frame: Sequence[float], height: int, width: int, threshold: float = 0.5,
                  chunk_columns: int = 512) -> RLE:
    """Full-resolution COCO RLE of a low-resolution mask without building the full mask.

    ``low``: ``(mh, mw)`` probabilities in [0, 1] (or booleans) covering ``frame = (x0, y0, x1,
    y1)`` in full-image pixels (may extend past the image). A full-image pixel is foreground
    when its centre lies in the frame and the bilinear interpolation of ``low`` at that centre is
    ``>= threshold`` (use a threshold in (0, 1]; booleans count as 0 / 1). Work is done
    ``chunk_columns`` columns at a time, over the frame's rows only: peak memory ~
    ``frame rows x (mw + chunk_columns)`` float32, time ~ the frame's area.
    """
    low = np.asarray(low, dtype=np.float32)
    if low.ndim != 2 or low.size == 0:
        raise ValueError(f"expected a non-empty 2-D low-resolution mask, got shape {low.shape}")
    H, W = int(height), int(width)
    fx0, fy0, fx1, fy1 = (float(v) for v in frame)
    if not (fx1 > fx0 and fy1 > fy0):
        raise ValueError(f"empty frame {frame}")
    mh, mw = low.shape
    # rows of the frame that exist in the image; interpolate along y once: (rows, mw)
    ry0, ry1 = max(0, int(np.floor(fy0))), min(H, int(np.ceil(fy1)))
    cx0, cx1 = max(0, int(np.floor(fx0))), min(W, int(np.ceil(fx1)))
    changes: list[np.ndarray] = []
    if ry1 > ry0 and cx1 > cx0:
        i0, i1, wy, rin = _interp_index(ry1 - ry0, fy0, fy1 - fy0, mh, ry0)
        col_low = low[i0] * (1 - wy)[:, None] + low[i1] * wy[:, None]  # (rows, mw)
        col_low[~rin] = 0.0
        prev = False  # value of the pixel before the current chunk (column-major)
        step = max(1, int(chunk_columns))
        for c0 in range(cx0, cx1, step):
            c1 = min(cx1, c0 + step)
            j0, j1, wx, cin = _interp_index(c1 - c0, fx0, fx1 - fx0, mw, c0)
            vals = col_low[:, j0] * (1 - wx)[None, :] + col_low[:, j1] * wx[None, :]  # (rows, cols)
            fg = vals >= threshold
            fg[:, ~cin] = False
            if not fg.any():
                if prev:  # the run of ones ended at the top of column c0 (above row ry0 is zero)
                    changes.append(np.array([c0 * H], dtype=np.int64))
                    prev = False
                continue
            # one row per column (= column-major order) holding the frame rows, plus one zero
            # standing for the whole gap above / below the frame when there is one
            ha, hb = int(ry0 > 0), int(ry1 < H)
            L = ha + (ry1 - ry0) + hb
            seg = np.zeros((c1 - c0, L), dtype=bool)
            seg[:, ha:ha + ry1 - ry0] = fg.T
            flat = seg.ravel()
            d = np.flatnonzero(flat[1:] != flat[:-1]) + 1
            k = d % L
            rows = np.where((k == 0) & (ha == 1), 0, ry0 + k - ha)   # local index -> image row
            if flat[0] != prev:
                changes.append(np.array([c0 * H], dtype=np.int64))
            changes.append((c0 + d // L).astype(np.int64) * H + rows)
            prev = bool(flat[-1])
            del seg, flat, vals, fg
        if prev:
            changes.append(np.array([cx1 * H], dtype=np.int64))
    ch = np.concatenate(changes) if changes else np.zeros(0, dtype=np.int64)
    ch = ch[ch < H * W]
    counts = np.diff(np.concatenate([[0], ch, [H * W]]))
    return from_counts(counts, H, W)


def _starts(rle: Mapping[str, Any]) -> tuple[np.ndarray, int, int]:
    """Cumulative run boundaries (linear column-major positions) and the size."""
    h, w = int(rle["size"][0]), int(rle["size"][1])
    counts = counts_from_string(rle["counts"])
    return np.cumsum(counts), h, w


def sample(rle: Mapping[str, Any], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Mask values at integer pixel positions (broadcast ``ys`` and ``xs``) without decoding."""
    ends, h, w = _starts(rle)
    ys, xs = np.broadcast_arrays(np.asarray(ys, dtype=np.int64), np.asarray(xs, dtype=np.int64))
    lin = xs * h + ys
    run = np.searchsorted(ends, lin, side="right")  # index of the run holding each position
    return (run % 2) == 1  # runs alternate 0, 1, 0, ...


def decode_resized(rle: Mapping[str, Any], out_h: int, out_w: int) -> np.ndarray:
    """The mask on an ``(out_h, out_w)`` grid, nearest sample at each output pixel centre."""
    h, w = int(rle["size"][0]), int(rle["size"][1])
    ys = np.minimum(((np.arange(out_h) + 0.5) * (h / out_h)).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(out_w) + 0.5) * (w / out_w)).astype(np.int64), w - 1)
    return sample(rle, ys[:, None], xs[None, :])


def decode_region(rle: Mapping[str, Any], box: Sequence[int]) -> np.ndarray:
    """The mask inside ``box = (x0, y0, x1, y1)`` (integer, exclusive ends) at full resolution."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return sample(rle, np.arange(y0, y1)[:, None], np.arange(x0, x1)[None, :])
