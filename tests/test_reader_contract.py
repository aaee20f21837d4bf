"""The one reader contract (issue 15.1) and content pinned to its id (issue 15.3).

Every entry point that reads an image -- curation (score-image, raw_pool, image_scores), the
corpus (SR input, seam check), captions, the bench and the metrics (``uhr metric``, ``uhr
bench``) -- goes through :mod:`curation.imageio`: a regular file (never a FIFO opened), the pixel
limit of the config before any allocation, a precise reason per class with its detail, full
validation (a corrupt JPEG scan is ``corrupt``, bytes after the end are allowed), every channel
layout normalised the same way; and a stage that reads a file recorded upstream checks that its
bytes still hash to the recorded id (``source_changed``). Each test here failed on the code
before the contract (see the issue's list of defects).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation import reasons
from curation.imageio import ImageReadError, decode_rgb, probe, read_checked

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 10_000_000
#: the address-space cap of the subprocesses that read a pixel bomb: the old code ran out of it
#: (MemoryError, no row) instead of taking the machine to 24 GB; the new one stays far below
AS_LIMIT_MB = 4096


def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    from curation.synth import generate_photo

    return generate_photo(w, h, seed=seed)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_declaring(w: int, h: int) -> bytes:
    """A ~100-byte PNG whose header declares ``w x h`` RGB pixels (valid chunks and CRCs)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
            + _chunk(b"IEND", b""))


def _jpeg_bytes(rgb: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=kw.pop("quality", 90), **kw)
    return buf.getvalue()


def _garbage_in_scan(data: bytes, n: int = 3000, seed: int = 0, no_ff: bool = False) -> bytes:
    """``n`` random bytes inserted in the middle of the (last) scan; the EOI marker is kept.
    ``no_ff``: the garbage holds no 0xFF byte (no marker: only libjpeg's warnings can tell)."""
    sos = data.rfind(b"\xff\xda")
    mid = sos + (len(data) - sos) // 2
    rng = np.random.default_rng(seed)
    junk = rng.integers(0, 255 if no_ff else 256, n, dtype=np.uint8).tobytes()
    return data[:mid] + junk + data[mid:]


def _run_capped(args: list[str], timeout: int = 120) -> tuple[subprocess.CompletedProcess, int, float]:
    """``uhr ARGS`` in a subprocess capped at :data:`AS_LIMIT_MB` of address space: (result,
    peak RSS in MB, wall seconds)."""
    code = ("import resource, sys\n"
            f"lim = {AS_LIMIT_MB} << 20\n"
            "resource.setrlimit(resource.RLIMIT_AS, (lim, lim))\n"
            "from cli.main import cli\n"
            "try:\n"
            "    cli.main(args=sys.argv[1:], prog_name='uhr', standalone_mode=False)\n"
            "finally:\n"
            "    print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    rss = [int(line.split()[1]) for line in out.stderr.splitlines() if line.startswith("MAXRSS_KB")]
    return out, (rss[-1] // 1024 if rss else -1), wall


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# =============================================================================================
# the pixel limit of the config, before any allocation, on the metric and bench path
# =============================================================================================
def test_pixel_bomb_is_refused_fast_by_uhr_metric_with_low_rss(tmp_path):
    """A ~100-byte PNG declaring 100000 x 100000 pixels: ``uhr metric glcm`` and
    ``compression_ratio`` answer ``too_many_pixels`` (the config's ``io.max_pixels``) within
    seconds, at the memory of a small image (the old path set ``MAX_IMAGE_PIXELS = None`` and
    went for 10-30 GB)."""
    from curation.config import load_config

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(100_000, 100_000))
    assert bomb.stat().st_size < 200
    small = tmp_path / "small.png"
    Image.fromarray(_photo(64, 48)).save(small)
    base, base_rss, _ = _run_capped(["metric", "glcm", str(small), "--json"])
    assert base.returncode == 0, base.stderr[-2000:]
    limit = int(load_config("paper").get("io.max_pixels"))
    for metric in ("glcm", "compression_ratio"):
        out, rss, wall = _run_capped(["metric", metric, str(bomb), "--json"])
        assert out.returncode == 0, out.stderr[-2000:]
        (row,) = _json_lines(out.stdout)
        assert row["value"] is None and "too_many_pixels" in row["reason"] and str(limit) in row["reason"], row
        assert wall < 60, wall
        assert rss < base_rss + 256, (metric, rss, base_rss)  # header read only: nothing allocated


def test_pixel_bomb_is_refused_by_every_bench_reader(tmp_path):
    """Each reader of the bench / metric / SR side refuses the bomb from its header: the bench
    runner's row (info and thumbnail), the FID, model and judge readers, the patch sampler, the
    SR source and the seam check -- in a capped subprocess, so the old readers fail here (out of
    memory) instead of swapping the machine."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(100_000, 100_000))
    code = f"""
import json, resource, sys
lim = {AS_LIMIT_MB} << 20
resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
path, thumb = sys.argv[1], sys.argv[2]
out = {{}}
def run(name, fn):
    try:
        out[name] = repr(fn())[:200]
    except BaseException as exc:
        out[name] = f"{{type(exc).__name__}}: {{exc}}"[:300]
from evaluation import runner
from evaluation.metrics import compression_ratio, fid_common, hf_models
from curation import patch_sampler
from curation.upscale import storage
from curation.final_filters import seams
run("image_info", lambda: runner._image_info(path))
run("thumbnail", lambda: runner._thumbnail(path, __import__("pathlib").Path(thumb)) or "no thumbnail")
run("fid_open_rgb", lambda: fid_common.open_rgb(path))
run("hf_open_image", lambda: hf_models.try_open_image(path)[1])
run("compression_header", lambda: compression_ratio.image_header(path))
run("patch_sampler", lambda: patch_sampler._as_pil(path))
run("sr_open_source", lambda: storage.open_source(path))
run("sr_read_image", lambda: storage.read_image(path))
run("seam_check", lambda: seams.seam_check_record(path))
print(json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code, str(bomb), str(tmp_path / "t.jpg")], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name, got in out.items():
        if name == "thumbnail":
            assert got == repr("no thumbnail"), got  # refused (the contract raised), no file written
            continue
        assert "too_many_pixels" in got, (name, got)
    assert not (tmp_path / "t.jpg").exists()


def test_uhr_bench_records_the_refusal_in_the_row(tmp_path):
    """``uhr bench`` on a model folder whose image is a pixel bomb: the run completes (capped
    subprocess), the row says ``too_many_pixels`` and every metric's value is null with it."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "b0.png").write_bytes(_png_declaring(100_000, 100_000))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"file_name": "b0.png", "short_caption": "s", "long_caption": "l"}) + "\n")
    out, rss, wall = _run_capped(["bench", str(model), "--prompts", str(prompts), "--metric", "glcm",
                                  "--metric", "compression_ratio", "--no-mlflow", "--judge", "none",
                                  "--out", str(tmp_path / "out"), "--data-root", str(tmp_path / "data"), "--json"],
                                 timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    (row,) = scores["rows"]
    assert row["reject_reason"] == reasons.TOO_MANY_PIXELS and "100000x100000" in row["error"], row
    for k in ("glcm", "compression_ratio"):
        assert row["values"][k] is None and "too_many_pixels" in row["reasons"][k], row


# =============================================================================================
# a precise reason per class, the detail in the row
# =============================================================================================
def test_jpeg_with_garbage_inside_its_scan_is_corrupt(tmp_path):
    """Garbage in the middle of a scan with the end marker kept: libjpeg only warns (OpenCV and
    Pillow return an image); the contract decodes the scans strictly and says ``corrupt``,
    whether the garbage holds bogus markers or none (only the decoder's warnings can tell)."""
    good = _jpeg_bytes(_photo(640, 480, 1))
    for i, no_ff in enumerate((False, True)):
        p = tmp_path / f"g{i}.jpg"
        p.write_bytes(_garbage_in_scan(good, seed=i, no_ff=no_ff))
        assert probe(p, LIMIT).width == 640  # the header is intact
        with pytest.raises(ImageReadError) as e:
            decode_rgb(p, LIMIT)
        assert e.value.reason == reasons.CORRUPT and e.value.detail, e.value


def test_progressive_and_cmyk_and_grey_jpegs_pass_the_strict_scan(tmp_path):
    rgb = _photo(300, 200, 2)
    for name, im, kw in (("prog", Image.fromarray(rgb), {"progressive": True}),
                         ("cmyk", Image.fromarray(rgb).convert("CMYK"), {}),
                         ("grey", Image.fromarray(rgb).convert("L"), {}),
                         ("rst", Image.fromarray(rgb), {"restart_marker_blocks": 4})):
        p = tmp_path / f"{name}.jpg"
        try:
            im.save(p, quality=90, **kw)
        except TypeError:  # a Pillow without restart markers
            continue
        assert decode_rgb(p, LIMIT).shape == (200, 300, 3), name


def test_trailing_bytes_after_the_end_marker_are_allowed(tmp_path):
    """A valid JPEG followed by 10 KB (more than the old 4 KB tail it searched for EOI): a pass,
    the same pixels (it was a false ``truncated``); the same for PNG after IEND."""
    rgb = _photo(320, 240, 3)
    data = _jpeg_bytes(rgb)
    ref = decode_rgb(_write(tmp_path / "a.jpg", data), LIMIT)
    rng = np.random.default_rng(0)
    p = _write(tmp_path / "trail.jpg", data + rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    assert np.array_equal(decode_rgb(p, LIMIT), ref)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    p = _write(tmp_path / "trail.png", buf.getvalue() + b"\x00" * 5000)
    assert np.array_equal(decode_rgb(p, LIMIT), rgb)


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def _cut_jpeg(tmp_path) -> Path:
    data = _jpeg_bytes(_photo(320, 240, 4))
    return _write(tmp_path / "cut.jpg", data[: len(data) * 2 // 3])


@pytest.mark.parametrize("make,reason", [
    (lambda d: _write(d / "t.txt.jpg", b"<!DOCTYPE html><html>404</html>\n"), reasons.NOT_AN_IMAGE),
    (lambda d: _write(d / "empty.png", b""), reasons.NOT_AN_IMAGE),
    (_cut_jpeg, reasons.TRUNCATED),
    (lambda d: _write(d / "bomb.png", _png_declaring(100_000, 100_000)), reasons.TOO_MANY_PIXELS),
    (lambda d: d / "missing.png", reasons.UNREADABLE),
])
def test_reason_per_class(tmp_path, make, reason):
    p = make(tmp_path)
    with pytest.raises(ImageReadError) as e:
        decode_rgb(p, LIMIT)
    assert e.value.reason == reason and e.value.detail, e.value


def test_png_with_a_damaged_idat_is_corrupt(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_photo(200, 150, 5)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    idat = data.find(b"IDAT")
    data[idat + 100:idat + 110] = b"\x00" * 10  # CRC no longer matches
    with pytest.raises(ImageReadError) as e:
        decode_rgb(_write(tmp_path / "d.png", bytes(data)), LIMIT)
    assert e.value.reason == reasons.CORRUPT and "CRC" in e.value.detail


def _gif(p: Path, frames: int) -> Path:
    ims = [Image.fromarray(_photo(80, 60, i)).convert("P") for i in range(frames)]
    ims[0].save(p, save_all=frames > 1, append_images=ims[1:])
    return p


def _apng(p: Path) -> Path:
    ims = [Image.fromarray(_photo(80, 60, i)) for i in range(3)]
    ims[0].save(p, save_all=True, append_images=ims[1:])
    return p


@pytest.mark.parametrize("make,reason", [
    (lambda d: _gif(d / "still.gif", 1), reasons.UNSUPPORTED_FORMAT),
    (lambda d: _gif(d / "anim.gif", 3), reasons.ANIMATED),
    (lambda d: (Image.fromarray(_photo(80, 60)).save(d / "a.bmp"), d / "a.bmp")[1], reasons.UNSUPPORTED_FORMAT),
    (lambda d: (Image.fromarray(_photo(80, 60)).save(d / "a.avif"), d / "a.avif")[1], reasons.UNSUPPORTED_FORMAT),
    (lambda d: _apng(d / "anim.png"), reasons.ANIMATED),
])
def test_gif_bmp_avif_and_animations_are_not_called_not_an_image(tmp_path, make, reason):
    """GIF, BMP and AVIF were all ``not_an_image``: they are images we do not read
    (``unsupported_format``), or ``animated`` when they hold several frames -- also when a
    misleading suffix names them (the content decides)."""
    try:
        p = make(tmp_path)
    except (KeyError, OSError) as exc:  # pragma: no cover - a Pillow without that encoder
        pytest.skip(f"cannot write the sample: {exc}")
    disguised = _write(tmp_path / f"disguised_{p.stem}.jpg", p.read_bytes())
    for q in (p, disguised):
        for fn in (probe, decode_rgb):
            with pytest.raises(ImageReadError) as e:
                fn(q, LIMIT)
            assert e.value.reason == reason, (q.name, fn.__name__, e.value)


# =============================================================================================
# not a regular file: refused without being opened (no hang on a FIFO)
# =============================================================================================
@pytest.mark.timeout(120)  # the old probe blocked forever opening the FIFO
def test_non_regular_files_are_refused_unopened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    for name in ("pipe.png", "dir.png", "broken.png", "loop_a"):
        for fn in (probe, decode_rgb, lambda p, m: read_checked(p, m)):
            with pytest.raises(ImageReadError) as e:
                fn(tmp_path / name, LIMIT)
            assert e.value.reason == reasons.NOT_A_REGULAR_FILE and e.value.detail, (name, e.value)
    # a symlink to a regular file is read (training folders link corpus blobs)
    Image.fromarray(_photo(40, 30)).save(tmp_path / "real.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    assert decode_rgb(tmp_path / "link.png", LIMIT).shape == (30, 40, 3)


def test_score_image_on_a_fifo_answers_instead_of_hanging(tmp_path):
    """``uhr score-image`` on a FIFO with no writer used to block forever in ``open``/``read``."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    out = subprocess.run([sys.executable, "-m", "cli.main", "score-image", str(fifo), "--json", "--profile", "test"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    (rec,) = _json_lines(out.stdout)
    assert rec["verdict"] == reasons.NOT_A_REGULAR_FILE and rec["reject_detail"] == "a FIFO", rec
    assert out.returncode == 1  # every path failed


def test_score_image_carries_the_detail(tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    p = tmp_path / "g.jpg"
    p.write_bytes(_garbage_in_scan(_jpeg_bytes(_photo(640, 480, 1))))
    res = CliRunner().invoke(cli, ["score-image", str(p), "--json", "--profile", "test"])
    (rec,) = _json_lines(res.output)
    assert rec["verdict"] == reasons.CORRUPT and rec["reject_detail"].startswith("invalid marker"), rec
    assert rec["image_id"]  # the bytes were hashed (one read)


# =============================================================================================
# channel layouts: grey + alpha TIFF through purification, the corpus and the seam check
# =============================================================================================
def _textured_grey_alpha(w: int = 800, h: int = 600, seed: int = 6) -> np.ndarray:
    grey = np.asarray(Image.fromarray(_photo(w, h, seed)).convert("L"))
    alpha = np.full((h, w), 255, np.uint8)
    alpha[: h // 8] = 128  # a half-transparent band: composited over white
    return np.dstack([grey, alpha])


def _write_ga_tiff(p: Path, ga: np.ndarray, associated: bool = False) -> Path:
    import tifffile

    tifffile.imwrite(p, ga, photometric="minisblack", extrasamples=[1 if associated else 2])
    return p


def _over_white(ga: np.ndarray) -> np.ndarray:
    g, a = ga[..., 0].astype(np.float32) / 255, ga[..., 1].astype(np.float32) / 255
    return np.clip(np.rint((g * a + 1 - a) * 255), 0, 255).astype(np.uint8)


def test_grey_alpha_tiff_decodes_composited_and_region_reads_agree(tmp_path):
    """A 2-channel TIFF: the decoder composites the alpha over white (OpenCV dropped it), and
    the SR / seam-check region reads give the very same pixels (they handed 2 channels on)."""
    from curation.upscale.storage import open_source, read_image

    ga = _textured_grey_alpha(300, 200)
    want = np.repeat(_over_white(ga)[..., None], 3, axis=2)
    p = _write_ga_tiff(tmp_path / "ga.tif", ga)
    got = decode_rgb(p, LIMIT)
    assert np.abs(got.astype(int) - want).max() <= 1
    src = open_source(p)
    try:
        assert np.array_equal(src.read(0, src.height), got)
    finally:
        src.close()
    assert np.array_equal(read_image(p), got)


@pytest.mark.parametrize("layout", ["grey", "ga", "ga_assoc", "rgb", "rgba", "grey16", "rgb16", "palette", "cmyk"])
def test_every_tiff_layout_reads_the_same_in_the_decoder_and_the_region_source(tmp_path, layout):
    """1, 2, 3 and 4 channels, 8 and 16 bits, palette and CMYK: the decoder gives (H, W, 3)
    uint8, and the SR / seam-check source (region reads, or the decoder for layouts that need a
    conversion) gives exactly the same pixels."""
    import tifffile

    from curation.upscale.storage import open_source

    rgb = _photo(96, 64, 7)
    p = tmp_path / f"{layout}.tif"
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    alpha = np.linspace(0, 255, 96, dtype=np.uint8)[None, :].repeat(64, 0)
    if layout == "grey":
        tifffile.imwrite(p, grey)
    elif layout in ("ga", "ga_assoc"):
        _write_ga_tiff(p, np.dstack([grey, alpha]), associated=layout == "ga_assoc")
    elif layout == "rgb":
        tifffile.imwrite(p, rgb, photometric="rgb")
    elif layout == "rgba":
        tifffile.imwrite(p, np.dstack([rgb, alpha]), photometric="rgb", extrasamples=[2])
    elif layout == "grey16":
        tifffile.imwrite(p, grey.astype(np.uint16) * 257)
    elif layout == "rgb16":
        tifffile.imwrite(p, rgb.astype(np.uint16) * 257, photometric="rgb")
    elif layout == "palette":
        Image.fromarray(rgb).convert("P").save(p)
    else:
        Image.fromarray(rgb).convert("CMYK").save(p)
    got = decode_rgb(p, LIMIT)
    assert got.shape == (64, 96, 3) and got.dtype == np.uint8
    if layout in ("grey", "grey16", "rgb", "rgb16"):
        assert np.array_equal(got, rgb if layout.startswith("rgb") else np.repeat(grey[..., None], 3, axis=2))
    src = open_source(p)
    try:
        assert np.array_equal(src.read(0, src.height), got), layout
    finally:
        src.close()


def _tiny_shard(root: Path, files: dict[str, bytes]) -> Path:
    shard = root / "raw" / "shard-00000"
    shard.mkdir(parents=True)
    for name, data in files.items():
        (shard / name).write_bytes(data)
    return root / "raw"


def test_grey_alpha_tiff_through_purification_the_corpus_and_seam_check(tmp_path, test_cfg):
    """The 2-channel TIFF passed purification, then failed in the corpus as ``upscale_failed``
    and made ``uhr seam-check`` report a ValueError: now it is scored composited, upscaled and
    checked like any image, and seam-check scores it."""
    from click.testing import CliRunner

    from cli.main import cli
    from curation import corpus as corpus_mod
    from curation.layout import DataLayout
    from curation.stages import run_image_scores, run_raw_pool
    from curation.upscale.tiers import tier_for

    ga_path = _write_ga_tiff(tmp_path / "ga.tif", _textured_grey_alpha())
    raw = _tiny_shard(tmp_path, {"ga.tif": ga_path.read_bytes()})
    layout = DataLayout.at(tmp_path / "data")
    rp = run_raw_pool(layout, raw, "shard-00000", test_cfg).rows
    assert [r["passed"] for r in rp] == [True], rp
    (row,) = run_image_scores(layout, "shard-00000", test_cfg).rows
    assert row["passed"] and not row.get("reject_reason"), row
    # the corpus stage on that candidate: upscaled, checked, no upscale_failed
    cand = {"image_id": rp[0]["image_id"], "sha256": rp[0]["sha256"], "shard": "shard-00000",
            "source_path": rp[0]["source_path"], "width": 800, "height": 600}
    assert tier_for(800, 600, test_cfg) == "2x"
    out = corpus_mod.process_image(cand, layout, test_cfg, "lanczos", _OkJudge(), "test")
    assert out["reject_reason"] != reasons.UPSCALE_FAILED, out.get("reject_detail")
    assert (out["width"], out["height"]) == (1600, 1200) and out["seam_flagged"] is False
    # the CLI seam check of the input and of the output
    for p in (ga_path, layout.resolve(out["output_path"])):
        res = CliRunner().invoke(cli, ["seam-check", str(p), "--json", "--stride", "128"])
        (rec,) = _json_lines(res.output)
        assert rec.get("error") is None and rec["max_ratio"] is not None and rec["seams"] > 0, rec


class _OkJudge:
    backend = "test"

    def run(self, reqs):
        from types import SimpleNamespace

        return [SimpleNamespace(status="ok", answer={"artifact": False, "reason": "test"}, reason="",
                                backend="test") for _ in reqs]


def test_image_scores_rows_carry_the_reason_and_detail_of_each_class(tmp_path, test_cfg):
    """Through raw_pool and image_scores: each bad input has its precise reason and a detail in
    the row; the trailing-bytes JPEG passes."""
    from curation.layout import DataLayout
    from curation.stages import run_image_scores, run_raw_pool

    good = _jpeg_bytes(_photo(800, 600, 8))
    gif = io.BytesIO()
    Image.fromarray(_photo(800, 600, 9)).convert("P").save(gif, "GIF")
    raw = _tiny_shard(tmp_path, {
        "a_trailing.jpg": good + os.urandom(8000),
        "b_garbage.jpg": _garbage_in_scan(good, seed=3),
        "c_still.gif": gif.getvalue(),
        "d_bomb.png": _png_declaring(100_000, 100_000),
    })
    layout = DataLayout.at(tmp_path / "data")
    rp = {Path(r["source_path"]).name: r for r in run_raw_pool(layout, raw, "shard-00000", test_cfg).rows}
    assert rp["c_still.gif"]["reject_reason"] == reasons.UNSUPPORTED_FORMAT
    assert rp["d_bomb.png"]["reject_reason"] == reasons.TOO_MANY_PIXELS and rp["d_bomb.png"]["reject_detail"]
    scores = {Path(r["source_path"]).name: r for r in run_image_scores(layout, "shard-00000", test_cfg).rows}
    assert scores["a_trailing.jpg"]["passed"], scores["a_trailing.jpg"]
    b = scores["b_garbage.jpg"]
    assert not b["passed"] and b["reject_reason"] == reasons.CORRUPT and b["reject_detail"], b


# =============================================================================================
# content pinned to its id: source_changed
# =============================================================================================
def test_a_raw_file_replaced_after_raw_pool_is_source_changed(tmp_path, test_cfg):
    """raw_pool hashed the file; it is replaced by another valid image before image_scores: the
    row is ``source_changed`` (the new bytes are never scored under the old id), and the result
    is not cached: restored, the file is scored under its id."""
    from curation.layout import DataLayout
    from curation.stages import run_image_scores, run_raw_pool

    a = _jpeg_bytes(_photo(800, 600, 10))
    raw = _tiny_shard(tmp_path, {"a.jpg": a})
    layout = DataLayout.at(tmp_path / "data")
    (r0,) = run_raw_pool(layout, raw, "shard-00000", test_cfg).rows
    path = raw / "shard-00000" / "a.jpg"
    path.write_bytes(_jpeg_bytes(_photo(800, 600, 11)))  # another valid image, same name
    (row,) = run_image_scores(layout, "shard-00000", test_cfg).rows
    assert row["image_id"] == r0["image_id"] and not row["passed"]
    assert row["reject_reason"] == reasons.SOURCE_CHANGED and r0["sha256"][:20] in row["reject_detail"], row
    path.write_bytes(a)  # restored: read again (neither the manifest nor the cache kept the refusal)
    (row,) = run_image_scores(layout, "shard-00000", test_cfg).rows
    assert row["passed"] and row["reject_reason"] is None, row


def test_corpus_input_replaced_after_raw_pool_is_source_changed(tmp_path, test_cfg):
    """The corpus stage reads the raw input again (SR tier: decoded; archive tier: copied): a
    replaced file is ``source_changed``, no corpus blob is written under the old id's bytes."""
    from curation import corpus as corpus_mod
    from curation.imageio import content_hash, image_id_from_hash
    from curation.layout import DataLayout
    from curation.upscale.tiers import tier_bounds

    layout = DataLayout.at(tmp_path / "data")
    b = tier_bounds(test_cfg)
    side = int((b["archive_min_pixels_inclusive"] ** 0.5)) + 8
    for name, (w, h) in (("sr.png", (800, 600)), ("native.png", (side, side))):
        p = tmp_path / "raw" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_photo(w, h, 12)).save(p)
        sha = content_hash(p)
        row = {"image_id": image_id_from_hash(sha), "sha256": sha, "shard": "shard-00000",
               "source_path": str(p), "width": w, "height": h}
        Image.fromarray(_photo(w, h, 13)).save(p)  # replaced after raw_pool
        out = corpus_mod.process_image(row, layout, test_cfg, "lanczos", _OkJudge(), "test")
        assert out["reject_reason"] == reasons.SOURCE_CHANGED and not out["passed"], (name, out)
        assert "sha256" in out["reject_detail"]
    blobs = [q for q in (layout.root / "corpus").rglob("*") if q.is_file()] if (layout.root / "corpus").exists() else []
    assert blobs == [], blobs


def test_captions_refuse_a_corpus_blob_whose_bytes_changed(tmp_path, test_cfg):
    """The captions stage reads a corpus blob by regions: it first re-hashes it against the id
    the corpus recorded, and a changed blob is ``source_changed`` (no model is called)."""
    from curation.captioning.stage import caption_row
    from curation.imageio import content_hash, image_id_from_hash
    from curation.layout import DataLayout

    layout = DataLayout.at(tmp_path / "data")
    blob = layout.root / "corpus" / "ab" / "x.png"
    blob.parent.mkdir(parents=True)
    Image.fromarray(_photo(200, 150, 14)).save(blob)
    sha = content_hash(blob)
    Image.fromarray(_photo(200, 150, 15)).save(blob)
    corpus_row = {"image_id": image_id_from_hash(sha), "sha256": sha, "shard": "shard-00000",
                  "output_path": layout.rel(blob), "parent_id": "p"}
    boom = _Boom()
    row = caption_row(layout, corpus_row, test_cfg, {"tagger": boom, "grounder": boom, "segmenter": boom},
                      {"llm": boom, "vlm": boom, "judge": boom}, "fp")
    assert row["reject_reason"] == reasons.SOURCE_CHANGED and not row["passed"] and row["reject_detail"], row


class _Boom:
    def __getattr__(self, name):
        raise AssertionError(f"a backend was called ({name}) for a blob whose bytes changed")


def test_expect_sha256_pins_decode_rgb(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(_photo(64, 48)).save(p)
    chk = read_checked(p, LIMIT)
    assert decode_rgb(p, LIMIT, expect_sha256=chk.source.sha256).shape == (48, 64, 3)
    assert decode_rgb(p, LIMIT, expect_sha256=chk.source.sha256[:20]).shape == (48, 64, 3)  # an image id
    with pytest.raises(ImageReadError) as e:
        decode_rgb(p, LIMIT, expect_sha256="0" * 64)
    assert e.value.reason == reasons.SOURCE_CHANGED


def test_hash_stamp_skips_the_reread_until_the_file_is_written(tmp_path, monkeypatch):
    """A region reader (captions) re-hashes a corpus blob only when its stat stamp changed: the
    second check reads nothing; a rewrite with the same size and the mtime set back (ctime moves)
    is hashed again and found ``source_changed``."""
    import curation.imageio as imageio
    from curation.imageio import hash_regular_file, write_hash_stamp

    blob = tmp_path / "blob.png"
    Image.fromarray(_photo(120, 90, 3)).save(blob)
    sha = imageio.content_hash(blob)
    stamps = tmp_path / "stamps"
    write_hash_stamp(blob, sha, stamps)  # what the corpus stage does after writing the blob
    reads = []
    real_open = imageio.open_regular
    monkeypatch.setattr(imageio, "open_regular", lambda p: reads.append(p) or real_open(p))
    assert hash_regular_file(blob, sha[:20], stamps=stamps) == sha and reads == []
    st = blob.stat()
    data = bytearray(blob.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back: only ctime tells
    with pytest.raises(ImageReadError) as e:
        hash_regular_file(blob, sha[:20], stamps=stamps)
    assert e.value.reason == reasons.SOURCE_CHANGED and len(reads) == 1
    # a stamp never vouches for an id it was not made for
    with pytest.raises(ImageReadError):
        hash_regular_file(blob, sha[:20], stamps=stamps)


def test_bench_says_why_an_entry_named_like_a_row_is_no_image(tmp_path):
    """``uhr bench`` on a folder whose files for four rows are a GIF, a broken symlink, a JPEG
    under ``.JSON`` and a text file under ``.json``: the JPEG is read by its content (as the
    shard lister does); the others' reasons name the entry and the contract's reason instead of
    a bare "missing image"; a row with nothing at all still says "missing image"."""
    from evaluation.runner import BenchPrompt, match_images

    Image.fromarray(_photo(40, 30)).save(tmp_path / "a.gif")
    (tmp_path / "b.png").symlink_to(tmp_path / "gone.png")
    Image.fromarray(_photo(40, 30)).save(tmp_path / "c.JSON", format="JPEG")
    (tmp_path / "e.json").write_text('{"caption": "not an image"}')
    prompts = [BenchPrompt(index=i, file_name=f"{s}.png", short_caption="x", long_caption="x")
               for i, s in enumerate("abcde")]
    m = match_images(tmp_path, prompts)
    assert m.missing == ["a", "b", "d", "e"] and m.paths == {"c": str(tmp_path / "c.JSON")}
    assert m.missing_reason("a").startswith("missing image (a.gif: unsupported_format"), m.missing_reason("a")
    assert "b.png: not_a_regular_file: a broken symlink" in m.missing_reason("b"), m.missing_reason("b")
    assert m.missing_reason("d") == "missing image"
    assert m.missing_reason("e").startswith("missing image (e.json: not_an_image"), m.missing_reason("e")


@pytest.mark.parametrize("kind", ["broken_symlink", "symlink_loop", "directory"])
def test_uhr_upscale_names_the_reason_for_an_input_that_is_no_file(tmp_path, kind):
    """``uhr upscale IN``: an IN that is no regular file is refused by the reader contract with
    its reason (one line, exit 1), not by click's bare usage check."""
    from click.testing import CliRunner

    from cli.main import cli

    src = tmp_path / "in.png"
    if kind == "broken_symlink":
        src.symlink_to(tmp_path / "gone.png")
    elif kind == "symlink_loop":
        src.symlink_to(src)
    else:
        src.mkdir()
    res = CliRunner().invoke(cli, ["upscale", str(src), str(tmp_path / "out.png"), "--scale", "2"])
    assert res.exit_code == 1 and "not_a_regular_file" in res.output, res.output


# =============================================================================================
# issue 16.1: the file is hashed and decoded through one open file descriptor, its bytes not held
# =============================================================================================


def _noise_files(tmp_path) -> dict[str, Path]:
    """A PNG, a TIFF and a CMYK JPEG of noise (files of a few MB, larger than their headers by
    far): the layouts decoded from the open file."""
    import tifffile

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    out = {"png": tmp_path / "n.png", "tiff": tmp_path / "n.tif", "jpeg_cmyk": tmp_path / "n.jpg"}
    Image.fromarray(rgb).save(out["png"], compress_level=1)
    tifffile.imwrite(out["tiff"], rgb.astype(np.uint16) << 8, photometric="rgb", compression="zlib")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "CMYK").save(out["jpeg_cmyk"], "JPEG", quality=100)
    return out


@pytest.mark.parametrize("kind", ["png", "tiff", "jpeg_cmyk"])
def test_decode_rgb_decodes_from_the_open_file_with_the_bytes_let_go(tmp_path, monkeypatch, kind):
    """decode_rgb on a path hands the decoder the open file it hashed (a file object, no bytes),
    and no copy of the file is alive while it decodes: the peak is the decode's, not the file's
    plus the decode's. The pixels are those of the bytes (the old path: a Source)."""
    import tracemalloc

    from curation import decoders
    from curation.imageio import read_source

    p = _noise_files(tmp_path)[kind]
    size = p.stat().st_size
    assert size > 1_000_000
    want = decode_rgb(read_source(p), LIMIT)  # the bytes held, decoded from them
    real, seen = decoders.decode_to_rgb, []

    def spy(path, header, data=None):
        seen.append((hasattr(path, "read"), data is None, tracemalloc.get_traced_memory()[0]))
        return real(path, header, data)

    monkeypatch.setattr(decoders, "decode_to_rgb", spy)
    tracemalloc.start()
    try:
        got = decode_rgb(p, LIMIT)
    finally:
        tracemalloc.stop()
    ((file_object, no_bytes, held),) = seen
    assert file_object and no_bytes
    assert held < size // 4, f"{held} bytes alive at the decode, the file has {size}"
    np.testing.assert_array_equal(got, want)


def _overwrite_same_size(p: Path) -> None:
    with open(p, "r+b") as fh:
        fh.seek(p.stat().st_size // 2)
        fh.write(b"\x00" * 64)


def _overwrite_mtime_set_back(p: Path) -> None:
    st = p.stat()
    _overwrite_same_size(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime as it was: ctime still moves


def _append(p: Path) -> None:
    with open(p, "ab") as fh:
        fh.write(b"\x00" * 10)


def _rename_replace(p: Path) -> None:
    tmp = p.with_name("tmp" + p.suffix)
    tmp.write_bytes(p.read_bytes())
    os.replace(tmp, p)


@pytest.mark.parametrize("change", [_overwrite_same_size, _overwrite_mtime_set_back, _append, _rename_replace])
@pytest.mark.parametrize("kind", ["png", "tiff", "jpeg_cmyk"])
def test_a_file_changed_between_its_hash_and_its_decode_is_source_changed(tmp_path, monkeypatch, kind, change):
    """The decoder reads the open file after the hash: a write in place (same size, or with the
    mtime set back), an append, or a rename-replace of the path (the open file's bytes intact,
    its ctime moved: refused, conservatively) before the decode is ``source_changed`` -- pixels
    of bytes other than the hashed ones are never returned."""
    from curation import decoders

    p = _noise_files(tmp_path)[kind]
    real = decoders.decode_to_rgb

    def write_then_decode(path, header, data=None):
        change(p)
        return real(path, header, data)

    monkeypatch.setattr(decoders, "decode_to_rgb", write_then_decode)
    with pytest.raises(ImageReadError) as e:
        decode_rgb(p, LIMIT)
    assert e.value.reason == reasons.SOURCE_CHANGED and "changed while being read" in e.value.detail


def test_score_image_reports_the_hash_and_header_of_a_file_refused_after_them(tmp_path, test_cfg):
    """score-image reads through open_pinned: a PNG whose IDAT CRC is wrong is ``corrupt`` and
    still carries the id of its bytes and its size; a file changed during the decode is
    ``source_changed`` with the id of the bytes hashed."""
    import hashlib

    from curation import decoders
    from curation.imageio import image_id_from_hash
    from curation.purify import score_image_record

    p = tmp_path / "bad.png"
    Image.fromarray(_photo(64, 48)).save(p)
    data = bytearray(p.read_bytes())
    data[data.find(b"IDAT") + 10] ^= 0xFF
    p.write_bytes(bytes(data))
    rec = score_image_record(str(p), test_cfg)
    assert rec["verdict"] == reasons.CORRUPT and "CRC" in rec["reject_detail"], rec
    assert rec["image_id"] == image_id_from_hash(hashlib.sha256(data).hexdigest())
    assert (rec["width"], rec["height"]) == (64, 48) and rec["screening"] is not None

    q = _noise_files(tmp_path)["png"]
    sha = hashlib.sha256(q.read_bytes()).hexdigest()
    real = decoders.decode_to_rgb
    try:
        decoders.decode_to_rgb = lambda path, header, data=None: (_append(q), real(path, header, data))[1]
        rec = score_image_record(str(q), test_cfg)
    finally:
        decoders.decode_to_rgb = real
    assert rec["verdict"] == reasons.SOURCE_CHANGED and rec["image_id"] == image_id_from_hash(sha), rec
