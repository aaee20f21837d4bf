"""Image IO: the one reader contract every entry point uses, and decode to 8-bit RGB.

Every failure is a :class:`ImageReadError` with a ``reason`` taken from
:mod:`curation.reasons` and a ``detail`` that goes into the row (``reject_detail``), so a
caller records it instead of crashing. The contract, in order (each step before any pixel
buffer is allocated):

1. **a regular file** (:func:`read_source`, :func:`probe`): ``os.stat`` first; a directory,
   FIFO, socket, device, broken symlink or symlink loop is ``not_a_regular_file`` and is never
   opened for reading (the file is opened non-blocking and ``fstat``-ed again, so a file
   swapped for a FIFO in between cannot hang the reader). A missing or unreadable file is
   ``unreadable``.
2. **the bytes, read once and hashed** (:func:`read_source`): bounded by the pixel limit
   (:func:`max_file_bytes`); the sha256 of exactly the bytes that are decoded is the image's
   content hash, and ``expect_sha256`` (an id or sha recorded upstream) pins the content to
   its id: other bytes are ``source_changed``, never scored under the old id. A reader that
   decodes a path (:func:`decode_rgb`, :func:`open_pinned`) hashes PNG and TIFF a piece at a
   time and decodes them from the same open file, whose ``fstat`` must not change in between
   (``source_changed``): no copy of the file is held beside the decoded image.
3. **the header** (:func:`probe`): the format from the magic bytes (PNG, JPEG, TIFF, WebP are
   read; GIF, BMP, AVIF, HEIF, JPEG XL, ... are ``unsupported_format``, or ``animated`` when
   they hold several frames; anything else is ``not_an_image``), the size (after EXIF
   rotation), more than one frame is ``animated``, more pixels than the limit of the config
   (``io.max_pixels``) is ``too_many_pixels``.
4. **the data** (:func:`validate`): a container cut short is ``truncated`` (PNG chunks up to
   IEND, the JPEG marker structure up to EOI, the WebP RIFF length, the TIFF strip/tile
   extents), bytes after the end (PNG IEND, JPEG EOI, RIFF) are allowed; damaged data in a
   complete container is ``corrupt`` (PNG critical-chunk CRCs; a JPEG's entropy-coded scans
   are decoded strictly at 1/8 scale, where libjpeg's *warnings*, e.g. garbage inside a
   scan, raise; libjpeg and OpenCV only print them).
5. **decode** (:func:`decode_rgb`): an ``(H, W, 3)`` uint8 RGB array: EXIF orientation applied,
   16-bit scaled to 8-bit (round(v / 257)), greyscale expanded, alpha (grey + alpha or RGBA)
   composited over white, palette and CMYK converted. A decoder failure on a file that
   passed 1-4 is ``corrupt``; a decoded size other than the header's is ``corrupt``.

Readers that must decode as a reference implementation does (the bench metrics: Pillow's
``convert``) use :func:`open_checked`: steps 1-4 on the bytes, then a Pillow image of exactly
those bytes. :func:`read_checked` is steps 1-4 alone.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from curation import reasons
from curation.hashing import sha256_file

Image.MAX_IMAGE_PIXELS = None  # our own limit (probe, from the config) replaces Pillow's warning/error

FORMATS = ("png", "jpeg", "tiff", "webp")
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",  # BigTIFF
    b"MM\x00+": "tiff",
}
_EXIF_ORIENTATION = 0x0112
_HEAD = 64  # bytes enough for every magic test below

#: ISO base media brands of still / sequence images we recognise but do not read
_FTYP_BRANDS = {b"avif": "avif", b"avis": "avif", b"heic": "heif", b"heix": "heif", b"hevc": "heif",
                b"hevx": "heif", b"heim": "heif", b"heis": "heif", b"mif1": "heif", b"msf1": "heif"}


def _other_image_format(head: bytes) -> str | None:
    """An image format that is not read here (-> ``unsupported_format`` / ``animated``), or None."""
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack("<I", head[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"  # BITMAPFILEHEADER followed by a known DIB header size
    if head[4:8] == b"ftyp" and head[8:12] in _FTYP_BRANDS:
        return _FTYP_BRANDS[head[8:12]]
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "jpeg-xl"
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51":
        return "jpeg-2000"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and len(head) >= 6 and 0 < head[4] + 256 * head[5] < 256:
        return "ico"
    if head[:4] == b"8BPS":
        return "psd"
    if head[:4] == b"qoif":
        return "qoi"
    if head[:4] == b"DDS ":
        return "dds"
    if head[:4] == b"\x76\x2f\x31\x01":
        return "openexr"
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "radiance-hdr"
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in b" \t\r\n":
        return "pnm"
    return None


class ImageReadError(ValueError):
    """An image that cannot be used; ``reason`` is one of :mod:`curation.reasons`, ``detail``
    says why (it goes into the row's ``reject_detail``). A ``ValueError``, so readers that
    already catch Pillow's ``OSError`` / ``ValueError`` / ``SyntaxError`` catch it too."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        #: what was learnt of the file before the refusal (:func:`open_pinned`): ``sha256`` once
        #: its bytes are hashed, ``header`` once probed
        self.known: dict = {}


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


@dataclass(frozen=True)
class Source:
    """The bytes of one regular file, read once, and their sha256 (hex): what every check and
    the decode work from, so the hash is the hash of exactly what was decoded."""

    path: str
    data: bytes
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class CheckedImage:
    """A file that passed steps 1-4 of the contract: its bytes (with their hash) and header."""

    source: Source
    header: ImageHeader


#: image id source: sha256 of the file bytes, hex (full 64 chars; ids use the first 16+)
content_hash = sha256_file


def image_id_from_hash(sha256_hex: str) -> str:
    return sha256_hex[:20]


# -- limits from the config -------------------------------------------------------------------

@lru_cache(maxsize=None)
def _profile_limits(profile: str) -> tuple[int, int]:
    from curation.config import load_config

    return _limits_of(load_config(profile))


def _limits_of(cfg) -> tuple[int, int]:
    inp = int(cfg.get("io.max_pixels"))
    # the largest SR output the tiers can make: 4x of the 4x tier's largest input, 2x of the
    # largest input below the archive tier (both 400 MP at linear_scale 1)
    from curation.upscale.tiers import tier_bounds

    b = tier_bounds(cfg)
    out = max(16 * b["x4_max_pixels_inclusive"], 4 * b["archive_min_pixels_inclusive"])
    return inp, int(max(inp, out))


def default_max_pixels(cfg=None) -> int:
    """The pixel limit for input images (``io.max_pixels``) of ``cfg``, or of the default
    profile (``paper``) when None: what the bench, the metrics and one-file CLIs use."""
    return _limits_of(cfg)[0] if cfg is not None else _profile_limits("paper")[0]


def output_max_pixels(cfg=None) -> int:
    """The pixel limit for corpus outputs (SR results, up to 16x their input) of ``cfg`` (or of
    ``paper``): the largest output the SR tiers can make, at least ``io.max_pixels``."""
    return _limits_of(cfg)[1] if cfg is not None else _profile_limits("paper")[1]


def max_file_bytes(max_pixels: int) -> int:
    """The largest file an image within ``max_pixels`` can be: 8 bytes per pixel (16-bit RGBA
    stored raw) plus 64 MiB of metadata. A larger file is ``too_many_pixels`` before it is read."""
    return int(max_pixels) * 8 + (64 << 20)


# -- 1. a regular file; 2. its bytes --------------------------------------------------------------

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), f"not a regular file (mode {oct(mode)})")


def check_regular(path: str | os.PathLike) -> os.stat_result:
    """``os.stat`` of a regular file (symlinks followed), without opening it; raise
    ``not_a_regular_file`` (directory, FIFO, socket, device, broken symlink, symlink loop) or
    ``unreadable`` (missing, no permission)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(reasons.NOT_A_REGULAR_FILE, "a symlink loop") from None
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                raise ImageReadError(reasons.NOT_A_REGULAR_FILE, "a broken symlink") from None
        except OSError:
            pass
        raise ImageReadError(reasons.UNREADABLE, exc.strerror or str(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(reasons.NOT_A_REGULAR_FILE, _kind(st.st_mode))
    return st


def open_regular(path: str | os.PathLike):
    """A binary file object of a regular file (see :func:`check_regular`); opened non-blocking
    and checked again with ``fstat``, so nothing swapped in between can block the read."""
    check_regular(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageReadError(reasons.UNREADABLE, exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageReadError(reasons.NOT_A_REGULAR_FILE, _kind(st.st_mode))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _hex_matches(sha256_hex: str, expect: str) -> bool:
    e = expect.lower().removeprefix("sha256:")
    return len(e) >= 16 and sha256_hex.startswith(e)


def _changed(sha256_hex: str, expect: str) -> ImageReadError:
    return ImageReadError(reasons.SOURCE_CHANGED, f"the file's bytes now hash to sha256 {sha256_hex[:20]}..., "
                                                  f"not to the {expect[:20]}... recorded for it upstream")


def check_expected(src: Source, expect_sha256: str | None) -> None:
    """Raise ``source_changed`` unless ``src``'s sha256 starts with ``expect_sha256`` (a full
    sha256 or an image id recorded upstream); None checks nothing."""
    if expect_sha256 and not _hex_matches(src.sha256, expect_sha256):
        raise _changed(src.sha256, expect_sha256)


def read_source(path: str | os.PathLike, max_pixels: int | None = None,
                expect_sha256: str | None = None) -> Source:
    """Read a regular file's bytes once and hash them (steps 1-2). ``max_pixels`` bounds the
    file size (:func:`max_file_bytes`); ``expect_sha256`` pins the content (``source_changed``)."""
    limit = max_file_bytes(max_pixels) if max_pixels else None
    with open_regular(path) as fh:
        src = _read_open(fh, path, limit, max_pixels)
    check_expected(src, expect_sha256)
    return src


def _check_size(size: int, limit: int | None, max_pixels: int | None) -> None:
    if limit is not None and size > limit:
        raise ImageReadError(reasons.TOO_MANY_PIXELS,
                             f"file of {size} bytes: more than an image of {max_pixels} pixels can be")


def _read_open(fh, path, limit: int | None, max_pixels: int | None) -> Source:
    """The bytes of an open regular file from its start, bounded by ``limit``, hashed."""
    size = os.fstat(fh.fileno()).st_size
    _check_size(size, limit, max_pixels)
    try:  # exactly the stat size (no limit-sized buffer), then whatever it grew by, bounded
        fh.seek(0)
        data = fh.read(size) if size else b""
        more = fh.read(1)
        if more:
            data += more + (fh.read() if limit is None else fh.read(max(0, limit + 1 - len(data) - 1)))
    except OSError as exc:
        raise ImageReadError(reasons.UNREADABLE, exc.strerror or str(exc)) from None
    if limit is not None and len(data) > limit:  # grew while being read
        raise ImageReadError(reasons.TOO_MANY_PIXELS, f"file grew past {limit} bytes while being read")
    return Source(os.fspath(path), data, hashlib.sha256(data).hexdigest())


def copy_pinned(path: str | os.PathLike, dst: str | os.PathLike, expect_sha256: str | None = None) -> str:
    """Copy a regular file to ``dst`` in chunks, hashing the bytes as they are copied; return
    their sha256, or raise ``source_changed`` (``dst`` removed) when it does not start with
    ``expect_sha256``: a copy is never stored under an id its bytes do not have."""
    h = hashlib.sha256()
    try:
        with open_regular(path) as fh, open(dst, "wb") as out:
            while chunk := fh.read(8 << 20):
                h.update(chunk)
                out.write(chunk)
        sha = h.hexdigest()
        if expect_sha256 and not _hex_matches(sha, expect_sha256):
            raise _changed(sha, expect_sha256)
    except BaseException:
        Path(dst).unlink(missing_ok=True)
        raise
    return sha


def hash_regular_file(path: str | os.PathLike, expect_sha256: str | None = None,
                      stamps: str | os.PathLike | None = None) -> str:
    """sha256 (hex) of a regular file's bytes, streamed; a non-regular file raises
    ``not_a_regular_file`` without being opened for reading; ``expect_sha256`` (an id or sha
    recorded upstream) raises ``source_changed`` when the bytes no longer hash to it. For
    readers that read a file by regions (tiled corpus TIFFs) rather than whole.

    ``stamps`` (a folder) keeps, per file hashed, its ``stat`` stamp (device, inode, size,
    mtime_ns, ctime_ns) next to the sha256 the bytes had, as git's index does: a file whose
    stamp is unchanged is not read again (ctime cannot be set back by a user; any write,
    rename or ``touch`` changes it). What a stamp cannot see, a bit flipped on the disk without
    a write, the release audit finds by hashing every blob."""
    stamp_file = None
    if stamps is not None:
        st = check_regular(path)
        stamp = f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"
        key = hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:32]
        stamp_file = Path(stamps) / key[:2] / key
        try:
            kept_stamp, kept_sha = stamp_file.read_text().split("\n")[:2]
        except (OSError, ValueError):
            kept_stamp = kept_sha = None
        if kept_stamp == stamp and kept_sha and (not expect_sha256 or _hex_matches(kept_sha, expect_sha256)):
            return kept_sha
    with open_regular(path) as fh:
        try:
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError as exc:
            raise ImageReadError(reasons.UNREADABLE, exc.strerror or str(exc)) from None
    if expect_sha256 and not _hex_matches(sha, expect_sha256):
        raise _changed(sha, expect_sha256)
    if stamp_file is not None:
        write_hash_stamp(path, sha, stamps, _stat=st)
    return sha


def write_hash_stamp(path: str | os.PathLike, sha256_hex: str, stamps: str | os.PathLike, _stat=None) -> None:
    """Record that ``path``, as it is now (its ``stat`` stamp), holds bytes hashing to
    ``sha256_hex`` (see :func:`hash_regular_file`); for a writer that has just hashed what it
    wrote. Best effort: a stamp that cannot be written only costs a later re-hash."""
    try:
        st = _stat or os.stat(path)
        key = hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:32]
        stamp_file = Path(stamps) / key[:2] / key
        stamp_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp_file.with_name(f"{stamp_file.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}\n{sha256_hex}\n")
        os.replace(tmp, stamp_file)
    except OSError:
        pass


# -- 3. the header ----------------------------------------------------------------------------------

def sniff_format(head: bytes) -> str | None:
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def _pillow_frames(fp, max_pixels: int) -> tuple[int, tuple[int, int] | None]:
    """``(frames, size)`` of an image Pillow can open (size None otherwise); the size is checked
    against ``max_pixels`` before the frames are counted (counting may decode a frame)."""
    try:
        fp.seek(0)
        with Image.open(fp) as im:
            w, h = im.size
            if w * h > max_pixels:
                return 1, (w, h)
            return int(getattr(im, "n_frames", 1) or 1), (w, h)
    except Exception:  # a format Pillow cannot open: one frame as far as we know
        return 1, None


def probe(path: str | os.PathLike | Source, max_pixels: int) -> ImageHeader:
    """Read format and size from the header only (steps 1 and 3 of the contract); raise
    ``not_a_regular_file``, ``not_an_image``, ``unsupported_format``, ``animated``,
    ``too_many_pixels``, ``truncated`` or ``corrupt``. A path is opened (regular files only),
    never read whole; a :class:`Source` is probed from its bytes. Nothing is decoded: the pixel
    limit is checked on the declared size before anything else is asked of Pillow."""
    if isinstance(path, Source):
        return _probe(io.BytesIO(path.data), path, max_pixels)
    with open_regular(path) as fh:
        return _probe(fh, path, max_pixels)


def _too_many(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageReadError(reasons.TOO_MANY_PIXELS, f"{w}x{h} = {w * h} > {max_pixels}")


def _probe(fp, where, max_pixels: int) -> ImageHeader:
    try:
        head = fp.read(_HEAD)
    except OSError as exc:
        raise ImageReadError(reasons.UNREADABLE, exc.strerror or str(exc)) from None
    fmt = sniff_format(head)
    if fmt is None:
        other = _other_image_format(head)
        if other is None:
            raise ImageReadError(reasons.NOT_AN_IMAGE, "unknown magic bytes" if head else "empty file")
        frames, size = _pillow_frames(fp, max_pixels)
        if size is not None:
            _too_many(*size, max_pixels)
        if frames > 1:
            raise ImageReadError(reasons.ANIMATED, f"{other} with {frames} frames")
        raise ImageReadError(reasons.UNSUPPORTED_FORMAT, f"{other} image (read: PNG, JPEG, TIFF, WebP)")
    fp.seek(0)
    try:
        with Image.open(fp, formats=None) as im:
            w, h = im.size
            mode = im.mode
            _too_many(w, h, max_pixels)  # before n_frames / EXIF, which may make Pillow decode
            frames = int(getattr(im, "n_frames", 1) or 1)
            orientation = _orientation(im, fmt, fp)
    except ImageReadError:
        raise
    except Exception as exc:  # Pillow refuses the header
        if fmt == "tiff":  # TIFFs Pillow does not read (e.g. 16-bit grey + alpha): tifffile's header
            w, h, mode, frames, orientation = _tiff_header(fp, exc)
            _too_many(w, h, max_pixels)
        else:
            _header_failure(fp, fmt, exc)
    if orientation not in range(1, 9):
        orientation = 1
    if w <= 0 or h <= 0:
        raise ImageReadError(reasons.CORRUPT, f"bad size {w}x{h}")
    if frames > 1:
        raise ImageReadError(reasons.ANIMATED, f"{frames} frames")
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return ImageHeader(fmt, w, h, orientation, mode)


def _orientation(im, fmt: str, fp) -> int:
    """The EXIF orientation tag (1 when absent or malformed), without decoding: Pillow's
    ``getexif`` of a PNG decodes the whole image to look for an eXIf chunk after the pixel
    data, so for PNG the chunks are walked here instead."""
    try:
        if fmt == "png":
            raw = im.info.get("exif")
            if raw is None:
                raw = _png_exif_chunk(fp)
            if not raw:
                return 1
            ex = Image.Exif()
            ex.load(raw if raw.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + raw)
            return int(ex.get(_EXIF_ORIENTATION, 1) or 1)
        return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # malformed EXIF: treat as no rotation
        return 1


def _png_exif_chunk(fp) -> bytes | None:
    """The body of a PNG's eXIf chunk wherever it is (chunk headers walked, nothing inflated)."""
    fp.seek(8)
    while True:
        hdr = fp.read(8)
        if len(hdr) < 8:
            return None
        length, ctype = struct.unpack(">I4s", hdr)
        if ctype == b"eXIf":
            return fp.read(length)
        if ctype == b"IEND":
            return None
        fp.seek(length + 4, os.SEEK_CUR)


def _header_failure(fp, fmt: str, exc: Exception):
    """Pillow could not read the header of a file with a known magic: truncated or corrupt."""
    fp.seek(0)
    data = fp.read()
    _check_complete_bytes(data, fmt)  # raises truncated when the container is cut short
    raise ImageReadError(reasons.CORRUPT, f"header: {exc}") from exc


def _tiff_header(fp, pil_exc: Exception) -> tuple[int, int, str, int, int]:
    import tifffile

    fp.seek(0)
    try:
        with tifffile.TiffFile(fp, name="image.tif", offset=0) as tf:  # borrowed: not closed, not copied
            page = tf.pages[0]
            n = len(tf.pages)
            h, w = int(page.imagelength), int(page.imagewidth)
            samples = int(page.samplesperpixel)
            tag = page.tags.get(_EXIF_ORIENTATION)
            orientation = int(tag.value) if tag is not None else 1
            mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(samples, f"{samples}ch")
            if samples == 2 and tuple(getattr(page, "extrasamples", ()) or ())[:1] == (1,):
                mode = "La"
            mode += f";{page.dtype}"
    except Exception as exc:
        _header_failure(fp, "tiff", pil_exc if not str(exc) else exc)
    return w, h, mode, n, orientation


# -- 4. the data --------------------------------------------------------------------------------

def check_complete(path: str | os.PathLike | Source, fmt: str) -> None:
    """Raise ``truncated`` if the container is cut short (``corrupt`` if its structure is
    broken); bytes after the container's end are allowed."""
    data = path.data if isinstance(path, Source) else read_source(path).data
    _check_complete_bytes(data, fmt)


def _check_complete_bytes(data: bytes, fmt: str) -> None:
    size = len(data)
    if fmt == "png":
        _check_png(data, crc=False)
    elif fmt == "jpeg":
        jpeg_end(data)
    elif fmt == "webp":
        if size < 12:
            raise ImageReadError(reasons.TRUNCATED, f"WebP of {size} bytes")
        (riff_len,) = struct.unpack("<I", data[4:8])
        if riff_len + 8 > size:
            raise ImageReadError(reasons.TRUNCATED, f"RIFF declares {riff_len + 8} bytes, file has {size}")
    elif fmt == "tiff":
        _check_tiff(data)


_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")


def _check_png(data: bytes, crc: bool) -> None:
    """Walk the chunks to IEND; ``crc``: check the critical chunks' CRCs (``corrupt``)."""
    _walk_png(io.BytesIO(data), len(data), crc)


#: bytes read per step when a check streams a file (CRCs, the hash)
_STREAM_BYTES = 1 << 20


def _walk_png(fh, size: int, crc: bool) -> None:
    """:func:`_check_png` on a binary file object of ``size`` bytes: chunk headers read, bodies
    skipped, or read ``_STREAM_BYTES`` at a time for the CRCs (the file is never held whole)."""
    pos = 8
    buf = memoryview(bytearray(_STREAM_BYTES)) if crc else None
    while True:
        if pos + 8 > size:
            raise ImageReadError(reasons.TRUNCATED, "PNG ends before IEND")
        fh.seek(pos)
        hdr = fh.read(8)
        if len(hdr) < 8:
            raise ImageReadError(reasons.TRUNCATED, "PNG ends before IEND")
        length, ctype = struct.unpack(">I4s", hdr)
        end = pos + 12 + length
        if end > size:
            raise ImageReadError(reasons.TRUNCATED, f"PNG chunk {ctype.decode('latin-1')!r} runs past end of file")
        if crc and ctype in _CRITICAL:
            got, left = zlib.crc32(ctype), length
            while left:
                n = fh.readinto(buf[: min(left, _STREAM_BYTES)])
                if not n:
                    raise ImageReadError(reasons.TRUNCATED, f"PNG chunk {ctype.decode()} runs past end of file")
                got, left = zlib.crc32(buf[:n], got), left - n
            tail = fh.read(4)
            if len(tail) < 4:
                raise ImageReadError(reasons.TRUNCATED, f"PNG chunk {ctype.decode()} runs past end of file")
            if got != struct.unpack(">I", tail)[0]:
                raise ImageReadError(reasons.CORRUPT, f"PNG chunk {ctype.decode()} at byte {pos}: CRC mismatch")
        if ctype == b"IEND":
            return
        pos = end


#: the next marker inside entropy-coded data: 0xFF followed by neither 0x00 (a stuffed byte),
#: nor 0xD0-0xD7 (restart markers, part of the scan), nor 0xFF (fill)
_SCAN_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
#: markers that may follow a scan: DHT, DAC, DQT, DNL, DRI, SOS, DHP, EXP, APPn, COM, (hierarchical) SOFn
_AFTER_SCAN = frozenset([0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xDA, 0xDE, 0xDF, *range(0xE0, 0xF0), 0xFE,
                         *range(0xC0, 0xD0)])


def jpeg_end(data: bytes) -> int:
    """Offset just past the EOI marker of a JPEG, walking its marker segments and scans;
    ``truncated`` when the data ends first, ``corrupt`` when the structure breaks before an EOI
    that is still in the file. Bytes after the EOI are not looked at (allowed)."""
    size = len(data)
    pos = 2  # after SOI

    def cut(what: str):
        if data.find(b"\xff\xd9", pos) >= 0:  # an end marker further on: the structure is broken
            raise ImageReadError(reasons.CORRUPT, f"JPEG structure broken at byte {pos}: {what}")
        raise ImageReadError(reasons.TRUNCATED, f"JPEG has no EOI marker: {what}")

    in_scan = False
    while True:
        if pos + 2 > size:
            cut("data ends")
        if data[pos] != 0xFF:
            cut(f"byte 0x{data[pos]:02x} where a marker should be")
        while pos + 2 <= size and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 2 > size:
            cut("data ends in fill bytes")
        m = data[pos + 1]
        if m == 0xD9:
            return pos + 2
        if in_scan and m not in _AFTER_SCAN:
            raise ImageReadError(reasons.CORRUPT, f"invalid marker 0xff{m:02x} after a scan at byte {pos}")
        if m in _STANDALONE:
            pos += 2
            continue
        if m == 0x00 or m == 0xD8:
            cut(f"invalid marker 0xff{m:02x}")
        if pos + 4 > size:
            cut(f"segment 0xff{m:02x} cut short")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            cut(f"segment 0xff{m:02x} of length {length}")
        seg_end = pos + 2 + length
        if seg_end > size:
            cut(f"segment 0xff{m:02x} runs past the end")
        if m == 0xDA:  # SOS: the entropy-coded data runs to the next marker
            nxt = _SCAN_MARKER.search(data, seg_end)
            if nxt is None:
                pos = size
                cut("the scan runs to the end of the file")
            pos = nxt.start()
            in_scan = True
        else:
            pos = seg_end


def _check_tiff(data: bytes) -> None:
    _check_tiff_file(io.BytesIO(data), len(data))


def _check_tiff_file(fh, size: int) -> None:
    """The strip / tile extents of a TIFF (a binary file object of ``size`` bytes) within the file."""
    import tifffile

    try:
        with tifffile.TiffFile(fh, name="image.tif", offset=0) as tf:  # borrowed: not closed
            page = tf.pages[0]
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
    except Exception as exc:
        raise ImageReadError(reasons.CORRUPT, f"TIFF structure: {exc}") from exc
    if ends and max(ends) > size:
        raise ImageReadError(reasons.TRUNCATED, f"TIFF data runs to byte {max(ends)}, file has {size}")


def validate_jpeg_scan(data: bytes) -> None:
    """Decode a JPEG's scans strictly at 1/8 scale (libjpeg-turbo via simplejpeg): the full
    entropy decode runs, the IDCT is 1/64 of the work; a libjpeg warning (garbage in a scan,
    extraneous bytes, a bad Huffman code, premature end of data) raises ``corrupt``."""
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, min_height=1, min_width=1)
    except Exception as exc:  # simplejpeg raises ValueError with libjpeg's message
        msg = str(exc).strip() or type(exc).__name__
        if "premature end" in msg.lower() and data.rfind(b"\xff\xd9") < 0:
            raise ImageReadError(reasons.TRUNCATED, f"JPEG scan: {msg}") from None
        raise ImageReadError(reasons.CORRUPT, f"JPEG scan: {msg}") from None


def validate(src: Source, header: ImageHeader) -> None:
    """Step 4 of the contract on bytes already read: complete container, undamaged data."""
    if header.format == "png":
        _check_png(src.data, crc=True)
    else:
        _check_complete_bytes(src.data, header.format)
    if header.format == "jpeg":
        validate_jpeg_scan(src.data)


def read_checked(path: str | os.PathLike | Source, max_pixels: int | None = None,
                 expect_sha256: str | None = None) -> CheckedImage:
    """Steps 1-4 of the contract: the bytes (hashed, pinned to ``expect_sha256``), the header
    within ``max_pixels`` (default: :func:`default_max_pixels`), complete and undamaged data.
    Nothing is decoded but a JPEG's scans at 1/8 scale."""
    max_pixels = int(max_pixels) if max_pixels else default_max_pixels()
    if isinstance(path, Source):
        src = path
        check_expected(src, expect_sha256)
    else:
        src = read_source(path, max_pixels, expect_sha256)
    header = probe(src, max_pixels)
    validate(src, header)
    return CheckedImage(src, header)


def describe_error(exc: BaseException) -> str:
    """One line for a failed read: ``<reason>: <detail>`` for the contract's refusals (the reason
    first, as rows record it), else ``<ExceptionType>: <message>``."""
    if isinstance(exc, ImageReadError):
        return f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason
    return f"{type(exc).__name__}: {exc}"


def open_checked(path: str | os.PathLike | Source, max_pixels: int | None = None,
                 expect_sha256: str | None = None) -> Image.Image:
    """A Pillow image (not yet loaded) of a file's bytes after steps 1-4 of the contract, for
    readers that must decode as Pillow does (the bench metrics' references). Use it in a
    ``with`` block; Pillow's own decode errors of the checked bytes are ``corrupt``."""
    chk = read_checked(path, max_pixels, expect_sha256)
    try:
        return Image.open(io.BytesIO(chk.source.data))
    except Exception as exc:
        raise ImageReadError(reasons.CORRUPT, f"Pillow: {type(exc).__name__}: {exc}") from exc


# -- 5. decode (the pixel conversions live in curation/decoders.py) ----------------------------------

def decode_rgb(path: str | os.PathLike | Source, max_pixels: int, header: ImageHeader | None = None,
               expect_sha256: str | None = None) -> np.ndarray:
    """Decode any supported file to an ``(H, W, 3)`` uint8 RGB array, or raise ImageReadError.

    The whole contract: the bytes are hashed once (``path`` may be a :class:`Source` already
    read), pinned to ``expect_sha256``, probed within ``max_pixels`` and validated before the
    decode. ``header`` is accepted for compatibility; the header is always re-read from the
    bytes that are decoded. A path is read through :func:`open_pinned` (PNG and TIFF: checked
    and decoded from one open file, never held whole)."""
    if isinstance(path, Source):
        chk = read_checked(path, max_pixels, expect_sha256)
        return _decode_checked(chk.source.path, chk.header, chk.source.data)
    with open_pinned(path, max_pixels, expect_sha256) as pinned:
        return pinned.decode()


#: formats checked (hash, header, data) and decoded from the open file, which is never held
#: whole: their decoders read it a band at a time. JPEG (simplejpeg and the strict scan check
#: take one buffer) and WebP are read whole.
STREAMED_FORMATS = ("png", "tiff")
def _decodes_from_file(header: ImageHeader) -> bool:
    """Whether a file read whole for its checks is decoded from the open file, its bytes let go
    first: CMYK / YCCK JPEG (libjpeg fed a piece at a time into the one CMYK buffer,
    :func:`curation.decoders.decode_jpeg_cmyk_stream`); other JPEGs keep their (small) bytes
    for simplejpeg, the fastest decoder, which takes one buffer."""
    return header.format == "jpeg" and header.mode == "CMYK"


#: a file whose status changed this recently (ns) may still change within the same tick of
#: the file system's coarse clock without its mtime / ctime moving: the reader waits it out
_RACY_NS = 20_000_000


class PinnedImage:
    """A regular file, open, that passed steps 1-4 of the contract (:func:`open_pinned`): its
    ``sha256``, ``header`` and ``size``, and :meth:`decode`, which decodes exactly the bytes
    that were hashed -- from the held bytes (``data``; JPEG, WebP) or from the same open file
    descriptor (PNG, TIFF), whose ``fstat`` (size, mtime, ctime) must then be what it was
    before the hash, else ``source_changed``."""

    def __init__(self, path: str, fh, sha256: str, header: ImageHeader, size: int, data: bytes | None,
                 stamp: tuple[int, int, int]):
        self.path, self.sha256, self.header, self.size = path, sha256, header, size
        self.data = data
        self._fh, self._stamp = fh, stamp

    @property
    def image_id(self) -> str:
        return image_id_from_hash(self.sha256)

    def decode(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB of the pinned bytes (see :func:`decode_rgb`)."""
        if self.data is not None:
            return _decode_checked(self.path, self.header, self.data)
        if self._fh is None:
            raise ValueError("PinnedImage.decode outside its open_pinned block")
        self._fh.seek(0)
        try:
            img = _decode_checked(self._fh, self.header, None)
        finally:
            _check_unchanged(self._fh, self._stamp)  # a changed file's pixels are never returned
        return img


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _settled_stamp(fd: int) -> tuple[int, int, int]:
    """The ``fstat`` stamp of a file whose status did not change within the last ``_RACY_NS``
    (a write in the same coarse clock tick as the last one could leave mtime and ctime as they
    were; as git's "racily clean" entries, a just-changed file is waited out, once)."""
    st = os.fstat(fd)
    young = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns)
    if young < _RACY_NS:
        time.sleep((_RACY_NS - max(young, 0)) / 1e9)
        st = os.fstat(fd)
    return _stamp(st)


def _check_unchanged(fh, stamp: tuple[int, int, int]) -> None:
    now = _stamp(os.fstat(fh.fileno()))
    if now != stamp:
        raise ImageReadError(reasons.SOURCE_CHANGED,
                             f"the file changed while being read (size, mtime_ns, ctime_ns {stamp} -> {now}): "
                             "its pixels are not those of the bytes hashed")


def _hash_open(fh, limit: int) -> tuple[str, int]:
    """sha256 (hex) and length of an open file's bytes from its start, read in pieces."""
    h, n = hashlib.sha256(), 0
    buf = memoryview(bytearray(_STREAM_BYTES))
    fh.seek(0)
    try:
        while k := fh.readinto(buf):
            h.update(buf[:k])
            n += k
            if n > limit:
                raise ImageReadError(reasons.TOO_MANY_PIXELS, f"file grew past {limit} bytes while being read")
    except OSError as exc:
        raise ImageReadError(reasons.UNREADABLE, exc.strerror or str(exc)) from None
    return h.hexdigest(), n


@contextmanager
def open_pinned(path: str | os.PathLike, max_pixels: int | None = None,
                expect_sha256: str | None = None) -> Iterator[PinnedImage]:
    """Steps 1-4 of the contract on a file opened once (:func:`open_regular`), as a
    :class:`PinnedImage` valid inside the ``with`` block: its sha256 (pinned to
    ``expect_sha256``), header (within ``max_pixels``, default :func:`default_max_pixels`),
    complete and undamaged data, and :meth:`~PinnedImage.decode`.

    PNG and TIFF (:data:`STREAMED_FORMATS`) are hashed, probed and validated by reading the
    open file in pieces, and decoded from the same file descriptor: no copy of the file is held
    (peak memory is the decode's, not the file's plus the decode's). Other formats are read whole
    once and checked as :func:`read_checked` does; a CMYK JPEG then lets its bytes go and is
    decoded from the file descriptor too, the others from the bytes. The file's ``fstat`` (size,
    mtime_ns, ctime_ns) is taken before the hash and compared after the decode: a write in
    place (even with the mtime set back), a truncation or an append in between is
    ``source_changed``, and so is a rename-replace of the path (the open file's bytes stay
    intact, but its ctime moves when it is unlinked: refused, conservatively)."""
    max_pixels = int(max_pixels) if max_pixels else default_max_pixels()
    limit = max_file_bytes(max_pixels)
    where = os.fspath(path)
    with open_regular(path) as fh:
        _check_size(os.fstat(fh.fileno()).st_size, limit, max_pixels)
        try:
            head = fh.read(_HEAD)
        except OSError as exc:
            raise ImageReadError(reasons.UNREADABLE, exc.strerror or str(exc)) from None
        known: dict = {}  # what a refusal after the hash can still report (ImageReadError.known)
        try:
            stamp = _settled_stamp(fh.fileno())  # before the first byte hashed
            if sniff_format(head) in STREAMED_FORMATS:
                sha, size = _hash_open(fh, limit)
                _check_unchanged(fh, stamp)  # not the bytes fstat saw: changed while being hashed
                if expect_sha256 and not _hex_matches(sha, expect_sha256):
                    raise _changed(sha, expect_sha256)
                known["sha256"] = sha
                fh.seek(0)
                header = known["header"] = _probe(fh, where, max_pixels)
                validate_file(fh, size, header)
                pinned = PinnedImage(where, fh, sha, header, size, None, stamp)
            else:
                src = _read_open(fh, path, limit, max_pixels)
                check_expected(src, expect_sha256)
                known["sha256"] = src.sha256
                known["header"] = probe(src, max_pixels)
                validate(src, known["header"])
                if _decodes_from_file(known["header"]):  # the bytes go before the decode
                    pinned = PinnedImage(where, fh, src.sha256, known["header"], src.size, None, stamp)
                else:
                    pinned = PinnedImage(where, None, src.sha256, known["header"], src.size, src.data, stamp)
                del src
        except ImageReadError as exc:
            exc.known = known
            raise
        try:
            yield pinned
        finally:
            pinned._fh = pinned.data = None


def validate_file(fh, size: int, header: ImageHeader) -> None:
    """Step 4 of the contract (:func:`validate`) on an open PNG or TIFF of ``size`` bytes,
    read in pieces: the same checks, the same reasons."""
    if header.format == "png":
        _walk_png(fh, size, crc=True)
    elif header.format == "tiff":
        _check_tiff_file(fh, size)
    else:
        raise ValueError(f"{header.format} is validated from its bytes (validate)")


def _decode_checked(src, header: ImageHeader, data: bytes | None) -> np.ndarray:
    """Decode checked bytes (``data``), or a checked open file (``src`` a binary file object),
    with the contract's reasons for decoder failures and the decoded size checked."""
    try:
        img = _decode_pixels(src, header, data)
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageReadError(reasons.TOO_MANY_PIXELS, f"out of memory decoding {header.width}x{header.height}") from exc
    except Exception as exc:  # the container checked out: damaged data
        raise ImageReadError(reasons.CORRUPT, f"decode: {type(exc).__name__}: {exc}") from exc
    if img.shape[1] != header.width or img.shape[0] != header.height:
        raise ImageReadError(
            reasons.CORRUPT, f"decoded {img.shape[1]}x{img.shape[0]}, header says {header.width}x{header.height}"
        )
    return img


def _decode_pixels(src, header: ImageHeader, data: bytes | None) -> np.ndarray:
    """Decode checked bytes (or a checked open file) to ``(H, W, 3)`` uint8 RGB (orientation
    applied): the conversions (bit depth, alpha over white, grey + alpha, palette, CMYK,
    orientation) run strip by strip in :mod:`curation.decoders`."""
    from curation.decoders import decode_to_rgb

    return decode_to_rgb(src, header, data)


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

