"""Instance-centric Compliance Score (ICS): preprocessing, scoring maths and the judge call (VLM client)."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from curation.vlm import REASONING, Field, TaskSpec, register_task
from curation.vlm.heuristic import heuristic_ics
from evaluation.metrics.base import PER_IMAGE, MetricResult, register
from evaluation.metrics.judging import JudgedMetric, first_judge_backend, parse_subscores
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


#: the ICS judge task (appendix F.3), registered into the curation VLM client's task registry
ICS_TASK = register_task(TaskSpec(
    "ics", "ics.md", (*(Field(k, "int", 1, 10) for k in KEYS), REASONING),
    (1, 1), JUDGE_REQUEST, None, heuristic_ics, description="appendix F.3: ICS against the long caption"))


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


@register
class IcsMetric(JudgedMetric):
    """ICS (PixVerve appendix F.3): a VLM judge checks the image against its long caption.

    Protocol (reference: PixVerve-95K ``eval/ics_evaluator.py`` @3f9e7bd; prompt of appendix
    I, project-written prompt file ``prompts/ics.md``, hash recorded per score):

    * image ``convert("RGB")``, Lanczos-resized to long edge 3072 when larger
      (:func:`judge_view`), JPEG quality 98;
    * one call with the long caption (VLM client task ``ics``); request settings
      :data:`JUDGE_REQUEST` (temperature 0.1, thinking off; the reference sets no JSON
      response format for ICS);
    * answer keys IEV, AAA, SRA on 1..10; ICS = ``sqrt(IEV / 10) * (0.6 AAA + 0.4 SRA)``;
      set score = mean over the images with a valid answer, the count of valid answers reported.

    Judges: only a model endpoint (client backend ``vllm``) yields ``ics``; any other backend
    (the offline ``heuristic`` judge, which does not even read the caption) is reported as
    ``ics_<backend>``. Without a judge or a long caption: "not available".

    Deviations: none in the maths; answers outside 1..10 are judge failures (the reference
    would score any number it can parse).
    """

    name = "ics"
    kind = PER_IMAGE
    requires = ("judge", "captions")
    protocol_version = "pixverve-3f9e7bd/ics-judge/1"
    higher_is_better = True
    TASKS = ("ics",)
    judge_label = "ICS"

    def score_answer(self, answer: Any, **extra: Any) -> MetricResult:
        """A MetricResult from a judge answer (a dict; None for a failed call)."""
        value, info = ics_from_answer(answer)
        if value is None:
            return self.result(None, "judge failure: " + "; ".join(info["failures"]), **info, **extra)
        return self.result(value, **info, **extra)

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
        """Send the judge view with the long caption and score the answer."""
        from curation.vlm import VLMRequest

        from evaluation.metrics.judging import judge_backend, save_view

        r = self.judge.run([VLMRequest("ics", image_id=f"{image_id}@ics{LONG_EDGE}", images=[jpeg],
                                       variables={"long_caption": long_caption})])[0]
        extra = {"judge_backend": judge_backend(self.judge), "judge_model": getattr(self.judge, "model", None),
                 "prompt_hashes": {"ics": r.prompt_hash}, "view": save_view(jpeg, views_dir, "ics_view.jpg"),
                 "view_size": list(size), "judge_status": r.status}
        if not r.ok:
            return self.result(None, f"judge failure: {r.reason}", failures=[r.reason], **extra)
        return self.score_answer(r.answer, **extra)

    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        agg = super().aggregate(results)
        agg.extra["n_valid_answers"] = agg.extra.get("n_scored", 0)
        agg.extra["judge_backend"] = first_judge_backend(results)
        return agg
