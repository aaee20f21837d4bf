"""Purification scores of section 3.1.2 / appendix A, computed strip by strip.

All scores read the grey image ``grey = cv2.cvtColor(img8, BGR2GRAY)`` (here RGB2GRAY of
the RGB array, identical weights), ``(H, W)`` uint8. Variances are population variances.

* ``exposure_fraction`` -- fraction of grey pixels ``> 250`` or ``< 5``. The paper names
  no channel; grey is our choice.
* ``laplacian_var`` -- variance of ``cv2.Laplacian(grey, CV_64F)`` (ksize 1, i.e. the
  3x3 kernel [[0,1,0],[1,-4,1],[0,1,0]], default border REFLECT_101) over the image.
* ``flat_fraction`` (appendix A) -- grey split into 240x240 non-overlapping patches from
  the top-left, partial edge patches ignored; per patch *on its own* (default border inside
  the patch) Sobel dx, dy (CV_64F, ksize 3), magnitude ``sqrt(gx^2 + gy^2)``; a patch is
  textureless if the variance of its magnitude is ``< 750``. ``flat_fraction`` =
  textureless / patches, ``None`` when the image has no full patch.
* ``entropy`` -- Shannon entropy (base 2) of the 256-bin grey histogram.

Computation: :func:`purification_scores` reads each band of rows once (``uhr_score_rows``,
a C kernel compiled on first use, see :mod:`curation.ckernels`): histogram, Laplacian sums and
flatness tiles in one pass per row, exact integer sums, no float copies; given the decoded RGB
array it converts band by band, so no full-size grey image is held either. Without a C compiler
the separate strip functions below give the same values (they never hold more than one
``strip x W`` float64 buffer besides the uint8 grey image). :func:`reference_scores` is the
straightforward whole-image version the tests compare against (equal to 1e-9 relative).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

FLAT_PATCH = 240  # appendix A; never scaled by a profile


@dataclass(frozen=True)
class PurificationScores:
    exposure_fraction: float
    laplacian_var: float
    flat_fraction: float | None
    entropy: float
    flat_patches: int

    def as_dict(self) -> dict:
        return asdict(self)


# -- histogram based: exposure and entropy ------------------------------------------------

def grey_histogram(grey: np.ndarray, rows: int = 2048) -> np.ndarray:
    """256-bin histogram of a uint8 image as int64 counts, accumulated per strip."""
    hist = np.zeros(256, dtype=np.int64)
    for y in range(0, grey.shape[0], rows):
        h = cv2.calcHist([grey[y : y + rows]], [0], None, [256], [0, 256])
        hist += np.asarray(h).reshape(-1).astype(np.int64)
    return hist


def exposure_fraction_from_hist(hist: np.ndarray, low_exclusive: int = 5, high_exclusive: int = 250) -> float:
    """Fraction of pixels with grey < low or > high (exclusive bounds)."""
    n = int(hist.sum())
    bad = int(hist[:low_exclusive].sum()) + int(hist[high_exclusive + 1 :].sum())
    return bad / n


def entropy_from_hist(hist: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram (empty bins contribute 0)."""
    n = float(hist.sum())
    p = hist[hist > 0].astype(np.float64) / n
    return float(-(p * np.log2(p)).sum())


# -- Laplacian variance ------------------------------------------------------------------

def laplacian_var(grey: np.ndarray, rows: int = 1024) -> float:
    """Population variance of the ksize-1 Laplacian, strip-wise with a one-row halo.

    The Laplacian of uint8 input is an integer in [-1020, 1020] (exact in int16). OpenCV's
    ``sumElems`` of the int16 values and of their int32 squares accumulates those integers in double precision,
    which is exact below 2^53 (a 100 MP image sums squares to < 1.1e14), so the sum and the
    sum of squares are exact integers; the variance is then formed in exact rational
    arithmetic with one final rounding to float.
    """
    h, w = grey.shape
    total = 0
    total_sq = 0
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        a = max(0, y0 - 1)
        b = min(h, y1 + 1)
        lap = cv2.Laplacian(grey[a:b], cv2.CV_16S, ksize=1)[y0 - a : y0 - a + (y1 - y0)]
        total += int(cv2.sumElems(lap)[0])
        total_sq += int(cv2.sumElems(cv2.multiply(lap, lap, dtype=cv2.CV_32S))[0])
    n = h * w
    # var = (n*sumsq - sum^2) / n^2, exact
    return (n * total_sq - total * total) / (n * n)


# -- flatness ------------------------------------------------------------------------------

#: the flatness kernel's C source, next to this module (compiled on first use by :mod:`curation.ckernels`)
_FLAT_C = Path(__file__).with_name("flat_tiles.c")


def _flat_kernel():
    import ctypes

    from curation.ckernels import load_kernel

    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    return load_kernel("flat", _FLAT_C, "uhr_flat_tiles", [ptr, i64, i64, i64, i64, ptr])


def patch_magnitude_variances(grey: np.ndarray, patch: int = FLAT_PATCH, ksize: int = 3) -> np.ndarray:
    """Variance of the Sobel gradient magnitude of every full ``patch x patch`` tile.

    Returns an ``(rows, cols)`` float64 array in raster order; each tile is filtered on its
    own (REFLECT_101 border inside the tile). ksize 3 runs a fused C kernel (one pass over the
    pixels, integer gradients, exact sum of squares; compiled on first use, see
    :mod:`curation.ckernels`); other sizes, or no C compiler, take the per-tile OpenCV float64
    path, which agrees to ~1e-13 relative.
    """
    h, w = grey.shape
    ny, nx = h // patch, w // patch
    if ny and nx and ksize == 3 and patch >= 2 and grey.dtype == np.uint8:
        fn, _ = _flat_kernel()
        if fn is not None:
            out = np.empty((ny, nx), dtype=np.float64)
            g = grey if grey.strides[1] == 1 else np.ascontiguousarray(grey)
            if fn(g.ctypes.data, g.strides[0], ny, nx, patch, out.ctypes.data) == 0:
                return out
    return _patch_magnitude_variances_per_tile(grey, patch, ksize)


def _patch_magnitude_variances_per_tile(grey: np.ndarray, patch: int, ksize: int) -> np.ndarray:
    """Tile by tile in float64 (any ``ksize``); the definition the fast path reproduces."""
    h, w = grey.shape
    ny, nx = h // patch, w // patch
    out = np.empty((ny, nx), dtype=np.float64)
    for j in range(ny):
        strip = np.ascontiguousarray(grey[j * patch : (j + 1) * patch, : nx * patch])
        for i in range(nx):
            tile = strip[:, i * patch : (i + 1) * patch]
            gx = cv2.Sobel(tile, cv2.CV_64F, 1, 0, ksize=ksize)
            gy = cv2.Sobel(tile, cv2.CV_64F, 0, 1, ksize=ksize)
            mag = cv2.magnitude(gx, gy)
            _, std = cv2.meanStdDev(mag)
            out[j, i] = float(std[0, 0]) ** 2
    return out


def flat_fraction(
    grey: np.ndarray, patch: int = FLAT_PATCH, min_var: float = 750.0, ksize: int = 3
) -> tuple[float | None, int]:
    """(textureless fraction or None, number of full patches)."""
    var = patch_magnitude_variances(grey, patch, ksize)
    n = var.size
    if n == 0:
        return None, 0
    return float((var < min_var).sum()) / n, n


# -- all scores --------------------------------------------------------------------------

#: rows of grey per fused-kernel call (a band of ``BAND_ROWS x W`` uint8, ~12 MB at 100 MP)
BAND_ROWS = 1024


def _scores_kernel():
    import ctypes

    from curation.ckernels import CFLAGS, load_kernel

    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    # -fno-math-errno lets sqrt vectorise (its argument is never negative: same values)
    return load_kernel("scores", _FLAT_C, "uhr_score_rows", [ptr, i64, i64, i64, i64, i64, i64, i64, i64, i64,
                                                             ptr, ptr, ptr, ptr], cflags=(*CFLAGS, "-fno-math-errno"))


def _settings(cfg_purification: dict | None) -> tuple[int, int, int, float, int]:
    p = cfg_purification or {}
    exp = p.get("exposure", {})
    flat = p.get("flatness", {})
    return (int(exp.get("low_value_exclusive", 5)), int(exp.get("high_value_exclusive", 250)),
            int(flat.get("patch", FLAT_PATCH)), float(flat.get("min_patch_magnitude_var", 750)),
            int(flat.get("sobel_ksize", 3)))


def _from_parts(hist: np.ndarray, lap_var: float, var: np.ndarray, low: int, high: int, min_var: float
                ) -> PurificationScores:
    n = var.size
    ff = None if n == 0 else float((var < min_var).sum()) / n
    return PurificationScores(
        exposure_fraction=exposure_fraction_from_hist(hist, low, high),
        laplacian_var=lap_var,
        flat_fraction=ff,
        entropy=entropy_from_hist(hist),
        flat_patches=n,
    )


def _fused(bands, h: int, w: int, patch: int, fn) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Run the fused kernel over ``bands``: an iterator of ``(buf, b0, y0, y1)`` where ``buf`` is a
    uint8 ``(rows, w)`` array holding image rows ``b0 ..`` (with the one-row halo around
    ``[y0, y1)``). Returns (histogram, Laplacian variance, tile variances) or None if it refused."""
    ny, nx = h // patch, w // patch
    if ny == 0 or nx == 0:
        ny = nx = 0
    acc = np.zeros(258, dtype=np.int64)
    ssq = np.zeros(max(nx, 1), dtype=np.int64)
    sm = np.zeros(max(nx, 1), dtype=np.float64)
    var = np.zeros((ny, nx), dtype=np.float64)
    for buf, b0, y0, y1 in bands:
        if fn(buf.ctypes.data, buf.strides[0], b0, y0, y1, h, w, patch, ny, nx, acc.ctypes.data,
              ssq.ctypes.data, sm.ctypes.data, var.ctypes.data) != 0:
            return None
    n = h * w
    total, total_sq = int(acc[256]), int(acc[257])
    # var = (n * sumsq - sum^2) / n^2 in exact rational arithmetic (as laplacian_var)
    return acc[:256].copy(), (n * total_sq - total * total) / (n * n), var


def _grey_bands(grey: np.ndarray, rows: int):
    h = grey.shape[0]
    for y0 in range(0, h, rows):
        yield grey, 0, y0, min(h, y0 + rows)


def _rgb_bands(rgb: np.ndarray, rows: int):
    """Grey bands of an RGB image converted on the fly into one reused ``(rows + 2, W)`` buffer
    (OpenCV RGB2GRAY of the band plus its one-row halo: the values of
    :func:`curation.imageio.to_grey`), so no full-size grey image is ever held and no new pages
    are faulted in per band."""
    h, w = rgb.shape[:2]
    buf = np.empty((min(h, rows + 2), w), dtype=np.uint8)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        b0, b1 = max(0, y0 - 1), min(h, y1 + 1)
        band = buf[: b1 - b0]
        cv2.cvtColor(rgb[b0:b1], cv2.COLOR_RGB2GRAY, dst=band)
        yield band, b0, y0, y1


def purification_parts(image: np.ndarray, cfg_purification: dict | None = None, rows: int = BAND_ROWS
                       ) -> tuple[np.ndarray, float, np.ndarray]:
    """``(histogram, laplacian_var, tile_variances)`` of a uint8 image, band by band.

    ``image`` is the ``(H, W)`` uint8 grey image, or the decoded ``(H, W, 3)`` uint8 RGB array:
    then each band of ``rows`` rows is converted to grey on its own (same values as
    :func:`curation.imageio.to_grey` of the whole image) and no full-size grey copy exists.
    The histogram is ``(256,)`` int64 counts, the tile variances ``(H // patch, W // patch)``
    float64 (:func:`patch_magnitude_variances`). With the C kernel (ksize 3) each band is read
    once for all three, one pass per row (``uhr_score_rows`` in ``flat_tiles.c``); the results
    are bit-identical to :func:`grey_histogram`, :func:`laplacian_var` and
    :func:`patch_magnitude_variances`, which remain the path without a C compiler.
    """
    _, _, patch, _, ksize = _settings(cfg_purification)
    a = np.asarray(image)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"expected a (H, W) grey or (H, W, 3) RGB uint8 image, got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"empty image {a.shape}")
    rows = max(1, int(rows))
    fn = None
    if ksize == 3 and patch >= 2:
        fn, _ = _scores_kernel()
    if fn is not None:
        if a.ndim == 2:
            g = a if a.strides[1] == 1 else np.ascontiguousarray(a)
            bands = _grey_bands(g, rows)
        else:
            bands = _rgb_bands(a, rows)
        res = _fused(bands, h, w, patch, fn)
        if res is not None:
            return res
    if a.ndim == 3:
        from curation.imageio import to_grey

        a = to_grey(a)
    return grey_histogram(a), laplacian_var(a), patch_magnitude_variances(a, patch, ksize)


def purification_scores(image: np.ndarray, cfg_purification: dict | None = None, rows: int = BAND_ROWS
                        ) -> PurificationScores:
    """Every per-image purification score of a uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB image
    (see :func:`purification_parts`: one pass over each band of rows)."""
    low, high, _, min_var, _ = _settings(cfg_purification)
    hist, lap, var = purification_parts(image, cfg_purification, rows)
    return _from_parts(hist, lap, var, low, high, min_var)


def absolute_verdicts(s: PurificationScores, cfg_purification: dict) -> dict[str, bool]:
    """Pass/fail of each absolute filter on its own (True = passes)."""
    p = cfg_purification
    return {
        "exposure": s.exposure_fraction <= p["exposure"]["max_fraction"],
        "sharpness": s.laplacian_var >= p["sharpness"]["min_laplacian_var"],
        "flatness": s.flat_fraction is None or s.flat_fraction <= p["flatness"]["max_textureless_fraction"],
    }


def reference_scores(grey: np.ndarray) -> PurificationScores:
    """Whole-image, textbook implementation (several full-size float copies); for tests."""
    g = grey.astype(np.float64)
    expo = float(((grey > 250) | (grey < 5)).mean())
    lap = cv2.Laplacian(grey, cv2.CV_64F)
    lv = float(lap.var())
    h, w = grey.shape
    vals = []
    for y in range(0, h - FLAT_PATCH + 1, FLAT_PATCH):
        for x in range(0, w - FLAT_PATCH + 1, FLAT_PATCH):
            p = grey[y : y + FLAT_PATCH, x : x + FLAT_PATCH].copy()
            gx = cv2.Sobel(p, cv2.CV_64F, 1, 0, ksize=3)
            gy = cv2.Sobel(p, cv2.CV_64F, 0, 1, ksize=3)
            vals.append(float(np.sqrt(gx**2 + gy**2).var()))
    ff = None if not vals else float(np.mean(np.array(vals) < 750))
    counts = np.bincount(grey.ravel(), minlength=256)
    p = counts[counts > 0] / g.size
    ent = float(-(p * np.log2(p)).sum())
    return PurificationScores(expo, lv, ff, ent, len(vals))


def isclose_rel(a: float | None, b: float | None, rel: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
