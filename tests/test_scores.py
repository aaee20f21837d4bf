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
