"""What MSFI and ICS need from a judge, and how a stand-in judge is kept apart.

A judge is any object with the interface of :class:`curation.vlm.VLMClient`:

* ``backend`` (``"vllm"`` for an OpenAI-compatible model endpoint, ``"heuristic"`` for the
  offline statistics judge, or another registered backend) and ``model`` (the served name);
* ``run(requests: list[curation.vlm.VLMRequest]) -> list[JudgeResult]`` (one result per
  request, in order, each with ``ok``, ``answer``, ``reason``, ``prompt_hash``);
* ``prompt_for(task)`` -> an object with ``sha256`` (the prompt file's hash).

Only a model endpoint produces the published metric: results of any other backend are
reported under ``<metric>_<backend>`` (``msfi_heuristic``, ``msfi_strict_heuristic``, ...),
never under the metric's own name, and every row carries ``judge_backend``.

Also here: the checks of a judge's sub-scores (:func:`parse_score`, :func:`parse_subscores`),
:class:`JudgedMetric` (what the judged metrics share around their judge calls) and
:class:`ReferenceJudgedMetric` (``msfi`` / ``ics``: the reference's protocol, its prompts read
from the user's copy of the reference code, see :mod:`evaluation.metrics.reference_judge`).
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
        """``(image, None)``: ``Image.open(path).convert("RGB")`` of bytes that passed the reader
        contract (:func:`curation.imageio.open_checked`: the pixel limit ``io.max_pixels`` before
        any decode), then ``prepare`` of it when given; ``(None, result "unreadable: ...")`` when
        either fails with ``OSError`` / ``ValueError`` (a refused file's reason) / ``SyntaxError``."""
        from curation.imageio import open_checked

        try:
            with open_checked(path) as im:
                img = im.convert("RGB")
                return (prepare(img) if prepare is not None else img), None
        except (OSError, ValueError, SyntaxError) as exc:
            from curation.imageio import describe_error

            return None, self.result(None, f"unreadable: {describe_error(exc)}")

    def prompt_hashes(self) -> dict[str, str]:
        """The sha256 of the prompt each of the metric's tasks sends (for run params)."""
        return judge_info(self.judge, tuple(getattr(self, "TASKS", ())))["prompt_hashes"]


def request_body_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Request settings as they go into the body: the OpenAI client's ``extra_body`` merged."""
    out = {k: v for k, v in settings.items() if k != "extra_body"}
    out.update(settings.get("extra_body") or {})
    return out


class ReferenceJudgedMetric(JudgedMetric):
    """A judged metric under the reference's protocol (:mod:`evaluation.metrics.reference_judge`):
    its prompts come from the reference's ``build_prompts.py`` that the user points to
    (``reference_prompts``: the file or a folder holding it), loaded once; without it, or with a
    judge whose request settings differ from the reference's, the metric is "not available".

    The instance's ``protocol_version`` records the prompts file's sha256 (``<class
    protocol>+build_prompts-sha256:<hex>``). A subclass sets ``TASKS`` (its pixverve task names)
    and ``REFERENCE_REQUEST`` (``{task: the reference's settings}``)."""

    REFERENCE_REQUEST: Mapping[str, Mapping[str, Any]] = {}

    def __init__(self, judge: Any = None, reference_prompts: str | os.PathLike | None = None) -> None:
        from evaluation.metrics.reference_judge import reference_prompts_or_reason

        super().__init__(judge)
        self.reference_prompts_path = os.fspath(reference_prompts) if reference_prompts else None
        self.prompts, self._prompts_reason = reference_prompts_or_reason(reference_prompts)
        if self.prompts is not None:
            self.protocol_version = f"{type(self).protocol_version}+build_prompts-sha256:{self.prompts.sha256}"

    def availability(self) -> tuple[bool, str | None]:
        why: list[str] = []
        if self.prompts is None:
            why.append(self._prompts_reason or "no reference prompts")
        ok, no_judge = super().availability()
        if not ok:
            why.append(no_judge or "no judge")
        elif callable(getattr(self.judge, "request_settings", None)):
            from curation.vlm import get_task

            for task, want in self.REFERENCE_REQUEST.items():
                got = self.judge.request_settings(get_task(task))
                want = request_body_settings(want)
                if got != want:
                    diff = {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)}
                    why.append(f"the judge's request settings for {task} differ from the reference's "
                               f"(setting: (judge, reference)) {diff}; judges.bench temperature / max_tokens / "
                               "thinking override every task")
                    break
        return (False, "; ".join(why)) if why else (True, None)

    def prompt_hashes(self) -> dict[str, str]:
        return {t: self.prompts.sha256 for t in self.TASKS} if self.prompts is not None else {}

    def reference_extra(self) -> dict[str, Any]:
        """What every row of this metric records about its protocol and prompts."""
        return {"protocol": "reference", "reference_prompts": self.prompts.describe() if self.prompts else None}
