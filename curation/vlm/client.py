"""The VLM client: bounded concurrency, retries with backoff, schema retries, the answer cache.

Library only (no Dagster). :class:`VLMClient` is the interface; two backends implement it,
registered by name in :data:`VLM_BACKENDS` (a :class:`curation.registry.Registry`):

* ``vllm`` (:class:`HttpVLMClient`) -- the OpenAI-compatible chat-completions API that
  ``vllm serve`` exposes: ``POST {endpoint}/v1/chat/completions``, images as base64 data URLs
  (images first, in the order given, then the prompt text; a task with ``text_first`` sends the
  text first, then the images), an optional API key read from the
  environment variable named by ``api_key_env`` and sent as ``Authorization: Bearer ...``
  (never logged, never stored in a result or the cache);
* ``heuristic`` (:class:`curation.vlm.heuristic.HeuristicVLMClient`) -- the deterministic
  offline backend, used only when no endpoint is configured at all.

Request life cycle (:meth:`VLMClient.run`):

1. **Validate** every request before anything is sent (unknown task, wrong number of images,
   a prompt placeholder without a value -> ``ValueError``: caller bugs, not judge failures).
2. **Cache** (:mod:`curation.vlm.cache`): a hit is returned with ``cached=True, attempts=0``
   and nothing is sent. ``image_id`` must identify the exact pixels sent (use
   :func:`patch_image_id` for crops). Identical requests in one batch are sent once.
3. **Send**, at most ``max_concurrency`` requests in flight per client (a thread pool plus a
   semaphore held only while a request is on the wire), each with a ``timeout_s`` timeout
   (connect at most 10 s; the whole answer, not each read, must arrive within ``timeout_s``).
   Connect errors, timeouts, dropped connections, HTTP 408/429/5xx are retried up to
   ``retries`` times with exponential backoff and jitter (``backoff_s * 2**k``, capped at
   ``backoff_max_s``, multiplied by a random factor in [0.5, 1]; a ``Retry-After`` header is
   honoured up to the cap). Other 4xx answers are not retried.
4. **Parse and validate** the answer (:func:`curation.vlm.tasks.parse_judge_json`, then the
   task's schema, :class:`~curation.vlm.tasks.TaskSpec`). A malformed or out-of-schema answer
   (or one cut off by ``max_tokens``) is asked again up to ``schema_retries`` times -- except
   for a task with ``reask=False``, whose answer is read once as it comes (a truncated answer
   parsed as it is, ``truncated=True`` in its result).
5. **Record**: a :class:`JudgeResult` per request, in request order, with ``status`` ``"ok"``
   or ``"judge_failed"`` (with the reason). A failure is never a pass: callers must test
   ``result.ok`` before reading ``result.answer``.

Request settings come from the task (:meth:`TaskSpec.request_settings`); the OpenAI-client key
``extra_body`` is merged into the request body. Config ``temperature`` / ``max_tokens`` /
``thinking`` override every task when set (null keeps the task's settings).
"""

from __future__ import annotations

import abc
import base64
import concurrent.futures as cf
import copy
import dataclasses
import io
import json
import os
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curation.registry import Registry
from curation.vlm.cache import VLMCache, cache_key
from curation.vlm.prompts import DEFAULT_PROMPT_DIR, Prompt, load_prompt
from curation.vlm.tasks import TaskSpec, get_task

OK = "ok"
JUDGE_FAILED = "judge_failed"
BACKEND_VLLM = "vllm"
BACKEND_HEURISTIC = "heuristic"


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
    * ``prompt`` -- a prompt file for this request only (else the client's file for the task);
    * ``text`` -- the prompt text exactly as it is to be sent, rendered by the caller from its
      own prompt source (e.g. a reference implementation's prompt builders); ``prompt`` then
      names that source file, whose sha256 is recorded as ``prompt_hash`` (``variables`` are
      not applied to it, only kept with the request).
    """

    task: str
    image_id: str
    images: Sequence[ImageInput] = ()
    variables: Mapping[str, Any] = field(default_factory=dict)
    prompt: str | os.PathLike | None = None
    text: str | None = None


@dataclass
class JudgeResult:
    """The outcome of one request. ``status`` is ``"ok"`` or ``"judge_failed"``; ``answer`` is
    the validated answer dict (None on failure), ``reason`` says why it failed; ``truncated``:
    the answer was cut off at ``max_tokens`` and read as it is (only tasks with ``reask=False``
    accept such an answer)."""

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
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (for manifests and audit pages)."""
        return dataclasses.asdict(self)


def patch_image_id(image_id: str, box: Sequence[int], tag: str = "") -> str:
    """The id of a crop ``box = (x, y, w, h)`` of ``image_id``: ``"<id>@<tag>:x,y,w,h"``."""
    return f"{image_id}@{tag}:" + ",".join(str(int(v)) for v in box)


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
                                              hit["usage"], hit["raw"], bool(hit.get("truncated")))
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
        if req.text is not None and (req.prompt is None or not isinstance(req.text, str) or not req.text):
            raise ValueError(f"{req.task}: a request with its own text needs a non-empty string and the prompt "
                             f"file it was built from ({req.image_id})")
        path = self._prompt_path(spec, req.prompt)
        pk = str(path)
        if pk not in prompts:  # read once per run: an edited file is seen by the next run
            prompts[pk] = load_prompt(path)
        prompt = prompts[pk]
        text = req.text if req.text is not None else prompt.render(req.variables)
        settings = self.request_settings(spec)
        key = cache_key(req.image_id, spec.name, self.model, prompt.sha256, text, settings)
        return _Prepared(req, spec, prompt, text, settings, key)

    def _result(self, p: _Prepared, status: str, answer: dict | None, reason: str | None, latency: float,
                attempts: int, cached: bool, usage: dict | None = None, raw: str | None = None,
                truncated: bool = False) -> JudgeResult:
        return JudgeResult(task=p.spec.name, image_id=p.req.image_id, status=status, answer=answer, reason=reason,
                           model=self.model, backend=self.backend, prompt_path=p.prompt.path,
                           prompt_hash=p.prompt.sha256, latency_s=round(latency, 6), attempts=attempts,
                           cached=cached, cache_key=p.key, request=copy.deepcopy(p.request), usage=usage, raw=raw,
                           truncated=truncated)

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
            if out.truncated and p.spec.reask:
                answer, problems = None, ["answer cut off at max_tokens"]
            elif out.text is None and out.reason:
                answer, problems = None, [out.reason]
            else:
                answer, problems = p.spec.validate(out.text)
            if not problems:
                return self._result(p, OK, answer, None, time.perf_counter() - t0, attempts, False, usage, out.text,
                                    truncated=out.truncated)
            invalid += 1
            if invalid > (self.schema_retries if p.spec.reask else 0):
                return self._result(p, JUDGE_FAILED, None,
                                    f"invalid answer after {attempts} attempts: " + "; ".join(problems),
                                    time.perf_counter() - t0, attempts, False, usage, last_raw)

    @abc.abstractmethod
    def _attempt(self, p: _Prepared) -> _Outcome:
        """One call of the backend."""


_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _AnswerTooSlow(Exception):
    """The answer kept coming but did not complete within the client's ``timeout_s``."""


def json_headers(api_key_env: str | None, who: str) -> dict[str, str]:
    """JSON request headers, with ``Authorization: Bearer <key>`` read now from the variable named
    ``api_key_env`` (the key itself is never configured, logged or recorded)."""
    headers = {"Content-Type": "application/json"}
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"{who}: environment variable {api_key_env!r} (api_key_env) is not set")
        headers["Authorization"] = f"Bearer {key}"
    return headers


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
        headers = json_headers(api_key_env, "VLM client")
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
        """The chat-completions request body of a prepared request: the images in the order
        given, then the text (a ``text_first`` task: the text, then the images)."""
        content: list[dict] = [
            {"type": "image_url", "image_url": {"url": image_data_url(im, self.image_format, self.jpeg_quality)}}
            for im in p.req.images
        ]
        text = {"type": "text", "text": p.text}
        content = [text, *content] if p.spec.text_first else [*content, text]
        return {"model": self.model, "messages": [{"role": "user", "content": content}], **p.request}

    def request_body(self, request: VLMRequest) -> dict:
        """The body :meth:`run` would send for ``request`` (validated the same way; nothing is sent)."""
        return self.body(self._prepare(request, {}))

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
                resp = self._post(data)
        except httpx.TimeoutException as e:
            return _Outcome("retry", reason=f"timeout: {type(e).__name__} after {self.timeout_s:g} s")
        except httpx.TransportError as e:  # connect errors, resets, dropped connections
            return _Outcome("retry", reason=f"transport: {type(e).__name__}: {e}")
        except _AnswerTooSlow as e:
            return _Outcome("retry", reason=f"timeout: {e}")
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

    def _post(self, data: bytes):
        """POST ``data``; the whole answer must arrive within ``timeout_s`` (httpx's read timeout is
        per read: a server trickling bytes would never trip it). A fully read ``httpx.Response``."""
        import httpx

        deadline = time.monotonic() + self.timeout_s
        with self._http.stream("POST", self.url, content=data) as resp:
            chunks = []
            for chunk in resp.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise _AnswerTooSlow(f"answer not complete after {self.timeout_s:g} s "
                                         f"({sum(map(len, chunks))} bytes so far)")
            return httpx.Response(resp.status_code, headers=resp.headers, content=b"".join(chunks),
                                  request=resp.request)

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


# =============================================================================================
# registry and config
# =============================================================================================
#: VLM backends by name: ``vllm`` (HTTP, OpenAI-compatible) and ``heuristic`` (offline; it
#: registers itself from :mod:`curation.vlm.heuristic`)
VLM_BACKENDS: Registry = Registry("VLM backend")
VLM_BACKENDS.register(BACKEND_VLLM, HttpVLMClient)

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
    ``heuristic``. ``backend: vllm`` without an endpoint or a model raises ``ValueError``, and
    so does ``backend: heuristic`` with an endpoint: the offline backend is used only when no
    endpoint is configured at all, so a configured endpoint that cannot be reached gives
    ``judge_failed`` results, never heuristic answers.
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
    if backend == BACKEND_HEURISTIC and endpoint:
        raise ValueError(f"VLM client: an endpoint is configured ({endpoint}); the heuristic backend is used only "
                         "when none is")
    factory = VLM_BACKENDS.get(backend)
    if backend == BACKEND_VLLM:
        if not endpoint or not model:
            raise ValueError("VLM client: backend 'vllm' needs 'endpoint' and 'model'")
        return factory(endpoint, model=model, api_key_env=api_key_env, **c)
    if backend == BACKEND_HEURISTIC:
        return factory(**c)
    return factory(endpoint=endpoint, model=model, api_key_env=api_key_env, **c)

def use_config(cfg: Any, use: str, *, endpoint: str | None = None, api_key_env: str | None = None) -> dict[str, Any]:
    """The client config of one VLM use (``corpus``, ``bench``, ``artimuse``, ...): the section
    ``judges.<use>`` of the resolved config ``cfg`` (model, prompts, request settings), with the
    deployment's ``endpoint`` and ``api_key_env`` (the variable's *name*) overriding the
    section's when given. This is the one configuration path of every VLM use; the Dagster
    resource ``vlm`` (``orchestration.resources.VLMEndpoint``) supplies the two overrides."""
    section = cfg.get(f"judges.{use}") if cfg is not None else None
    if section is None:
        raise KeyError(f"no config section judges.{use}")
    out = copy.deepcopy(dict(section))
    if endpoint:
        out["endpoint"] = endpoint
    if api_key_env:
        out["api_key_env"] = api_key_env
    return out
