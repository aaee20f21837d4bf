"""Small C kernels compiled on first use with the system C compiler and loaded with ctypes.

A kernel is C source (a string, or the path of a ``.c`` file shipped next to its Python module,
read when the kernel is first built) plus the symbol to call. The shared object is built once per machine into
a cache folder (``UHRFORGE_KERNEL_CACHE``, else ``~/.cache/uhrforge/kernels``, else the temp
folder), named by a hash of source, flags and platform, and written atomically, so concurrent
workers agree on the result. It is loaded only when this user owns it and others cannot write
it. Without a compiler, :func:`load_kernel` returns ``(None, reason)`` and callers use their
numpy path, which gives the same numbers, only slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

CFLAGS = ("-O3", "-shared", "-fPIC", "-std=c99")
_lock = threading.Lock()
_loaded: dict[str, tuple[Any, str | None]] = {}


def kernel_cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("UHRFORGE_KERNEL_CACHE"):
        dirs.append(Path(os.environ["UHRFORGE_KERNEL_CACHE"]))
    dirs.append(Path.home() / ".cache" / "uhrforge" / "kernels")
    dirs.append(Path(tempfile.gettempdir()) / f"uhrforge-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}")
    return dirs


def _build(name: str, source: str, symbol: str, argtypes: Sequence, restype, cflags: Sequence[str]):
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    tag = hashlib.sha256("\0".join([source, " ".join(cflags), platform.machine(), sys.platform]).encode()).hexdigest()[:16]
    so_name = f"uhr_{name}_{tag}.so"
    last_err = "no C compiler found (cc/gcc/clang)"
    for d in kernel_cache_dirs():
        so = d / so_name
        if not so.exists():
            if compiler is None:
                continue
            try:
                d.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=d) as tmp:
                    src = Path(tmp) / f"uhr_{name}.c"
                    src.write_text(source)
                    out = Path(tmp) / so_name
                    proc = subprocess.run([compiler, *cflags, "-o", str(out), str(src), "-lm"],
                                          capture_output=True, text=True, timeout=120)
                    if proc.returncode != 0:  # a compiler problem: another folder will not help
                        return None, f"C compile failed: {proc.stderr.strip()[:300]}"
                    os.replace(out, so)
            except (OSError, subprocess.SubprocessError) as exc:
                last_err = f"C kernel build failed in {d}: {exc}"
                continue
        try:
            st = so.stat()
            if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
                last_err = f"refusing to load {so}: not owned by this user or writable by others"
                continue
            lib = ctypes.CDLL(str(so))
        except OSError as exc:
            last_err = f"C kernel load failed: {exc}"
            continue
        fn = getattr(lib, symbol)
        fn.argtypes = list(argtypes)
        fn.restype = restype
        return fn, None
    return None, last_err


def kernel_source(source: str | os.PathLike) -> str:
    """The C text of ``source``: a path (``Path`` / ``os.PathLike``) is read, a string is the text."""
    return Path(source).read_text(encoding="utf-8") if isinstance(source, os.PathLike) else source


def load_kernel(name: str, source: str | os.PathLike, symbol: str, argtypes: Sequence, restype=ctypes.c_int,
                cflags: Sequence[str] = CFLAGS) -> tuple[Any, str | None]:
    """``(function, None)`` once built and loaded (cached per process), or ``(None, why not)``.

    ``source`` is the C text or the path of a ``.c`` file; the shared object's name hashes the
    text, so an edited source builds a new one."""
    with _lock:
        if name not in _loaded:
            if os.environ.get("UHRFORGE_NO_C_KERNELS"):
                _loaded[name] = (None, "C kernels disabled (UHRFORGE_NO_C_KERNELS)")
            else:
                try:
                    text = kernel_source(source)
                except OSError as exc:
                    _loaded[name] = (None, f"C kernel source unreadable: {exc}")
                else:
                    _loaded[name] = _build(name, text, symbol, argtypes, restype, tuple(cflags))
        return _loaded[name]
