"""Multi-scale Fidelity Index (MSFI): preprocessing, scoring maths and the judge calls (VLM client)."""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from curation.vlm import REASONING, Field, TaskSpec, register_task
from curation.vlm import parse_judge_json  # noqa: F401  (re-exported: the reference's answer extraction)
from curation.vlm.heuristic import heuristic_msfi_global, heuristic_msfi_local
from evaluation.metrics.base import PER_IMAGE, MetricResult, register
from evaluation.metrics.judging import JudgedMetric, first_judge_backend, parse_subscores
from evaluation.metrics.judging import parse_score  # noqa: F401  (re-exported: it lived here)

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


# ---- the judge tasks (registered into the curation VLM client's task registry) -----------------
#: MSFI global view (appendix F.2): one 2048-px JPEG-98 image
MSFI_GLOBAL_TASK = register_task(TaskSpec(
    "msfi_global", "msfi_global.md", (*(Field(k, "int", 1, 5) for k in GLOBAL_WEIGHTS), REASONING),
    (1, 1), JUDGE_REQUEST, None, heuristic_msfi_global, description="appendix F.2: MSFI global view"))
#: MSFI local view (appendix F.2): the patch, then the global view
MSFI_LOCAL_TASK = register_task(TaskSpec(
    "msfi_local", "msfi_local.md", (*(Field(k, "int", 1, 5) for k in LOCAL_WEIGHTS), REASONING),
    (2, 2), JUDGE_REQUEST, None, heuristic_msfi_local, description="appendix F.2: MSFI patch + global view"))


def weighted_score(answer: Any, weights: Mapping[str, int], lo: float, hi: float) -> tuple[float | None, dict, list[str]]:
    """``sum(w_i s_i) / sum(w_i)`` over the sub-dimensions, or None with the problems found.

    A missing or malformed sub-dimension makes the whole answer a judge failure (the reference
    would silently score it 3)."""
    if not isinstance(answer, Mapping):
        return None, {}, [f"answer is not a JSON object ({type(answer).__name__})"]
    subs, problems = parse_subscores(answer, weights, lo, hi)
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


@dataclass
class MsfiViews:
    """What the judge sees for one image: the global view and the patches, as sent (JPEG 98)."""

    width: int
    height: int
    patch_size: int
    global_jpeg: bytes
    patches: list  # [(PatchBox, jpeg bytes)]


def build_views(img: Any, rng: Any) -> MsfiViews:
    """The reference's views of one RGB PIL image: global view (long edge 2048, JPEG 98) and the
    10 patches (6 + 4 from :func:`local_patches` with the shared ``rng``, JPEG 98)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    boxes = local_patches(img, rng)
    return MsfiViews(w, h, patch_size_for(w, h), jpeg_bytes(global_view(img)),
                     [(b, jpeg_bytes(img.crop(b.pil_box()))) for b in boxes])


@register
class MsfiMetric(JudgedMetric):
    """MSFI (PixVerve appendix F.2): a VLM judge scores a global view and 10 local patches.

    Protocol (reference: PixVerve-95K ``eval/msfi_evaluator.py``, ``eval/util/image_process.py``
    @3f9e7bd; prompts of appendix I, project-written prompt files ``prompts/msfi_global.md``,
    ``prompts/msfi_local.md``, hash recorded per score):

    * image ``convert("RGB")``; global view Lanczos-resized to long edge 2048, JPEG quality 98;
    * patch size 512, or 1024 when the long edge is >= 7680; 10 patches from
      :mod:`curation.patch_sampler` (analysis copy at long edge 2048, Sobel-variance grid, top 6
      + 4 random with one ``random.Random(42)`` over the images in bench order), cropped at
      full resolution, JPEG 98;
    * one global call (4 sub-dimensions: SC-global, PI, LC, CH) and one call per patch (the
      patch, then the global view, with the patch's relative coordinates ``[x0, y0, x1, y1]``
      in the prompt; 5 sub-dimensions NGE, GA, TF, MGC, SC-local), scores 1..5, request
      settings :data:`JUDGE_REQUEST` (temperature 0.1, JSON answers, thinking off), through
      the VLM client (:mod:`curation.vlm`, tasks ``msfi_global`` / ``msfi_local``);
    * ``S_g`` = weighted mean (5, 3, 2, 2), ``S_l_i`` = weighted mean (2, 3, 5, 2, 2),
      MSFI = ``S_g + (S_g / 5) * mean_i S_l_i`` (range 1.2 .. 10); set score = mean over images.

    Judges: only a model endpoint (client backend ``vllm``) yields ``msfi``. Any other backend
    (the offline ``heuristic`` judge) is reported as ``msfi_<backend>`` (``msfi_heuristic``),
    so a stand-in number never appears under this name. Without a judge: "not available".

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
    TASKS = ("msfi_global", "msfi_local")
    judge_label = "MSFI"

    def __init__(self, judge: Any = None) -> None:
        super().__init__(judge)
        self._rng = random.Random(SEED)

    def begin_set(self) -> None:
        """One generator seeded 42 for the whole set, drawn image by image in bench order."""
        self._rng = random.Random(SEED)

    def score_answers(self, global_answer: Any, local_answers: Sequence[Any], **extra: Any) -> MetricResult:
        """A MetricResult from judge answers (dicts; None for a failed call)."""
        value, info = msfi_from_answers(global_answer, local_answers)
        if value is None:
            where = "; ".join(f"{f['where']}: {', '.join(f['problems'])}" for f in info["failures"]) or "incomplete"
            return self.result(None, f"judge failure: {where}", **info, **extra)
        return self.result(value, **info, **extra)

    def _score_path(self, path: str) -> MetricResult:
        from curation.hashing import sha256_file

        image_id = "sha256:" + sha256_file(path)
        return self._score_file(path, image_id, None)

    def score_item(self, item: Any) -> MetricResult:
        gated = self._row_gate(item)
        if gated is not None:
            return gated
        return self._score_file(item.path, item.image_id or f"file:{os.path.abspath(item.path)}", item.views_dir)

    def _score_file(self, path: str, image_id: str, views_dir: str | None) -> MetricResult:
        img, failed = self._read_rgb(path)
        if failed is not None:
            return failed
        views = build_views(img, self._rng)
        return self.score_views(views, image_id, views_dir)

    def score_views(self, views: MsfiViews, image_id: str, views_dir: str | None = None) -> MetricResult:
        """Send the views to the judge and score its answers (views kept under ``views_dir``)."""
        from curation.vlm import VLMRequest, patch_image_id

        from evaluation.metrics.judging import judge_backend, save_view

        gid = f"{image_id}@msfi-global{GLOBAL_LONG_EDGE}"
        reqs = [VLMRequest("msfi_global", image_id=gid, images=[views.global_jpeg])]
        for b, data in views.patches:
            reqs.append(VLMRequest("msfi_local", image_id=patch_image_id(image_id, b.box, f"msfi{views.patch_size}"),
                                   images=[data, views.global_jpeg],
                                   variables={"relative_coords": b.relative_coords(views.width, views.height)}))
        results = self.judge.run(reqs)
        answers = [r.answer if r.ok else None for r in results]
        gpath = save_view(views.global_jpeg, views_dir, "msfi_global.jpg")
        patches = []
        for i, ((b, data), r) in enumerate(zip(views.patches, results[1:])):
            ppath = save_view(data, views_dir, f"msfi_patch_{i:02d}.jpg")
            sub = {k: r.answer.get(k) for k in LOCAL_WEIGHTS} if r.ok else {}
            patches.append({"i": i, "box": list(b.box), "source": b.source, "rank": b.rank,
                            "sobel_var": round(b.score, 3), "relative_coords": b.relative_coords(views.width, views.height),
                            "view": ppath, "status": r.status, "reason": r.reason, "sub": sub})
        g = results[0]
        extra = {
            "judge_backend": judge_backend(self.judge),
            "judge_model": getattr(self.judge, "model", None),
            "prompt_hashes": {"msfi_global": g.prompt_hash,
                              "msfi_local": results[1].prompt_hash if len(results) > 1 else None},
            "global_view": gpath,
            "global_status": g.status,
            "global_reason": g.reason,
            "patch_size": views.patch_size,
            "patches": patches,
            "judge_failures": [f"{r.task}[{r.image_id}]: {r.reason}" for r in results if not r.ok],
        }
        if len(views.patches) < N_PATCHES:
            extra["note"] = f"only {len(views.patches)} patch cells in this image (expected {N_PATCHES})"
        return self.score_answers(answers[0], answers[1:], **extra)

    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        agg = super().aggregate(results)
        agg.extra["n_complete"] = sum(1 for r in results if r.extra.get("complete"))
        if results:
            agg.extra["judge_backend"] = first_judge_backend(results)
        return agg
