"""What every benchmark measures the same way: peak and current RSS from ``/proc/self/status``,
the best of ``repeat`` timed calls, and the code state a result was measured on."""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path
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


def trim_memory() -> None:
    """Collect garbage and hand glibc's free heap pages back to the OS (``malloc_trim(0)``), so
    the RSS read next is live memory, not what the allocator kept from earlier work."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (``VmHWM``) to its current RSS by writing ``5`` to
    ``/proc/self/clear_refs`` (Linux >= 4.0). False where that is not possible: the next
    :func:`peak_rss_mb` is then the process's lifetime peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:  # pragma: no cover - non-Linux or no permission
        return False


class PeakRSS:
    """The process RSS high-water mark while a block runs, and its rise over the RSS before it.

    ``with PeakRSS() as m: work()`` -> ``m.before_mb`` (RSS after :func:`trim_memory`, just before),
    ``m.peak_mb`` (``VmHWM`` at the end, reset at the start), ``m.rise_mb`` (peak - before: the
    memory the block needed on top of what was already live) and ``m.exact`` (False where the
    high-water mark could not be reset, so ``peak_mb`` may predate the block). Whole-process RSS:
    it counts every allocator (torch, numpy, codecs), not only Python objects."""

    def __init__(self, trim: bool = True):
        self.trim = trim
        self.before_mb = self.peak_mb = self.rise_mb = float("nan")
        self.exact = False

    def __enter__(self) -> "PeakRSS":
        if self.trim:
            trim_memory()
        self.before_mb = rss_mb()
        self.exact = reset_peak_rss()
        return self

    def __exit__(self, *exc) -> None:
        self.peak_mb = peak_rss_mb()
        self.rise_mb = self.peak_mb - self.before_mb


def git_state(*paths: str) -> dict:
    """``{"head": short HEAD, "dirty": porcelain lines}`` of the checkout this file is in: the
    uncommitted files among ``paths`` (the whole tree when none), so a result does not claim a
    commit whose code it was not measured on (the checkout is shared). Empty values without git."""
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"head": git("rev-parse", "--short", "HEAD").strip(),  # porcelain lines keep their leading blank
            "dirty": git("status", "--porcelain", "--", *paths).splitlines()}
