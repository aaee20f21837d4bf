"""Layer boundaries: the curation library never imports the bench (``evaluation``).

Parsed with ``ast``: every ``import`` / ``from ... import`` statement of every module under
``curation/`` (lazy imports inside functions included), so comments and docstrings that merely
mention the bench do not count, and an import hidden in a function body does."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("evaluation",)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in a file; relative imports resolved within its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pkg = list(path.relative_to(root).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}" if mod else a.name) for a in node.names]
        elif isinstance(node, ast.Call):  # importlib.import_module("evaluation...") / __import__
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                out.append((node.lineno, node.args[0].value))
    return out


def _violations(folder: Path, root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for line, mod in imported_modules(path, root):
            if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN):
                bad.append(f"{path.relative_to(root)}:{line} imports {mod}")
    return sorted(set(bad))


def test_curation_does_not_import_evaluation():
    assert (ROOT / "curation" / "vlm" / "__init__.py").exists()
    bad = _violations(ROOT / "curation")
    assert not bad, "the library layer (curation/) must not depend on the bench:\n" + "\n".join(bad)


def test_the_check_sees_lazy_imports_and_ignores_comments(tmp_path):
    """The checker itself: a lazy import in a function is caught, a comment or docstring is not."""
    pkg = tmp_path / "curation"
    pkg.mkdir()
    (pkg / "ok.py").write_text('"""Mentions evaluation.metrics.msfi in prose."""\n# import evaluation\n')
    (pkg / "lazy.py").write_text("def f():\n    from evaluation.metrics.msfi import JUDGE_REQUEST\n")
    (pkg / "plain.py").write_text("import evaluation.runner as r\n")
    (pkg / "dyn.py").write_text("import importlib\nm = importlib.import_module('evaluation.metrics')\n")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "rel.py").write_text("from .. import evaluation_helpers\nfrom curation import vlm\n")
    bad = _violations(pkg, tmp_path)
    assert sorted({b.split(":")[0] for b in bad}) == ["curation/dyn.py", "curation/lazy.py", "curation/plain.py"]


def test_bench_tasks_register_from_the_bench():
    """The MSFI / ICS task specs live with the bench metrics and land in the VLM task registry."""
    from curation.vlm import TASKS, get_task
    from evaluation.metrics import ics, msfi

    assert get_task("msfi_global") is msfi.MSFI_GLOBAL_TASK and get_task("msfi_local") is msfi.MSFI_LOCAL_TASK
    assert get_task("ics") is ics.ICS_TASK
    assert msfi.MSFI_GLOBAL_TASK.request_settings()["max_tokens"] == msfi.JUDGE_REQUEST["max_tokens"]
    assert {"region_artifact", "instance_artifact", "artimuse_aesthetics", "msfi_global", "ics"} <= set(TASKS)
