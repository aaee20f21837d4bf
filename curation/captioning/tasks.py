"""The captions tasks (paper 3.1.5) in the VLM task registry, with their offline answers.

Registered on import through :func:`curation.vlm.register_task`:

================================ ========================= ======================= ==============================
task                             images (in order)         variables               answer
================================ ========================= ======================= ==============================
``caption_tag_pruning``          none (text LLM) or the    ``tags``                ``tangible_tags`` [str],
                                 image                                             ``reason``
``caption_instance_description`` crop, highlighted full    ``label``, ``box``,     ``description`` str,
                                 image                     ``area_fraction``       ``importance`` int 0-10
``caption_aesthetics_analysis``  the image (downscaled)    none                    six dimension texts,
                                                                                   ``overall`` 0-100 (optional)
``caption_long``                 the image (downscaled)    ``tags``, ``instances``, ``long_caption`` str
                                                           ``aesthetics``
``caption_short``                the image (downscaled)    ``long_caption``        ``short_caption`` str
================================ ========================= ======================= ==============================

The instance artifact check of the visual pair uses the existing ``instance_artifact`` task
(paper 3.1.4, same two images, variable ``label``); its answers are parsed by
:func:`curation.captioning.answers.parse_instance_artifact`. The aesthetics *analysis* is a new
task, distinct from the ArtiMuse *scoring* task ``artimuse_aesthetics``.

Each spec's ``check`` is the step's parser (:mod:`curation.captioning.answers`) with the default
bounds, so the client retries an answer that does not parse. The heuristic offline answers
(``heuristic`` of each spec) are deterministic functions of the pixels and variables they get;
every text they write starts with ``"heuristic:"`` and numbers come from image statistics
(the backend and model of the result say ``heuristic`` as well).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from curation.captioning import answers as A
from curation.captioning.config import DEFAULTS
from curation.vlm import Field, TaskSpec, get_task, heuristic_aesthetics, register_task

H = "heuristic:"

#: request settings of the captions tasks (not in paper): low temperature, JSON, no thinking
CAPTION_REQUEST: dict[str, Any] = {
    "temperature": 0.2,
    "max_tokens": 1024,
    "response_format": {"type": "json_object"},
    "chat_template_kwargs": {"enable_thinking": False},
}
LONG_CAPTION_REQUEST: dict[str, Any] = {**CAPTION_REQUEST, "max_tokens": 2048}

#: words the heuristic pruner treats as non-tangible (scenes, attributes, light, image words)
NON_TANGIBLE = frozenset({
    "scene", "tones", "tone", "light", "lighting", "shadow", "style", "atmosphere", "mood", "colour", "color",
    "texture", "pattern", "background", "image", "photo", "picture", "view", "close-up", "closeup", "day",
    "night", "sunny", "cloudy", "indoor", "outdoor", "landscape", "abstract", "bright", "dark", "mid-tone",
    "wallpaper", "art", "design", "beautiful",
})


# =============================================================================================
# offline answers
# =============================================================================================
def _modal_colour(rgb: np.ndarray) -> str:
    from curation.captioning.heuristic import PALETTE, quantise

    small = rgb[:: max(1, rgb.shape[0] // 128), :: max(1, rgb.shape[1] // 128)]
    q = quantise(np.ascontiguousarray(small))
    return list(PALETTE)[int(np.bincount(q.ravel(), minlength=len(PALETTE)).argmax())]


def _colours(rgb: np.ndarray, k: int = 3) -> list[str]:
    from curation.captioning.heuristic import PALETTE, quantise

    small = rgb[:: max(1, rgb.shape[0] // 128), :: max(1, rgb.shape[1] // 128)]
    counts = np.bincount(quantise(np.ascontiguousarray(small)).ravel(), minlength=len(PALETTE))
    names = list(PALETTE)
    return [names[i] for i in np.argsort(-counts, kind="stable")[:k] if counts[i] > 0]


def heuristic_tag_pruning(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """Keep the tags none of whose words is in :data:`NON_TANGIBLE`."""
    tags = variables.get("tags") or []
    keep, drop = [], []
    for t in tags:
        if not isinstance(t, str):
            continue
        words = set(t.lower().replace("_", " ").split())
        (drop if words & NON_TANGIBLE or not words else keep).append(t)
    return {"tangible_tags": keep,
            "reason": f"{H} dropped {len(drop)} tag(s) naming scenes, tones, light or the image itself"}


def _box_norm(variables: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    b = variables.get("box")
    try:
        x0, y0, x1, y1 = (float(v) for v in b)
    except (TypeError, ValueError):
        return None
    return (x0, y0, x1, y1) if all(math.isfinite(v) for v in (x0, y0, x1, y1)) else None


def heuristic_instance_description(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """Description from the label, the crop's modal colour, position and size; importance
    0-10 from ``sqrt(area_fraction)`` and closeness to the image centre."""
    from curation.captioning.heuristic import position_word

    label = str(variables.get("label") or "object")
    crop = images[0]
    colour = _modal_colour(crop)
    b = _box_norm(variables)
    frac = variables.get("area_fraction")
    frac = float(frac) if isinstance(frac, (int, float)) and math.isfinite(frac) else 0.0
    if b is not None:
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        where = position_word(cx, cy)
        central = 1.0 - min(1.0, math.hypot(cx - 0.5, cy - 0.5) / math.hypot(0.5, 0.5))
    else:
        where, central = "unknown part", 0.5
    grey = crop.astype(np.float32).mean(axis=2) if crop.ndim == 3 else crop.astype(np.float32)
    texture = "finely textured" if float(np.abs(np.diff(grey, axis=1)).mean()) > 8.0 else "smooth"
    lo, hi = DEFAULTS["captions.importance.min"], DEFAULTS["captions.importance.max"]
    imp = int(round(lo + (hi - lo) * min(1.0, 1.5 * math.sqrt(max(0.0, frac))) * (0.5 + 0.5 * central)))
    desc = (f"{H} a {texture} {label}, mostly {colour}, in the {where} of the image, "
            f"covering about {100 * frac:.1f} % of the frame.")
    return {"description": desc, "importance": max(lo, min(hi, imp))}


def heuristic_aesthetics_analysis(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """Six dimension texts built from the ArtiMuse-shaped heuristic levels (image statistics)."""
    a = heuristic_aesthetics(images, variables)
    basis = {
        "composition_design": "placement of the gradient energy relative to the rule-of-thirds points",
        "visual_elements_structure": "entropy of the grey-level histogram",
        "technical_execution": "sharpness (Laplacian variance) and exposure",
        "originality_creativity": "colourfulness and entropy",
        "theme_communication": "global contrast",
        "emotion_viewer_response": "colourfulness",
    }
    out = {k: f"{H} level {int(a[k])}/10 from the {basis[k]}; not an aesthetic judgement." for k in A.AESTHETIC_DIMENSIONS}
    out["overall"] = float(a["overall"])
    return out


def _instance_lines(instances: Any) -> list[str]:
    out = []
    if isinstance(instances, list):
        for inst in instances:
            if isinstance(inst, Mapping) and isinstance(inst.get("description"), str):
                out.append(inst["description"].replace(H, "").strip())
    return out


def heuristic_long_caption(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """Template caption: image statistics (light, orientation, palette, palette of each
    horizontal third), the tags, every instance description, the aesthetics texts; cut at the
    maximum word count."""
    img = images[0]
    g = float(img.mean())
    light = "bright" if g > 160 else ("dark" if g < 80 else "evenly lit")
    cols = _colours(img)
    h, w = img.shape[:2]
    orient = "landscape" if w > h * 1.1 else ("portrait" if h > w * 1.1 else "square")
    art = "An" if light[0] in "aeiou" else "A"
    parts = [f"{H} {art} {light} {orient} picture whose palette is dominated by {', '.join(cols) or 'neutral'} tones."]
    thirds = []
    for name, part in (("upper", img[: h // 3]), ("middle", img[h // 3: 2 * h // 3]), ("lower", img[2 * h // 3:])):
        if part.size:
            thirds.append(f"the {name} third is mostly {' and '.join(_colours(part, 2))}")
    if thirds:
        parts.append("Seen from top to bottom, " + ", ".join(thirds) + ".")
    tags = [t for t in (variables.get("tags") or []) if isinstance(t, str)]
    if tags:
        parts.append("Visible elements include " + ", ".join(tags[:12]) + ".")
    lines = _instance_lines(variables.get("instances"))
    if lines:
        parts.append("In detail: " + " ".join(s if s.endswith(".") else s + "." for s in lines))
    aes = variables.get("aesthetics")
    if isinstance(aes, Mapping):
        for k, name in A.AESTHETIC_DIMENSIONS.items():
            v = aes.get(k, aes.get(name))  # keyed by answer key or by the paper's name
            if isinstance(v, str) and v.strip():
                parts.append(f"Regarding {name}, " + v.replace(H, "").strip())
    words = " ".join(parts).split()
    return {"long_caption": " ".join(words[: int(DEFAULTS["captions.long_caption.max_words"])])}


def heuristic_short_caption(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """The first sentence of the long caption, at most 40 words."""
    long = str(variables.get("long_caption") or "").replace(H, "").strip()
    first = long.split(". ")[0].strip().rstrip(".")
    words = first.split()[:40]
    if len(words) < 5:
        img = images[0]
        words = f"a picture dominated by {', '.join(_colours(img)) or 'neutral'} tones".split()
    return {"short_caption": f"{H} " + " ".join(words) + "."}


# =============================================================================================
# specs
# =============================================================================================
TAG_PRUNING = register_task(TaskSpec(
    "caption_tag_pruning", "caption_tag_pruning.md",
    (Field("reason", "str", required=False),), (0, 1), CAPTION_REQUEST,
    A.check_with(A.parse_tag_pruning), heuristic_tag_pruning,
    description="paper 3.1.5: an LLM keeps the tags that name tangible objects"))
INSTANCE_DESCRIPTION = register_task(TaskSpec(
    "caption_instance_description", "caption_instance_description.md",
    (Field("description", "str"), Field("importance", "int", DEFAULTS["captions.importance.min"],
                                         DEFAULTS["captions.importance.max"])),
    (2, 2), CAPTION_REQUEST, A.check_with(A.parse_instance_description), heuristic_instance_description,
    description="paper 3.1.5: description + semantic importance of an instance from its visual pair"))
AESTHETICS_ANALYSIS = register_task(TaskSpec(
    "caption_aesthetics_analysis", "caption_aesthetics_analysis.md",
    (*(Field(k, "str") for k in A.AESTHETIC_DIMENSIONS), Field("overall", "number", 0, 100, required=False)),
    (1, 1), CAPTION_REQUEST, A.check_with(A.parse_aesthetics_analysis), heuristic_aesthetics_analysis,
    description="paper 3.1.5: ArtiMuse-style written analysis on six dimensions"))
LONG_CAPTION = register_task(TaskSpec(
    "caption_long", "caption_long.md", (Field("long_caption", "str"),), (1, 1), LONG_CAPTION_REQUEST,
    A.check_with(A.parse_long_caption), heuristic_long_caption,
    description="paper 3.1.5: long caption from the image and all aggregated metadata"))
SHORT_CAPTION = register_task(TaskSpec(
    "caption_short", "caption_short.md", (Field("short_caption", "str"),), (1, 1), CAPTION_REQUEST,
    A.check_with(A.parse_short_caption), heuristic_short_caption,
    description="paper 3.1.5: short caption distilled from the long caption and the image"))
#: the instance artifact check of the visual pair (registered by curation.vlm, paper 3.1.4)
INSTANCE_ARTIFACT = get_task("instance_artifact")

CAPTION_TASKS = ("caption_tag_pruning", "caption_instance_description", "caption_aesthetics_analysis",
                 "caption_long", "caption_short")
