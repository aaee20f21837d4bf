"""Instance-centric Compliance Score (ICS): preprocessing, scoring maths and the judge call (VLM client).

Two metrics share the judge view (long edge <= 3072, JPEG 98) and the long caption:

* ``ics`` (:class:`IcsMetric`) -- the reference's protocol: its prompt read at run time from the
  user's copy of PixVerve-95K's ``eval/util/build_prompts.py``
  (:mod:`evaluation.metrics.reference_judge`), text before the image, its request settings,
  parsing and rounding; "not available" without that copy;
* ``ics_strict`` (:class:`IcsStrictMetric`) -- the project's own protocol: its prompt
  (``prompts/ics.md``), strict answer checks, re-asks.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from curation.vlm import REASONING, Field, TaskSpec, register_task
from curation.vlm.heuristic import heuristic_ics
from evaluation.metrics.base import PER_IMAGE, MetricResult, register
from evaluation.metrics.judging import JudgedMetric, ReferenceJudgedMetric, first_judge_backend, parse_subscores
from evaluation.metrics.judging import parse_score  # noqa: F401  (re-exported helper)
from evaluation.metrics.msfi import jpeg_bytes

KEYS = ("IEV", "AAA", "SRA")
SCORE_RANGE = (1.0, 10.0)
ALPHA, BETA = 0.6, 0.4
LONG_EDGE = 3072
JPEG_QUALITY = 98
# the reference's request settings (ics_evaluator.process_single_image): no response_format
JUDGE_REQUEST: dict[str, Any] = {
    "temperature": 0.1,
    "max_tokens": 8192,
    "extra_body": {"chat_template_kwargs": {"enable_thinking": False}},
}


#: the ics_strict judge task (appendix F.3; the project's prompt), in the VLM client's task registry
ICS_TASK = register_task(TaskSpec(
    "ics", "ics.md", (*(Field(k, "int", 1, 10) for k in KEYS), REASONING),
    (1, 1), JUDGE_REQUEST, None, heuristic_ics, description="appendix F.3: ICS against the long caption"))
#: the ics judge task (reference protocol): the reference's prompt given per request, text
#: first, no answer schema, read once
REF_ICS_TASK = register_task(TaskSpec(
    "pixverve_ics", "build_prompts.py", (), (1, 1), JUDGE_REQUEST, None, heuristic_ics,
    description="PixVerve-95K ics_evaluator @3f9e7bd: the reference's prompt (given per request)",
    text_first=True, reask=False))


def ics_from_answer(answer: Any) -> tuple[float | None, dict]:
    """ICS of one image from the judge's answer: ``sqrt(IEV / 10) * (0.6 AAA + 0.4 SRA)``.

    Each of IEV, AAA, SRA must be present and a finite number in 1..10 (numeric strings are
    accepted, as the reference's ``float()`` does); anything else is a judge failure recorded
    in ``info["failures"]`` and the value is None.
    """
    lo, hi = SCORE_RANGE
    info: dict[str, Any] = {"failures": []}
    if not isinstance(answer, dict):
        info["failures"].append(f"answer is not a JSON object ({type(answer).__name__})")
        return None, info
    subs, info["failures"] = parse_subscores(answer, KEYS, lo, hi)
    info.update(subs)
    if info["failures"]:
        return None, info
    return math.sqrt(subs["IEV"] / 10.0) * (ALPHA * subs["AAA"] + BETA * subs["SRA"]), info


def judge_view(img: Any):
    """The image the judge sees: RGB, Lanczos-resized when its long edge exceeds 3072, with the
    reference's size rule ``scale = 3072 / max(w, h)``, ``(int(w * scale), int(h * scale))``."""
    from PIL import Image

    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    if max(w, h) > LONG_EDGE:
        scale = LONG_EDGE / max(w, h)
        img = img.resize((int(w * scale), int(h * scale)), Image.Resampling.LANCZOS)
    return img


class _IcsViewMetric(JudgedMetric):
    """What both ICS protocols share: the judge view of a bench row and its long caption."""

    kind = PER_IMAGE
    requires = ("judge", "captions")
    higher_is_better = True
    judge_label = "ICS"

    def _score_path(self, path: str) -> MetricResult:
        return self.unavailable("ICS needs the long caption: score it through the bench runner")

    def score_item(self, item: Any) -> MetricResult:
        gated = self._row_gate(item)
        if gated is not None:
            return gated
        if not item.long_caption:
            return self.unavailable("no long caption for this image")
        view, failed = self._read_rgb(item.path, judge_view)
        if failed is not None:
            return failed
        image_id = item.image_id or f"file:{os.path.abspath(item.path)}"
        return self.score_view(jpeg_bytes(view, JPEG_QUALITY), view.size, item.long_caption, image_id, item.views_dir)

    def score_view(self, jpeg: bytes, size: tuple[int, int], long_caption: str, image_id: str,
                   views_dir: str | None = None) -> MetricResult:
        raise NotImplementedError

    def _view_extra(self, r: Any, jpeg: bytes, size: tuple[int, int], views_dir: str | None) -> dict[str, Any]:
        from evaluation.metrics.judging import judge_backend, save_view

        return {"judge_backend": judge_backend(self.judge), "judge_model": getattr(self.judge, "model", None),
                "prompt_hashes": {r.task: r.prompt_hash}, "view": save_view(jpeg, views_dir, "ics_view.jpg"),
                "view_size": list(size), "judge_status": r.status}


@register
class IcsMetric(ReferenceJudgedMetric, _IcsViewMetric):
    """ICS (PixVerve appendix F.3) under the reference's protocol: a VLM judge checks the image against its long caption.

    Protocol (reference: PixVerve-95K ``eval/ics_evaluator.py``, ``eval/util/build_prompts.py``
    @3f9e7bd):

    * prompt: ``build_ICS_eval_prompt(long_caption)`` read at run time from the user's copy of
      ``eval/util/build_prompts.py`` (``reference_prompts``: ``judges.bench.reference_prompts``,
      ``UHR_BENCH_REFERENCE_PROMPTS``, ``uhr bench --reference-prompts``; parsed, never
      executed; the project holds none of its sentences); the protocol id ends with the file's
      sha256. Without the copy: "not available";
    * image ``convert("RGB")``, Lanczos-resized to long edge 3072 when larger
      (``scale = 3072 / max(w, h)``, ``int`` sizes), JPEG quality 98;
    * request: the prompt text first, then the image; ``temperature`` 0.1, ``max_tokens`` 8192,
      thinking off, no JSON response format (:data:`JUDGE_REQUEST`); a judge whose configured
      settings differ is "not available"; one attempt per answer (no re-ask, a truncated answer
      read as it is);
    * parsing: ``extract_json_from_response`` (as MSFI); the answer must be a non-empty object
      with IEV, AAA and SRA (no default), each ``float()``-able -- half points and values
      outside 1..10 taken as they are, ``reasoning`` of any type; a negative IEV fails
      (``math.sqrt``);
    * ICS = ``sqrt(IEV / 10) * (0.6 AAA + 0.4 SRA)``; per image the value rounded to 4 decimals
      (the reference's JSONL record; ``extra["ics_unrounded"]``); set score = mean of the
      **unrounded** values over the images with an answer (as the reference's summary),
      reported to 4 decimals as it prints it (``extra["mean"]``: unrounded).

    Counted per row and over the set (what the strict reading would refuse):
    ``n_not_number``, ``n_half_points``, ``n_out_of_range``, ``n_non_finite``, ``n_boolean``,
    ``n_truncated``, ``n_reasoning_not_string``, ``n_no_answer``, ``n_strict_refused``.

    Deviations: bench rows = the prompts file (the reference matches the folder's files to
    ``benchmark.jsonl`` by stem, in glob order; the mean does not depend on the order); an
    answer whose JSON is not an object counts as no answer; a non-finite value (a ``"nan"``
    sub-score) gives that image no value (the reference's mean would become NaN); transport
    retries follow the client config. Judges: only a model endpoint yields ``ics``; the
    offline heuristic judge is reported as ``ics_heuristic``. Without a judge or a long
    caption: "not available".
    """

    name = "ics"
    protocol_version = "pixverve-3f9e7bd/ics-judge/2"
    TASKS = ("pixverve_ics",)
    REFERENCE_REQUEST = {"pixverve_ics": JUDGE_REQUEST}

    def score_view(self, jpeg: bytes, size: tuple[int, int], long_caption: str, image_id: str,
                   views_dir: str | None = None) -> MetricResult:
        """Send the reference's prompt (text first) with the judge view; score as the reference."""
        from curation.vlm import VLMRequest

        r = self.judge.run([VLMRequest(self.TASKS[0], image_id=f"{image_id}@ics{LONG_EDGE}", images=[jpeg],
                                       variables={"long_caption": long_caption}, prompt=self.prompts.path,
                                       text=self.prompts.ics_prompt(long_caption))])[0]
        return self.score_result(r, **self.reference_extra(), **self._view_extra(r, jpeg, size, views_dir))

    def score_result(self, r: Any, **extra: Any) -> MetricResult:
        """One image from its judge result, as the reference."""
        row = reference_ics_row(r)
        return self.result(row.value, row.reason, **row.info, **extra)

    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        from evaluation.metrics.reference_judge import StrictCounts, printed

        raw = [r.extra["ics_unrounded"] for r in results if r.value is not None]
        counts = StrictCounts.total(r.extra for r in results)
        extra: dict[str, Any] = {"n_images": len(results), "n_scored": len(raw), "n_valid_answers": len(raw),
                                 **counts.to_dict(), "protocol": "reference",
                                 "judge_backend": first_judge_backend(results)}
        if not raw:
            reasons = sorted({r.reason or "" for r in results})
            return self.result(None, reasons[0] if len(reasons) == 1 else "no image could be scored", **extra)
        mean = sum(raw) / len(raw)  # the reference's summary: builtin sum of the unrounded scores
        extra["mean"] = mean
        return self.result(printed(mean), **extra)


def reference_ics_row(r: Any) -> Any:
    """``ics_evaluator.process_single_image`` on one judge result: a
    :class:`~evaluation.metrics.reference_judge.ReferenceRow` with the rounded ICS (None: no
    valid answer, with the reason) and what the strict reading would refuse."""
    from evaluation.metrics.reference_judge import ReferenceRow, StrictCounts, note_answer, reference_float, rounded

    lo, hi = SCORE_RANGE
    counts = StrictCounts()
    if not r.ok or not isinstance(r.answer, dict):
        counts.n_no_answer += 1
        counts.n_strict_refused += 1
        return ReferenceRow(None, f"judge failure: {r.reason or 'no JSON object'}", counts.to_dict())
    a = r.answer
    problems = note_answer(a, KEYS, lo, hi, counts, default=None, truncated=getattr(r, "truncated", False))
    info: dict[str, Any] = {**counts.to_dict(), "strict_problems": problems, "reasoning": a.get("reasoning", "")}
    missing = [k for k in KEYS if k not in a]
    if missing:  # the reference: a non-empty object with the three keys, no default
        return ReferenceRow(None, f"judge failure: incomplete JSON response (missing {', '.join(missing)})", info)
    subs = {}
    for k in KEYS:
        x, why = reference_float(a[k])
        if x is None:
            return ReferenceRow(None, f"judge failure: {k} {why}", info)
        subs[k] = x
    info.update(subs)
    if subs["IEV"] < 0:
        return ReferenceRow(None, f"judge failure: math domain error (IEV {subs['IEV']:g})", info)
    ics = math.sqrt(subs["IEV"] / 10.0) * (ALPHA * subs["AAA"] + BETA * subs["SRA"])
    info["ics_unrounded"] = ics
    return ReferenceRow(rounded(ics), None, info)


@register
class IcsStrictMetric(_IcsViewMetric):
    """ICS under the project's own judge protocol (strict): a VLM judge checks the image against its long caption.

    Protocol (image handling as PixVerve-95K ``eval/ics_evaluator.py`` @3f9e7bd; prompt and
    answer handling the project's own):

    * image ``convert("RGB")``, Lanczos-resized to long edge 3072 when larger
      (:func:`judge_view`), JPEG quality 98;
    * one call with the long caption (VLM client task ``ics``, prompt hash recorded per score);
      request settings :data:`JUDGE_REQUEST` (temperature 0.1, 8192 tokens, thinking off, no
      JSON response format);
    * answer keys IEV, AAA, SRA on 1..10; ICS = ``sqrt(IEV / 10) * (0.6 AAA + 0.4 SRA)``;
      set score = mean of the unrounded values over the images with a valid answer, the count
      of valid answers reported.

    Deviations from the reference (why this is not ``ics``):

    * prompt: the project's own (``prompts/ics.md``: the structure of appendix I, its own
      wording, no worked examples of the reference's);
    * message order: the image first, then the text (the reference sends the text first);
    * answers: each score must be an integer within 1..10 (the reference takes 4.5 and
      out-of-range values as they are), a ``reasoning`` that is not a string fails the answer
      (the reference keeps any type);
    * a malformed or out-of-schema answer is asked again (``schema_retries``), an answer cut
      off at ``max_tokens`` fails (the reference reads each answer once, as it comes);
    * per-image values are not rounded (the reference's record rounds to 4 decimals; its set
      mean uses unrounded values, as here).

    Judges: only a model endpoint yields ``ics_strict``; the offline heuristic judge (which does
    not even read the caption) is reported as ``ics_strict_heuristic``. Without a judge or a
    long caption: "not available".
    """

    name = "ics_strict"
    protocol_version = "uhrforge/ics-strict-judge/1"
    TASKS = ("ics",)

    def score_answer(self, answer: Any, **extra: Any) -> MetricResult:
        """A MetricResult from a judge answer (a dict; None for a failed call)."""
        value, info = ics_from_answer(answer)
        if value is None:
            return self.result(None, "judge failure: " + "; ".join(info["failures"]), **info, **extra)
        return self.result(value, **info, **extra)

    def score_view(self, jpeg: bytes, size: tuple[int, int], long_caption: str, image_id: str,
                   views_dir: str | None = None) -> MetricResult:
        """Send the judge view with the long caption and score the answer."""
        from curation.vlm import VLMRequest

        r = self.judge.run([VLMRequest(self.TASKS[0], image_id=f"{image_id}@ics{LONG_EDGE}", images=[jpeg],
                                       variables={"long_caption": long_caption})])[0]
        extra = {"protocol": "strict", **self._view_extra(r, jpeg, size, views_dir)}
        if not r.ok:
            return self.result(None, f"judge failure: {r.reason}", failures=[r.reason], **extra)
        return self.score_answer(r.answer, **extra)

    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        agg = super().aggregate(results)
        agg.extra["n_valid_answers"] = agg.extra.get("n_scored", 0)
        agg.extra["judge_backend"] = first_judge_backend(results)
        return agg
