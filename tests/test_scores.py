"""Purification scores: hand-computed cases and strip-wise == whole-image (1e-9 relative)."""

import cv2
import numpy as np
import pytest

from curation.scores import (
    absolute_verdicts,
    entropy_from_hist,
    exposure_fraction_from_hist,
    flat_fraction,
    grey_histogram,
    isclose_rel,
    laplacian_var,
    purification_scores,
    reference_scores,
)


def test_exposure_counts_strictly_outside_5_and_250():
    g = np.array([[0, 3, 4, 5, 6, 249, 250, 251, 255, 128]], dtype=np.uint8)
    # < 5: 0, 3, 4 ; > 250: 251, 255 -> 5 of 10
    assert exposure_fraction_from_hist(grey_histogram(g)) == 0.5


def test_laplacian_var_single_spike_by_hand():
    g = np.zeros((5, 5), np.uint8)
    g[2, 2] = 100
    # ksize-1 Laplacian: -400 at the spike, +100 at its 4 neighbours, 0 elsewhere; mean 0
    assert laplacian_var(g) == pytest.approx((400**2 + 4 * 100**2) / 25, rel=1e-12)
    assert laplacian_var(np.full((9, 7), 77, np.uint8)) == 0.0


def test_flat_fraction_by_hand():
    g = np.zeros((250, 500), np.uint8)  # two full 240-patches, edge remainder ignored
    g[:, 120:240] = 255  # a step edge inside patch 0 -> textured; patch 1 is constant
    ff, n = flat_fraction(g)
    assert n == 2 and ff == 0.5
    # step of 255: |grad| = 4*255 on 2 of 240 columns: var = p(1-p) 1020^2 with p = 2/240
    from curation.scores import patch_magnitude_variances

    v = patch_magnitude_variances(g)
    p = 2 / 240
    assert v[0, 0] == pytest.approx(p * (1 - p) * 1020**2, rel=1e-9)
    assert v[0, 1] == 0.0


def test_flat_fraction_none_without_full_patch():
    ff, n = flat_fraction(np.zeros((239, 1000), np.uint8))
    assert ff is None and n == 0
    s = purification_scores(np.zeros((100, 100), np.uint8))
    assert s.flat_fraction is None
    v = absolute_verdicts(s, {"exposure": {"max_fraction": 0.2}, "sharpness": {"min_laplacian_var": 10},
                              "flatness": {"max_textureless_fraction": 0.975}})
    assert v["flatness"] is True  # null flat_fraction does not reject


def test_entropy_by_hand():
    half = np.zeros((4, 4), np.uint8)
    half[:, :2] = 255
    assert entropy_from_hist(grey_histogram(half)) == pytest.approx(1.0)
    uniform = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert entropy_from_hist(grey_histogram(uniform)) == pytest.approx(8.0)
    assert entropy_from_hist(grey_histogram(np.full((3, 3), 9, np.uint8))) == 0.0


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (max(2, h // 37), max(2, w // 41)), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 12, (h, w))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape,seed", [((1237, 961), 0), ((481, 2403), 1), ((240, 240), 2), ((3001, 719), 3)])
def test_strip_wise_equals_whole_image(shape, seed):
    g = _texture(*shape, seed)
    fast = purification_scores(g)
    ref = reference_scores(g)
    for k in ("exposure_fraction", "laplacian_var", "flat_fraction", "entropy"):
        assert isclose_rel(getattr(fast, k), getattr(ref, k), 1e-9), k
    # small strips: many strip boundaries, results unchanged
    assert isclose_rel(laplacian_var(g, rows=7), ref.laplacian_var, 1e-9)
    assert np.array_equal(grey_histogram(g, rows=13), np.bincount(g.ravel(), minlength=256))


@pytest.mark.parametrize("shape,patch,seed", [((1237, 961), 240, 0), ((481, 2403), 240, 1), ((250, 500), 240, 2),
                                              ((97, 61), 7, 3), ((10, 10), 2, 4), ((600, 900), 3, 5)])
def test_flatness_c_kernel_equals_per_tile_opencv(shape, patch, seed):
    """The fused C kernel (tile-own reflected borders, integer gradients) against cv2.Sobel per tile."""
    from curation.scores import _flat_kernel, _patch_magnitude_variances_per_tile, patch_magnitude_variances

    fn, why = _flat_kernel()
    if fn is None:
        pytest.skip(f"no C kernel here: {why}")
    g = _texture(*shape, seed)
    g[: shape[0] // 3, : shape[1] // 2] = 255  # flat and saturated regions too
    fast = patch_magnitude_variances(g, patch)
    ref = _patch_magnitude_variances_per_tile(g, patch, 3)
    assert fast.shape == ref.shape == (shape[0] // patch, shape[1] // patch)
    np.testing.assert_allclose(fast, ref, rtol=1e-9, atol=1e-9)
    view = g[5:, 3:]  # a non-contiguous view (row stride != width)
    np.testing.assert_allclose(patch_magnitude_variances(view, patch),
                               _patch_magnitude_variances_per_tile(np.ascontiguousarray(view), patch, 3),
                               rtol=1e-9, atol=1e-9)


# -- the fused one-pass kernel (issue 16): bit-identical to the scores recorded before it -----------

def _marked(h, w, seed):
    """_texture plus a saturated block and a near-black block (exposure and flat tiles)."""
    g = _texture(h, w, seed)
    g[: h // 3, : w // 2] = 255
    g[h // 2 :, : w // 5] = 3
    return g


# purification_scores of _marked(*shape, seed) from the separate strip functions and the
# tile-by-tile C kernel, recorded (float.hex) before the fused kernel replaced them
_RECORDED = [
    ((1237, 961), 0, "0x1.2fa03e2df93b4p-2", "0x1.04551423dd859p+11", "0x1.999999999999ap-4", "0x1.b4dbfc1ccdde4p+2", 20),
    ((481, 2403), 1, "0x1.2bd8ca8edccedp-2", "0x1.0854680f8b936p+11", "0x1.999999999999ap-4", "0x1.b50c1e4f7b3dbp+2", 20),
    ((240, 240), 2, "0x1.31cba98765432p-2", "0x1.1854cd1480b49p+11", "0x0.0p+0", "0x1.b1986d5a3067ep+2", 1),
    ((3001, 719), 3, "0x1.2cf9839bfc914p-2", "0x1.05b2c63028f54p+11", "0x1.5555555555555p-3", "0x1.b48629d7ae80ep+2", 24),
    ((1, 7), 4, "0x1.2492492492492p-3", "0x1.80450fac687d6p+14", None, "0x1.675767f54042dp+1", 0),
    ((9, 1), 5, "0x0.0p+0", "0x1.ccca4587e6b75p+7", None, "0x1.95c01a39fbd68p+1", 0),
    ((2, 2), 6, "0x1.0000000000000p-2", "0x1.364e000000000p+16", None, "0x1.0000000000000p+1", 0),
    ((719, 1201), 7, "0x1.3069953abd205p-2", "0x1.0679ee420808ap+11", "0x0.0p+0", "0x1.b4d63153176d8p+2", 10),
]


def _have_fused():
    from curation.scores import _scores_kernel

    fn, why = _scores_kernel()
    if fn is None:
        pytest.skip(f"no C kernel here: {why}")


@pytest.mark.parametrize("shape,seed,expo,lap,flat,ent,n", _RECORDED)
def test_fused_scores_equal_the_recorded_values_bit_for_bit(shape, seed, expo, lap, flat, ent, n):
    _have_fused()
    g = _marked(*shape, seed)
    for rows in (1024, 1, 7, 240, 241):  # any band split: 1-row bands, bands cutting tiles
        s = purification_scores(g, rows=rows)
        got = (s.exposure_fraction.hex(), s.laplacian_var.hex(),
               None if s.flat_fraction is None else s.flat_fraction.hex(), s.entropy.hex(), s.flat_patches)
        assert got == (expo, lap, flat, ent, n), rows


@pytest.mark.parametrize("shape,seed,patch", [((1237, 961), 0, 240), ((3001, 719), 3, 240), ((97, 61), 8, 7),
                                              ((600, 900), 9, 3), ((10, 10), 10, 2), ((250, 500), 11, 240)])
def test_fused_parts_equal_the_separate_functions_exactly(shape, seed, patch):
    """Histogram, Laplacian variance and every tile variance of the one-pass kernel equal (==, not
    approx) the separate strip functions and the tile-by-tile kernel; grey or RGB input, contiguous
    or a view, any band height."""
    _have_fused()
    from curation.imageio import to_grey
    from curation.scores import patch_magnitude_variances, purification_parts

    cfg = {"flatness": {"patch": patch}}
    rgb = np.stack([_marked(*shape, seed), _texture(*shape, seed + 50), _texture(*shape, seed + 99)], axis=2)
    grey = to_grey(rgb)
    for img in (grey, rgb, rgb[1:, 2:], grey[1:, 2:]):
        g = img if img.ndim == 2 else to_grey(np.ascontiguousarray(img))
        want = (grey_histogram(g), laplacian_var(g), patch_magnitude_variances(np.ascontiguousarray(g), patch))
        for rows in (1024, 1, 5, patch + 1):
            hist, lv, var = purification_parts(img, cfg, rows=rows)
            assert np.array_equal(hist, want[0]) and lv == want[1], rows
            assert var.shape == want[2].shape and np.array_equal(var, want[2]), rows


def test_without_the_c_kernel_the_scores_are_the_same(monkeypatch):
    import curation.scores as sc

    g = _marked(733, 1019, 12)
    fused = sc.purification_scores(g)
    monkeypatch.setattr(sc, "_scores_kernel", lambda: (None, "disabled in test"))
    assert sc.purification_scores(g) == fused
    assert sc.purification_scores(np.dstack([g, g, g])) == fused  # grey R = G = B -> the same grey


@pytest.mark.parametrize("bad", [np.zeros((5, 5), np.float32), np.zeros((5, 5, 4), np.uint8),
                                 np.zeros((0, 5), np.uint8), np.zeros((5,), np.uint8)])
def test_scores_refuse_what_is_not_a_uint8_grey_or_rgb_image(bad):
    with pytest.raises(ValueError):
        purification_scores(bad)


@pytest.mark.parametrize("shape,seed,patch,digest", [
    ((1237, 961), 0, 240, "78f8f9118b2db4da"), ((3001, 719), 3, 240, "f15ba292d05eda9e"),
    ((97, 61), 8, 7, "817dde1e221bb6b8"), ((600, 900), 9, 3, "1a95c4da8b8d0ba0"), ((10, 10), 10, 2, "6d9c54dee5660c46")])
def test_fused_tile_variances_equal_the_recorded_bytes(shape, seed, patch, digest):
    """sha256 of the float64 tile variances the tile-by-tile kernel gave before the fused kernel
    (same summation order: a change of rounding anywhere changes the digest)."""
    import hashlib

    from curation.scores import patch_magnitude_variances, purification_parts

    _have_fused()
    g = _marked(*shape, seed)
    for var in (purification_parts(g, {"flatness": {"patch": patch}}, rows=97)[2], patch_magnitude_variances(g, patch)):
        assert hashlib.sha256(var.tobytes()).hexdigest()[:16] == digest
