"""The schema of a resolved profile: the type and range of every key of ``configs/paper.yaml``.

:func:`validate_config` runs at load (:func:`curation.config.load_config`) on the merged
profile, so a profile's overrides are checked as well as paper.yaml itself. Rules:

* every key has a type (strict: ``"1e-5"`` is a string, not a number; ``true`` is not an int)
  and a range (``sizes.linear_scale`` > 0, fractions in [0, 1], counts >= 0 or >= 1, ...);
* floats must be finite: NaN and +/-inf are refused everywhere;
* unknown keys are refused (a typo such as ``purification.sharpnes``) -- except under the few
  mappings whose keys are names by design: ``judges`` (one section per VLM use), each use's
  ``prompts`` ({task: prompt file}), ``training.tiers`` / ``backbones`` / ``schemes`` and the tier
  maps below them, ``training.inference_table_a2``; the values under those names are checked;
* cross-key rules: the resolution screen's bounds are ordered and, scaled by
  ``sizes.linear_scale``, still at least one pixel (a scale of 0 would pass a 1 x 1 image);
  ``[lo, hi]`` pairs are ordered; a scheme's ladder names tiers and backbones that exist.

A violation raises :class:`ConfigError` with one line per profile: ``config <profile>: <key
path> = <value>: <rule>`` (several violations joined by ``; ``). A new key in paper.yaml needs
its field here (the error names the key).

Units are those of paper.yaml's comments: pixels, megapixels (10^6 px), seconds, dB, fractions.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, model_validator


class ConfigError(ValueError):
    """A config (paper.yaml or a profile merged over it) is invalid; the message is one line naming
    the key path, the value and the rule."""


class _M(BaseModel):
    """Strict, closed: no unknown key, no coercion, no NaN / inf."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


def _float(**rng):
    return Annotated[float, Field(allow_inf_nan=False, **rng)]


def _int(**rng):
    return Annotated[StrictInt, Field(**rng)]


Fraction = _float(ge=0, le=1)
OpenFraction = _float(gt=0, le=1)
PosFloat = _float(gt=0)
NonNegFloat = _float(ge=0)
PosInt = _int(ge=1)
NonNegInt = _int(ge=0)
Name = Annotated[StrictStr, Field(min_length=1)]
Pair = Annotated[list[PosFloat], Field(min_length=2, max_length=2)]
IntPair = Annotated[list[PosInt], Field(min_length=2, max_length=2)]


def _ordered(pair: list | None, what: str) -> None:
    if pair is not None and pair[0] > pair[1]:
        raise ValueError(f"{what}: [lo, hi] must have lo <= hi, got {pair}")


# -- sizes, io, resolution screen ---------------------------------------------------------------

class Sizes(_M):
    linear_scale: PosFloat                   # side factor; pixel counts scale by its square
    shard_size: PosInt


class Io(_M):
    max_pixels: PosInt                       # decompression-bomb guard, pixels


class ScreenLarge(_M):
    min_megapixels_exclusive: PosFloat
    min_side: PosFloat                       # px


class ScreenMedium(_M):
    min_megapixels_inclusive: PosFloat
    max_megapixels_inclusive: PosFloat
    min_side: PosFloat                       # px

    @model_validator(mode="after")
    def _order(self):
        if self.min_megapixels_inclusive > self.max_megapixels_inclusive:
            raise ValueError(f"min_megapixels_inclusive {self.min_megapixels_inclusive} > max_megapixels_inclusive "
                             f"{self.max_megapixels_inclusive}")
        return self


class ResolutionScreen(_M):
    megapixel: PosInt                        # px per MP (10^6)
    large: ScreenLarge
    medium: ScreenMedium


# -- purification ---------------------------------------------------------------------------------

class Exposure(_M):
    low_value_exclusive: _int(ge=0, le=255)   # grey level
    high_value_exclusive: _int(ge=0, le=255)
    max_fraction: Fraction

    @model_validator(mode="after")
    def _order(self):
        if self.low_value_exclusive >= self.high_value_exclusive:
            raise ValueError(f"low_value_exclusive {self.low_value_exclusive} must be < high_value_exclusive "
                             f"{self.high_value_exclusive}")
        return self


class Sharpness(_M):
    min_laplacian_var: NonNegFloat


class Flatness(_M):
    patch: PosInt                            # px
    sobel_ksize: Literal[1, 3, 5, 7]
    min_patch_magnitude_var: NonNegFloat
    max_textureless_fraction: Fraction


class Richness(_M):
    keep_top_fraction: OpenFraction
    histogram_bins: _int(ge=2)


class Laion(_M):
    clip_model: Name
    head_path: Optional[Name]
    batch_size: PosInt


class Aesthetics(_M):
    keep_top_fraction: OpenFraction
    scorers: Annotated[list[Name], Field(min_length=1)]
    laion: Laion


class Purification(_M):
    exposure: Exposure
    sharpness: Sharpness
    flatness: Flatness
    richness: Richness
    aesthetics: Aesthetics


class Runtime(_M):
    workers: PosInt
    memory_budget_mb: Optional[PosFloat] = None     # MB, all decode+score workers of a shard run together
    worker_base_mb: Optional[NonNegFloat] = None    # MB, one worker's peak RSS: base ...
    worker_mb_per_mp: Optional[NonNegFloat] = None  # ... + MB per megapixel


class Report(_M):
    thumb_px: PosInt
    contact_sheet_per_reason: NonNegInt


class Synth(_M):
    n: PosInt
    clean_megapixels: Pair
    large_megapixels: Pair
    n_large: NonNegInt
    png_fraction: Fraction
    defect_fraction: Fraction

    @model_validator(mode="after")
    def _order(self):
        _ordered(self.clean_megapixels, "clean_megapixels")
        _ordered(self.large_megapixels, "large_megapixels")
        return self


# -- corpus -----------------------------------------------------------------------------------------

class Seam(_M):
    stride: PosInt                           # px
    r_t: PosFloat                            # gradient ratio


class Consistency(_M):
    psnr_min: NonNegFloat                    # dB
    ssim_min: Fraction
    psnr_block_min: NonNegFloat              # dB
    ssim_block_min: Fraction
    psnr_block_drop_max: NonNegFloat         # dB
    ssim_block_drop_max: Fraction
    lpips_max: Optional[NonNegFloat]


class Regions(_M):
    patch: PosInt                            # px
    n_top: NonNegInt
    n_random: NonNegInt
    max_flagged: NonNegInt


class Instances(_M):
    max_flagged: NonNegInt


class FinalFilters(_M):
    seam: Seam
    consistency: Consistency
    regions: Regions
    instances: Instances


class Corpus(_M):
    archive_min_megapixels: PosFloat
    backend: Name
    tile: PosInt                             # output px
    overlap: NonNegInt                       # output px
    ramp: Literal["cosine", "linear"]
    storage_format: Name
    max_upscales_per_shard: Optional[NonNegInt]
    final_filters: FinalFilters

    @model_validator(mode="after")
    def _overlap(self):
        if self.overlap >= self.tile:
            raise ValueError(f"overlap {self.overlap} must be < tile {self.tile}")
        return self


class PaperTable1(_M):
    raw_pool: NonNegInt
    candidate_pool: NonNegInt
    final: NonNegInt


# -- captions -----------------------------------------------------------------------------------------

class CaptionModels(_M):
    tagger: Name
    tag_pruner: Name
    grounder: Name
    segmenter: Name
    describer: Name
    aesthetics: Name
    artifact_judge: Name


class Tagger(_M):
    backend: Name
    max_tags: PosInt
    min_score: Fraction


class Grounder(_M):
    backend: Name
    box_threshold: Fraction
    max_boxes_per_tag: PosInt


class Segmenter(_M):
    backend: Name
    mask_threshold: Fraction


class Nms(_M):
    iou_threshold: Fraction


class Crop(_M):
    padding: _float(ge=0, le=1)             # per side, fraction of the box side
    max_long_edge: PosInt                    # px


class Highlight(_M):
    long_edge: PosInt                        # px
    dim: Fraction                            # brightness factor
    outline_px: NonNegInt
    outline_rgb: Annotated[list[_int(ge=0, le=255)], Field(min_length=3, max_length=3)]


class Importance(_M):
    min: _float()
    max: _float()

    @model_validator(mode="after")
    def _order(self):
        if self.min >= self.max:
            raise ValueError(f"min {self.min} must be < max {self.max}")
        return self


class Words(_M):
    min_words: NonNegInt
    max_words: PosInt

    @model_validator(mode="after")
    def _order(self):
        if self.min_words > self.max_words:
            raise ValueError(f"min_words {self.min_words} > max_words {self.max_words}")
        return self


class MinWords(_M):
    min_words: NonNegInt


class Rle(_M):
    chunk_columns: PosInt


class Read(_M):
    band_rows: PosInt


class Captions(_M):
    models: CaptionModels
    tagger: Tagger
    grounder: Grounder
    segmenter: Segmenter
    analysis_long_edge: PosInt               # px
    nms: Nms
    min_area_fraction: Fraction
    max_instances: PosInt
    crop: Crop
    vlm_max_pixels: Optional[NonNegInt] = None   # px; null / 0: no limit
    highlight: Highlight
    importance: Importance
    caption_view_long_edge: PosInt           # px
    long_caption: Words
    short_caption: Words
    description: MinWords
    rle: Rle
    read: Read


class BenchSplit(_M):
    n_images: NonNegInt
    seed: StrictInt
    rule: Name


# -- judges: one section per VLM use (names free, fields checked) --------------------------------------

class VlmUse(_M):
    backend: Optional[Name] = None
    endpoint: Optional[Name] = None
    model: Optional[Name] = None
    api_key_env: Optional[Name] = None
    temperature: Optional[_float(ge=0, le=2)] = None
    max_tokens: Optional[PosInt] = None
    thinking: Optional[StrictBool] = None
    max_concurrency: PosInt = 4
    timeout_s: PosFloat = 120.0              # s
    retries: NonNegInt = 3
    schema_retries: NonNegInt = 2
    backoff_s: NonNegFloat = 1.0             # s
    backoff_max_s: NonNegFloat = 30.0        # s
    cache_dir: Optional[Name] = None
    prompt_dir: Optional[Name] = None
    prompts: Optional[dict[Name, Name]] = None
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: _int(ge=1, le=100) = 95
    seed: Optional[StrictInt] = None
    reference_prompts: Optional[Name] = None  # the bench judges: PixVerve-95K's build_prompts.py

    @model_validator(mode="after")
    def _backoff(self):
        if self.backoff_s > self.backoff_max_s:
            raise ValueError(f"backoff_s {self.backoff_s} > backoff_max_s {self.backoff_max_s}")
        return self


# -- training -------------------------------------------------------------------------------------------

class Tier(_M):
    side: PosInt                             # px


class Buckets(_M):
    ratios: Annotated[list[IntPair], Field(min_length=1)]
    crop_scale_range: Pair
    caption_field: Literal["long_caption", "short_caption"]

    @model_validator(mode="after")
    def _order(self):
        _ordered(self.crop_scale_range, "crop_scale_range")
        return self


class Ema(_M):
    decay: _float(gt=0, lt=1)


class Sampling(_M):
    steps: PosInt
    shift: PosFloat
    guidance_scale: NonNegFloat


class Backbone(_M):
    pretrained: Optional[Name]
    transformer_subfolder: Optional[Name] = None
    vae_subfolder: Optional[Name] = None


class InitFrom(_M):
    tier: Name
    epoch: Optional[NonNegFloat]


class Rung(_M):
    tier: Name
    epochs: PosFloat
    gpu_hours: NonNegFloat
    init_from: Union[Literal["base"], InitFrom]


class Scheme(_M):
    label: Name
    backbone: Name
    lr: _float(gt=0, lt=1)
    ladder: Annotated[list[Rung], Field(min_length=1)]
    rank: Optional[PosInt] = None
    alpha: Optional[PosFloat] = None
    window_aspect_ratios: Optional[list[Annotated[StrictStr, Field(pattern=r"^[1-9][0-9]*:[1-9][0-9]*$")]]] = None
    partition_factors: Optional[dict[Name, list[IntPair]]] = None
    patch_source: Optional[Literal["paper", "public_code"]] = None
    patch: Optional[dict[Name, dict[Name, PosInt]]] = None


class InferenceCell(_M):
    gpus: PosInt
    seconds: PosFloat                        # s per sample


class Training(_M):
    linear_scale: PosFloat                   # tier sides scale by it, pixel budgets by its square
    token_px: PosInt                         # px per token side
    dataset_images: PosInt
    tiers: Annotated[dict[Name, Tier], Field(min_length=1)]
    buckets: Buckets
    batch_size: PosInt
    max_steps_per_stage: Optional[PosInt]
    checkpoint_every: PosInt                 # optimizer steps
    grad_accumulation: PosInt
    optimizer: Name
    betas: Annotated[list[_float(ge=0, lt=1)], Field(min_length=2, max_length=2)]
    weight_decay: NonNegFloat
    ema: Optional[Ema]
    gradient_checkpointing: Union[StrictBool, Literal["gpu"]]
    precision: Name
    timestep_sampling: Literal["logit_normal", "uniform"]
    seed: StrictInt
    deepspeed_stage: Literal[1, 2, 3]
    sampling: Sampling
    device_type: Name
    backbones: dict[Name, Backbone]
    schemes: Annotated[dict[Name, Scheme], Field(min_length=1)]
    inference_table_a2: dict[Name, dict[Name, InferenceCell]]

    @model_validator(mode="after")
    def _references(self):
        for name, s in self.schemes.items():
            if s.backbone not in self.backbones:
                raise ValueError(f"schemes.{name}.backbone {s.backbone!r} is not one of backbones {sorted(self.backbones)}")
            for i, rung in enumerate(s.ladder):
                tiers = [rung.tier] + ([rung.init_from.tier] if isinstance(rung.init_from, InitFrom) else [])
                for t in tiers:
                    if t not in self.tiers:
                        raise ValueError(f"schemes.{name}.ladder.{i}: tier {t!r} is not one of tiers {sorted(self.tiers)}")
        return self


# -- the whole profile ------------------------------------------------------------------------------------

class Profile(_M):
    profile: Name
    overridable: list[Name]
    sizes: Sizes
    io: Io
    resolution_screen: ResolutionScreen
    purification: Purification
    runtime: Runtime
    report: Report
    synth: Synth
    corpus: Corpus
    paper_table1: PaperTable1
    captions: Captions
    bench_split: BenchSplit
    judges: dict[Name, VlmUse]
    training: Training

    @model_validator(mode="after")
    def _screen_scaled(self):
        """The resolution screen at ``linear_scale`` still has bounds of at least one pixel and
        ordered tiers (medium below large)."""
        s = self.sizes.linear_scale
        rs = self.resolution_screen
        mp = rs.megapixel
        bounds = {"resolution_screen.large.min_side": rs.large.min_side * s,
                  "resolution_screen.medium.min_side": rs.medium.min_side * s,
                  "resolution_screen.large.min_megapixels_exclusive": rs.large.min_megapixels_exclusive * mp * s * s,
                  "resolution_screen.medium.min_megapixels_inclusive": rs.medium.min_megapixels_inclusive * mp * s * s}
        for key, px in bounds.items():
            if px < 1:
                raise ValueError(f"sizes.linear_scale {s} makes {key} {px:.3g} px: every screen bound must stay >= 1 px "
                                 "(else a 1 x 1 image passes the resolution screen)")
        if rs.medium.max_megapixels_inclusive > rs.large.min_megapixels_exclusive:
            raise ValueError("resolution_screen.medium.max_megapixels_inclusive must be <= "
                             "resolution_screen.large.min_megapixels_exclusive")
        return self


# -- errors as one line ----------------------------------------------------------------------------------

def _show(value: Any, limit: int = 60) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    s = repr(value)
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _rule(err: dict) -> str:
    kind, msg = err.get("type", ""), err.get("msg", "")
    if kind == "extra_forbidden":
        return "unknown key (a typo? every key of paper.yaml is declared in curation/config_schema.py)"
    if kind == "missing":
        return "required key is missing"
    if kind == "finite_number":
        return "must be a finite number (NaN and inf are refused)"
    return msg[0].lower() + msg[1:] if msg else kind


def _path(loc: tuple, data: Any, missing: bool = False) -> str:
    """pydantic's location -> the dotted key path in ``data`` (the names pydantic gives union
    branches and validators are not keys of ``data``: dropped)."""
    parts, cur = [], data
    for i, p in enumerate(loc):
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and isinstance(p, int) and 0 <= p < len(cur):
            cur = cur[p]
        elif not (missing and i == len(loc) - 1):
            continue
        parts.append(str(p))
    return ".".join(parts)


def format_errors(exc: ValidationError, data: dict, limit: int = 8) -> str:
    """``<key path> = <value>: <rule>`` per violating key (the first ``limit``), joined by ``; ``
    (one line). A key that fails every branch of a union lists each branch's rule, joined by ``or``."""
    lines: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for err in exc.errors(include_url=False):
        kind = err.get("type")
        path = _path(err.get("loc", ()), data, missing=kind == "missing")
        if kind == "value_error":  # a cross-key rule: its message names the keys
            lines.setdefault(f"\0{len(lines)}", []).append(
                f"{path + ': ' if path else ''}{err.get('msg', '').removeprefix('Value error, ')}")
            continue
        if kind != "missing":
            values.setdefault(path, err.get("input"))
        rule = _rule(err)
        if rule not in lines.setdefault(path, []):
            lines[path].append(rule)
    out = []
    for path, rules in lines.items():
        if path.startswith("\0"):
            out.append(rules[0])
        elif path in values:
            out.append(f"{path} = {_show(values[path])}: {' or '.join(rules)}")
        else:
            out.append(f"{path}: {' or '.join(rules)}")
    more = f"; ... and {len(out) - limit} more" if len(out) > limit else ""
    return "; ".join(out[:limit]) + more


def validate_config(data: dict, name: str = "?", source: str | None = None) -> dict:
    """``data`` (a resolved profile) when every key has its type and range, else :class:`ConfigError`
    (one line: profile, then each violation's key path, value and rule). ``data`` is returned
    unchanged: validation never rewrites a value (the config hash stays the file's)."""
    try:
        Profile.model_validate(data)
    except ValidationError as exc:
        where = f" ({source})" if source else ""
        raise ConfigError(f"config {name!r}{where}: {format_errors(exc, data)}") from None
    return data
