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


def _changed(value):
    """Another value of the same kind, valid under the schema (curation/config_schema.py): a
    fraction stays in (0, 1), a numeric [lo, hi] pair stays an ordered pair."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, float) and 0 < value < 1:
        return value / 2
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-x"
    if isinstance(value, list):
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [v + 1 for v in value]
        return value + value[-1:] if value else [1]
    return 1  # None


def _nested(dotted: str, value) -> dict:
    out: dict = {}
    cur = out
    parts = dotted.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def test_every_key_outside_the_whitelist_is_refused_and_every_listed_one_applied(tmp_path):
    """Loop over every leaf of paper.yaml: a profile changing it loads (and the value is applied)
    exactly when paper.yaml's ``overridable`` lists it; anything else -- thresholds, score
    definitions, judges, the whitelist itself, a key paper.yaml does not have -- is refused by name."""
    import re

    from curation.config import CONFIG_DIR, _flatten

    paper = yaml.safe_load((CONFIG_DIR / "paper.yaml").read_text())
    allowed = set(paper["overridable"])
    leaves = {k: v for k, v in _flatten(paper).items() if k != "profile"}
    assert allowed <= set(leaves), allowed - set(leaves)  # the whitelist names real keys
    prof = tmp_path / "p.yaml"
    refused, applied = [], []
    for key, value in leaves.items():
        new = _changed(value)
        prof.write_text(yaml.safe_dump({"profile": "loop", **_nested(key, new)}))
        if key in allowed:
            assert load_config(str(prof)).get(key) == new, key
            applied.append(key)
        else:
            with pytest.raises(ProfileError, match=re.escape(f"may not override {key!r}")):
                load_config(str(prof))
            refused.append(key)
    assert sorted(applied) == sorted(allowed) and len(refused) == len(leaves) - len(allowed) > 100
    assert "overridable" in refused and "purification.sharpness.min_laplacian_var" in refused
    for extra, key in (({"new_section": {"x": 1}}, "new_section.x"), ({"purification": 5}, "purification"),
                       ({"sizes": {"linear_scale": {"nested": 1}}}, "sizes.linear_scale.nested")):
        prof.write_text(yaml.safe_dump(extra))
        with pytest.raises(ProfileError, match=re.escape(f"may not override {key!r}")):
            load_config(str(prof))
