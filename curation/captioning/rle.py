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
  upsampled bilinearly and thresholded; the runs come from where the interpolated columns cross
  the threshold (solved per segment between low-resolution samples), so neither the
  full-resolution mask nor its values ever exist (cost ~ ``frame columns x mask rows``).
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
    each value is a group of characters ``48 + 5 bits``, bit 0x20 = more characters follow,
    bit 0x10 of the last one = negative; from the fourth run on (index > 2), each value is
    stored as the difference to the run two places before). Vectorised with numpy."""
    b = s.encode("ascii") if isinstance(s, str) else bytes(s)
    if not b:
        return np.zeros(0, dtype=np.int64)
    c = np.frombuffer(b, dtype=np.uint8).astype(np.int64) - 48
    if (c < 0).any() or (c > 63).any():
        raise ValueError("not a COCO counts string")
    last = (c & 0x20) == 0                       # the last character of each value
    ends = np.flatnonzero(last)
    if ends.size == 0 or ends[-1] != len(c) - 1:
        raise ValueError("truncated COCO counts string")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    k = np.arange(len(c)) - np.repeat(starts, lengths)   # position of each character in its value
    if (k > 12).any():
        raise ValueError("COCO counts value too long")
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    neg = (c[ends] & 0x10) != 0
    x[neg] |= -(np.int64(1) << (5 * lengths[neg]))
    out = x.copy()
    if len(x) > 3:                                # out[m] = x[m] + out[m-2] for m > 2
        out[3::2] = x[1] + np.cumsum(x[3::2])
    if len(x) > 4:
        out[4::2] = x[2] + np.cumsum(x[4::2])
    return out


def from_counts(counts: Sequence[int] | np.ndarray, height: int, width: int) -> RLE:
    """Compressed RLE from uncompressed column-major run lengths (pycocotools ``frPyObjects``)."""
    from pycocotools import mask as mu

    a = np.asarray(counts, dtype=np.int64)
    if int(a.sum()) != height * width:
        raise ValueError(f"run lengths sum to {int(a.sum())}, expected {height * width}")
    c = a.tolist()
    return _ours(mu.frPyObjects({"size": [int(height), int(width)], "counts": c}, int(height), int(width)))


def _distinct(a: np.ndarray, odd: bool = False) -> np.ndarray:
    """The sorted distinct values of an integer array (``odd``: only those occurring an odd
    number of times). A stable sort: the inputs here are nearly sorted already."""
    a = np.sort(a.ravel(), kind="stable")
    if a.size == 0:
        return a
    starts = np.flatnonzero(np.concatenate([[True], a[1:] != a[:-1]]))
    if not odd:
        return a[starts]
    times = np.diff(np.concatenate([starts, [a.size]]))
    return a[starts[(times % 2) == 1]]


def encode_lowres(low: np.ndarray, frame: Sequence[float], height: int, width: int, threshold: float = 0.5,
                  chunk_columns: int = 512) -> RLE:
    """Full-resolution COCO RLE of a low-resolution mask without building the full mask.

    ``low``: ``(mh, mw)`` probabilities in [0, 1] (or booleans; NaN counts as 0) covering
    ``frame = (x0, y0, x1, y1)`` in full-image pixels (may extend past the image); the frame is
    first rounded to whole pixels (a shift of at most half a pixel). A full-image pixel is
    foreground when it lies in the frame and the bilinear interpolation of ``low`` at its centre
    (pixel-centre alignment, samples clamped at the edges -- OpenCV's ``INTER_LINEAR``
    convention) is ``>= threshold`` (use a threshold in (0, 1]; booleans count as 0 / 1).

    Separable, and never per full-resolution pixel: ``low`` is interpolated along x once for
    every frame column (OpenCV, a ``(frame columns, mh)`` array); along y the value is linear
    between two samples, so a column's runs start and end at the rows where a segment between
    samples crosses the threshold, solved in float64 (a row centre within 1e-9 rows of a
    crossing ties the threshold: foreground). Cost ~ ``frame columns x mh`` plus the runs,
    whatever the frame's height; memory bounded as ``chunk_columns`` full-resolution columns
    would be (``chunk_columns x frame rows / mh`` columns at a time). The result is
    thresholding the dense upsampled mask; pixels whose value ties the threshold may differ
    from a float resize, which rounds them either way.
    """
    import cv2

    low = np.nan_to_num(np.asarray(low, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if low.ndim != 2 or low.size == 0:
        raise ValueError(f"expected a non-empty 2-D low-resolution mask, got shape {low.shape}")
    H, W = int(height), int(width)
    try:
        fx0, fy0, fx1, fy1 = (int(round(float(v))) for v in frame)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"not a frame: {frame!r}") from None
    if not (fx1 > fx0 and fy1 > fy0):
        raise ValueError(f"empty frame {frame}")
    mh, mw = low.shape
    ry0, ry1 = max(0, fy0), min(H, fy1)
    cx0, cx1 = max(0, fx0), min(W, fx1)
    toggles: list[np.ndarray] = []   # linear column-major positions where the value flips
    if ry1 > ry0 and cx1 > cx0:
        fw, fh = fx1 - fx0, fy1 - fy0
        thr = float(threshold)
        # along x for every frame column: (fw, mh); keep the columns inside the image
        xt = cv2.resize(np.ascontiguousarray(low.T), (mh, fw), interpolation=cv2.INTER_LINEAR)
        xt = xt.reshape(fw, mh)[cx0 - fx0: cx1 - fx0]
        lo, hi = ry0 - fy0, ry1 - fy0          # frame rows inside the image: [lo, hi)
        # as many columns per step as chunk_columns full-resolution columns would hold values
        step = max(1, int(chunk_columns)) * max(1, fh // mh)
        for c0 in range(0, cx1 - cx0, step):
            v = xt[c0: c0 + step].astype(np.float64)
            col = np.arange(c0, c0 + v.shape[0], dtype=np.int64) + cx0
            ge = v >= thr
            ci, k = np.nonzero(ge[:, :-1] != ge[:, 1:])          # segments crossing the threshold
            a, b = v[ci, k], v[ci, k + 1]
            # frame row r samples u = (r + 0.5) mh / fh - 0.5; the value is thr at u* = k + (thr-a)/(b-a)
            rf = (k + (thr - a) / (b - a) + 0.5) * fh / mh - 0.5
            near = np.abs(rf - np.round(rf)) < 1e-9               # a row centre on the crossing: a tie,
            rf = np.where(near, np.round(rf), rf)                  # which is foreground (>= threshold)
            # rising (b > a): foreground from u* on -> first row ceil(rf); falling: up to u* -> floor(rf) + 1
            t = np.where(b > a, np.ceil(rf), np.floor(rf) + 1)
            t = np.clip(t, lo, hi).astype(np.int64)
            toggles.append(col[ci] * H + fy0 + t)
            toggles.append(col[ge[:, 0]] * H + ry0)     # the value before the first sample: a column starting inside
            toggles.append(col[ge[:, -1]] * H + ry1)    # ... after the last one: ending inside
    # flips at one position cancel in pairs (a run going on across a column boundary)
    pos = _distinct(np.concatenate(toggles), odd=True) if toggles else np.zeros(0, dtype=np.int64)
    pos = pos[pos < H * W]
    counts = np.diff(np.concatenate([[0], pos, [H * W]]))
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
    """The mask on an ``(out_h, out_w)`` grid, nearest sample at each output pixel centre.

    Column by column on the runs, never per sample: for the full-image column under each output
    column, the parity of the run boundaries before it and the rows where it flips, marked at
    the first output row at or below them and summed down the column (mod 2). Same values as
    :func:`sample` at those positions."""
    h, w = int(rle["size"][0]), int(rle["size"][1])
    out_h, out_w = int(out_h), int(out_w)
    ys = np.minimum(((np.arange(out_h) + 0.5) * (h / out_h)).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(out_w) + 0.5) * (w / out_w)).astype(np.int64), w - 1)
    out = np.zeros((out_h, out_w), dtype=bool)
    if out_h <= 0 or out_w <= 0 or h <= 0 or w <= 0:
        return out
    ends = np.cumsum(counts_from_string(rle["counts"]))   # the value flips at each of these positions
    base = xs * h
    n0 = np.searchsorted(ends, base, side="right")        # flips up to the column's first pixel
    n1 = np.searchsorted(ends, base + ys[-1], side="right")  # ... and up to its last sampled row
    active = np.flatnonzero((n1 > n0) | (n0 % 2 == 1))
    if active.size == 0:
        return out
    j0, j1 = int(active[0]), int(active[-1]) + 1
    n0, n1, base = n0[j0:j1], n1[j0:j1], base[j0:j1]
    lengths = n1 - n0
    col = np.repeat(np.arange(j1 - j0), lengths)
    idx = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(n0, lengths)
    first = np.searchsorted(ys, ends[idx] - base[col], side="left")   # first output row past the flip
    marks = np.bincount(col * (out_h + 1) + first, minlength=(j1 - j0) * (out_h + 1))
    flips = np.cumsum(marks.reshape(j1 - j0, out_h + 1)[:, :out_h], axis=1, dtype=np.int64)
    out[:, j0:j1] = ((flips + n0[:, None]) % 2 == 1).T
    return out


def decode_region(rle: Mapping[str, Any], box: Sequence[int]) -> np.ndarray:
    """The mask inside ``box = (x0, y0, x1, y1)`` (integer, exclusive ends) at full resolution."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return sample(rle, np.arange(y0, y1)[:, None], np.arange(x0, x1)[None, :])
