"""Final filters (curation.final_filters): seam continuity, post-SR consistency, region and
instance artifact checks, each on images built to pass and to fail. Small images only."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curation.final_filters import consistency, instances, judging, regions, seams
from curation.synth import generate_photo
from curation.upscale.backends import SRBackend, create_backend
from curation.upscale.storage import TiffRegionSource, write_array
from curation.upscale.tiles import TiledUpscaler, TileSpec

T = 384  # tile stride (output px)


@pytest.fixture(scope="module")
def lr():
    return generate_photo(576, 432, seed=21)  # input; 2x -> 1152x864 = 3x3 tiles of 384 (last row 96)


@pytest.fixture(scope="module")
def sr(lr):
    return TiledUpscaler(create_backend("lanczos", 2), TileSpec(tile=T)).upscale_array(lr)


@pytest.fixture(scope="module")
def lr4(lr):
    return cv2.resize(lr, (288, 216), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def sr4(lr4):
    return TiledUpscaler(create_backend("lanczos", 4), TileSpec(tile=T)).upscale_array(lr4)


TILE = (slice(T, 2 * T), slice(T, 2 * T))  # the centre tile


def colour_shifted(img, delta=(12, -6, 8)):
    out = img.copy()
    out[TILE] = np.clip(out[TILE].astype(np.int16) + np.array(delta), 0, 255).astype(np.uint8)
    return out


def blurred(img, sigma=4.0):
    out = img.copy()
    out[TILE] = cv2.GaussianBlur(img, (0, 0), sigma)[TILE]
    return out


def misaligned(img, shift=4):
    """An injected seam: the centre tile's content is shifted (geometric misalignment)."""
    out = img.copy()
    out[TILE] = np.roll(img, (shift, shift), axis=(0, 1))[TILE]
    return out


# -- seams ------------------------------------------------------------------------------------

def test_seam_check_passes_clean_tiled_upscales(sr, sr4):
    for img in (sr, sr4):
        r = seams.seam_check(img)
        assert not r.flagged and r.max_ratio < 2.0
        assert r.seams == len(r.segments) > 0


@pytest.mark.parametrize("defect", [colour_shifted, blurred, misaligned])
def test_seam_check_flags_defects(sr, sr4, defect):
    for img in (sr, sr4):
        r = seams.seam_check(defect(img))
        assert r.flagged and r.max_ratio > seams.R_T
        w = r.worst
        assert w["pos"] in (T, 2 * T) and w["start"] in (T,)  # on the defective tile's border


def test_injected_seam_line_flagged(sr):
    bad = sr.copy()
    bad[T:T + 1, :T] = np.clip(bad[T:T + 1, :T].astype(int) + 25, 0, 255)  # one bright row on the seam
    r = seams.seam_check(bad)
    assert r.flagged and r.worst["axis"] == "h"


class DriftBackend(SRBackend):
    """Lanczos plus a random colour offset per tile (a drifting SR model)."""

    name = "drift"
    context_pad = 4

    def __init__(self, scale, amp=8):
        super().__init__(scale)
        self.rng = np.random.default_rng(0)
        self.amp = amp

    def _upscale(self, rgb):
        up = cv2.resize(rgb, (rgb.shape[1] * self.scale, rgb.shape[0] * self.scale), interpolation=cv2.INTER_LANCZOS4)
        return np.clip(up.astype(np.int16) + self.rng.integers(-self.amp, self.amp + 1, 3), 0, 255).astype(np.uint8)


def test_feathering_hides_tile_drift_and_hard_tiles_do_not(lr):
    hard = TiledUpscaler(DriftBackend(2), TileSpec(tile=T, overlap=0)).upscale_array(lr)
    soft = TiledUpscaler(DriftBackend(2), TileSpec(tile=T, overlap=32)).upscale_array(lr)
    assert seams.seam_check(hard).flagged
    assert not seams.seam_check(soft).flagged


def test_seam_check_stripwise_from_tiff_equals_array(tmp_path, sr):
    bad = colour_shifted(sr)
    write_array(tmp_path / "bad.tif", bad, tile=256)
    a = seams.seam_check(bad)
    with TiffRegionSource(tmp_path / "bad.tif") as src:
        b = seams.seam_check(src, band_rows=100)
    assert a.to_dict(with_segments=True) == b.to_dict(with_segments=True)


def test_seam_geometry():
    assert seams.seam_positions(1000, 384) == [384, 768]
    assert seams.segments(1000, 384) == [(0, 384), (384, 768), (768, 1000)]
    assert seams.segments(850, 384) == [(0, 384), (384, 850)]  # 82-px tail merged
    img = np.full((900, 1200, 3), 128, np.uint8)
    r = seams.seam_check(img)
    # 2 horizontal lines x 3 segments (1200: 384,384,432) + 3 vertical lines x 2 segments (900: 384, 516)
    assert r.seams == 2 * 3 + 3 * 2 and r.max_ratio == 0.0 and not r.flagged


def _rows_image(rows: list, w: int = 16) -> np.ndarray:
    """A (len(rows), w, 3) uint8 image; ``rows[r]`` is a value or a length-w profile, same in R, G, B."""
    return np.repeat(np.array([np.broadcast_to(np.asarray(v, float), (w,)) for v in rows])[..., None], 3,
                     axis=2).astype(np.uint8)


def test_seam_ratios_by_hand():
    """Seam ratios worked out by hand on 16x16 images (stride 8, n = 2 side rows, eps 0.5, 16-px box).

    A: rows 0..7 step by 10, a jump of 30 across the seam at y = 8, rows 8..15 step by 2. Along the
    seam every difference is constant, so D_6 = D_7 = 10, D_8 = 30, D_9 = D_10 = 2:
    R_t = 30 / (0.5 + min(10, 2)) = 12, R_c = 30 / (0.5 + (10 + 2) / 2) = 30 / 6.5, R = 12; the
    vertical seam at x = 8 sees no column difference: R = 0.
    B: grain p(x) = +1 -1 -1 +1 (repeated, amplitude 8) on every odd row, and a step of 20 at y = 8.
    Side rows |D| = 8; the seam row |20 - 8 p(x)| is 12 or 28, mean 20. The 16-px box (reflected
    border: p extends periodically) averages the grain to exactly 0 and keeps the step:
    R_t = 20 / 8.5 = 2.3529 (below r_t alone), R_c = 20 / (0.5 + 0) = 40, R = 40: flagged.
    C: B without the step: R_t = 8 / 8.5 = 0.9412, R_c = 0 / 0.5 = 0: not flagged."""
    a = _rows_image([10 * r for r in range(8)] + [100 + 2 * (r - 8) for r in range(8, 16)])
    ra = seams.seam_check(a, stride=8)
    h = [s for s in ra.segments if s["axis"] == "h"]
    v = [s for s in ra.segments if s["axis"] == "v"]
    assert [(s["pos"], s["start"], s["end"]) for s in h] == [(8, 0, 8), (8, 8, 16)] and len(v) == 2
    for s in h:
        assert s["seam_gradient"] == 30 and s["side_gradients"] == [10, 2]
        assert s["texture_ratio"] == pytest.approx(12.0, abs=1e-4)
        assert s["step_ratio"] == pytest.approx(30 / 6.5, abs=1e-4)
        assert s["ratio"] == pytest.approx(12.0, abs=1e-4) and s["flagged"]
    assert all(s["ratio"] == 0 and not s["flagged"] for s in v)
    assert ra.seams == 4 and ra.max_ratio == pytest.approx(12.0) and ra.flagged and ra.n_flagged == 2
    # the same image turned by 90 degrees: the same numbers on the vertical seam
    rt = seams.seam_check(np.ascontiguousarray(a.transpose(1, 0, 2)), stride=8)
    assert sorted((s["axis"], s["ratio"]) for s in rt.segments) == [("h", 0.0), ("h", 0.0), ("v", 12.0), ("v", 12.0)]

    p = 8 * np.tile([1, -1, -1, 1], 4)
    for step, want in ((20, (2.3529, 40.0, 40.0, True)), (0, (0.9412, 0.0, 0.9412, False))):
        b = _rows_image([100 + (p if r % 2 else 0) + (step if r >= 8 else 0) for r in range(16)])
        hb = [s for s in seams.seam_check(b, stride=8).segments if s["axis"] == "h"]
        assert len(hb) == 2
        for s in hb:
            assert s["seam_gradient"] == (20 if step else 8) and s["side_gradients"] == [8, 8]
            got = (s["texture_ratio"], s["step_ratio"], s["ratio"], s["flagged"])
            assert got == pytest.approx(want, abs=1e-4), (step, got)


# -- consistency ------------------------------------------------------------------------------

def test_consistency_matches_skimage(lr, sr):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    bad = blurred(sr)
    m = consistency.consistency_metrics(bad, lr, band_rows=50, lpips=False)
    down = cv2.resize(bad, (lr.shape[1], lr.shape[0]), interpolation=cv2.INTER_AREA)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(lr, down, data_range=255), abs=1e-3)
    ref = structural_similarity(lr, down, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255, channel_axis=2)
    assert m["ssim"] == pytest.approx(ref, abs=2e-5)
    m2 = consistency.consistency_metrics(bad, lr, band_rows=1000, lpips=False)
    assert m2["psnr"] == pytest.approx(m["psnr"], abs=1e-6) and m2["ssim"] == pytest.approx(m["ssim"], abs=1e-6)


def test_consistency_pass_and_fail(lr, sr, lr4, sr4):
    for low, high in ((lr, sr), (lr4, sr4)):
        good = consistency.consistency_metrics(high, low, lpips=False)
        assert consistency.decide(good)["passed"], good
        for defect in (colour_shifted, blurred, misaligned):
            m = consistency.consistency_metrics(defect(high), low, lpips=False)
            d = consistency.decide(m)
            assert not d["passed"] and "psnr_block_drop" in d["failed"], (defect.__name__, m)
            # the worst block is the defective tile (block = 384/scale input px)
            assert (m["worst_block"]["x"], m["worst_block"]["y"]) == (m["block"], m["block"])


def test_identical_and_tiff_inputs(tmp_path, lr):
    m = consistency.consistency_metrics(lr, lr, lpips=False)
    assert m["psnr"] == consistency.PSNR_CAP and m["ssim"] == pytest.approx(1.0, abs=1e-6) and m["scale"] == 1
    up = cv2.resize(lr, (lr.shape[1] * 2, lr.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    write_array(tmp_path / "up.tif", up, tile=128)
    m = consistency.consistency_metrics(tmp_path / "up.tif", lr, lpips=False)
    assert m["psnr"] == consistency.PSNR_CAP  # nearest 2x then area /2 is the identity
    with pytest.raises(ValueError):
        consistency.consistency_metrics(up[:-1], lr, lpips=False)


def _alexnet_weights():
    """Where LPIPS' AlexNet backbone must be for LPIPS to run offline (torch's hub checkpoints)."""
    from pathlib import Path

    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / consistency.ALEXNET_WEIGHTS


def _assert_lpips_missing(m):
    assert m["lpips"] is None and "weights" in m["lpips_reason"] and consistency.ALEXNET_WEIGHTS in m["lpips_reason"]
    d = consistency.decide(m, {"lpips_max": 0.2})
    assert "lpips" in d["skipped"] and "lpips" not in d["failed"]


def test_lpips_is_what_this_machine_allows(lr, sr):
    """The branch this machine takes, decided by whether the backbone file is there (no network)."""
    present = _alexnet_weights().exists()
    st = consistency.lpips_status()
    assert st["available"] is present, st
    m = consistency.consistency_metrics(sr, lr)
    if present:
        assert isinstance(m["lpips"], float) and 0 <= m["lpips"] < 0.2, m  # tiled lanczos: perceptually close
        assert "lpips" not in consistency.decide(m, {"lpips_max": 0.2})["skipped"]
    else:
        _assert_lpips_missing(m)


def test_lpips_without_the_backbone_is_null_with_its_reason(lr, sr, tmp_path, monkeypatch):
    """Whatever this machine has: an empty torch hub -> null + reason, skipped by the decision."""
    import torch

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    assert not _alexnet_weights().exists()
    assert consistency.lpips_status()["available"] is False
    _assert_lpips_missing(consistency.consistency_metrics(sr, lr))


def test_lpips_code_path_with_random_backbone(lr, sr):
    m = consistency.consistency_metrics(sr, lr, lpips_tiles=2, _random_lpips=True)
    assert isinstance(m["lpips"], float) and m["lpips"] >= 0


def test_thresholds_from_config(paper_cfg):
    th = consistency.thresholds_from_config(paper_cfg)
    assert set(th) == set(consistency.DEFAULT_THRESHOLDS)


# -- regions ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big():
    """3072 x 2304 (12 cells of 768): a 2x tiled upscale of a generated photo."""
    low = generate_photo(1536, 1152, seed=5)
    return TiledUpscaler(create_backend("lanczos", 2), TileSpec()).upscale_array(low)


def test_region_sampling_deterministic_and_inside(big):
    a = regions.sample_regions(big, "img-0001")
    b = regions.sample_regions(big, "img-0001")
    assert [x.box for x in a] == [x.box for x in b]
    assert [x.source for x in a] == ["top"] * 6 + ["random"] * 4
    h, w = big.shape[:2]
    for x in a:
        assert x.w == x.h == 768 and 0 <= x.x and x.x + x.w <= w and 0 <= x.y and x.y + x.h <= h
    assert len({x.box for x in a}) == 10  # distinct cells
    assert regions.region_seed("img-0001") == regions.region_seed("img-0001")
    others = {tuple(x.box for x in regions.sample_regions(big, f"img-{i}") if x.source == "random") for i in range(6)}
    assert len(others) > 1  # the random four depend on the image id
    top = [x.box for x in a if x.source == "top"]
    assert all(tuple(x.box for x in regions.sample_regions(big, f"img-{i}") if x.source == "top") == tuple(top)
               for i in range(3))  # the top six depend only on the pixels
    crops = regions.crop_regions(big, a)
    assert all(c.shape == (768, 768, 3) for c in crops)
    assert np.array_equal(crops[0], big[a[0].y:a[0].y + 768, a[0].x:a[0].x + 768])


def test_region_sampling_from_tiff(tmp_path, big):
    write_array(tmp_path / "big.tif", big)
    with TiffRegionSource(tmp_path / "big.tif") as src:
        t = regions.sample_regions(src, "img-7")
    a = regions.sample_regions(big, "img-7")
    assert [x.source for x in t] == [x.source for x in a]
    assert len(set(x.box for x in t) & set(x.box for x in a)) >= 8  # band-wise analysis copy ~ same ranking


def test_decide_regions():
    ok = {"status": "ok", "artifact": False, "reason": ""}
    bad = {"status": "ok", "artifact": True, "reason": "warped hand"}
    failed = {"status": "judge_failed", "artifact": None, "reason": "timeout"}
    assert regions.decide_regions([ok] * 10)["passed"]
    assert regions.decide_regions([bad] + [ok] * 9)["passed"]  # one flagged is tolerated
    d = regions.decide_regions([bad, bad] + [ok] * 8)
    assert not d["passed"] and d["decision"] == "fail" and d["n_flagged"] == 2
    d = regions.decide_regions([failed] + [ok] * 9)
    assert not d["passed"] and d["decision"] == "judge_failed" and d["n_flagged"] == 1
    d = regions.decide_regions([{"status": "ok", "reason": "no artifact key"}] + [ok] * 9)
    assert not d["passed"] and d["decision"] == "judge_failed"
    assert regions.decide_regions([True, True, False])["decision"] == "fail"  # bare bools = artifact


def test_check_regions_with_judges(big):
    seen = []

    def clean_judge(patches):
        seen.append([p.shape for p in patches])
        return [{"status": "ok", "artifact": False, "reason": "clean"} for _ in patches]

    r = regions.check_regions(big, "img-1", clean_judge)
    assert r["passed"] and len(r["patches"]) == 10 and seen == [[(768, 768, 3)] * 10]
    assert {"x", "y", "w", "h", "source", "status", "artifact"} <= set(r["patches"][0])

    def boom(patches):
        raise TimeoutError("VLM did not answer")

    r = regions.check_regions(big, "img-1", boom)
    assert not r["passed"] and r["decision"] == "judge_failed" and r["n_judge_failed"] == 10
    assert "TimeoutError" in r["patches"][0]["reason"]

    r = regions.check_regions(big, "img-1", lambda ps: [{"status": "ok", "artifact": False}])  # wrong length
    assert r["decision"] == "judge_failed"

    def flags_two(patches):
        return [{"status": "ok", "artifact": i < 2, "reason": ""} for i in range(len(patches))]

    assert regions.check_regions(big, "img-1", flags_two)["decision"] == "fail"
    small = np.zeros((500, 500, 3), np.uint8)
    assert regions.check_regions(small, "x", clean_judge)["decision"] == "no_patches"


# -- instances --------------------------------------------------------------------------------

def test_instances_hook():
    r = instances.check_instances(None, judge=lambda ps: [])
    assert r["status"] == "not_applied" and r["passed"] is None and "captions" in r["reason"]
    assert instances.check_instances([], None)["status"] == "not_applied"
    crops = [np.zeros((64, 48, 3), np.uint8), np.ones((32, 32, 3), np.uint8)]
    ok = instances.check_instances(crops, lambda ps: [{"status": "ok", "artifact": False}] * len(ps),
                                   instance_ids=["dog", "ball"])
    assert ok["passed"] and ok["status"] == "applied" and [i["instance_id"] for i in ok["instances"]] == ["dog", "ball"]
    one = instances.check_instances(crops, lambda ps: [{"status": "ok", "artifact": i == 1} for i in range(len(ps))])
    assert not one["passed"] and one["decision"] == "fail"  # any flagged instance drops the image
    failed = instances.check_instances(crops, lambda ps: [{"status": judging.JUDGE_FAILED, "artifact": None}] * 2)
    assert not failed["passed"] and failed["decision"] == "judge_failed"
