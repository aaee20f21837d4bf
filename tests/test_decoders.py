"""Strip-wise decoding (curation/decoders.py) gives the pixels of the whole-image path.

The reference is the old path, kept here verbatim in spirit: OpenCV ``IMREAD_UNCHANGED``, then
the whole-image ``_normalise`` (float32 alpha over white, ``round(v/257)``) and the orientation
on the whole array. Strips are made tiny (``STRIP_BYTES``) so every image spans many of them.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from curation import decoders, reasons
from curation.imageio import ImageHeader, ImageReadError, decode_rgb

H, W = 29, 37  # odd sides: strips, tiles and the middle row of a flip all have remainders


@pytest.fixture(autouse=True)
def _small_strips(monkeypatch):
    monkeypatch.setattr(decoders, "STRIP_BYTES", 97)  # a handful of rows per strip


def _old_to_uint8(img):
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype in (np.float32, np.float64):
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return img


def _old_normalise(img):
    """The whole-image conversion this module replaces (BGR/BGRA/grey in, RGB out)."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(_old_to_uint8(img), cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        s = 65535.0 if img.dtype == np.uint16 else 255.0
        alpha = img[:, :, 3:4].astype(np.float32) / s
        color = img[:, :, :3].astype(np.float32) / s
        out = color * alpha + (1.0 - alpha)
        return cv2.cvtColor(np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(_old_to_uint8(img), cv2.COLOR_BGR2RGB)


def _old_decode(data: bytes, orientation: int = 1) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    return decoders.orient(_old_normalise(img), orientation)


def _decode(tmp_path, data: bytes, fmt: str, orientation: int = 1, name: str = "x") -> np.ndarray:
    p = tmp_path / f"{name}.{fmt}"
    p.write_bytes(data)
    h, w = decoders.oriented_shape(H, W, orientation)
    out = decoders.decode_to_rgb(p, ImageHeader(fmt, w, h, orientation, "?"))
    assert out.dtype == np.uint8 and out.shape == (h, w, 3) and out.flags.c_contiguous
    return out


# -- a PNG writer that uses every filter type (0-4, row by row) ------------------------------------


def _filter_row(ft: int, x: np.ndarray, up: np.ndarray, bpp: int) -> np.ndarray:
    x, up = x.astype(np.int32), up.astype(np.int32)
    left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
    ul = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
    if ft == 0:
        pred = np.zeros_like(x)
    elif ft == 1:
        pred = left
    elif ft == 2:
        pred = up
    elif ft == 3:
        pred = (left + up) // 2
    else:
        p = left + up - ul
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - ul)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
    return ((x - pred) % 256).astype(np.uint8)


def _png(lines: np.ndarray, color_type: int, depth: int, plte: bytes = b"", trns: bytes = b"", idat_split: int = 7) -> bytes:
    """PNG from packed scanlines ``(H, row_bytes)`` uint8, rows filtered with types 0,1,2,3,4,..."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    bpp = max(1, channels * depth // 8)
    raw = bytearray()
    up = np.zeros(lines.shape[1], np.uint8)
    for y, row in enumerate(lines):
        ft = y % 5
        raw.append(ft)
        raw += _filter_row(ft, row, up, bpp).tobytes()
        up = row
    z = zlib.compress(bytes(raw), 6)

    def chunk(t: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xFFFFFFFF)

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, depth, color_type, 0, 0, 0))
    if plte:
        out += chunk(b"PLTE", plte)
    if trns:
        out += chunk(b"tRNS", trns)
    for i in range(0, len(z), idat_split):  # many IDAT chunks, split anywhere
        out += chunk(b"IDAT", z[i : i + idat_split])
    return out + chunk(b"IEND", b"")


def _samples_png(samples: np.ndarray, color_type: int, depth: int, **kw) -> bytes:
    if depth == 16:
        lines = samples.astype(">u2").view(np.uint8).reshape(H, -1)
    elif depth == 8:
        lines = samples.reshape(H, -1).astype(np.uint8)
    else:  # pack 1/2/4-bit values, big-endian bit order
        v = samples.reshape(H, W).astype(np.uint8)
        bits = ((v[..., None] >> np.arange(depth - 1, -1, -1)) & 1).reshape(H, W * depth).astype(np.uint8)
        lines = np.packbits(bits, axis=1)
    return _png(lines, color_type, depth, **kw)


RNG = np.random.default_rng(7)


def _rand(shape, depth):
    hi = (1 << depth) - 1
    a = RNG.integers(0, hi + 1, shape)
    a.flat[:6] = [0, hi, 0, hi, hi // 2, 1]  # extremes present
    return a.astype(np.uint16 if depth == 16 else np.uint8)


PNG_CASES = {
    "grey1": (0, 1, (H, W)),
    "grey2": (0, 2, (H, W)),
    "grey4": (0, 4, (H, W)),
    "grey8": (0, 8, (H, W)),
    "grey16": (0, 16, (H, W)),
    "rgb8": (2, 8, (H, W, 3)),
    "rgb16": (2, 16, (H, W, 3)),
    "ga8": (4, 8, (H, W, 2)),
    "ga16": (4, 16, (H, W, 2)),
    "rgba8": (6, 8, (H, W, 4)),
    "rgba16": (6, 16, (H, W, 4)),
}


@pytest.mark.parametrize("name", sorted(PNG_CASES))
def test_png_layouts_match_whole_image_path(tmp_path, name):
    ct, depth, shape = PNG_CASES[name]
    data = _samples_png(_rand(shape, depth), ct, depth)
    for orientation in (1, 6) if name in ("rgb8", "rgba16") else (1,):
        np.testing.assert_array_equal(_decode(tmp_path, data, "png", orientation), _old_decode(data, orientation))


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
@pytest.mark.parametrize("with_trns", [False, True])
def test_png_palette_matches(tmp_path, depth, with_trns):
    n = 1 << depth
    plte = RNG.integers(0, 256, (n, 3)).astype(np.uint8).tobytes()
    trns = RNG.integers(0, 256, max(1, n // 2)).astype(np.uint8).tobytes() if with_trns else b""
    data = _samples_png(_rand((H, W), depth), 3, depth, plte=plte, trns=trns)
    np.testing.assert_array_equal(_decode(tmp_path, data, "png"), _old_decode(data))


@pytest.mark.parametrize("depth", [8, 16])
def test_png_colour_key_and_grey_trns_match(tmp_path, depth):
    rgb = _rand((H, W, 3), depth)
    rgb[::3, ::2] = rgb[0, 0]  # many pixels carry the key colour
    key = struct.pack(">HHH", *[int(v) for v in rgb[0, 0]])
    data = _samples_png(rgb, 2, depth, trns=key)
    np.testing.assert_array_equal(_decode(tmp_path, data, "png"), _old_decode(data))
    grey = _rand((H, W), depth)
    data = _samples_png(grey, 0, depth, trns=struct.pack(">H", int(grey[0, 0])))
    np.testing.assert_array_equal(_decode(tmp_path, data, "png", name="g"), _old_decode(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_for_row_and_whole_paths(tmp_path, orientation):
    rgba16 = _samples_png(_rand((H, W, 4), 16), 6, 16)  # PNG rows path
    np.testing.assert_array_equal(_decode(tmp_path, rgba16, "png", orientation), _old_decode(rgba16, orientation))
    rgb = _rand((H, W, 3), 8)
    ok, jpg = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 90])  # whole path, in place / copy
    np.testing.assert_array_equal(_decode(tmp_path, jpg.tobytes(), "jpeg", orientation), _old_decode(jpg.tobytes(), orientation))


def _pack(sub: np.ndarray, depth: int) -> np.ndarray:
    """Samples ``(h, w[, C])`` -> packed scanlines ``(h, row_bytes)`` uint8 at ``depth`` bits."""
    h = sub.shape[0]
    if depth == 16:
        return sub.astype(">u2").view(np.uint8).reshape(h, -1)
    if depth == 8:
        return sub.reshape(h, -1).astype(np.uint8)
    v = sub.reshape(h, -1).astype(np.uint8)
    bits = ((v[..., None] >> np.arange(depth - 1, -1, -1)) & 1).reshape(h, -1).astype(np.uint8)
    return np.packbits(bits, axis=1)


def _adam7_png(samples: np.ndarray, color_type: int, depth: int, plte: bytes = b"") -> bytes:
    """An interlaced (Adam7) PNG: each pass packed and filtered on its own, all filter types."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    bpp = max(1, channels * depth // 8)
    raw = bytearray()
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        lines = _pack(sub, depth)
        up = np.zeros(lines.shape[1], np.uint8)
        for y, row in enumerate(lines):
            raw.append(y % 5)
            raw += _filter_row(y % 5, row, up, bpp).tobytes()
            up = row

    def chunk(t: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xFFFFFFFF)

    h, w = samples.shape[:2]
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1))
    if plte:
        out += chunk(b"PLTE", plte)
    z = zlib.compress(bytes(raw))
    for i in range(0, len(z), 11):
        out += chunk(b"IDAT", z[i : i + 11])
    return out + chunk(b"IEND", b"")


@pytest.mark.parametrize("name", ["rgba8", "rgba16", "grey2", "ga16", "rgb8"])
def test_interlaced_pngs_decode_pass_by_pass(tmp_path, name):
    ct, depth, shape = PNG_CASES[name]
    data = _adam7_png(_rand(shape, depth), ct, depth)
    assert data[28] == 1  # IHDR interlace method: Adam7
    np.testing.assert_array_equal(_decode(tmp_path, data, "png", 7), _old_decode(data, 7))


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 1), (3, 7)])
def test_interlaced_tiny_pngs_skip_their_empty_passes(tmp_path, size):
    data = _adam7_png(_rand(size + (4,), 16), 6, 16)
    p = tmp_path / "tiny.png"
    p.write_bytes(data)
    got = decoders.decode_to_rgb(p, ImageHeader("png", size[1], size[0], 1, "RGBA"))
    np.testing.assert_array_equal(got, _old_decode(data))


def test_interlaced_palette_and_opencv_written_pngs_match(tmp_path):
    plte = RNG.integers(0, 256, (16, 3)).astype(np.uint8).tobytes()
    data = _adam7_png(_rand((H, W), 4), 3, 4, plte=plte)
    np.testing.assert_array_equal(_decode(tmp_path, data, "png"), _old_decode(data))
    ok, enc = cv2.imencode(".png", _rand((H, W, 4), 16))
    np.testing.assert_array_equal(_decode(tmp_path, enc.tobytes(), "png", 3), _old_decode(enc.tobytes(), 3))


def test_eight_bit_composite_table_is_the_float32_rule():
    c, a = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    img = np.dstack([c, c, c, a])  # BGRA
    np.testing.assert_array_equal(decoders.composite_over_white(img[..., :3], img[..., 3]), _old_normalise(img)[..., ::-1])


def test_corrupt_png_stream_is_a_reason_not_a_crash(tmp_path):
    data = bytearray(_samples_png(_rand((H, W, 4), 16), 6, 16, idat_split=10**6))
    data[60:80] = b"\x00" * 20  # inside the zlib stream (CRCs are not checked by the decoder)
    with pytest.raises(ImageReadError) as err:
        _decode(tmp_path, bytes(data), "png")
    assert err.value.reason == reasons.CORRUPT
    short = _png(np.zeros((H - 5, W * 8), np.uint8), 6, 16)  # IHDR says H rows, the data has H - 5
    with pytest.raises(ImageReadError) as err:
        _decode(tmp_path, short, "png", name="short")
    assert err.value.reason == reasons.CORRUPT and "ends" in err.value.detail


def test_png_with_an_impossible_bit_depth_is_corrupt(tmp_path):
    data = bytearray(_samples_png(_rand((H, W, 3), 8), 2, 8))
    data[24] = 4  # IHDR bit depth: RGB at 4 bits does not exist
    with pytest.raises(ImageReadError) as err:
        _decode(tmp_path, bytes(data), "png")
    assert err.value.reason == reasons.CORRUPT and "bit depth 4" in err.value.detail


# -- TIFF -------------------------------------------------------------------------------------------


def _tiff(arr, **kw) -> bytes:
    f = io.BytesIO()
    tifffile.imwrite(f, arr, **kw)
    return f.getvalue()


def _raw_normalised(arr: np.ndarray, associated: bool = False) -> np.ndarray:
    """The whole-image rule applied to the file's true samples (RGB(A) order)."""
    if arr.ndim == 3 and arr.shape[2] == 2:  # grey + alpha as BGRA
        arr = np.dstack([arr[..., 0]] * 3 + [arr[..., 1]])
    elif arr.ndim == 3:
        arr = np.dstack([arr[..., 2::-1], arr[..., 3:]])
    if associated:
        s = 65535.0 if arr.dtype == np.uint16 else 255.0
        out = arr[..., :3].astype(np.float32) / s + (1.0 - arr[..., 3:4].astype(np.float32) / s)
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)[..., ::-1]
    return _old_normalise(arr)


TIFF_CASES = {
    "grey8": ((H, W), 8, dict(photometric="minisblack")),
    "grey16_tiled": ((H, W), 16, dict(photometric="minisblack", tile=(16, 16), compression="zlib")),
    "rgb8_lzw": ((H, W, 3), 8, dict(photometric="rgb", compression="lzw", rowsperstrip=3)),
    "rgb16_bigendian": ((H, W, 3), 16, dict(photometric="rgb", byteorder=">")),
    "rgb16_tiled": ((H, W, 3), 16, dict(photometric="rgb", tile=(16, 16))),
    "rgba8": ((H, W, 4), 8, dict(photometric="rgb", extrasamples=["unassalpha"], rowsperstrip=4, compression="zlib")),
    "rgba16": ((H, W, 4), 16, dict(photometric="rgb", extrasamples=["unassalpha"])),
    "rgba16_assoc": ((H, W, 4), 16, dict(photometric="rgb", extrasamples=["assocalpha"], rowsperstrip=5)),
    "ga16": ((H, W, 2), 16, dict(photometric="minisblack", extrasamples=["unassalpha"], rowsperstrip=2)),
    "rgb16_planar": ((H, W, 3), 16, dict(photometric="rgb", planarconfig="separate", rowsperstrip=4, compression="zlib")),
    "rgba8_planar_tiled": ((H, W, 4), 8, dict(photometric="rgb", planarconfig="separate", extrasamples=["unassalpha"],
                                             tile=(16, 16))),
    "rgb8_planar_raw": ((H, W, 3), 8, dict(photometric="rgb", planarconfig="separate")),
    "ga8_planar": ((H, W, 2), 8, dict(photometric="minisblack", planarconfig="separate", extrasamples=["unassalpha"])),
}


@pytest.mark.parametrize("name", sorted(TIFF_CASES))
def test_tiff_layouts_follow_the_whole_image_rule(tmp_path, name):
    shape, depth, kw = TIFF_CASES[name]
    arr = _rand(shape, depth)
    data = _tiff(np.moveaxis(arr, 2, 0) if "planar" in name else arr, **kw)
    got = _decode(tmp_path, data, "tiff")
    np.testing.assert_array_equal(got, _raw_normalised(arr, "assoc" in name))
    if name in ("grey8", "grey16_tiled", "rgb8_lzw", "rgb16_bigendian", "rgba16", "rgb8_planar_raw"):
        np.testing.assert_array_equal(got, _old_decode(data))  # what OpenCV gave for these
    # not OpenCV's for: 8-bit unassociated alpha (libtiff premultiplied it, then it was applied
    # again), associated alpha (applied again), grey + alpha (dropped), 16-bit planar (misread)


def test_cmyk_tiff_matches_opencv_and_float_falls_back(tmp_path):
    cmyk = _rand((H, W, 4), 8)
    data = _tiff(cmyk, photometric="separated", rowsperstrip=3)
    np.testing.assert_array_equal(_decode(tmp_path, data, "tiff", 8), _old_decode(data, 8))
    floats = _tiff(RNG.random((H, W, 3), dtype=np.float32), photometric="rgb")  # the whole-image path
    np.testing.assert_array_equal(_decode(tmp_path, floats, "tiff", name="f"), _old_decode(floats))


# -- JPEG and decode_rgb ---------------------------------------------------------------------------


@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_decoder_gives_opencvs_pixels(tmp_path, subsampling, progressive):
    """simplejpeg (libjpeg-turbo) is adopted for YCbCr / grey JPEGs only where its pixels are
    OpenCV's: 4:4:4, 4:2:2 and 4:2:0 (fancy upsampling, accurate IDCT), baseline and progressive."""
    f = io.BytesIO()
    Image.fromarray(_rand((H, W, 3), 8)).save(f, "JPEG", quality=85, subsampling=subsampling, progressive=progressive)
    np.testing.assert_array_equal(_decode(tmp_path, f.getvalue(), "jpeg"), _old_decode(f.getvalue()))


def test_jpeg_grey_and_cmyk_match(tmp_path):
    grey = _rand((H, W), 8)
    ok, enc = cv2.imencode(".jpg", grey)
    np.testing.assert_array_equal(_decode(tmp_path, enc.tobytes(), "jpeg"), _old_decode(enc.tobytes()))
    f = io.BytesIO()
    Image.fromarray(_rand((H, W, 4), 8), "CMYK").save(f, "JPEG", quality=90)
    np.testing.assert_array_equal(_decode(tmp_path, f.getvalue(), "jpeg", 6, name="c"), _old_decode(f.getvalue(), 6))


def test_decode_rgb_applies_exif_orientation_through_the_strip_path(tmp_path):
    rgba = _rand((H, W, 4), 8)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "o.png"
    Image.fromarray(rgba, "RGBA").save(p, exif=exif)
    got = decode_rgb(p, 10**6)
    assert got.shape == (W, H, 3)
    np.testing.assert_array_equal(got, _old_decode(p.read_bytes(), 6))


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_decode_rgb_rotates_once_when_the_file_carries_exif(tmp_path, fmt):
    """OpenCV's colour decode would apply EXIF itself; the orientation must be applied once."""
    exif = Image.Exif()
    exif[0x0112] = 8
    p = tmp_path / f"e.{fmt}"
    Image.fromarray(_rand((H, W, 3), 8), "RGB").save(p, "PNG" if fmt == "png" else "JPEG", exif=exif)
    got = decode_rgb(p, 10**6)
    np.testing.assert_array_equal(got, _old_decode(p.read_bytes(), 8))


@pytest.mark.parametrize("associated", [False, True])
def test_composite16_kernel_is_the_float32_rule_bit_for_bit(associated):
    c = RNG.integers(0, 65536, 400_000).astype(np.uint16)
    a = RNG.integers(0, 65536, 400_000).astype(np.uint16)
    a[:65536] = np.arange(65536)  # every alpha, with colours at the ends and the middle
    c[:65536:3], c[1:65536:3] = 0, 65535
    px = np.stack([c, a], axis=1).reshape(1, -1, 2)
    got = decoders.composite16(px, px.shape[1], 2, big_endian=False, associated=associated)
    assert got is not None, "no C compiler: the kernel is what this test checks"
    np.testing.assert_array_equal(got[0, :, 0], decoders._composite_f32(c[:, None], a[:, None], associated)[:, 0])
    be = decoders.composite16(px.astype(">u2").view(np.uint8), px.shape[1], 2, big_endian=True, associated=associated)
    np.testing.assert_array_equal(be, got)


def test_without_c_kernels_the_pixels_are_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(decoders, "_unfilter_kernel", lambda: (None, "off"))
    monkeypatch.setattr(decoders, "_composite16_kernel", lambda: (None, "off"))
    for name in ("rgba16", "ga8", "rgb8"):
        ct, depth, shape = PNG_CASES[name]
        data = _samples_png(_rand(shape, depth), ct, depth)
        np.testing.assert_array_equal(_decode(tmp_path, data, "png", 5, name=name), _old_decode(data, 5))
    arr = _rand((H, W, 4), 16)
    got = _decode(tmp_path, _tiff(arr, photometric="rgb", extrasamples=["assocalpha"], rowsperstrip=3), "tiff", 2)
    np.testing.assert_array_equal(got, decoders.orient(_raw_normalised(arr, True), 2))


def test_cmyk_in_place_conversion_owned_and_borrowed_buffers():
    cmyk = _rand((H, W, 4), 8)
    k = cmyk[..., 3:4].astype(int)
    want = (k - ((255 - cmyk[..., :3].astype(int)) * k >> 8)).astype(np.uint8)  # OpenCV's rule
    np.testing.assert_array_equal(decoders.cmyk_to_rgb_in_place(cmyk.copy()), want)
    borrowed = np.frombuffer(cmyk.tobytes(), np.uint8).reshape(H, W, 4)
    np.testing.assert_array_equal(decoders.cmyk_to_rgb_in_place(borrowed), want)
    kernel = decoders._cmyk_kernel
    decoders._cmyk_kernel = lambda: (None, "off")  # the numpy strips give the same bytes
    try:
        np.testing.assert_array_equal(decoders.cmyk_to_rgb_in_place(cmyk.copy()), want)
    finally:
        decoders._cmyk_kernel = kernel


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="madvise(MADV_DONTNEED) is Linux's")
def test_a_transposing_orientation_releases_the_decoded_rows_it_has_placed():
    """Orientations 5-8 of a whole decode fill a (W, H, 3) array; the source rows already placed
    are given back as they go (their pages read as zeros), so both never exist in full."""
    src = np.full((600, 500, 3), 7, np.uint8)
    keep = src.copy()
    out = decoders._orient_whole(src, 6)
    np.testing.assert_array_equal(out, decoders.orient(keep, 6))
    assert (src == 0).mean() > 0.9  # released (all but partial pages at the ends)


def test_release_rows_stays_inside_the_array():
    block = np.full(3 * 65536, 5, np.uint8)  # one allocation: the middle third is "the array"
    arr = block[65536 : 2 * 65536].reshape(256, 256)
    assert decoders.release_rows(arr, 200, 10_000) or not __import__("sys").platform.startswith("linux")
    assert (block[2 * 65536 :] == 5).all() and (block[:65536] == 5).all()
    page_rows = -(-__import__("os").sysconf("SC_PAGE_SIZE") // 256)
    assert (arr[: 200 - page_rows] == 5).all()  # at most the page holding row 200's start goes too


@pytest.mark.parametrize("orientation", [1, 3, 6])
def test_webp_with_alpha_matches(tmp_path, orientation):
    ok, enc = cv2.imencode(".webp", _rand((H, W, 4), 8), [cv2.IMWRITE_WEBP_QUALITY, 101])  # lossless
    np.testing.assert_array_equal(_decode(tmp_path, enc.tobytes(), "webp", orientation), _old_decode(enc.tobytes(), orientation))


# -- decoding from an open file (issue 16.1) ----------------------------------------------------------


def _file_object_cases() -> dict:
    """name -> (file bytes, format, the mode probe reports), one per layout the decoders branch on."""
    cases = {}
    for name in ("rgb8", "rgba8", "rgba16", "ga8", "grey4"):
        ct, depth, shape = PNG_CASES[name]
        cases[f"png_{name}"] = (_samples_png(_rand(shape, depth), ct, depth), "png", "?")
    lut = _rand((256, 3), 8)
    cases["png_palette_trns"] = (_samples_png(_rand((H, W), 8), 3, 8, plte=lut.tobytes(),
                                              trns=bytes(range(0, 256, 2))), "png", "P")
    for name in ("rgb8_lzw", "rgb16_bigendian", "rgb16_planar", "rgba8_planar_tiled", "ga8_planar", "grey16_tiled"):
        shape, depth, kw = TIFF_CASES[name]
        arr = _rand(shape, depth)
        cases[f"tiff_{name}"] = (_tiff(np.moveaxis(arr, 2, 0) if "planar" in name else arr, **kw), "tiff", "?")
    cases["tiff_float_whole"] = (_tiff(RNG.random((H, W, 3), dtype=np.float32), photometric="rgb"), "tiff", "?")
    for sub in (0, 2):
        f = io.BytesIO()
        Image.fromarray(_rand((H, W, 4), 8), "CMYK").save(f, "JPEG", quality=90, subsampling=sub)
        cases[f"jpeg_cmyk_{sub}"] = (f.getvalue(), "jpeg", "CMYK")
    f = io.BytesIO()
    Image.fromarray(_rand((H, W, 3), 8)).save(f, "JPEG", quality=90)
    cases["jpeg_rgb"] = (f.getvalue(), "jpeg", "RGB")
    f = io.BytesIO()
    Image.fromarray(_rand((H, W, 4), 8), "RGBA").save(f, "WEBP", lossless=True)
    cases["webp_rgba"] = (f.getvalue(), "webp", "RGBA")
    return cases


FILE_CASES = _file_object_cases()


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("name", sorted(FILE_CASES))
def test_decoding_from_a_file_object_gives_the_pixels_of_the_bytes(tmp_path, name, orientation):
    """decode_to_rgb takes a binary file object where it takes a path (the reader contract
    decodes from the file it hashed): the pixels are those of the bytes, it reads the file from
    its start wherever the caller left it, and it does not close it."""
    data, fmt, mode = FILE_CASES[name]
    p = tmp_path / f"x.{fmt}"
    p.write_bytes(data)
    h, w = decoders.oriented_shape(H, W, orientation)
    header = ImageHeader(fmt, w, h, orientation, mode)
    want = decoders.decode_to_rgb(p, header, data)
    with open(p, "rb") as fh:
        fh.seek(5)  # not at the start: the decoder seeks
        got = decoders.decode_to_rgb(fh, header)
        assert not fh.closed
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(decoders.decode_to_rgb(p, header), want)


@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("progressive", [False, True])
def test_cmyk_jpeg_fed_a_piece_at_a_time_gives_simplejpegs_pixels(tmp_path, subsampling, progressive):
    """CMYK JPEG from a file object: libjpeg-turbo through Pillow's incremental decoder into one
    CMYK buffer (the file's bytes never held), the pixels of the simplejpeg path (which holds
    them) and of OpenCV, per subsampling, baseline and progressive."""
    f = io.BytesIO()
    Image.fromarray(_rand((H, W, 4), 8), "CMYK").save(f, "JPEG", quality=85, subsampling=subsampling,
                                                       progressive=progressive)
    data = f.getvalue()
    with io.BytesIO(data) as fh:
        got = decoders.decode_jpeg_cmyk_stream(fh)
    assert got is not None and got.shape == (H, W, 3) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, decoders.decode_jpeg(None, 1, data))
    np.testing.assert_array_equal(got, _old_decode(data))
    with io.BytesIO(data[: len(data) // 2]) as fh:  # cut short: a reason, not a crash
        with pytest.raises(ImageReadError) as err:
            decoders.decode_jpeg_cmyk_stream(fh)
    assert err.value.reason == reasons.TRUNCATED
    rgb = io.BytesIO()
    Image.fromarray(_rand((H, W, 3), 8)).save(rgb, "JPEG")
    assert decoders.decode_jpeg_cmyk_stream(rgb) is None  # not CMYK: the caller decodes it otherwise
