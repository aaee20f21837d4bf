"""Parallel scoring within a memory budget (issue 16.5): the shard's process pool admits images in
job order only while their estimated peaks fit ``runtime.memory_budget_mb``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curation.config import load_config
from curation.purify import MemoryBudget, score_files


def _jobs(tmp_path, n=4):
    rng = np.random.default_rng(0)
    jobs = []
    for k in range(n):
        p = tmp_path / f"img{k}.png"
        img = cv2.GaussianBlur(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8), (3, 3), 0)
        cv2.imwrite(str(p), img)
        jobs.append({"path": str(p), "image_id": f"id{k}", "thumb_path": None, "thumb_px": 64, "view_path": None,
                     "pixels": 100_000_000})  # the estimate pretends 100 MP each
    return jobs


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_pool_admits_images_only_while_their_estimated_peaks_fit(tmp_path):
    jobs = _jobs(tmp_path)
    cfg = load_config("paper")["purification"]
    each = MemoryBudget(1e9, 150.0, 7.0).peak_mb(100_000_000)  # 850 MB per 100 MP worker
    runs = {}
    for name, budget in (("one fits", 1.5 * each), ("two fit", 2.0 * each), ("none fits", 0.5 * each)):
        stats: dict = {}
        rows = score_files(jobs, cfg, 250_000_000, workers=2, cache_dir=None, stats=stats,
                           memory=MemoryBudget(budget, 150.0, 7.0))
        runs[name] = (rows, stats)
        assert [r["image_id"] for r in rows] == [j["image_id"] for j in jobs]  # job order kept
        assert all(r.get("width") == 260 and not r.get("reject_reason") for r in rows)  # none lost
    assert runs["one fits"][1]["max_in_flight"] == 1 and runs["one fits"][1]["max_in_flight_mb"] <= 1.5 * each
    assert runs["two fit"][1]["max_in_flight"] == 2
    assert runs["none fits"][1]["max_in_flight"] == 1  # an image larger than the budget still runs, alone
    stats = {}
    free = score_files(jobs, cfg, 250_000_000, workers=2, cache_dir=None, stats=stats)
    assert stats["max_in_flight"] == 2
    assert _strip(free) == _strip(runs["one fits"][0]) == _strip(runs["two fit"][0])  # same scores


def test_paper_budget_runs_two_100mp_images_side_by_side_but_not_two_at_max_pixels():
    cfg = load_config("paper")
    m = MemoryBudget.from_config(cfg)
    assert m is not None and int(cfg.get("runtime.workers")) == 2
    assert 2 * m.peak_mb(120e6) <= m.budget_mb  # the paper pool's largest (100-120 MP) images, 2 at once
    assert 2 * m.peak_mb(int(cfg.get("io.max_pixels"))) > m.budget_mb  # two 250 MP bombs-in-waiting: one at a time
    assert m.peak_mb(100e6) < 1024  # the per-worker target (issue 16: < 1 GB at 100 MP)


def _score_shard(root: str, shard: str, q) -> None:
    from curation.config import load_config
    from curation.layout import DataLayout
    from curation.stages.purification import run_image_scores

    res = run_image_scores(DataLayout.at(root), shard, load_config("test"))
    q.put((shard, res.summary.get("computed")))


@pytest.mark.slow
def test_two_shards_score_at_once_into_one_data_root(materialised, tmp_path):
    """image_scores of two shards in two processes at the same time (what two Dagster runs of the
    stage do) on one data root: each commits its own manifest, equal to the sequential run's."""
    import multiprocessing as mp
    import shutil

    from curation.manifest import read_manifest

    root = materialised.copy(tmp_path / "data")
    layout = materialised.layout
    shards = sorted(p.stem for p in layout.manifests("image_scores"))
    assert len(shards) >= 2
    shards = shards[:2]
    for sub in ("manifests/image_scores", "cache/image_scores", "thumbs"):
        shutil.rmtree(root / sub, ignore_errors=True)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_score_shard, args=(str(root), s, q)) for s in shards]
    for p in procs:
        p.start()
    done = dict(q.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    assert sorted(done) == shards and all(done[s] > 0 for s in shards)  # both computed, none reused
    drop = {"seconds"}
    for s in shards:
        new = read_manifest(root / "manifests" / "image_scores" / f"{s}.parquet").to_pylist()
        old = read_manifest(layout.manifest("image_scores", s)).to_pylist()
        assert [{k: v for k, v in r.items() if k not in drop} for r in new] == \
               [{k: v for k, v in r.items() if k not in drop} for r in old]
