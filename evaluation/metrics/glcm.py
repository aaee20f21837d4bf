"""GLCM texture scores: ``glcm`` (Table 3's GLCM score, as the reference code computes it) and
``glcm_entropy`` (the paper's appendix F.1 text). One fast kernel computes both.

Shared preprocessing (PixVerve ``eval/metrics.py``, ``MetricEvaluator._gray_quantize`` and
``compute_glcm_score``):

* grey = Pillow ``convert("L")`` of the image (ITU-R 601 luma, ``(19595 R + 38470 G + 7471 B
  + 2**15) >> 16``); an alpha channel is ignored (not composited); EXIF orientation is *not*
  applied (the reference does not apply it either); then ``grey // 4`` -> 64 levels (0..63);
* 64x64 non-overlapping patches from the top-left corner, partial edge patches dropped;
* per patch the normalised **symmetric** co-occurrence matrices for distances 1, 2, 3, 4 and
  angles 0, pi/4, pi/2, 3pi/4, with scikit-image ``graycomatrix`` offset semantics: offset
  ``(round(sin(a) d), round(cos(a) d))`` (row, col), i.e. (0,d), (1,1) (1,1) (2,2) (3,3),
  (d,0), (1,-1) (1,-1) (2,-2) (3,-3); ``P + P^T``; each (d, a) slice divided by its own total.
  The result is a 64x64x4x4 float64 array per patch.

:func:`glcm_reference` is that computation as a straightforward scikit-image loop. The fast
kernels reproduce it exactly (to float rounding, tested to 1e-9):

* ``"c"``: a small C kernel compiled on first use with the system C compiler (``cc``) and cached
  by :mod:`curation.ckernels` (``$UHRFORGE_KERNEL_CACHE`` or ``~/.cache/uhrforge/kernels``); it streams the image patch by
  patch (no intermediate arrays), so memory is the grey image only (plus ~0.6 MB of tables per
  thread); it runs on :func:`default_threads` POSIX threads (the CPUs this process may use), which
  take rows of patches from a shared counter, and gives the same values on any number of them;
* ``"numpy"``: a vectorised fallback (``np.bincount`` over a strip of 64 rows and 8 patches
  at once, memory bounded by the strip) used when no compiler is available; exact, but only
  about 1.5x faster than the reference loop: a 100 MP image has 1.4e9 pixel pairs to count and
  ``np.bincount`` alone costs 4-8 ns per element on the 2-core machine, so numpy cannot reach
  the 10x target (measured in ``benchmarks/glcm.py --numpy``);
* ``"auto"`` (default): ``"c"`` if it can be built, else ``"numpy"``. The kernel used is
  reported in ``MetricResult.extra["kernel"]``. ``UHRFORGE_GLCM_KERNEL=numpy`` forces numpy.

How the value entropy is reproduced exactly: a normalised entry equals ``S / T`` where ``S`` is
an integer symmetric count and ``T`` the slice total (``2 * number of pixel pairs``; 7 distinct
totals over the 16 slices). IEEE division is correctly rounded, and two different fractions
with these denominators differ by more than 1e-8, so two entries are equal as floats exactly
when they are equal as fractions. The kernel therefore counts entries per reduced fraction (a
precomputed class table over (total, S)), zeros included (the zero class has
``65536 - nonzero`` entries), and takes the entropy of those counts.
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics.base import PER_IMAGE, Metric, MetricResult, register

PATCH = 64
LEVELS = 64
DISTANCES = (1, 2, 3, 4)
ANGLES = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)
N_SLICES = len(DISTANCES) * len(ANGLES)
N_ENTRIES = LEVELS * LEVELS * N_SLICES  # 65,536 values per patch
NO_PATCH_REASON = "no full 64x64 patch"
REFERENCE = "PixVerve-95K eval/metrics.py @3f9e7bd (compute_glcm_score, prop='entropy')"

# 8-bit Pillow modes (converted with convert("L") as the reference does)
_EIGHT_BIT_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


# --------------------------------------------------------------------------------------------
# grey image
# --------------------------------------------------------------------------------------------
class GreyError(ValueError):
    """The image cannot be turned into the reference's grey image; ``str`` is the reason."""


def grey_from_pil(img: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Reference grey (uint8 0..255) of a PIL image, plus notes.

    8-bit modes: ``img.convert("L")`` exactly as the reference (for RGB, RGBA, LA, P, PA, CMYK
    the same as ``convert("RGB").convert("L")``, i.e. alpha ignored; YCbCr gives its Y
    channel); a mode Pillow cannot convert to L directly goes through RGB. 16-bit greyscale
    (``I;16``, ``I``): Pillow would clip every value above 255 to 255, so here it is scaled
    ``round(v / 257)`` instead (noted in ``extra["deviation"]``). Float images are refused.
    """
    notes: dict[str, Any] = {"mode": img.mode}
    if img.mode in _SIXTEEN_BIT_MODES:
        a = np.asarray(img).astype(np.float64)
        grey = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        notes["deviation"] = "16-bit input scaled to 8 bit as round(v/257); Pillow convert('L') would clip at 255"
        return grey, notes
    if img.mode not in _EIGHT_BIT_MODES:
        raise GreyError(f"unsupported image mode {img.mode!r}")
    try:
        grey_img = img if img.mode == "L" else img.convert("L")
    except ValueError:
        grey_img = img.convert("RGB").convert("L")
        notes["via"] = "RGB"
    return np.asarray(grey_img, dtype=np.uint8), notes


def grey_from_array(rgb: np.ndarray) -> np.ndarray:
    """Reference grey of a decoded array: (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey, uint8."""
    from PIL import Image

    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        raise GreyError(f"expected uint8 pixels, got {a.dtype}")
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        im = Image.fromarray(np.ascontiguousarray(a))  # RGB or RGBA from the shape
        return np.asarray((im if im.mode == "RGB" else im.convert("RGB")).convert("L"), dtype=np.uint8)
    raise GreyError(f"expected (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")


def load_grey(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Open an image file with Pillow and return its reference grey and notes (format, mode).

    The bytes pass the reader contract first (:func:`curation.imageio.open_checked`: a regular
    file, the pixel limit ``io.max_pixels`` before any decode, complete and undamaged data); the
    decode and grey conversion are then Pillow's, as the reference's. A refused file raises
    :class:`~curation.imageio.ImageReadError` (a ``ValueError``) with its reason."""
    from curation.imageio import open_checked

    with open_checked(path) as img:
        fmt = (img.format or "").lower()
        img.load()
        grey, notes = grey_from_pil(img)
    notes["format"] = fmt
    return grey, notes


# --------------------------------------------------------------------------------------------
# tables shared by the kernels
# --------------------------------------------------------------------------------------------
def _c_round(x: float) -> int:
    """C ``round``: half away from zero (what scikit-image's Cython loop uses)."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


@dataclass(frozen=True)
class _Tables:
    slice_offsets: tuple[tuple[int, int], ...]  # per (d, a) slice in graycomatrix order [d][a]
    offsets: np.ndarray  # (n_off, 2) unique (dr, dc)
    mult: np.ndarray  # (n_off,) number of slices with that offset
    total: np.ndarray  # (n_off,) float64 slice total T = 2 * pairs
    group: np.ndarray  # (n_off,) index into the distinct totals
    cid: np.ndarray  # (n_groups, max_T + 1) int32 class id of the value S / T_group
    n_classes: int
    flog: np.ndarray  # s * log2(s), s = 0..max_T
    extra: dict = field(default_factory=dict)


@lru_cache(maxsize=1)
def tables() -> _Tables:
    slice_offsets = tuple(
        (_c_round(math.sin(a) * d), _c_round(math.cos(a) * d)) for d in DISTANCES for a in ANGLES
    )
    uniq: dict[tuple[int, int], int] = {}
    for off in slice_offsets:
        uniq[off] = uniq.get(off, 0) + 1
    offsets = np.array(list(uniq), dtype=np.int32)
    mult = np.array(list(uniq.values()), dtype=np.int32)
    pairs = [(PATCH - abs(dr)) * (PATCH - abs(dc)) for dr, dc in uniq]
    totals = np.array([2 * p for p in pairs], dtype=np.int64)
    distinct = sorted(set(int(t) for t in totals))
    group = np.array([distinct.index(int(t)) for t in totals], dtype=np.int32)
    max_t = max(distinct)
    lcm = math.lcm(*distinct)  # ~3.6e13: exact rational keys fit in int64
    keys = np.full((len(distinct), max_t + 1), -1, dtype=np.int64)
    for g, t in enumerate(distinct):
        keys[g, : t + 1] = np.arange(t + 1, dtype=np.int64) * (lcm // t)
    valid = keys >= 0
    uniq_keys, inverse = np.unique(keys[valid], return_inverse=True)
    cid = np.full(keys.shape, -1, dtype=np.int32)
    cid[valid] = inverse.astype(np.int32)
    assert uniq_keys[0] == 0 and np.all(cid[:, 0] == 0)  # class 0 is the value 0 in every group
    s = np.arange(max_t + 1, dtype=np.float64)
    flog = np.zeros_like(s)
    flog[1:] = s[1:] * np.log2(s[1:])
    return _Tables(
        slice_offsets=slice_offsets,
        offsets=offsets,
        mult=mult,
        total=totals.astype(np.float64),
        group=group,
        cid=np.ascontiguousarray(cid),
        n_classes=int(uniq_keys.size),
        flog=flog,
    )


# --------------------------------------------------------------------------------------------
# C kernel
# --------------------------------------------------------------------------------------------
#: the kernel's C source, next to this module (compiled on first use by :mod:`curation.ckernels`)
_C_SOURCE = Path(__file__).with_name("glcm.c")


def c_kernel() -> tuple[Any, str | None]:
    """The compiled kernel function (built once per machine, loaded once per process), or
    ``(None, why not)`` (see :mod:`curation.ckernels`)."""
    from curation.ckernels import CFLAGS, load_kernel

    i64, i32, ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
    return load_kernel("glcm", _C_SOURCE, "uhr_glcm_patch_rows",
                       [ptr, i64, i64, i64, i64, i32, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, ptr, i32, ptr, ptr, i32],
                       cflags=(*CFLAGS, "-pthread"))


def _c_patch_scores(grey: np.ndarray, npr: int, npc: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Both per-patch score arrays ``(npr, npc)`` from the C kernel. ``threads`` POSIX threads
    inside the kernel (the GIL is released by ctypes) take rows of patches from a shared counter;
    each has its own ~0.6 MB of tables, the image is shared and read in place."""
    fn, err = c_kernel()
    if fn is None:
        raise RuntimeError(err)
    t = tables()
    values = np.empty((npr, npc), dtype=np.float64)
    slices = np.empty((npr, npc), dtype=np.float64)
    dr = np.ascontiguousarray(t.offsets[:, 0])
    dc = np.ascontiguousarray(t.offsets[:, 1])
    rc = fn(
        grey.ctypes.data, grey.strides[0], 0, npr, npc, len(t.offsets),
        dr.ctypes.data, dc.ctypes.data, t.mult.ctypes.data, t.total.ctypes.data,
        t.group.ctypes.data, t.cid.ctypes.data, t.cid.shape[1], t.n_classes,
        t.flog.ctypes.data, N_SLICES, values.ctypes.data, slices.ctypes.data,
        max(1, min(int(threads), npr)),
    )
    if rc:
        raise MemoryError("GLCM C kernel could not allocate its buffers")
    return values, slices


# --------------------------------------------------------------------------------------------
# numpy kernel
# --------------------------------------------------------------------------------------------
def _numpy_patch_scores(grey: np.ndarray, npr: int, npc: int, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised numpy version of the C kernel: 64 rows and ``chunk`` patches at a time."""
    t = tables()
    ncls = t.n_classes
    values = np.empty((npr, npc), dtype=np.float64)
    slices = np.empty((npr, npc), dtype=np.float64)
    cell = LEVELS * LEVELS
    log2_n = math.log2(N_ENTRIES)
    offs = t.offsets.tolist()
    for pr in range(npr):
        strip = grey[pr * PATCH:(pr + 1) * PATCH, : npc * PATCH] >> 2  # 64 rows only: bounded memory
        x3 = strip.reshape(PATCH, npc, PATCH)
        for q0 in range(0, npc, chunk):
            xq = x3[:, q0:q0 + chunk, :]
            nq = xq.shape[1]
            # first pixel's level * 64 + the patch's offset into the (patch, i, j) count array
            hi = xq.astype(np.intp) * LEVELS + (np.arange(nq, dtype=np.intp) * cell)[None, :, None]
            ent = np.zeros(nq)
            nnz = np.zeros(nq, dtype=np.int64)
            keys: dict[int, list[np.ndarray]] = {1: [], 2: []}
            for k, (dr, dc) in enumerate(offs):
                ra, rb = slice(max(0, -dr), PATCH - max(0, dr)), slice(max(0, dr), PATCH + min(0, dr))
                ca, cb = slice(max(0, -dc), PATCH - max(0, dc)), slice(max(0, dc), PATCH + min(0, dc))
                c = np.bincount((hi[ra, :, ca] + xq[rb, :, cb]).ravel(), minlength=nq * cell)
                c = c.reshape(nq, LEVELS, LEVELS)
                s = (c + c.transpose(0, 2, 1)).ravel()  # symmetric counts S = C + C^T
                nz = np.flatnonzero(s)
                sv = s[nz]
                q = nz // cell
                m = int(t.mult[k])
                tot = t.total[k]
                ent += m * (math.log2(tot) - np.bincount(q, weights=t.flog[sv], minlength=nq) / tot)
                nnz += m * np.bincount(q, minlength=nq)
                keys[m].append(t.cid[t.group[k]][sv] + q * ncls)  # (patch, value class)
            counts = np.zeros(nq * ncls, dtype=np.int64)
            for m, ks in keys.items():
                if ks:
                    counts += m * np.bincount(np.concatenate(ks), minlength=nq * ncls)
            nzc = np.flatnonzero(counts)
            n = counts[nzc].astype(np.float64)
            acc = np.bincount(nzc // ncls, weights=n * np.log2(n), minlength=nq)
            n0 = (N_ENTRIES - nnz).astype(np.float64)  # the zero class
            with np.errstate(divide="ignore", invalid="ignore"):
                acc += np.where(n0 > 0, n0 * np.log2(n0), 0.0)
            values[pr, q0:q0 + nq] = log2_n - acc / N_ENTRIES
            slices[pr, q0:q0 + nq] = ent / N_SLICES
    return values, slices


# --------------------------------------------------------------------------------------------
# public kernels
# --------------------------------------------------------------------------------------------
def _check_grey(grey: np.ndarray) -> np.ndarray:
    g = np.asarray(grey)
    if g.ndim != 2 or g.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 grey image (0..255), got {g.dtype} {g.shape}")
    if g.strides[1] != 1:
        g = np.ascontiguousarray(g)
    return g


def default_threads() -> int:
    """Threads the C kernel uses unless told: the CPUs this process may run on (patches are
    independent; each thread takes the next row of patches)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def glcm_patch_scores(grey: np.ndarray, kernel: str = "auto", threads: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-patch ``(glcm, glcm_entropy)`` arrays of shape ``(rows // 64, cols // 64)`` and the
    kernel used. ``grey`` is the 8-bit reference grey (0..255); quantisation is done here.
    ``threads`` (C kernel only): None = :func:`default_threads`."""
    g = _check_grey(grey)
    if threads is None:
        threads = default_threads()
    npr, npc = g.shape[0] // PATCH, g.shape[1] // PATCH
    if kernel == "auto":
        kernel = os.environ.get("UHRFORGE_GLCM_KERNEL", "auto")
    if kernel == "auto":
        kernel = "c" if c_kernel()[0] is not None else "numpy"
    if npr == 0 or npc == 0:
        return np.empty((npr, npc)), np.empty((npr, npc)), kernel
    if kernel == "c":
        v, e = _c_patch_scores(g, npr, npc, threads)
    elif kernel == "numpy":
        v, e = _numpy_patch_scores(g, npr, npc)
    elif kernel == "reference":
        v, e = glcm_reference_patch_scores(g)
    else:
        raise ValueError(f"unknown GLCM kernel {kernel!r} (auto, c, numpy, reference)")
    return v, e, kernel


@dataclass(frozen=True)
class GlcmScores:
    glcm: float | None
    glcm_entropy: float | None
    n_patches: int
    kernel: str


def glcm_scores(grey: np.ndarray, kernel: str = "auto", threads: int | None = None) -> GlcmScores:
    """Both image scores (means over patches); ``None`` when there is no full 64x64 patch."""
    v, e, used = glcm_patch_scores(grey, kernel, threads)
    if v.size == 0:
        return GlcmScores(None, None, 0, used)
    return GlcmScores(float(np.mean(v)), float(np.mean(e)), int(v.size), used)


# --------------------------------------------------------------------------------------------
# scikit-image reference loop
# --------------------------------------------------------------------------------------------
def glcm_reference_patch_scores(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward scikit-image loop (what the reference runs, one patch at a time)."""
    from skimage.feature import graycomatrix
    from skimage.measure import shannon_entropy

    g64 = (np.asarray(grey) // 4).astype(np.uint8)
    h, w = g64.shape
    npr, npc = h // PATCH, w // PATCH
    values = np.empty((npr, npc))
    slices = np.empty((npr, npc))
    for pi, i in enumerate(range(0, h - PATCH + 1, PATCH)):
        for pj, j in enumerate(range(0, w - PATCH + 1, PATCH)):
            p = graycomatrix(g64[i:i + PATCH, j:j + PATCH], list(DISTANCES), list(ANGLES),
                             levels=LEVELS, normed=True, symmetric=True)
            values[pi, pj] = shannon_entropy(p)
            ents = []
            for di in range(p.shape[2]):
                for ai in range(p.shape[3]):
                    q = p[:, :, di, ai]
                    q = q[q > 0]
                    ents.append(float(-np.sum(q * np.log2(q))))
            slices[pi, pj] = float(np.mean(ents))
    return values, slices


def glcm_reference(grey: np.ndarray) -> GlcmScores:
    """Image scores from the scikit-image loop (the tests' and the benchmark's reference)."""
    v, e = glcm_reference_patch_scores(grey)
    if v.size == 0:
        return GlcmScores(None, None, 0, "reference")
    return GlcmScores(float(np.mean(v)), float(np.mean(e)), int(v.size), "reference")


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
class _GlcmMetric(Metric):
    kind = PER_IMAGE
    requires = ()
    higher_is_better = True
    _field = ""

    def __init__(self, kernel: str = "auto", threads: int | None = None) -> None:
        self.kernel = kernel
        self.threads = threads

    def _score_grey(self, grey: np.ndarray, notes: dict[str, Any]) -> MetricResult:
        s = glcm_scores(grey, self.kernel, self.threads)
        extra = {**notes, "n_patches": s.n_patches, "kernel": s.kernel,
                 "height": int(grey.shape[0]), "width": int(grey.shape[1])}
        value = getattr(s, self._field)
        if value is None:
            return self.result(None, NO_PATCH_REASON, **extra)
        return self.result(value, **extra)

    def _score_path(self, path: str) -> MetricResult:
        try:
            grey, notes = load_grey(path)
        except GreyError as exc:
            return self.unavailable(str(exc))
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for bad files
            from curation.imageio import describe_error

            return self.result(None, f"unreadable: {describe_error(exc)}")
        return self._score_grey(grey, notes)

    def _score_image(self, rgb: Any, **context: Any) -> MetricResult:
        try:
            grey = grey_from_array(rgb)
        except GreyError as exc:
            return self.result(None, f"bad input: {exc}")
        return self._score_grey(grey, {})


@register
class GlcmMetric(_GlcmMetric):
    """GLCM score of Table 3 (PixVerve), exactly as its reference code computes it.

    Protocol (reference: PixVerve-95K ``eval/metrics.py`` @3f9e7bd, ``compute_glcm_score`` with
    ``prop='entropy'`` and ``num_patches=None``):

    1. grey = Pillow ``Image.open(path).convert("L")``; ``grey // 4`` -> 64 levels;
    2. 64x64 non-overlapping patches from the top-left, partial edge patches dropped;
    3. per patch ``graycomatrix(patch, [1, 2, 3, 4], [0, pi/4, pi/2, 3pi/4], levels=64,
       normed=True, symmetric=True)`` -> a 64x64x4x4 float64 array;
    4. patch value = ``skimage.measure.shannon_entropy`` of that whole array: the base-2
       entropy of the *distribution of its 65,536 values* (``np.unique`` of the floats, zeros
       counted as one value). This is NOT the textbook GLCM entropy (-sum p log p over the
       matrix entries); that one is the metric ``glcm_entropy``. It is what produced Table 3's
       range (about 0.15 - 1.1);
    5. image score = mean over patches; a set's score = mean over images.

    Deviations: none for 8-bit images. An image without a full 64x64 patch gets ``None`` with
    reason "no full 64x64 patch" (the reference silently skips it, and returns 0.0 for a set
    with none). 16-bit greyscale files are scaled round(v/257) to 8 bit (Pillow's
    ``convert("L")`` would clip them at 255; noted in ``extra``). Diffusion-4K's original
    ``eval.py`` differs (OpenCV grey, non-symmetric matrices, nominal size loop): not followed.
    Computed by a compiled or vectorised kernel equal to the scikit-image loop to 1e-9.
    """

    name = "glcm"
    protocol_version = "pixverve-3f9e7bd/glcm-value-entropy/1"
    _field = "glcm"


@register
class GlcmEntropyMetric(_GlcmMetric):
    """Textbook GLCM entropy as the paper's appendix F.1 describes it (not Table 3's numbers).

    Protocol: same grey, quantisation, patches and normalised symmetric matrices as ``glcm``
    (distances 1-4, angles 0, pi/4, pi/2, 3pi/4, scikit-image offsets); per patch the mean
    over the 16 (distance, angle) slices of each slice's Shannon entropy ``-sum p log2 p``
    (p > 0); image score = mean over patches; a set's score = mean over images.

    Deviation: the paper's published numbers (Table 3) come from the reference code's
    whole-array value entropy (metric ``glcm``), so these values are not comparable with
    Table 3. Images without a full 64x64 patch get ``None`` ("no full 64x64 patch").
    """

    name = "glcm_entropy"
    protocol_version = "paper-F.1/glcm-slice-entropy/1"
    _field = "glcm_entropy"
