"""Atomic small-file writes and tolerant reads (per-image result caches, split files).

A writer puts the bytes in a hidden temporary file next to the target (named with its pid, so
two processes never share one) and renames it over the target: a reader sees the old file or
the new one, never half of one. A write that fails -- a full disk above all -- removes its
temporary file before the error propagates (a full data root is not filled further by
leftovers, and the target keeps its old content); a killed writer leaves at most one hidden
temporary file.

:func:`replacing` is the building block (``with replacing(path) as tmp: <write tmp>``);
:func:`is_disk_full` tells the errors of a full or read-only file system from the errors of bad
input, so a stage fails on them (and a re-run redoes the work) instead of recording a verdict.
"""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

#: errno values that mean "the file system cannot take this write", not "this input is bad"
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def is_disk_full(exc: BaseException) -> bool:
    """True for an ``OSError`` of a full / over-quota / read-only file system or a file too big
    for the process's limit (``RLIMIT_FSIZE``): an environment fault, never an input's fault."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return True
        if "No space left on device" in str(exc) or "database or disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def replacing(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path``; on a clean exit rename it over ``path``.
    On any error the temporary file is removed and the error propagates (a disk error with
    ``path`` named in it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS and not exc.filename:
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, default=str))


def read_json(path: str | os.PathLike) -> Any | None:
    """The parsed file, or None when it is missing or not valid JSON (a cache miss)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
