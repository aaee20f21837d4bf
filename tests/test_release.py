"""Releases, lineage and audit on a real (test-profile) pipeline run.

The pipeline runs once (raw pool -> 100 MP corpus -> captions -> final corpus -> bench split)
into a temporary data root; the release (the final corpus minus the bench split)
goes through the Dagster ``release_job`` into a folder object store, a DVC repo created at the
data root (git + DVC) and a local DVC remote. Then: lineage of a derived image and of its raw
parent, the audit (clean, then with a corrupted blob, a deleted blob and a rejected stage row),
immutable names, ``dvc pull`` from the tag, a checkpoint recorded in MLflow showing up in the
lineage, and a new link provider joining the chain and the audit without other changes.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance

from curation.layout import DataLayout
from curation.store import LocalStore, blob_key

pytestmark = pytest.mark.slow


def _rows(layout, stage):
    return [r for p in layout.manifests(stage) for r in pq.read_table(p).to_pylist()]


@pytest.fixture(scope="module")
def rel(materialised, tmp_path_factory):
    """A copy of the session's materialised test profile (two shards; a few images pass the instance
    check), released as v1 through ``release_job`` on the copy's Dagster instance."""
    from orchestration.definitions import build_definitions
    from orchestration.resources import AestheticModels, CurationSettings, DVCRemote, ObjectStoreResource
    from orchestration.runs import instance_for

    base = tmp_path_factory.mktemp("rel")
    data = materialised.copy(base / "data")
    raw = data / "raw"
    store_root, remote = base / "store", base / "dvc-remote"
    defs = build_definitions({
        "settings": CurationSettings(data_root=str(data), raw_root=str(raw), profile="test"),
        "aesthetics": AestheticModels(),
        "store": ObjectStoreResource(local_root=str(store_root)),
        "dvc": DVCRemote(url=str(remote), name="local"),
    })
    instance = instance_for(data)
    res = defs.resolve_job_def("release_job").execute_in_process(
        run_config={"ops": {"corpus_release": {"config": {"name": "v1"}}}}, instance=instance)
    yield {"defs": defs, "instance": instance, "data": data, "layout": DataLayout.at(data),
           "store": LocalStore(store_root), "remote": remote, "res": res, "base": base}
    instance.dispose()


def _cli(*args, env=None):
    from cli.main import cli

    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_release_freezes_the_passed_corpus(rel):
    from curation.release import read_entry, read_release_manifest

    res, layout, store = rel["res"], rel["layout"], rel["store"]
    assert res.success
    from curation.stages.final import bench_ids

    passed = [r for r in _rows(layout, "final_corpus") if r["passed"]]
    held = bench_ids(layout)
    assert passed and held, "the test pipeline must pass some images and hold some out for the bench"
    entry = read_entry(layout, "v1")
    t = read_release_manifest(layout, "v1").to_pylist()
    assert {r["image_id"] for r in t} == {r["image_id"] for r in passed} - held and entry["n_images"] == len(t)
    assert entry["bench_held_out"] == len(held & {r["image_id"] for r in passed})
    raw = {r["image_id"]: r for r in _rows(layout, "raw_pool") if r["passed"]}
    final = {r["image_id"]: r for r in passed}
    for r in t:
        assert store.exists(blob_key(r["sha256"])) and store.exists(blob_key(r["raw_sha256"]))
        assert r["licence"] == raw[r["parent_id"]]["licence"] and r["raw_sha256"] == raw[r["parent_id"]]["sha256"]
        assert r["megapixels"] >= 100 * 0.125 ** 2 * 0.99
        assert r["short_caption"] == final[r["image_id"]]["short_caption"] and json.loads(r["caption_record"])["provenance"]
    assert "captions stage" in entry["captions"] and "captions" in entry["required_stages"]
    # DVC: tracked, in the cache and pushed to the remote
    dvc_file = Path(entry["dvc"]["repo"]) / entry["dvc"]["file"]
    md5 = entry["dvc"]["md5"]
    assert dvc_file.exists() and md5.endswith(".dir") and entry["dvc"]["pushed"]
    assert (rel["remote"] / "files" / "md5" / md5[:2] / md5[2:]).exists()
    # git tag on a commit holding the .dvc file; the checkout is untouched
    git = ["git", "-C", str(rel["data"])]
    assert subprocess.run(git + ["rev-parse", "release/v1^{commit}"], capture_output=True, text=True).stdout.strip() \
        == entry["git"]["commit"]
    held = subprocess.run(git + ["show", "release/v1:releases/v1.dvc"], capture_output=True, text=True).stdout
    assert md5 in held
    assert subprocess.run(git + ["rev-parse", "-q", "--verify", "HEAD"], capture_output=True).returncode != 0
    # in the store and in the releases table; the asset's audit check passed
    assert store.exists("releases/_index/v1.json") and store.exists("releases/v1/manifest.parquet")
    assert [e["name"] for e in pq.read_table(layout.root / "releases" / "releases.parquet").to_pylist()] == ["v1"]
    checks = res.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["release_audit"] and checks[0].passed
    md = res.asset_materializations_for_node("corpus_release")[0].metadata
    assert md["dagster/row_count"].value == len(t) and Path(md["lineage_file"].value).exists()


def test_same_name_same_content_is_a_no_op_other_content_is_refused(rel, monkeypatch):
    import curation.release as release

    layout, store = rel["layout"], rel["store"]
    again = release.make_release(layout, "v1", store, log=lambda *_: None)
    assert again["existing"] and again["manifest_sha256"] == release.read_entry(layout, "v1")["manifest_sha256"]
    real = release.release_plan

    def one_less(lay):
        rows, info = real(lay)
        return rows[:-1], info

    monkeypatch.setattr(release, "release_plan", one_less)
    with pytest.raises(release.ReleaseError, match="immutable"):
        release.make_release(layout, "v1", store, log=lambda *_: None)
    with pytest.raises(release.ReleaseError, match="bad release name"):
        release.make_release(layout, "../x", store, log=lambda *_: None)


def test_lineage_of_a_derived_image_and_of_its_raw_parent(rel):
    layout = rel["layout"]
    released = set(pq.read_table(layout.release_dir("v1") / "manifest.parquet").column("image_id").to_pylist())
    rows = [r for r in _rows(layout, "corpus_100mp") if r["passed"] and r["image_id"] in released]
    derived = next((r for r in rows if r["tier"] in ("2x", "4x")), None)
    assert derived is not None, "the test pipeline releases at least one upscaled image"
    raw = {r["image_id"]: r for r in _rows(layout, "raw_pool") if r["passed"]}[derived["parent_id"]]
    out = _cli("lineage", derived["image_id"][:10], "--data-root", str(rel["data"]))
    assert out.exit_code == 0, out.output
    text = out.output
    for needle in (raw["source_path"], raw["licence"], raw["sha256"], f"upscaled {derived['scale']}x",
                   "entropy", ">=", "in release v1", "release/v1", derived["sha256"]):
        assert needle in text, (needle, text)
    for parent_query in (derived["parent_id"], derived["image_id"]):
        js = json.loads(_cli("lineage", parent_query, "--data-root", str(rel["data"]), "--json").output)
        stages = [lk["stage"] for lk in js["links"]]
        assert stages[:4] == ["raw_pool", "image_scores", "candidate_pool", "corpus_100mp"] and "release" in stages
        assert stages.index("captions") < stages.index("final_corpus") < stages.index("release")
        assert {"parent": derived["parent_id"], "child": derived["image_id"]} in js["edges"]
        cp = next(lk for lk in js["links"] if lk["stage"] == "candidate_pool")
        assert cp["details"]["entropy"] >= cp["details"]["entropy_threshold"]
        sc = next(lk for lk in js["links"] if lk["stage"] == "image_scores")
        assert sc["details"]["limits"]["min_laplacian_var"] == 10  # from the config snapshot the row ran with
    bad = _cli("lineage", "ffffffffff", "--data-root", str(rel["data"]))
    assert bad.exit_code != 0 and "no image id" in bad.output


def test_audit_passes_then_names_a_corrupted_blob_a_missing_blob_and_a_rejected_row(rel):
    layout, store = rel["layout"], rel["store"]
    ok = _cli("audit", "v1", "--data-root", str(rel["data"]), env={"UHR_STORE_ROOT": str(store.root)})
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output
    t = pq.read_table(layout.release_dir("v1") / "manifest.parquet").to_pylist()
    # the release must hold two images with distinct blobs: one is corrupted, the other deleted
    assert len({r["sha256"] for r in t}) >= 2, "the test pipeline must release at least two distinct images"
    victim, other = t[0], next(r for r in t if r["sha256"] != t[0]["sha256"])
    path = store.root / blob_key(victim["sha256"])
    gone = store.root / blob_key(other["sha256"])
    saved = path.read_bytes()
    cand_path = next(p for p in layout.manifests("candidate_pool")
                     if victim["parent_id"] in pq.read_table(p).column("image_id").to_pylist())
    cand_saved = cand_path.read_bytes()
    try:
        path.write_bytes(saved[:-10] + b"0123456789")  # same size, other bytes
        shutil.move(gone, gone.with_suffix(".bak"))
        tb = pq.read_table(cand_path).to_pylist()
        for r in tb:
            if r["image_id"] == victim["parent_id"]:
                r["passed"], r["reject_reason"] = False, "low_entropy"
        from curation.manifest import CANDIDATE_POOL, to_table, write_manifest

        write_manifest(to_table(tb, CANDIDATE_POOL), cand_path)
        bad = _cli("audit", "v1", "--data-root", str(rel["data"]), "--json", env={"UHR_STORE_ROOT": str(store.root)})
        assert bad.exit_code == 1
        rep = json.loads(bad.output[bad.output.index("{"):])
        fails = {(f["image_id"], f["check"]) for f in rep["failures"]}
        assert (victim["image_id"], "blob") in fails
        assert any("hashes to" in f["detail"] for f in rep["failures"] if f["image_id"] == victim["image_id"])
        assert (victim["image_id"], "stage candidate_pool") in fails
        assert (other["image_id"], "blob") in fails
        assert any("missing" in f["detail"] for f in rep["failures"] if f["image_id"] == other["image_id"])
        assert {f["image_id"] for f in rep["failures"]} == {victim["image_id"], other["image_id"]}
    finally:
        path.write_bytes(saved)
        cand_path.write_bytes(cand_saved)
        if gone.with_suffix(".bak").exists():
            shutil.move(gone.with_suffix(".bak"), gone)
    again = _cli("audit", "v1", "--data-root", str(rel["data"]), env={"UHR_STORE_ROOT": str(store.root)})
    assert again.exit_code == 0, again.output


def test_tag_and_dvc_pull_bring_the_release_back(rel):
    from curation.release import read_entry, rows_digest

    layout = rel["layout"]
    entry = read_entry(layout, "v1")
    folder = layout.release_dir("v1")
    shutil.rmtree(folder)
    subprocess.run(["dvc", "pull", "-q", "releases/v1.dvc"], cwd=rel["data"], check=True,
                   env={**__import__("os").environ, "PATH": f"{Path(__import__('sys').executable).parent}:"
                        + __import__("os").environ.get("PATH", "")})
    rows = pq.read_table(folder / "manifest.parquet").to_pylist()
    assert rows_digest(rows) == entry["manifest_sha256"]


def test_checkpoint_trained_on_the_release_appears_in_lineage(rel, tmp_path):
    import mlflow

    from curation.release import read_entry, release_tags

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    entry = read_entry(rel["layout"], "v1")
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.create_experiment("train")
    run = client.create_run(exp, tags={**release_tags(entry), "uhrforge.scheme": "scheme-I-lora", "uhrforge.tier": "4K"},
                            run_name="ckpt-4k")
    bench = client.create_run(exp, tags={"uhrforge.checkpoint_run": run.info.run_id})
    client.log_metric(bench.info.run_id, "fid", 12.5)
    image = pq.read_table(rel["layout"].release_dir("v1") / "manifest.parquet").column("image_id")[0].as_py()
    out = _cli("lineage", image, "--data-root", str(rel["data"]), "--tracking-uri", uri)
    assert out.exit_code == 0, out.output
    assert f"checkpoint run {run.info.run_id}" in out.output and "ckpt-4k" in out.output and "fid 12.5" in out.output


def test_a_new_stage_adds_its_link_and_joins_the_audit(rel):
    from curation.audit import audit_release
    from curation.lineage import LineageContext, Link, LinkProvider, lineage, register_link_provider
    from curation.lineage import core
    from curation.stages.table import STAGES

    @register_link_provider
    class FakeCaptions(LinkProvider):
        stage, order, required, title = "captions_test", 50, True, "captions"

        def links(self, ctx, ids):
            return [Link(self.stage, i, "passed", f"caption of {i}") for i in sorted(ids) if i[0] in "0123456789"]

    try:
        layout, store = rel["layout"], rel["store"]
        t = pq.read_table(layout.release_dir("v1") / "manifest.parquet").to_pylist()
        for r in t:
            stages = [lk.stage for lk in lineage(LineageContext(layout, store), r["image_id"]).links]
            if any(i[0] in "0123456789" for i in (r["image_id"], r["parent_id"])):
                # not in the stage table: after every table stage's links, before the releases
                assert stages.index("captions_test") == max(i for i, s in enumerate(stages) if s in STAGES) + 1
                assert stages[-1] == "release"
            else:
                assert "captions_test" not in stages
        report = audit_release(layout, "v1", store, verify_hashes=False)
        without = {r["image_id"] for r in t
                   if not any(i[0] in "0123456789" for i in (r["image_id"], r["parent_id"]))}
        assert {f.image_id for f in report.failures if f.check == "stage captions_test"} == without
        assert report.checked["stage captions_test"] == len(t)
    finally:
        core._PROVIDERS.unregister("captions_test")


def test_uhr_release_command_runs_the_asset_on_the_data_root_instance(rel, monkeypatch, tmp_path):
    import os

    for k in ("UHR_DATA_ROOT", "UHR_PROFILE", "UHR_RAW_ROOT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))  # not used: the data root's instance is
    monkeypatch.setenv("UHR_STORE_ROOT", str(rel["store"].root))
    monkeypatch.setenv("UHR_DVC_REMOTE", str(rel["remote"]))
    before = dict(os.environ)
    out = _cli("release", "v2", "--data-root", str(rel["data"]), "--profile", "test", "--no-tag")
    assert out.exit_code == 0, out.output
    assert dict(os.environ) == before, "the CLI configures resources, it never writes the environment"
    assert "release v2:" in out.output and "audit: OK" in out.output and "git tag none" in out.output
    from curation.release import read_entry, releases_table

    e1, e2 = read_entry(rel["layout"], "v1"), read_entry(rel["layout"], "v2")
    assert e2["manifest_sha256"] == e1["manifest_sha256"] and e2["git"] is None and e2["dvc"]["pushed"]
    assert [e["name"] for e in releases_table(rel["layout"])] == ["v1", "v2"]
    inst = DagsterInstance.from_config(str(rel["data"] / "dagster_home"))
    assert inst.get_latest_materialization_event(__import__("dagster").AssetKey("corpus_release")) is not None
    assert not (tmp_path / "elsewhere").exists()
    listed = _cli("releases", "--data-root", str(rel["data"]))
    assert "v1" in listed.output and "v2" in listed.output


def test_release_with_nothing_to_release_fails_with_the_reason(tmp_path, monkeypatch):
    from cli.main import cli

    for k in ("UHR_DATA_ROOT", "UHR_PROFILE", "UHR_RAW_ROOT", "DAGSTER_HOME", "UHR_STORE_ROOT"):
        monkeypatch.delenv(k, raising=False)
    out = CliRunner().invoke(cli, ["release", "x1", "--data-root", str(tmp_path / "empty")])
    assert out.exit_code != 0 and "nothing to release: no passed corpus_100mp rows" in out.output
    audit = CliRunner().invoke(cli, ["audit", "x1", "--data-root", str(tmp_path / "empty")])
    assert audit.exit_code == 1 and "not in the releases table" in audit.output


def test_release_tag_leaves_branch_index_and_working_tree_untouched(materialised, tmp_path, monkeypatch):
    """The git tag of a release, in a repository with history on a branch and a dirty checkout (a
    staged edit, a staged new file, an unstaged edit, an untracked file): the branch, HEAD, the
    index (byte for byte), the working tree and the other refs are the same after the tag as just
    before it; the tagged commit is the branch tip + the release's .dvc file (+ DVC's config files
    the tip lacks), none of the staged or unstaged changes."""
    import hashlib
    import os

    from curation.dvc_repo import DvcRepo
    from curation.release import make_release

    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@localhost", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@localhost", GIT_OPTIONAL_LOCKS="0")  # status/diff never rewrite the index

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env,
                              check=True).stdout

    git("init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("/data/\n")
    (repo / "README.md").write_text("v1\n")
    (repo / "notes.txt").write_text("n1\n")
    git("add", ".")
    git("commit", "-qm", "first")
    git("checkout", "-qb", "feature")
    (repo / "README.md").write_text("v2\n")
    git("commit", "-qam", "second")
    tip = git("rev-parse", "HEAD").strip()
    materialised.copy(repo / "data")
    dvc = DvcRepo.for_data_root(repo / "data", repo=repo, env=env)  # dvc init in the git repo
    (repo / "README.md").write_text("v3, staged\n")
    (repo / "new.txt").write_text("staged new file\n")
    git("add", "README.md", "new.txt")
    (repo / "notes.txt").write_text("n2, not staged\n")
    (repo / "scratch.txt").write_text("untracked\n")

    def state() -> dict:
        files = {p.relative_to(repo).as_posix(): p.read_bytes() for p in repo.rglob("*")
                 if p.is_file() and p.relative_to(repo).parts[0] not in (".git", "data")}
        refs = [r for r in git("for-each-ref", "--format=%(refname) %(objectname)").splitlines()
                if not r.startswith("refs/tags/release/")]
        return {"head": git("symbolic-ref", "HEAD").strip(), "tip": git("rev-parse", "HEAD").strip(), "refs": refs,
                "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
                "staged": git("diff", "--cached", "--name-status"), "unstaged": git("diff"),
                "status": git("status", "--porcelain=v1", "--untracked-files=all"), "files": files}

    seen = {}
    real = DvcRepo.tag_release

    def tag_release(self, tag, files, message):  # the state just before and just after the tag
        seen["before"] = state()
        commit = real(self, tag, files, message)
        seen["after"] = state()
        return commit

    monkeypatch.setattr(DvcRepo, "tag_release", tag_release)
    entry = make_release(DataLayout.at(repo / "data"), "g1", LocalStore(tmp_path / "store"), dvc=dvc, push=False,
                         log=lambda *_: None)
    before, after = seen["before"], seen["after"]
    assert before["head"] == "refs/heads/feature" and before["tip"] == tip
    assert "M  README.md" in before["status"] and "A  new.txt" in before["status"]
    assert " M notes.txt" in before["status"] and "?? scratch.txt" in before["status"]
    for k in before:
        assert after[k] == before[k], k
    commit = entry["git"]["commit"]
    assert git("rev-parse", "release/g1^{commit}").strip() == commit
    assert git("rev-parse", f"{commit}^").strip() == tip  # on the branch tip, not on the index
    in_tag = set(git("ls-tree", "-r", "--name-only", commit).split())
    in_tip = set(git("ls-tree", "-r", "--name-only", tip).split())
    assert in_tag - in_tip == {"releases/g1.dvc", ".dvc/config", ".dvc/.gitignore", ".dvcignore"}
    assert in_tip <= in_tag and "new.txt" not in in_tag and "scratch.txt" not in in_tag
    assert git("show", f"{commit}:README.md") == "v2\n" and git("show", f"{commit}:notes.txt") == "n1\n"
    assert entry["dvc"]["md5"] in git("show", f"{commit}:releases/g1.dvc")
    assert git("rev-parse", "HEAD").strip() == tip and git("symbolic-ref", "HEAD").strip() == "refs/heads/feature"
