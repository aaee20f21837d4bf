"""Multi-scale Fidelity Index (MSFI): preprocessing, scoring maths and the judge calls (VLM client).

Two metrics share the views (global view + 6 + 4 patches, as the reference builds them):

* ``msfi`` (:class:`MsfiMetric`) -- the reference's protocol: its prompts read at run time from
  the user's copy of PixVerve-95K's ``eval/util/build_prompts.py``
  (:mod:`evaluation.metrics.reference_judge`), text before images, its request settings, its
  parsing, defaults and rounding; "not available" without that copy;
* ``msfi_strict`` (:class:`MsfiStrictMetric`) -- the project's own protocol: its prompts
  (``prompts/msfi_global.md``, ``prompts/msfi_local.md``), strict answer checks, re-asks.
"""

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
from evaluation.metrics.judging import JudgedMetric, ReferenceJudgedMetric, first_judge_backend, parse_subscores
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
#: msfi_strict, global view (appendix F.2): one 2048-px JPEG-98 image; the project's prompt
MSFI_GLOBAL_TASK = register_task(TaskSpec(
    "msfi_global", "msfi_global.md", (*(Field(k, "int", 1, 5) for k in GLOBAL_WEIGHTS), REASONING),
    (1, 1), JUDGE_REQUEST, None, heuristic_msfi_global, description="appendix F.2: MSFI global view"))
#: msfi_strict, local view (appendix F.2): the patch, then the global view; the project's prompt
MSFI_LOCAL_TASK = register_task(TaskSpec(
    "msfi_local", "msfi_local.md", (*(Field(k, "int", 1, 5) for k in LOCAL_WEIGHTS), REASONING),
    (2, 2), JUDGE_REQUEST, None, heuristic_msfi_local, description="appendix F.2: MSFI patch + global view"))
#: msfi (reference protocol), global view: the text sent is the reference's prompt, given per
#: request; no answer schema (any JSON object is read as the reference reads it), read once
REF_GLOBAL_TASK = register_task(TaskSpec(
    "pixverve_msfi_global", "build_prompts.py", (), (1, 1), JUDGE_REQUEST, None, heuristic_msfi_global,
    description="PixVerve-95K msfi_evaluator @3f9e7bd: global view, the reference's prompt (given per request)",
    text_first=True, reask=False))
#: msfi (reference protocol), local view: the text, then the patch, then the global view
REF_LOCAL_TASK = register_task(TaskSpec(
    "pixverve_msfi_local", "build_prompts.py", (), (2, 2), JUDGE_REQUEST, None, heuristic_msfi_local,
    description="PixVerve-95K msfi_evaluator @3f9e7bd: patch + global view, the reference's prompt",
    text_first=True, reask=False))


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



class _MsfiViewsMetric(JudgedMetric):
    """What both MSFI protocols share: the views of each image (one ``random.Random(42)`` over the
    set in bench order) and the bench-row entry points; subclasses send them to the judge
    (:meth:`score_views`)."""

    kind = PER_IMAGE
    requires = ("judge",)
    higher_is_better = True
    judge_label = "MSFI"

    def __init__(self, judge: Any = None) -> None:
        super().__init__(judge)
        self._rng = random.Random(SEED)

    def begin_set(self) -> None:
        """One generator seeded 42 for the whole set, drawn image by image in bench order."""
        self._rng = random.Random(SEED)

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
        raise NotImplementedError

    def _view_records(self, views: MsfiViews, results: Sequence[Any], views_dir: str | None) -> tuple[str | None, list]:
        """The global view's saved path and one record per patch (box, status, raw sub-scores)."""
        from evaluation.metrics.judging import save_view

        gpath = save_view(views.global_jpeg, views_dir, "msfi_global.jpg")
        patches = []
        for i, ((b, data), r) in enumerate(zip(views.patches, results[1:])):
            ppath = save_view(data, views_dir, f"msfi_patch_{i:02d}.jpg")
            sub = {k: r.answer.get(k) for k in LOCAL_WEIGHTS if k in r.answer} if r.ok and isinstance(r.answer, dict) else {}
            patches.append({"i": i, "box": list(b.box), "source": b.source, "rank": b.rank,
                            "sobel_var": round(b.score, 3), "relative_coords": b.relative_coords(views.width, views.height),
                            "view": ppath, "status": r.status, "reason": r.reason, "sub": sub})
        return gpath, patches

    def _common_extra(self, views: MsfiViews, results: Sequence[Any], views_dir: str | None) -> dict[str, Any]:
        from evaluation.metrics.judging import judge_backend

        gpath, patches = self._view_records(views, results, views_dir)
        g = results[0]
        extra = {
            "judge_backend": judge_backend(self.judge),
            "judge_model": getattr(self.judge, "model", None),
            "prompt_hashes": {self.TASKS[0]: g.prompt_hash,
                              self.TASKS[1]: results[1].prompt_hash if len(results) > 1 else None},
            "global_view": gpath,
            "global_status": g.status,
            "global_reason": g.reason,
            "patch_size": views.patch_size,
            "patches": patches,
            "judge_failures": [f"{r.task}[{r.image_id}]: {r.reason}" for r in results if not r.ok],
        }
        if len(views.patches) < N_PATCHES:
            extra["note"] = f"only {len(views.patches)} patch cells in this image (expected {N_PATCHES})"
        return extra


@register
class MsfiMetric(ReferenceJudgedMetric, _MsfiViewsMetric):
    """MSFI (PixVerve appendix F.2) under the reference's protocol: a VLM judge scores a global view and 10 patches.

    Protocol (reference: PixVerve-95K ``eval/msfi_evaluator.py``, ``eval/util/image_process.py``,
    ``eval/util/build_prompts.py`` @3f9e7bd):

    * prompts: ``build_global_eval_prompt()`` and ``build_local_eval_prompt(relative_coords)``
      read at run time from the user's copy of ``eval/util/build_prompts.py``
      (``reference_prompts``: ``judges.bench.reference_prompts``, ``UHR_BENCH_REFERENCE_PROMPTS``,
      ``uhr bench --reference-prompts``; parsed, never executed; the project holds none of its
      sentences). The protocol id ends with the file's sha256; ``extra["reference_prompts"]``
      says whether it is the pinned 3f9e7bd file. Without the copy: "not available";
    * views as ``msfi_strict`` (below): global view long edge 2048, JPEG 98; 10 patches (6 top
      Sobel variance + 4 random, one ``random.Random(42)`` over the set), 512 px (1024 from a
      7680-px long edge), JPEG 98;
    * request: the prompt text first, then the image(s) (global: the global view; local: the
      patch, then the global view); ``temperature`` 0.1, ``max_tokens`` 8192, ``response_format``
      JSON object, thinking off (:data:`JUDGE_REQUEST`); a judge whose configured settings differ
      is "not available". One attempt per answer (transport retries only): no re-ask of a
      malformed answer, a truncated answer read as it is;
    * parsing (``extract_json_from_response``): the ``<json>`` block or the whole text, fences
      removed, ``json.loads``, else the outermost ``{...}``; no JSON object -> no answer;
    * scoring (``MSFI_Scorer``): each sub-score ``float(answer.get(k, 3))`` -- a missing one
      counts 3, half points and values outside 1..5 are taken as they are, and one unreadable
      sub-score makes the whole answer 3.0; ``S_g`` weights (5, 3, 2, 2), ``S_l_i`` weights
      (2, 3, 5, 2, 2); ``S_l`` = mean over the patches that have an answer (failed calls left
      out); MSFI = ``S_g + (S_g / 5) * S_l``, rounded to 4 decimals per image;
    * an image without a global answer (failed call, no JSON object, or ``{}``) or without any
      patch answer is left out of the set, as the reference leaves it out of its CSV;
    * set score = mean of the per-image values **as rounded** (pandas ``mean`` of the CSV
      column), reported to 4 decimals as the reference prints it (``extra["mean"]``: unrounded).

    Counted per row and over the set (what the strict reading would refuse,
    :class:`~evaluation.metrics.reference_judge.StrictCounts`): ``n_defaulted``,
    ``n_not_number``, ``n_half_points``, ``n_out_of_range``, ``n_non_finite``, ``n_boolean``,
    ``n_truncated``, ``n_reasoning_not_string``, ``n_no_answer``, ``n_strict_refused``.

    Deviations: bench order = prompts file order (the reference globs the folder); an answer
    whose JSON is not an object, or a sub-score the reference's CSV columns cannot ``float()``
    (the reference script stops with an exception there), counts as no answer / a 3.0 answer
    here and is counted; a non-finite per-image value (a ``"nan"`` sub-score) gives that image
    no value (pandas' mean would skip a NaN but keep an inf); transport retries follow the
    client config (the reference's OpenAI client retries twice). Judges: only a model endpoint
    yields ``msfi``; the offline heuristic judge is reported as ``msfi_heuristic``.
    """

    name = "msfi"
    protocol_version = "pixverve-3f9e7bd/msfi-6+4-judge/2"
    TASKS = ("pixverve_msfi_global", "pixverve_msfi_local")
    REFERENCE_REQUEST = {"pixverve_msfi_global": JUDGE_REQUEST, "pixverve_msfi_local": JUDGE_REQUEST}

    def score_views(self, views: MsfiViews, image_id: str, views_dir: str | None = None) -> MetricResult:
        """Send the views with the reference's prompts (text first) and score as the reference."""
        from curation.vlm import VLMRequest, patch_image_id

        gid = f"{image_id}@msfi-global{GLOBAL_LONG_EDGE}"
        ref = self.prompts
        reqs = [VLMRequest(self.TASKS[0], image_id=gid, images=[views.global_jpeg], prompt=ref.path,
                           text=ref.global_prompt())]
        for b, data in views.patches:
            coords = b.relative_coords(views.width, views.height)
            reqs.append(VLMRequest(self.TASKS[1], image_id=patch_image_id(image_id, b.box, f"msfi{views.patch_size}"),
                                   images=[data, views.global_jpeg], variables={"relative_coords": coords},
                                   prompt=ref.path, text=ref.local_prompt(coords)))
        results = self.judge.run(reqs)
        extra = {**self.reference_extra(), **self._common_extra(views, results, views_dir)}
        return self.score_results(results, **extra)

    def score_results(self, results: Sequence[Any], **extra: Any) -> MetricResult:
        """One image from its judge results (global first, then the patches), as the reference."""
        row = reference_msfi_row(results)
        return self.result(row.value, row.reason, **row.info, **extra)

    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        from evaluation.metrics.reference_judge import StrictCounts, printed

        values = [r.value for r in results if r.value is not None]
        counts = StrictCounts.total(r.extra for r in results)
        extra: dict[str, Any] = {"n_images": len(results), "n_scored": len(values),
                                 "n_left_out": len(results) - len(values), **counts.to_dict(),
                                 "protocol": "reference", "judge_backend": first_judge_backend(results)}
        if not values:
            reasons = sorted({r.reason or "" for r in results})
            return self.result(None, reasons[0] if len(reasons) == 1 else "no image could be scored", **extra)
        import numpy as np

        mean = float(np.sum(np.asarray(values, dtype=np.float64)) / len(values))  # pandas' mean of the column
        extra["mean"] = mean
        return self.result(printed(mean), **extra)


def reference_msfi_row(results: Sequence[Any]) -> Any:
    """``msfi_evaluator.py``'s row of one image from the judge results (global, then patches):
    a :class:`~evaluation.metrics.reference_judge.ReferenceRow` with the rounded MSFI (None:
    left out, with the reason) and what the strict reading would refuse."""
    from evaluation.metrics.reference_judge import (
        MSFI_DEFAULT_SCORE, ReferenceRow, StrictCounts, note_answer, reference_number, reference_weighted_score,
        rounded)

    lo, hi = SCORE_RANGE
    counts = StrictCounts()
    info: dict[str, Any] = {}

    def answer_of(r: Any) -> dict | None:
        if not r.ok or not isinstance(r.answer, dict):
            counts.n_no_answer += 1
            counts.n_strict_refused += 1
            return None
        return r.answer

    g = answer_of(results[0]) if results else None
    problems: dict[str, list[str]] = {}
    if g is not None:
        p = note_answer(g, GLOBAL_WEIGHTS, lo, hi, counts, default=MSFI_DEFAULT_SCORE,
                        truncated=getattr(results[0], "truncated", False))
        if p:
            problems["global"] = p
    locals_: list[dict] = []
    local_scores: list[float | None] = []
    for i, r in enumerate(results[1:]):
        a = answer_of(r)
        if a is None:
            local_scores.append(None)
            continue
        p = note_answer(a, LOCAL_WEIGHTS, lo, hi, counts, default=MSFI_DEFAULT_SCORE,
                        truncated=getattr(r, "truncated", False))
        if p:
            problems[f"local[{i}]"] = p
        locals_.append(a)
        local_scores.append(reference_weighted_score(a, LOCAL_WEIGHTS))
    info.update(counts.to_dict())
    info["strict_problems"] = problems
    info["local_scores"] = local_scores
    info["valid_patches"] = len(locals_)
    info["complete"] = g is not None and len(locals_) == N_PATCHES == len(results) - 1
    if g is None or not g:  # the reference saves a global answer only when it is truthy
        why = "the global answer is an empty JSON object" if g is not None else "no global answer" + (
            f" ({results[0].reason})" if results and results[0].reason else "")
        return ReferenceRow(None, f"left out as by the reference: {why}", info)
    if not locals_:
        return ReferenceRow(None, "left out as by the reference: no patch answer", info)
    s_g = reference_weighted_score(g, GLOBAL_WEIGHTS)
    scored = [s for s in local_scores if s is not None]
    s_l = sum(scored) / len(scored)
    msfi = s_g + (s_g / 5) * s_l
    sub_avg: dict[str, float | None] = {}
    for k in LOCAL_WEIGHTS:  # the CSV's <k>_avg: the sum of float(answer.get(k, 3)) / n, rounded
        xs = [reference_number(a, k, MSFI_DEFAULT_SCORE) for a in locals_]
        sub_avg[k] = None if None in xs else rounded(sum(x / len(locals_) for x in xs))
    info.update({
        "msfi_unrounded": msfi,
        "s_global": rounded(s_g),
        "s_local": rounded(s_l),
        "global_sub": {k: x for k in GLOBAL_WEIGHTS if (x := reference_number(g, k, MSFI_DEFAULT_SCORE)) is not None},
        "local_sub_avg": sub_avg,
    })
    return ReferenceRow(rounded(msfi), None, info)


@register
class MsfiStrictMetric(_MsfiViewsMetric):
    """MSFI under the project's own judge protocol (strict): a VLM judge scores a global view and 10 patches.

    Protocol (views as the reference, PixVerve-95K ``eval/util/image_process.py`` @3f9e7bd;
    prompts and answer handling the project's own):

    * image ``convert("RGB")``; global view Lanczos-resized to long edge 2048, JPEG quality 98;
    * patch size 512, or 1024 when the long edge is >= 7680; 10 patches from
      :mod:`curation.patch_sampler` (analysis copy at long edge 2048, Sobel-variance grid, top 6
      + 4 random with one ``random.Random(42)`` over the images in bench order), cropped at
      full resolution, JPEG 98;
    * one global call (4 sub-dimensions: SC-global, PI, LC, CH) and one call per patch (5
      sub-dimensions NGE, GA, TF, MGC, SC-local), scores 1..5, request settings
      :data:`JUDGE_REQUEST` (temperature 0.1, 8192 tokens, JSON answers, thinking off), through
      the VLM client (tasks ``msfi_global`` / ``msfi_local``, prompt hash recorded per score);
    * ``S_g`` = weighted mean (5, 3, 2, 2), ``S_l_i`` = weighted mean (2, 3, 5, 2, 2),
      MSFI = ``S_g + (S_g / 5) * mean_i S_l_i`` (range 1.2 .. 10); set score = mean over the
      images with a value, unrounded.

    Deviations from the reference (why this is not ``msfi``):

    * prompts: the project's own (``prompts/msfi_global.md``, ``prompts/msfi_local.md``: the
      structure of appendix I, its own wording and examples, the patch coordinates given once);
    * message order: the images first, then the text (the reference sends the text first);
    * answers: a sub-score must be present, an integer and within 1..5 (the reference scores a
      missing one 3, takes 4.5 and out-of-range values as they are, and scores a whole answer
      3.0 when one value is unreadable); a ``reasoning`` that is not a string fails the answer;
    * a malformed or out-of-schema answer is asked again (``schema_retries``), an answer cut off
      at ``max_tokens`` fails (the reference reads each answer once, as it comes);
    * a bad global answer gives the image no value and a bad patch answer is left out
      (``extra["n_complete"]`` counts images with all 11 valid answers);
    * the set mean uses unrounded per-image values (the reference averages values rounded to 4
      decimals); bench order = prompts file order. The analysis copy of an image smaller than
      2048 px is not upscaled (see the sampler).

    Judges: only a model endpoint yields ``msfi_strict``; the offline heuristic judge is
    reported as ``msfi_strict_heuristic``. Without a judge: "not available".
    """

    name = "msfi_strict"
    protocol_version = "uhrforge/msfi-strict-6+4-judge/1"
    TASKS = ("msfi_global", "msfi_local")

    def score_answers(self, global_answer: Any, local_answers: Sequence[Any], **extra: Any) -> MetricResult:
        """A MetricResult from judge answers (dicts; None for a failed call)."""
        value, info = msfi_from_answers(global_answer, local_answers)
        if value is None:
            where = "; ".join(f"{f['where']}: {', '.join(f['problems'])}" for f in info["failures"]) or "incomplete"
            return self.result(None, f"judge failure: {where}", **info, **extra)
        return self.result(value, **info, **extra)

    def score_views(self, views: MsfiViews, image_id: str, views_dir: str | None = None) -> MetricResult:
        """Send the views to the judge and score its answers (views kept under ``views_dir``)."""
        from curation.vlm import VLMRequest, patch_image_id

        gid = f"{image_id}@msfi-global{GLOBAL_LONG_EDGE}"
        reqs = [VLMRequest(self.TASKS[0], image_id=gid, images=[views.global_jpeg])]
        for b, data in views.patches:
            reqs.append(VLMRequest(self.TASKS[1], image_id=patch_image_id(image_id, b.box, f"msfi{views.patch_size}"),
                                   images=[data, views.global_jpeg],
                                   variables={"relative_coords": b.relative_coords(views.width, views.height)}))
        results = self.judge.run(reqs)
        answers = [r.answer if r.ok else None for r in results]
        extra = {"protocol": "strict", **self._common_extra(views, results, views_dir)}
        return self.score_answers(answers[0], answers[1:], **extra)

    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        agg = super().aggregate(results)
        agg.extra["n_complete"] = sum(1 for r in results if r.extra.get("complete"))
        if results:
            agg.extra["judge_backend"] = first_judge_backend(results)
        return agg
