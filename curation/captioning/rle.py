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
  full-resolution mask never exists in memory (peak ~ ``frame rows x chunk_columns`` floats).
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

    c = [int(v) for v in np.asarray(counts, dtype=np.int64)]
    if sum(c) != height * width:
        raise ValueError(f"run lengths sum to {sum(c)}, expected {height * width}")
    return _ours(mu.frPyObjects({"size": [int(height), int(width)], "counts": c}, int(height), int(width)))


def encode_lowres(low: np.ndarray, frame: Sequence[float], height: int, width: int, threshold: float = 0.5,
                  chunk_columns: int = 512) -> RLE:
    """Full-resolution COCO RLE of a low-resolution mask without building the full mask.

    ``low``: ``(mh, mw)`` probabilities in [0, 1] (or booleans) covering ``frame = (x0, y0, x1,
    y1)`` in full-image pixels (may extend past the image); the frame is first rounded to whole
    pixels (a shift of at most half a pixel). A full-image pixel is foreground when it lies in
    the frame and the bilinear interpolation of ``low`` at its centre (pixel-centre alignment,
    samples clamped at the edges -- OpenCV's ``INTER_LINEAR`` convention) is ``>= threshold``
    (use a threshold in (0, 1]; booleans count as 0 / 1).

    Separable and streamed: ``low`` is interpolated along x once for every frame column (a
    ``(frame columns, mh)`` array), then ``chunk_columns`` columns at a time along y, directly in
    column-major layout, thresholded and turned into run boundaries. The full mask never exists:
    peak memory ~ ``frame columns x mh + chunk_columns x frame rows`` float32.
    """
    import cv2

    low = np.asarray(low, dtype=np.float32)
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
    changes: list[np.ndarray] = []
    if ry1 > ry0 and cx1 > cx0:
        fw, fh = fx1 - fx0, fy1 - fy0
        # along x for every frame column: (fw, mh); keep the columns inside the image
        xt = cv2.resize(np.ascontiguousarray(low.T), (mh, fw), interpolation=cv2.INTER_LINEAR)
        xt = np.ascontiguousarray(xt.reshape(fw, mh)[cx0 - fx0: cx1 - fx0])
        ha, hb = int(ry0 > 0), int(ry1 < H)   # one zero standing for the gap above / below the frame
        L = ha + (ry1 - ry0) + hb
        prev = False  # value of the pixel before the current chunk (column-major)
        step = max(1, int(chunk_columns))
        for c0 in range(cx0, cx1, step):
            c1 = min(cx1, c0 + step)
            # along y for this chunk, already column-major: (columns, frame rows)
            vals = cv2.resize(xt[c0 - cx0: c1 - cx0], (fh, c1 - c0), interpolation=cv2.INTER_LINEAR)
            fg = vals.reshape(c1 - c0, fh)[:, ry0 - fy0: ry1 - fy0] >= threshold
            del vals
            if not fg.any():
                if prev:  # the run of ones ended at the top of column c0
                    changes.append(np.array([c0 * H], dtype=np.int64))
                    prev = False
                continue
            if ha or hb:
                seg = np.zeros((c1 - c0, L), dtype=bool)
                seg[:, ha:ha + ry1 - ry0] = fg
            else:
                seg = fg
            flat = seg.ravel()
            d = np.flatnonzero(flat[1:] != flat[:-1]) + 1
            k = d % L
            rows = np.where((k == 0) & (ha == 1), 0, ry0 + k - ha)   # local index -> image row
            if flat[0] != prev:
                changes.append(np.array([c0 * H], dtype=np.int64))
            changes.append((c0 + d // L).astype(np.int64) * H + rows)
            prev = bool(flat[-1])
            del seg, flat, fg
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
