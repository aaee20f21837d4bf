"""CLI contract: ``uhr score-image PATH... --json``."""

import json
import subprocess
import sys

import cv2
import numpy as np
from click.testing import CliRunner

from curation.purify import SCORE_KEYS
from cli.main import cli


def _textured(h, w, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(base.astype(np.int16) + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def _lines(out):
    return [json.loads(l) for l in out.strip().splitlines()]


def test_score_image_json_contract(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), _textured(500, 800))  # 0.4 MP: passes the test profile's screen (> 0.39 MP)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), _textured(200, 300))
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((500, 800, 3), 128, np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    res = CliRunner().invoke(cli, ["score-image", str(good), str(small), str(flat), str(bad), "--json", "--profile", "test"])
    assert res.exit_code == 0, res.output
    recs = _lines(res.output)
    assert [tuple(r) for r in recs] == [SCORE_KEYS] * 4
    g, s, f, b = recs
    assert g["verdict"] == "pass" and g["screening"] == "pass" and g["width"] == 800 and g["megapixels"] == 0.4
    assert len(g["image_id"]) >= 16 and 0 <= g["exposure_fraction"] <= 1 and g["entropy"] > 5
    assert s["screening"] == "too_few_pixels" and s["verdict"] == "too_few_pixels"
    assert f["verdict"] == "blurred" and f["flat_fraction"] == 1.0  # first failing reason in order
    assert b["verdict"] == "not_an_image" and b["entropy"] is None and b["laplacian_var"] is None


def test_score_image_exit_code_only_when_all_fail(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    res = CliRunner().invoke(cli, ["score-image", str(bad), str(tmp_path / "missing.jpg"), "--json"])
    assert res.exit_code != 0
    recs = _lines(res.output)
    assert {r["verdict"] for r in recs} <= {"unreadable", "truncated"}


def test_uhr_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "score-image" in out.stdout and "demo" in out.stdout


def test_uhr_help_imports_no_heavy_module():
    """``uhr --help`` stays fast: the command modules import only click at module level."""
    code = ("import sys; from cli.main import cli; "
            "print(sorted(m for m in ('dagster', 'torch', 'cv2', 'pyarrow', 'mlflow', 'curation', 'evaluation') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
