"""The VLM client: the one way every judge and captioner of uhrforge calls a vision-language model.

Library only (no Dagster). Two backends behind one interface (:class:`VLMClient`):

* ``vllm`` (:class:`HttpVLMClient`) -- the OpenAI-compatible chat-completions API that
  ``vllm serve`` exposes: ``POST {endpoint}/v1/chat/completions``, images as base64 data URLs
  (``{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}``, images first
  in the order given, then the prompt text), an optional API key read from the environment
  variable named by ``api_key_env`` and sent as ``Authorization: Bearer ...`` (never logged,
  never stored in a result or the cache);
* ``heuristic`` (:class:`HeuristicVLMClient`) -- the offline default: a deterministic judge
  computed from simple image statistics. Every one of its results says
  ``backend="heuristic"`` and ``model="uhrforge-heuristic/1"``; it never claims to be a model.
  Per task: artifacts (region and instance) = the worse of an 8-px blockiness ratio and a
  straight-line discontinuity ratio (:data:`ARTIFACT_THRESHOLDS`), flagged at severity >= 2;
  ArtiMuse-shaped aesthetics, MSFI global/local and ICS = integer levels mapped from
  sharpness, contrast, exposure, colourfulness, entropy, noise, histogram gaps (see each
  ``heuristic_*`` function). These are signals for running the pipeline offline, not the
  paper's scores: ICS's heuristic does not even read the caption.

``create_vlm_client(cfg_section)`` picks the backend: ``endpoint`` set -> ``vllm``, else
``heuristic`` (or ``backend: vllm | heuristic`` explicitly).

Usage::

    client = create_vlm_client(cfg.get("corpus.region_artifacts.judge"))
    reqs = [VLMRequest("region_artifact", image_id=patch_image_id(img_id, b.box), images=[patch])
            for b, patch in ...]
    for r in client.run(reqs):
        flagged = r.ok and r.answer["artifact"]     # r.status == "judge_failed" is never a pass

Request life cycle (:meth:`VLMClient.run`):

1. **Validate** every request before anything is sent (unknown task, wrong number of images,
   a prompt placeholder without a value -> ``ValueError``: caller bugs, not judge failures).
2. **Cache** (sqlite, ``{cache_dir}/vlm_cache.sqlite``): the key is the sha256 of
   ``(image_id, task, model, prompt_hash, sha256(rendered prompt text), request settings)``;
   the rendered text covers the request's variables (caption, patch coordinates). A hit is
   returned with ``cached=True, attempts=0`` and nothing is sent. ``image_id`` must identify
   the exact pixels sent (use :func:`patch_image_id` for crops). Identical requests in one
   batch are sent once.
3. **Send**, at most ``max_concurrency`` requests in flight per client (a thread pool plus a
   semaphore held only while a request is on the wire), each with a ``timeout_s`` timeout.
   Connect errors, timeouts, dropped connections, HTTP 408/429/5xx are retried up to
   ``retries`` times with exponential backoff and jitter (``backoff_s * 2**k``, capped at
   ``backoff_max_s``, multiplied by a random factor in [0.5, 1]; a ``Retry-After`` header is
   honoured up to the cap). Other 4xx answers are not retried.
4. **Parse and validate** the answer: the ``<json>...</json>`` block or a Markdown fence or the
   outermost ``{...}`` (:func:`evaluation.metrics.msfi.parse_judge_json`, the reference
   parser), then the task's schema (:class:`TaskSpec`: required keys, types, integer ranges,
   cross-field checks). A malformed or out-of-schema answer (or one cut off by ``max_tokens``)
   is asked again up to ``schema_retries`` times.
5. **Record**: a :class:`JudgeResult` per request, in request order, with ``status`` ``"ok"``
   or ``"judge_failed"`` (with the reason), the validated answer, model, backend, prompt path
   and sha256, request settings, latency, attempts, cached flag and token usage. A failure is
   never a pass: callers must test ``result.ok`` before reading ``result.answer``.

Failures and the cache: only valid answers are cached as answers. A failure is written to a
separate ``failures`` table (reason, attempts, how many runs failed) for audit, and the next
run asks the model again (a failure is usually transient: server down, overload).

Prompts are files under version control (``prompts/`` at the repository root; see its README):
placeholders ``{{name}}`` are filled from :attr:`VLMRequest.variables`; a leading HTML comment
is a maintainer note, hashed but not sent. ``prompt_hash`` is the sha256 of the file's bytes.

Request settings per task: the MSFI and ICS tasks use the reference's settings
(``evaluation.metrics.msfi.JUDGE_REQUEST`` / ``evaluation.metrics.ics.JUDGE_REQUEST``:
temperature 0.1, max_tokens 8192, thinking off, JSON response format for MSFI only); the
corpus tasks use temperature 0.1, max_tokens 1024, JSON response format, thinking off. The
OpenAI-client key ``extra_body`` is merged into the request body (that is what the OpenAI
client does). Config ``temperature`` / ``max_tokens`` / ``thinking`` override every task when
set (leave them null to keep the reference settings).
"""

from __future__ import annotations

import abc
import base64
import concurrent.futures as cf
import copy
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curation.registry import Registry

OK = "ok"
JUDGE_FAILED = "judge_failed"
BACKEND_VLLM = "vllm"
BACKEND_HEURISTIC = "heuristic"
HEURISTIC_MODEL = "uhrforge-heuristic/1"

#: the repository's prompt folder (the package is installed editable from the repository)
DEFAULT_PROMPT_DIR = Path(__file__).resolve().parent.parent / "prompts"

#: the project's defaults for the corpus judges (paper 3.1.4); see ``config_block`` in the README
CORPUS_REQUEST: dict[str, Any] = {
    "temperature": 0.1,
    "max_tokens": 1024,
    "response_format": {"type": "json_object"},
    "chat_template_kwargs": {"enable_thinking": False},
}


# =============================================================================================
# answer schema
# =============================================================================================
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
    (resolved at use, so the bench settings are imported from the metric modules, not copied).
    ``check``: cross-field rules returning problems. ``heuristic``: the offline judge,
    ``(images as RGB uint8 arrays, variables) -> answer dict``; None -> the heuristic backend
    reports the task as a judge failure ("no heuristic"). ``json_answer=False`` makes a free-
    text task (captioners): the answer is ``{"text": content}``.
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
        from evaluation.metrics.msfi import parse_judge_json  # lazy: evaluation imports curation

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


#: every known task by name; :func:`register_task` adds more (captioners, new judges)
TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Register (or replace with an identical spec) a task; a different spec under a taken
    name raises ``ValueError``."""
    prev = TASKS.get(spec.name)
    if prev is not None and prev != spec:
        raise ValueError(f"VLM task {spec.name!r} is already registered")
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown VLM task {name!r}; known: {', '.join(sorted(TASKS))}") from None


# =============================================================================================
# prompts
# =============================================================================================
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_LEADING_COMMENT = re.compile(r"\A\s*<!--.*?-->\s*", re.DOTALL)


@dataclass(frozen=True)
class Prompt:
    """A prompt file: ``sha256`` of its bytes (recorded with every result) and its text."""

    path: str
    sha256: str
    text: str

    @property
    def body(self) -> str:
        """The text sent to the model: the file without its leading HTML comment(s)."""
        t = self.text
        while True:
            m = _LEADING_COMMENT.match(t)
            if not m:
                return t.strip() + "\n"
            t = t[m.end():]

    @property
    def variables(self) -> list[str]:
        return sorted(set(_PLACEHOLDER.findall(self.body)))

    def render(self, variables: Mapping[str, Any]) -> str:
        """Fill ``{{name}}`` placeholders; strings as they are, anything else as JSON.
        A placeholder without a value raises ``ValueError``."""
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise ValueError(f"prompt {self.path}: no value for placeholder(s) {missing}")

        def repl(m: re.Match) -> str:
            v = variables[m.group(1)]
            return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)

        return _PLACEHOLDER.sub(repl, self.body)


def load_prompt(path: str | os.PathLike) -> Prompt:
    data = Path(path).read_bytes()
    return Prompt(str(path), hashlib.sha256(data).hexdigest(), data.decode("utf-8"))


def prompt_hash(path: str | os.PathLike) -> str:
    """sha256 (hex) of a prompt file's bytes."""
    return load_prompt(path).sha256


# =============================================================================================
# requests and results
# =============================================================================================
ImageInput = Any  # RGB uint8 ndarray (H, W, 3) or (H, W), encoded bytes (JPEG/PNG/WebP), PIL image, path


@dataclass
class VLMRequest:
    """One model call.

    * ``task`` -- a registered task name (``region_artifact``, ``instance_artifact``,
      ``artimuse_aesthetics``, ``msfi_global``, ``msfi_local``, ``ics``, or your own);
    * ``image_id`` -- identifies the exact pixels sent; the cache key is built from it. For a
      crop or a resized view use :func:`patch_image_id` (e.g. ``"<id>@768:x,y,w,h"``);
    * ``images`` -- in the order the prompt describes: RGB uint8 arrays (encoded with the
      client's ``image_format``/``jpeg_quality``), already encoded bytes (JPEG, PNG or WebP,
      sent as they are: use this for the bench's JPEG-98 views), PIL images or file paths;
    * ``variables`` -- values for the prompt's ``{{name}}`` placeholders;
    * ``prompt`` -- a prompt file for this request only (else the client's file for the task).
    """

    task: str
    image_id: str
    images: Sequence[ImageInput] = ()
    variables: Mapping[str, Any] = field(default_factory=dict)
    prompt: str | os.PathLike | None = None


@dataclass
class JudgeResult:
    """The outcome of one request. ``status`` is ``"ok"`` or ``"judge_failed"``; ``answer`` is
    the validated answer dict (None on failure), ``reason`` says why it failed."""

    task: str
    image_id: str
    status: str
    answer: dict | None
    reason: str | None
    model: str
    backend: str
    prompt_path: str
    prompt_hash: str
    latency_s: float
    attempts: int
    cached: bool
    cache_key: str
    request: dict = field(default_factory=dict)
    usage: dict | None = None
    raw: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (for manifests and audit pages)."""
        return dataclasses.asdict(self)


def patch_image_id(image_id: str, box: Sequence[int], tag: str = "") -> str:
    """The id of a crop ``box = (x, y, w, h)`` of ``image_id``: ``"<id>@<tag>:x,y,w,h"``."""
    return f"{image_id}@{tag}:" + ",".join(str(int(v)) for v in box)


def _sha256_text(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def cache_key(image_id: str, task: str, model: str, prompt_sha256: str, rendered: str,
              request: Mapping[str, Any]) -> str:
    """The cache key: sha256 over (image id, task, model, prompt hash, rendered text hash,
    request settings)."""
    payload = json.dumps([image_id, task, model, prompt_sha256, _sha256_text(rendered), dict(request)],
                         sort_keys=True, ensure_ascii=False)
    return _sha256_text(payload)


# =============================================================================================
# images
# =============================================================================================
_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


def _mime_of(data: bytes) -> str | None:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _as_array(img: ImageInput) -> np.ndarray:
    """RGB uint8 (H, W, 3) array of any accepted image input."""
    from PIL import Image

    if isinstance(img, (str, os.PathLike)):
        img = Path(img).read_bytes()
    if isinstance(img, (bytes, bytearray, memoryview)):
        with Image.open(io.BytesIO(bytes(img))) as im:
            return np.asarray(im.convert("RGB"))
    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"))
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an RGB uint8 image, got {a.dtype} {a.shape}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def encode_image(img: ImageInput, image_format: str = "jpeg", jpeg_quality: int = 95) -> tuple[bytes, str]:
    """``(encoded bytes, mime type)``. Encoded bytes (JPEG/PNG/WebP) and such files pass
    through unchanged; arrays and PIL images are encoded as ``image_format``."""
    from PIL import Image

    if isinstance(img, (str, os.PathLike)):
        data = Path(img).read_bytes()
        mime = _mime_of(data)
        if mime:
            return data, mime
        img = data
    if isinstance(img, (bytes, bytearray, memoryview)):
        data = bytes(img)
        mime = _mime_of(data)
        if mime is None:
            raise ValueError("image bytes are not JPEG, PNG or WebP")
        return data, mime
    arr = _as_array(img)
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), "image/png"
    if image_format != "jpeg":
        raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(jpeg_quality))
    return buf.getvalue(), "image/jpeg"


def image_data_url(img: ImageInput, image_format: str = "jpeg", jpeg_quality: int = 95) -> str:
    data, mime = encode_image(img, image_format, jpeg_quality)
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


# =============================================================================================
# cache
# =============================================================================================
class VLMCache:
    """Answers on disk (sqlite, WAL; safe across threads and processes).

    ``answers``: one row per cache key with a valid answer. ``failures``: the last failure of
    a key that has no answer yet (reason, attempts, number of failed runs); a later success
    deletes it. Failures are never returned as answers.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "vlm_cache.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, image_id TEXT, task TEXT, model TEXT,"
                " backend TEXT, prompt_hash TEXT, answer TEXT, raw TEXT, usage TEXT, latency_s REAL,"
                " attempts INTEGER, created REAL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS failures (key TEXT PRIMARY KEY, image_id TEXT, task TEXT, model TEXT,"
                " backend TEXT, prompt_hash TEXT, reason TEXT, attempts INTEGER, n_failed_runs INTEGER, last REAL)")

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT answer, raw, usage FROM answers WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return {"answer": json.loads(row[0]), "raw": row[1], "usage": json.loads(row[2]) if row[2] else None}

    def put(self, r: JudgeResult) -> None:
        with self._lock:
            if r.ok:
                self._db.execute(
                    "INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (r.cache_key, r.image_id, r.task, r.model, r.backend, r.prompt_hash,
                     json.dumps(r.answer, ensure_ascii=False), r.raw, json.dumps(r.usage) if r.usage else None,
                     r.latency_s, r.attempts, time.time()))
                self._db.execute("DELETE FROM failures WHERE key=?", (r.cache_key,))
            else:
                self._db.execute(
                    "INSERT INTO failures VALUES (?,?,?,?,?,?,?,?,1,?) ON CONFLICT(key) DO UPDATE SET"
                    " reason=excluded.reason, attempts=excluded.attempts, n_failed_runs=n_failed_runs+1,"
                    " last=excluded.last",
                    (r.cache_key, r.image_id, r.task, r.model, r.backend, r.prompt_hash, r.reason, r.attempts,
                     time.time()))

    def failures(self) -> list[dict]:
        with self._lock:
            cur = self._db.execute("SELECT key, image_id, task, model, reason, attempts, n_failed_runs FROM failures")
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


# =============================================================================================
# clients
# =============================================================================================
@dataclass
class _Outcome:
    """One attempt: ``kind`` is "answer" (text to validate), "retry" (transport problem worth
    retrying) or "fatal" (not retried)."""

    kind: str
    text: str | None = None
    reason: str | None = None
    retry_after: float | None = None
    usage: dict | None = None
    truncated: bool = False


@dataclass
class _Prepared:
    req: VLMRequest
    spec: TaskSpec
    prompt: Prompt
    text: str
    request: dict
    key: str


class VLMClient(abc.ABC):
    """Base client: validation, prompt rendering, cache, concurrency and retries.

    Subclasses implement :meth:`_attempt` (one call of the backend). Parameters:

    * ``model`` -- the served model name (recorded, part of the cache key);
    * ``max_concurrency`` -- requests in flight at most (per client);
    * ``timeout_s`` -- per-request timeout;
    * ``retries`` -- extra attempts after a retryable transport failure;
    * ``schema_retries`` -- extra attempts after a malformed / out-of-schema answer;
    * ``backoff_s``, ``backoff_max_s`` -- exponential backoff base and cap (seconds);
    * ``cache_dir`` -- answer cache folder (None: no cache);
    * ``prompt_dir`` -- where task prompt files are looked up (default: ``prompts/``);
    * ``prompts`` -- ``{task: path}`` overrides of the default prompt files;
    * ``temperature``, ``max_tokens``, ``thinking`` -- override every task's request settings
      when not None (``thinking`` sets ``chat_template_kwargs.enable_thinking``);
    * ``image_format`` (``jpeg``/``png``), ``jpeg_quality`` -- how arrays are encoded.
    """

    backend: str = ""

    def __init__(self, *, model: str, max_concurrency: int = 4, timeout_s: float = 120.0, retries: int = 3,
                 schema_retries: int = 2, backoff_s: float = 1.0, backoff_max_s: float = 30.0,
                 cache_dir: str | os.PathLike | None = None, prompt_dir: str | os.PathLike | None = None,
                 prompts: Mapping[str, str] | None = None, temperature: float | None = None,
                 max_tokens: int | None = None, thinking: bool | None = None, image_format: str = "jpeg",
                 jpeg_quality: int = 95, seed: int | None = None) -> None:
        if int(max_concurrency) < 1:
            raise ValueError("max_concurrency must be >= 1")
        if int(retries) < 0 or int(schema_retries) < 0:
            raise ValueError("retries and schema_retries must be >= 0")
        if image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
        self.model = str(model)
        self.max_concurrency = int(max_concurrency)
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.schema_retries = int(schema_retries)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.prompt_dir = Path(prompt_dir) if prompt_dir else DEFAULT_PROMPT_DIR
        self.prompts = dict(prompts or {})
        self.overrides = {"temperature": temperature, "max_tokens": max_tokens, "thinking": thinking}
        self.image_format = image_format
        self.jpeg_quality = int(jpeg_quality)
        self.cache = VLMCache(cache_dir) if cache_dir else None
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._rng = random.Random(seed)

    # -- public ------------------------------------------------------------------------------
    def run(self, requests: Iterable[VLMRequest]) -> list[JudgeResult]:
        """Answer ``requests``; one :class:`JudgeResult` per request, in order. Raises
        ``ValueError`` (before sending anything) for an invalid request; a backend failure is
        a ``judge_failed`` result, never an exception."""
        reqs = list(requests)
        prompts: dict[str, Prompt] = {}
        prepared = [self._prepare(r, prompts) for r in reqs]
        results: dict[str, JudgeResult] = {}
        todo: dict[str, _Prepared] = {}
        for p in prepared:
            if p.key in results or p.key in todo:
                continue
            t0 = time.perf_counter()
            hit = self.cache.get(p.key) if self.cache is not None else None
            if hit is not None:
                results[p.key] = self._result(p, OK, hit["answer"], None, time.perf_counter() - t0, 0, True,
                                              hit["usage"], hit["raw"])
            else:
                todo[p.key] = p
        if todo:
            workers = min(len(todo), self.max_concurrency)
            with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"vlm-{self.backend}") as pool:
                for key, res in zip(todo, pool.map(self._execute_safe, todo.values())):
                    results[key] = res
                    if self.cache is not None:
                        self.cache.put(res)
        out = []
        for p in prepared:
            r = results[p.key]
            out.append(r if r.image_id == p.req.image_id else dataclasses.replace(r, image_id=p.req.image_id))
        return out

    def run_one(self, request: VLMRequest) -> JudgeResult:
        return self.run([request])[0]

    def prompt_for(self, task: str, override: str | os.PathLike | None = None) -> Prompt:
        """The prompt file a request of ``task`` uses (hash and text)."""
        spec = get_task(task)
        return load_prompt(self._prompt_path(spec, override))

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> VLMClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend!r} model={self.model!r}>"

    # -- preparation ---------------------------------------------------------------------------
    def _prompt_path(self, spec: TaskSpec, override: str | os.PathLike | None) -> Path:
        p = Path(override or self.prompts.get(spec.name) or spec.prompt_file)
        if p.is_absolute() or p.exists():
            return p
        return self.prompt_dir / p

    def request_settings(self, spec: TaskSpec) -> dict[str, Any]:
        """The request body settings of a task (after config overrides; ``extra_body`` merged)."""
        req = spec.request_settings()
        extra = req.pop("extra_body", None) or {}
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(req.get(k), dict):
                req[k] = {**req[k], **v}
            else:
                req[k] = v
        o = self.overrides
        if o["temperature"] is not None:
            req["temperature"] = float(o["temperature"])
        if o["max_tokens"] is not None:
            req["max_tokens"] = int(o["max_tokens"])
        if o["thinking"] is not None:
            req["chat_template_kwargs"] = {**req.get("chat_template_kwargs", {}), "enable_thinking": bool(o["thinking"])}
        return req

    def _prepare(self, req: VLMRequest, prompts: dict[str, Prompt]) -> _Prepared:
        if not isinstance(req, VLMRequest):
            raise TypeError(f"expected a VLMRequest, got {type(req).__name__}")
        spec = get_task(req.task)
        if not isinstance(req.image_id, str) or not req.image_id:
            raise ValueError(f"{req.task}: image_id must be a non-empty string")
        lo, hi = spec.n_images
        if not lo <= len(req.images) <= hi:
            raise ValueError(f"{req.task}: expects {lo}..{hi} image(s), got {len(req.images)} ({req.image_id})")
        path = self._prompt_path(spec, req.prompt)
        pk = str(path)
        if pk not in prompts:  # read once per run: an edited file is seen by the next run
            prompts[pk] = load_prompt(path)
        prompt = prompts[pk]
        text = prompt.render(req.variables)
        settings = self.request_settings(spec)
        key = cache_key(req.image_id, spec.name, self.model, prompt.sha256, text, settings)
        return _Prepared(req, spec, prompt, text, settings, key)

    def _result(self, p: _Prepared, status: str, answer: dict | None, reason: str | None, latency: float,
                attempts: int, cached: bool, usage: dict | None = None, raw: str | None = None) -> JudgeResult:
        return JudgeResult(task=p.spec.name, image_id=p.req.image_id, status=status, answer=answer, reason=reason,
                           model=self.model, backend=self.backend, prompt_path=p.prompt.path,
                           prompt_hash=p.prompt.sha256, latency_s=round(latency, 6), attempts=attempts,
                           cached=cached, cache_key=p.key, request=copy.deepcopy(p.request), usage=usage, raw=raw)

    # -- execution -----------------------------------------------------------------------------
    def _execute_safe(self, p: _Prepared) -> JudgeResult:
        t0 = time.perf_counter()
        try:
            return self._execute(p)
        except Exception as e:  # a bug or an unexpected backend error: a failure, never a pass
            return self._result(p, JUDGE_FAILED, None, f"client error: {type(e).__name__}: {e}",
                                time.perf_counter() - t0, 0, False)

    def _backoff(self, k: int, retry_after: float | None) -> float:
        delay = min(self.backoff_max_s, self.backoff_s * (2 ** k)) * (0.5 + 0.5 * self._rng.random())
        if retry_after is not None:
            delay = max(delay, min(self.backoff_max_s, retry_after))
        return delay

    def _execute(self, p: _Prepared) -> JudgeResult:
        t0 = time.perf_counter()
        attempts = transport_failures = invalid = 0
        usage: dict | None = None
        last_raw: str | None = None
        while True:
            attempts += 1
            out = self._attempt(p)
            if out.kind == "fatal":
                return self._result(p, JUDGE_FAILED, None, out.reason, time.perf_counter() - t0, attempts, False)
            if out.kind == "retry":
                transport_failures += 1
                if transport_failures > self.retries:
                    return self._result(p, JUDGE_FAILED, None,
                                        f"{out.reason} (gave up after {attempts} attempts)",
                                        time.perf_counter() - t0, attempts, False)
                time.sleep(self._backoff(transport_failures - 1, out.retry_after))
                continue
            usage, last_raw = out.usage, out.text
            if out.truncated:
                answer, problems = None, ["answer cut off at max_tokens"]
            elif out.text is None and out.reason:
                answer, problems = None, [out.reason]
            else:
                answer, problems = p.spec.validate(out.text)
            if not problems:
                return self._result(p, OK, answer, None, time.perf_counter() - t0, attempts, False, usage, out.text)
            invalid += 1
            if invalid > self.schema_retries:
                return self._result(p, JUDGE_FAILED, None,
                                    f"invalid answer after {attempts} attempts: " + "; ".join(problems),
                                    time.perf_counter() - t0, attempts, False, usage, last_raw)

    @abc.abstractmethod
    def _attempt(self, p: _Prepared) -> _Outcome:
        """One call of the backend."""


_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class HttpVLMClient(VLMClient):
    """OpenAI-compatible chat completions over HTTP (a ``vllm serve`` endpoint).

    ``endpoint``: base URL (``http://host:8000``; a trailing ``/v1`` is accepted).
    ``api_key_env``: name of the environment variable holding the API key (read once, at
    construction; a name whose variable is unset raises ``ValueError``). The key goes only
    into the ``Authorization`` header.
    """

    backend = BACKEND_VLLM

    def __init__(self, endpoint: str, *, model: str, api_key_env: str | None = None, **kw: Any) -> None:
        import httpx

        super().__init__(model=model, **kw)
        base = str(endpoint).rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]
        self.endpoint = base
        self.url = base + "/v1/chat/completions"
        headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"VLM client: environment variable {api_key_env!r} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.api_key_env = api_key_env
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0), pool=None),
            limits=httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency),
            trust_env=False,
        )
        self._bodies: dict[str, bytes] = {}
        self._bodies_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<HttpVLMClient model={self.model!r} endpoint={self.endpoint!r}>"

    def close(self) -> None:
        self._http.close()
        super().close()

    def body(self, p: _Prepared) -> dict:
        """The chat-completions request body of a prepared request."""
        content: list[dict] = [
            {"type": "image_url", "image_url": {"url": image_data_url(im, self.image_format, self.jpeg_quality)}}
            for im in p.req.images
        ]
        content.append({"type": "text", "text": p.text})
        return {"model": self.model, "messages": [{"role": "user", "content": content}], **p.request}

    def _attempt(self, p: _Prepared) -> _Outcome:
        import httpx

        with self._bodies_lock:
            data = self._bodies.get(p.key)
        if data is None:  # encode once per request, not once per attempt
            data = json.dumps(self.body(p), ensure_ascii=False).encode("utf-8")
            with self._bodies_lock:
                self._bodies[p.key] = data
        try:
            with self._slots:
                resp = self._http.post(self.url, content=data)
        except httpx.TimeoutException as e:
            return _Outcome("retry", reason=f"timeout: {type(e).__name__} after {self.timeout_s:g} s")
        except httpx.TransportError as e:  # connect errors, resets, dropped connections
            return _Outcome("retry", reason=f"transport: {type(e).__name__}: {e}")
        status = resp.status_code
        if status != 200:
            detail = _error_message(resp)
            reason = f"HTTP {status}: {detail}"
            if status in _RETRY_STATUS:
                return _Outcome("retry", reason=reason, retry_after=_retry_after(resp))
            return _Outcome("fatal", reason=reason + " (not retried)")
        try:
            payload = resp.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return _Outcome("answer", text=None, reason=f"unreadable response body ({type(e).__name__})")
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        return _Outcome("answer", text=text, usage=usage, truncated=choice.get("finish_reason") == "length")

    def _execute(self, p: _Prepared) -> JudgeResult:
        try:
            return super()._execute(p)
        finally:
            with self._bodies_lock:
                self._bodies.pop(p.key, None)


def _error_message(resp: Any) -> str:
    try:
        j = resp.json()
        msg = j.get("error", {}).get("message") if isinstance(j.get("error"), dict) else j.get("message")
        if msg:
            return str(msg)[:300]
    except Exception:
        pass
    return (resp.text or "").strip()[:300] or resp.reason_phrase


def _retry_after(resp: Any) -> float | None:
    v = resp.headers.get("retry-after")
    try:
        return max(0.0, float(v)) if v is not None else None
    except ValueError:
        return None


class HeuristicVLMClient(VLMClient):
    """The offline judge: deterministic answers from image statistics, labelled ``heuristic``.

    Same interface, schema validation and cache as the HTTP client; no model is involved and
    the numbers mean only what the heuristics below compute. Every result carries
    ``backend="heuristic"`` and ``model="uhrforge-heuristic/1"``; consumers that publish a
    model-based score (ArtiMuse S_A, MSFI, ICS) must not report these under the model's name.
    """

    backend = BACKEND_HEURISTIC

    def __init__(self, **kw: Any) -> None:
        kw.pop("model", None)
        super().__init__(model=HEURISTIC_MODEL, **kw)

    def _attempt(self, p: _Prepared) -> _Outcome:
        if p.spec.heuristic is None:
            return _Outcome("fatal", reason=f"no heuristic for task {p.spec.name!r} (offline backend)")
        arrays = [_as_array(im) for im in p.req.images]
        answer = p.spec.heuristic(arrays, dict(p.req.variables))
        return _Outcome("answer", text=json.dumps(answer))


# =============================================================================================
# heuristics (offline backend). All deterministic, float64, documented thresholds.
# =============================================================================================
def _grey(rgb: np.ndarray) -> np.ndarray:
    a = rgb.astype(np.float64)
    return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]


def blockiness(grey: np.ndarray, period: int = 8) -> float:
    """Mean absolute step across the ``period`` grid lines over the mean step elsewhere
    (1.0 = no grid structure; JPEG-like blocking or tile grids raise it)."""
    ratios = []
    for d in (np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=0)).T):
        n = d.shape[1]
        if n < 2 * period:
            continue
        on = np.zeros(n, dtype=bool)
        on[period - 1::period] = True
        a, b = d[:, on].mean(), d[:, ~on].mean()
        ratios.append((a + 0.5) / (b + 0.5))
    return float(max(ratios)) if ratios else 1.0


def line_discontinuity(rgb: np.ndarray, neighbours: int = 6, floor: float = 1.0) -> float:
    """Straight-line discontinuity: per channel and per row (column) boundary, the step across
    the whole line, ``max(median |step|, |mean step|)``, over the median of the median
    |steps| of the ``neighbours`` lines on each side (plus ``floor`` grey levels); the largest
    ratio. A seam or colour shift along a whole line scores high (about 3-4 for a +20 shift on
    a textured photo), texture and natural edges that cross only part of a line stay near 1.
    Limitation: a perfectly straight full-width edge (a level horizon) also scores high."""
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = a[:, :, None]
    best = 1.0
    nb = int(neighbours)
    for ch in range(a.shape[2]):
        g = a[:, :, ch].astype(np.float32)
        for d in (np.diff(g, axis=0), np.ascontiguousarray(np.diff(g, axis=1).T)):
            if d.shape[0] < 3 or d.shape[1] < 1:
                continue
            med = np.median(np.abs(d), axis=1)
            stat = np.maximum(med, np.abs(d.mean(axis=1, dtype=np.float64)))
            k = min(nb, d.shape[0] - 1)
            win = np.lib.stride_tricks.sliding_window_view(np.pad(med, k, mode="reflect"), 2 * k + 1)
            base = np.median(np.delete(win, k, axis=1), axis=1)
            best = max(best, float((stat / (base + floor)).max()))
    return best


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkaer's fast noise estimate (grey levels)."""
    import cv2

    if min(grey.shape) < 3:
        return 0.0
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    r = cv2.filter2D(grey, cv2.CV_64F, k, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * np.abs(r).mean() / 6.0)


def _laplacian_var(grey: np.ndarray) -> float:
    import cv2

    return float(cv2.Laplacian(grey, cv2.CV_64F, ksize=3).var())


def _stats(rgb: np.ndarray) -> dict[str, float]:
    g = _grey(rgb)
    a = rgb.astype(np.float64)
    rg, yb = a[..., 0] - a[..., 1], 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    colourful = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    hist = np.bincount(np.clip(g, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    gi = np.clip(g, 0, 255)
    lo, hi = int(gi.min()), int(gi.max())
    span = hist[lo:hi + 1]
    h, w = g.shape
    lv = [_laplacian_var(q) for q in (g[: h // 2, : w // 2], g[: h // 2, w // 2:], g[h // 2:, : w // 2], g[h // 2:, w // 2:])
          if q.size >= 9 and min(q.shape) >= 3]
    lv_log = [math.log10(1.0 + v) for v in lv] or [0.0]
    return {
        "sharpness": min(1.0, math.log10(1.0 + _laplacian_var(g)) / 3.5) if min(g.shape) >= 3 else 0.0,
        "contrast": min(1.0, g.std() / 64.0),
        "exposure": 1.0 - abs(g.mean() - 127.5) / 127.5,
        "clipped": float(((g < 5) | (g > 250)).mean()),
        "entropy": float(-(p * np.log2(p)).sum() / 8.0),
        "colourfulness": min(1.0, colourful / 80.0),
        "gaps": float((span == 0).mean()) if span.size > 2 else 0.0,
        "sharpness_uniformity": min(lv_log) / max(lv_log) if max(lv_log) > 0 else 1.0,
        "thirds": _thirds(g),
    }


def _thirds(g: np.ndarray) -> float:
    """1 - distance of the gradient-energy centroid to the nearest rule-of-thirds point (norm.)."""
    gy, gx = np.gradient(g)
    e = np.hypot(gx, gy)
    s = e.sum()
    if s <= 0:
        return 0.5
    h, w = g.shape
    cy = float((e.sum(axis=1) * np.arange(h)).sum() / s) / max(h - 1, 1)
    cx = float((e.sum(axis=0) * np.arange(w)).sum() / s) / max(w - 1, 1)
    d = min(math.hypot(cx - tx, cy - ty) for tx in (1 / 3, 2 / 3) for ty in (1 / 3, 2 / 3))
    return max(0.0, 1.0 - d / 0.4714)  # 0.4714 = distance of a corner to the nearest point


def _level(x: float, lo: int, hi: int) -> int:
    """Map x in [0, 1] to an integer level in [lo, hi]."""
    x = min(1.0, max(0.0, float(x)))
    return int(lo + math.floor(x * (hi - lo) + 0.5))


def _artifact_stats(rgb: np.ndarray) -> dict[str, float]:
    return {"blockiness": blockiness(_grey(rgb)), "discontinuity": line_discontinuity(rgb)}


#: severity thresholds of the heuristic artifact judge: lower bounds of severity 1, 2, 3 for
#: each statistic. Calibrated on 768-px patches of ``curation.synth.generate_photo`` (seeds
#: 0-5): clean, JPEG q90 and Lanczos-2x patches stay below severity 1 (blockiness <= 1.26,
#: discontinuity <= 1.40); a +20 grey-level shift of half the patch scores 3.2-4.0 (flagged),
#: a blurred tile 1.75-2.0 (severity 1), JPEG q8 blocking >= 3.0 (severity 3).
ARTIFACT_THRESHOLDS = {"blockiness": (1.3, 1.6, 2.2), "discontinuity": (1.6, 2.2, 3.5)}


def heuristic_artifact(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """Region / instance artifact heuristic on the first image: severity from the worse of
    blockiness (8-px grid) and straight-line discontinuity (seams, shifted tiles); flagged at
    severity >= 2."""
    st = _artifact_stats(images[0])
    sev = 0
    for name, bounds in ARTIFACT_THRESHOLDS.items():
        sev = max(sev, sum(st[name] >= b for b in bounds))
    what = [n for n, b in ARTIFACT_THRESHOLDS.items() if st[n] >= b[1]]
    reason = ("heuristic: " + (", ".join(what) + " above threshold" if what else "clean")
              + f" (blockiness={st['blockiness']:.3f}, discontinuity={st['discontinuity']:.3f})")
    return {"artifact": sev >= 2, "severity": int(sev), "reason": reason, "heuristic_stats": st}


def heuristic_aesthetics(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """ArtiMuse-shaped answer from image statistics (NOT an aesthetic model): dimensions 1-10
    from rule-of-thirds centroid, entropy, sharpness and exposure, colourfulness, contrast;
    overall = 10 x their mean."""
    s = _stats(images[0])
    dims = {
        "composition_design": _level(s["thirds"], 1, 10),
        "visual_elements_structure": _level(s["entropy"], 1, 10),
        "technical_execution": _level(0.5 * s["sharpness"] + 0.5 * s["exposure"] * (1 - s["clipped"]), 1, 10),
        "originality_creativity": _level(0.5 * s["colourfulness"] + 0.5 * s["entropy"], 1, 10),
        "theme_communication": _level(s["contrast"], 1, 10),
        "emotion_viewer_response": _level(s["colourfulness"], 1, 10),
    }
    overall = round(10.0 * sum(dims.values()) / len(dims), 1)
    return {"overall": overall, **dims, "analysis": "heuristic: image statistics, not an aesthetic model",
            "heuristic_stats": s}


def heuristic_msfi_global(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """MSFI global-shaped answer from image statistics (NOT a judge): SC-global from sharpness,
    PI from contrast, LC from exposure and clipping, CH from histogram gaps (banding)."""
    s = _stats(images[0])
    return {
        "SC-global": _level(s["sharpness"], 1, 5),
        "PI": _level(s["contrast"], 1, 5),
        "LC": _level(s["exposure"] * (1 - min(1.0, 5 * s["clipped"])), 1, 5),
        "CH": _level(1 - s["gaps"], 1, 5),
        "reasoning": "heuristic: image statistics, not an MLLM judge",
    }


def heuristic_msfi_local(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """MSFI local-shaped answer for the patch (first image) from statistics (NOT a judge): NGE
    from the noise estimate, GA from blockiness, TF from sharpness, MGC from line
    discontinuity, SC-local from the uniformity of sharpness over the quadrants."""
    rgb = images[0]
    g = _grey(rgb)
    s = _stats(rgb)
    a = _artifact_stats(rgb)
    return {
        "NGE": _level(1 - min(1.0, noise_sigma(g) / 12.0), 1, 5),
        "GA": _level(1 - min(1.0, (a["blockiness"] - 1.0) / 1.2), 1, 5),
        "TF": _level(s["sharpness"], 1, 5),
        "MGC": _level(1 - min(1.0, (a["discontinuity"] - 1.0) / 2.5), 1, 5),
        "SC-local": _level(s["sharpness_uniformity"], 1, 5),
        "reasoning": "heuristic: image statistics, not an MLLM judge",
    }


def heuristic_ics(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """ICS-shaped answer from image statistics only (NOT a judge; it does not read the
    caption): IEV from entropy, AAA from colourfulness, SRA from contrast."""
    s = _stats(images[0])
    return {
        "reasoning": "heuristic: image statistics only, the caption is not read",
        "IEV": _level(s["entropy"], 1, 10),
        "AAA": _level(s["colourfulness"], 1, 10),
        "SRA": _level(s["contrast"], 1, 10),
    }


# =============================================================================================
# built-in tasks
# =============================================================================================
def _msfi_request() -> Mapping[str, Any]:
    from evaluation.metrics.msfi import JUDGE_REQUEST

    return JUDGE_REQUEST


def _ics_request() -> Mapping[str, Any]:
    from evaluation.metrics.ics import JUDGE_REQUEST

    return JUDGE_REQUEST


_ARTIFACT_FIELDS = (Field("artifact", "bool"), Field("severity", "int", 0, 3), Field("reason", "str"))
_REASONING = Field("reasoning", "str", required=False)

register_task(TaskSpec(
    "region_artifact", "region_artifact.md", _ARTIFACT_FIELDS, (1, 1), None, _artifact_consistency,
    heuristic_artifact, description="paper 3.1.4: one 768-px patch of an SR image; noticeable artifacts?"))
register_task(TaskSpec(
    "instance_artifact", "instance_artifact.md", _ARTIFACT_FIELDS, (1, 2), None, _artifact_consistency,
    heuristic_artifact, description="paper 3.1.4: an instance crop (+ optional highlighted full image)"))
register_task(TaskSpec(
    "artimuse_aesthetics", "artimuse_aesthetics.md",
    (Field("overall", "number", 0, 100),
     *(Field(k, "int", 1, 10) for k in ("composition_design", "visual_elements_structure", "technical_execution",
                                        "originality_creativity", "theme_communication", "emotion_viewer_response")),
     Field("analysis", "str", required=False)),
    (1, 1), None, None, heuristic_aesthetics,
    description="paper 3.1.2 / 3.1.5: ArtiMuse-style overall score 0-100 and its six dimensions"))
register_task(TaskSpec(
    "msfi_global", "msfi_global.md",
    (*(Field(k, "int", 1, 5) for k in ("SC-global", "PI", "LC", "CH")), _REASONING),
    (1, 1), _msfi_request, None, heuristic_msfi_global, description="appendix F.2: MSFI global view"))
register_task(TaskSpec(
    "msfi_local", "msfi_local.md",
    (*(Field(k, "int", 1, 5) for k in ("NGE", "GA", "TF", "MGC", "SC-local")), _REASONING),
    (2, 2), _msfi_request, None, heuristic_msfi_local, description="appendix F.2: MSFI patch + global view"))
register_task(TaskSpec(
    "ics", "ics.md", (*(Field(k, "int", 1, 10) for k in ("IEV", "AAA", "SRA")), _REASONING),
    (1, 1), _ics_request, None, heuristic_ics, description="appendix F.3: ICS against the long caption"))


# =============================================================================================
# registry and config
# =============================================================================================
#: VLM backends by name: ``vllm`` (HTTP, OpenAI-compatible) and ``heuristic`` (offline)
VLM_BACKENDS: Registry = Registry("VLM backend")
VLM_BACKENDS.register(BACKEND_VLLM, HttpVLMClient)
VLM_BACKENDS.register(BACKEND_HEURISTIC, HeuristicVLMClient)

#: accepted config keys and their defaults (``create_vlm_client``)
CONFIG_DEFAULTS: dict[str, Any] = {
    "backend": "auto",           # auto: endpoint set -> vllm, else heuristic
    "endpoint": None,            # e.g. http://vllm-judge:8000
    "model": None,               # served model name (required for vllm)
    "api_key_env": None,         # name of the env variable holding the API key
    "temperature": None,         # None: each task's setting (0.1 everywhere)
    "max_tokens": None,          # None: each task's setting
    "thinking": None,            # None: each task's setting (off everywhere)
    "max_concurrency": 4,
    "timeout_s": 120.0,
    "retries": 3,
    "schema_retries": 2,
    "backoff_s": 1.0,
    "backoff_max_s": 30.0,
    "cache_dir": None,
    "prompt_dir": None,
    "prompts": None,             # {task: prompt file} overrides
    "image_format": "jpeg",
    "jpeg_quality": 95,
    "seed": None,                # jitter generator seed (tests)
}


def create_vlm_client(cfg_section: Mapping[str, Any] | None = None, *, base_dir: str | os.PathLike | None = None,
                      **overrides: Any) -> VLMClient:
    """Create the client a config section describes (a plain dict; keys of
    :data:`CONFIG_DEFAULTS`, unknown keys raise ``ValueError``). ``overrides`` win over the
    section. A relative ``cache_dir`` is resolved against ``base_dir`` (the data root) when
    given, else against the working directory.

    Backend: ``backend: auto`` (default) -> ``vllm`` when ``endpoint`` is set, else
    ``heuristic``. ``backend: vllm`` without an endpoint or a model raises ``ValueError``.
    """
    cfg = dict(cfg_section or {})
    cfg.update(overrides)
    unknown = sorted(set(cfg) - set(CONFIG_DEFAULTS))
    if unknown:
        raise ValueError(f"VLM client: unknown config key(s) {unknown}; accepted: {sorted(CONFIG_DEFAULTS)}")
    c = {**CONFIG_DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    if c.get("cache_dir") and base_dir is not None and not Path(c["cache_dir"]).is_absolute():
        c["cache_dir"] = str(Path(base_dir) / c["cache_dir"])
    backend = c.pop("backend") or "auto"
    endpoint, model, api_key_env = c.pop("endpoint"), c.pop("model"), c.pop("api_key_env")
    if backend == "auto":
        backend = BACKEND_VLLM if endpoint else BACKEND_HEURISTIC
    factory = VLM_BACKENDS.get(backend)
    if backend == BACKEND_VLLM:
        if not endpoint or not model:
            raise ValueError("VLM client: backend 'vllm' needs 'endpoint' and 'model'")
        return factory(endpoint, model=model, api_key_env=api_key_env, **c)
    if backend == BACKEND_HEURISTIC:
        return factory(**c)
    return factory(endpoint=endpoint, model=model, api_key_env=api_key_env, **c)
