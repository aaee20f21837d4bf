"""Multi-scale Fidelity Index (MSFI): preprocessing and scoring maths (judge wired later)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, Sequence

from evaluation.metrics.base import PER_IMAGE, Metric, MetricResult, register

GLOBAL_WEIGHTS: dict[str, int] = {"SC-global": 5, "PI": 3, "LC": 2, "CH": 2}
LOCAL_WEIGHTS: dict[str, int] = {"NGE": 2, "GA": 3, "TF": 5, "MGC": 2, "SC-local": 2}
SCORE_RANGE = (1.0, 5.0)
N_PATCHES = 10
GLOBAL_LONG_EDGE = 2048
JPEG_QUALITY = 98
PATCH_SMALL, PATCH_LARGE, LARGE_FROM_LONG_EDGE = 512, 1024, 7680
SEED = 42
# the reference's request settings (msfi_evaluator.mllm_inference)
JUDGE_REQUEST: dict[str, Any] = {
    "temperature": 0.1,
    "max_tokens": 8192,
    "response_format": {"type": "json_object"},
    "extra_body": {"chat_template_kwargs": {"enable_thinking": False}},
}


# ---- judge answers --------------------------------------------------------------------------
def parse_judge_json(text: str | None) -> dict | None:
    """The reference's answer extraction: the ``<json>...</json>`` block (else the whole text),
    Markdown fences removed, ``json.loads``; failing that, the outermost ``{...}``. Returns a
    dict, or None when no JSON object can be read."""
    if not isinstance(text, str):
        return None
    m = re.search(r"<json>(.*?)</json>", text, re.DOTALL)
    content = (m.group(1).strip() if m else text).replace("```json", "").replace("```", "").strip()
    try:
        obj = json.loads(content)
    except ValueError:
        b = re.search(r"(\{.*\})", text, re.DOTALL)
        if not b:
            return None
        try:
            obj = json.loads(b.group(1))
        except ValueError:
            return None
    return obj if isinstance(obj, dict) else None


def parse_score(value: Any, lo: float, hi: float) -> tuple[float | None, str | None]:
    """A judge's sub-score: a number (or numeric string, as the reference's ``float()`` accepts)
    that is finite and within ``[lo, hi]``. Returns ``(score, None)`` or ``(None, why)``."""
    if isinstance(value, bool) or value is None:
        return None, f"not a number: {value!r}"
    if isinstance(value, (int, float)):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            return None, f"not a number: {value!r}"
    else:
        return None, f"not a number: {value!r}"
    if not math.isfinite(x):
        return None, f"not finite: {value!r}"
    if not lo <= x <= hi:
        return None, f"out of range [{lo:g}, {hi:g}]: {value!r}"
    return x, None


def weighted_score(answer: Any, weights: Mapping[str, int], lo: float, hi: float) -> tuple[float | None, dict, list[str]]:
    """``sum(w_i s_i) / sum(w_i)`` over the sub-dimensions, or None with the problems found.

    A missing or malformed sub-dimension makes the whole answer a judge failure (the reference
    would silently score it 3)."""
    if not isinstance(answer, Mapping):
        return None, {}, [f"answer is not a JSON object ({type(answer).__name__})"]
    subs: dict[str, float] = {}
    problems: list[str] = []
    for key in weights:
        if key not in answer:
            problems.append(f"missing {key}")
            continue
        s, why = parse_score(answer[key], lo, hi)
        if s is None:
            problems.append(f"{key} {why}")
        else:
            subs[key] = s
    if problems:
        return None, subs, problems
    total = sum(weights.values())
    return sum(weights[k] * subs[k] for k in weights) / total, subs, []


def msfi_from_answers(global_answer: Any, local_answers: Sequence[Any], expected_patches: int = N_PATCHES,
                      require_complete: bool = False) -> tuple[float | None, dict]:
    """MSFI of one image from its judge answers: ``S_g + (S_g / 5) * mean_i S_local_i``.

    ``global_answer``: the global-scale answer (keys SC-global, PI, LC, CH); ``local_answers``:
    one entry per sampled patch (keys NGE, GA, TF, MGC, SC-local), ``None`` for a failed call.
    Scores are on 1..5; weights are :data:`GLOBAL_WEIGHTS` / :data:`LOCAL_WEIGHTS`.

    Failures are recorded in ``info["failures"]``, never scored as 3:

    * a failed or malformed global answer -> value None;
    * a failed or malformed patch answer is left out of the local mean (the reference also
      averages over the patches whose call succeeded); no valid patch -> value None;
    * ``info["complete"]`` is True only with a valid global answer and ``expected_patches``
      valid patch answers (all 11); ``require_complete=True`` returns None otherwise.
    """
    lo, hi = SCORE_RANGE
    failures: list[dict[str, Any]] = []
    s_g, g_subs, g_problems = weighted_score(global_answer, GLOBAL_WEIGHTS, lo, hi)
    if g_problems:
        failures.append({"where": "global", "problems": g_problems})
    local_scores: list[float | None] = []
    local_subs: list[dict[str, float]] = []
    for i, ans in enumerate(local_answers):
        s_l, subs, problems = weighted_score(ans, LOCAL_WEIGHTS, lo, hi) if ans is not None else (
            None, {}, ["no answer (call failed)"])
        local_scores.append(s_l)
        if problems:
            failures.append({"where": f"local[{i}]", "problems": problems})
        else:
            local_subs.append(subs)
    valid = [s for s in local_scores if s is not None]
    n_valid = len(valid)
    complete = s_g is not None and n_valid == expected_patches == len(local_answers)
    s_local = math.fsum(valid) / n_valid if valid else None
    info: dict[str, Any] = {
        "s_global": s_g,
        "s_local": s_local,
        "global_sub": g_subs,
        "local_scores": local_scores,
        "local_sub_mean": {k: math.fsum(d[k] for d in local_subs) / len(local_subs) for k in LOCAL_WEIGHTS}
        if local_subs else {},
        "n_patches": len(local_answers),
        "n_valid_patches": n_valid,
        "expected_patches": expected_patches,
        "complete": complete,
        "failures": failures,
    }
    if s_g is None or s_local is None or (require_complete and not complete):
        return None, info
    return s_g + (s_g / 5.0) * s_local, info


# ---- preprocessing (reference util/image_process.py) -----------------------------------------
def patch_size_for(width: int, height: int) -> int:
    """512-px patches, or 1024 when the long edge is >= 7680 (the reference's "10K" mode)."""
    return PATCH_LARGE if max(width, height) >= LARGE_FROM_LONG_EDGE else PATCH_SMALL


def global_view(img: Any):
    """The global view: RGB, Lanczos-resized so the long edge is 2048 (always, as the reference,
    upscaling a smaller image too)."""
    from curation.patch_sampler import resize_long_edge

    return resize_long_edge(img.convert("RGB") if img.mode != "RGB" else img, GLOBAL_LONG_EDGE, upscale=True)


def jpeg_bytes(img: Any, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG encoding sent to the judge (quality 98, Pillow defaults otherwise)."""
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def local_patches(img: Any, rng: Any) -> list:
    """The 10 local patches (6 highest Sobel variance + 4 random) as ``PatchBox`` es; share one
    generator (``random.Random(42)`` reproduces the reference) over the set in bench order."""
    from curation.patch_sampler import sample_patches

    return sample_patches(img, patch_size_for(*img.size), rng)


@register
class MsfiMetric(Metric):
    """MSFI (PixVerve appendix F.2): a VLM judge scores a global view and 10 local patches.

    Protocol (reference: PixVerve-95K ``eval/msfi_evaluator.py``, ``eval/util/image_process.py``
    @3f9e7bd; prompts of appendix I, project-written prompt files, hash recorded per score):

    * image ``convert("RGB")``; global view Lanczos-resized to long edge 2048, JPEG quality 98;
    * patch size 512, or 1024 when the long edge is >= 7680; 10 patches from
      :mod:`curation.patch_sampler` (analysis copy at long edge 2048, Sobel-variance grid, top 6
      + 4 random with one generator seeded 42 over the images in bench order), cropped at full
      resolution, JPEG 98;
    * one global call (4 sub-dimensions: SC-global, PI, LC, CH) and one call per patch (the
      patch, then the global view, with the patch's relative coordinates ``[x0, y0, x1, y1]``
      in the prompt; 5 sub-dimensions NGE, GA, TF, MGC, SC-local), scores 1..5, request
      settings :data:`JUDGE_REQUEST` (temperature 0.1, JSON answers, thinking off);
    * ``S_g`` = weighted mean (5, 3, 2, 2), ``S_l_i`` = weighted mean (2, 3, 5, 2, 2),
      MSFI = ``S_g + (S_g / 5) * mean_i S_l_i`` (range 1.2 .. 10); set score = mean over images.

    Deviations: a missing or malformed sub-dimension is recorded as a judge failure and that
    answer is left out (the reference silently scores it 3); the number of images with all 11
    valid answers is reported (``extra["n_complete"]``). Bench order = prompts file order (the
    reference uses directory listing order, which is not reproducible). The analysis copy of an
    image smaller than 2048 px is not upscaled (see the sampler).
    """

    name = "msfi"
    kind = PER_IMAGE
    requires = ("judge",)
    protocol_version = "pixverve-3f9e7bd/msfi-6+4-judge/1"
    higher_is_better = True

    def __init__(self, judge: Any = None) -> None:
        self.judge = judge

    def availability(self) -> tuple[bool, str | None]:
        return False, "no judge: the VLM judge client is not wired to MSFI yet"

    def score_answers(self, global_answer: Any, local_answers: Sequence[Any], **extra: Any) -> MetricResult:
        """A MetricResult from judge answers (for the runner once the judge is wired)."""
        value, info = msfi_from_answers(global_answer, local_answers)
        if value is None:
            where = "; ".join(f"{f['where']}: {', '.join(f['problems'])}" for f in info["failures"]) or "incomplete"
            return self.result(None, f"judge failure: {where}", **info, **extra)
        return self.result(value, **info, **extra)

    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        agg = super().aggregate(results)
        agg.extra["n_complete"] = sum(1 for r in results if r.extra.get("complete"))
        return agg
