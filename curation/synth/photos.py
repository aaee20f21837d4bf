"""Procedural photos for the synthetic raw pool: the picture model, its defect variants, encoders.

Picture model (all float32, built strip by strip so a 120 MP image needs well under 2 GB):

* **luminance** -- a 1/f-like Laplacian-pyramid sum of standardised noise octaves: the coarse
  octaves (cells >= 32 px, as many as the image size gives) standardised, plus the fine ones
  (cells 2..16 px) at a *fixed* contrast, modulated by a smooth "detail" mask so some regions
  are smooth like sky or bokeh (the 240-px flatness patch is never scaled, so fine texture must
  not fade as the image grows); summed at half resolution, cubic-upsampled per strip;
* **objects** -- hard-edged polygons / ellipses / rotated boxes scaled with the image, and
  clusters of small ones (8-30 px), each with its own tone, texture contrast and colour;
* **tone** -- a soft (tanh) tone curve onto about 20..236 grey, so the grey histogram is wide
  (entropy ~7.5 bits) with no clipped pixels;
* **colour** -- smooth chroma fields and per-object chroma added along two directions that
  leave the BT.601 grey value unchanged, plus a global cast;
* **grain** -- Gaussian luminance noise (sigma 1.8-3 grey levels, ``cv2.randn``).

Defects are the same model with one ingredient changed, calibrated so that each trips its
own filter and (as far as possible) only that one: blown-out / crushed regions over 50-68 % of
the frame (exposure); only large and clustered small high-contrast objects, then a Gaussian
blur of sigma ~3 px (blurred: Laplacian variance < 10, but the object clusters keep patches
with Sobel-magnitude variance >= 750 so it is not also 'flat'); only smooth gradients plus
grain of sigma ~3 (flat: every patch textureless, Laplacian variance ~150-250); a 5-8 colour
posterisation written as PNG (low entropy, < 3 bits); a resolution below the screen or a
panorama (screen); a byte copy of an earlier clean file (duplicate); a JPEG/PNG cut at 40-80 %
(truncated); text bytes named ``.jpg`` (not an image).

:func:`generate_photo` is the clean photo alone (benchmarks, tests, demo references).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from curation.scores import FLAT_PATCH

JPEG_QUALITY = 95

# grey-neutral chroma directions: 0.299 dR + 0.587 dG + 0.114 dB = 0
_U = (1.0, -0.299 / 0.587, 0.0)
_W = (0.0, 0.114 / 0.587, -1.0)
_STRIP_PIXELS = 1 << 22  # ~4 M pixels per strip (float32 RGB strip ~50 MB)
_COARSE = 3  # chroma / masks live at 1/8 resolution


# -- small helpers ------------------------------------------------------------------------

def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


def _sizes(h: int, w: int) -> list[tuple[int, int]]:
    """Pyramid level sizes: level j is ceil(size / 2^j), down to <= 4 px."""
    out = [(h, w)]
    while max(out[-1]) > 4:
        hh, ww = out[-1]
        out.append(((hh + 1) // 2, (ww + 1) // 2))
    return out


def _up2(a: np.ndarray, size: tuple[int, int], interp: int = cv2.INTER_CUBIC) -> np.ndarray:
    up = cv2.resize(a, (a.shape[1] * 2, a.shape[0] * 2), interpolation=interp)
    return up[: size[0], : size[1]]


def _standard(n: np.ndarray) -> np.ndarray:
    n -= n.mean()
    sd = float(n.std())
    if sd > 1e-6:
        n /= sd
    return n


def _pyramid(rng: np.random.Generator, h: int, w: int, amps: dict[int, float], stop: int) -> np.ndarray:
    """Sum of standardised noise octaves (level j has cells of 2^j px), at level ``stop``."""
    sizes = _sizes(h, w)
    top = len(sizes) - 1
    stop = min(stop, top)
    acc = np.zeros(sizes[top], np.float32)
    for j in range(top, stop - 1, -1):
        if j < top:
            acc = _up2(acc, sizes[j])
        a = amps.get(j, 0.0)
        if a:
            n = _standard(rng.standard_normal(sizes[j], dtype=np.float32))
            acc = acc + np.float32(a) * n
    return np.ascontiguousarray(acc)


def _up_rows(src: np.ndarray, f: int, y0: int, y1: int, w: int, interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Rows [y0, y1) of ``src`` upsampled by the integer factor f (same values as a whole-image resize)."""
    if f == 1:
        return src[y0:y1, :w].copy()
    sh = src.shape[0]
    r0 = max(0, y0 // f - 2)
    r1 = min(sh, -(-y1 // f) + 2)
    blk = src[r0:r1]
    up = cv2.resize(blk, (blk.shape[1] * f, blk.shape[0] * f), interpolation=interp)
    off = y0 - r0 * f
    return up[off : off + (y1 - y0), :w]


def _strip_rows(w: int) -> int:
    return int(max(16, min(4096, _STRIP_PIXELS // max(1, w))))


# -- scene model --------------------------------------------------------------------------

@dataclass
class _Shapes:
    pts: list = field(default_factory=list)  # int32 (k, 2) xy arrays, full-res coordinates
    ymin: list = field(default_factory=list)
    ymax: list = field(default_factory=list)
    z: list = field(default_factory=list)  # tone (normalised luminance units)
    tex: list = field(default_factory=list)  # texture contrast kept inside the shape
    chroma: list = field(default_factory=list)  # (2,) grey-neutral colour offsets

    def add(self, pts: np.ndarray, z: float, tex: float, chroma) -> None:
        pts = np.asarray(pts, np.int32).reshape(-1, 2)
        self.pts.append(pts)
        self.ymin.append(int(pts[:, 1].min()))
        self.ymax.append(int(pts[:, 1].max()))
        self.z.append(float(z))
        self.tex.append(float(tex))
        self.chroma.append(np.asarray(chroma, np.float32))


@dataclass
class _Scene:
    h: int
    w: int
    lum: np.ndarray  # normalised luminance field at 1/lum_f resolution
    lum_f: int = 2
    lum_interp: int = cv2.INTER_CUBIC
    shapes: _Shapes = field(default_factory=_Shapes)
    tone: str = "tanh"  # tanh | linear | poster
    mid: float = 128.0
    span: float = 100.0
    gain: float = 0.5
    thresholds: np.ndarray | None = None  # poster: z thresholds
    palette: np.ndarray | None = None  # poster: (K, 3) RGB
    grain: float = 2.0
    chroma: np.ndarray | None = None  # (h8, w8, 2) at 1/8 resolution
    cast: tuple[float, float] = (0.0, 0.0)
    expo: str | None = None  # over | under
    blown: np.ndarray | None = None  # 0..1 at 1/8 resolution
    expo_gain: float = 1.0
    expo_bias: float = 0.0
    blur: float = 0.0
    grey: bool = False


def _poly(rng: np.random.Generator, cx: float, cy: float, r: float) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:  # ellipse
        ax = (max(2, int(r)), max(2, int(r * rng.uniform(0.35, 1.0))))
        return cv2.ellipse2Poly((int(cx), int(cy)), ax, int(rng.integers(180)), 0, 360, 6)
    if kind == 1:  # rotated box
        box = ((float(cx), float(cy)), (float(2 * r), float(2 * r * rng.uniform(0.2, 1.0))), float(rng.uniform(0, 180)))
        return np.rint(cv2.boxPoints(box)).astype(np.int32)
    k = int(rng.integers(5, 10))  # star-ish polygon
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = r * rng.uniform(0.45, 1.0, k)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)


def _add_shapes(sh: _Shapes, rng, h: int, w: int, n_big: int, n_clusters: int, z_fn, tex_rng, chroma_sd: float,
                per_cluster=(15, 40), small_px=(6, 30), big_frac=(0.03, 0.35)) -> None:
    side = min(h, w)
    for _ in range(n_big):
        r = side * math.exp(rng.uniform(math.log(big_frac[0]), math.log(big_frac[1])))
        sh.add(_poly(rng, rng.uniform(0, w), rng.uniform(0, h), r), z_fn(), rng.uniform(*tex_rng),
               rng.normal(0, chroma_sd, 2))
    for _ in range(n_clusters):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        spread = rng.uniform(60, 200)
        for _ in range(int(rng.integers(*per_cluster))):
            r = rng.uniform(*small_px)
            sh.add(_poly(rng, cx + rng.normal(0, spread), cy + rng.normal(0, spread), r), z_fn(),
                   rng.uniform(*tex_rng), rng.normal(0, chroma_sd, 2))


def _coarse_field(rng, h: int, w: int, n_levels: int = 4, gradient: float = 0.0) -> np.ndarray:
    """Smooth standardised field at 1/8 resolution: the n coarsest octaves (+ a linear ramp)."""
    top = len(_sizes(h, w)) - 1
    amps = {j: 1.0 for j in range(max(_COARSE, top - n_levels + 1), top + 1)}
    f = _standard(_pyramid(rng, h, w, amps, _COARSE))
    if gradient:
        hh, ww = f.shape
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
        ramp = (np.cos(a) * xx / max(ww, 1) + np.sin(a) * yy / max(hh, 1)).astype(np.float32)
        f = _standard(f + np.float32(gradient) * _standard(ramp))
    return f


def _chroma(rng, h: int, w: int, sd: float) -> np.ndarray:
    c = np.stack([_coarse_field(rng, h, w, 4), _coarse_field(rng, h, w, 4)], -1)
    return (c * np.float32(sd)).astype(np.float32)


FINE_LEVELS = 4  # octaves with cells of 2..16 px: fixed absolute contrast at every image size


def _textured_lum(rng, h: int, w: int, fine: tuple[float, float] = (0.55, 0.8)) -> np.ndarray:
    """The multi-scale luminance of a clean photo at half resolution (std ~1).

    Coarse octaves (cells >= 32 px, however many the image size gives) are summed with a
    1/f-like profile and standardised; the fine octaves (cells 2..16 px) are added with a fixed
    amplitude (``fine`` = their combined std), modulated by a smooth detail mask, so the
    texture seen by a 240-px patch does not fade as the image grows.
    """
    sizes = _sizes(h, w)
    top = len(sizes) - 1
    beta = rng.uniform(0.05, 0.35)  # 0 = equal energy per octave (1/f amplitude spectrum)
    split = min(FINE_LEVELS + 1, top)
    acc = _standard(_pyramid(rng, h, w, {j: float(2.0 ** (beta * j)) for j in range(split, top + 1)}, split))
    detail = _coarse_field(rng, h, w, 3)
    lo = rng.uniform(0.1, 0.35)
    thr = np.quantile(detail, rng.uniform(0.05, 0.35))
    mask = (lo + (1 - lo) / (1 + np.exp(-3.0 * (detail - thr)))).astype(np.float32)
    fa = np.array([2.0 ** (beta * j) for j in range(1, split)])
    fa *= rng.uniform(*fine) / math.sqrt(float((fa**2).sum()))
    for j in range(split - 1, 0, -1):
        acc = _up2(acc, sizes[j])
        n = _standard(rng.standard_normal(sizes[j], dtype=np.float32))
        n *= cv2.resize(mask, (sizes[j][1], sizes[j][0]), interpolation=cv2.INTER_LINEAR)
        n *= np.float32(fa[j - 1])
        acc += n
    return np.ascontiguousarray(acc)


def _tone_params(rng):
    mid = rng.uniform(112, 142)
    span = min(rng.uniform(92, 108), 236 - mid, mid - 20)
    return mid, span, rng.uniform(0.55, 0.75)


def _clean_scene(rng, h: int, w: int, grey: bool = False) -> _Scene:
    lum = _textured_lum(rng, h, w)
    sh = _Shapes()
    n_big = int(rng.integers(6, 26))
    n_cl = int(rng.poisson(h * w / 4e6 + 0.5))
    _add_shapes(sh, rng, h, w, n_big, min(n_cl, 80), lambda: rng.normal(0, 1.0), (0.2, 0.9), 18.0)
    mid, span, gain = _tone_params(rng)
    return _Scene(h, w, lum, shapes=sh, mid=mid, span=span, gain=gain, grain=rng.uniform(1.8, 3.0),
                  chroma=None if grey else _chroma(rng, h, w, rng.uniform(6, 16)),
                  cast=tuple(rng.normal(0, 8, 2)), grey=grey)


def _patch_means(field8: np.ndarray, h: int, w: int) -> np.ndarray:
    """Mean of a 1/8-resolution field over each full 240-px flatness patch."""
    ny, nx = h // FLAT_PATCH, w // FLAT_PATCH
    c = FLAT_PATCH // 2**_COARSE
    out = np.empty((ny, nx), np.float32)
    for j in range(ny):
        for i in range(nx):
            out[j, i] = field8[j * c : (j + 1) * c, i * c : (i + 1) * c].mean()
    return out


def _exposed_scene(rng, h: int, w: int, kind: str) -> _Scene:
    sc = _clean_scene(rng, h, w)
    frac = rng.uniform(0.5, 0.68)  # blown / crushed area
    fld = _coarse_field(rng, h, w, 3, gradient=2.0)
    for sign in (1.0, -1.0):
        f = sign * fld
        blown = np.clip((f - np.quantile(f, 1 - frac)) / (0.08 * float(f.std())) + 0.5, 0, 1).astype(np.float32)
        # keep at least one 240-px flatness patch mostly unblown (matters for small images)
        cells = _patch_means(blown, h, w)
        if cells.size == 0 or cells.min() < 0.3:
            break
    sc.blown = blown
    sc.expo = kind
    if kind == "over":
        sc.expo_gain, sc.expo_bias = rng.uniform(1.0, 1.15), rng.uniform(10, 30)
    else:
        sc.expo_gain, sc.expo_bias = rng.uniform(0.7, 0.9), -rng.uniform(0, 10)
    return sc


def _flat_scene(rng, h: int, w: int) -> _Scene:
    lum = _coarse_field(rng, h, w, 3, gradient=rng.uniform(0.5, 2.0))
    return _Scene(h, w, lum, lum_f=2**_COARSE, lum_interp=cv2.INTER_LINEAR, tone="linear",
                  mid=rng.uniform(95, 160), span=rng.uniform(12, 28), grain=rng.uniform(2.6, 3.4),
                  chroma=_chroma(rng, h, w, rng.uniform(4, 12)), cast=tuple(rng.normal(0, 5, 2)))


def _blurred_scene(rng, h: int, w: int) -> _Scene:
    lum = _coarse_field(rng, h, w, 4) * np.float32(0.35)
    sh = _Shapes()
    sign = [1.0]

    def z_fn():  # alternating dark / bright, high contrast objects
        sign[0] = -sign[0]
        return sign[0] * rng.uniform(1.5, 2.4)

    _add_shapes(sh, rng, h, w, int(rng.integers(6, 16)), 0, z_fn, (0.0, 0.1), 12.0)
    # clusters of small objects centred on some of the 240-px flatness patches, so that the
    # blurred image keeps strongly textured patches (it must not also read as 'flat')
    ny, nx = h // FLAT_PATCH, w // FLAT_PATCH
    cells = [(j, i) for j in range(ny) for i in range(nx)]
    if cells:
        host = [c for c in cells if rng.random() < 0.25]
        if len(host) < min(2, len(cells)):
            host = [cells[int(k)] for k in rng.choice(len(cells), min(2, len(cells)), replace=False)]
        for j, i in host[:400]:
            cx = (i + 0.5) * FLAT_PATCH + rng.uniform(-40, 40)
            cy = (j + 0.5) * FLAT_PATCH + rng.uniform(-40, 40)
            for _ in range(int(rng.integers(35, 60))):
                sh.add(_poly(rng, cx + rng.normal(0, 40), cy + rng.normal(0, 40), rng.uniform(8, 26)), z_fn(),
                       rng.uniform(0.0, 0.1), rng.normal(0, 12.0, 2))
    mid, span, gain = _tone_params(rng)
    return _Scene(h, w, lum, lum_f=2**_COARSE, lum_interp=cv2.INTER_LINEAR, shapes=sh, mid=mid, span=span,
                  gain=0.6, grain=0.0, chroma=_chroma(rng, h, w, rng.uniform(5, 14)),
                  cast=tuple(rng.normal(0, 5, 2)), blur=rng.uniform(2.8, 3.6))


def _poster_scene(rng, h: int, w: int) -> _Scene:
    sc = _clean_scene(rng, h, w)
    k = int(rng.integers(5, 9))
    # thresholds at equal-frequency quantiles of the (pre-shape) luminance field
    sub = sc.lum[::3, ::3].ravel()
    sc.thresholds = np.quantile(sub, np.linspace(0, 1, k + 1)[1:-1]).astype(np.float32)
    levels = np.linspace(rng.uniform(35, 60), rng.uniform(190, 215), k)
    pal = []
    for g in levels:
        cu, cw = rng.normal(0, 25, 2)
        pal.append([g + cu * _U[0] + cw * _W[0], g + cu * _U[1] + cw * _W[1], g + cu * _U[2] + cw * _W[2]])
    sc.palette = np.clip(np.rint(np.array(pal)), 0, 255).astype(np.float32)
    sc.tone, sc.grain, sc.chroma = "poster", 0.0, None
    return sc


# -- rendering ----------------------------------------------------------------------------

def _mix_matrix(sc: _Scene) -> np.ndarray:
    """cv2.transform matrix: [Y, c0, c1, blown] -> RGB, with the exposure gain and bias."""
    g, bias = (sc.expo_gain, sc.expo_bias) if sc.expo else (1.0, 0.0)
    m = np.zeros((3, 5), np.float32)
    for ch in range(3):
        m[ch, 0] = g
        m[ch, 1] = g * _U[ch]
        m[ch, 2] = g * _W[ch]
        m[ch, 3] = 300.0 if sc.expo == "over" else -300.0
        m[ch, 4] = bias + g * (_U[ch] * sc.cast[0] + _W[ch] * sc.cast[1])
    return m


def _render_rows(sc: _Scene, y0: int, y1: int, rng) -> np.ndarray:
    """Rows [y0, y1) of the scene as float32 (rows, W, C), before clipping and rounding."""
    w, rows = sc.w, y1 - y0
    z = np.array(_up_rows(sc.lum, sc.lum_f, y0, y1, w, sc.lum_interp), np.float32, copy=True)
    cmap = None
    sh = sc.shapes
    if sh.pts:
        hit = np.nonzero((np.asarray(sh.ymax) >= y0) & (np.asarray(sh.ymin) < y1))[0]
        if hit.size:
            zmap = np.zeros((rows, w), np.float32)
            tmap = np.ones((rows, w), np.float32)
            cmap = np.zeros((rows, w, 2), np.float32) if not sc.grey else None
            for i in hit:
                pts = [sh.pts[i]]
                cv2.fillPoly(zmap, pts, sh.z[i], cv2.LINE_8, 0, (0, -y0))
                cv2.fillPoly(tmap, pts, sh.tex[i], cv2.LINE_8, 0, (0, -y0))
                if cmap is not None:
                    c = sh.chroma[i]
                    cv2.fillPoly(cmap, pts, (float(c[0]), float(c[1])), cv2.LINE_8, 0, (0, -y0))
            z *= tmap
            z += zmap
            del zmap, tmap
    if sc.tone == "poster":
        return np.take(sc.palette, np.searchsorted(sc.thresholds, z), axis=0)
    if sc.tone == "tanh":  # mid + span * tanh(gain * z) = mid + span - 2 span / (exp(2 gain z) + 1)
        z *= np.float32(2.0 * sc.gain)
        np.minimum(z, np.float32(60.0), out=z)
        cv2.exp(z, z)
        z += np.float32(1.0)
        np.divide(np.float32(-2.0 * sc.span), z, out=z)
        z += np.float32(sc.mid + sc.span)
    else:
        z *= np.float32(sc.span)
        z += np.float32(sc.mid)
    if sc.grain:
        noise = np.empty((rows, w), np.float32)
        cv2.setRNGSeed(int(rng.integers(1, 2**31 - 1)))
        cv2.randn(noise, 0.0, float(sc.grain))
        z += noise
        del noise
    if sc.grey:
        return z[:, :, None]
    if sc.chroma is not None:
        c = np.array(_up_rows(sc.chroma, 2**_COARSE, y0, y1, w), np.float32, copy=True)
        if cmap is not None:
            c += cmap
    else:
        c = cmap if cmap is not None else np.zeros((rows, w, 2), np.float32)
    blown = _up_rows(sc.blown, 2**_COARSE, y0, y1, w) if sc.expo else np.zeros((rows, w), np.float32)
    src = cv2.merge([z, c[:, :, 0], c[:, :, 1], np.ascontiguousarray(blown)])
    del z, c, blown
    return cv2.transform(src, _mix_matrix(sc))


def _render(sc: _Scene, rng, depth: int = 8) -> np.ndarray:
    """The scene as uint8 (or uint16 when depth=16) RGB (H, W, 3), or (H, W) for grey scenes."""
    h, w = sc.h, sc.w
    ch = 1 if sc.grey else 3
    img = np.empty((h, w, ch), np.uint16 if depth == 16 else np.uint8)
    step = _strip_rows(w)
    halo = int(math.ceil(4 * sc.blur)) + 1 if sc.blur else 0
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        if halo:
            ya, yb = max(0, y0 - halo), min(h, y1 + halo)
            f = _render_rows(sc, ya, yb, rng)
            f = cv2.GaussianBlur(f, (0, 0), sc.blur, borderType=cv2.BORDER_REFLECT_101)
            f = f.reshape(yb - ya, w, ch)[y0 - ya : y1 - ya]
        else:
            f = _render_rows(sc, y0, y1, rng).reshape(y1 - y0, w, ch)
        if depth == 16:
            f = np.clip(f, 0, 255) * np.float32(257.0) + np.float32(0.5)
            np.copyto(img[y0:y1], f, casting="unsafe")
        else:  # clip at 0, then convertScaleAbs rounds and saturates at 255
            f = cv2.max(np.ascontiguousarray(f), 0.0)
            img[y0:y1] = cv2.convertScaleAbs(f).reshape(y1 - y0, w, ch)
    return img[:, :, 0] if sc.grey else img


def generate_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A clean procedural photo as (height, width, 3) uint8 RGB (e.g. for benchmarks)."""
    rng = _rng(seed, 0x9E3779B9)
    return _render(_clean_scene(rng, height, width), rng)


# -- encoders -----------------------------------------------------------------------------

def _cv_encode(ext: str, img: np.ndarray, flags: list[int] | None = None) -> bytes:
    ok, enc = cv2.imencode(ext, img, flags or [])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {ext}")
    return enc.tobytes()


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _jpeg(rgb: np.ndarray) -> bytes:
    img = rgb if rgb.ndim == 2 else _bgr(rgb)
    return _cv_encode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def _png(img_bgr_or_grey: np.ndarray) -> bytes:
    return _cv_encode(".png", img_bgr_or_grey)  # OpenCV default compression level


def _pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _tiff(rgb: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb, photometric="rgb", compression="zlib", predictor=True, metadata=None,
                     software=False, rowsperstrip=64)
    return buf.getvalue()


def _alpha(rng, h: int, w: int) -> np.ndarray:
    """Opaque with a soft, partly transparent region (alpha down to ~0.45) over ~1/4 of the frame."""
    fld = _coarse_field(rng, h, w, 3, gradient=2.0)
    thr = np.quantile(fld, 0.75)
    t = np.clip((fld - thr) / (0.5 * float(fld.std())), 0, 1)
    a = 1.0 - 0.55 * t
    a = cv2.resize(a.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)


def _not_an_image_bytes(rng) -> bytes:
    kind = int(rng.integers(3))
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "image", "photo", "mountain", "lake", "sunset", "error"]
    text = " ".join(words[int(i)] for i in rng.integers(0, len(words), int(rng.integers(40, 200))))
    if kind == 0:
        return (f"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body><h1>Not Found</h1>\n"
                f"<p>The requested image was not found on this server. {text}</p></body></html>\n").encode()
    if kind == 1:
        return json.dumps({"error": "AccessDenied", "message": text}).encode() + b"\n"
    return (text + "\n").encode()

