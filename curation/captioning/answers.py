"""Parsing of the model answers of every captions step, robust to garbage.

Each ``parse_*`` function takes what a model (or the VLM client) returned -- raw text, a dict
already parsed, or anything else -- and returns a :class:`Parsed`: ``status == "ok"`` with the
normalised ``value``, or ``status == "failed"`` with a ``reason`` that says what was wrong.
They never raise and never invent a value: a missing field, a wrong type, an out-of-range
number, an empty string, malformed JSON, a JSON array where an object was asked... are all
failures. Text answers may carry Markdown code fences or a ``<json>`` block (read with
:func:`curation.vlm.parse_judge_json`).

Steps and answer shapes (the schemas of :mod:`curation.captioning.tasks`):

=================== ===========================================================================
step                value
=================== ===========================================================================
tags                ``{"tags": [str, ...]}`` (tagger output; a JSON list, an object with
                    ``tags`` or a comma/newline-separated string); lower-cased, de-duplicated,
                    at most :data:`MAX_TAG_WORDS` words each
tag pruning         ``{"tangible_tags": [str, ...]}``: a subset of the candidate tags (compared
                    case- and space-insensitively); an explicit empty list is a valid answer
instance            ``{"description": str, "importance": int}``; importance in
description         ``[importance_min, importance_max]`` (default 0-10, not in paper)
aesthetics          the six dimensions (:data:`AESTHETIC_DIMENSIONS`), each a non-empty
analysis            string; optional ``overall`` number 0-100
long caption        ``{"long_caption": str}`` with ``min_words <= words <= max_words``
short caption       ``{"short_caption": str}`` likewise
instance artifact   ``{"artifact": bool, "severity": int 0-3, "reason": str}``, artifact iff
                    severity >= 2 (flagrant contradictions fail)
=================== ===========================================================================
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from curation.captioning.config import DEFAULTS

OK = "ok"
FAILED = "failed"

#: the six ArtiMuse dimensions (paper 3.1.5), as answer keys and their names in the paper
AESTHETIC_DIMENSIONS: dict[str, str] = {
    "composition_design": "composition & design",
    "visual_elements_structure": "visual elements & structure",
    "technical_execution": "technical execution",
    "originality_creativity": "originality & creativity",
    "theme_communication": "theme & communication",
    "emotion_viewer_response": "emotion & viewer response",
}

#: a tag longer than this is prose, not a tag (not in paper)
MAX_TAG_WORDS = 5

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")


def word_count(text: str) -> int:
    return len(_WORD.findall(text or ""))


@dataclass(frozen=True)
class Parsed:
    """A parsed answer: ``status`` ``"ok"`` (``value`` set) or ``"failed"`` (``reason`` set)."""

    status: str
    value: Any = None
    reason: str | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict:
        return {"status": self.status, "value": self.value, "reason": self.reason}


def _ok(value: Any) -> Parsed:
    return Parsed(OK, value, None)


def _fail(*problems: str) -> Parsed:
    return Parsed(FAILED, None, "; ".join(problems), tuple(problems))


def _object(answer: Any) -> tuple[dict | None, str | None]:
    """The answer as a dict, or why not."""
    if isinstance(answer, Mapping):
        return dict(answer), None
    if isinstance(answer, (bytes, bytearray)):
        try:
            answer = answer.decode("utf-8")
        except UnicodeDecodeError:
            return None, "answer is not UTF-8 text"
    if isinstance(answer, str):
        if not answer.strip():
            return None, "empty answer"
        from curation.vlm.tasks import parse_judge_json

        obj = parse_judge_json(answer)
        if obj is None:
            snippet = answer.strip()[:80].replace("\n", " ")
            return None, f"no JSON object in the answer: {snippet!r}"
        return obj, None
    return None, f"answer is a {type(answer).__name__}, not text or an object"


def _text(obj: Mapping[str, Any], key: str, min_words: int = 1, max_words: int | None = None) -> tuple[str | None, str | None]:
    if key not in obj:
        return None, f"missing {key}"
    v = obj[key]
    if not isinstance(v, str):
        return None, f"{key} is not a string: {type(v).__name__}"
    v = " ".join(v.split())
    if not v:
        return None, f"{key} is empty"
    n = word_count(v)
    if n < min_words:
        return None, f"{key} has {n} words, fewer than {min_words}"
    if max_words is not None and n > max_words:
        return None, f"{key} has {n} words, more than {max_words}"
    return v, None


def _int(obj: Mapping[str, Any], key: str, lo: int, hi: int) -> tuple[int | None, str | None]:
    if key not in obj:
        return None, f"missing {key}"
    v = obj[key]
    if isinstance(v, bool) or v is None:
        return None, f"{key} is not a number: {v!r}"
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return None, f"{key} is not a number: {obj[key]!r}"
    if not isinstance(v, (int, float)):
        return None, f"{key} is not a number: {type(v).__name__}"
    if not math.isfinite(v):
        return None, f"{key} is not finite: {v!r}"
    if v != int(v):
        return None, f"{key} is not an integer: {v!r}"
    if not lo <= v <= hi:
        return None, f"{key} out of range [{lo}, {hi}]: {v!r}"
    return int(v), None


def _norm_tag(t: str) -> str:
    return " ".join(t.lower().replace("_", " ").split())


def _tag_list(v: Any, key: str) -> tuple[list[str] | None, str | None]:
    if not isinstance(v, list):
        return None, f"{key} is not a list: {type(v).__name__}"
    out: list[str] = []
    for i, t in enumerate(v):
        if not isinstance(t, str):
            return None, f"{key}[{i}] is not a string: {t!r}"
        n = _norm_tag(t)
        if not n:
            return None, f"{key}[{i}] is empty"
        if len(n.split()) > MAX_TAG_WORDS:
            return None, f"{key}[{i}] has more than {MAX_TAG_WORDS} words: {t[:60]!r}"
        if n not in out:
            out.append(n)
    return out, None


# =============================================================================================
# the steps
# =============================================================================================
def parse_tags(answer: Any) -> Parsed:
    """A tagger's tags: a JSON list of strings, ``{"tags": [...]}`` or a comma / newline
    separated string. At least one tag."""
    if isinstance(answer, str) and answer.strip() and not answer.lstrip().startswith(("{", "[", "`", "<")):
        if not re.search(r"[,\n|]", answer.strip()):
            return _fail(f"plain text without separators is not a tag list: {answer.strip()[:60]!r}")
        answer = [p for p in re.split(r"[,\n|]", answer) if p.strip()]
    if isinstance(answer, str):
        s = answer.replace("```json", "").replace("```", "").strip()
        try:
            answer = json.loads(s)
        except ValueError:
            obj, why = _object(answer)
            if obj is None:
                return _fail(why or "unreadable tags")
            answer = obj
    if isinstance(answer, Mapping):
        if "tags" not in answer:
            return _fail("missing tags")
        answer = answer["tags"]
    tags, why = _tag_list(answer, "tags")
    if why:
        return _fail(why)
    if not tags:
        return _fail("no tags")
    return _ok({"tags": tags})


def parse_tag_pruning(answer: Any, candidates: Sequence[str] | None = None) -> Parsed:
    """The tangible subset of ``candidates``. Tags outside the candidates fail the answer (the
    pruner must not invent tags); an explicit empty list is valid (nothing tangible)."""
    obj, why = _object(answer)
    if obj is None:
        return _fail(why)
    if "tangible_tags" not in obj:
        return _fail("missing tangible_tags")
    tags, why = _tag_list(obj["tangible_tags"], "tangible_tags")
    if why:
        return _fail(why)
    if candidates is not None:
        cand = {_norm_tag(c) for c in candidates if isinstance(c, str)}
        extra = [t for t in tags if t not in cand]
        if extra:
            return _fail(f"tags not among the candidates: {extra}")
    return _ok({"tangible_tags": tags})


def parse_instance_description(answer: Any, importance_min: int | None = None, importance_max: int | None = None,
                               min_words: int | None = None) -> Parsed:
    """``description`` (non-empty, at least ``min_words`` words) and integer ``importance``."""
    lo = int(DEFAULTS["captions.importance.min"] if importance_min is None else importance_min)
    hi = int(DEFAULTS["captions.importance.max"] if importance_max is None else importance_max)
    mw = int(DEFAULTS["captions.description.min_words"] if min_words is None else min_words)
    obj, why = _object(answer)
    if obj is None:
        return _fail(why)
    desc, p1 = _text(obj, "description", mw)
    imp, p2 = _int(obj, "importance", lo, hi)
    problems = [p for p in (p1, p2) if p]
    if problems:
        return _fail(*problems)
    return _ok({"description": desc, "importance": imp})


def parse_aesthetics_analysis(answer: Any) -> Parsed:
    """The six dimension analyses (non-empty strings) and an optional ``overall`` 0-100."""
    obj, why = _object(answer)
    if obj is None:
        return _fail(why)
    out: dict[str, Any] = {}
    problems = []
    for k in AESTHETIC_DIMENSIONS:
        v, p = _text(obj, k)
        if p:
            problems.append(p)
        else:
            out[k] = v
    if "overall" in obj and obj["overall"] is not None:
        v = obj["overall"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 100:
            problems.append(f"overall is not a number in [0, 100]: {v!r}")
        else:
            out["overall"] = float(v)
    if problems:
        return _fail(*problems)
    return _ok(out)


def _caption(answer: Any, key: str, min_words: int, max_words: int) -> Parsed:
    obj, why = _object(answer)
    if obj is None:
        return _fail(why)
    v, p = _text(obj, key, min_words, max_words)
    return _fail(p) if p else _ok({key: v})


def parse_long_caption(answer: Any, min_words: int | None = None, max_words: int | None = None) -> Parsed:
    return _caption(answer, "long_caption",
                    int(DEFAULTS["captions.long_caption.min_words"] if min_words is None else min_words),
                    int(DEFAULTS["captions.long_caption.max_words"] if max_words is None else max_words))


def parse_short_caption(answer: Any, min_words: int | None = None, max_words: int | None = None) -> Parsed:
    return _caption(answer, "short_caption",
                    int(DEFAULTS["captions.short_caption.min_words"] if min_words is None else min_words),
                    int(DEFAULTS["captions.short_caption.max_words"] if max_words is None else max_words))


def parse_instance_artifact(answer: Any) -> Parsed:
    """The instance artifact verdict (task ``instance_artifact``, paper 3.1.4)."""
    obj, why = _object(answer)
    if obj is None:
        return _fail(why)
    problems = []
    art = obj.get("artifact", None)
    if "artifact" not in obj:
        problems.append("missing artifact")
    elif not isinstance(art, bool):
        problems.append(f"artifact is not a boolean: {art!r}")
    sev, p = _int(obj, "severity", 0, 3)
    if p:
        problems.append(p)
    reason = obj.get("reason")
    if not isinstance(reason, str):
        problems.append("missing reason" if "reason" not in obj else f"reason is not a string: {reason!r}")
    if not problems:
        if art is True and sev == 0:
            problems.append("artifact is true but severity is 0")
        elif art is False and sev >= 2:
            problems.append(f"artifact is false but severity is {sev}")
    if problems:
        return _fail(*problems)
    return _ok({"artifact": art, "severity": sev, "reason": reason.strip()})


#: the parser of each captions task (task name -> function of the answer)
PARSERS = {
    "caption_tag_pruning": parse_tag_pruning,
    "caption_instance_description": parse_instance_description,
    "caption_aesthetics_analysis": parse_aesthetics_analysis,
    "caption_long": parse_long_caption,
    "caption_short": parse_short_caption,
    "instance_artifact": parse_instance_artifact,
}


def check_with(parser) -> Any:
    """A :class:`~curation.vlm.TaskSpec` ``check`` built from a parser: the parser's problems."""

    def check(answer: Mapping[str, Any]) -> list[str]:
        r = parser(answer)
        return [] if r.ok else list(r.problems or (r.reason or "invalid answer",))

    return check
