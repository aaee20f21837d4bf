"""What the captions stage hands on: releases, audit, lineage, ``uhr captions`` and the training export.

The whole test-profile pipeline (raw pool -> captions -> final corpus -> bench split), materialised
once per session on 40 synthetic images (two shards; ``materialised`` in conftest), copied into a
temporary data root. Then:

* a release is the passed final corpus minus the PixVerve-Bench ids, caption columns filled
  (``caption_record`` = a reference to the captions record with its provenance), release.json
  says how many bench images were held out and which stages the audit requires; the audit is
  OK, and names an image whose captions record changed after the release;
* lineage shows the captions provenance, the instance check, final-corpus and bench membership;
* ``uhr captions`` prints the whole record, ``--json`` keeps the documented contract;
* the training export (diffusers image folder) has one metadata line per training image, no
  bench image, hard links, and a rerun changes nothing;
* a release made on a data root without captions manifests (the old way) still audits OK,
  and so does one whose release.json predates ``required_stages``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curation.layout import DataLayout
from curation.store import LocalStore

pytestmark = pytest.mark.slow

CAPTION_STAGES = ("captions", "final_corpus", "bench_split")


def _rows(layout, stage):
    return [r for p in layout.manifests(stage) for r in pq.read_table(p).to_pylist()]


def _cli(*args):
    from cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def cap(materialised, tmp_path_factory):
    """A copy of the session's materialised test profile (40 images, two shards), released as c1."""
    from curation.release import make_release

    base = tmp_path_factory.mktemp("cap")
    data = materialised.copy(base / "data")
    store_root = data / "store"  # the default store of `uhr audit --data-root`
    layout, store = DataLayout.at(data), LocalStore(store_root)
    entry = make_release(layout, "c1", store, log=lambda *_: None)  # uploads the release's blobs
    return {"base": base, "data": data, "layout": layout, "store": store, "entry": entry, "run": materialised.out}


def _final(layout):
    return {r["image_id"]: r for r in _rows(layout, "final_corpus") if r["passed"]}


def test_release_is_the_final_corpus_minus_the_bench_with_captions(cap):
    from curation.release import LEGACY_REQUIRED_STAGES, read_release_info, read_release_manifest, release_rows, rows_digest
    from curation.stages.final import bench_ids, load_split

    layout = cap["layout"]
    assert len(cap["run"]["shards"]) == 2
    final, held = _final(layout), bench_ids(layout)
    assert held and held <= set(final), "the bench holds out images of the final corpus"
    rejected = {r["image_id"] for r in _rows(layout, "corpus_100mp") if r["passed"]} - set(final)
    assert rejected, "the instance check / captions leave some corpus images out"
    t = read_release_manifest(layout, "c1").to_pylist()
    ids = {r["image_id"] for r in t}
    assert ids == set(final) - held and not ids & held and not ids & rejected
    caps = {r["image_id"]: r for r in _rows(layout, "captions")}
    for r in t:
        assert r["short_caption"] == final[r["image_id"]]["short_caption"] and r["short_caption"]
        assert r["long_caption"] == caps[r["image_id"]]["long_caption"] and r["long_caption"]
        ref = json.loads(r["caption_record"])
        rec = json.loads(caps[r["image_id"]]["record"])
        assert ref["record_sha256"] == __import__("hashlib").sha256(caps[r["image_id"]]["record"].encode()).hexdigest()
        assert ref["manifest"] == f"manifests/captions/{r['shard']}.parquet"
        assert set(ref["provenance"]) == set(rec["provenance"])
        for k, p in ref["provenance"].items():
            assert (p["backend"], p["model"], p["prompt_hash"]) == tuple(rec["provenance"][k][f] for f in
                                                                         ("backend", "model", "prompt_hash"))
    info = read_release_info(layout, "c1")
    split = load_split(layout)
    assert info["source"] == "final_corpus"
    assert info["bench_split"]["n_held_out"] == len(held) and info["bench_split"]["version"] == split["version"]
    assert set(info["bench_split"]["image_ids"]) == held
    assert info["required_stages"] == [*LEGACY_REQUIRED_STAGES, "captions", "final_corpus"]
    assert cap["entry"]["bench_held_out"] == len(held) and cap["entry"]["required_stages"] == info["required_stages"]
    assert "uhr export-training" in info["training_export"]
    # deterministic: the same content, the same digest
    assert rows_digest(release_rows(layout)) == rows_digest(t) == cap["entry"]["manifest_sha256"]


def test_audit_requires_the_caption_stages_and_pins_the_record(cap):
    from curation.audit import audit_release
    from curation.manifest import CAPTIONS, to_table, write_manifest

    layout, store = cap["layout"], cap["store"]
    out = _cli("audit", "c1", "--data-root", str(cap["data"]), "--json", "--no-verify-hashes")
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output[out.output.index("{"):])
    n = rep["n_images"]
    assert rep["ok"] and n > 0
    for check in ("stage captions", "stage final_corpus", "caption record", "bench held out"):
        assert rep["checks"][check] == {"checked": n, "failed": 0}, check
    # a captions record changed (and its row rejected) after the release: named for that image
    victim = json.loads(json.dumps(pq.read_table(layout.release_dir("c1") / "manifest.parquet").to_pylist()[0]))
    path = layout.manifest("captions", victim["shard"])
    saved = path.read_bytes()
    try:
        rows = pq.read_table(path).to_pylist()
        for r in rows:
            if r["image_id"] == victim["image_id"]:
                rec = json.loads(r["record"])
                rec["long_caption"] = "a different caption"
                r.update(record=json.dumps(rec, sort_keys=True), passed=False, reject_reason="caption_failed")
        write_manifest(to_table(rows, CAPTIONS), path)
        bad = audit_release(layout, "c1", store, verify_hashes=False)
        fails = {(f.image_id, f.check) for f in bad.failures}
        assert fails == {(victim["image_id"], "caption record"), (victim["image_id"], "stage captions")}
    finally:
        path.write_bytes(saved)
    assert audit_release(layout, "c1", store, verify_hashes=False).ok


def test_lineage_shows_captions_provenance_final_corpus_and_bench(cap):
    layout = cap["layout"]
    t = pq.read_table(layout.release_dir("c1") / "manifest.parquet").to_pylist()
    img = t[0]
    rec = json.loads(next(r for r in _rows(layout, "captions") if r["image_id"] == img["image_id"])["record"])
    out = _cli("lineage", img["image_id"][:8], "--data-root", str(cap["data"]))
    assert out.exit_code == 0, out.output
    text = out.output
    line = next(ln for ln in text.splitlines() if "[captions]" in ln)
    assert "PASSED" in line and f"{len(rec['instances'])} instances" in line and "instance check pass" in line
    for field, p in rec["provenance"].items():
        assert f"{field} {p['backend']}/{p['model']}" in line, field
        if p["prompt_hash"]:
            assert p["prompt_hash"][:12] in line
    assert rec["tags"][0]["label"] in line
    assert "[final corpus] PASSED" in text and "in the final corpus" in text
    assert "training set: not in the bench split" in text and "in release c1" in text
    stages = [lk["stage"] for lk in json.loads(_cli("lineage", img["image_id"], "--data-root", str(cap["data"]),
                                                    "--json").output)["links"]]
    assert stages.index("corpus_100mp") < stages.index("captions") < stages.index("final_corpus") \
        < stages.index("bench_split") < stages.index("release")
    # a bench image: held out, in no release; a rejected one: why it left the final corpus
    from curation.stages.final import bench_ids

    bench = sorted(bench_ids(layout))[0]
    bt = _cli("lineage", bench, "--data-root", str(cap["data"])).output
    assert "held out for PixVerve-Bench" in bt and "in release" not in bt
    out_row = next(r for r in _rows(layout, "final_corpus") if not r["passed"])
    rt = _cli("lineage", out_row["image_id"], "--data-root", str(cap["data"])).output
    assert f"left out of the final corpus: {out_row['reject_reason']}" in rt and "[captions] REJECTED" in rt


def test_uhr_captions_text_and_json_contract(cap):
    layout = cap["layout"]
    row = next(r for r in _rows(layout, "final_corpus") if r["passed"])
    rec = json.loads(next(r for r in _rows(layout, "captions") if r["image_id"] == row["image_id"])["record"])
    js = _cli("captions", row["image_id"][:7], "--data-root", str(cap["data"]), "--json")
    assert js.exit_code == 0, js.output
    d = json.loads(js.output)
    for key in ("image_id", "tags", "instances", "aesthetics_analysis", "long_caption", "short_caption", "provenance"):
        assert key in d, key
    assert d["image_id"] == row["image_id"] and d["long_caption"] == row["long_caption"]
    assert d["short_caption"] == row["short_caption"] and d["tags"] == rec["tags"]
    assert d["instances"] and len(d["instances"]) == len(rec["instances"])
    for got, want in zip(d["instances"], rec["instances"]):
        for k in ("box", "mask_rle", "area", "description", "importance"):
            assert got[k] == want[k], k
        assert set(got["mask_rle"]) >= {"size", "counts"}
    assert d["aesthetics_analysis"] == rec["aesthetics_analysis"]
    assert set(d["provenance"]) >= {"tags", "long_caption", "short_caption", "aesthetics_analysis"}
    for p in d["provenance"].values():
        assert {"backend", "model", "prompt_hash"} <= set(p)
    assert d["instance_check"]["passed"] is True and d["final_corpus"]["passed"] is True
    text = _cli("captions", row["image_id"], "--data-root", str(cap["data"])).output
    assert row["image_id"] in text and row["long_caption"] in text and "instance check: pass" in text
    lc = rec["provenance"]["long_caption"]
    assert f"{lc['backend']}/{lc['model']} prompt {lc['prompt_hash'][:12]} ok" in text
    assert f"box {rec['instances'][0]['box']}" in text
    # the parent (raw) id of an upscaled image finds its captioned child; errors name the problem
    parent = _cli("captions", row["parent_id"], "--data-root", str(cap["data"]), "--json")
    assert json.loads(parent.output)["image_id"] == row["image_id"]
    short = _cli("captions", "abc", "--data-root", str(cap["data"]))
    assert short.exit_code != 0 and "at least 6" in short.output
    none = _cli("captions", "ffffffffff", "--data-root", str(cap["data"]))
    assert none.exit_code != 0 and "no captioned image id" in none.output


def test_training_export_is_the_final_corpus_minus_the_bench(cap, tmp_path):
    from curation.captioning.export import export_training_set
    from curation.stages.final import bench_ids

    layout = cap["layout"]
    final, held = _final(layout), bench_ids(layout)
    out_dir = cap["base"] / "train"  # same file system as the corpus: hard links
    first = _cli("export-training", str(out_dir), "--data-root", str(cap["data"]))
    assert first.exit_code == 0, first.output
    lines = [json.loads(x) for x in (out_dir / "metadata.jsonl").read_text().splitlines()]
    ids = [x["image_id"] for x in lines]
    assert sorted(ids) == sorted(set(final) - held) and not set(ids) & held
    corpus = {r["image_id"]: layout.resolve(r["output_path"]) for r in _rows(layout, "corpus_100mp") if r["passed"]}
    for x in lines:
        assert set(x) >= {"file_name", "text", "short_caption", "long_caption"}
        assert x["text"] == x["long_caption"] == final[x["image_id"]]["long_caption"]
        f = out_dir / x["file_name"]
        assert f.is_file() and os.path.samefile(f, corpus[x["image_id"]]) and f.stat().st_nlink >= 2
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([x["file_name"] for x in lines] + ["metadata.jsonl"])
    before = (out_dir / "metadata.jsonl").read_bytes()
    again = export_training_set(layout, out_dir)
    assert again["present"] == len(lines) and again["linked"] == again["removed"] == 0
    assert (out_dir / "metadata.jsonl").read_bytes() == before
    short = export_training_set(layout, out_dir, caption="short")
    assert all(json.loads(x)["text"] == json.loads(x)["short_caption"]
               for x in (out_dir / "metadata.jsonl").read_text().splitlines()) and short["linked"] == 0
    # from the release: the same set; an image no longer in the set is removed on the next export
    rel = export_training_set(layout, tmp_path / "rel", release="c1", store=cap["store"])
    assert rel["n_images"] == len(lines) and rel["bench_held_out"] == len(held)
    # a worker without the corpus files: a release's images come from the object store
    corpus_dir = cap["data"] / "corpus"
    shutil.move(corpus_dir, tmp_path / "corpus.away")
    try:
        fetched = export_training_set(layout, tmp_path / "fetched", release="c1", store=cap["store"])
    finally:
        shutil.move(tmp_path / "corpus.away", corpus_dir)
    assert fetched["fetched"] == len(lines)
    sha = {r["image_id"]: r["sha256"] for r in pq.read_table(layout.release_dir("c1") / "manifest.parquet").to_pylist()}
    for x in (tmp_path / "fetched" / "metadata.jsonl").read_text().splitlines():
        x = json.loads(x)
        got = __import__("hashlib").sha256((tmp_path / "fetched" / x["file_name"]).read_bytes()).hexdigest()
        assert got == sha[x["image_id"]]
    (out_dir / "metadata.jsonl").write_text((out_dir / "metadata.jsonl").read_text()
                                            + json.dumps({"file_name": "gone.tif"}) + "\n")
    (out_dir / "gone.tif").write_bytes(b"x")
    (out_dir / "keep.txt").write_text("not ours")
    assert export_training_set(layout, out_dir)["removed"] == 1
    assert not (out_dir / "gone.tif").exists() and (out_dir / "keep.txt").exists()


def test_a_release_without_captions_still_audits(cap, tmp_path):
    """A data root without captions manifests releases from corpus_100mp with null captions and
    the old required stages; a release.json without ``required_stages`` is audited with those too,
    even on a data root where captions now exist (its rejected images fail no check)."""
    from curation.audit import audit_release
    from curation.release import LEGACY_REQUIRED_STAGES, make_release, read_release_info, read_release_manifest

    old_root = tmp_path / "data"
    shutil.copytree(cap["data"], old_root, symlinks=True, ignore=shutil.ignore_patterns("dagster_home", "releases", "store"))
    for stage in CAPTION_STAGES:
        shutil.rmtree(old_root / "manifests" / stage)
    old = DataLayout.at(old_root)
    store = LocalStore(tmp_path / "store")
    make_release(old, "pre", store, log=lambda *_: None)
    info = read_release_info(old, "pre")
    t = read_release_manifest(old, "pre").to_pylist()
    passed = {r["image_id"] for r in _rows(old, "corpus_100mp") if r["passed"]}
    assert info["source"] == "corpus_100mp" and info["required_stages"] == list(LEGACY_REQUIRED_STAGES)
    assert "bench_split" not in info and "no captions" in info["captions"]
    assert {r["image_id"] for r in t} == passed and all(r["caption_record"] is None for r in t)
    rep = audit_release(old, "pre", store, verify_hashes=False)
    assert rep.ok, rep.text()
    assert "stage captions" not in rep.checked and "caption record" not in rep.checked
    # the same release, its release.json from before required_stages, on the data root with captions
    layout = cap["layout"]
    shutil.copytree(old.release_dir("pre"), layout.release_dir("pre"))
    for d in (layout.release_dir("pre") / "release.json", layout.release_index() / "pre.json"):
        if d.parent == layout.release_index():
            shutil.copy(old.release_index() / "pre.json", d)
        j = json.loads(d.read_text())
        j.pop("required_stages", None)
        d.write_text(json.dumps(j))
    try:
        rejected = passed - set(_final(layout))
        assert rejected & {r["image_id"] for r in t}, "the old release holds images the captions stage rejected"
        rep = audit_release(layout, "pre", store, verify_hashes=False)
        assert rep.ok, rep.text()
        assert rep.checked["stage corpus_100mp"] == len(t) and "stage captions" not in rep.checked
        # had it required the caption stages, its rejected images would be named
        j = json.loads((layout.release_dir("pre") / "release.json").read_text())
        j["required_stages"] = [*LEGACY_REQUIRED_STAGES, "captions", "final_corpus"]
        (layout.release_dir("pre") / "release.json").write_text(json.dumps(j))
        strict = audit_release(layout, "pre", store, verify_hashes=False)
        assert {f.image_id for f in strict.failures if f.check == "stage final_corpus"} == rejected & {r["image_id"] for r in t}
    finally:
        shutil.rmtree(layout.release_dir("pre"))
        (layout.release_index() / "pre.json").unlink()
