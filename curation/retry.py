"""Bounded retries with exponential backoff for calls to a service that may be briefly away (an
S3 server or a database restarting, a dropped connection): no Dagster here.

Classifiers: :func:`is_transient_network_error` (S3 / HTTP), :func:`is_database_unavailable`
(PostgreSQL or sqlite behind Dagster's run storage or MLflow's backend store).

:func:`call_with_retry` runs ``fn`` until it returns, raises an error that is not transient, or
the policy's budget is spent -- whichever comes first -- and then raises
:class:`ServiceUnavailable`, whose message is one line: what was being done, where, how many
attempts over how many seconds, and the last error (its type and first line).

The budget is both a number of attempts and a wall-clock deadline (seconds, measured with
``time.monotonic``), so a server that never comes back costs at most ``deadline_s`` plus one
attempt's own timeout. Delays: ``backoff_s * 2**k`` capped at ``backoff_max_s``, times a random
factor in [0.5, 1] (jitter, so parallel workers do not retry in lock step).
"""

from __future__ import annotations

import logging
import random
import re
import socket
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class ServiceUnavailable(RuntimeError):
    """A service could not be reached within the retry budget (the message is one line)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry budget of one operation (values not in paper: operational settings).

    * ``attempts`` -- tries in all (>= 1);
    * ``backoff_s`` / ``backoff_max_s`` -- first delay and cap between tries, seconds;
    * ``deadline_s`` -- no new try starts after this many seconds from the first one.
    """

    attempts: int = 10
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    deadline_s: float = 120.0

    def __post_init__(self):
        if int(self.attempts) < 1:
            raise ValueError("RetryPolicy.attempts must be >= 1")
        for k in ("backoff_s", "backoff_max_s", "deadline_s"):
            v = float(getattr(self, k))
            if not v >= 0 or v == float("inf"):
                raise ValueError(f"RetryPolicy.{k} must be a finite number >= 0, got {v!r}")

    def delay(self, k: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``k``-th failure (k = 0 for the first)."""
        r = (rng or random).random()
        return min(self.backoff_max_s, self.backoff_s * (2 ** k)) * (0.5 + 0.5 * r)


NO_RETRY = RetryPolicy(attempts=1, backoff_s=0.0, backoff_max_s=0.0, deadline_s=0.0)


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters): for one-line failures."""
    reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps the real error
    if isinstance(reason, BaseException):
        exc = reason
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:200]


def is_transient_network_error(exc: BaseException) -> bool:
    """Connection refused/reset/dropped, timeouts, and the HTTP 5xx / throttling answers of S3."""
    if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError)):
        return True
    try:
        import urllib3.exceptions as u3

        if isinstance(exc, (u3.MaxRetryError, u3.ProtocolError, u3.NewConnectionError, u3.TimeoutError,
                            u3.ProxyError, u3.SSLError)):
            return True
    except ImportError:  # pragma: no cover - urllib3 comes with minio
        pass
    try:
        from minio.error import InvalidResponseError, S3Error, ServerError

        if isinstance(exc, ServerError):  # a 5xx without an S3 error body
            return True
        if isinstance(exc, InvalidResponseError):  # a proxy / half-started server answering HTML
            return True
        if isinstance(exc, S3Error):
            return exc.code in _TRANSIENT_S3_CODES
    except ImportError:  # pragma: no cover
        pass
    return False


_TRANSIENT_S3_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                                 "RequestTimeTooSkewed", "XMinioServerNotInitialized", "OperationAborted"})


#: what a database that is restarting, down or busy says (psycopg2 / SQLAlchemy / sqlite / Dagster)
_DB_DOWN = re.compile(
    r"Connection refused|could not connect|server closed the connection|terminating connection|"
    r"the database system is (?:starting up|shutting down|in recovery mode)|connection (?:reset|timed out)|"
    r"too many retries for DB connection|SSL SYSCALL error|database is locked|Max retries exceeded|"
    r"ConnectionError|RemoteDisconnected|Temporary failure in name resolution", re.I)


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_database_unavailable(exc: BaseException) -> bool:
    """The error (or one in its cause chain) says the database or tracking server could not be
    reached or dropped the connection -- not that the query or the data was wrong."""
    for e in _chain(exc):
        name = type(e).__name__
        if name in ("OperationalError", "InterfaceError", "DisconnectionError", "DagsterPostgresException") \
                and _DB_DOWN.search(str(e)):
            return True
        if isinstance(e, (ConnectionError, socket.timeout)):
            return True
        if name in ("MlflowException", "RestException", "DagsterUserCodeExecutionError",
                    "DagsterExecutionStepExecutionError") and _DB_DOWN.search(str(e)):
            return True
    return False


def call_with_retry(fn: Callable[[], T], what: str, policy: RetryPolicy = RetryPolicy(), *,
                    transient: Callable[[BaseException], bool] = is_transient_network_error,
                    sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> T:
    """``fn()``, retried on transient errors within ``policy``; :class:`ServiceUnavailable` (one
    line, chained to the last error) when the budget is spent. Errors that are not transient
    propagate unchanged at once."""
    t0 = time.monotonic()
    k = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not transient(exc):
                raise
            k += 1
            elapsed = time.monotonic() - t0
            wait = policy.delay(k - 1, rng)
            if k >= policy.attempts or elapsed + wait > policy.deadline_s:
                raise ServiceUnavailable(f"{what}: gave up after {k} attempt{'s' if k > 1 else ''} over "
                                         f"{elapsed:.1f} s: {short_error(exc)}") from exc
            log.warning("%s: attempt %d failed (%s); retrying in %.1f s", what, k, short_error(exc), wait)
            sleep(wait)
