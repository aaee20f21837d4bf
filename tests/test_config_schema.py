"""Config validation at load (issue 15, item 5): every key of paper.yaml and of each profile has a
type and a range (curation/config_schema.py), NaN / inf are refused, unknown keys (typos) are
refused, and each violation is one line naming the key path, the value and the rule."""

import copy
import math
import re
import shutil
from pathlib import Path

import pytest
import yaml

from curation.config import CONFIG_DIR, ConfigError, ProfileError, _flatten, load_config
from curation.config_schema import validate_config


def _paper() -> dict:
    return yaml.safe_load((CONFIG_DIR / "paper.yaml").read_text())


def _set(d: dict, dotted: str, value) -> dict:
    cur = d
    parts = dotted.split(".")
    for p in parts[:-1]:
        cur = cur[p]
    cur[parts[-1]] = value
    return d


def _lab_copy(tmp_path: Path, edit) -> Path:
    """configs/ copied, with ``edit(paper_dict)`` applied to paper.yaml (a lab's own copy: the only
    place thresholds can change)."""
    d = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, d)
    paper = _paper()
    edit(paper)
    (d / "paper.yaml").write_text(yaml.safe_dump(paper, sort_keys=False))
    return d


def test_the_shipped_profiles_are_valid():
    for name in ("paper", "demo", "test"):
        assert validate_config(load_config(name).data, name) is not None


def test_linear_scale_zero_is_refused_instead_of_passing_a_1x1_image(tmp_path):
    """A profile with ``sizes.linear_scale: 0`` used to load, and the resolution screen's bounds
    all became 0: a 1 x 1 image passed. Now the load fails naming the key, the value and the rule;
    a scale so small that a bound falls below one pixel is refused too."""
    p = tmp_path / "zero.yaml"
    for value, rule in ((0, "greater than 0"), (-0.5, "greater than 0"), ("0.000000001", ">= 1 px"), ("1e-9", "valid number"), (".nan", "finite")):
        p.write_text(f"profile: zero\nsizes:\n  linear_scale: {value}\n")
        with pytest.raises(ConfigError) as e:
            load_config(str(p))
        msg = str(e.value)
        assert "\n" not in msg and "sizes.linear_scale" in msg and rule in msg and str(p) in msg, msg
    p.write_text("profile: ok\nsizes:\n  linear_scale: 0.05\n")
    assert load_config(str(p)).screen_bounds()["medium_min_side"] == pytest.approx(75.0)


@pytest.mark.parametrize("key,value,rule", [
    ("purification.sharpness.min_laplacian_var", -10, "greater than or equal to 0"),
    ("purification.sharpness.min_laplacian_var", float("nan"), "finite"),
    ("purification.flatness.min_patch_magnitude_var", float("inf"), "finite"),
    ("purification.exposure.max_fraction", 1.5, "less than or equal to 1"),
    ("purification.exposure.max_fraction", float("-inf"), "finite"),
    ("purification.richness.keep_top_fraction", 0, "greater than 0"),
    ("corpus.final_filters.seam.r_t", "2.5", "valid number"),
    ("corpus.final_filters.consistency.psnr_min", float("nan"), "finite"),
    ("training.schemes.I_full.lr", "1e-5", "valid number"),
    ("judges.corpus.timeout_s", 0, "greater than 0"),
    ("runtime.workers", True, "valid integer"),
    ("io.max_pixels", 0, "greater than or equal to 1"),
    ("purification.flatness.sobel_ksize", 4, "input should be 1, 3, 5 or 7"),
])
def test_bad_thresholds_are_refused_by_key_value_and_rule(tmp_path, key, value, rule):
    """Negative, NaN, infinite, out-of-range and mistyped values in paper.yaml (a lab's copy: the
    only place thresholds change) used to load and silently reject or pass everything."""
    cdir = _lab_copy(tmp_path, lambda p: _set(p, key, value))
    with pytest.raises(ConfigError) as e:
        load_config("paper", cdir)
    msg = str(e.value)
    assert "\n" not in msg and f"{key} = " in msg and rule in msg.lower(), msg
    assert msg.startswith(f"config 'paper' ({cdir / 'paper.yaml'})"), msg
    if key not in ("runtime.workers", "io.max_pixels"):  # the test profile overrides these two
        with pytest.raises(ConfigError, match=re.escape(f"{key} = ")):
            load_config("test", cdir)


def test_unknown_keys_are_refused_where_names_are_not_free(tmp_path):
    """A typo is an unknown key, named in the error; the mappings whose keys are names by design
    (judges, prompts, training tiers / schemes / backbones) take new names with checked values."""
    for typo in ("purification.sharpnes", "corpus.final_filters.seam.rt", "training.schemes.II.lrr", "new_section"):
        data = copy.deepcopy(load_config("paper").data)
        _set(data, typo, 1)
        with pytest.raises(ConfigError, match=re.escape(f"{typo} = 1: unknown key")):
            validate_config(data, "paper")
    data = copy.deepcopy(load_config("paper").data)
    data["judges"]["my_new_use"] = {"model": "m", "timeout_s": 10, "prompts": {"task": "prompts/x.md"}}
    data["training"]["tiers"]["12K"] = {"side": 12288}
    validate_config(data, "paper")
    data["judges"]["my_new_use"]["timout_s"] = 10
    with pytest.raises(ConfigError, match=re.escape("judges.my_new_use.timout_s = 10: unknown key")):
        validate_config(data, "paper")


def test_every_key_of_paper_yaml_is_typed():
    """Each leaf of paper.yaml, set to NaN or to a mapping, is refused by its own key path (or, for
    a mapping where one is allowed such as ``training.ema``, the keys under it): the schema leaves
    no key unchecked."""
    paper = load_config("paper").data
    leaves = [k for k in _flatten(paper) if k != "profile"]
    assert len(leaves) > 200
    for key in leaves:
        for bad in (math.nan, {"nested": 1}):
            data = _set(copy.deepcopy(paper), key, bad)
            with pytest.raises(ConfigError) as e:
                validate_config(data, "paper")
            assert re.search(re.escape(key) + r"( = |\.)", str(e.value)), (key, str(e.value))


def test_cross_key_rules(tmp_path):
    """Ordered bounds and pairs, an overlap inside its tile, ladders naming tiers that exist."""
    cases = [
        (lambda p: _set(p, "resolution_screen.medium.min_megapixels_inclusive", 30), "min_megapixels_inclusive 30"),
        (lambda p: _set(p, "purification.exposure.low_value_exclusive", 250), "must be < high_value_exclusive"),
        (lambda p: _set(p, "corpus.overlap", 384), "overlap 384 must be < tile 384"),
        (lambda p: _set(p, "synth.clean_megapixels", [60, 10]), "lo <= hi"),
        (lambda p: _set(p, "training.schemes.II.ladder", [{"tier": "5K", "epochs": 1, "gpu_hours": 1,
                                                           "init_from": "base"}]), "tier '5K' is not one of tiers"),
        (lambda p: _set(p, "training.schemes.II.backbone", "nope"), "backbone 'nope' is not one of backbones"),
    ]
    for edit, expect in cases:
        data = copy.deepcopy(_paper())
        edit(data)
        with pytest.raises(ConfigError, match=re.escape(expect)):
            validate_config(data, "paper")


def test_bad_files_are_one_line_config_errors(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("sizes: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as e:
        load_config(str(p))
    assert "\n" not in str(e.value)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(str(p))
    with pytest.raises(ProfileError, match="unknown profile"):  # still a ConfigError, still a ValueError
        load_config("nope")
    assert issubclass(ProfileError, ConfigError) and issubclass(ConfigError, ValueError)
