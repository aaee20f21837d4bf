"""Instance-centric Compliance Score (ICS): preprocessing and scoring maths (judge wired later)."""

from __future__ import annotations

import math
from typing import Any

from evaluation.metrics.base import PER_IMAGE, Metric, MetricResult, register
from evaluation.metrics.msfi import jpeg_bytes, parse_score  # noqa: F401  (re-exported helpers)

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
    subs: dict[str, float] = {}
    for key in KEYS:
        if key not in answer:
            info["failures"].append(f"missing {key}")
            continue
        s, why = parse_score(answer[key], lo, hi)
        if s is None:
            info["failures"].append(f"{key} {why}")
        else:
            subs[key] = s
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
class IcsMetric(Metric):
    """ICS (PixVerve appendix F.3): a VLM judge checks the image against its long caption.

    Protocol (reference: PixVerve-95K ``eval/ics_evaluator.py`` @3f9e7bd; prompt of appendix
    I, project-written prompt file, hash recorded per score):

    * image ``convert("RGB")``, Lanczos-resized to long edge 3072 when larger
      (:func:`judge_view`), JPEG quality 98;
    * one call with the long caption; request settings :data:`JUDGE_REQUEST` (temperature 0.1,
      thinking off; the reference sets no JSON response format for ICS);
    * answer keys IEV, AAA, SRA on 1..10; ICS = ``sqrt(IEV / 10) * (0.6 AAA + 0.4 SRA)``;
      set score = mean over the images with a valid answer, the count of valid answers reported.

    Deviations: none in the maths; answers outside 1..10 are judge failures (the reference
    would score any number it can parse).
    """

    name = "ics"
    kind = PER_IMAGE
    requires = ("judge", "captions")
    protocol_version = "pixverve-3f9e7bd/ics-judge/1"
    higher_is_better = True

    def __init__(self, judge: Any = None) -> None:
        self.judge = judge

    def availability(self) -> tuple[bool, str | None]:
        return False, "no judge: the VLM judge client is not wired to ICS yet"

    def score_answer(self, answer: Any, **extra: Any) -> MetricResult:
        """A MetricResult from a judge answer (for the runner once the judge is wired)."""
        value, info = ics_from_answer(answer)
        if value is None:
            return self.result(None, "judge failure: " + "; ".join(info["failures"]), **info, **extra)
        return self.result(value, **info, **extra)
