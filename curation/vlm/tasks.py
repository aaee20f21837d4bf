"""VLM tasks: what a request asks, how its answer is checked, and the task registry.

A :class:`TaskSpec` names its default prompt file (``prompts/``), its answer schema (required
keys, types, integer ranges, cross-field checks), the number of images a request carries, its
request settings and, optionally, the deterministic offline answer
(:mod:`curation.vlm.heuristic`). Specs live in :data:`TASKS`, a :class:`curation.registry.Registry`
(the one registry class of the project); :func:`register_task` adds one.

Built in here: the corpus tasks of paper 3.1.4 / 3.1.2 (``region_artifact``,
``instance_artifact``, ``artimuse_aesthetics``; request settings :data:`CORPUS_REQUEST`:
temperature 0.1, max_tokens 1024, JSON response format, thinking off). Other layers register
their own tasks where they live: the bench's MSFI and ICS tasks (``msfi_global``,
``msfi_local``, ``ics`` with the project's prompts; ``pixverve_msfi_global``,
``pixverve_msfi_local``, ``pixverve_ics`` sending the reference's prompt text per request, text
first, read once) are registered by the bench's metric modules (msfi, ics) with the reference's
request settings; this library never imports the bench.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.registry import Registry

#: the project's defaults for the corpus judges (paper 3.1.4); see ``config_block`` in the README
CORPUS_REQUEST: dict[str, Any] = {
    "temperature": 0.1,
    "max_tokens": 1024,
    "response_format": {"type": "json_object"},
    "chat_template_kwargs": {"enable_thinking": False},
}


def parse_judge_json(text: str | None) -> dict | None:
    """Read a judge's JSON answer as the bench reference does: the ``<json>...</json>`` block
    (else the whole text), Markdown fences removed, ``json.loads``; failing that, the outermost
    ``{...}``. Returns a dict, or None when no JSON object can be read."""
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


@dataclass(frozen=True)
class Field:
    """One key of a task's JSON answer.

    ``type``: ``"int"`` (a JSON integer; an integral float or a numeric string such as ``"4"``
    is accepted and stored as int; ``4.5`` is not), ``"number"`` (int or float, numeric
    strings accepted, stored as float), ``"bool"`` (JSON true/false only) or ``"str"``.
    ``lo``/``hi`` bound numbers (inclusive). ``required=False`` keys may be absent but are
    type-checked when present.
    """

    name: str
    type: str
    lo: float | None = None
    hi: float | None = None
    required: bool = True

    def check(self, value: Any) -> tuple[Any, str | None]:
        """``(normalised value, None)`` or ``(None, problem)``."""
        t = self.type
        if t == "bool":
            return (value, None) if isinstance(value, bool) else (None, f"{self.name} is not a boolean: {value!r}")
        if t == "str":
            return (value, None) if isinstance(value, str) else (None, f"{self.name} is not a string: {value!r}")
        if t not in ("int", "number"):
            raise ValueError(f"unknown field type {t!r}")
        if isinstance(value, bool) or value is None:
            return None, f"{self.name} is not a number: {value!r}"
        if isinstance(value, str):
            try:
                x = float(value.strip())
            except ValueError:
                return None, f"{self.name} is not a number: {value!r}"
        elif isinstance(value, (int, float)):
            x = float(value)
        else:
            return None, f"{self.name} is not a number: {value!r}"
        if not math.isfinite(x):
            return None, f"{self.name} is not finite: {value!r}"
        if t == "int" and x != int(x):
            return None, f"{self.name} is not an integer: {value!r}"
        if (self.lo is not None and x < self.lo) or (self.hi is not None and x > self.hi):
            lo = "-inf" if self.lo is None else f"{self.lo:g}"
            hi = "inf" if self.hi is None else f"{self.hi:g}"
            return None, f"{self.name} out of range [{lo}, {hi}]: {value!r}"
        return (int(x) if t == "int" else x), None


def _artifact_consistency(answer: Mapping[str, Any]) -> list[str]:
    """The artifact prompts define ``artifact`` as ``severity >= 2``; reject a contradiction
    only when it is flagrant (flag with severity 0, or no flag with severity 2-3)."""
    a, s = answer.get("artifact"), answer.get("severity")
    if a is True and s == 0:
        return ["artifact is true but severity is 0"]
    if a is False and isinstance(s, int) and s >= 2:
        return [f"artifact is false but severity is {s}"]
    return []


@dataclass(frozen=True)
class TaskSpec:
    """A judge or captioner task: its default prompt file, answer schema and request settings.

    ``n_images``: (min, max) number of images a request must carry, in the order the prompt
    describes. ``request``: the request settings (temperature, max_tokens, response_format,
    chat_template_kwargs or extra_body), a dict or a zero-argument callable returning one
    (resolved at use); None: :data:`CORPUS_REQUEST`.
    ``check``: cross-field rules returning problems. ``heuristic``: the offline judge,
    ``(images as RGB uint8 arrays, variables) -> answer dict``; None -> the heuristic backend
    reports the task as a judge failure ("no heuristic"). ``json_answer=False`` makes a free-
    text task (captioners): the answer is ``{"text": content}``.

    ``text_first``: the request's message puts the prompt text before the images (default:
    images first, then the text). ``reask=False``: the answer is read once, as it comes -- a
    malformed answer is a judge failure at once (not asked again) and an answer cut off at
    ``max_tokens`` is parsed as it is (``JudgeResult.truncated`` says so); for protocols that
    reproduce a reference which does the same (the bench's ``pixverve_*`` tasks).

    A spec is its own factory (the registry holds factories): ``spec()`` is the spec itself,
    ``spec(prompt_file=...)`` a modified copy.
    """

    name: str
    prompt_file: str
    fields: tuple[Field, ...] = ()
    n_images: tuple[int, int] = (1, 1)
    request: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None
    check: Callable[[Mapping[str, Any]], list[str]] | None = None
    heuristic: Callable[[list[np.ndarray], Mapping[str, Any]], dict] | None = None
    json_answer: bool = True
    description: str = ""
    text_first: bool = False
    reask: bool = True

    def __call__(self, **changes: Any) -> TaskSpec:
        return dataclasses.replace(self, **changes) if changes else self

    def request_settings(self) -> dict[str, Any]:
        req = self.request() if callable(self.request) else self.request
        return copy.deepcopy(dict(req if req is not None else CORPUS_REQUEST))

    def validate(self, text: str | None) -> tuple[dict | None, list[str]]:
        """Parse ``text`` and check it against the schema: ``(answer, [])`` or ``(None, problems)``.

        Keys the schema does not declare are kept as they are."""
        if not self.json_answer:
            if not isinstance(text, str) or not text.strip():
                return None, ["empty answer"]
            return {"text": text.strip()}, []
        obj = parse_judge_json(text)
        if obj is None:
            snippet = (text or "")[:120].replace("\n", " ")
            return None, [f"no JSON object in the answer: {snippet!r}"]
        out = dict(obj)
        problems: list[str] = []
        for f in self.fields:
            if f.name not in obj:
                if f.required:
                    problems.append(f"missing {f.name}")
                continue
            v, why = f.check(obj[f.name])
            if why:
                problems.append(why)
            else:
                out[f.name] = v
        if not problems and self.check is not None:
            problems.extend(self.check(out))
        return (None, problems) if problems else (out, [])


#: every known task by name (a :class:`~curation.registry.Registry` of :class:`TaskSpec`; a spec
#: is its own factory, so ``TASKS.create(name)`` is the spec); :func:`register_task` adds more
TASKS: Registry = Registry("VLM task")


def register_task(spec: TaskSpec) -> TaskSpec:
    """Register (or register again, identically) a task; a different spec under a taken name
    raises ``ValueError``."""
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"expected a TaskSpec, got {type(spec).__name__}")
    if spec.name in TASKS:
        if TASKS.get(spec.name) != spec:
            raise ValueError(f"VLM task {spec.name!r} is already registered")
        return spec
    TASKS.register(spec.name, spec)
    return spec


def get_task(name: str) -> TaskSpec:
    """The spec registered as ``name``; ``KeyError`` listing the known tasks otherwise."""
    return TASKS.get(name)


# =============================================================================================
# built-in tasks (the corpus judges). Imported last: the heuristic backend imports the client,
# which imports this module's names defined above.
# =============================================================================================
from curation.vlm.heuristic import heuristic_aesthetics, heuristic_artifact  # noqa: E402

ARTIFACT_FIELDS = (Field("artifact", "bool"), Field("severity", "int", 0, 3), Field("reason", "str"))
#: the optional free-text ``reasoning`` key the bench judges return
REASONING = Field("reasoning", "str", required=False)

register_task(TaskSpec(
    "region_artifact", "region_artifact.md", ARTIFACT_FIELDS, (1, 1), None, _artifact_consistency,
    heuristic_artifact, description="paper 3.1.4: one 768-px patch of an SR image; noticeable artifacts?"))
register_task(TaskSpec(
    "instance_artifact", "instance_artifact.md", ARTIFACT_FIELDS, (1, 2), None, _artifact_consistency,
    heuristic_artifact, description="paper 3.1.4: an instance crop (+ optional highlighted full image)"))
register_task(TaskSpec(
    "artimuse_aesthetics", "artimuse_aesthetics.md",
    (Field("overall", "number", 0, 100),
     *(Field(k, "int", 1, 10) for k in ("composition_design", "visual_elements_structure", "technical_execution",
                                        "originality_creativity", "theme_communication", "emotion_viewer_response")),
     Field("analysis", "str", required=False)),
    (1, 1), None, None, heuristic_aesthetics,
    description="paper 3.1.2 / 3.1.5: ArtiMuse-style overall score 0-100 and its six dimensions"))
