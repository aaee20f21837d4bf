"""The answer cache (sqlite) and its key.

The key is the sha256 of ``(image_id, task, model, prompt_hash, sha256(rendered prompt text),
request settings)``; the rendered text covers the request's variables (caption, patch
coordinates). Only valid answers are cached as answers; a failure goes to a separate
``failures`` table for audit and the next run asks the model again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from curation.vlm.client import JudgeResult


#: key under which the ``usage`` column also records that an answer was cut off at max_tokens
#: (``JudgeResult.truncated``; only ``reask=False`` tasks keep such answers)
_TRUNCATED = "uhrforge_truncated"


def _usage_json(r: JudgeResult) -> str | None:
    usage = dict(r.usage or {})
    if getattr(r, "truncated", False):
        usage[_TRUNCATED] = True
    return json.dumps(usage) if usage else None


def _sha256_text(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def cache_key(image_id: str, task: str, model: str, prompt_sha256: str, rendered: str,
              request: Mapping[str, Any]) -> str:
    """The cache key: sha256 over (image id, task, model, prompt hash, rendered text hash,
    request settings)."""
    payload = json.dumps([image_id, task, model, prompt_sha256, _sha256_text(rendered), dict(request)],
                         sort_keys=True, ensure_ascii=False)
    return _sha256_text(payload)


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
        usage = json.loads(row[2]) if row[2] else None
        truncated = bool(usage.pop(_TRUNCATED, False)) if isinstance(usage, dict) else False
        return {"answer": json.loads(row[0]), "raw": row[1], "usage": usage or None, "truncated": truncated}

    def put(self, r: JudgeResult) -> None:
        with self._lock:
            if r.ok:
                self._db.execute(
                    "INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (r.cache_key, r.image_id, r.task, r.model, r.backend, r.prompt_hash,
                     json.dumps(r.answer, ensure_ascii=False), r.raw, _usage_json(r),
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
