"""The reference judge protocol of MSFI and ICS (PixVerve-95K's evaluation code @3f9e7bd), read not copied.

The reference's judge prompts are not this project's to copy. :func:`load_reference_prompts`
reads them at run time from a local copy of the reference evaluation code that the user points
to (``judges.bench.reference_prompts``, ``UHR_BENCH_REFERENCE_PROMPTS`` or ``uhr bench
--reference-prompts PATH``): the file ``eval/util/build_prompts.py`` (or a folder holding it).
The file is **parsed, never executed** (:mod:`ast`): each of its three prompt builders
(:data:`BUILDERS`) must be a function whose body is a docstring, one assignment of an f-string
(or a plain string) to a name, and ``return <name>.strip()`` (or ``return <name>``); the
f-string's replacement fields may only name the function's parameters. Rendering follows
Python's f-string rules (conversion, then ``format(value, spec)``), so a patch's relative
coordinates appear as ``str(list)`` exactly as the reference's own call would print them.

The answer handling here follows the reference's scripts line by line (``eval/msfi_evaluator.py``,
``eval/ics_evaluator.py``), and counts, answer by answer, what the project's strict reading
(``msfi_strict`` / ``ics_strict``) would have refused (:class:`StrictCounts`), so a user sees how
much of a reference-protocol score rests on defaults and on values outside the scale.
"""

from __future__ import annotations

import ast
import hashlib
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

#: the reference evaluation code: PixVerve-95K, commit 3f9e7bd ("Add files via upload", the
#: commit that added eval/; eval/util/ and the two evaluators are unchanged up to 6df274c)
REFERENCE_COMMIT = "3f9e7bd"
REFERENCE_FILE = "eval/util/build_prompts.py"
#: sha256 of ``eval/util/build_prompts.py`` at 3f9e7bd (the file's bytes as committed); a copy
#: with another hash is still used, and every result says it is not the pinned file
PINNED_SHA256 = "5fa0cf8b344b4c4004457431ba10d2e68cd15899e80204f69bab71abca068572"
#: the project task -> (builder function, its parameters), as named in the reference file
BUILDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "msfi_global": ("build_global_eval_prompt", ()),
    "msfi_local": ("build_local_eval_prompt", ("relative_coords",)),
    "ics": ("build_ICS_eval_prompt", ("long_caption",)),
}
#: where the file may sit below a folder the user points to (the checkout, ``eval/``, ``eval/util/``)
SEARCH = ("eval/util/build_prompts.py", "util/build_prompts.py", "build_prompts.py")

#: the reference's defaults and rounding (``msfi_evaluator.MSFI_Scorer`` / the CSV row,
#: ``ics_evaluator.process_single_image``)
MSFI_DEFAULT_SCORE = 3.0     # a missing sub-score, and a whole answer whose scores cannot be read
ROUND_DIGITS = 4             # per-image values are rounded to 4 decimals; summaries print 4 decimals

HOW_TO_POINT = ("set judges.bench.reference_prompts, UHR_BENCH_REFERENCE_PROMPTS or `uhr bench --reference-prompts "
                f"PATH` to a local copy of PixVerve-95K's {REFERENCE_FILE} (commit {REFERENCE_COMMIT}) or its checkout")


class ReferencePromptsError(ValueError):
    """The reference prompts file is missing or does not have the structure the loader reads."""


# =============================================================================================
# the prompts file
# =============================================================================================
@dataclass(frozen=True)
class _Field:
    """One replacement field of an f-string: ``{name!conversion:spec}``."""

    name: str
    conversion: int  # -1 (none), ord("s"), ord("r"), ord("a")
    spec: str


@dataclass(frozen=True)
class _Template:
    params: tuple[str, ...]
    parts: tuple[Any, ...]  # str | _Field
    strip: bool

    def render(self, values: Mapping[str, Any]) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            v = values[part.name]
            if part.conversion == ord("s"):
                v = str(v)
            elif part.conversion == ord("r"):
                v = repr(v)
            elif part.conversion == ord("a"):
                v = ascii(v)
            out.append(format(v, part.spec))
        text = "".join(out)
        return text.strip() if self.strip else text


@dataclass(frozen=True)
class ReferencePrompts:
    """The reference's three prompt builders, read from ``path`` (sha256 ``sha256``)."""

    path: str
    sha256: str
    templates: Mapping[str, _Template]

    @property
    def pinned(self) -> bool:
        """Whether the file is byte-identical to the reference's at :data:`REFERENCE_COMMIT`."""
        return self.sha256 == PINNED_SHA256

    def render(self, task: str, **values: Any) -> str:
        """The prompt text of ``task`` (a key of :data:`BUILDERS`) with the builder's arguments."""
        t = self.templates[task]
        missing = [p for p in t.params if p not in values]
        if missing or set(values) - set(t.params):
            raise TypeError(f"{BUILDERS[task][0]} takes {list(t.params)}, got {sorted(values)}")
        return t.render(values)

    def global_prompt(self) -> str:
        return self.render("msfi_global")

    def local_prompt(self, relative_coords: Sequence[float]) -> str:
        return self.render("msfi_local", relative_coords=relative_coords)

    def ics_prompt(self, long_caption: str) -> str:
        return self.render("ics", long_caption=long_caption)

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "pinned": self.pinned,
                "pinned_sha256": PINNED_SHA256, "commit": REFERENCE_COMMIT}


def resolve_reference_file(path: str | os.PathLike) -> Path:
    """The prompts file itself, or the first of :data:`SEARCH` below a folder."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for rel in SEARCH:
            if (p / rel).is_file():
                return p / rel
        raise ReferencePromptsError(f"no {' / '.join(SEARCH)} under {p}")
    raise ReferencePromptsError(f"{p} does not exist")


def _template(fn: ast.FunctionDef, params: tuple[str, ...], where: str) -> _Template:
    got = tuple(a.arg for a in fn.args.posonlyargs + fn.args.args)
    if got != params or fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs:
        raise ReferencePromptsError(f"{where}: expected parameters {list(params)}, found {list(got)}")
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring
    if not body or not isinstance(body[-1], ast.Return) or body[-1].value is None:
        raise ReferencePromptsError(f"{where}: does not end with a return statement")
    ret = body[-1].value
    strip = False
    if (isinstance(ret, ast.Call) and isinstance(ret.func, ast.Attribute) and ret.func.attr == "strip"
            and not ret.args and not ret.keywords):
        strip, ret = True, ret.func.value
    assigned: dict[str, ast.expr] = {}
    for stmt in body[:-1]:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            assigned[stmt.targets[0].id] = stmt.value
        elif not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            raise ReferencePromptsError(f"{where}: unexpected statement on line {stmt.lineno} (only a string "
                                        "assignment and its return are read)")
    if isinstance(ret, ast.Name):
        if ret.id not in assigned:
            raise ReferencePromptsError(f"{where}: returns {ret.id!r}, which is not assigned a string")
        ret = assigned[ret.id]
    parts: list[Any] = []
    if isinstance(ret, ast.Constant) and isinstance(ret.value, str):
        parts.append(ret.value)
    elif isinstance(ret, ast.JoinedStr):
        for v in ret.values:
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                parts.append(v.value)
            elif isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name) and v.value.id in params:
                spec = ""
                if v.format_spec is not None:
                    if not all(isinstance(x, ast.Constant) for x in v.format_spec.values):
                        raise ReferencePromptsError(f"{where}: a nested format spec on line {v.lineno}")
                    spec = "".join(str(x.value) for x in v.format_spec.values)
                parts.append(_Field(v.value.id, v.conversion, spec))
            else:
                raise ReferencePromptsError(f"{where}: a replacement field on line {v.lineno} that is not one of "
                                            f"the parameters {list(params)}")
    else:
        raise ReferencePromptsError(f"{where}: the returned value is not a string or an f-string")
    return _Template(params, tuple(parts), strip)


def load_reference_prompts(path: str | os.PathLike) -> ReferencePrompts:
    """Read the reference's prompt builders from ``path`` (the file, or a folder holding it).

    Raises :class:`ReferencePromptsError` (a ``ValueError``) with the reason when the file is
    missing or a builder is absent or has another structure."""
    f = resolve_reference_file(path)
    data = f.read_bytes()
    try:
        tree = ast.parse(data.decode("utf-8"), filename=str(f))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise ReferencePromptsError(f"{f}: not a readable Python file ({type(exc).__name__}: {exc})") from None
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    templates = {}
    for task, (fname, params) in BUILDERS.items():
        if fname not in defs:
            raise ReferencePromptsError(f"{f}: no function {fname}({', '.join(params)})")
        templates[task] = _template(defs[fname], params, f"{f}: {fname}")
    return ReferencePrompts(os.fspath(f.resolve()), hashlib.sha256(data).hexdigest(), templates)


def reference_prompts_or_reason(path: str | os.PathLike | None) -> tuple[ReferencePrompts | None, str | None]:
    """``(prompts, None)``, or ``(None, why)`` when no path is given or the file cannot be read."""
    if not path:
        return None, f"no local copy of the reference evaluation code: {HOW_TO_POINT}"
    try:
        return load_reference_prompts(path), None
    except (ReferencePromptsError, OSError) as exc:
        return None, f"reference prompts {path}: {exc}"


# =============================================================================================
# answers as the reference reads them, and what a strict reading would refuse
# =============================================================================================
@dataclass
class StrictCounts:
    """What the project's strict reading would have refused, counted over a row's answers.

    Sub-score counts: ``n_defaulted`` (absent, scored 3 by the reference: MSFI only),
    ``n_not_number`` (``float()`` fails: the reference scores that whole MSFI answer 3, an ICS
    answer fails), ``n_half_points`` (a finite non-integer such as 4.5), ``n_out_of_range``
    (outside the scale), ``n_non_finite`` (nan / inf), ``n_boolean`` (JSON true/false, read as
    1/0). Answer counts: ``n_truncated`` (cut off at max_tokens, read as it is),
    ``n_reasoning_not_string`` (a ``reasoning`` that is not a string), ``n_no_answer`` (a call
    without a JSON object: left out, as by the reference; the strict path asks again),
    ``n_answers`` (answers read) and ``n_strict_refused`` (answers with at least one of the
    problems above, plus those without an answer)."""

    n_answers: int = 0
    n_strict_refused: int = 0
    n_defaulted: int = 0
    n_not_number: int = 0
    n_half_points: int = 0
    n_out_of_range: int = 0
    n_non_finite: int = 0
    n_boolean: int = 0
    n_truncated: int = 0
    n_reasoning_not_string: int = 0
    n_no_answer: int = 0

    def add(self, other: StrictCounts | Mapping[str, int]) -> StrictCounts:
        src = other.to_dict() if isinstance(other, StrictCounts) else other
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + int(src.get(f.name, 0) or 0))
        return self

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def total(cls, rows: Iterable[Mapping[str, Any]]) -> StrictCounts:
        out = cls()
        for r in rows:
            out.add({k: v for k, v in r.items() if k.startswith("n_")})
        return out


def reference_float(value: Any) -> tuple[float | None, str | None]:
    """``float(value)`` as the reference calls it: ``(x, None)`` or ``(None, why)``."""
    try:
        return float(value), None
    except (TypeError, ValueError, OverflowError) as exc:
        return None, f"{type(exc).__name__}: {value!r}"


def note_answer(answer: Any, keys: Iterable[str], lo: float, hi: float, counts: StrictCounts, *,
                default: float | None, truncated: bool = False) -> list[str]:
    """Count the problems a strict reading would refuse in one answer (a dict); returns them."""
    problems: list[str] = []
    counts.n_answers += 1
    for k in keys:
        if k not in answer:
            if default is not None:
                counts.n_defaulted += 1
                problems.append(f"{k} missing (scored {default:g})")
            continue
        v = answer[k]
        if isinstance(v, bool):
            counts.n_boolean += 1
            problems.append(f"{k} is a boolean ({v!r} read as {float(v):g})")
            continue
        x, why = reference_float(v)
        if x is None:
            counts.n_not_number += 1
            problems.append(f"{k} not a number ({why})")
        elif not math.isfinite(x):
            counts.n_non_finite += 1
            problems.append(f"{k} not finite ({v!r})")
        else:
            if x != int(x):
                counts.n_half_points += 1
                problems.append(f"{k} not an integer ({v!r})")
            if not lo <= x <= hi:
                counts.n_out_of_range += 1
                problems.append(f"{k} outside {lo:g}..{hi:g} ({v!r})")
    if "reasoning" in answer and not isinstance(answer["reasoning"], str):
        counts.n_reasoning_not_string += 1
        problems.append(f"reasoning is a {type(answer['reasoning']).__name__}")
    if truncated:
        counts.n_truncated += 1
        problems.append("cut off at max_tokens")
    if problems:
        counts.n_strict_refused += 1
    return problems


def reference_weighted_score(answer: Any, weights: Mapping[str, int]) -> float:
    """``msfi_evaluator.MSFI_Scorer.calculate_weighted_score``: not an object -> 3.0; each
    sub-score ``float(answer.get(k, 3))``; any of them not readable -> 3.0 for the whole
    answer; else ``sum(w_i s_i) / sum(w_i)``."""
    if not isinstance(answer, dict):
        return MSFI_DEFAULT_SCORE
    scores = []
    for k in weights:
        x, why = reference_float(answer.get(k, MSFI_DEFAULT_SCORE))
        if x is None:
            return MSFI_DEFAULT_SCORE
        scores.append(x)
    w = list(weights.values())
    return sum(s * wi for s, wi in zip(scores, w)) / sum(w)


def reference_number(answer: Mapping[str, Any], key: str, default: float) -> float | None:
    """A sub-score column of the reference's CSV row, ``float(answer.get(key, default))``; None
    where the reference script would stop with an exception."""
    return reference_float(answer.get(key, default))[0]


def rounded(x: float | None) -> float | None:
    return None if x is None else round(x, ROUND_DIGITS)


def printed(x: float) -> float:
    """A summary value as the reference prints it (``f"{x:.4f}"``), as a number."""
    return float(f"{x:.{ROUND_DIGITS}f}")


@dataclass
class ReferenceRow:
    """One image under the reference protocol: its value (None: left out as the reference
    leaves it out), why, and what to record."""

    value: float | None
    reason: str | None
    info: dict[str, Any] = field(default_factory=dict)
