"""Decode an image file to ``(H, W, 3)`` uint8 RGB with the conversions done strip by strip.

:func:`decode_to_rgb` is what :func:`curation.imageio.decode_rgb` calls once the header and
the container are checked. Every input layout ends in the same place: one ``(H, W, 3)`` uint8
array (the EXIF orientation applied), and nothing larger than that array is ever held except
where a decoder can only return a whole image of another layout (listed below).

The conversions (the rules of the whole-image path they replace, kept bit for bit):

* 16-bit -> 8-bit: ``round(v / 257)`` = ``(v + 128) // 257`` (integers, exact);
* float samples: ``clip(rint(v * 255))``;
* alpha over white: ``rint((c / S * a / S + (1 - a / S)) * 255)`` in float32, ``S`` = 65535
  for 16-bit samples, else 255 (the float32 formula of the old path; for 8-bit samples a
  65,536-entry table built from that very formula, so the result is the same by construction);
* TIFF alpha: unassociated alpha is composited once by the rule above (OpenCV's libtiff RGBA
  path had already premultiplied 8-bit unassociated alpha, so it was applied twice); associated
  (premultiplied) alpha: ``c + (1 - a)`` in the same float32 arithmetic;
* grey + alpha: the grey channel composited, then replicated;
* palette: the palette (composited when it carries tRNS alpha) looked up per index;
* CMYK TIFF: libtiff's RGBA rule ``r = (255 - k) * (255 - c) // 255`` (what OpenCV returned);
  CMYK JPEG (Adobe, inverted): OpenCV's rule ``r = k - ((255 - c) * k >> 8)``, in place;
* EXIF orientation: each converted strip is rotated / mirrored and written straight into its
  place in the oriented output.

Every decoder takes a path, the file's bytes (``data``), or a binary file object (an open file
the reader checked and hashed: read from its start, never closed here). PNG, TIFF and CMYK JPEG
read a file object a piece at a time; other JPEGs and WebP read it whole.

Sources, per format:

* **PNG**: parsed here; the IDAT stream is inflated (ISA-L's zlib) a band of rows at a time
  (bounded ``max_length``) and unfiltered by a small C kernel (``decoders.c``, built by
  :mod:`curation.ckernels`), so no PNG layout exists at full size in its own sample type; for
  8-bit RGB this is also faster and smaller than OpenCV's whole-image decode (``benchmarks/decode.py``);
  16-bit colour + alpha is composited by a second kernel in the same float32 arithmetic.
  Interlaced (Adam7) PNGs decode pass by pass, each scattered into the output, then oriented.
  Without a C compiler every PNG takes the whole-image path (same pixels, more memory).
* **TIFF**: strips / tiles read one row of them at a time and decoded by tifffile (chunky or
  planar; uncompressed contiguous data is read a band of rows at a time) for 8/16-bit grey,
  grey + alpha, RGB, RGBA and CMYK (OpenCV misread 16-bit planar RGB; these are the file's
  samples); other TIFFs (palette, YCbCr, float, ...) take the whole-image path.
* **JPEG**: libjpeg-turbo via simplejpeg straight into RGB for YCbCr / grey (1.4x faster than
  OpenCV at 100 MP, same pixels: tested per subsampling, baseline and progressive); CMYK / YCCK
  decoded to CMYK and converted in place by a C kernel (one ``(H, W, 4)`` buffer, shrunk to
  RGB); given an open file instead of bytes (the reader contract's decode), CMYK is fed to
  libjpeg-turbo from it a piece at a time (Pillow's incremental decoder) into that buffer, so
  the file's bytes are not held beside it. OpenCV is the fallback. Orientations 2-4 in place; 5-8 into a ``(W, H, 3)`` array
  while the decoded rows already placed are released (:func:`release_rows`), so the two never
  both exist in full.
* **WebP** and the fallbacks: OpenCV ``IMREAD_UNCHANGED`` (Pillow if OpenCV refuses), then the
  same strip conversion into the output, releasing the decoded rows as they are consumed.

Bad data is an :class:`~curation.imageio.ImageReadError` (``corrupt`` for a damaged stream).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

from curation import reasons
from curation.imageio import ImageHeader, ImageReadError

#: bytes of native samples per strip (a band of rows); temporaries of a strip are a few times this
STRIP_BYTES = 4 << 20
#: input read from the file per step when inflating PNG IDAT data
_READ_BYTES = 1 << 20

#: the C kernels' source, next to this module (compiled on first use by :mod:`curation.ckernels`)
_KERNELS_C = Path(__file__).with_name("decoders.c")


def _unfilter_kernel():
    from curation.ckernels import load_kernel

    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    return load_kernel("png_unfilter", _KERNELS_C, "uhr_png_unfilter", [ptr, i64, i64, i64, ptr], restype=i64)


def _composite16_kernel():
    from curation.ckernels import load_kernel

    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    return load_kernel("composite16", _KERNELS_C, "uhr_composite16", [ptr, i64, i64, i64, i64, ptr], restype=i64)


def _cmyk_kernel():
    from curation.ckernels import load_kernel

    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    return load_kernel("cmyk_to_rgb", _KERNELS_C, "uhr_cmyk_to_rgb", [ptr, i64], restype=i64)


def composite16(raw: np.ndarray, width: int, nch: int, big_endian: bool, associated: bool = False) -> np.ndarray | None:
    """``(rows, width * nch * 2)`` bytes (or a C-contiguous ``(rows, width, nch)`` uint16 array,
    native order) of 16-bit colour + alpha -> ``(rows, width, nch - 1)`` uint8 over white, by the
    C kernel (the float32 rule of :func:`_composite_f32`, bit for bit); None without the kernel."""
    fn, _why = _composite16_kernel()
    if fn is None:
        return None
    raw = np.ascontiguousarray(raw)
    rows = raw.shape[0]
    out = np.empty((rows, width, nch - 1), dtype=np.uint8)
    fn(_ptr(raw), rows * width, nch, int(big_endian), int(associated), _ptr(out))
    return out


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def _strip_rows(row_bytes: int, minimum: int = 16) -> int:
    return max(minimum, STRIP_BYTES // max(1, row_bytes))


def is_file_object(src) -> bool:
    """Whether a decoder's ``path`` argument is a binary file object (read from its start, never
    closed here) rather than a path."""
    return hasattr(src, "read") and hasattr(src, "seek")


def _whole_bytes(src, data: bytes | None) -> bytes:
    """The file's bytes for the decoders that take one buffer: ``data`` when given, else read
    from the path or the file object (from its start)."""
    if data is not None:
        return data
    if is_file_object(src):
        src.seek(0)
        return src.read()
    return Path(src).read_bytes()


# -- sample conversions (one strip) ----------------------------------------------------------------


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Samples of any supported dtype -> uint8 (16-bit: ``(v + 128) // 257``; float: ``rint(v*255)``)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype in (np.float32, np.float64):
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    raise ImageReadError(reasons.UNSUPPORTED_FORMAT, f"unsupported sample type {img.dtype}")


def _alpha_scale(dtype) -> float:
    return 65535.0 if dtype == np.uint16 else 255.0


def _composite_f32(color: np.ndarray, alpha: np.ndarray, associated: bool = False) -> np.ndarray:
    """The whole-image path's float32 rule: ``rint((c/S * a/S + (1 - a/S)) * 255)``, clipped.

    ``color`` (..., C) and ``alpha`` (..., 1) of one dtype; returns uint8 (..., C)."""
    s = _alpha_scale(alpha.dtype)
    a = alpha.astype(np.float32) / s
    c = color.astype(np.float32) / s
    out = (c if associated else c * a) + (1.0 - a)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


_LUT8: dict[bool, np.ndarray] = {}


def _composite_lut8(associated: bool) -> np.ndarray:
    """uint8 table indexed by ``a * 256 + c``: :func:`_composite_f32` of every 8-bit pair."""
    if associated not in _LUT8:
        a, c = np.divmod(np.arange(65536, dtype=np.int64), 256)
        _LUT8[associated] = _composite_f32(c.astype(np.uint8)[:, None], a.astype(np.uint8)[:, None], associated)[:, 0]
    return _LUT8[associated]


def composite_over_white(color: np.ndarray, alpha: np.ndarray, associated: bool = False) -> np.ndarray:
    """Colour ``(..., C)`` with alpha ``(...)`` composited over white -> uint8 ``(..., C)``."""
    if color.dtype == np.uint8 and alpha.dtype == np.uint8:
        idx = alpha.astype(np.uint16)[..., None] << 8
        idx = idx | color
        return _composite_lut8(associated)[idx]
    return _composite_f32(color, alpha[..., None], associated)


def cmyk_to_rgb_libtiff(cmyk: np.ndarray) -> np.ndarray:
    """8-bit CMYK ``(..., 4)`` -> RGB uint8 ``(..., 3)``: ``(255 - k) * (255 - c) // 255`` (libtiff)."""
    k = 255 - cmyk[..., 3:4].astype(np.uint16)
    return (k * (255 - cmyk[..., :3].astype(np.uint16)) // 255).astype(np.uint8)


#: layouts a strip can have: grey, grey+alpha, rgb, rgb+alpha (``_assoc``: premultiplied), cmyk
KINDS = ("grey", "ga", "ga_assoc", "rgb", "rgba", "rgba_assoc", "cmyk")


def strip_to_rgb(band: np.ndarray, kind: str, bgr: bool = False) -> np.ndarray:
    """One strip of native samples -> ``(rows, W, 3)`` uint8 RGB.

    ``band``: ``(rows, W)`` for ``grey``, else ``(rows, W, C)``, channels in RGB(A) order, or
    BGR(A) when ``bgr`` (OpenCV's order); uint8, uint16 or float."""
    if kind == "grey":
        g = to_uint8(band if band.ndim == 2 else band[..., 0])
        return np.repeat(g[..., None], 3, axis=2)
    if kind in ("ga", "ga_assoc", "rgba", "rgba_assoc") and band.dtype == np.uint16 and band.flags.c_contiguous:
        out = composite16(band, band.shape[1], band.shape[2], False, kind.endswith("_assoc"))
        if out is not None:
            out = np.repeat(out, 3, axis=2) if kind.startswith("ga") else out
            return out[..., ::-1] if bgr else out
    if kind in ("ga", "ga_assoc"):
        g = composite_over_white(band[..., 0:1], band[..., 1], associated=kind == "ga_assoc")
        return np.repeat(g, 3, axis=2)
    if kind == "cmyk":
        out = cmyk_to_rgb_libtiff(band)
    elif kind in ("rgba", "rgba_assoc"):
        out = composite_over_white(band[..., :3], band[..., 3], associated=kind == "rgba_assoc")
    elif kind == "rgb":
        out = to_uint8(band[..., :3])
    else:
        raise ValueError(f"unknown strip kind {kind!r}")
    return out[..., ::-1] if bgr else out


# -- orientation ---------------------------------------------------------------------------------


def oriented_shape(h: int, w: int, orientation: int) -> tuple[int, int]:
    """``(height, width)`` after EXIF ``orientation`` (5-8 swap the sides)."""
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation 1-8 applied to a whole (small) array, as the old path did."""
    if orientation == 2:
        return cv2.flip(img, 1)
    if orientation == 3:
        return cv2.rotate(img, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(img, 0)
    if orientation == 5:
        return cv2.flip(cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE), 1)
    if orientation == 6:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE), 1)
    if orientation == 8:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


def place(out: np.ndarray, rgb: np.ndarray, y0: int, src_h: int, orientation: int) -> None:
    """Write strip ``rgb`` (source rows ``y0 .. y0 + len(rgb)`` of a ``src_h``-row image) into
    the oriented output ``out`` (the strip is oriented, then lands in a row or column band)."""
    y1 = y0 + rgb.shape[0]
    o = orient(rgb, orientation)
    if orientation in (3, 4):
        out[src_h - y1 : src_h - y0] = o
    elif orientation in (5, 8):
        out[:, y0:y1] = o
    elif orientation in (6, 7):
        out[:, src_h - y1 : src_h - y0] = o
    else:
        out[y0:y1] = o


_MADV_DONTNEED = 4  # Linux
_madvise = None


def release_rows(arr: np.ndarray, y0: int, y1: int) -> bool:
    """Give the memory pages of rows ``y0 .. y1`` of the C-contiguous array ``arr`` back to the
    OS (Linux ``madvise(MADV_DONTNEED)``; only pages wholly inside the array; rows above ``y0``
    must be consumed as well): they read as zeros afterwards.
    For a decoded source this module owns and has consumed up to ``y1``: the output grows
    while the source shrinks, so a whole-image conversion never holds both in full. Returns
    whether anything was released (False off Linux or for a non-contiguous array)."""
    y0, y1 = max(0, y0), min(y1, arr.shape[0])  # never past the array's own bytes
    if not arr.flags.c_contiguous or not sys.platform.startswith("linux") or y1 <= y0:
        return False
    if not _madvise_fn():
        return False
    page = os.sysconf("SC_PAGE_SIZE")
    row, base = arr.strides[0], arr.ctypes.data
    # rows before y0 are consumed too (callers go top down): the page holding row y0's first
    # byte may go, but never a page that begins before the array
    start = max(-(-base // page) * page, (base + y0 * row) // page * page)
    end = (base + y1 * row) // page * page
    return end > start and _madvise(start, end - start, _MADV_DONTNEED) == 0


_MADV_NOHUGEPAGE = 15  # Linux


def _madvise_fn():
    global _madvise
    if _madvise is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).madvise
            fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
            _madvise = fn
        except (OSError, AttributeError):
            _madvise = False
    return _madvise


def small_pages(arr: np.ndarray) -> np.ndarray:
    """Ask Linux to back ``arr`` with 4 KiB pages, not transparent huge pages (numpy asks for
    huge pages on large arrays): an output filled column band by column band (orientations
    5-8) touches every row at once, and with 2 MiB pages that commits the whole array at the
    first band. Returns ``arr``."""
    fn = _madvise_fn() if sys.platform.startswith("linux") else None
    if fn and arr.flags.c_contiguous and arr.nbytes:
        page = os.sysconf("SC_PAGE_SIZE")
        start = -(-arr.ctypes.data // page) * page
        end = (arr.ctypes.data + arr.nbytes) // page * page
        if end > start:
            fn(start, end - start, _MADV_NOHUGEPAGE)
    return arr


def _orient_whole(img: np.ndarray, orientation: int) -> np.ndarray:
    """Orient a whole RGB array this module owns: 2-4 in place (a strip of scratch), 5-8 into a
    new array while the source's consumed rows are released (:func:`release_rows`)."""
    h, w = img.shape[:2]
    if orientation in (1, 0) or orientation > 8:
        return img
    rows = _strip_rows(img[0].nbytes)
    if orientation == 2:
        for y in range(0, h, rows):
            img[y : y + rows] = img[y : y + rows, ::-1].copy()
        return img
    if orientation in (3, 4):
        flip_x = orientation == 3
        half = h // 2
        for y0 in range(0, half, rows):
            y1 = min(y0 + rows, half)
            top = img[y0:y1].copy()
            bottom = img[h - y1 : h - y0]
            img[y0:y1] = bottom[::-1, ::-1] if flip_x else bottom[::-1]
            img[h - y1 : h - y0] = top[::-1, ::-1] if flip_x else top[::-1]
        if flip_x and h % 2:
            img[half] = img[half, ::-1].copy()
        return img
    out = small_pages(np.empty(oriented_shape(h, w, orientation) + img.shape[2:], dtype=img.dtype))
    for y in range(0, h, rows):
        place(out, img[y : y + rows], y, h, orientation)
        release_rows(img, y, y + rows)
    return out


def _convert_whole(img: np.ndarray, kind: str, bgr: bool, orientation: int) -> np.ndarray:
    """A whole decoded array this module owns -> oriented RGB uint8, strip by strip: in place
    where it can be, else into a new array while the consumed source rows are released."""
    h, w = img.shape[:2]
    if kind == "rgb" and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3:
        if bgr:
            rows = _strip_rows(img[0].nbytes)
            for y in range(0, h, rows):
                cv2.cvtColor(img[y : y + rows], cv2.COLOR_BGR2RGB, dst=img[y : y + rows])
        return _orient_whole(img, orientation)
    out = np.empty(oriented_shape(h, w, orientation) + (3,), dtype=np.uint8)
    if orientation in (5, 6, 7, 8):
        small_pages(out)
    rows = _strip_rows(img[0].nbytes)
    for y in range(0, h, rows):
        place(out, strip_to_rgb(img[y : y + rows], kind, bgr), y, h, orientation)
        release_rows(img, y, y + rows)
    return out


def _kind_of_opencv(img: np.ndarray) -> str:
    if img.ndim == 2 or img.shape[2] == 1:
        return "grey"
    if img.shape[2] == 4:
        return "rgba"
    if img.shape[2] == 3:
        return "rgb"
    raise ImageReadError(reasons.UNSUPPORTED_FORMAT, f"{img.shape[2]} samples per pixel")


def _decode_with_pillow(path, data: bytes | None = None) -> np.ndarray:
    """Fallback for what OpenCV refuses (e.g. some tiled TIFFs); returns BGR(A) like OpenCV."""
    import io

    from PIL import Image

    if data is None and is_file_object(path):
        path.seek(0)
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                arr = np.asarray(im.convert("RGBA"))
                return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
            arr = np.asarray(im.convert("RGB"))
            return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    except Exception as exc:
        raise ImageReadError(reasons.CORRUPT, f"decode failed: {exc}") from exc


def decode_whole(path, orientation: int, data: bytes | None = None) -> np.ndarray:
    """The general path: OpenCV ``IMREAD_UNCHANGED`` (Pillow if it refuses), converted strip-wise."""
    buf = np.frombuffer(_whole_bytes(path, data), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    del buf
    if img is None:
        img = _decode_with_pillow(path, data)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return _convert_whole(img, _kind_of_opencv(img), True, orientation)


# -- JPEG ------------------------------------------------------------------------------------------


def decode_jpeg(path, orientation: int, data: bytes | None = None) -> np.ndarray:
    """JPEG straight into RGB with libjpeg-turbo via simplejpeg (the fastest decoder measured,
    OpenCV's pixels: ``benchmarks/decode.py``, tests): YCbCr / grey / RGB files decode to RGB;
    CMYK / YCCK decode to CMYK and become RGB in place by OpenCV's rule
    (:func:`cmyk_to_rgb_in_place`). OpenCV for anything simplejpeg refuses.

    A CMYK / YCCK JPEG given as a file object (no ``data``) is decoded from it by libjpeg-turbo
    through Pillow's incremental decoder (:func:`decode_jpeg_cmyk_stream`): the file is fed a
    piece at a time, so its bytes are never held beside the CMYK buffer."""
    if data is None and is_file_object(path):
        img = decode_jpeg_cmyk_stream(path)
        if img is not None:
            return _orient_whole(img, orientation)
    data = _whole_bytes(path, data)
    img = None
    try:
        import simplejpeg

        space = simplejpeg.decode_jpeg_header(data)[2]
        if space in ("Gray", "YCbCr", "RGB"):
            img = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)
        elif space in ("CMYK", "YCCK"):
            img = cmyk_to_rgb_in_place(simplejpeg.decode_jpeg(data, colorspace="CMYK", fastdct=False, fastupsample=False))
    except (ImportError, ValueError):
        img = None
    if img is None:
        return decode_opencv_rgb(path, orientation, data)
    return _orient_whole(img, orientation)


def decode_jpeg_cmyk_stream(fh) -> np.ndarray | None:
    """``(H, W, 3)`` RGB (not oriented) of a CMYK / YCCK JPEG read from the binary file object
    ``fh`` a piece at a time, or None when it is no such JPEG (the caller decodes it otherwise).

    libjpeg-turbo (Pillow's build, Pillow's incremental decoder, as ``Image.load`` drives it)
    writes the CMYK samples as the file stores them (Adobe, inverted: rawmode ``CMYK``, not
    Pillow's ``CMYK;I``) straight into an array this module owns, which
    :func:`cmyk_to_rgb_in_place` then shrinks to RGB: the peak is that one ``(H, W, 4)`` buffer
    (simplejpeg's path holds the file's bytes beside it). Same libjpeg settings as simplejpeg's
    path (accurate integer IDCT, fancy upsampling), same pixels (tests)."""
    from PIL import Image

    fh.seek(0)
    try:
        with Image.open(fh, formats=["JPEG"]) as im:
            if im.mode != "CMYK" or len(im.tile) != 1 or im.tile[0][0] != "jpeg":
                return None
            w, h = im.size
            _name, _extents, offset, args = im.tile[0][:4]
            jpegmode = args[1] if isinstance(args, tuple) and len(args) > 1 else ""
    except Exception:
        return None
    cmyk = np.empty((h, w, 4), np.uint8)
    target = Image.frombuffer("CMYK", (w, h), cmyk, "raw", "CMYK", 0, 1)  # shares cmyk's memory
    decoder = Image._getdecoder("CMYK", "jpeg", ("CMYK", jpegmode), ())
    try:
        decoder.setimage(target.im, (0, 0, w, h))
        fh.seek(offset)
        pending = b""
        while True:  # as ImageFile.load feeds a decoder
            piece = fh.read(1 << 16)
            if not piece:
                raise ImageReadError(reasons.TRUNCATED, "JPEG data ends before the last scanline")
            pending += piece
            n, err = decoder.decode(pending)
            if n < 0:
                if err < 0:
                    raise ImageReadError(reasons.CORRUPT, f"JPEG decode: libjpeg error {err}")
                break
            pending = pending[n:]
    finally:
        decoder.cleanup()
    del decoder, target  # nothing of Pillow's points into cmyk when it is shrunk (realloc)
    return cmyk_to_rgb_in_place(cmyk)


def cmyk_to_rgb_in_place(cmyk: np.ndarray) -> np.ndarray:
    """``(H, W, 4)`` uint8 CMYK as a JPEG stores it (Adobe, inverted) -> ``(H, W, 3)`` RGB by
    OpenCV's rule ``v = k - ((255 - v) * k >> 8)``, written strip by strip into the front of the
    same buffer (a strip's RGB ends before the next strip's CMYK begins), which is then shrunk:
    no second full-size array. A buffer it does not own is converted into a new array."""
    h, w = cmyk.shape[:2]
    if not (cmyk.flags.owndata and cmyk.flags.c_contiguous):
        out = np.empty((h, w, 3), np.uint8)
        for y in range(0, h, _strip_rows(w * 4)):
            out[y : y + _strip_rows(w * 4)] = _cmyk_jpeg_rule(cmyk[y : y + _strip_rows(w * 4)])
        return out
    fn, _why = _cmyk_kernel()
    if fn is not None:  # one forward pass in C
        fn(_ptr(cmyk), h * w)
    else:
        flat = cmyk.reshape(-1)
        rows = _strip_rows(w * 4)
        for y in range(0, h, rows):
            n = min(rows, h - y)
            rgb = _cmyk_jpeg_rule(cmyk[y : y + n].copy())
            flat[y * w * 3 : (y + n) * w * 3] = rgb.reshape(-1)
        del flat
    cmyk.resize(h * w * 3, refcheck=False)  # realloc: the tail is given back, the front kept
    return cmyk.reshape(h, w, 3)


def _cmyk_jpeg_rule(cmyk: np.ndarray) -> np.ndarray:
    k = cmyk[..., 3:4].astype(np.uint16)
    return (k - (((255 - cmyk[..., :3].astype(np.uint16)) * k) >> 8)).astype(np.uint8)


def decode_opencv_rgb(path, orientation: int, data: bytes | None = None) -> np.ndarray:
    """OpenCV straight into RGB (libjpeg-turbo converts grey and CMYK; EXIF left to us)."""
    buf = np.frombuffer(_whole_bytes(path, data), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)  # EXIF applied by us
    del buf
    if img is None:
        return decode_whole(path, orientation, data)
    return _orient_whole(img, orientation)


# -- PNG -------------------------------------------------------------------------------------------


class _PngInfo:
    """What the chunks before the first IDAT say (PNG spec 11.2)."""

    def __init__(self) -> None:
        self.width = self.height = self.depth = self.color_type = self.interlace = 0
        self.palette: np.ndarray | None = None  # (N, 3) uint8
        self.trns: bytes | None = None

    @property
    def channels(self) -> int:
        return {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[self.color_type]

    @property
    def row_bytes(self) -> int:
        return (self.width * self.channels * self.depth + 7) // 8

    @property
    def bpp(self) -> int:
        return max(1, self.channels * self.depth // 8)


def _read_png_head(fh) -> tuple[_PngInfo, int]:
    """Read chunks up to the first IDAT: ``(info, length of that IDAT)``, ``fh`` at its data."""
    if fh.read(8) != b"\x89PNG\r\n\x1a\n":
        raise ImageReadError(reasons.NOT_AN_IMAGE, "PNG signature")
    info = _PngInfo()
    while True:
        hdr = fh.read(8)
        if len(hdr) < 8:
            raise ImageReadError(reasons.TRUNCATED, "PNG has no IDAT")
        length, ctype = struct.unpack(">I4s", hdr)
        if ctype == b"IDAT":
            break
        body = fh.read(length)
        fh.read(4)  # CRC
        if ctype == b"IHDR":
            (info.width, info.height, info.depth, info.color_type, _comp, _filt, info.interlace) = struct.unpack(
                ">IIBBBBB", body[:13])
        elif ctype == b"PLTE":
            info.palette = np.frombuffer(body[: len(body) // 3 * 3], np.uint8).reshape(-1, 3)
        elif ctype == b"tRNS":
            info.trns = body
        elif ctype == b"IEND":
            raise ImageReadError(reasons.CORRUPT, "PNG has no IDAT")
    depths = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # PNG spec 11.2.2
    if info.depth not in depths.get(info.color_type, ()) or info.width == 0 or info.height == 0:
        raise ImageReadError(reasons.CORRUPT, f"PNG IHDR: colour type {info.color_type} at bit depth {info.depth}, "
                                              f"{info.width}x{info.height}")
    if info.color_type == 3 and info.palette is None:
        raise ImageReadError(reasons.CORRUPT, "PNG palette image without PLTE")
    return info, length


def _idat_pieces(fh, left: int):
    """The zlib stream of consecutive IDAT chunks (the first has ``left`` bytes to go), in pieces
    of at most ``_READ_BYTES``."""
    while True:
        while left > 0:
            piece = fh.read(min(left, _READ_BYTES))
            if not piece:
                raise ImageReadError(reasons.TRUNCATED, "PNG IDAT data ends early")
            left -= len(piece)
            yield piece
        fh.read(4)  # CRC
        hdr = fh.read(8)
        if len(hdr) < 8:
            return
        left, ctype = struct.unpack(">I4s", hdr)
        if ctype != b"IDAT":
            return


def _unpack_bits(x: np.ndarray, width: int, depth: int) -> np.ndarray:
    """``(rows, row_bytes)`` packed 1/2/4-bit samples -> ``(rows, width)`` uint8 values."""
    bits = np.unpackbits(x, axis=1)[:, : width * depth].reshape(x.shape[0], width, depth)
    weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
    return (bits * weights).sum(axis=2, dtype=np.uint8)


class _PngConverter:
    """Unfiltered scanlines of one PNG -> RGB strips with the old OpenCV/libpng semantics."""

    def __init__(self, info: _PngInfo):
        self.info = info
        ct, d = info.color_type, info.depth
        self.lut = None
        if ct == 3:
            pal = info.palette
            lut = np.zeros((256, 3), np.uint8)
            lut[: len(pal)] = pal[:256]
            if info.trns is not None:  # libpng tRNS -> alpha; entries past tRNS are opaque
                alpha = np.full(256, 255, np.uint8)
                t = np.frombuffer(info.trns[:256], np.uint8)
                alpha[: len(t)] = t
                lut = composite_over_white(lut, alpha)
            self.lut = lut
        self.key = None
        if ct == 2 and info.trns is not None and len(info.trns) >= 6:  # RGB colour key -> alpha 0
            self.key = np.array(struct.unpack(">HHH", info.trns[:6]), dtype=np.uint16 if d == 16 else np.uint8)

    def samples(self, lines: np.ndarray, w: int) -> np.ndarray:
        """``(rows, row_bytes)`` unfiltered bytes of rows ``w`` pixels wide -> ``(rows, w, C)``
        samples (uint8 or uint16)."""
        info = self.info
        c, d = info.channels, info.depth
        if d == 16:
            return lines.view(">u2").reshape(lines.shape[0], w, c).astype(np.uint16)
        if d == 8:
            return lines.reshape(lines.shape[0], w, c)
        v = _unpack_bits(lines, w, d)
        if info.color_type == 0:  # libpng's expand_gray_1_2_4_to_8 replicates the bits
            v = v * np.uint8({1: 255, 2: 85, 4: 17}[d])
        return v[..., None]

    def rgb(self, lines: np.ndarray, w: int) -> np.ndarray:
        """``(rows, row_bytes)`` unfiltered bytes of rows ``w`` pixels wide -> ``(rows, w, 3)`` RGB."""
        ct = self.info.color_type
        if ct in (4, 6) and self.info.depth == 16:  # straight from the big-endian bytes
            out = composite16(lines, w, self.info.channels, True)
            if out is not None:
                return np.repeat(out, 3, axis=2) if ct == 4 else out
        s = self.samples(lines, w)
        if ct == 3:
            return self.lut[s[..., 0]]
        if ct == 0:
            return strip_to_rgb(s[..., 0], "grey")
        if ct == 4:
            return strip_to_rgb(s, "ga")
        if ct == 6:
            return strip_to_rgb(s, "rgba")
        if self.key is not None:
            opaque = np.iinfo(s.dtype).max
            alpha = np.where((s == self.key).all(axis=2), 0, opaque).astype(s.dtype)
            return composite_over_white(s, alpha)
        return strip_to_rgb(s, "rgb")


def decode_png(path, orientation: int, data: bytes | None = None) -> np.ndarray:
    """Row-band PNG decode (inflate + C unfilter + strip conversion) into oriented RGB.

    ``path``: a path or a binary file object (read from its start, not closed); ``data``: the
    file's bytes instead, when the caller holds them."""
    import io

    borrowed = data is None and is_file_object(path)
    if borrowed:
        path.seek(0)
    fh = io.BytesIO(data) if data is not None else path if borrowed else open(path, "rb")
    try:
        info, idat_len = _read_png_head(fh)
        fn, _why = _unfilter_kernel()
        if fn is None:
            if not borrowed:
                fh.close()
            if info.color_type == 2 and info.depth == 8 and info.trns is None:  # no conversion to do
                return decode_opencv_rgb(path, orientation, data)
            return decode_whole(path, orientation, data)
        return _decode_png_rows(fh, idat_len, info, orientation, fn)
    finally:
        if not borrowed:
            fh.close()


def _inflater():
    """``(module, its error)`` for inflating: ISA-L's zlib (``isal``, about 2x the standard
    library's zlib here: ``benchmarks/decode.py``), else :mod:`zlib`. Inflate is lossless, so
    both give the same bytes."""
    try:
        from isal import isal_zlib

        return isal_zlib, isal_zlib.error
    except ImportError:  # pragma: no cover - isal is in the lock
        return zlib, zlib.error


#: Adam7 passes (PNG spec 8.2): first column, first row, column step, row step
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class _Inflate:
    """The IDAT zlib stream, inflated on demand into caller-sized pieces (bounded memory)."""

    def __init__(self, fh, idat_len: int):
        module, self.error = _inflater()
        self.z = module.decompressobj()
        self.pieces = _idat_pieces(fh, idat_len)
        self.pending = b""

    def fill(self, band: np.ndarray, need: int, where: str) -> None:
        """Fill ``band[:need]`` with the next ``need`` inflated bytes or raise ``corrupt``."""
        got = 0
        while got < need:
            if not self.pending:
                self.pending = next(self.pieces, b"")
                if not self.pending:
                    raise ImageReadError(reasons.CORRUPT, f"PNG image data ends {where}")
            chunk = self.z.decompress(self.pending, need - got)
            self.pending = self.z.unconsumed_tail
            band[got : got + len(chunk)] = np.frombuffer(chunk, np.uint8)
            got += len(chunk)
            if self.z.eof and got < need:
                raise ImageReadError(reasons.CORRUPT, f"PNG zlib stream ends {where}")


def _png_scanlines(zin: _Inflate, unfilter, info: _PngInfo, width: int, height: int, what: str = ""):
    """``(y, (rows, row_bytes) unfiltered bytes)`` bands of a ``width`` x ``height`` (sub-)image."""
    rb = (width * info.channels * info.depth + 7) // 8
    rows = _strip_rows(rb + 1)
    band = np.empty(min(rows, height) * (rb + 1), dtype=np.uint8)
    prev = np.zeros(rb, dtype=np.uint8)
    for y in range(0, height, rows):
        n = min(rows, height - y)
        need = n * (rb + 1)
        zin.fill(band, need, f"at row {y}{what} of {height}")
        bad = unfilter(_ptr(band), n, rb, info.bpp, _ptr(prev))
        if bad:
            raise ImageReadError(reasons.CORRUPT, f"PNG row {y + bad - 1}{what}: filter type out of range")
        yield y, band[:need].reshape(n, rb + 1)[:, 1:]


def _decode_png_rows(fh, idat_len: int, info: _PngInfo, orientation: int, unfilter) -> np.ndarray:
    h, w = info.height, info.width
    conv = _PngConverter(info)
    zin = _Inflate(fh, idat_len)
    try:
        if not info.interlace:
            out = np.empty(oriented_shape(h, w, orientation) + (3,), dtype=np.uint8)
            for y, lines in _png_scanlines(zin, unfilter, info, w, h):
                place(out, conv.rgb(lines, w), y, h, orientation)
            return out
        # Adam7: each pass is a small image of its own, scattered into place; then the orientation
        out = np.empty((h, w, 3), dtype=np.uint8)
        for k, (x0, y0, dx, dy) in enumerate(_ADAM7):
            pw, ph = -(-(w - x0) // dx), -(-(h - y0) // dy)
            if pw <= 0 or ph <= 0:  # an empty pass has no scanlines at all
                continue
            for y, lines in _png_scanlines(zin, unfilter, info, pw, ph, f" of Adam7 pass {k + 1}"):
                out[y0 + y * dy : y0 + (y + lines.shape[0]) * dy : dy, x0::dx] = conv.rgb(lines, pw)
        return _orient_whole(out, orientation)
    except zin.error as exc:
        raise ImageReadError(reasons.CORRUPT, f"PNG image data: {exc}") from exc


# -- TIFF ------------------------------------------------------------------------------------------


def _tiff_kind(page) -> str | None:
    """The strip kind of a TIFF page this module decodes itself, or None (whole-image path)."""
    spp = int(page.samplesperpixel)
    if page.dtype not in (np.uint8, np.uint16):
        return None
    if page.is_subsampled or page.imagedepth != 1 or int(page.bitspersample) not in (8, 16):
        return None
    extras = tuple(int(e) for e in page.extrasamples)
    photometric = int(page.photometric)
    if photometric == 1:  # MINISBLACK
        if spp == 1:
            return "grey"
        if spp == 2:
            return "ga_assoc" if extras[:1] == (1,) else "ga"
    elif photometric == 2:  # RGB
        if spp == 3:
            return "rgb"
        if spp == 4:
            return "rgba_assoc" if extras[:1] == (1,) else "rgba"
    elif photometric == 5 and spp == 4 and not extras and page.dtype == np.uint8:  # CMYK
        return "cmyk" if int(getattr(page, "inkset", 1) or 1) == 1 else None
    return None


def decode_tiff(path, orientation: int, data: bytes | None = None) -> np.ndarray:
    """Strips / tiles of a TIFF converted as they are read; odd layouts take :func:`decode_whole`.

    ``path``: a path or a binary file object (read from its start, not closed); ``data``: the
    file's bytes instead, when the caller holds them."""
    import io

    import tifffile

    try:
        if data is not None:
            tf = tifffile.TiffFile(io.BytesIO(data))
        elif is_file_object(path):  # borrowed: tifffile neither closes nor copies it
            tf = tifffile.TiffFile(path, name="image.tif", offset=0)
        else:
            tf = tifffile.TiffFile(path)
    except Exception as exc:
        raise ImageReadError(reasons.UNREADABLE, f"TIFF structure: {exc}") from exc
    try:
        page = tf.pages[0]
        kind = _tiff_kind(page)
        if kind is None and int(page.photometric) == 1 and int(page.samplesperpixel) == 2:
            img = np.asarray(page.asarray())  # grey + alpha OpenCV would drop: tifffile, whole
            if int(page.planarconfig) == 2:
                img = np.moveaxis(img, 0, -1)
            assoc = tuple(int(e) for e in page.extrasamples)[:1] == (1,)
            return _convert_whole(img, "ga_assoc" if assoc else "ga", False, orientation)
        if kind is None:
            tf.close()
            return decode_whole(path, orientation, data)
        h, w, spp = int(page.imagelength), int(page.imagewidth), int(page.samplesperpixel)
        out = np.empty(oriented_shape(h, w, orientation) + (3,), dtype=np.uint8)
        try:
            for y, band in _tiff_bands(tf, page, h, w, spp):
                place(out, strip_to_rgb(band if spp > 1 else band[..., 0], kind), y, h, orientation)
        except ImageReadError:
            raise
        except Exception as exc:
            raise ImageReadError(reasons.CORRUPT, f"TIFF data: {exc}") from exc
        return out
    finally:
        tf.close()


def _tiff_bands(tf, page, h: int, w: int, spp: int):
    """``(y0, (rows, W, spp) samples)`` bands of at least a strip's / tile row's height."""
    dtype = np.dtype(page.dtype).newbyteorder(tf.byteorder)
    row_bytes = w * spp * dtype.itemsize
    planar = spp > 1 and int(page.planarconfig) == 2
    if int(page.compression) == 1 and not (page.is_tiled or planar) and page.is_contiguous and int(page.fillorder) == 1:
        offset = int(page.dataoffsets[0])  # uncompressed, one block: read a band of rows at a time
        fh = tf.filehandle
        rows = _strip_rows(row_bytes)
        for y in range(0, h, rows):
            n = min(rows, h - y)
            fh.seek(offset + y * row_bytes)
            raw = fh.read(n * row_bytes)
            if len(raw) < n * row_bytes:
                raise ImageReadError(reasons.TRUNCATED, f"TIFF data ends at row {y}")
            yield y, np.frombuffer(raw, dtype).reshape(n, w, spp).astype(page.dtype, copy=False)
        return
    if page.is_tiled:
        seg_h, seg_w = int(page.tilelength), int(page.tilewidth)
    else:
        seg_h, seg_w = max(1, min(int(page.rowsperstrip or h), h)), w
    across, down = -(-w // seg_w), -(-h // seg_h)
    per_plane = across * down
    offsets, counts = page.dataoffsets, page.databytecounts
    if len(offsets) < (spp if planar else 1) * per_plane or len(counts) < len(offsets):
        raise ImageReadError(reasons.CORRUPT, f"TIFF has {len(offsets)} strips/tiles, its layout needs "
                                              f"{(spp if planar else 1) * per_plane}")
    args: dict = {"_fullsize": bool(page.is_tiled)}
    if int(page.compression) in (6, 7, 34892, 33007):  # JPEG inside TIFF (as tifffile's segments())
        args.update(jpegtables=page.jpegtables, jpegheader=page.keyframe.jpegheader)
    fh = tf.filehandle
    rows = max(seg_h, (_strip_rows(row_bytes) // seg_h) * seg_h)
    band = np.zeros((min(rows, -(-h // seg_h) * seg_h), w, spp), dtype=page.dtype)
    y0 = 0
    for sy in range(down):  # one row of strips / tiles, every plane, into the band
        top = sy * seg_h
        n, ly = min(seg_h, h - top), top - y0
        for plane in range(spp if planar else 1):
            for sx in range(across):
                k = plane * per_plane + sy * across + sx
                left = sx * seg_w
                cols = min(seg_w, w - left)
                dst = band[ly : ly + n, left : left + cols, plane : plane + 1] if planar else band[ly : ly + n, left : left + cols]
                if not counts[k] or not offsets[k]:  # an empty strip / tile: zeros, as tifffile
                    dst[...] = 0
                    continue
                fh.seek(offsets[k])
                seg = page.decode(fh.read(counts[k]), k, **args)[0]
                dst[...] = seg.reshape(seg.shape[-3], seg.shape[-2], seg.shape[-1])[:n, :cols]
        if ly + n >= band.shape[0] or top + n >= h:
            yield y0, band[: ly + n]
            y0 = top + n


# -- entry point -----------------------------------------------------------------------------------


def decode_to_rgb(path, header: ImageHeader, data: bytes | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of the file, EXIF orientation applied; ``H, W`` are the oriented
    sides. ``path``: a path, or a binary file object (an open file the caller checked: read from
    its start, never closed here; PNG and TIFF decode from it a band at a time, the other
    formats read it whole); ``data``: the file's bytes, when the caller holds them. Raises
    :class:`ImageReadError`."""
    o = header.orientation
    if header.format == "png":
        return decode_png(path, o, data)
    if header.format == "jpeg":
        return decode_jpeg(path, o, data)
    if header.format == "tiff":
        return decode_tiff(path, o, data)
    return decode_whole(path, o, data)
