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
  .tiff    deflate on request; tiles encoded in parallel by tifffile; reduced-
           resolution levels (an overview, 1/4, 1/8, ...) in SubIFDs of page 0
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

**Reduced-resolution levels.** A TIFF also gets downscaled copies of itself, written as SubIFDs
(``NewSubfileType`` = reduced image) of its first page while the rows stream in:

* a **pyramid**: level ``f`` (``f`` = 4, 8, 16, ..., while its long edge is at least
  :data:`TIFF_PYRAMID_MIN_EDGE`) is ``ceil(H/f) x ceil(W/f)``, each pixel the mean of the
  ``f x f`` block of the image it covers (the first level from the image, every further one the
  2x2 mean of the one before; blocks at the right / bottom edge average the pixels they have);
* an **overview** (an image with a long edge of at least 4x 2048 px): the image area-resampled
  to a long edge of :data:`TIFF_OVERVIEW_LONG_EDGE` (2048) in bands of
  :data:`TIFF_OVERVIEW_BAND_ROWS` rows -- the same pixels as a band-wise downscaled read of the
  full image (``curation.captioning.geometry.downscaled_read(src, 2048, 1024)``), read instead
  of computed by whoever wants a 2048 view (the analysis copies of the region-artifact check and
  MSFI are 2048 too; the captions views, at most ``captions.vlm_max_pixels`` = 1 MP, come from
  the 1/8 level).

Together +14 % on the file (100 MP photo: pyramid 10 %, overview 4 %). A reader that wants a
downscaled whole image or a downscaled crop decodes the coarsest level that still has the
resolution it needs (:meth:`TiffRegionSource.reduced`, used by
:func:`curation.captioning.geometry.read_region`): the overview is ~1/30 of the pixels of a full
decode. Readers that know nothing of SubIFDs (tifffile, PIL) see the full-resolution image as
before. ``write_rows(..., pyramid=False)`` writes neither. ``write_rows(..., pyramid_first=2)``
adds a **1/2 level** (not the default): +42 % instead of +14 % on the file (100 MP photo: 210
instead of 168 MB, 148 MB without levels), for crops that need a 2-4x reduction (a 1-4 MP
region sent to the VLM at ~1 MP), which then decode 1/4 of the pixels (``benchmarks/captioning.py``:
the 16 typical instance crops decode 0.28 instead of 0.38 of the image's pixels, 4 large ones 0.10
instead of 0.30). Files with any set of levels are read alike.

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
TIFF_PYRAMID_FIRST = 4          # side reduction of the first pyramid level (then 8, 16, ...)
TIFF_PYRAMID_MIN_EDGE = 256     # no pyramid level with a long edge below this
TIFF_OVERVIEW_LONG_EDGE = 2048  # the overview level (0: none); captions.caption_view_long_edge
TIFF_OVERVIEW_BAND_ROWS = 1024  # rows per band of its area resampling (captions.read.band_rows)


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


def _as_rgb(a: np.ndarray, associated: bool = False) -> np.ndarray:
    """Pixels of a region -> ``(h, w, 3)`` uint8 RGB with the reader contract's rules (those of
    :func:`curation.imageio.decode_rgb`): grey replicated, grey + alpha and RGBA composited over
    white (``associated``: premultiplied alpha), never an alpha channel dropped or passed on."""
    if a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8:
        return a
    if a.ndim == 2 and a.dtype == np.uint8:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim == 3 and a.shape[2] == 1 and a.dtype == np.uint8:
        return np.repeat(a, 3, axis=2)
    from curation.decoders import strip_to_rgb

    n = 1 if a.ndim == 2 else a.shape[2]
    kind = {1: "grey", 2: "ga", 3: "rgb", 4: "rgba"}.get(n)
    if kind is None or a.ndim not in (2, 3):
        from curation.imageio import ImageReadError
        from curation.reasons import UNSUPPORTED_FORMAT

        raise ImageReadError(UNSUPPORTED_FORMAT, f"{n} samples per pixel (shape {a.shape})")
    return strip_to_rgb(a, kind + ("_assoc" if associated and kind in ("ga", "rgba") else ""))


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


class _Threads:
    """Holds a source's decode thread pool (shared by the file's levels)."""

    pool: ThreadPoolExecutor | None = None


class TiffRegionSource:
    """Region reads from a tiled or stripped 8-bit TIFF, decoding only the segments touched.

    ``cache_bytes`` bounds the LRU of decoded segments (default 96 MB: a full row of 512²
    tiles of a 16k-wide image), so reading a band of rows twice (overlapping tile rows) does
    not decode twice. Segments are decoded over ``workers`` threads (the codecs release the GIL).

    :meth:`levels` gives the file's reduced-resolution levels (SubIFDs of the first page, see
    the module docstring) as region sources of their own, sharing this one's file handle, with
    their reduction ``fx``, ``fy`` (image pixels per level pixel; 1 for the image itself);
    :meth:`reduced` picks the one to downscale from.
    """

    def __init__(self, path: str | os.PathLike, cache_bytes: int = 96 << 20, workers: int = 2,
                 max_pixels: int | None = None):
        import tifffile

        from curation.imageio import ImageReadError, check_regular, output_max_pixels
        from curation.reasons import TOO_MANY_PIXELS

        check_regular(path)  # a FIFO / device / broken link is refused, never opened
        self.path = str(path)
        self._tf = tifffile.TiffFile(self.path)
        try:
            self._setup(self._tf.pages[0], cache_bytes, workers)
            limit = int(max_pixels or output_max_pixels())
            if self.width * self.height > limit:  # before any segment is decoded
                raise ImageReadError(TOO_MANY_PIXELS, f"{self.width}x{self.height} = {self.width * self.height} > {limit}")
        except ImageReadError:
            self._tf.close()
            raise
        except ValueError as e:
            self._tf.close()
            raise ValueError(f"{path}: {e}") from None
        self._lock = threading.Lock()  # the file handle is shared with the levels
        self.fx = self.fy = 1.0        # reduction with respect to the full image
        self._owner = True
        self._levels: list[TiffRegionSource] | None = None
        self._threads = _Threads()     # one decode pool, made on first use, shared with the levels

    def _setup(self, page: Any, cache_bytes: int, workers: int) -> None:
        if page.dtype != np.uint8:
            raise ValueError(f"only 8-bit TIFF supported for region reads, got {page.dtype}")
        if page.planarconfig != 1 and page.samplesperpixel > 1:
            raise ValueError("planar (separate) TIFF not supported for region reads")
        spp, photometric = int(page.samplesperpixel), int(page.photometric)
        # region reads hand the stored samples on: only layouts that need no colour conversion
        # (palette, CMYK, YCbCr, min-is-white, Lab, ... and any EXIF rotation take the decoder)
        if not ((photometric == 1 and spp in (1, 2)) or (photometric == 2 and spp in (3, 4))):
            raise ValueError(f"TIFF photometric {photometric} with {spp} samples is decoded whole, not by region")
        tag = page.tags.get(274)  # Orientation
        if tag is not None and int(tag.value) != 1:
            raise ValueError(f"TIFF orientation {int(tag.value)} is decoded whole, not by region")
        self.associated = tuple(getattr(page, "extrasamples", ()) or ())[:1] == (1,) and spp in (2, 4)
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
        self.workers = max(1, int(workers))
        self.decoded_segments = 0  # for tests / benchmarks: how many segments were decoded

    def levels(self) -> list[TiffRegionSource]:
        """The reduced-resolution levels, finest first: SubIFDs of the first page marked as
        reduced images, 8-bit with this image's samples, smaller on both sides. A level whose
        size is this one's divided by a power of two (rounded up or down) has exactly that
        reduction, any other ``fx = W / w``, ``fy = H / h``. Empty for a file without them (and
        for a level itself); a level that cannot be read by region is left out."""
        if self._levels is not None:
            return self._levels
        import tifffile

        out: list[TiffRegionSource] = []
        for i, off in enumerate(getattr(self.page, "subifds", None) or ()):
            try:
                with self._lock:
                    self._tf.filehandle.seek(off)
                    page = tifffile.TiffPage(self._tf, (0, i))
                if not int(getattr(page, "subfiletype", 0) or 0) & 1 or int(page.samplesperpixel) != self.samples:
                    continue
                lv = object.__new__(TiffRegionSource)
                lv._setup(page, max(1 << 20, self._cache_bytes // 4), self.workers)
            except Exception:  # a level we cannot use is skipped, never an error
                continue
            if not (0 < lv.width < self.width and 0 < lv.height < self.height):
                continue
            f = 1 << max(1, round(float(np.log2(self.width / lv.width))))
            if abs(self.width / f - lv.width) < 1 and abs(self.height / f - lv.height) < 1:
                lv.fx = lv.fy = float(f)
            else:
                lv.fx, lv.fy = self.width / lv.width, self.height / lv.height
            lv.path, lv._tf, lv._lock, lv._owner, lv._levels = self.path, self._tf, self._lock, False, []
            lv._threads = self._threads
            out.append(lv)
        self._levels = sorted(out, key=lambda lv: lv.fx * lv.fy)
        return self._levels

    def reduced(self, fx: float, fy: float) -> TiffRegionSource:
        """The coarsest of this image and its levels whose reduction is at most ``fx`` across
        and ``fy`` down (so it still has at least the resolution asked for)."""
        best: TiffRegionSource = self
        for lv in self.levels():
            if lv.fx <= fx * (1 + 1e-9) and lv.fy <= fy * (1 + 1e-9) and lv.fx * lv.fy > best.fx * best.fy:
                best = lv
        return best

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
                segs = list(self._pool().map(self._decode, todo, blobs))
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

    def _pool(self) -> ThreadPoolExecutor:
        """The decode threads, started once per file (not per read); stopped by :meth:`close`,
        or when the source is garbage collected."""
        with self._lock:
            if self._threads.pool is None:
                import weakref

                self._threads.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tiff-decode")
                weakref.finalize(self._threads, self._threads.pool.shutdown, wait=False)
            return self._threads.pool

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
        return _as_rgb(out, self.associated)

    def close(self) -> None:
        self._cache.clear()
        if self._owner:
            for lv in self._levels or ():
                lv._cache.clear()
            if self._threads.pool is not None:
                self._threads.pool.shutdown(wait=True)
                self._threads.pool = None
            self._tf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Decode a whole image to ``(H, W, 3)`` uint8 RGB through the reader contract of
    :mod:`curation.imageio` (a regular file, bounded bytes, the header within ``max_pixels``,
    complete data; default limit: :func:`curation.imageio.output_max_pixels`, the largest SR
    output): PNG/JPEG/WebP/TIFF via :func:`~curation.imageio.decode_rgb` (plain 8-bit RGB / grey
    TIFFs, the corpus' own, with tifffile's threads; WebP with imagecodecs), JPEG XL via
    imagecodecs, ``.npy`` via numpy (shape checked on a memory map first)."""
    from curation.imageio import (ImageReadError, check_regular, decode_rgb, output_max_pixels, probe,
                                  read_source, validate)
    from curation.reasons import TOO_MANY_PIXELS

    limit = int(max_pixels or output_max_pixels())
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        check_regular(p)
        shape = np.load(p, mmap_mode="r").shape
        if len(shape) >= 2 and shape[0] * shape[1] > limit:
            raise ImageReadError(TOO_MANY_PIXELS, f"array of shape {shape} over {limit} pixels")
        return _as_rgb(np.load(p))
    if suffix == ".jxl":
        import imagecodecs

        src = read_source(p, limit)  # JPEG XL: the size is only known after decoding (corpus files)
        return _as_rgb(np.asarray(imagecodecs.jpegxl_decode(src.data, numthreads=WRITE_WORKERS)))
    src = read_source(p, limit)
    head = probe(src, limit)
    if head.format == "tiff":
        validate(src, head)
        a = _plain_tiff(src.data)
        if a is not None:
            return a
    elif head.format == "webp":
        import imagecodecs

        validate(src, head)
        return _as_rgb(np.asarray(imagecodecs.webp_decode(src.data)))
    return decode_rgb(src, limit)


def _plain_tiff(data: bytes) -> np.ndarray | None:
    """An 8-bit, chunky, unrotated RGB(A) / grey(+alpha) TIFF decoded with tifffile's threads
    (what the corpus writes); None for any other layout (the decoder's conversions apply)."""
    import io

    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tf:
        page = tf.pages[0]
        try:
            probe_src = object.__new__(TiffRegionSource)
            probe_src._setup(page, 1 << 20, 1)  # the region-read rules: layouts without conversion
        except ValueError:
            return None
        a = page.asarray(maxworkers=WRITE_WORKERS)
    return _as_rgb(a, probe_src.associated)


def open_source(src: Any, max_pixels: int | None = None):
    """A region source for an array, a tiled/stripped TIFF (region reads), a ``.npy`` (memmap)
    or any other image file (decoded whole), within ``max_pixels`` (default: the largest SR
    output, :func:`curation.imageio.output_max_pixels`; inputs pass ``io.max_pixels``). A path
    that is no regular file is refused without being opened."""
    if isinstance(src, (ArraySource, TiffRegionSource)):
        return src
    if isinstance(src, np.ndarray):
        return ArraySource(src)
    from curation.imageio import ImageReadError, check_regular, output_max_pixels
    from curation.reasons import TOO_MANY_PIXELS

    limit = int(max_pixels or output_max_pixels())
    p = Path(src)
    check_regular(p)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        a = np.load(p, mmap_mode="r")
        if a.ndim >= 2 and a.shape[0] * a.shape[1] > limit:
            raise ImageReadError(TOO_MANY_PIXELS, f"array of shape {a.shape} over {limit} pixels")
        return ArraySource(a)
    if suffix in (".tif", ".tiff"):
        try:
            return TiffRegionSource(p, max_pixels=limit)
        except ImageReadError:
            raise
        except ValueError:
            pass
    return ArraySource(read_image(p, limit))


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


def pyramid_factors(width: int, height: int, tile: int = TIFF_TILE, first: int | None = None,
                    min_edge: int | None = None) -> list[int]:
    """The side reductions of the pyramid levels a TIFF of this size gets: ``first`` (default
    :data:`TIFF_PYRAMID_FIRST`), then doubling, while the level's long edge is at least
    ``min_edge`` (:data:`TIFF_PYRAMID_MIN_EDGE`) and the factor divides the tile height (a
    level row must come from one strip of tiles). ``first < 2``: none."""
    first = TIFF_PYRAMID_FIRST if first is None else first
    min_edge = TIFF_PYRAMID_MIN_EDGE if min_edge is None else min_edge
    out: list[int] = []
    f = int(first)
    while f >= 2 and tile % f == 0 and max(-(-width // f), -(-height // f)) >= min_edge:
        out.append(f)
        f *= 2
    return out


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """``(ceil(h/f), ceil(w/f), c)`` uint8: the rounded mean of each ``f x f`` block of ``a``
    (blocks at the bottom / right edge average the pixels they have)."""
    import cv2

    h, w, c = a.shape
    hq, wq = h // f, w // f
    out = np.empty((-(-h // f), -(-w // f), c), np.uint8)
    if hq and wq:
        out[:hq, :wq] = cv2.resize(a[:hq * f, :wq * f], (wq, hq), interpolation=cv2.INTER_AREA).reshape(hq, wq, c)
    if wq * f < w and hq:
        out[:hq, wq] = np.round(a[:hq * f, wq * f:].reshape(hq, f, w - wq * f, c).mean(axis=(1, 2)))
    if hq * f < h:
        if wq:
            out[hq, :wq] = np.round(a[hq * f:, :wq * f].reshape(h - hq * f, wq, f, c).mean(axis=(0, 2)))
        if wq * f < w:
            out[hq, wq] = np.round(a[hq * f:, wq * f:].reshape(-1, c).mean(axis=0))
    return out


class _Pyramid:
    """The reduced levels of an image, filled strip by strip (each strip a multiple of every
    factor's rows, except the last): the first level from the strip, each further one from the
    level before (2x2 means)."""

    def __init__(self, width: int, height: int, factors: list[int]):
        self.factors = list(factors)
        self.levels = [np.empty((-(-height // f), -(-width // f), 3), np.uint8) for f in self.factors]
        self._rows = [0] * len(self.factors)

    def add(self, strip: np.ndarray) -> None:
        prev, pf = strip, 1
        for k, f in enumerate(self.factors):
            lv = block_mean(prev, f // pf)
            self.levels[k][self._rows[k]:self._rows[k] + lv.shape[0]] = lv
            self._rows[k] += lv.shape[0]
            prev, pf = lv, f


def overview_size(width: int, height: int, long_edge: int | None = None) -> tuple[int, int] | None:
    """``(w, h)`` of the overview of an image (its long edge at ``long_edge``, default
    :data:`TIFF_OVERVIEW_LONG_EDGE`, each side rounded as
    ``curation.captioning.geometry.target_size`` does); None unless the image's long edge is at
    least 4x that (the overview is then at most 1/16 of the pixels, like the first pyramid level;
    a smaller image is read from its pyramid)."""
    long_edge = TIFF_OVERVIEW_LONG_EDGE if long_edge is None else long_edge
    if not long_edge or max(width, height) < 4 * long_edge:
        return None
    s = long_edge / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


class _Overview:
    """The overview, filled strip by strip: rows gathered into bands of ``step`` rows, each band
    area-resampled to its share of the output rows -- exactly what a band-wise downscaled read
    of the full image computes (``curation.captioning.geometry.read_region``)."""

    def __init__(self, width: int, height: int, size: tuple[int, int], band_rows: int | None = None):
        self.tw, self.th = size
        self.height = height
        band_rows = TIFF_OVERVIEW_BAND_ROWS if band_rows is None else band_rows
        self.step = max(int(band_rows), -(-height // self.th))  # at least one output row per band
        self._buf = np.empty((min(self.step, height), width, 3), np.uint8)
        self._filled = self._b0 = 0
        self.image = np.empty((self.th, self.tw, 3), np.uint8)

    def add(self, strip: np.ndarray) -> None:
        pos = 0
        while pos < strip.shape[0]:
            take = min(self._buf.shape[0] - self._filled, strip.shape[0] - pos)
            self._buf[self._filled:self._filled + take] = strip[pos:pos + take]
            self._filled += take
            pos += take
            if self._filled == self._buf.shape[0] or self._b0 + self._filled == self.height:
                self._flush()

    def _flush(self) -> None:
        import cv2

        b0, b1 = self._b0, self._b0 + self._filled
        r0, r1 = round(b0 * self.th / self.height), round(b1 * self.th / self.height)
        if r1 > r0:
            self.image[r0:r1] = cv2.resize(self._buf[:self._filled], (self.tw, r1 - r0),
                                           interpolation=cv2.INTER_AREA).reshape(r1 - r0, self.tw, 3)
        self._b0, self._filled = b1, 0


def _tiles_from_rows(rows: Rows, width: int, height: int, tile: int,
                     on_strip: Callable[[np.ndarray], None] | None = None) -> Iterator[np.ndarray]:
    """Re-cut row bands into TIFF tiles (row-major). Tiles are copies: tifffile batches them.
    ``on_strip`` sees every full-width strip of ``tile`` rows (the last may be shorter)."""
    buf = np.empty((tile, width, 3), np.uint8)
    filled = 0

    def flush(n: int):
        if on_strip is not None:
            on_strip(buf[:n])
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
                tile: int, workers: int, pyramid: bool = True, pyramid_first: int | None = None) -> None:
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
    factors = pyramid_factors(width, height, tile, pyramid_first) if pyramid else []
    pyr = _Pyramid(width, height, factors) if factors else None
    ov_size = overview_size(width, height) if pyramid else None
    ov = _Overview(width, height, ov_size) if ov_size else None
    sinks = [x.add for x in (pyr, ov) if x is not None]

    def on_strip(strip: np.ndarray) -> None:
        for add in sinks:
            add(strip)

    # classic TIFF offsets are 32-bit: a > ~4 GB file (compression can fail to help) needs BigTIFF
    bigtiff = height * width * 3 * (1.15 if sinks else 1.0) > 2**32 - 2**25
    with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
        n_sub = len(factors) + (ov is not None)
        tw.write(
            _tiles_from_rows(rows, width, height, tile, on_strip if sinks else None), shape=(height, width, 3),
            dtype=np.uint8, photometric="rgb", tile=(tile, tile), maxworkers=max(1, workers),
            buffersize=4 * max(1, workers) * tile_bytes, metadata=None, subifds=n_sub or None, **kw,
        )
        reduced = (list(pyr.levels) if pyr else []) + ([ov.image] if ov else [])
        for lv in sorted(reduced, key=lambda a: -a.shape[0] * a.shape[1]):   # largest first
            tw.write(lv, photometric="rgb", tile=(tile, tile), subfiletype=1, maxworkers=max(1, workers),
                     metadata=None, **kw)


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
               png_filter: str | None = None, workers: int = WRITE_WORKERS, effort: int = 1,
               pyramid: bool = True, pyramid_first: int | None = None) -> dict:
    """Write row bands ``(y0, (h, width, 3) uint8)`` (in order, covering ``height`` rows) to
    ``path`` in ``fmt`` (default: from the suffix). Returns ``{"path", "format", "bytes"}``.
    ``pyramid`` (TIFF only): also write the reduced-resolution levels, overview and pyramid
    (module docstring); ``pyramid_first``: the side reduction of the first pyramid level
    (default :data:`TIFF_PYRAMID_FIRST` = 4; 2 adds a 1/2 level, +~1/4 of the image's pixels).

    Memory: TIFF and PNG hold one band of rows plus the encoder's buffers (a TIFF also its
    reduced levels, 1/16 + 1/64 + ... of the image, until it is written, and for the overview a
    band of 1024 rows); JPEG XL and WebP
    go through a raw memmap on disk next to the output (their encoders take whole images).
    """
    path = Path(path)
    fmt = fmt or format_for_path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if fmt == "tiff":
            _write_tiff(tmp, rows, width, height, compression, level, tile, workers, pyramid, pyramid_first)
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
