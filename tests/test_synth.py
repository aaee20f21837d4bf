"""The synthetic raw pool: layout, labels, calibration of clean images and of every defect."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from curation import reasons
from curation.config import load_config
from curation.imageio import ImageReadError, check_complete, decode_rgb, probe, to_grey
from curation.scores import absolute_verdicts, purification_scores
from curation.synth import DEFECTS, MIN_N, VARIANTS, generate_photo, make_raw_pool

N = 40
SEED = 0
EXPECTED = {
    "clean": reasons.PASS,
    "too_few_pixels": reasons.TOO_FEW_PIXELS,
    "min_side_too_short": reasons.MIN_SIDE_TOO_SHORT,
    "over_exposed": reasons.OVER_OR_UNDER_EXPOSED,
    "under_exposed": reasons.OVER_OR_UNDER_EXPOSED,
    "blurred": reasons.BLURRED,
    "flat": reasons.FLAT,
    "low_entropy": reasons.LOW_ENTROPY,
    "duplicate": reasons.DUPLICATE,
    "truncated": reasons.TRUNCATED,
    "not_an_image": reasons.NOT_AN_IMAGE,
}


@pytest.fixture(scope="module")
def cfg():
    return load_config("test")


@pytest.fixture(scope="module")
def pool(tmp_path_factory, cfg):
    out = tmp_path_factory.mktemp("synth") / "raw"
    summary = make_raw_pool(out, N, SEED, cfg)
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines() if line.strip()]
    return out, summary, labels


@pytest.fixture(scope="module")
def scored(pool, cfg):
    """Decoded-file scores of every label that decodes, keyed by file."""
    out, _, labels = pool
    max_px = int(cfg.get("io.max_pixels"))
    res = {}
    for lab in labels:
        if lab["defect"] in ("truncated", "not_an_image"):
            continue
        rgb = decode_rgb(out / lab["file"], max_px)
        assert rgb.shape == (lab["height"], lab["width"], 3), lab
        res[lab["file"]] = purification_scores(to_grey(rgb), cfg["purification"])
    return res


def screen(width: int, height: int, b: dict) -> str:
    """The resolution screen of section 3.1.1, computed here from the bounds on its own."""
    pixels, side = width * height, min(width, height)
    if pixels > b["large_min_pixels_exclusive"]:
        return reasons.PASS if side >= b["large_min_side"] else reasons.MIN_SIDE_TOO_SHORT
    if b["medium_min_pixels_inclusive"] <= pixels <= b["medium_max_pixels_inclusive"]:
        return reasons.PASS if side >= b["medium_min_side"] else reasons.MIN_SIDE_TOO_SHORT
    return reasons.TOO_FEW_PIXELS


def of(labels, defect):
    return [lab for lab in labels if lab["defect"] == defect]


# -- layout and labels ----------------------------------------------------------------------

def test_every_label_has_its_file_and_fields(pool):
    out, summary, labels = pool
    assert len(labels) == N == summary["n"]
    files = {lab["file"] for lab in labels}
    assert len(files) == N
    for lab in labels:
        assert (out / lab["file"]).is_file(), lab
        assert lab["expected_reason"] == EXPECTED[lab["defect"]]
        assert lab["expected_reason"] == reasons.PASS or lab["expected_reason"] in reasons.ALL
        assert lab["variant"] in ("plain",) + VARIANTS
        assert lab["format"] in ("jpeg", "png", "tiff", "webp") or lab["defect"] == "not_an_image"
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("img-*") if p.suffix != ".json"}
    assert on_disk == files


def test_shards_hold_at_most_shard_size_images(pool, cfg):
    out, summary, labels = pool
    size = int(cfg["sizes"]["shard_size"])
    shards = sorted(d for d in out.iterdir() if d.is_dir())
    assert [d.name for d in shards] == [f"shard-{i:05d}" for i in range(len(shards))]
    assert len(shards) == summary["shards"] == -(-N // size)
    for d in shards:
        images = [p for p in d.iterdir() if p.suffix != ".json"]
        assert 0 < len(images) <= size
    for i, lab in enumerate(labels):  # global index, in order
        assert lab["file"] == f"shard-{i // size:05d}/img-{i:06d}" + Path(lab["file"]).suffix


def test_licence_sidecars(pool):
    out, _, labels = pool
    missing = 0
    for lab in labels:
        side = (out / lab["file"]).with_suffix(".json")
        if side.exists():
            data = json.loads(side.read_text())
            assert data["origin"] == "synthetic:uhrforge"
            assert data["seed"] == SEED
            assert data["licence"] == lab["licence"] != "unknown"
        else:
            missing += 1
            assert lab["licence"] == "unknown"
    assert 1 <= missing <= 0.2 * N


def test_class_counts_and_variants(pool, cfg):
    _, summary, labels = pool
    counts = {d: len(of(labels, d)) for d in ("clean",) + DEFECTS}
    assert all(counts[d] >= 1 for d in DEFECTS), counts
    n_def = N - counts["clean"]
    assert abs(n_def - cfg["synth"]["defect_fraction"] * N) <= 2
    clean = of(labels, "clean")
    for v in VARIANTS:
        assert sum(lab["variant"] == v for lab in clean) == 1, v
    assert {lab["format"] for lab in clean} == {"jpeg", "png", "tiff", "webp"}
    assert summary["per_defect"] == {k: v for k, v in sorted(counts.items())}


def test_too_small_pool_is_refused(tmp_path, cfg):
    with pytest.raises(ValueError, match="too small"):
        make_raw_pool(tmp_path / "x", MIN_N - 1, 0, cfg)


def test_refuses_a_foreign_non_empty_folder(tmp_path, cfg):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        make_raw_pool(tmp_path, MIN_N, 0, cfg)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


# -- clean images -----------------------------------------------------------------------------

def test_clean_images_pass_screen_and_every_absolute_filter(pool, scored, cfg):
    out, _, labels = pool
    b = cfg.screen_bounds()
    p = cfg["purification"]
    for lab in of(labels, "clean"):
        hdr = probe(out / lab["file"], int(cfg.get("io.max_pixels")))
        assert (hdr.width, hdr.height) == (lab["width"], lab["height"]), lab
        assert screen(hdr.width, hdr.height, b) == reasons.PASS, lab
        s = scored[lab["file"]]
        assert all(absolute_verdicts(s, p).values()), (lab, s)
        # with margin
        assert s.exposure_fraction <= 0.5 * p["exposure"]["max_fraction"], (lab, s)
        assert s.laplacian_var >= 3 * p["sharpness"]["min_laplacian_var"], (lab, s)
        assert s.flat_fraction is None or s.flat_fraction <= 0.85, (lab, s)
        assert s.entropy >= 7.0, (lab, s)


def test_variants_are_what_they_claim(pool, cfg):
    out, _, labels = pool
    max_px = int(cfg.get("io.max_pixels"))
    by_variant = {lab["variant"]: lab for lab in of(labels, "clean") if lab["variant"] != "plain"}
    from PIL import Image

    modes = {}
    for v, lab in by_variant.items():
        with Image.open(out / lab["file"]) as im:
            modes[v] = (im.format, im.mode, im.size)
    assert modes["png16"][0] == "PNG" and modes["rgba"][:2] == ("PNG", "RGBA")
    import cv2

    raw16 = cv2.imread(str(out / by_variant["png16"]["file"]), cv2.IMREAD_UNCHANGED)
    assert raw16.dtype == np.uint16 and raw16.ndim == 3
    rgba = cv2.imread(str(out / by_variant["rgba"]["file"]), cv2.IMREAD_UNCHANGED)
    assert rgba.shape[2] == 4 and rgba[:, :, 3].min() < 200 and rgba[:, :, 3].max() == 255
    assert modes["grey"][:2] == ("JPEG", "L")
    assert modes["cmyk"][:2] == ("JPEG", "CMYK")
    assert modes["tiff"][0] == "TIFF" and modes["webp"][0] == "WEBP"
    ex = by_variant["exif_rotated"]
    hdr = probe(out / ex["file"], max_px)
    assert hdr.orientation == 6
    assert modes["exif_rotated"][2] == (ex["height"], ex["width"])  # stored rotated
    assert (hdr.width, hdr.height) == (ex["width"], ex["height"])  # displayed upright


# -- defects ----------------------------------------------------------------------------------

def test_screen_defects(pool, cfg):
    out, _, labels = pool
    b = cfg.screen_bounds()
    for d in ("too_few_pixels", "min_side_too_short"):
        for lab in of(labels, d):
            hdr = probe(out / lab["file"], int(cfg.get("io.max_pixels")))
            assert screen(hdr.width, hdr.height, b) == EXPECTED[d], lab


@pytest.mark.parametrize(
    "defect, failing",
    [
        ("over_exposed", {"exposure"}),
        ("under_exposed", {"exposure"}),
        ("blurred", {"sharpness"}),
        ("flat", {"flatness"}),
        ("low_entropy", set()),
    ],
)
def test_absolute_defects_trip_only_their_own_filter(pool, scored, cfg, defect, failing):
    _, _, labels = pool
    b = cfg.screen_bounds()
    for lab in of(labels, defect):
        assert screen(lab["width"], lab["height"], b) == reasons.PASS
        s = scored[lab["file"]]
        verdicts = absolute_verdicts(s, cfg["purification"])
        assert {k for k, ok in verdicts.items() if not ok} == failing, (lab, s)
        if defect in ("over_exposed", "under_exposed"):
            assert s.exposure_fraction > 0.35
            # the right direction: mostly > 250 or mostly < 5
            rgb = decode_rgb(pool[0] / lab["file"], int(cfg.get("io.max_pixels")))
            g = to_grey(rgb)
            hi, lo = float((g > 250).mean()), float((g < 5).mean())
            assert (hi > lo) == (defect == "over_exposed"), (hi, lo)
        if defect == "blurred":
            assert s.laplacian_var < 0.6 * cfg["purification"]["sharpness"]["min_laplacian_var"]
            assert s.flat_patches >= 1
        if defect == "flat":
            assert s.flat_patches >= 1 and s.flat_fraction == 1.0


def test_low_entropy_is_below_every_clean_image(pool, scored):
    _, _, labels = pool
    clean_min = min(scored[lab["file"]].entropy for lab in of(labels, "clean"))
    for lab in of(labels, "low_entropy"):
        assert scored[lab["file"]].entropy < clean_min - 3.0


def test_duplicates_are_byte_copies_of_earlier_clean_files(pool):
    out, _, labels = pool
    index = {lab["file"]: i for i, lab in enumerate(labels)}
    for lab in of(labels, "duplicate"):
        src = lab["duplicate_of"]
        assert index[src] < index[lab["file"]]
        assert labels[index[src]]["defect"] == "clean"
        assert (out / src).read_bytes() == (out / lab["file"]).read_bytes()


def test_truncated_files_are_detected(pool, cfg):
    out, _, labels = pool
    for lab in of(labels, "truncated"):
        path = out / lab["file"]
        hdr = probe(path, int(cfg.get("io.max_pixels")))  # the header survives
        assert hdr.format == lab["format"]
        with pytest.raises(ImageReadError) as exc:
            check_complete(path, hdr.format)
        assert exc.value.reason == reasons.TRUNCATED
        with pytest.raises(ImageReadError) as exc:
            decode_rgb(path, int(cfg.get("io.max_pixels")))
        assert exc.value.reason == reasons.TRUNCATED


def test_not_an_image(pool, cfg):
    out, _, labels = pool
    for lab in of(labels, "not_an_image"):
        assert lab["file"].endswith(".jpg")
        with pytest.raises(ImageReadError) as exc:
            probe(out / lab["file"], int(cfg.get("io.max_pixels")))
        assert exc.value.reason == reasons.NOT_AN_IMAGE


def test_summary_score_ranges(pool):
    _, summary, _ = pool
    r = summary["score_ranges"]
    assert r["clean"]["laplacian_var"][0] >= 30 and r["blurred"]["laplacian_var"][1] < 10
    assert r["flat"]["flat_fraction"][0] == 1.0
    assert r["over_exposed"]["exposure_fraction"][0] > 0.35


# -- determinism -------------------------------------------------------------------------------

def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_inputs_give_byte_identical_pools(tmp_path, cfg):
    a = make_raw_pool(tmp_path / "a", MIN_N + 2, 7, cfg)
    b = make_raw_pool(tmp_path / "b", MIN_N + 2, 7, cfg)
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert da == db and len(da) > MIN_N
    assert a["bytes"] == b["bytes"]
    # regenerating into the same folder replaces the previous pool
    make_raw_pool(tmp_path / "a", MIN_N, 8, cfg)
    assert _digests(tmp_path / "a") != da
    assert len((tmp_path / "a" / "labels.jsonl").read_text().splitlines()) == MIN_N


def test_generate_photo_for_benchmarks():
    img = generate_photo(320, 200, seed=3)
    assert img.shape == (200, 320, 3) and img.dtype == np.uint8
    assert np.array_equal(img, generate_photo(320, 200, seed=3))
    s = purification_scores(to_grey(img))
    assert s.laplacian_var > 30 and s.entropy > 6.5
