"""Parameters of the captions pipeline (paper 3.1.5) with their defaults and where they come from.

:data:`DEFAULTS` maps dotted keys (``captions.<...>``, the future ``captions:`` section of
``configs/paper.yaml``) to values. The comment on each line says the paper section / table the
value comes from, or "not in paper" when it is a project choice the paper does not state.
:func:`resolve` returns the flat parameter dict a caller uses: the defaults overridden by a
(nested or dotted) mapping, unknown keys rejected so a typo never passes silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULTS: dict[str, Any] = {
    # -- models (names recorded in provenance; the backends below decide what actually runs) --
    "captions.models.tagger": "RAM++",                                   # paper 3.1.5 (RAM++ [24])
    "captions.models.tag_pruner": "Qwen3-30B-A3B-Instruct-2507",         # paper 3.1.5
    "captions.models.grounder": "Rex-Omni",                              # paper 3.1.5 (Rex-Omni [26])
    "captions.models.segmenter": "SAM 2",                                # paper 3.1.5 (SAM 2 [38])
    "captions.models.describer": "Qwen3-VL-235B-A22B-Instruct",          # paper 3.1.5 (descriptions, captions)
    "captions.models.aesthetics": "ArtiMuse",                            # paper 3.1.5 (ArtiMuse [5])
    "captions.models.artifact_judge": "Qwen3-VL-30B-A3B-Instruct",       # paper 3.1.4 (instance artifacts)
    # -- backends of the offline-capable steps (registry names in curation.captioning.backends) --
    "captions.tagger.backend": "heuristic",          # not in paper (production: an HTTP RAM++ service)
    "captions.tagger.max_tags": 40,                  # not in paper
    "captions.tagger.min_score": 0.0,                # not in paper (tag confidence floor)
    "captions.grounder.backend": "heuristic",        # not in paper (production: Rex-Omni over HTTP)
    "captions.grounder.box_threshold": 0.3,          # not in paper (min detection score)
    "captions.grounder.max_boxes_per_tag": 5,        # not in paper
    "captions.segmenter.backend": "heuristic",       # not in paper (production: SAM 2)
    "captions.segmenter.mask_threshold": 0.5,        # not in paper (probability threshold of a mask)
    # -- the analysis view the tagger / grounder / segmenter see --
    "captions.analysis_long_edge": 1024,             # not in paper (downscaled whole image, area resampling)
    # -- instance selection --
    "captions.nms.iou_threshold": 0.5,               # paper 3.1.5 names IoU-based NMS; the value is not in paper
    "captions.min_area_fraction": 0.001,             # paper 3.1.5 names "an area threshold"; the value is not in paper
    "captions.max_instances": 16,                    # not in paper (highest grounding scores first)
    # -- the visual pair of each instance --
    "captions.crop.padding": 0.05,                   # paper 3.1.5 ("5% padding"); per side, fraction of the box side
    "captions.crop.max_long_edge": 2048,             # not in paper (crop downscaled to this long edge for the VLM)
    # the most pixels an image sent to the VLM keeps (crops, highlights, caption view), read from the coarsest
    # stored level that still has them: transformers 5.23's Qwen2VLImageProcessor (the one Qwen3-VL uses) resizes
    # every image to at most size.longest_edge = 28*28*1280 px by default; a checkpoint's preprocessor_config.json
    # may set another budget, so the VLM server is started with this one (vLLM: --mm-processor-kwargs
    # '{"max_pixels": 1003520}'). null / 0: no limit (only crop.max_long_edge / the view long edges).
    "captions.vlm_max_pixels": 1003520,              # not in paper
    "captions.highlight.long_edge": 1024,            # not in paper (long edge of the highlighted full image)
    "captions.highlight.dim": 0.35,                  # not in paper (brightness factor outside the mask)
    "captions.highlight.outline_px": 3,              # not in paper (outline width, highlight-image pixels)
    "captions.highlight.outline_rgb": [255, 64, 0],  # not in paper
    # -- answers --
    "captions.importance.min": 0,                    # not in paper (the paper names a "semantic importance score")
    "captions.importance.max": 10,                   # not in paper
    "captions.caption_view_long_edge": 2048,         # not in paper (image sent with the caption tasks)
    "captions.long_caption.min_words": 40,           # not in paper (Table 2: average long caption 234.1 words)
    "captions.long_caption.max_words": 600,          # not in paper
    "captions.short_caption.min_words": 5,           # not in paper
    "captions.short_caption.max_words": 80,          # not in paper
    "captions.description.min_words": 3,             # not in paper (an instance description)
    # -- memory --
    "captions.rle.chunk_columns": 512,               # not in paper (columns per step of the streamed RLE encoder)
    "captions.read.band_rows": 1024,                 # not in paper (rows per region-read band when downscaling)
}


def _flatten(m: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in m.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and not any(d == key for d in DEFAULTS):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def resolve(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The defaults with ``overrides`` applied. ``overrides`` may be nested
    (``{"captions": {"nms": {"iou_threshold": 0.6}}}``), dotted (``{"captions.nms.iou_threshold":
    0.6}``) or relative to the section (``{"nms": {"iou_threshold": 0.6}}``). Unknown keys raise
    ``KeyError``."""
    out = dict(DEFAULTS)
    if not overrides:
        return out
    flat = _flatten(overrides)
    unknown = []
    for k, v in flat.items():
        key = k if k.startswith("captions.") else f"captions.{k}"
        if key not in DEFAULTS:
            unknown.append(k)
            continue
        out[key] = v
    if unknown:
        raise KeyError(f"unknown captions parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    return out


def param(cfg: Mapping[str, Any] | None, key: str) -> Any:
    """One parameter by its key relative to ``captions.`` (``"nms.iou_threshold"``)."""
    full = key if key.startswith("captions.") else f"captions.{key}"
    if cfg is not None and full in cfg:
        return cfg[full]
    return DEFAULTS[full]
