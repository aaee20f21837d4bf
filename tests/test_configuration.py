"""One configuration path (DESIGN 2.1): nothing writes the environment or reloads modules, and
every ``UHR_*`` / ``UHRFORGE_*`` variable the project reads is in README.md's "Configuration"
table -- and every variable of the table is read.

Parsed with ``ast`` over the project's packages: a read is a string literal passed to
``os.environ.get`` / ``os.getenv`` / ``os.environ[...]`` / ``<mapping>.get`` on an ``env`` /
``environ`` mapping / ``EnvVar`` / the one reader ``orchestration.resources.env_setting`` (and
its wrappers ``env_flag``, ``_env``, ``_secret``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestration", "assets", "curation", "training", "evaluation", "infra", "cli")
NAME = re.compile(r"^(UHR|UHRFORGE)_[A-Z0-9_]+$")
#: the one reader and its wrappers (orchestration/resources.py)
READERS = {"env_setting", "env_flag", "_env", "_secret", "EnvVar", "getenv"}
#: variables of the test servers only (infra/services.py starts them for tests/), not settings
TEST_ONLY = {"UHR_PG_BIN": "infra/services.py", "UHR_PG_TMP": "infra/services.py"}
#: the VLM / judge variables are settled by the VLM work (README lists the names it keeps)
VLM_OWNED = re.compile(r"^UHR_(VLM|JUDGE|ARTIMUSE)_")


def project_files():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_environ(node) -> bool:
    """``os.environ`` / ``environ`` or a mapping named ``env`` (the readers' parameter)."""
    return _dotted(node) in ("os.environ", "environ", "env")


def env_reads(path: Path) -> list[tuple[int, str]]:
    """``(line, name)`` of every literal ``UHR_*`` / ``UHRFORGE_*`` read in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        arg = None
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in READERS or (name == "get" and isinstance(f, ast.Attribute) and _is_environ(f.value)):
                arg = node.args[0]
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            arg = node.slice
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and NAME.match(arg.value):
            out.append((node.lineno, arg.value))
    return out


def environment_writes(path: Path, root: Path = ROOT) -> list[str]:
    """Every write to the process environment and every module reload in a file."""
    out = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                if isinstance(t, ast.Subscript) and _dotted(t.value) in ("os.environ", "environ"):
                    out.append(f"{where} os.environ[...] {'del' if isinstance(node, ast.Delete) else '='}")
        elif isinstance(node, ast.Call):
            d = _dotted(node.func)
            if d in ("os.environ.update", "environ.update", "os.environ.setdefault", "environ.setdefault",
                     "os.environ.pop", "environ.pop", "os.environ.clear", "os.putenv", "putenv",
                     "os.unsetenv", "importlib.reload", "reload"):
                out.append(f"{where} {d}")
    return out


def readme_table() -> dict[str, list[str]]:
    """``{variable: [what, default, read by]}`` of README.md's "Configuration" table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| `([A-Z0-9_]+)` \|(.*)\|$", line)
        if m:
            cells = [c.strip() for c in m.group(2).split(" | ")]
            assert m.group(1) not in rows, f"{m.group(1)} twice in the table"
            rows[m.group(1)] = cells
    return rows


def project_reads() -> dict[str, set[str]]:
    reads: dict[str, set[str]] = {}
    for path in project_files():
        for _, name in env_reads(path):
            reads.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return reads


def test_nothing_writes_the_environment_or_reloads_modules():
    found = [w for path in project_files() for w in environment_writes(path)]
    assert not found, "configure resources and pass them to build_definitions instead:\n" + "\n".join(found)


def test_the_scan_sees_writes_and_reads(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os, importlib\nos.environ['UHR_X'] = '1'\nos.environ.update(A='1')\n"
                     "os.environ.setdefault('B', '1')\nos.putenv('C', '1')\nimportlib.reload(os)\n"
                     "a = os.environ.get('UHR_A')\nb = os.getenv('UHR_B')\nc = env_setting('UHR_C', env)\n"
                     "d = EnvVar('UHR_D')\ne = os.environ['UHRFORGE_E']\nf = env.get('UHR_F')\n"
                     "g = os.environ.get('HOME')\nh = settings.get('UHR_NOT_ENV')\n")
    writes = environment_writes(probe, tmp_path)
    assert [w.split(" ", 1)[1] for w in writes] == [
        "os.environ[...] =", "os.environ.update", "os.environ.setdefault", "os.putenv", "importlib.reload"]
    assert sorted(n for _, n in env_reads(probe)) == ["UHRFORGE_E", "UHR_A", "UHR_B", "UHR_C", "UHR_D", "UHR_F",
                                                      "UHR_X"]


def test_every_variable_read_is_in_the_readme_table_and_back():
    reads = project_reads()
    table = readme_table()
    for name, where in TEST_ONLY.items():
        assert reads.pop(name, {where}) == {where}, f"{name} is for the test servers only"
    missing = {n: sorted(w) for n, w in reads.items() if n not in table and not VLM_OWNED.match(n)}
    assert not missing, f"read but not in README.md's Configuration table: {missing}"
    unread = sorted(n for n in table if NAME.match(n) and n not in reads)
    assert not unread, f"in README.md's Configuration table but read nowhere: {unread}"
    for name, cells in table.items():
        assert len(cells) == 3 and all(cells), f"{name}: the row needs what it sets, a default and its reader"


def test_settings_are_read_only_by_the_resources():
    """``UHR_*`` settings are read in orchestration/resources.py (``env_setting``) and by the
    resource modules built on it; the libraries read only the ``UHRFORGE_*`` runtime switches."""
    allowed = {"orchestration/resources.py", "orchestration/bench_resources.py", "orchestration/platform.py",
               "orchestration/automation.py", "orchestration/training_launch.py"}
    stray = {n: sorted(w - allowed) for n, w in project_reads().items()
             if n.startswith("UHR_") and n not in TEST_ONLY and w - allowed}
    assert not stray, f"read outside the resources (go through orchestration.resources.env_setting): {stray}"


def test_deployment_files_set_only_names_of_the_table():
    table = readme_table()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    set_names = set()
    for block in [compose.get("x-uhr-env") or {}] + [s.get("environment") or {} for s in compose["services"].values()]:
        set_names |= set(block) if isinstance(block, dict) else {e.split("=", 1)[0] for e in block}
    values = yaml.safe_load((ROOT / "infra/k8s/values.yaml").read_text())
    for dep in values["dagster-user-deployments"]["deployments"]:
        set_names |= {e["name"] for e in dep.get("env", [])}
    set_names |= set(re.findall(r"\b(UHR_[A-Z0-9_]+)=", (ROOT / "Makefile").read_text()))
    unknown = sorted(n for n in set_names if NAME.match(n) and n not in table)
    assert not unknown, f"deployment files set variables the code does not read: {unknown}"
