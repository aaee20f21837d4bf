"""Names and paths (issue 15, item 4): one strict validator for release names (a full match that
is also a valid git ref and a DVC path of its own), image ids that are hex only, traversal
refused by every command that takes a name or an id, and a release that fails at any step
(manifest, DVC push, git tag, releases table, the SQL record) leaves nothing behind."""

import hashlib
import os
import subprocess

import pytest
from click.testing import CliRunner

from curation.layout import DataLayout
from curation.release import ReleaseError, check_name, name_problem
from curation.store import LocalStore

GOOD = ["v1", "V2", "2026-12-05", "corpus_v1.2", "a", "a" * 64, "rc-1.lock2", "x.y.z", "A.lockx", "a.dvcx"]
BAD = ["", "a..b", "v2.lock", "V2.LOCK", "x.", "v1\n", "v1\r", "\nv1", "v1 x", "v\x7f1", "v1/../v1", "../v1",
       "..", ".", ".hidden", "-rm", "_index", "a/b", "a\\b", "a:b", "a~1", "a^1", "a?", "a*", "a[1", "a@{1", "@",
       "a" * 65, "x.dvc", "releases.parquet", "v1\x00", "v\u00e9"]


def _git_accepts(name: str) -> bool:
    return subprocess.run(["git", "check-ref-format", f"refs/tags/release/{name}"], capture_output=True).returncode == 0


def test_release_names_full_match_and_every_accepted_name_is_a_git_ref():
    """Hostile names are refused by name with their rule (a trailing newline included: ``$`` used
    to accept it), good ones pass, and every name the validator accepts is one ``git
    check-ref-format`` accepts (``a..b``, ``v2.lock`` and ``x.`` used to pass it, then fail at
    ``git tag``)."""
    for name in GOOD:
        assert check_name(name) == name and _git_accepts(name), name
    for name in BAD:
        with pytest.raises(ReleaseError, match="bad release name"):
            check_name(name)
    assert "'..'" in name_problem("a..b") and "'.lock'" in name_problem("v2.lock")
    assert "end with '.'" in name_problem("x.") and "newlines" in name_problem("v1\n")
    assert "DVC file of release 'x'" in name_problem("x.dvc") and "reserved" in name_problem("releases.parquet")
    assert all(not _git_accepts(n) for n in ["a..b", "v2.lock", "x.", "a@{1", "a:b"])  # what git itself refuses
    assert name_problem(None) and name_problem(7)


def test_a_bad_name_writes_nothing(tmp_path):
    """make_release refuses a bad name before it reads or writes anything (the data root stays
    empty; a good name on the same empty root fails for another reason: nothing to release)."""
    from curation.release import make_release

    layout, store = DataLayout.at(tmp_path / "data"), LocalStore(tmp_path / "store")
    for name in ("a..b", "v2.lock", "x.", "v1\n", "../x"):
        with pytest.raises(ReleaseError, match="bad release name"):
            make_release(layout, name, store, log=lambda *_: None)
    assert not (tmp_path / "data").exists() and not (tmp_path / "store").exists()
    with pytest.raises(ReleaseError, match="nothing to release"):
        make_release(layout, "v1", store, log=lambda *_: None)


def test_readers_refuse_traversal(tmp_path):
    """Every reader of a release by name and the audit refuse a name that would leave
    ``releases/`` -- even one whose target exists (``v1/../v1``)."""
    from curation.audit import audit_release
    from curation.lineage import resolve_image_id
    from curation.lineage.core import LineageContext
    from curation.release import read_entry, read_release_info, read_release_manifest

    layout, store = DataLayout.at(tmp_path), LocalStore(tmp_path / "store")
    (layout.release_index() / "v1").mkdir(parents=True)  # so that _index/v1/../v1.json resolves
    (layout.release_index() / "v1.json").write_text('{"name": "v1"}')
    for fn in (read_entry, read_release_info, read_release_manifest, audit_release):
        for name in ("v1/../v1", "../../../../etc/passwd", "v1\n"):
            with pytest.raises(ReleaseError, match="bad release name"):
                fn(layout, name, store)
    ctx = LineageContext(layout, store)
    for bad in ("../../etc/passwd", "abcdef/../x", "12345", "abcdefg"):
        with pytest.raises(ValueError, match="bad image id"):
            resolve_image_id(ctx, bad)


@pytest.mark.parametrize("args", [
    ["audit", "v1/../v1"], ["audit", "../../../../etc/passwd"], ["release", "a..b"], ["release", "v2.lock"],
    ["release", "x."], ["release", "v1\n"], ["lineage", "../../etc/passwd"], ["export-training", "OUT", "--release", "../x"],
    ["captions", "../../etc/passwd"], ["train", "I-Full", "--release", "v1/../v1"],
])
def test_cli_refuses_bad_names_and_ids_in_one_line(tmp_path, args):
    """``uhr audit v1/../v1`` used to answer OK, ``uhr audit ../../../../etc/passwd`` ended in a
    traceback, ``uhr release a..b`` started a Dagster run: now one line, exit 1, nothing written."""
    from cli.main import cli

    data = tmp_path / "data"
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    res = CliRunner().invoke(cli, [*args, "--data-root", str(data)])
    assert res.exit_code == 1, (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("Error: bad "), res.stderr
    assert not data.exists() and not (tmp_path / "out").exists()


# -- a failed release leaves nothing behind ---------------------------------------------------------

class Boom(RuntimeError):
    pass


def _mini_data_root(data) -> None:
    """A data root holding what a release reads, nothing more: two raw files and their raw_pool
    rows, two passed corpus_100mp outputs (no final_corpus: released from the corpus)."""
    from curation.manifest import SCHEMAS, to_table, write_manifest

    layout, shard = DataLayout.at(data), "shard-00000"
    raw, corpus = [], []
    for i in range(2):
        src, out = data / "raw" / shard / f"{i}.jpg", data / "corpus" / f"{i}.tif"
        for path, body in ((src, b"raw %d" % i), (out, b"upscaled %d" % i)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        rs, cs = hashlib.sha256(src.read_bytes()).hexdigest(), hashlib.sha256(out.read_bytes()).hexdigest()
        raw.append({"image_id": rs[:20], "shard": shard, "source_path": layout.rel(src), "sha256": rs,
                    "licence": "cc0", "origin": "test", "passed": True, "config_hash": "c", "code_version": "v"})
        corpus.append({"image_id": cs[:20], "parent_id": rs[:20], "shard": shard, "sha256": cs,
                       "output_path": layout.rel(out), "file_format": "tif", "width": 10000, "height": 10000,
                       "megapixels": 100.0, "tier": "2x", "passed": True, "config_hash": "c", "code_version": "v"})
    import pyarrow as pa

    def filled(rows, schema):  # the non-nullable columns the test does not care about: a zero of their type
        zero = {f.name: (False if pa.types.is_boolean(f.type) else "" if pa.types.is_string(f.type)
                         else 0.0 if pa.types.is_floating(f.type) else 0) for f in schema if not f.nullable}
        return [{**{k: v for k, v in zero.items() if k not in r}, **r} for r in rows]

    for stage, rows in (("raw_pool", raw), ("corpus_100mp", corpus)):
        write_manifest(to_table(filled(rows, SCHEMAS[stage]), SCHEMAS[stage]), layout.manifest(stage, shard))


@pytest.fixture()
def repo(tmp_path):
    """A git + DVC repository whose data root holds :func:`_mini_data_root`, a local DVC remote and a
    folder object store."""
    from curation.dvc_repo import DvcRepo

    root = tmp_path / "repo"
    root.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@localhost", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@localhost")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    (root / ".gitignore").write_text("/data/\n")
    _mini_data_root(root / "data")
    dvc = DvcRepo.for_data_root(root / "data", repo=root, env=env)
    return {"root": root, "layout": DataLayout.at(root / "data"), "dvc": dvc, "store": LocalStore(tmp_path / "store"),
            "remote": {"name": "local", "url": str(tmp_path / "dvc-remote")}}


def _state(r) -> dict:
    """Every file of the repository and data root (bytes), the store's keys, the tags and the lineage
    index's release entries -- minus the content-addressed parts a failed release may keep (image
    blobs, DVC cache, DVC remote, git objects) and the DVC remote's local config."""
    root = r["root"]
    skip = (".git/", ".dvc/", "data/index/", "data/dagster_home/")
    files = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
             if p.is_file() and not p.relative_to(root).as_posix().startswith(skip)}
    dirs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()
                  and not p.relative_to(root).as_posix().startswith(skip))
    keys = {k: r["store"].sha256(k) for k in r["store"].list("") if not k.startswith("blobs/")}
    tags = subprocess.run(["git", "-C", str(root), "tag", "-l"], capture_output=True, text=True).stdout.split()
    from curation.lineage.index import IdIndex

    idx = IdIndex.open(r["layout"])
    indexed = idx.db.execute("SELECT stage, name FROM files WHERE stage LIKE 'release:%'").fetchall() if idx else []
    if idx:
        idx.close()
    return {"files": files, "dirs": dirs, "store": keys, "tags": tags, "index": sorted(indexed)}


@pytest.mark.slow
def test_a_release_failing_at_each_step_leaves_nothing_and_a_retry_succeeds(repo, monkeypatch):
    """A failure injected at each step -- the release manifest, ``dvc push``, right after the git tag
    was made, the releases table (the store's copy of the entry), the SQL record -- raises the
    error, and the repository, data root, store, tags and lineage index are as before the attempt
    (no release folder, ``.dvc`` file, tag, table entry or row). Then the same release succeeds."""
    import curation.release as release
    from curation.dvc_repo import DvcRepo

    layout, store, dvc = repo["layout"], repo["store"], repo["dvc"]

    def attempt(**kw):
        return release.make_release(layout, "r1", store, dvc=dvc, remote=repo["remote"], log=lambda *_: None, **kw)

    real_write, real_tag, real_put = release.write_manifest, DvcRepo.tag_release, LocalStore.put_file

    def bad_manifest(table, path, **kw):
        if path.name == "manifest.parquet":
            raise Boom("disk full writing the release manifest")
        return real_write(table, path, **kw)

    def bad_push(self, dvc_file, remote=None):
        raise Boom("dvc push: remote unreachable")

    def bad_tag(self, tag, files, message):
        real_tag(self, tag, files, message)  # the tag exists, then the step fails
        raise Boom("git tag: killed after the tag")

    def bad_table(self, key, path, *a, **kw):
        if key.startswith("releases/_index/"):
            raise Boom("store: the releases table entry could not be written")
        return real_put(self, key, path, *a, **kw)

    def bad_record(entry):
        raise Boom("postgres: connection refused")

    before = _state(repo)
    assert before["tags"] == [] and not layout.release_dir("r1").exists()
    steps = [("manifest", release, "write_manifest", bad_manifest, {}),
             ("dvc push", DvcRepo, "push", bad_push, {}),
             ("git tag", DvcRepo, "tag_release", bad_tag, {}),
             ("releases table", LocalStore, "put_file", bad_table, {}),
             ("sql record", None, None, None, {"record": bad_record})]
    for step, owner, attr, fake, kw in steps:
        with monkeypatch.context() as m:
            if owner is not None:
                m.setattr(owner, attr, fake)
            with pytest.raises(Boom):
                attempt(**kw)
        after = _state(repo)
        assert after == before, step
        assert not layout.release_dir("r1").exists() and not dvc.dvc_file_for("r1").exists(), step
        assert dvc.tag_commit("release/r1") is None and release.read_entry(layout, "r1") is None, step
        assert "r1" not in [e["name"] for e in release.releases_table(layout)], step
    entry = attempt()
    assert entry["name"] == "r1" and entry["dvc"]["pushed"] and dvc.tag_commit("release/r1") == entry["git"]["commit"]
    assert release.read_entry(layout, "r1", store)["manifest_sha256"] == entry["manifest_sha256"]
    final = _state(repo)
    assert "releases/r1.dvc" in final["files"] and final["tags"] == ["release/r1"]
    assert final["index"] == [("release:r1", "manifest.parquet")]
