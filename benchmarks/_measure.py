"""What every benchmark measures the same way: peak and current RSS from ``/proc/self/status``,
and the best of ``repeat`` timed calls."""

from __future__ import annotations

import resource
import time
from typing import Callable


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - non-Linux
        pass
    return None


def peak_rss_mb() -> float:
    """This process image's RSS high-water mark, MiB: ``VmHWM`` (reset at exec, unlike
    ``ru_maxrss``, which a forked child inherits from its parent; used only off Linux)."""
    v = _status_mb("VmHWM")
    return v if v is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """Current RSS, MiB (``VmRSS``; NaN where there is no /proc)."""
    v = _status_mb("VmRSS")
    return v if v is not None else float("nan")


def best(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` calls of ``fn``, seconds."""
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)
