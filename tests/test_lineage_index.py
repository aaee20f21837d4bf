"""The lineage id index (curation/lineage/index.py): built when a manifest is committed, rebuilt
when missing, never stale after a re-run that changes a shard (through the commit hook, behind
its back, or in place), and lineage answers identical with and without it."""

import hashlib
import os

import pyarrow.parquet as pq
import pytest

from curation.layout import DataLayout
from curation.lineage import LineageContext, lineage, lineage_batch, link_providers, resolve_image_id
from curation.lineage import index as index_mod
from curation.lineage.index import IdIndex
from curation.manifest import CANDIDATE_POOL, CORPUS, IMAGE_SCORES, RAW_POOL, to_table, write_manifest

COMMON = {"config_hash": "c0ffee", "code_version": "test"}
STAGES = ("raw_pool", "image_scores", "candidate_pool", "corpus_100mp")


def _sha(*parts) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def shard_rows(s: int, n: int, salt: str = "") -> dict[str, list[dict]]:
    """One shard of every lineage stage: n raw images, every third a candidate, candidates upscaled
    (new id, parent = the raw id) or archived (same id)."""
    shard = f"shard-{s:03d}"
    out = {st: [] for st in STAGES}
    for i in range(n):
        sha = _sha(salt, s, i)
        iid = sha[:20]
        src = f"/pool/{shard}/{salt}{i}.jpg"
        out["raw_pool"].append({"image_id": iid, "shard": shard, "source_path": src, "sha256": sha, "licence": "CC0-1.0",
                                "file_bytes": 1, "passed": True, **COMMON})
        out["image_scores"].append({"image_id": iid, "shard": shard, "source_path": src, "entropy": 7.0 + i / n,
                                    "passed": i % 7 != 3, "reject_reason": None if i % 7 != 3 else "blurred", **COMMON})
        keep = i % 3 == 0
        out["candidate_pool"].append({"image_id": iid, "shard": shard, "source_path": src, "entropy": 7.0 + i / n,
                                      "entropy_threshold": 7.0, "aesthetics_applied": False, "threshold_version": "t1",
                                      "passed": keep, "reject_reason": None if keep else "low_entropy", **COMMON})
        if keep:
            up = i % 2 == 0
            osha = _sha("out", salt, s, i) if up else sha
            out["corpus_100mp"].append({"image_id": osha[:20], "parent_id": iid, "shard": shard, "source_path": src,
                                        "sha256": osha, "tier": "2x" if up else "archive", "scale": 2 if up else 1,
                                        "megapixels": 100.0, "passed": True, **COMMON})
    return out


SCHEMAS = {"raw_pool": RAW_POOL, "image_scores": IMAGE_SCORES, "candidate_pool": CANDIDATE_POOL, "corpus_100mp": CORPUS}


def write_shard(layout: DataLayout, s: int, n: int = 30, salt: str = "") -> dict[str, list[dict]]:
    rows = shard_rows(s, n, salt)
    for st, rs in rows.items():
        write_manifest(to_table(rs, SCHEMAS[st]), layout.manifest(st, f"shard-{s:03d}"))
    return rows


@pytest.fixture
def root(tmp_path):
    layout = DataLayout.at(tmp_path / "data")
    for s in range(4):
        write_shard(layout, s)
    return layout


def _all_ids(layout: DataLayout) -> list[str]:
    return sorted({i for st in ("raw_pool", "corpus_100mp") for p in layout.manifests(st)
                   for i in pq.read_table(p, columns=["image_id"]).column("image_id").to_pylist()})


def _answers(layout: DataLayout, ids: list[str], use_index: bool) -> dict:
    ctx = LineageContext(layout, use_index=use_index)
    got = lineage_batch(ctx, ids, link_providers())
    return {i: [lk.as_dict() for lk in links] for i, links in got.items()}


def _without_index(layout: DataLayout, ids: list[str]) -> dict:
    return _answers(layout, ids, False)


def _forget_racy(monkeypatch):
    """Folder scans count as settled at once (the tests rewrite shards within milliseconds)."""
    monkeypatch.setattr(index_mod, "RACY_NS", -10**12)


def test_built_on_commit(root):
    assert root.id_index().exists()
    idx = IdIndex(root)
    assert idx.stats()["files"] == 16
    raw = pq.read_table(root.manifest("raw_pool", "shard-002")).column("image_id").to_pylist()
    hits = idx.lookup("raw_pool", [raw[5]])  # no refresh: what the commit hook wrote
    assert [(h.key, h.name, h.row) for h in hits] == [(raw[5], "shard-002.parquet", 5)]
    child = pq.read_table(root.manifest("corpus_100mp", "shard-001")).to_pylist()[0]
    assert [h.key for h in idx.lookup("corpus_100mp", [child["parent_id"]], "parent_id")] == [child["parent_id"]]
    assert idx.prefix(["raw_pool"], raw[5][:8]) == {raw[5]}


def test_rebuilt_when_missing_and_results_identical(root):
    ids = _all_ids(root)
    before = _answers(root, ids, True)
    for p in root.id_index().parent.iterdir():
        p.unlink()
    again = _answers(root, ids, True)
    assert IdIndex(root).stats()["files"] == 16
    assert before == again == _without_index(root, ids)


def test_lineage_identical_with_and_without_the_index(root):
    ids = _all_ids(root)
    with_index = _answers(root, ids, True)
    assert with_index == _without_index(root, ids)
    assert any(len(v) >= 4 for v in with_index.values())
    derived = next(r for p in root.manifests("corpus_100mp") for r in pq.read_table(p).to_pylist()
                   if r["tier"] == "2x")
    a = lineage(LineageContext(root), resolve_image_id(LineageContext(root), derived["image_id"][:8])).as_dict()
    b = lineage(LineageContext(root, use_index=False),
                resolve_image_id(LineageContext(root, use_index=False), derived["image_id"][:8])).as_dict()
    assert a == b and a["image_id"] == derived["image_id"]
    assert [lk["stage"] for lk in a["links"]][:4] == list(STAGES)
    with pytest.raises(KeyError, match="no image id"):
        resolve_image_id(LineageContext(root), "ffffffffffff")


def test_never_stale_after_a_rerun_through_write_manifest(root, monkeypatch):
    _forget_racy(monkeypatch)
    old = pq.read_table(root.manifest("raw_pool", "shard-001")).column("image_id").to_pylist()
    _answers(root, old[:3], True)
    new = write_shard(root, 1, n=20, salt="rerun")  # a re-run with other images: other ids, fewer rows
    new_ids = [r["image_id"] for r in new["raw_pool"]]
    got = _answers(root, old[:3] + new_ids[:3], True)
    assert all(got[i] == [] for i in old[:3])
    assert all([lk["stage"] for lk in got[i]][:3] == ["raw_pool", "image_scores", "candidate_pool"] for i in new_ids[:3])
    ids = _all_ids(root) + old
    assert _answers(root, ids, True) == _without_index(root, ids)


def test_never_stale_when_the_hook_did_not_run(root, monkeypatch):
    """A shard rewritten behind the index's back (another worker, a crash before the hook, a
    download from the store): the folder changed, so the next lookup re-scans and re-indexes it."""
    _forget_racy(monkeypatch)
    ids = _all_ids(root)
    assert _answers(root, ids, True) == _without_index(root, ids)
    monkeypatch.setattr(index_mod, "ENABLED", False)
    write_shard(root, 2, n=25, salt="behind")
    write_shard(root, 9, n=10, salt="new")  # a new shard
    os.unlink(root.manifest("image_scores", "shard-003"))  # a deleted one
    monkeypatch.setattr(index_mod, "ENABLED", True)
    ids = _all_ids(root) + ids
    assert _answers(root, ids, True) == _without_index(root, ids)


def test_never_stale_after_an_in_place_rewrite(root, monkeypatch):
    """Rewritten in place (no rename, the folder unchanged): the rows the index points at are
    checked when read, so the changed manifest is re-indexed."""
    ids = _all_ids(root)
    assert _answers(root, ids, True) == _without_index(root, ids)
    p = root.manifest("candidate_pool", "shard-000")
    rows = pq.read_table(p).to_pylist()
    rows = list(reversed(rows))[:-2]  # other row order, two rows fewer
    rows[0]["passed"], rows[0]["reject_reason"] = False, "low_entropy"
    tmp = p.with_name("elsewhere.bin")
    pq.write_table(to_table(rows, CANDIDATE_POOL), tmp)
    p.write_bytes(tmp.read_bytes())  # same inode, new content
    tmp.unlink()
    assert _answers(root, ids, True) == _without_index(root, ids)


def test_racy_folder_scans_are_repeated(root, monkeypatch):
    """A scan within RACY_NS of the folder's last change is not trusted: the next lookup scans."""
    idx = IdIndex(root)
    monkeypatch.setattr(index_mod, "RACY_NS", 3600 * 10**9)
    assert idx.refresh("raw_pool") is True
    assert idx.refresh("raw_pool") is True  # the folder changed just before the scan: scanned again
    monkeypatch.setattr(index_mod, "RACY_NS", -10**12)
    assert idx.refresh("raw_pool") is False  # settled and unchanged: one stat
    write_shard(root, 7)
    assert idx.refresh("raw_pool") is True
    assert idx.refresh("raw_pool") is False


def test_index_off_or_unusable_falls_back_to_scanning(root, monkeypatch):
    ids = _all_ids(root)
    expected = _without_index(root, ids)
    monkeypatch.setattr(index_mod, "ENABLED", False)
    ctx = LineageContext(root)
    assert ctx.index("raw_pool") is None
    assert _answers(root, ids, True) == expected
