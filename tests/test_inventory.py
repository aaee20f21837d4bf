"""Every input gets a row (issue 15.2), rows are conserved at every stage, killed runs are failed.

A raw shard of 34 hostile entries -- a name that is not UTF-8, ``photo.JSON`` (a JPEG), hidden
files, a suffixless image, a JPEG named like the sidecar of its sibling, control and bidi
characters in names, broken / looping / valid symlinks, a FIFO, a socket, a sub-folder -- gives 34
rows: regular files decoded by content, the rest ``not_a_regular_file`` with their kind, never
opened (an audit hook sees every ``open``); names are stored escaped and printable and resolve back
to the exact bytes; ``uhr materialize`` (``materialize_all``) finishes this shard and the next one
with every ``rows_conserved`` check passed. A process running a Dagster run in-process is killed
with SIGKILL: the run stays STARTED holding its concurrency slot until
:func:`orchestration.runs.fail_orphaned_runs` marks it FAILED and frees the slot; a re-run then
succeeds.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

SHARD = "shard-00000"

#: every entry of the hostile shard: name (str or raw bytes) -> (content, expected reason; None = passes raw_pool)
#: (an entry built separately -- symlinks, FIFO, socket, folder -- has content None)
NOT_REGULAR = "not_a_regular_file"


def _image(fmt: str, seed: int, size=(500, 400)) -> bytes:
    """A textured ``size`` (W, H) image encoded as ``fmt``: passes the test profile's resolution screen."""
    from PIL import Image

    a = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt)
    return buf.getvalue()


def _entries() -> dict:
    jpg = _image("JPEG", 1)
    return {
        "a.jpg": (jpg, None),
        "photo.JSON": (_image("JPEG", 2), None),  # skipped by suffix before
        ".hidden.jpg": (_image("JPEG", 3), None),  # skipped as hidden before
        b"\xff\xfe-bad.jpg": (_image("JPEG", 4), None),  # not UTF-8: stopped the whole materialize before
        b"\xc3(.png": (_image("PNG", 14), None),
        "new\nline.png": (_image("PNG", 5), None),
        "back\\slash.png": (_image("PNG", 6), None),
        "\u202eevil.png": (_image("PNG", 7), None),
        "tab\t.png": (_image("PNG", 15), None),
        "noext": (_image("PNG", 8), None),
        "x.json": (_image("JPEG", 9), None),  # a JPEG named .json, no sibling
        "z.jpg": (_image("JPEG", 16), None),
        "z.json": (_image("JPEG", 17), None),  # the sidecar name of z.jpg, but a JPEG: a row of its own
        "UPPER.JPG": (_image("JPEG", 11), None),
        "sp ace.png": (_image("PNG", 12), None),
        "émoji-😀.png": (_image("PNG", 13), None),
        "dot.": (_image("PNG", 18), None),
        "s.jpg": (_image("JPEG", 19), None),
        "lic.jpg": (_image("JPEG", 20), None),  # lic.json below is its sidecar: no row of its own
        "dup.jpg": (jpg, "duplicate"),
        "notes.json": (b'{"a": 1}\n', "not_an_image"),
        "empty.jpg": (b"", "not_an_image"),
        "readme.txt": (b"hello\n", "not_an_image"),
        "labels.jsonl": (b'{"file": "a.jpg"}\n', "not_an_image"),  # skipped by name before
        ".DS_Store": (b"\0\0\0\1Bud1" + bytes(64), "not_an_image"),
        "broken.jpg": (None, NOT_REGULAR),
        "loop.jpg": (None, NOT_REGULAR),
        "link.jpg": (None, NOT_REGULAR),  # a valid symlink: rejected, never followed
        "s.json": (None, NOT_REGULAR),  # a symlink where s.jpg's sidecar would be
        "fifo.jpg": (None, NOT_REGULAR),
        "sock.jpg": (None, NOT_REGULAR),
        "sub": (None, NOT_REGULAR),
        "dirlink": (None, NOT_REGULAR),
        "fifo.json": (None, NOT_REGULAR),  # a FIFO named like a sidecar (of fifo.jpg, itself a FIFO)
    }


def build_hostile_shard(d: Path) -> dict[bytes, str | None]:
    """Write the entries of :func:`_entries` (plus ``lic.json``, a valid sidecar) under ``d``;
    returns ``{name bytes: expected reason}`` of the 34 entries that get a row."""
    d.mkdir(parents=True)
    entries = _entries()
    for name, (content, _) in entries.items():
        if content is not None:
            with open(os.path.join(os.fsencode(d), os.fsencode(name)), "wb") as fh:
                fh.write(content)
    (d / "lic.json").write_text('{"licence": "CC-BY-4.0", "origin": "https://example.org/x"}')
    os.symlink("nowhere.jpg", d / "broken.jpg")
    os.symlink("loop.jpg", d / "loop.jpg")
    os.symlink("a.jpg", d / "link.jpg")
    os.symlink("a.jpg", d / "s.json")
    os.mkfifo(d / "fifo.jpg")
    os.mkfifo(d / "fifo.json")
    (d / "sub").mkdir()
    (d / "sub" / "inner.jpg").write_bytes(_image("JPEG", 21))
    os.symlink("sub", d / "dirlink")
    cwd = os.getcwd()
    os.chdir(d)  # a relative bind: the socket path stays short
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind("sock.jpg")
        s.close()
    finally:
        os.chdir(cwd)
    return {os.fsencode(n): reason for n, (_, reason) in entries.items()}


#: paths opened while an audit is on (sys.addaudithook cannot be removed: one hook, switched)
_OPENED: list | None = None


def _audit(event, args):
    if event == "open" and _OPENED is not None and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsencode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def hostile(tmp_path):
    raw = tmp_path / "raw"
    expected = build_hostile_shard(raw / SHARD)
    return raw, expected


def test_every_directory_entry_gets_a_row(hostile, tmp_path, test_cfg):
    global _OPENED
    from curation.layout import DataLayout
    from curation.names import decode_name, encode_name
    from curation.stages import run_raw_pool

    raw, expected = hostile
    assert len(expected) == 34 and len(os.listdir(raw / SHARD)) == 35  # + lic.json, the sidecar
    layout = DataLayout.at(tmp_path / "data")
    _OPENED = []
    try:
        rows = run_raw_pool(layout, raw, SHARD, test_cfg).rows
    finally:
        opened, _OPENED = _OPENED, None
    assert len(rows) == 34
    by_name = {decode_name(r["source_path"]).rsplit(b"/", 1)[-1]: r for r in rows}
    assert set(by_name) == set(expected)
    for name, reason in expected.items():
        r = by_name[name]
        assert r["reject_reason"] == reason, (name, r["reject_reason"], r["reject_detail"])
        assert r["passed"] is (reason is None)
        # stored printable and lossless: the text resolves back to the entry's exact bytes
        assert r["source_path"].isprintable() and r["source_path"] == encode_name(decode_name(r["source_path"]))
        assert os.path.lexists(layout.resolve(r["source_path"]))
        assert (r["source_path_bytes"] is not None) == (encode_name(name) != name.decode("utf-8", "replace"))
        if reason == NOT_REGULAR:
            assert r["sha256"] is None and r["reject_detail"], r
    assert by_name[b"\xff\xfe-bad.jpg"]["source_path"].endswith("/\\xff\\xfe-bad.jpg")
    assert by_name[b"\xff\xfe-bad.jpg"]["source_path_bytes"].endswith(b"/\xff\xfe-bad.jpg")
    assert by_name[b"new\nline.png"]["source_path"].endswith("/new\\x0aline.png")
    details = {n.decode(): by_name[n]["reject_detail"] for n in expected if expected[n] == NOT_REGULAR}
    assert details["fifo.jpg"] == "fifo" and details["sock.jpg"] == "socket" and details["sub"] == "directory"
    assert details["broken.jpg"].startswith("symlink -> nowhere.jpg (broken")
    assert details["loop.jpg"] == "symlink -> loop.jpg (loop)"
    assert details["link.jpg"] == "symlink -> a.jpg (to a regular file; not followed)"
    # the sidecar was read for lic.jpg only; z.json (a JPEG) and s.json (a symlink) are rows
    assert by_name[b"lic.jpg"]["licence"] == "CC-BY-4.0" and by_name[b"lic.jpg"]["sidecar"] == "lic.json"
    assert by_name[b"z.jpg"]["licence"] == "unknown" and by_name[b"z.jpg"]["sidecar"] is None
    assert by_name[b"s.jpg"]["sidecar"] is None
    # nothing that is not a regular file was opened (nor anything under the sub-folder)
    never = {n for n, reason in expected.items() if reason == NOT_REGULAR} | {b"nowhere.jpg", b"inner.jpg"}
    assert not [p for p in opened if p.rsplit(b"/", 1)[-1] in never], opened
    # rows in = passed + rejected, every entry matched by name
    from curation.stages.conservation import conserved

    c = conserved(layout, "raw_pool", SHARD, raw)
    assert c.ok and c.rows_in == 34 and c.passed + c.rejected == 34, c.summary()


def test_conservation_catches_a_lost_an_invented_and_a_doubled_row(hostile, tmp_path, test_cfg):
    from curation.layout import DataLayout
    from curation.manifest import read_manifest
    from curation.stages import run_image_scores, run_raw_pool
    from curation.stages.conservation import check_conserved, conserved, stage_inputs

    raw, _ = hostile
    layout = DataLayout.at(tmp_path / "data")
    run_raw_pool(layout, raw, SHARD, test_cfg)
    run_image_scores(layout, SHARD, test_cfg)
    for stage in ("raw_pool", "image_scores"):
        t = read_manifest(layout.manifest(stage, SHARD))
        inputs = stage_inputs(layout, stage, SHARD, raw)
        assert conserved(layout, stage, SHARD, raw).ok
        lost = check_conserved(stage, SHARD, t.slice(1), inputs)
        assert not lost.ok and len(lost.missing) == 1, lost.summary()
        doubled = check_conserved(stage, SHARD, t.take(list(range(t.num_rows)) + [0]), inputs)
        assert not doubled.ok and doubled.duplicated, doubled.summary()
        invented = check_conserved(stage, SHARD, t, inputs[1:])
        assert not invented.ok and len(invented.extra) == 1, invented.summary()
    # an entry the lister skipped is a lost row
    (raw / SHARD / ".late.jpg").write_bytes(_image("JPEG", 30))
    late = conserved(layout, "raw_pool", SHARD, raw)
    assert not late.ok and late.missing == [".late.jpg"], late.summary()


def test_names_round_trip_and_print_safely():
    from curation.names import decode_name, encode_name, fs_path

    rng = random.Random(15)
    alphabet = b"ab\\x0f/\xff\xc3\xa9\n\x1b\x7f" + "\u202e".encode()
    seen = {}
    for _ in range(20000):
        raw = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        text = encode_name(raw)
        text.encode("utf-8")  # valid UTF-8 (raises otherwise)
        assert decode_name(text) == raw and text.isprintable(), (raw, text)
        assert seen.setdefault(text, raw) == raw  # one-to-one
        assert os.fsencode(fs_path(text)) == raw
    assert encode_name("plain/é name.jpg") == "plain/é name.jpg"  # ordinary names unchanged


@pytest.mark.slow
def test_materialize_finishes_every_shard_after_a_hostile_one(hostile, tmp_path):
    """``materialize_all`` (what ``uhr materialize`` runs) over the hostile shard then a normal one:
    both shards committed with every rows_conserved check passed (a shard folder whose name cannot
    be a shard key is skipped and said, not a crash); ``uhr lineage`` of the image whose
    name is not UTF-8 prints its escaped name (text and JSON), no surrogate, no control character."""
    from click.testing import CliRunner

    from cli.main import cli
    from curation.config import load_config
    from curation.layout import DataLayout
    from curation.manifest import read_manifest
    from curation.synth import make_raw_pool
    from orchestration.pipeline import materialize_all
    from orchestration.runs import definitions_for, instance_for

    raw, expected = hostile
    make_raw_pool(tmp_path / "pool", 18, 1, load_config("test"))
    shutil.copytree(tmp_path / "pool" / SHARD, raw / "shard-00001")
    os.mkdir(os.path.join(os.fsencode(raw), b"shard-\xff"))  # a folder name that cannot be a shard key
    shutil.copy(raw / SHARD / "a.jpg", os.path.join(os.fsencode(raw), b"shard-\xff", b"a.jpg"))
    data = tmp_path / "data"
    instance = instance_for(data)
    said = []
    out = materialize_all(definitions_for(data, raw, "test"), instance, raw, log=said.append,
                          assets=["raw_pool", "image_scores"])
    assert out["shards"] == [SHARD, "shard-00001"]
    assert any("shard folder 'shard-\\xff' skipped" in line for line in said), said
    layout = DataLayout.at(data)
    for stage in ("raw_pool", "image_scores"):
        for shard in out["shards"]:
            assert layout.manifest(stage, shard).exists(), (stage, shard)
    evals = _check_evaluations(instance, "rows_conserved")
    assert sorted(a for a, _ in evals) == ["image_scores"] * 2 + ["raw_pool"] * 2, evals
    assert all(ok for _, ok in evals), evals
    rows = read_manifest(layout.manifest("raw_pool", SHARD)).to_pylist()
    assert len(rows) == len(expected) == 34
    bad = next(r for r in rows if r["source_path"].endswith("/\\xff\\xfe-bad.jpg"))
    scored = {r["image_id"]: r for r in read_manifest(layout.manifest("image_scores", SHARD)).to_pylist()}
    assert scored[bad["image_id"]]["passed"]  # decoded through the escaped path's real bytes
    for extra in ([], ["--json"]):
        res = CliRunner().invoke(cli, ["lineage", bad["image_id"], "--data-root", str(data), *extra])
        assert res.exit_code == 0, res.output
        text = json.loads(res.output)["links"][0]["details"]["source_path"] if extra else res.output
        assert "/\\xff\\xfe-bad.jpg" in text, text
        assert not any(0xD800 <= ord(c) <= 0xDFFF or (ord(c) < 32 and c != "\n") for c in res.output)


def _check_evaluations(instance, name: str) -> list[tuple[str, bool]]:
    """``(asset, passed)`` of every evaluation of the asset check ``name`` on ``instance``."""
    from dagster import DagsterEventType, EventRecordsFilter

    out = []
    for rec in instance.get_event_records(EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION)):
        ev = rec.event_log_entry.dagster_event.event_specific_data
        if ev.check_name == name:
            out.append((ev.asset_key.to_user_string(), ev.passed))
    return out


# -- a run killed with its worker ---------------------------------------------------------------

#: a process executing one Dagster run in-process (as ``uhr`` does), its op in the ``gpu`` pool:
#: it writes MARK once the op holds its slot, then sleeps SLEEP seconds
KILLED_RUN = """
import os, sys, time
from pathlib import Path
from dagster import DagsterInstance, job, op
from orchestration.runs import worker_tags

@op(pool="gpu")
def hold():
    Path(os.environ["MARK"]).write_text("started")
    time.sleep(float(os.environ["SLEEP"]))

@job
def one():
    hold()

ok = one.execute_in_process(instance=DagsterInstance.from_config(sys.argv[1]), tags=worker_tags()).success
sys.exit(0 if ok else 1)
"""


def _claimed(instance, pool: str) -> int:
    return len(instance.event_log_storage.get_concurrency_info(pool).claimed_slots)


@pytest.mark.slow
def test_a_run_killed_with_its_worker_is_failed_and_a_rerun_starts(tmp_path):
    from dagster import DagsterInstance, DagsterRunStatus

    from orchestration.runs import WORKER_TAG, fail_orphaned_runs

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).parents[1] / "infra/dagster/sqlite.yaml", home / "dagster.yaml")  # run monitoring on
    root = str(Path(__file__).parents[1])
    env = dict(os.environ, MARK=str(tmp_path / "mark"), SLEEP="120", PYTHONPATH=root)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(home)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 90
        while not (tmp_path / "mark").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "mark").exists(), "the run did not start"
        instance = DagsterInstance.from_config(str(home))
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
        (rec,) = instance.get_run_records()
        assert rec.dagster_run.tags[WORKER_TAG].split(":")[1] == str(proc.pid)
        assert fail_orphaned_runs(instance) == []  # its worker is alive: left alone
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run_id = rec.dagster_run.run_id
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED  # what the kill leaves behind
    assert _claimed(instance, "gpu") == 1  # ... holding the pool's only slot
    assert fail_orphaned_runs(instance) == [run_id]
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    assert _claimed(instance, "gpu") == 0
    msg = [e.message for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE"]
    assert msg and f"pid {proc.pid}" in msg[-1] and "is gone" in msg[-1], msg
    # the re-run gets the slot and finishes
    (tmp_path / "mark").unlink()
    rerun = subprocess.run([sys.executable, "-c", KILLED_RUN, str(home)], env=dict(env, SLEEP="0"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    statuses = sorted(r.dagster_run.status.value for r in instance.get_run_records())
    assert statuses == ["FAILURE", "SUCCESS"], statuses


def test_score_image_names_print_safely_and_errors_say_why(tmp_path):
    """``uhr score-image`` on a JPEG whose name is not UTF-8 and holds a newline, and on a FIFO:
    one line per file, the name escaped (and decodable back), the FIFO refused with a detail."""
    from click.testing import CliRunner

    from cli.main import cli
    from curation.names import decode_name

    name = b"\xff\nbad.jpg"
    bad = os.path.join(os.fsencode(tmp_path), name)
    with open(bad, "wb") as fh:
        fh.write(_image("JPEG", 40))
    os.mkfifo(tmp_path / "fifo.jpg")
    args = ["score-image", "--profile", "test", os.fsdecode(bad), str(tmp_path / "fifo.jpg")]
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{tmp_path}/\\xff\\x0abad.jpg: "), lines
    assert "not_a_regular_file" in lines[1] and " -- " in lines[1], lines
    out = CliRunner().invoke(cli, args + ["--json"])
    recs = [json.loads(line) for line in out.output.splitlines()]
    assert decode_name(recs[0]["path"]) == bad and recs[0]["image_id"], recs[0]
    assert recs[1]["verdict"] == "not_a_regular_file" and recs[1]["reject_detail"], recs[1]


def test_an_entry_swapped_after_the_listing_is_still_never_opened(tmp_path, test_cfg):
    """A regular file replaced by a FIFO or a symlink between the listing and the read: the
    ``O_NOFOLLOW | O_NONBLOCK`` open + ``fstat`` rejects it (no hang, no followed link)."""
    from curation.raw_pool import build_raw_pool_rows, list_shard_entries

    d = tmp_path / SHARD
    d.mkdir()
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        (d / n).write_bytes(_image("JPEG", ord(n[0])))
    entries = list_shard_entries(d)
    assert [e.kind for e in entries] == ["file"] * 3
    (d / "a.jpg").unlink()
    os.mkfifo(d / "a.jpg")
    (d / "b.jpg").unlink()
    os.symlink("c.jpg", d / "b.jpg")
    rows = build_raw_pool_rows(SHARD, entries, test_cfg, {}, "v")
    got = {r["source_path"].rsplit("/", 1)[-1]: (r.get("reject_reason"), r.get("reject_detail")) for r in rows}
    assert got["a.jpg"] == ("not_a_regular_file", "fifo (was a regular file when listed)"), got
    assert got["b.jpg"] == ("not_a_regular_file", "symlink (was a regular file when listed; not followed)"), got
    assert got["c.jpg"] == (None, None), got


def test_a_failed_judgement_says_why():
    """``judge_failed`` carries the judge's own errors (the reject_detail of captions and corpus rows)."""
    from curation.final_filters.judging import decide, run_judge

    def down(patches):
        raise ConnectionError("http://127.0.0.1:9/v1: connection refused")

    d = decide(run_judge(down, [np.zeros((4, 4, 3), np.uint8)] * 3), max_flagged=1)
    assert d["decision"] == "judge_failed"
    assert d["reason"] == "3 of 3 judgements failed: ConnectionError: http://127.0.0.1:9/v1: connection refused"
    mixed = decide([{"status": "judge_failed", "reason": "invalid answer: not JSON"}, True,
                    {"status": "judge_failed", "reason": "invalid answer: not JSON"}], max_flagged=5)
    assert mixed["reason"] == "2 of 3 judgements failed: invalid answer: not JSON"


def test_upload_shard_refuses_entries_an_object_store_cannot_hold(tmp_path):
    """A shard with a symlink, a FIFO or a non-UTF-8 name would lose their rows on the way through
    an object store (keys are UTF-8, objects are regular files): the upload is refused before
    anything is written, naming them escaped; a clean shard uploads every file."""
    from curation.store import LocalStore, upload_shard
    from curation.store.backends import StoreError

    shard = tmp_path / "shard-00000"
    shard.mkdir()
    (shard / "a.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(32))
    (shard / ".hidden.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(32))
    store = LocalStore(tmp_path / "store")
    assert upload_shard(store, shard) == 2
    os.mkfifo(shard / "pipe.jpg")
    os.symlink(shard / "a.jpg", shard / "link.jpg")
    (shard / os.fsdecode(b"caf\xe9.jpg")).write_bytes(b"x")
    with pytest.raises(StoreError) as e:
        upload_shard(LocalStore(tmp_path / "store2"), shard)
    msg = str(e.value)
    assert "pipe.jpg (not a regular file)" in msg and "link.jpg (not a regular file)" in msg, msg
    assert "caf\\xe9.jpg (name not UTF-8)" in msg and "\n" not in msg, msg
    assert not (tmp_path / "store2").exists() or not any((tmp_path / "store2").rglob("*.jpg"))
