"""Bench metric library: registry, GLCM kernels vs scikit-image, compression ratio, MSFI / ICS
maths, FID_patch crop positions, the 6 + 4 patch sampler and the ``uhr metric`` command."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
from PIL import Image

from evaluation.metrics import create_metric, describe_metrics, list_metrics
from evaluation.metrics import glcm as G
from evaluation.metrics.fid_patch import crop_positions
from evaluation.metrics.ics import ics_from_answer
from evaluation.metrics.msfi import msfi_from_answers, parse_judge_json, patch_size_for

TOL = 1e-9
HAVE_C = G.c_kernel()[0] is not None
KERNELS = ["numpy"] + (["c"] if HAVE_C else [])


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Photo-like RGB: smooth multi-scale luminance, a few hard-edged shapes, mild grain."""
    import cv2

    rng = np.random.default_rng(seed)
    lum = np.zeros((h, w), np.float32)
    for cell, amp in ((64, 40.0), (16, 15.0), (4, 6.0)):
        small = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
        lum += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    lum[(xx - w * 0.3) ** 2 + (yy - h * 0.6) ** 2 < (min(h, w) * 0.2) ** 2] += 50
    lum += rng.normal(0, 2.0, (h, w)).astype(np.float32)
    rgb = np.stack([lum + 120, lum * 0.9 + 110, lum * 1.1 + 100], axis=2)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    grad = np.tile(np.linspace(0, 255, 257), (131, 1))
    return {
        "photo": _photo(192, 256, 1),
        "noise": rng.integers(0, 256, (128, 192, 3), dtype=np.uint8),
        "flat": np.full((128, 128, 3), (90, 140, 200), np.uint8),
        "gradient": np.repeat(grad[..., None], 3, axis=2).astype(np.uint8),
        "two_levels": (rng.integers(0, 2, (128, 128, 1)) * 4 + 60).repeat(3, axis=2).astype(np.uint8),
        "odd_size": _photo(197, 263, 2),
    }


def _ref_grey(path) -> np.ndarray:
    """The reference's grey: Pillow convert("L") of the opened file."""
    with Image.open(path) as im:
        return np.array(im.convert("L"))


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("metric-images")
    files = {}
    for name, rgb in _cases().items():
        files[name] = d / f"{name}.png"
        Image.fromarray(rgb).save(files[name])
    grey = _photo(130, 200, 3)[..., 1]
    files["greyscale"] = d / "grey.png"
    Image.fromarray(grey).save(files["greyscale"])
    rgba = np.dstack([_photo(140, 150, 4), np.random.default_rng(4).integers(0, 256, (140, 150), dtype=np.uint8)])
    files["alpha"] = d / "alpha.png"
    Image.fromarray(rgba).save(files["alpha"])
    files["palette"] = d / "palette.png"
    Image.fromarray(_photo(128, 130, 6)).quantize(37).save(files["palette"])
    files["jpeg"] = d / "photo.jpg"
    Image.fromarray(_photo(150, 170, 7)).save(files["jpeg"], quality=90)
    files["too_small"] = d / "small.png"
    Image.fromarray(_photo(63, 300, 8)).save(files["too_small"])
    return files


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
ALL = ["aesthetics", "clipscore", "compression_ratio", "fgclip2", "fid", "fid_fidhelper_inception", "fid_patch",
       "fid_patch_fidhelper_inception", "glcm", "glcm_entropy", "ics", "ics_strict", "msfi", "msfi_strict"]


def test_registry_lists_every_bench_metric():
    assert list_metrics() == ALL
    assert set(list_metrics("per_set")) == {"fid", "fid_patch", "fid_fidhelper_inception", "fid_patch_fidhelper_inception"}
    for info in describe_metrics():
        m = create_metric(info["name"])
        assert m.kind in ("per_image", "per_set")
        assert isinstance(m.requires, tuple) and m.protocol_version
        assert "Protocol" in type(m).protocol() or "protocol" in type(m).protocol().lower()
    with pytest.raises(KeyError, match="unknown metric"):
        create_metric("nope")


@pytest.mark.parametrize("name", ["aesthetics", "clipscore", "fgclip2", "ics", "msfi", "ics_strict", "msfi_strict"])
def test_unavailable_per_image_metrics_say_why(name, image_files):
    m = create_metric(name)
    ok, why = m.availability()
    assert not ok and why
    r = m.score_path(image_files["photo"])
    assert r.value is None and r.reason.startswith("not available: ") and len(r.reason) > 20


@pytest.mark.parametrize("name", ["fid", "fid_patch"])
def test_unavailable_per_set_metrics_say_why(name, image_files):
    m = create_metric(name)
    r = m.score_set([image_files["photo"]], reference_paths=[image_files["jpeg"]])
    assert r.value is None and r.reason.startswith("not available: ")
    assert "inception" in r.reason.lower()
    assert m.score_path(image_files["photo"]).value is None


# ---------------------------------------------------------------------------------------------
# GLCM
# ---------------------------------------------------------------------------------------------
def test_tables_follow_skimage_offsets():
    t = G.tables()
    assert t.slice_offsets[:4] == ((0, 1), (1, 1), (1, 0), (1, -1))  # d = 1: 0, pi/4, pi/2, 3pi/4
    assert t.slice_offsets[4:8] == ((0, 2), (1, 1), (2, 0), (1, -1))  # d = 2: diagonals round to 1
    assert int(t.mult.sum()) == 16 and len(t.offsets) == 14
    assert sorted(set(t.total.tolist())) == [7442, 7680, 7688, 7808, 7936, 7938, 8064]


@pytest.mark.parametrize("kernel", KERNELS)
def test_patch_scores_equal_scikit_image(kernel):
    for name, rgb in _cases().items():
        grey = np.array(Image.fromarray(rgb).convert("L"))
        rv, re_ = G.glcm_reference_patch_scores(grey)
        v, e, used = G.glcm_patch_scores(grey, kernel)
        assert used == kernel and v.shape == rv.shape == (grey.shape[0] // 64, grey.shape[1] // 64)
        assert np.abs(v - rv).max() <= TOL, name
        assert np.abs(e - re_).max() <= TOL, name


def test_known_values():
    flat = np.full((64, 64), 100, np.uint8)  # 16 slices with a single entry 1.0, 65,520 zeros
    s = G.glcm_scores(flat)
    p = 16 / 65536
    assert s.glcm == pytest.approx(-(p * math.log2(p) + (1 - p) * math.log2(1 - p)), abs=1e-12)
    assert s.glcm_entropy == 0.0 and s.n_patches == 1


@pytest.mark.parametrize("case", ["photo", "noise", "flat", "gradient", "two_levels", "odd_size", "greyscale",
                                  "alpha", "palette", "jpeg"])
def test_glcm_metrics_on_files_equal_reference(case, image_files):
    path = image_files[case]
    ref = G.glcm_reference(_ref_grey(path))
    for kernel in KERNELS:
        for name, want in (("glcm", ref.glcm), ("glcm_entropy", ref.glcm_entropy)):
            r = create_metric(name, kernel=kernel).score_path(path)
            assert r.value is not None, r.reason
            assert abs(r.value - want) <= TOL, (case, name, kernel)
            assert r.extra["n_patches"] == ref.n_patches and r.extra["kernel"] == kernel


def test_glcm_range_and_textbook_entropy_differ(image_files):
    g = create_metric("glcm").score_path(image_files["photo"]).value
    e = create_metric("glcm_entropy").score_path(image_files["photo"]).value
    assert 0 < g < 3 < e  # the value entropy is small; the textbook slice entropy is bits of a 4096-cell matrix


def test_glcm_too_small_has_no_value(image_files):
    for name in ("glcm", "glcm_entropy"):
        r = create_metric(name).score_path(image_files["too_small"])
        assert r.value is None and r.reason == "no full 64x64 patch"
    r = create_metric("glcm").score_image(np.zeros((64, 63, 3), np.uint8))
    assert r.value is None and r.reason == "no full 64x64 patch"


def test_score_image_matches_score_path(image_files):
    rgb = np.array(Image.open(image_files["photo"]).convert("RGB"))
    for name in ("glcm", "glcm_entropy"):
        m = create_metric(name)
        assert m.score_image(rgb).value == pytest.approx(m.score_path(image_files["photo"]).value, abs=1e-12)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    a = (np.random.default_rng(9).integers(0, 65536, (128, 128))).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    r = create_metric("glcm").score_path(p)
    want = G.glcm_reference(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)).glcm
    assert abs(r.value - want) <= TOL and "deviation" in r.extra


def test_unreadable_file(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"not an image")
    r = create_metric("glcm").score_path(p)
    assert r.value is None and r.reason.startswith("unreadable")


@pytest.mark.skipif(not HAVE_C, reason="no C compiler")
def test_c_kernel_threads_and_strided_input():
    grey = np.array(Image.fromarray(_photo(320, 448, 11)).convert("L"))
    v1, e1, _ = G.glcm_patch_scores(grey, "c", threads=1)
    v2, e2, _ = G.glcm_patch_scores(grey, "c", threads=3)
    assert np.array_equal(v1, v2) and np.array_equal(e1, e2)
    big = np.zeros((400, 600), np.uint8)
    big[40:360, 70:518] = grey  # a view with a row stride wider than the image
    v3, e3, _ = G.glcm_patch_scores(big[40:360, 70:518], "c")
    assert np.array_equal(v1, v3) and np.array_equal(e1, e3)


def test_set_aggregation_is_mean_over_images(image_files):
    m = create_metric("glcm")
    paths = [image_files["photo"], image_files["noise"], image_files["too_small"]]
    per = m.score_paths(paths)
    agg = m.score_set(paths)
    assert agg.value == pytest.approx((per[0].value + per[1].value) / 2)
    assert agg.extra == {"n_images": 3, "n_scored": 2}


# ---------------------------------------------------------------------------------------------
# compression ratio
# ---------------------------------------------------------------------------------------------
def test_compression_ratio_per_image_and_set(image_files, tmp_path):
    m = create_metric("compression_ratio")
    png, jpg = image_files["photo"], image_files["jpeg"]
    r = m.score_path(png)
    assert r.value == 256 * 192 * 3 / os.path.getsize(png)
    assert r.extra["format"] == "png" and r.extra["width"] == 256 and r.extra["height"] == 192
    assert m.score_path(jpg).extra["format"] == "jpeg"
    s = m.score_set([png, jpg])
    total_raw = 256 * 192 * 3 + 170 * 150 * 3
    assert s.value == total_raw / (os.path.getsize(png) + os.path.getsize(jpg))
    assert s.extra["formats"] == {"png": 1, "jpeg": 1}
    # a file of known size: raw 64*64*3 = 12288 bytes padded to a known length
    p = tmp_path / "padded.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(p)
    with open(p, "ab") as fh:
        fh.write(b"\0" * (4096 - os.path.getsize(p)))
    assert m.score_path(p).value == 3.0
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert m.score_path(bad).value is None


# ---------------------------------------------------------------------------------------------
# MSFI and ICS maths
# ---------------------------------------------------------------------------------------------
G_ANS = {"SC-global": 4, "PI": 5, "LC": 3, "CH": 2, "reasoning": "..."}  # (20+15+6+4)/12 = 3.75
L_ANS = {"NGE": 3, "GA": 4, "TF": 5, "MGC": 2, "SC-local": 1}  # (6+12+25+4+2)/14 = 3.5


def test_msfi_formula():
    v, info = msfi_from_answers(G_ANS, [L_ANS] * 10)
    assert info["s_global"] == 3.75 and info["s_local"] == 3.5
    assert v == pytest.approx(3.75 + 3.75 / 5 * 3.5) and info["complete"] and not info["failures"]
    top = {k: 5 for k in G_ANS if k != "reasoning"}
    assert msfi_from_answers(top, [{k: 5 for k in L_ANS}] * 10)[0] == 10.0
    low = {k: 1 for k in top}
    assert msfi_from_answers(low, [{k: 1 for k in L_ANS}] * 10)[0] == pytest.approx(1.2)
    # per-patch scores averaged: half the patches all-5, half all-1 -> S_local = 3
    mixed = [{k: 5 for k in L_ANS}] * 5 + [{k: 1 for k in L_ANS}] * 5
    assert msfi_from_answers(G_ANS, mixed)[0] == pytest.approx(3.75 + 0.75 * 3.0)
    assert msfi_from_answers(G_ANS, [dict(L_ANS, TF="5")] * 10)[0] == pytest.approx(v)  # numeric string ok


def test_msfi_missing_and_malformed_are_failures_not_threes():
    bad_local = dict(L_ANS)
    del bad_local["TF"]
    answers = [L_ANS] * 8 + [bad_local, None]
    v, info = msfi_from_answers(G_ANS, answers)
    assert info["n_valid_patches"] == 8 and not info["complete"]
    assert v == pytest.approx(3.75 + 0.75 * 3.5)  # the two failures are left out, not scored 3
    assert [f["where"] for f in info["failures"]] == ["local[8]", "local[9]"]
    assert "missing TF" in info["failures"][0]["problems"]
    assert msfi_from_answers(G_ANS, answers, require_complete=True)[0] is None
    for bad in ("five", 6, 0, True, None, float("nan"), [4]):
        v, info = msfi_from_answers(dict(G_ANS, PI=bad), [L_ANS] * 10)
        assert v is None and info["failures"][0]["where"] == "global", bad
    assert msfi_from_answers(None, [L_ANS] * 10)[0] is None
    assert msfi_from_answers(G_ANS, [None] * 10)[0] is None
    r = create_metric("msfi_strict").score_answers(G_ANS, [bad_local] * 10)
    assert r.value is None and r.reason.startswith("judge failure")


def test_ics_formula_and_failures():
    v, info = ics_from_answer({"IEV": 10, "AAA": 8, "SRA": 9, "reasoning": "x"})
    assert v == pytest.approx(8.4) and not info["failures"]
    assert ics_from_answer({"IEV": 6, "AAA": 8, "SRA": 9})[0] == pytest.approx(math.sqrt(0.6) * 8.4)
    assert ics_from_answer({"IEV": "4", "AAA": 7, "SRA": 2})[0] == pytest.approx(math.sqrt(0.4) * 5.0)
    for bad in ({"IEV": 10, "AAA": 8}, {"IEV": 11, "AAA": 8, "SRA": 9}, {"IEV": "ten", "AAA": 8, "SRA": 9},
                {"IEV": None, "AAA": 8, "SRA": 9}, "IEV 10", None):
        v, info = ics_from_answer(bad)
        assert v is None and info["failures"], bad
    r = create_metric("ics_strict").score_answer({"IEV": 10, "AAA": 8})
    assert r.value is None and "missing SRA" in r.reason


def test_parse_judge_json():
    assert parse_judge_json('blah <json>\n{"IEV": 3}\n</json> tail') == {"IEV": 3}
    assert parse_judge_json('```json\n{"PI": 4}\n```') == {"PI": 4}
    assert parse_judge_json('Sure! {"PI": 4, "LC": 5} done') == {"PI": 4, "LC": 5}
    assert parse_judge_json("no json here") is None and parse_judge_json(None) is None


def test_msfi_patch_size():
    assert patch_size_for(4096, 4096) == 512 and patch_size_for(7679, 4000) == 512
    assert patch_size_for(7680, 4320) == 1024 and patch_size_for(4000, 10240) == 1024


# ---------------------------------------------------------------------------------------------
# FID_patch crops
# ---------------------------------------------------------------------------------------------
def test_fid_patch_crop_positions_reproduce_reference_stream():
    pos = crop_positions(3, 4096)
    assert pos.shape == (3, 20, 2)
    assert np.array_equal(pos, crop_positions(3, 4096))
    assert np.array_equal(pos[:2], crop_positions(2, 4096))  # bench order: a prefix is stable
    assert pos.min() >= 0 and pos.max() <= 4096 - 299
    ref = random.Random(42)  # the reference: random.seed(42), then randint top, randint left per crop
    want = [(ref.randint(0, 4096 - 299), ref.randint(0, 4096 - 299)) for _ in range(60)]
    assert [tuple(x) for x in pos.reshape(-1, 2).tolist()] == want
    assert not np.array_equal(crop_positions(1, 8192)[0], pos[0])
    with pytest.raises(ValueError):
        crop_positions(1, 200)


# ---------------------------------------------------------------------------------------------
# 6 + 4 patch sampler
# ---------------------------------------------------------------------------------------------
def _reference_sampler(img: Image.Image, patch_size: int, rnd: random.Random):
    """PixVerve image_process.py's sampling, restated for the test (long edge >= 2048 only)."""
    import cv2

    w, h = img.size
    if w > h:
        size = (2048, int(h * (2048 / w)))
    else:
        size = (int(w * (2048 / h)), 2048)
    ana = np.array(img.resize(size, resample=Image.LANCZOS).convert("L"))
    scale = size[0] / w
    a = int(patch_size * scale)
    cands = []
    for y in range(0, ana.shape[0] - a + 1, a):
        for x in range(0, ana.shape[1] - a + 1, a):
            p = ana[y:y + a, x:x + a]
            gx = cv2.Sobel(p, cv2.CV_64F, 1, 0, ksize=3)
            gy = cv2.Sobel(p, cv2.CV_64F, 0, 1, ksize=3)
            cands.append(((x, y), np.var(np.sqrt(gx ** 2 + gy ** 2))))
    cands.sort(key=lambda c: c[1], reverse=True)
    chosen = cands[:6] + (rnd.sample(cands[6:], 4) if len(cands[6:]) >= 4 else cands[6:])
    boxes = []
    for (ax, ay), _ in chosen:
        ox, oy = int(round(ax / scale)), int(round(ay / scale))
        right, bottom = min(ox + patch_size, w), min(oy + patch_size, h)
        ox, oy = max(0, right - patch_size), max(0, bottom - patch_size)
        boxes.append((ox, oy, right - ox, bottom - oy))
    return boxes


@pytest.fixture(scope="module")
def big_image():
    return Image.fromarray(_photo(3000, 4000, 12))


def test_patch_sampler_matches_reference_with_python_random(big_image):
    from curation.patch_sampler import sample_patches

    for patch in (512, 768):
        got = sample_patches(big_image, patch, random.Random(42))
        want = _reference_sampler(big_image, patch, random.Random(42))
        assert [b.box for b in got] == want
        assert [b.source for b in got] == ["top"] * 6 + ["random"] * 4


def test_patch_sampler_reproducible_and_inside(big_image):
    from curation.patch_sampler import sample_patches

    a = sample_patches(big_image, 768, np.random.default_rng(42))
    b = sample_patches(big_image, 768, np.random.default_rng(42))
    c = sample_patches(big_image, 768, np.random.default_rng(7))
    assert [x.box for x in a] == [x.box for x in b]
    assert [x.box for x in a[:6]] == [x.box for x in c[:6]]  # the top 6 do not depend on the generator
    scores = [x.score for x in a]
    assert scores[:6] == sorted(scores[:6], reverse=True) and min(scores[:6]) >= max(scores[6:])
    assert len({x.box for x in a}) == 10
    W, H = big_image.size
    for x in a:
        assert 0 <= x.x and 0 <= x.y and x.x + x.w <= W and x.y + x.h <= H and x.w == x.h == 768
        r = x.relative_coords(W, H)
        assert 0 <= r[0] < r[2] <= 1 and 0 <= r[1] < r[3] <= 1


def test_patch_sampler_small_images():
    from curation.patch_sampler import sample_patches

    rng = np.random.default_rng(0)
    img = Image.fromarray(_photo(900, 1200, 13))  # long edge < 2048: analysis copy not upscaled
    state = rng.bit_generator.state
    boxes = sample_patches(img, 512, rng)
    assert {b.box for b in boxes} == {(0, 0, 512, 512), (512, 0, 512, 512)}  # 2 x 1 grid, top only
    assert [b.source for b in boxes] == ["top", "top"] and boxes[0].score >= boxes[1].score
    assert rng.bit_generator.state == state  # fewer than 4 left: no draw
    assert all(b.x + b.w <= 1200 and b.y + b.h <= 900 for b in boxes)
    assert sample_patches(Image.fromarray(_photo(300, 400, 14)), 512, rng) == []


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_metric_json_lines(image_files):
    from click.testing import CliRunner

    from cli.main import cli

    runner = CliRunner()
    paths = [str(image_files["photo"]), str(image_files["too_small"])]
    for name in ("glcm", "glcm_entropy", "compression_ratio"):
        res = runner.invoke(cli, ["metric", name, *paths, "--json"])
        assert res.exit_code == 0, res.output
        rows = [json.loads(line) for line in res.output.strip().splitlines()]
        assert [r["path"] for r in rows] == paths and all(r["metric"] == name for r in rows)
        assert isinstance(rows[0]["value"], float)
        if name.startswith("glcm"):
            assert rows[1]["value"] is None and rows[1]["reason"] == "no full 64x64 patch"
    res = runner.invoke(cli, ["metric", "msfi", paths[0], "--json"])
    row = json.loads(res.output)
    assert row["value"] is None and row["reason"].startswith("not available")
    assert runner.invoke(cli, ["metric", "nope", paths[0]]).exit_code == 2
    assert runner.invoke(cli, ["metric", "fid", paths[0]]).exit_code == 2


def test_kernel_selection_and_fallback(monkeypatch, tmp_path):
    grey = np.array(Image.fromarray(_photo(128, 192, 15)).convert("L"))
    ref_v, ref_e = G.glcm_reference_patch_scores(grey)
    monkeypatch.setattr(G, "c_kernel", lambda: (None, "no C compiler found"))
    v, e, used = G.glcm_patch_scores(grey)  # auto without a compiler -> numpy, still exact
    assert used == "numpy" and np.abs(v - ref_v).max() <= TOL and np.abs(e - ref_e).max() <= TOL
    r = create_metric("glcm").score_image(np.asarray(Image.fromarray(_photo(128, 192, 15))))
    assert r.extra["kernel"] == "numpy"
    monkeypatch.undo()
    monkeypatch.setenv("UHRFORGE_GLCM_KERNEL", "numpy")
    assert G.glcm_patch_scores(grey)[2] == "numpy"
    with pytest.raises(ValueError):
        G.glcm_patch_scores(grey, "fortran")


@pytest.mark.skipif(not HAVE_C, reason="no C compiler")
def test_c_kernel_builds_into_a_fresh_cache(monkeypatch, tmp_path):
    import curation.ckernels as ck
    from curation.scores import _flat_kernel

    monkeypatch.setenv("UHRFORGE_KERNEL_CACHE", str(tmp_path / "k"))
    monkeypatch.setattr(ck, "_loaded", {})
    fn, err = G.c_kernel()
    assert fn is not None and err is None
    assert _flat_kernel()[0] is not None
    assert len(list((tmp_path / "k").glob("uhr_glcm_*.so"))) == 1 and len(list((tmp_path / "k").glob("uhr_flat_*.so"))) == 1
    monkeypatch.setattr(ck, "_loaded", {})
    monkeypatch.setenv("UHRFORGE_NO_C_KERNELS", "1")
    assert G.c_kernel() == (None, "C kernels disabled (UHRFORGE_NO_C_KERNELS)")


@pytest.mark.skipif(not HAVE_C, reason="no C compiler")
def test_c_kernel_threads_share_rows_of_uneven_cost():
    """Smooth rows (cheap) above noise rows (dear): the kernel's threads take patch rows from a
    shared counter; every patch equals the one-thread result and, on a crop, the scikit-image loop."""
    rng = np.random.default_rng(5)
    grey = np.full((64 * 9, 64 * 5), 120, np.uint8)
    grey[64 * 4 :] = rng.integers(0, 256, (64 * 5, 64 * 5), dtype=np.uint8)
    grey[:64 * 4] += (np.arange(64 * 5) // 40).astype(np.uint8)[None, :]
    v1, e1, _ = G.glcm_patch_scores(grey, "c", threads=1)
    assert G.default_threads() >= 1
    for th in (2, 4, 9, 50, None):
        v, e, _ = G.glcm_patch_scores(grey, "c", threads=th)
        assert np.array_equal(v, v1) and np.array_equal(e, e1), th
    rv, re_ = G.glcm_reference_patch_scores(grey[64 * 3 : 64 * 6, :128])
    assert np.abs(v1[3:6, :2] - rv).max() <= TOL and np.abs(e1[3:6, :2] - re_).max() <= TOL
