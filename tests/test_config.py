"""Profiles override sizes and counts only; every row's config hash is stable."""

import pytest
import yaml

from curation.config import ProfileError, load_config


def test_profiles_load_and_scale_screen_together():
    paper, test = load_config("paper"), load_config("test")
    bp, bt = paper.screen_bounds(), test.screen_bounds()
    assert bp["large_min_pixels_exclusive"] == 25e6 and bp["large_min_side"] == 3000
    s = test.linear_scale
    assert bt["large_min_pixels_exclusive"] == pytest.approx(25e6 * s * s)
    assert bt["medium_min_side"] == pytest.approx(1500 * s)
    # thresholds and the 240-px flatness patch never change
    assert test["purification"] == paper["purification"]
    assert load_config("demo")["purification"]["flatness"]["patch"] == 240


def test_profile_may_not_change_a_threshold(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"purification": {"sharpness": {"min_laplacian_var": 5}}}))
    with pytest.raises(ProfileError, match="may not override"):
        load_config(str(p))
    p.write_text(yaml.safe_dump({"purification": {"flatness": {"patch": 120}}}))
    with pytest.raises(ProfileError):
        load_config(str(p))


def test_config_hash_is_stable_and_profile_specific():
    assert load_config("test").hash == load_config("test").hash
    assert load_config("test").hash != load_config("paper").hash
    with pytest.raises(ProfileError, match="unknown profile"):
        load_config("nope")
