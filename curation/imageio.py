"""Image IO: header probe, structural checks and decode to 8-bit RGB with OpenCV.

Every failure is a :class:`ImageReadError` with a ``reason`` taken from
:mod:`curation.reasons`, so a caller records it instead of crashing.

* :func:`probe` reads only the header (format, width, height, EXIF orientation) and
  enforces the decompression-bomb pixel limit *before* any pixel is decoded.
* :func:`check_complete` finds truncated files from their container structure
  (PNG IEND chunk, JPEG EOI marker, WebP RIFF length, TIFF strip/tile extents), because
  decoders often return a half-grey image for a truncated file without an error.
* :func:`decode_rgb` returns an ``(H, W, 3)`` uint8 RGB array: EXIF orientation applied,
  16-bit scaled to 8-bit (round(v / 257)), greyscale expanded, alpha composited over
  white, CMYK converted by the JPEG decoder.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from curation import reasons
from curation.hashing import sha256_file

Image.MAX_IMAGE_PIXELS = None  # our own limit (probe) replaces Pillow's warning/error

FORMATS = ("png", "jpeg", "tiff", "webp")
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
_EXIF_ORIENTATION = 0x0112


class ImageReadError(Exception):
    """An image that cannot be used; ``reason`` is one of :mod:`curation.reasons`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: format, size in pixels (after EXIF rotation), orientation tag."""

    format: str
    width: int
    height: int
    orientation: int
    mode: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


#: image id source: sha256 of the file bytes, hex (full 64 chars; ids use the first 16+)
content_hash = sha256_file


def image_id_from_hash(sha256_hex: str) -> str:
    return sha256_hex[:20]


def sniff_format(head: bytes) -> str | None:
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def probe(path: str | os.PathLike, max_pixels: int) -> ImageHeader:
    """Read format and size from the header only; raise if not an image or too many pixels."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise ImageReadError(reasons.UNREADABLE, str(exc)) from exc
    fmt = sniff_format(head)
    if fmt is None:
        raise ImageReadError(reasons.NOT_AN_IMAGE, "unknown magic bytes")
    try:
        with Image.open(path) as im:
            w, h = im.size
            mode = im.mode
            frames = int(getattr(im, "n_frames", 1) or 1)
            orientation = 1
            try:
                orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            except Exception:  # malformed EXIF: treat as no rotation
                orientation = 1
    except Exception as exc:  # Pillow refuses the header
        raise ImageReadError(reasons.UNREADABLE, f"header: {exc}") from exc
    if w <= 0 or h <= 0:
        raise ImageReadError(reasons.UNREADABLE, f"bad size {w}x{h}")
    if frames > 1:
        raise ImageReadError(reasons.ANIMATED, f"{frames} frames")
    if w * h > max_pixels:
        raise ImageReadError(reasons.TOO_MANY_PIXELS, f"{w}x{h} = {w * h} > {max_pixels}")
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return ImageHeader(fmt, w, h, orientation, mode)


def check_complete(path: str | os.PathLike, fmt: str) -> None:
    """Raise ``truncated`` if the container is cut short (cheap: reads the tail / chunk table)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        if fmt == "png":
            _check_png(fh, size)
        elif fmt == "jpeg":
            fh.seek(max(0, size - 4096))
            tail = fh.read()
            if b"\xff\xd9" not in tail:
                raise ImageReadError(reasons.TRUNCATED, "JPEG has no EOI marker")
        elif fmt == "webp":
            fh.seek(4)
            (riff_len,) = struct.unpack("<I", fh.read(4))
            if riff_len + 8 > size:
                raise ImageReadError(reasons.TRUNCATED, f"RIFF declares {riff_len + 8} bytes, file has {size}")
        elif fmt == "tiff":
            _check_tiff(path, size)


def _check_png(fh, size: int) -> None:
    pos = 8
    fh.seek(pos)
    while True:
        hdr = fh.read(8)
        if len(hdr) < 8:
            raise ImageReadError(reasons.TRUNCATED, "PNG ends before IEND")
        length, ctype = struct.unpack(">I4s", hdr)
        if ctype == b"IEND":
            return
        pos += 12 + length
        if pos > size:
            raise ImageReadError(reasons.TRUNCATED, f"PNG chunk {ctype!r} runs past end of file")
        fh.seek(pos)


def _check_tiff(path, size: int) -> None:
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile is in the lock
        return
    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
    except Exception as exc:
        raise ImageReadError(reasons.UNREADABLE, f"TIFF structure: {exc}") from exc
    if ends and max(ends) > size:
        raise ImageReadError(reasons.TRUNCATED, f"TIFF data runs to byte {max(ends)}, file has {size}")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # round(v / 257) maps 0..65535 onto 0..255 exactly at the ends
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype in (np.float32, np.float64):
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    raise ImageReadError(reasons.UNREADABLE, f"unsupported sample type {img.dtype}")


def _apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
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


def _normalise(img: np.ndarray) -> np.ndarray:
    """Any OpenCV decode result (BGR/BGRA/grey, 8/16-bit) -> uint8 RGB, alpha over white."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = _to_uint8(img)
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)
        color = img[:, :, :3].astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)
        out = color * alpha + (1.0 - alpha)  # composite over white
        img = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = _to_uint8(img)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def decode_rgb(path: str | os.PathLike, max_pixels: int, header: ImageHeader | None = None) -> np.ndarray:
    """Decode any supported file to an ``(H, W, 3)`` uint8 RGB array, or raise ImageReadError."""
    header = header or probe(path, max_pixels)
    check_complete(path, header.format)
    buf = np.frombuffer(read_bytes(path), dtype=np.uint8)
    # IMREAD_UNCHANGED keeps 16-bit and alpha but ignores EXIF: orientation applied below.
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    del buf
    if img is None:
        img = _decode_with_pillow(path)
    img = _normalise(img)
    img = _apply_orientation(img, header.orientation)
    if img.shape[1] != header.width or img.shape[0] != header.height:
        raise ImageReadError(
            reasons.UNREADABLE, f"decoded {img.shape[1]}x{img.shape[0]}, header says {header.width}x{header.height}"
        )
    return img


def _decode_with_pillow(path) -> np.ndarray:
    """Fallback for what OpenCV refuses (e.g. CMYK TIFF); returns BGR like OpenCV."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                arr = np.asarray(im.convert("RGBA"))
                return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
            arr = np.asarray(im.convert("RGB"))
            return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    except Exception as exc:
        raise ImageReadError(reasons.UNREADABLE, f"decode failed: {exc}") from exc


def to_grey(rgb: np.ndarray, rows: int = 1024) -> np.ndarray:
    """OpenCV RGB->GRAY (same weights as BGR2GRAY on the BGR image), strip by strip."""
    out = np.empty(rgb.shape[:2], dtype=np.uint8)
    for y in range(0, rgb.shape[0], rows):
        cv2.cvtColor(rgb[y : y + rows], cv2.COLOR_RGB2GRAY, dst=out[y : y + rows])
    return out


def thumbnail(rgb: np.ndarray, long_edge: int) -> np.ndarray:
    """Area-resampled RGB thumbnail with the given long edge (never upscales)."""
    h, w = rgb.shape[:2]
    s = min(1.0, long_edge / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encode failed")
    return enc.tobytes()


def write_image(path: str | os.PathLike, rgb: np.ndarray, **params) -> None:
    """Write RGB with OpenCV in the format the suffix names (params: jpeg_quality, png_level)."""
    path = Path(path)
    flags: list[int] = []
    if "jpeg_quality" in params:
        flags += [cv2.IMWRITE_JPEG_QUALITY, int(params["jpeg_quality"])]
    if "png_level" in params:
        flags += [cv2.IMWRITE_PNG_COMPRESSION, int(params["png_level"])]
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, enc = cv2.imencode(path.suffix, bgr, flags)
    if not ok:
        raise RuntimeError(f"encode failed for {path}")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(enc.tobytes())
    os.replace(tmp, path)

