"""Streaming image storage for the 100 MP corpus: region sources (read) and row writers (write).

Nothing here ever needs the full decoded output in memory unless the *format* forces it:

* **Sources** give ``read(y0, y1, x0, x1) -> (h, w, 3) uint8 RGB``.
  :class:`ArraySource` wraps an in-memory array or an ``np.memmap`` (views, no copy);
  :class:`TiffRegionSource` decodes only the TIFF tiles/strips a region touches (tifffile's
  per-segment decoder; a small LRU keeps the last decoded segments, parallel decode over
  ``workers`` threads). :func:`open_source` picks one by suffix: ``.tif/.tiff`` (tiled or
  stripped, 8-bit, chunky) -> region reads; ``.npy`` -> memmap; anything else (PNG, JPEG, WebP,
  JPEG XL) is decoded whole, because those formats cannot be read by region.
* **Writers**: :func:`write_rows` consumes an iterator of finished row bands
  ``(y0, rows)`` (in order, covering the image once) and writes the format its suffix names:

  ======== ========================================================================== =========
  suffix   how                                                                        streams
  ======== ========================================================================== =========
  .tif     tiled TIFF (512² tiles), zstd level 3 + horizontal predictor (default),    yes
  .tiff    deflate on request; tiles encoded in parallel by tifffile
  .png     our own streaming PNG encoder: per-row filter (``avg`` default),           yes
           zlib level 1, deflate split over ``workers`` threads (pigz-style sync
           flushes with a 32 KiB preset dictionary, one valid zlib stream)
  .jxl     JPEG XL lossless (imagecodecs / libjxl, effort 1): rows go to a raw         via disk
           memmap on disk, then encoded from it (libjxl needs the whole image)
  .webp    WebP lossless (imagecodecs / libwebp), same memmap route; sides <= 16383    via disk
  .npy     raw array (memmap)                                                         yes
  ======== ========================================================================== =========

  Files are written to ``<name>.tmp`` and renamed on success, so a crash never leaves a
  half-written image under the final name.

The corpus default is the tiled zstd-3 TIFF (measured in ``benchmarks/out/storage.md``, 100 MP,
2 threads: encode 2.3 s, decode 1.1 s, 0.49 of raw, a random 1024² crop in ~18 ms; OpenCV's
default PNG: 8.4 s / 4.9 s / 0.65 / 4.6 s): it is written tile by tile in bounded memory and a
crop is read without decoding the rest. JPEG XL lossless is 28 % smaller (0.35) but decodes
5x slower and has no region reads: an option for cold archives, not for the working corpus.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SUFFIX_FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jxl": "jxl", ".webp": "webp", ".npy": "npy"}
DEFAULT_FORMAT = "tiff"
DEFAULT_SUFFIX = ".tif"
TIFF_TILE = 512
TIFF_COMPRESSION = "zstd"
TIFF_LEVEL = {"zstd": 3, "zlib": 6, "deflate": 6}
PNG_LEVEL = 1
PNG_FILTER = "avg"
WEBP_MAX_SIDE = 16383
WRITE_WORKERS = 2


def format_for_path(path: str | os.PathLike) -> str:
    """The storage format a file name asks for (``tiff``, ``png``, ``jxl``, ``webp``, ``npy``)."""
    suffix = Path(path).suffix.lower()
    try:
        return SUFFIX_FORMATS[suffix]
    except KeyError:
        raise ValueError(f"unsupported output suffix {suffix!r}; use one of {sorted(SUFFIX_FORMATS)}") from None


def jxl_available() -> bool:
    try:
        import imagecodecs

        return bool(imagecodecs.JPEGXL.available)
    except Exception:  # pragma: no cover - imagecodecs is in the lock
        return False


# -- sources ---------------------------------------------------------------------------------

class RegionSource(Protocol):
    height: int
    width: int

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray: ...


def _as_rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim == 3 and a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    if a.ndim == 3 and a.shape[2] == 4:
        return a[:, :, :3]
    return a


class ArraySource:
    """An ``(H, W, 3)`` uint8 array (or memmap) as a region source; reads are views."""

    def __init__(self, array: np.ndarray):
        a = np.asarray(array) if not isinstance(array, np.memmap) else array
        if a.dtype != np.uint8 or a.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 image array, got {a.dtype} {a.shape}")
        self.array = a
        self.height, self.width = int(a.shape[0]), int(a.shape[1])

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        x1 = self.width if x1 is None else x1
        return _as_rgb(self.array[y0:y1, x0:x1])

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TiffRegionSource:
    """Region reads from a tiled or stripped 8-bit TIFF, decoding only the segments touched.

    ``cache_bytes`` bounds the LRU of decoded segments (default 96 MB: a full row of 512²
    tiles of a 16k-wide image), so reading a band of rows twice (overlapping tile rows) does
    not decode twice. Segments are decoded over ``workers`` threads (the codecs release the GIL).
    """

    def __init__(self, path: str | os.PathLike, cache_bytes: int = 96 << 20, workers: int = 2):
        import tifffile

        self.path = str(path)
        self._tf = tifffile.TiffFile(self.path)
        page = self._tf.pages[0]
        if page.dtype != np.uint8:
            self._tf.close()
            raise ValueError(f"{path}: only 8-bit TIFF supported for region reads, got {page.dtype}")
        if page.planarconfig != 1 and page.samplesperpixel > 1:
            self._tf.close()
            raise ValueError(f"{path}: planar (separate) TIFF not supported for region reads")
        self.page = page
        self.height, self.width = int(page.imagelength), int(page.imagewidth)
        self.samples = int(page.samplesperpixel)
        if page.is_tiled:
            self.seg_h, self.seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.seg_h, self.seg_w = int(page.rowsperstrip or self.height), self.width
            self.seg_h = min(self.seg_h, self.height)
        self.n_across = -(-self.width // self.seg_w)
        self._jpegtables = page.jpegtables if getattr(page, "jpegtables", None) is not None else None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_bytes = int(cache_bytes)
        self._cached = 0
        self._lock = threading.Lock()
        self.workers = max(1, int(workers))
        self.decoded_segments = 0  # for tests / benchmarks: how many segments were decoded

    def _decode(self, index: int, data: bytes) -> np.ndarray:
        seg, _, shape = self.page.decode(data, index, jpegtables=self._jpegtables)
        seg = np.asarray(seg).reshape(shape[1:])  # (h, w, samples)
        return seg

    def _segments(self, indices: list[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        todo = []
        for i in indices:
            seg = self._cache.get(i)
            if seg is not None:
                self._cache.move_to_end(i)
                out[i] = seg
            else:
                todo.append(i)
        if todo:
            fh = self._tf.filehandle
            blobs = []
            with self._lock:
                for i in todo:
                    fh.seek(self.page.dataoffsets[i])
                    blobs.append(fh.read(self.page.databytecounts[i]))
            if self.workers > 1 and len(todo) > 1:
                with ThreadPoolExecutor(self.workers) as ex:
                    segs = list(ex.map(self._decode, todo, blobs))
            else:
                segs = [self._decode(i, b) for i, b in zip(todo, blobs)]
            self.decoded_segments += len(todo)
            for i, seg in zip(todo, segs):
                out[i] = seg
                self._cache[i] = seg
                self._cached += seg.nbytes
            while self._cached > self._cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.nbytes
        return out

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        x1 = self.width if x1 is None else x1
        y0, y1 = max(0, y0), min(self.height, y1)
        x0, x1 = max(0, x0), min(self.width, x1)
        out = np.empty((y1 - y0, x1 - x0, self.samples), np.uint8)
        r0, r1 = y0 // self.seg_h, (y1 - 1) // self.seg_h
        c0, c1 = x0 // self.seg_w, (x1 - 1) // self.seg_w
        idx = [r * self.n_across + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        segs = self._segments(idx)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                seg = segs[r * self.n_across + c]
                sy, sx = r * self.seg_h, c * self.seg_w
                a0, a1 = max(y0, sy), min(y1, sy + self.seg_h, self.height)
                b0, b1 = max(x0, sx), min(x1, sx + self.seg_w, self.width)
                out[a0 - y0:a1 - y0, b0 - x0:b1 - x0] = seg[a0 - sy:a1 - sy, b0 - sx:b1 - sx]
        return _as_rgb(out)

    def close(self) -> None:
        self._cache.clear()
        self._tf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_image(path: str | os.PathLike, max_pixels: int = 10**9) -> np.ndarray:
    """Decode a whole image to ``(H, W, 3)`` uint8 RGB (PNG/JPEG/WebP/TIFF via curation.imageio,
    JPEG XL via imagecodecs, ``.npy`` via numpy)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return _as_rgb(np.load(p))
    if suffix == ".jxl":
        import imagecodecs

        return _as_rgb(np.asarray(imagecodecs.jpegxl_decode(p.read_bytes(), numthreads=WRITE_WORKERS)))
    if suffix in (".tif", ".tiff"):
        import tifffile

        a = tifffile.imread(p, maxworkers=WRITE_WORKERS)
        if a.dtype == np.uint8:
            return _as_rgb(a)
    if suffix == ".webp":
        import imagecodecs

        return _as_rgb(np.asarray(imagecodecs.webp_decode(p.read_bytes())))
    from curation.imageio import decode_rgb

    return decode_rgb(p, max_pixels)


def open_source(src: Any, max_pixels: int = 10**9):
    """A region source for an array, a tiled/stripped TIFF (region reads), a ``.npy`` (memmap)
    or any other image file (decoded whole)."""
    if isinstance(src, (ArraySource, TiffRegionSource)):
        return src
    if isinstance(src, np.ndarray):
        return ArraySource(src)
    p = Path(src)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return ArraySource(np.load(p, mmap_mode="r"))
    if suffix in (".tif", ".tiff"):
        try:
            return TiffRegionSource(p)
        except ValueError:
            pass
    return ArraySource(read_image(p, max_pixels))


# -- writers ---------------------------------------------------------------------------------

Rows = Iterable[tuple[int, np.ndarray]]


def _checked(rows: Rows, width: int, height: int) -> Iterator[tuple[int, np.ndarray]]:
    """Validate that row bands arrive in order, cover the image once, and are uint8 RGB."""
    y = 0
    for y0, band in rows:
        if y0 != y:
            raise ValueError(f"row band starts at {y0}, expected {y}")
        if band.dtype != np.uint8 or band.ndim != 3 or band.shape[1] != width or band.shape[2] != 3:
            raise ValueError(f"row band must be (h, {width}, 3) uint8, got {band.dtype} {band.shape}")
        y += band.shape[0]
        if y > height:
            raise ValueError(f"row bands run past the image height {height}")
        if band.shape[0]:
            yield y0, band
    if y != height:
        raise ValueError(f"row bands cover {y} of {height} rows")


def _tiles_from_rows(rows: Rows, width: int, height: int, tile: int) -> Iterator[np.ndarray]:
    """Re-cut row bands into TIFF tiles (row-major). Tiles are copies: tifffile batches them."""
    buf = np.empty((tile, width, 3), np.uint8)
    filled = 0

    def flush(n: int):
        for x in range(0, width, tile):
            yield buf[:n, x:x + tile].copy()

    for _, band in _checked(rows, width, height):
        pos = 0
        while pos < band.shape[0]:
            take = min(tile - filled, band.shape[0] - pos)
            buf[filled:filled + take] = band[pos:pos + take]
            filled += take
            pos += take
            if filled == tile:
                yield from flush(tile)
                filled = 0
    if filled:
        yield from flush(filled)


def _write_tiff(tmp: Path, rows: Rows, width: int, height: int, compression: str | None, level: int | None,
                tile: int, workers: int) -> None:
    import tifffile

    comp = (compression or TIFF_COMPRESSION).lower()
    comp = {"deflate": "zlib", "adobe_deflate": "zlib"}.get(comp, comp)
    kw: dict[str, Any] = {}
    if comp != "none":
        kw["compression"] = comp
        lvl = TIFF_LEVEL.get(comp) if level is None else level
        if lvl is not None:
            kw["compressionargs"] = {"level": int(lvl)}
        if comp in ("zstd", "zlib", "lzw", "lzma"):
            kw["predictor"] = True
    tile_bytes = tile * tile * 3
    # classic TIFF offsets are 32-bit: a > ~4 GB file (compression can fail to help) needs BigTIFF
    bigtiff = height * width * 3 > 2**32 - 2**25
    tifffile.imwrite(
        tmp, data=_tiles_from_rows(rows, width, height, tile), shape=(height, width, 3), dtype=np.uint8,
        photometric="rgb", tile=(tile, tile), maxworkers=max(1, workers),
        buffersize=4 * max(1, workers) * tile_bytes, metadata=None, bigtiff=bigtiff, **kw,
    )


class PngStreamWriter:
    """Write a PNG row band by row band (8-bit RGB), never holding the whole image.

    Each row is filtered with one PNG filter (``none``, ``sub``, ``up``, ``avg``, ``paeth``;
    computed on the raw values, as the spec defines) and the filtered bytes of a band are
    deflated in ``workers`` pieces in parallel: every piece is a raw deflate stream primed with
    the previous 32 KiB of input and ended with a sync flush, so the concatenation is one valid
    zlib stream (the pigz construction); the Adler-32 is accumulated over the input.
    """

    FILTERS = {"none": 0, "sub": 1, "up": 2, "avg": 3, "paeth": 4}

    def __init__(self, fh, width: int, height: int, level: int = PNG_LEVEL, filter: str = PNG_FILTER,
                 workers: int = WRITE_WORKERS):
        if filter not in self.FILTERS:
            raise ValueError(f"unknown PNG filter {filter!r}")
        self.fh, self.width, self.height = fh, width, height
        self.level, self.filter, self.workers = int(level), filter, max(1, int(workers))
        self._prev = np.zeros((1, width * 3), np.uint8)
        self._adler = 1
        self._window = b""
        self._pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        fh.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        self._pending = bytearray(b"\x78\x01")  # zlib header: deflate, 32K window, fastest

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.fh.write(struct.pack(">I", len(data)))
        self.fh.write(kind)
        self.fh.write(data)
        self.fh.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))

    def _filtered(self, band: np.ndarray) -> bytes:
        h = band.shape[0]
        cur = band.reshape(h, -1)
        prev = np.concatenate([self._prev, cur[:-1]], axis=0)
        self._prev = cur[-1:].copy()
        out = np.empty((h, 1 + cur.shape[1]), np.uint8)
        out[:, 0] = self.FILTERS[self.filter]
        f = out[:, 1:]
        if self.filter == "none":
            f[:] = cur
        elif self.filter == "up":
            np.subtract(cur, prev, out=f)  # uint8 wraps mod 256 as PNG wants
        else:
            left = np.zeros_like(cur)
            left[:, 3:] = cur[:, :-3]
            if self.filter == "sub":
                np.subtract(cur, left, out=f)
            elif self.filter == "avg":
                pred = ((left.astype(np.uint16) + prev) >> 1).astype(np.uint8)
                np.subtract(cur, pred, out=f)
            else:  # paeth
                ul = np.zeros_like(prev)
                ul[:, 3:] = prev[:, :-3]
                a, b, c = left.astype(np.int16), prev.astype(np.int16), ul.astype(np.int16)
                p = a + b - c
                pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
                pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)
                np.subtract(cur, pred, out=f)
        return out.tobytes()

    def _deflate_piece(self, data: bytes, zdict: bytes) -> bytes:
        c = zlib.compressobj(self.level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict) if zdict else \
            zlib.compressobj(self.level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
        return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)

    def write(self, band: np.ndarray) -> None:
        data = self._filtered(np.ascontiguousarray(band))
        self._adler = zlib.adler32(data, self._adler)
        n = self.workers if len(data) >= (1 << 20) else 1
        step = -(-len(data) // n)
        mv = memoryview(data)
        pieces = [bytes(mv[i:i + step]) for i in range(0, len(data), step)]
        dicts = [self._window] + [bytes(mv[max(0, i - 32768):i]) for i in range(step, len(data), step)]
        if self._pool is not None and len(pieces) > 1:
            comp = list(self._pool.map(self._deflate_piece, pieces, dicts))
        else:
            comp = [self._deflate_piece(p, d) for p, d in zip(pieces, dicts)]
        self._window = bytes(mv[max(0, len(data) - 32768):])
        self._pending += b"".join(comp)
        if len(self._pending) >= (1 << 20):
            self._chunk(b"IDAT", bytes(self._pending))
            self._pending = bytearray()

    def close(self) -> None:
        tail = zlib.compressobj(self.level, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # empty final block
        self._pending += tail + struct.pack(">I", self._adler & 0xFFFFFFFF)
        self._chunk(b"IDAT", bytes(self._pending))
        self._pending = bytearray()
        self._chunk(b"IEND", b"")
        if self._pool is not None:
            self._pool.shutdown()


def _write_png(tmp: Path, rows: Rows, width: int, height: int, level: int | None, png_filter: str | None,
               workers: int) -> None:
    with open(tmp, "wb") as fh:
        w = PngStreamWriter(fh, width, height, PNG_LEVEL if level is None else level, png_filter or PNG_FILTER,
                            workers)
        for _, band in _checked(rows, width, height):
            w.write(band)
        w.close()


def _to_memmap(path: Path, rows: Rows, width: int, height: int) -> np.memmap:
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(height, width, 3))
    for y0, band in _checked(rows, width, height):
        mm[y0:y0 + band.shape[0]] = band
    mm.flush()
    return mm


def _write_via_memmap(tmp: Path, rows: Rows, width: int, height: int, encode: Callable[[np.ndarray], bytes]) -> None:
    raw = tmp.with_name(tmp.name + ".raw.npy")
    try:
        mm = _to_memmap(raw, rows, width, height)
        data = encode(mm)
        del mm
        with open(tmp, "wb") as fh:
            fh.write(data)
    finally:
        raw.unlink(missing_ok=True)


def encode_jxl(rgb: np.ndarray, effort: int = 1, workers: int = WRITE_WORKERS) -> bytes:
    import imagecodecs

    return imagecodecs.jpegxl_encode(rgb, lossless=True, effort=effort, numthreads=workers)


def encode_webp(rgb: np.ndarray, method: int = 0) -> bytes:
    import imagecodecs

    return imagecodecs.webp_encode(rgb, lossless=True, method=method, level=None)


def write_rows(path: str | os.PathLike, width: int, height: int, rows: Rows, fmt: str | None = None, *,
               compression: str | None = None, level: int | None = None, tile: int = TIFF_TILE,
               png_filter: str | None = None, workers: int = WRITE_WORKERS, effort: int = 1) -> dict:
    """Write row bands ``(y0, (h, width, 3) uint8)`` (in order, covering ``height`` rows) to
    ``path`` in ``fmt`` (default: from the suffix). Returns ``{"path", "format", "bytes"}``.

    Memory: TIFF and PNG hold one band of rows plus the encoder's buffers; JPEG XL and WebP
    go through a raw memmap on disk next to the output (their encoders take whole images).
    """
    path = Path(path)
    fmt = fmt or format_for_path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if fmt == "tiff":
            _write_tiff(tmp, rows, width, height, compression, level, tile, workers)
        elif fmt == "png":
            _write_png(tmp, rows, width, height, level, png_filter, workers)
        elif fmt == "jxl":
            if not jxl_available():
                raise RuntimeError("JPEG XL codec not available in imagecodecs")
            _write_via_memmap(tmp, rows, width, height, lambda a: encode_jxl(a, effort, workers))
        elif fmt == "webp":
            if max(width, height) > WEBP_MAX_SIDE:
                raise ValueError(f"WebP cannot store {width}x{height} (max side {WEBP_MAX_SIDE})")
            _write_via_memmap(tmp, rows, width, height, encode_webp)
        elif fmt == "npy":
            raw = tmp.with_name(tmp.name + ".npy")
            mm = _to_memmap(raw, rows, width, height)
            del mm
            os.replace(raw, tmp)
        else:
            raise ValueError(f"unknown format {fmt!r}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(path), "format": fmt, "bytes": path.stat().st_size}


def write_array(path: str | os.PathLike, rgb: np.ndarray, fmt: str | None = None, rows_per_band: int = 512,
                **opts) -> dict:
    """Write an in-memory ``(H, W, 3)`` uint8 image with :func:`write_rows` (same formats)."""
    rgb = _as_rgb(np.asarray(rgb))
    h, w = rgb.shape[:2]
    bands = ((y, rgb[y:y + rows_per_band]) for y in range(0, h, rows_per_band))
    return write_rows(path, w, h, bands, fmt, **opts)
