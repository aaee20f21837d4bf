"""A local OpenAI-compatible chat-completions server for testing the VLM client (real HTTP).

``VLMTestServer`` listens on 127.0.0.1 on an ephemeral port, serves ``POST
/v1/chat/completions`` (and ``GET /v1/models``) from a background thread, validates request
bodies the way vLLM does, and answers according to a script:

* **tagged scripts**: a request whose text contains ``[[case:NAME]]`` takes the next behaviour
  of ``server.script("NAME", b1, b2, ...)``; once the list is used up the last behaviour
  repeats;
* **queue**: otherwise the next behaviour of ``server.queue(b1, b2, ...)`` (first in, first
  out), then
* **default**: ``ok()`` with :func:`default_answer` (a valid answer for the built-in task the
  prompt text names).

Behaviours (module functions): ``ok(content)``, ``slow(delay_s, content)``, ``trickle(interval_s,
content)`` (the body one byte per ``interval_s``), ``status(code,
message, retry_after=None)``, ``malformed(text)``, ``reset()`` (the connection is aborted
with a TCP RST before any response), ``truncated(content)`` (``finish_reason="length"``).
``content`` may be a string, a dict (sent as ``<json>...</json>``) or a callable
``body -> str``.

Validation (as vLLM's OpenAI server): JSON body; ``model`` equal to the served name (else 404
``NotFoundError``); ``messages`` a non-empty list of ``{role, content}`` with content a string
or a list of ``text`` / ``image_url`` parts; every ``image_url.url`` either an ``http(s)``
URL (refused here: no network) or a ``data:image/...;base64,`` URL that decodes to an image
Pillow can open; ``temperature`` >= 0, ``max_tokens`` a positive int, ``response_format.type``
in text / json_object / json_schema, ``chat_template_kwargs`` an object. Invalid -> 400
``BadRequestError``. With ``api_key`` set, a missing or wrong ``Authorization: Bearer`` -> 401.

Records: ``requests`` (parsed bodies with the headers, the tag and the decoded image sizes),
``n_requests``, ``in_flight``, ``max_in_flight`` (a request counts from the moment its body is
read until just before its response is written; ``reset_stats()`` starts a new count). ``stop()`` shuts it down; it also stops itself
after ``lifetime_s`` seconds.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_TAG = re.compile(r"\[\[case:([A-Za-z0-9_.-]+)\]\]")


@dataclass
class Behaviour:
    kind: str  # ok | slow | trickle | status | malformed | reset | truncated
    content: Any = None
    delay: float = 0.0
    code: int = 200
    message: str = ""
    retry_after: float | None = None


def ok(content: Any = None) -> Behaviour:
    return Behaviour("ok", content)


def slow(delay_s: float, content: Any = None) -> Behaviour:
    return Behaviour("slow", content, delay=float(delay_s))


def status(code: int, message: str = "scripted error", retry_after: float | None = None) -> Behaviour:
    return Behaviour("status", code=int(code), message=message, retry_after=retry_after)


def trickle(interval_s: float, content: Any = None) -> Behaviour:
    """A 200 answer whose body is sent one byte every ``interval_s`` seconds (headers at once)."""
    return Behaviour("trickle", content, delay=float(interval_s))


def malformed(text: str = "I think the image looks fine, no artifacts!") -> Behaviour:
    return Behaviour("malformed", text)


def reset() -> Behaviour:
    return Behaviour("reset")


def truncated(content: Any = '<json>{"artifact": false, "sev') -> Behaviour:
    return Behaviour("truncated", content)


def default_answer(body: dict) -> str:
    """A valid answer for the built-in task the request's text belongs to."""
    text = request_text(body)
    if '"SC-global"' in text:
        ans = {"SC-global": 4, "PI": 5, "LC": 4, "CH": 5, "reasoning": "test"}
    elif '"SC-local"' in text:
        ans = {"NGE": 5, "GA": 4, "TF": 4, "MGC": 5, "SC-local": 5, "reasoning": "test"}
    elif '"IEV"' in text:
        ans = {"reasoning": "test", "IEV": 9, "AAA": 8, "SRA": 7}
    elif "composition_design" in text:
        ans = {"overall": 61.5, "composition_design": 6, "visual_elements_structure": 7, "technical_execution": 6,
               "originality_creativity": 5, "theme_communication": 6, "emotion_viewer_response": 7, "analysis": "test"}
    else:
        ans = {"artifact": False, "severity": 0, "reason": "clean"}
    return "<json>\n" + json.dumps(ans) + "\n</json>"


def request_text(body: dict) -> str:
    parts = []
    for m in body.get("messages", []):
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(parts)


class _BadRequest(Exception):
    def __init__(self, code: int, message: str, etype: str = "BadRequestError") -> None:
        super().__init__(message)
        self.code, self.message, self.etype = code, message, etype


def _decode_image(url: str) -> tuple[int, int]:
    from PIL import Image

    if url.startswith(("http://", "https://")):
        raise _BadRequest(400, "image URL fetching is disabled on this test server")
    m = re.match(r"data:(image/[a-zA-Z0-9.+-]+);base64,(.*)\Z", url, re.DOTALL)
    if not m:
        raise _BadRequest(400, "Invalid image_url: expected a data:image/...;base64 URL")
    try:
        data = base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise _BadRequest(400, "Invalid base64 image data") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.size
    except Exception as e:
        raise _BadRequest(400, f"Failed to load image: {type(e).__name__}") from None


def validate_body(body: Any, served_model: str) -> list[tuple[int, int]]:
    """vLLM-like validation; returns the decoded image sizes. Raises _BadRequest."""
    if not isinstance(body, dict):
        raise _BadRequest(400, "request body must be a JSON object")
    if body.get("model") != served_model:
        raise _BadRequest(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _BadRequest(400, "messages must be a non-empty list")
    sizes = []
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool", "developer"):
            raise _BadRequest(400, f"invalid message: {str(m)[:80]}")
        c = m.get("content")
        if isinstance(c, str):
            continue
        if not isinstance(c, list) or not c:
            raise _BadRequest(400, "message content must be a string or a non-empty list of parts")
        for part in c:
            if not isinstance(part, dict):
                raise _BadRequest(400, "content part must be an object")
            t = part.get("type")
            if t == "text":
                if not isinstance(part.get("text"), str):
                    raise _BadRequest(400, "text part without text")
            elif t == "image_url":
                iu = part.get("image_url")
                if not isinstance(iu, dict) or not isinstance(iu.get("url"), str):
                    raise _BadRequest(400, "image_url part without url")
                sizes.append(_decode_image(iu["url"]))
            else:
                raise _BadRequest(400, f"unknown content part type {t!r}")
    temp = body.get("temperature", 1.0)
    if isinstance(temp, bool) or not isinstance(temp, (int, float)) or temp < 0:
        raise _BadRequest(400, f"temperature must be a number >= 0, got {temp!r}")
    mt = body.get("max_tokens")
    if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
        raise _BadRequest(400, f"max_tokens must be a positive integer, got {mt!r}")
    rf = body.get("response_format")
    if rf is not None and (not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema")):
        raise _BadRequest(400, f"invalid response_format {rf!r}")
    ctk = body.get("chat_template_kwargs")
    if ctk is not None and not isinstance(ctk, dict):
        raise _BadRequest(400, "chat_template_kwargs must be an object")
    return sizes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections close themselves
    server: "_Server"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet
        pass

    def _done(self) -> None:
        """The request stops counting as in flight just before its response is written (the
        client may send its next request as soon as it has read this one)."""
        gen = getattr(self, "_counted", None)
        if gen is not None:
            self._counted = None
            owner = self.server.owner
            with owner.lock:
                owner.active[gen] -= 1

    def _send_json(self, code: int, obj: Any, headers: dict | None = None, trickle_s: float = 0.0) -> None:
        self._done()
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if trickle_s > 0:  # one byte at a time: every read is quick, the answer is not
            self.wfile.flush()
            for i in range(len(data)):
                if self.server.owner.stopping.wait(trickle_s):
                    return
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
            return
        self.wfile.write(data)

    def _error(self, code: int, message: str, etype: str, headers: dict | None = None) -> None:
        self._send_json(code, {"error": {"message": message, "type": etype, "param": None, "code": code}}, headers)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": self.server.owner.model, "object": "model"}]})
        else:
            self._error(404, "Not Found", "NotFoundError")

    def do_POST(self) -> None:
        owner = self.server.owner
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, "Not Found", "NotFoundError")
            return
        with owner.lock:
            gen = owner.generation
            owner.active[gen] = owner.active.get(gen, 0) + 1
            owner.max_in_flight = max(owner.max_in_flight, owner.active[gen])
            owner.n_requests += 1
        self._counted = gen
        try:
            self._chat(owner, raw)
        finally:
            self._done()

    def _chat(self, owner: "VLMTestServer", raw: bytes) -> None:
        if owner.api_key is not None and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            self._error(401, "Unauthorized", "AuthenticationError")
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self._error(400, "invalid JSON body", "BadRequestError")
            return
        try:
            sizes = validate_body(body, owner.model)
        except _BadRequest as e:
            owner.record(body, dict(self.headers), None, [], rejected=e.message)
            self._error(e.code, e.message, e.etype)
            return
        text = request_text(body)
        m = _TAG.search(text)
        tag = m.group(1) if m else None
        b = owner.next_behaviour(tag)
        owner.record(body, dict(self.headers), tag, sizes, behaviour=b.kind)
        if b.kind == "reset":
            self._done()
            # abort: SO_LINGER 0 makes close() send a TCP RST, no HTTP response at all
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            try:
                self.connection.close()
            except OSError:
                pass
            return
        if b.kind == "status":
            headers = {"Retry-After": f"{b.retry_after:g}"} if b.retry_after is not None else None
            etype = {429: "RateLimitError", 400: "BadRequestError"}.get(b.code, "InternalServerError")
            self._error(b.code, b.message, etype, headers)
            return
        if b.kind == "slow":
            if owner.stopping.wait(b.delay):
                return
        if b.kind == "malformed":
            content = b.content
        else:
            c = b.content if b.content is not None else owner.default
            if callable(c):
                c = c(body)
            content = c if isinstance(c, str) else "<json>" + json.dumps(c) + "</json>"
        self._send_json(200, trickle_s=b.delay if b.kind == "trickle" else 0.0, obj={
            "id": f"chatcmpl-test-{owner.n_requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": owner.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "length" if b.kind == "truncated" else "stop"}],
            "usage": {"prompt_tokens": 100 + 256 * len(sizes), "completion_tokens": len(content) // 4,
                      "total_tokens": 100 + 256 * len(sizes) + len(content) // 4},
        })

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):  # the socket was aborted on purpose
            pass

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "VLMTestServer"

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet
        pass


class VLMTestServer:
    """See the module docstring. ``with VLMTestServer() as srv: srv.base_url``."""

    def __init__(self, model: str = "test-vlm", api_key: str | None = None, lifetime_s: float = 300.0,
                 port: int = 0, fallback: Behaviour | None = None) -> None:
        self.model = model
        self.bind_port = int(port)  # 0: an ephemeral port
        self.fallback = fallback  # the behaviour when no script or queue applies (None: ok())
        self.api_key = api_key
        self.lifetime_s = lifetime_s
        self.default: Any = default_answer
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.requests: list[dict] = []
        self.n_requests = 0
        self.max_in_flight = 0
        # requests in flight per generation: reset_stats() starts a new one, so a handler still
        # sleeping for an earlier test's timed-out request does not count in the next test
        self.generation = 0
        self.active: dict[int, int] = {}
        self._scripts: dict[str, deque] = {}
        self._queue: deque = deque()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- scripting ----------------------------------------------------------------------------
    def script(self, tag: str, *behaviours: Behaviour) -> None:
        with self.lock:
            self._scripts[tag] = deque(behaviours)

    def queue(self, *behaviours: Behaviour) -> None:
        with self.lock:
            self._queue.extend(behaviours)

    def next_behaviour(self, tag: str | None) -> Behaviour:
        with self.lock:
            if tag is not None and tag in self._scripts:
                q = self._scripts[tag]
                return q.popleft() if len(q) > 1 else q[0]
            if self._queue:
                return self._queue.popleft()
            return self.fallback or ok()

    def record(self, body: Any, headers: dict, tag: str | None, sizes: list, **extra: Any) -> None:
        with self.lock:
            self.requests.append({"body": body, "headers": {k.lower(): v for k, v in headers.items()},
                                  "tag": tag, "image_sizes": sizes, **extra})

    def reset_stats(self) -> None:
        with self.lock:
            self.requests.clear()
            self.n_requests = 0
            self.max_in_flight = 0
            self.generation += 1
            self._scripts.clear()
            self._queue.clear()

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        with self.lock:
            return self.active.get(self.generation, 0)

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VLMTestServer:
        self._httpd = _Server(("127.0.0.1", self.bind_port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="vlm-test-server", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._timer is not None:
            self._timer.cancel()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> VLMTestServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(**kw: Any) -> VLMTestServer:
    return VLMTestServer(**kw).start()


__all__ = ["VLMTestServer", "Behaviour", "ok", "slow", "trickle", "status", "malformed", "reset", "truncated",
           "default_answer", "request_text", "validate_body", "start_server"]


def _main(argv: list[str] | None = None) -> None:
    """``python tests/vlm_server.py --port N [--behaviour ok|slow:S|trickle:S|garbage|status:CODE]``: the
    server in a process of its own (a fault test kills it: a real endpoint going down)."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model", default="test-vlm")
    ap.add_argument("--behaviour", default="ok")
    ap.add_argument("--lifetime", type=float, default=600.0)
    a = ap.parse_args(argv)
    kind, _, arg = a.behaviour.partition(":")
    fallback = {"ok": lambda: ok(), "slow": lambda: slow(float(arg)), "trickle": lambda: trickle(float(arg)),
                "garbage": lambda: malformed(arg or "<html>502 Bad Gateway</html> {not json"),
                "status": lambda: status(int(arg or 503))}[kind]()
    srv = VLMTestServer(model=a.model, lifetime_s=a.lifetime, port=a.port, fallback=fallback).start()
    print(srv.port, flush=True)
    srv.stopping.wait(a.lifetime + 1)


if __name__ == "__main__":
    _main()
