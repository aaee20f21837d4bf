"""CLI errors (issue 15, item 5): bad input ends as ONE line on stderr and a non-zero exit, never a
traceback, unless ``uhr --debug``; an unexpected exception says its type and how to see the
traceback."""

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cli.main import cli, one_line

ROOT = Path(__file__).resolve().parent.parent


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_error_line(res, *needles):
    assert res.exit_code == 1, (res.exit_code, res.output, res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    err = res.stderr
    assert err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_bad_input_is_one_line(tmp_path):
    """Each of these ended in a raw traceback: too few files for a labelled pool, an empty raw root,
    an unknown profile, a profile with an invalid value, a bad release name."""
    _one_error_line(_run("make-raw-pool", tmp_path / "pool", "--n", "12", "--profile", "test"),
                    "n=12 is too small", "at least 18 files")
    _one_error_line(_run("make-raw-pool", tmp_path / "pool", "--n", "-3"), "--n -3")
    (tmp_path / "raw").mkdir()
    _one_error_line(_run("materialize", "--data-root", tmp_path / "data", "--raw-root", tmp_path / "raw",
                         "--profile", "test"), f"no shard folders under {tmp_path / 'raw'}")
    _one_error_line(_run("score-image", tmp_path / "x.png", "--profile", "nope"), "unknown profile 'nope'")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: bad\nsizes:\n  linear_scale: 0\n")
    _one_error_line(_run("score-image", tmp_path / "x.png", "--profile", bad), "sizes.linear_scale = 0")
    _one_error_line(_run("make-raw-pool", tmp_path / "pool", "--profile", bad), "sizes.linear_scale = 0")
    _one_error_line(_run("release", "v2.lock", "--data-root", tmp_path / "data"), "bad release name 'v2.lock'")
    assert not (tmp_path / "pool").exists()


def test_unexpected_errors_name_their_type_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    """An exception nobody expected (here inside a library call) is one line with its type and the
    hint; ``uhr --debug`` lets it through (the traceback); a known error with a multi-line message
    (a subprocess's stderr) is still one line."""
    import curation.purify as purify

    def boom(path, cfg):
        return {}["no such key"]  # a bug, not bad input

    monkeypatch.setattr(purify, "score_image_record", boom)
    err = _one_error_line(_run("score-image", tmp_path / "x.png", "--profile", "test"), "KeyError: 'no such key'",
                          "uhr --debug")
    assert "unexpected error" in err
    res = _run("--debug", "score-image", tmp_path / "x.png", "--profile", "test")
    assert res.exit_code == 1 and isinstance(res.exception, KeyError) and res.stderr == ""

    from curation.dvc_repo import DvcError

    def dvc_fails(path, cfg):
        raise DvcError("`dvc push` failed (1):\nERROR: unexpected error\n  remote unreachable\n")

    monkeypatch.setattr(purify, "score_image_record", dvc_fails)
    err = _one_error_line(_run("score-image", tmp_path / "x.png", "--profile", "test"), "remote unreachable")
    assert "unexpected" not in err.split("failed (1)")[0] and "DvcError" not in err
    assert one_line("a\n\n  b\r\nc\x1b[31m") == "a | b | c\\x1b[31m"


def test_click_usage_errors_and_exit_codes_are_unchanged(tmp_path):
    res = _run("score-image")  # missing argument: click's usage message, exit 2
    assert res.exit_code == 2 and "Missing argument" in res.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    res = _run("score-image", bad, "--json")  # every file rejected: the command's own exit 1, no error line
    assert res.exit_code == 1 and "Error" not in res.stderr


def test_the_console_entry_point_prints_one_line(tmp_path):
    """The real process (``python -m cli.main``, what the ``uhr`` script runs): stderr is one line."""
    out = subprocess.run([sys.executable, "-m", "cli.main", "make-raw-pool", str(tmp_path / "p"), "--n", "12"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and out.stderr.startswith("Error: n=12"), out.stderr


def test_number_options_refuse_nan_inf_and_out_of_range(tmp_path):
    """click's float / FloatRange accept 'nan' and 'inf' (a NaN seam threshold flagged nothing and
    exited 0), and a zero or negative stride ended in a per-image ValueError or 0 seams checked:
    now each is a usage error (exit 2) naming the option, before any image is read."""
    import numpy as np

    from curation.imageio import write_image

    img = tmp_path / "a.png"
    write_image(img, np.full((64, 96, 3), 128, np.uint8))
    for args, needle in [
        (["seam-check", img, "--threshold", "nan"], "'nan' is not a finite number"),
        (["seam-check", img, "--threshold", "-inf"], "'-inf' is not a finite number"),
        (["seam-check", img, "--threshold", "0"], "--threshold"),
        (["seam-check", img, "--stride", "0"], "--stride"),
        (["seam-check", img, "--stride", "-3"], "--stride"),
        (["upscale", img, tmp_path / "b.png", "--scale", "2", "--workers", "0"], "--workers"),
        (["bench", tmp_path, "--eval-size", "0"], "--eval-size"),
    ]:
        res = _run(*args)
        assert res.exit_code == 2, (args, res.exit_code, res.output)
        assert needle in res.output and "Traceback" not in res.output, (args, res.output)
    assert not (tmp_path / "b.png").exists()
    ok = _run("seam-check", img, "--threshold", "2.5", "--stride", "32", "--json")
    assert ok.exit_code == 0 and '"flagged": false' in ok.output, ok.output
