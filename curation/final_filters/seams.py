"""Patch seam continuity (paper 3.1.4): the gradient ratio across every tile seam.

**Seams.** With stride ``S`` (384 px, the tile stride of 3.1.3; our tile engine puts its
seams exactly there, :mod:`curation.upscale.tiles`), the horizontal seam lines are the row
boundaries ``y = kS`` (between rows ``y-1`` and ``y``) and the vertical ones the column
boundaries ``x = kS``, for every ``0 < kS < size``. Each line is cut into **seam segments**
of length ``S`` (one per pair of adjacent tiles: ``[jS, (j+1)S)`` along the line; a last
piece shorter than ``S/2`` joins the previous one). A segment is the unit that is scored,
so one bad tile is not diluted by a 10,000-px long line. ``seams`` = number of segments.

**Ratio of one segment** (horizontal seam at ``y``; vertical seams are the same with rows
and columns swapped). Let ``D_r(x) = I[r, x] - I[r-1, x]`` be the signed difference between
pixel rows ``r-1`` and ``r``, per RGB channel, in 0..255 units, and ``g(A) = mean over the
segment's pixels and the 3 channels of |A|``. Then

* ``seam gradient``      ``G_s = g(D_y)``;
* ``side gradients``     ``G_a = mean_{r=y-n..y-1} g(D_r)``, ``G_b = mean_{r=y+1..y+n} g(D_r)``
  (the ``n = 2`` row pairs just above and just below the seam);
* ``texture ratio``      ``R_t = G_s / (eps + min(G_a, G_b))``;
* ``step ratio``         ``R_c``: the same with ``D`` first averaged along the seam over a
  ``k = 16`` px box (``cv2.blur``, reflected border) and the mean ``(G_a + G_b) / 2`` as the
  reference - grain averages out, a colour/brightness step or a broken structure does not;
* **ratio** ``R = max(R_t, R_c)``, ``eps = 0.5`` grey level.

``R ~ 1`` on a continuous image (measured on clean tiled upscales of
:func:`curation.synth.generate_photo`: max 1.32 over 344 seams at 2x and 4x), and the image is
flagged when any segment has ``R > r_t = 2.5`` (paper). ``R_c`` catches colour shifts and
misalignments (a tile shifted by a few pixels), ``R_t`` also catches a tile much blurrier
than its neighbours (the weaker side's own gradients are the reference).

**Memory.** The image is read in bands of rows (a view for arrays, tile rows for a tiled
TIFF); only the ``2n + 2`` rows/columns around each seam line are kept (a few MB at 100 MP).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

STRIDE = 384
R_T = 2.5
N_SIDE = 2
EPS = 0.5
STEP_BOX = 16
BAND_ROWS = 1024


@dataclass
class SeamResult:
    max_ratio: float
    seams: int
    flagged: bool
    n_flagged: int
    threshold: float
    stride: int
    worst: dict | None = None
    segments: list[dict] = field(default_factory=list)

    def to_dict(self, with_segments: bool = False) -> dict[str, Any]:
        d = {"max_ratio": self.max_ratio, "seams": self.seams, "flagged": self.flagged,
             "n_flagged": self.n_flagged, "threshold": self.threshold, "stride": self.stride, "worst": self.worst}
        if with_segments:
            d["segments"] = self.segments
        return d


def seam_positions(n: int, stride: int, side: int = N_SIDE) -> list[int]:
    """Seam lines ``kS`` along an axis of ``n`` pixels with room for ``side + 1`` pixels above
    and ``side`` below."""
    return [p for p in range(stride, n, stride) if p - side - 1 >= 0 and p + side < n]


def segments(n: int, stride: int) -> list[tuple[int, int]]:
    """Segments ``[a, b)`` along a seam line of length ``n`` (last piece < S/2 merged)."""
    segs = [(a, min(a + stride, n)) for a in range(0, n, stride)]
    if len(segs) > 1 and segs[-1][1] - segs[-1][0] < stride / 2:
        segs[-2] = (segs[-2][0], n)
        segs.pop()
    return segs


def _channel_mean_abs(d: np.ndarray) -> np.ndarray:
    a = np.abs(d)
    return (a[..., 0] + a[..., 1] + a[..., 2]) * np.float32(1.0 / 3.0)


def _line_profiles(lines: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray]:
    """``lines``: (2n+2, L, 3) pixel lines across one seam (the seam lies between lines n and
    n+1), L along the seam. Returns ``|D|`` averaged over channels, raw and box-averaged along
    the seam, each (2n+1, L); row ``n`` is the difference across the seam."""
    import cv2

    f = lines.astype(np.float32)
    d = f[1:] - f[:-1]  # (2n+1, L, 3)
    raw = _channel_mean_abs(d)
    if box > 1:
        sm = cv2.blur(d, (box, 1), borderType=cv2.BORDER_REFLECT)
        smooth = _channel_mean_abs(sm)
    else:
        smooth = raw
    return raw, smooth


def _score_line(lines: np.ndarray, axis: str, pos: int, stride: int, n: int, eps: float, box: int,
                r_t: float) -> list[dict]:
    raw, smooth = _line_profiles(lines, box)
    segs = segments(raw.shape[1], stride)
    starts = np.array([a for a, _ in segs])
    lens = np.array([b - a for a, b in segs], np.float64)
    r = np.add.reduceat(raw, starts, axis=1) / lens  # (2n+1, n_segments)
    sm = np.add.reduceat(smooth, starts, axis=1) / lens
    ga, gb = r[:n].mean(axis=0), r[n + 1:].mean(axis=0)
    r_tex = r[n] / (eps + np.minimum(ga, gb))
    sa, sb = sm[:n].mean(axis=0), sm[n + 1:].mean(axis=0)
    r_step = sm[n] / (eps + 0.5 * (sa + sb))
    ratio = np.maximum(r_tex, r_step)
    return [{"axis": axis, "pos": int(pos), "start": int(a), "end": int(b), "ratio": round(float(ratio[i]), 4),
             "texture_ratio": round(float(r_tex[i]), 4), "step_ratio": round(float(r_step[i]), 4),
             "seam_gradient": round(float(r[n, i]), 4),
             "side_gradients": [round(float(ga[i]), 4), round(float(gb[i]), 4)],
             "flagged": bool(ratio[i] > r_t)} for i, (a, b) in enumerate(segs)]


def seam_check(image: Any, stride: int = STRIDE, r_t: float = R_T, n: int = N_SIDE, eps: float = EPS,
               box: int = STEP_BOX, band_rows: int = BAND_ROWS) -> SeamResult:
    """Score every seam segment of ``image`` (an ``(H, W, 3)`` uint8 array, a region source or a
    path) on the ``stride`` grid; see the module docstring for the ratio."""
    from curation.upscale.storage import open_source

    src = open_source(image) if not hasattr(image, "read") else image
    try:
        return _seam_check(src, stride, r_t, n, eps, box, band_rows)
    finally:
        if src is not image and hasattr(src, "close"):
            src.close()


def _seam_check(src: Any, stride: int, r_t: float, n: int, eps: float, box: int, band_rows: int) -> SeamResult:
    H, W = src.height, src.width
    ys = seam_positions(H, stride, n)
    xs = seam_positions(W, stride, n)
    # gather the 2n+2 rows around each horizontal seam and the 2n+2 columns around each vertical one
    hlines = {y: np.empty((2 * n + 2, W, 3), np.uint8) for y in ys}
    vlines = {x: np.empty((H, 2 * n + 2, 3), np.uint8) for x in xs}
    for y0 in range(0, H, band_rows):
        y1 = min(H, y0 + band_rows)
        band = src.read(y0, y1, 0, W)
        for x in xs:
            vlines[x][y0:y1] = band[:, x - n - 1:x + n + 1]
        for y in ys:
            a, b = max(y - n - 1, y0), min(y + n + 1, y1)
            if a < b:
                hlines[y][a - (y - n - 1):b - (y - n - 1)] = band[a - y0:b - y0]
    segs: list[dict] = []
    for y in ys:
        segs += _score_line(hlines[y], "h", y, stride, n, eps, box, r_t)
    for x in xs:
        segs += _score_line(np.ascontiguousarray(vlines[x].transpose(1, 0, 2)), "v", x, stride, n, eps, box, r_t)
    worst = max(segs, key=lambda s: s["ratio"]) if segs else None
    n_flag = sum(s["flagged"] for s in segs)
    return SeamResult(max_ratio=float(worst["ratio"]) if worst else 0.0, seams=len(segs), flagged=n_flag > 0,
                      n_flagged=n_flag, threshold=r_t, stride=stride, worst=worst, segments=segs)


def seam_check_record(path: str, stride: int = STRIDE, r_t: float = R_T) -> dict:
    """The ``uhr seam-check`` line of one file: ``path, max_ratio, seams, flagged``; an unreadable
    file gets ``flagged: None`` and ``error`` instead of raising (and ``reason`` when the reader
    contract of :mod:`curation.imageio` refused it: ``not_a_regular_file``, ``too_many_pixels``...)."""
    from curation.imageio import ImageReadError

    rec: dict = {"path": path}
    try:
        r = seam_check(path, stride=stride, r_t=r_t)
        rec.update(max_ratio=r.max_ratio, seams=r.seams, flagged=r.flagged)
    except ImageReadError as exc:  # the reader contract refused the file: its reason and detail
        rec.update(max_ratio=None, seams=0, flagged=None, error=f"{exc.reason}: {exc.detail}", reason=exc.reason)
    except Exception as exc:  # unreadable file: report, keep going
        rec.update(max_ratio=None, seams=0, flagged=None, error=f"{type(exc).__name__}: {exc}")
    return rec
