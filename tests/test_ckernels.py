"""The C kernel loader: sources in .c files next to their modules, shipped as package data, and a
cache key that follows the source text."""

from __future__ import annotations

import ctypes
import shutil
import tomllib
from pathlib import Path

import pytest

import curation.ckernels as ck

ROOT = Path(__file__).resolve().parents[1]
HAVE_C = bool(shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"))


def test_kernel_sources_are_c_files_shipped_as_package_data():
    from curation import scores
    from evaluation.metrics import glcm

    for src in (glcm._C_SOURCE, scores._FLAT_C):
        assert isinstance(src, Path) and src.suffix == ".c" and src.is_file()
        assert src.parent == Path(glcm.__file__).parent or src.parent == Path(scores.__file__).parent
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.c" in data["*"]
    assert "uhr_glcm_patch_rows" in ck.kernel_source(glcm._C_SOURCE)
    assert "uhr_flat_tiles" in ck.kernel_source(scores._FLAT_C)
    assert ck.kernel_source("int f(void) { return 1; }") == "int f(void) { return 1; }"


@pytest.mark.skipif(not HAVE_C, reason="no C compiler")
def test_a_changed_source_file_builds_a_new_kernel(monkeypatch, tmp_path):
    monkeypatch.setenv("UHRFORGE_KERNEL_CACHE", str(tmp_path / "k"))
    monkeypatch.delenv("UHRFORGE_NO_C_KERNELS", raising=False)
    src = tmp_path / "answer.c"
    results = []
    for value in (41, 42):
        src.write_text(f"int uhr_answer(void) {{ return {value}; }}\n")
        monkeypatch.setattr(ck, "_loaded", {})
        fn, err = ck.load_kernel("answer", src, "uhr_answer", [], ctypes.c_int)
        assert err is None
        results.append(fn())
    assert results == [41, 42]
    assert len(list((tmp_path / "k").glob("uhr_answer_*.so"))) == 2


def test_a_missing_source_file_is_a_reason_not_a_crash(monkeypatch, tmp_path):
    monkeypatch.setattr(ck, "_loaded", {})
    monkeypatch.delenv("UHRFORGE_NO_C_KERNELS", raising=False)
    fn, err = ck.load_kernel("nothing", tmp_path / "nothing.c", "uhr_nothing", [])
    assert fn is None and err.startswith("C kernel source unreadable")
