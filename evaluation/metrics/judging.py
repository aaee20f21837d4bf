"""What MSFI and ICS need from a judge, and how a stand-in judge is kept apart.

A judge is any object with the interface of :class:`curation.vlm.VLMClient`:

* ``backend`` (``"vllm"`` for an OpenAI-compatible model endpoint, ``"heuristic"`` for the
  offline statistics judge, or another registered backend) and ``model`` (the served name);
* ``run(requests: list[curation.vlm.VLMRequest]) -> list[JudgeResult]`` (one result per
  request, in order, each with ``ok``, ``answer``, ``reason``, ``prompt_hash``);
* ``prompt_for(task)`` -> an object with ``sha256`` (the prompt file's hash).

Only a model endpoint produces the published metric: results of any other backend are
reported under ``<metric>_<backend>`` (``msfi_heuristic``, ``ics_heuristic``), never under
``msfi`` / ``ics``, and every row carries ``judge_backend``.

Also here: the checks of a judge's sub-scores (:func:`parse_score`, :func:`parse_subscores`)
and :class:`JudgedMetric`, what the two metrics share around their judge calls.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from evaluation.metrics.base import Metric, MetricResult

#: backends whose answers come from a vision-language model (the published protocol)
MODEL_BACKENDS = frozenset({"vllm"})


def judge_backend(judge: Any) -> str | None:
    return None if judge is None else str(getattr(judge, "backend", "") or "unknown")


def is_model_judge(judge: Any) -> bool:
    return judge is not None and judge_backend(judge) in MODEL_BACKENDS


def metric_name_for(base: str, judge: Any) -> str:
    """``base`` for a model judge (or none), ``f"{base}_{backend}"`` for a stand-in judge."""
    if judge is None or is_model_judge(judge):
        return base
    return f"{base}_{judge_backend(judge)}"


def judge_info(judge: Any, tasks: tuple[str, ...]) -> dict[str, Any]:
    """Backend, model and prompt hashes of a judge for the given tasks (for run params)."""
    if judge is None:
        return {"backend": None, "model": None, "prompt_hashes": {}}
    hashes: dict[str, str] = {}
    for t in tasks:
        try:
            hashes[t] = judge.prompt_for(t).sha256
        except Exception as exc:  # a missing prompt file is reported, not fatal here
            hashes[t] = f"unavailable ({type(exc).__name__})"
    return {"backend": judge_backend(judge), "model": getattr(judge, "model", None), "prompt_hashes": hashes}


def save_view(data: bytes, views_dir: str | None, name: str) -> str | None:
    """Write the exact bytes a judge was sent under ``views_dir`` (None: keep nothing)."""
    if not views_dir:
        return None
    p = Path(views_dir) / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return os.fspath(p)


def no_judge_reason(metric: str) -> str:
    return (f"no judge client: {metric} needs a VLM judge (curation.vlm.create_vlm_client with an endpoint "
            f"and model); none was given to the runner")


# ---- judge answers --------------------------------------------------------------------------
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


def parse_subscores(answer: Mapping[str, Any], keys: Iterable[str], lo: float,
                    hi: float) -> tuple[dict[str, float], list[str]]:
    """The sub-scores ``keys`` of one answer (a JSON object), each checked by :func:`parse_score`.

    Returns ``(scores, problems)``: the valid scores by key, and ``"missing <key>"`` or
    ``"<key> <why>"`` for each key that has no valid score (in ``keys`` order)."""
    subs: dict[str, float] = {}
    problems: list[str] = []
    for key in keys:
        if key not in answer:
            problems.append(f"missing {key}")
            continue
        s, why = parse_score(answer[key], lo, hi)
        if s is None:
            problems.append(f"{key} {why}")
        else:
            subs[key] = s
    return subs, problems


def first_judge_backend(results: Sequence[MetricResult]) -> str | None:
    """The ``judge_backend`` of the first result that records one (for the set result)."""
    return next((r.extra["judge_backend"] for r in results if "judge_backend" in r.extra), None)


# ---- the judged metrics -----------------------------------------------------------------------
class JudgedMetric(Metric):
    """What ``msfi`` and ``ics`` share: the judge (none: "not available"), the name it decides
    (:func:`metric_name_for`), the gate of a bench row and the reading of its image.

    A subclass sets ``judge_label`` (the metric's name in the no-judge reason)."""

    judge_label = ""

    def __init__(self, judge: Any = None) -> None:
        self.judge = judge
        self.name = metric_name_for(type(self).name, judge)

    def availability(self) -> tuple[bool, str | None]:
        if self.judge is None:
            return False, no_judge_reason(self.judge_label)
        return True, None

    def _row_gate(self, item: Any) -> MetricResult | None:
        """The result of a bench row that goes to no judge (missing image, metric unavailable)."""
        if item.path is None:
            return self.result(None, "missing image")
        return self._gate()

    def _read_rgb(self, path: str, prepare: Callable[[Any], Any] | None = None) -> tuple[Any, MetricResult | None]:
        """``(image, None)``: ``Image.open(path).convert("RGB")`` (no decompression-bomb limit),
        then ``prepare`` of it when given; ``(None, result "unreadable: ...")`` when either fails
        with ``OSError`` / ``ValueError`` / ``SyntaxError``."""
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
                return (prepare(img) if prepare is not None else img), None
        except (OSError, ValueError, SyntaxError) as exc:
            return None, self.result(None, f"unreadable: {type(exc).__name__}: {exc}")
