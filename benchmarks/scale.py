"""The corpus at scale by simulation: ``--shards N`` x ``--images-per-shard M`` synthetic images (no
pixels) through the project's own manifest, store, release and Dagster code, and the cost of what
grows with the shard count.

Builds a data root under ``--root`` (default: a temporary folder in /tmp, removed afterwards):

* ``raw_pool`` and ``image_scores`` of every shard, committed by :func:`curation.stages.purification.commit`
  (the stages' own commit: typed table, input key and data version, config snapshot, atomic
  write, lineage id index); seeded scores (entropy, LAION, ArtiMuse uniform; ~9 % fail a fixed
  test);
* the ``shards`` partitions registered in a Dagster instance (sqlite, ``<root>/dagster_home``) and
  one ``raw_pool`` materialization event per partition (what the asset page shows);
* ``purification_thresholds`` by :func:`run_thresholds` (the streaming reduce) in a child
  process, for its peak RSS; the in-memory reduce it replaced is measured beside it;
* ``candidate_pool`` of every shard by :func:`run_candidate_pool` (the real apply: ~45 % pass);
* ``corpus_100mp`` (every candidate: 20 % archived under its raw id, 80 % upscaled 2x/4x under a
  new id, ~88 % pass), ``captions`` (a ~1.5 KB record per passed corpus image, ~95 % pass) and
  ``final_corpus``; final/raw ~ 0.35 as in the paper (95,935 of 300,316). So that the release
  holds ``--release-size`` images (100 K) whatever the shard count, each shard's final corpus
  passes at most ceil(release-size / N) images (the rest: ``instance_artifacts``); below
  ~290 shards x 1,000 the funnel has fewer, and the release is all of them (``release_images``);
* an empty blob per released image and raw source in a folder object store (presence checks).

Then times, in this process unless said otherwise (JSON keys):

``partitions_s``        registering the N ``shards`` partitions (``add_dynamic_partitions``)
``thresholds_s``        the ``purification_thresholds`` reduce (child process)
``thresholds_peak_mb``  its process peak RSS (``VmHWM``, imports included); ``thresholds_rise_mb``
                        the rise over the RSS before it; ``*_inmemory_*``: the list-based reduce
``apply_s``             one ``candidate_pool`` apply (the median over every shard's apply)
``lineage_s``           one ``uhr lineage`` (fresh context, 10-character prefix resolved, every
                        provider; best of 5 released upscaled images); ``lineage_scan_s``: the same
                        without the id index (every manifest's id column read), one image
``lineage_batch_10k_s`` ``lineage_batch`` of 10,000 released ids drawn at random, every provider
``release_100k_s``      :func:`curation.release.make_release` (plan, blob presence, manifest,
                        release.json, entry; no DVC)
``audit_100k_s``        :func:`curation.audit.audit_release` with ``verify_hashes=False``
``asset_page_s``        the Dagster UI's ``AssetViewDefinitionQuery`` (its own fields) +
                        ``PartitionHealthQuery`` (verbatim from the webapp) for ``raw_pool``, through
                        the GraphQL schema on a loaded code location (best of 3)

plus ``build_s``, ``events_s``, ``index_refresh_s`` (a full check of every stage folder: one
``stat`` per manifest), ``index_build_s`` (the index rebuilt from nothing) and ``index_mb``.

    .venv/bin/python benchmarks/scale.py --shards 300 --images-per-shard 1000 [--json]
    .venv/bin/python benchmarks/scale.py --plot benchmarks/out/scale-*.json   # docs/scale.png + table

Every run writes ``benchmarks/out/scale-<N>x<M>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._measure import PeakRSS, peak_rss_mb, rss_mb  # noqa: E402

KEYS = ("partitions_s", "thresholds_s", "thresholds_peak_mb", "apply_s", "lineage_s", "lineage_batch_10k_s",
        "release_100k_s", "audit_100k_s", "asset_page_s")
OUT = REPO / "benchmarks" / "out"

# -- the synthetic corpus -----------------------------------------------------------------------

LICENCES = ("CC0-1.0", "CC-BY-4.0", "Unsplash", "Pexels")
PROVENANCE_FIELDS = ("tags", "tangible_tags", "boxes", "masks", "instance_descriptions", "aesthetics_analysis",
                     "long_caption", "short_caption")


def _sha(*parts) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def _shard(s: int) -> str:
    return f"shard-{s:05d}"


def purification_rows(cfg, s: int, m: int) -> tuple[list[dict], list[dict]]:
    """raw_pool and image_scores rows of shard ``s`` (seeded)."""
    from curation import reasons
    from curation.stages.fingerprint import stage_fingerprint
    from curation.stages.purification import code_version

    rnd = random.Random(s)
    shard = _shard(s)
    fp_raw, fp_sc = stage_fingerprint(cfg, "raw_pool"), stage_fingerprint(cfg, "image_scores")
    raw, scores = [], []
    for i in range(m):
        sha = _sha("raw", s, i)
        iid = sha[:20]
        src = f"raw/{shard}/{i:05d}.jpg"
        w, h = rnd.choice(((12000, 9000), (8192, 5464), (6000, 4000), (4608, 3456)))
        raw.append({"image_id": iid, "shard": shard, "source_path": src, "sha256": sha,
                    "licence": LICENCES[i % len(LICENCES)], "origin": "bench-scale", "file_bytes": w * h // 4,
                    "format": "jpeg", "width": w, "height": h, "megapixels": w * h / 1e6,
                    "screen_tier": "large" if w * h > 25e6 else "medium", "passed": True,
                    "config_hash": fp_raw, "code_version": code_version("raw_pool")})
        fail = rnd.random()
        reason = (reasons.OVER_OR_UNDER_EXPOSED if fail < 0.03 else reasons.BLURRED if fail < 0.06
                  else reasons.FLAT if fail < 0.09 else None)
        scores.append({"image_id": iid, "shard": shard, "source_path": src, "width": w, "height": h,
                       "megapixels": w * h / 1e6, "exposure_fraction": rnd.uniform(0, 0.05),
                       "laplacian_var": rnd.uniform(20, 400), "flat_fraction": rnd.uniform(0, 0.4),
                       "flat_patches": rnd.randrange(0, 30), "entropy": rnd.uniform(5.0, 8.0),
                       "laion_score": rnd.uniform(3.0, 7.5), "artimuse_score": rnd.uniform(30.0, 80.0),
                       "pass_exposure": reason != reasons.OVER_OR_UNDER_EXPOSED,
                       "pass_sharpness": reason != reasons.BLURRED, "pass_flatness": reason != reasons.FLAT,
                       "thumb_path": f"thumbs/{iid}.jpg", "aesthetic_models": "laion=v2;artimuse=v1",
                       "seconds": rnd.uniform(0.5, 3.0), "passed": reason is None, "reject_reason": reason,
                       "config_hash": fp_sc, "code_version": code_version("image_scores")})
    return raw, scores


def downstream_rows(cfg, s: int, candidates: list[dict], quota: int) -> tuple[list, list, list, list]:
    """corpus_100mp, captions and final_corpus rows of shard ``s`` from its candidate rows, and the
    (sha256, raw sha256) of its released images."""
    from curation import reasons
    from curation.stages.fingerprint import stage_fingerprint
    from curation.stages.purification import code_version

    rnd = random.Random(10**6 + s)
    shard = _shard(s)
    fps = {st: stage_fingerprint(cfg, st) for st in ("corpus_100mp", "captions", "final_corpus")}
    corpus, captions, final, released = [], [], [], []
    for c in candidates:
        if not c["passed"]:
            continue
        raw_sha = _sha("raw", s, int(c["source_path"].rsplit("/", 1)[1].split(".")[0]))
        u = rnd.random()
        tier, scale = ("archive", 1) if u < 0.2 else ("2x", 2) if u < 0.8 else ("4x", 4)
        sha = raw_sha if tier == "archive" else _sha("out", raw_sha)
        iid = sha[:20]
        f = rnd.random()
        reason = (reasons.SEAM_DISCONTINUITY if f < 0.04 else reasons.REGION_ARTIFACTS if f < 0.09
                  else reasons.INCONSISTENT if f < 0.12 else None)
        if tier == "archive":
            reason = None
        w, h = c["width"] * scale, c["height"] * scale
        corpus.append({"image_id": iid, "parent_id": c["image_id"], "shard": shard, "source_path": c["source_path"],
                       "sha256": sha, "output_path": f"corpus/{iid[:2]}/{iid}.tif", "tier": tier, "scale": scale,
                       "backend": "none (native)" if tier == "archive" else "diffusers",
                       "tile": None if tier == "archive" else 512, "overlap": None if tier == "archive" else 64,
                       "ramp": "cosine", "file_format": "tif", "width": w, "height": h, "megapixels": w * h / 1e6,
                       "checks": "seams,consistency,regions,instances", "seam_max_ratio": rnd.uniform(0.8, 2.7),
                       "seam_count": 600, "seam_flagged": reason == reasons.SEAM_DISCONTINUITY,
                       "psnr": rnd.uniform(30, 45), "ssim": rnd.uniform(0.9, 0.99), "psnr_block_min": 28.0,
                       "ssim_block_min": 0.85, "lpips_reason": "not available offline",
                       "consistency_passed": reason != reasons.INCONSISTENT, "region_patches": 10,
                       "region_flagged": 2 if reason == reasons.REGION_ARTIFACTS else 0, "region_judge_failed": 0,
                       "region_decision": "fail" if reason == reasons.REGION_ARTIFACTS else "pass",
                       "region_passed": reason != reasons.REGION_ARTIFACTS, "judge_backend": "vllm/qwen",
                       "instance_status": "applied", "seconds": rnd.uniform(20, 200), "passed": reason is None,
                       "reject_reason": reason, "config_hash": fps["corpus_100mp"],
                       "code_version": code_version("corpus_100mp")})
        if reason is not None:
            continue
        g = rnd.random()
        cap_reason = reasons.INSTANCE_ARTIFACTS if g < 0.03 else reasons.CAPTION_FAILED if g < 0.05 else None
        tags = [f"tag{rnd.randrange(500)}" for _ in range(12)]
        record = {
            "image_id": iid, "tags": [{"label": t, "score": 0.9} for t in tags], "tangible_tags": tags[:8],
            "instances": [{"label": t, "box": [10, 20, 300, 400], "area": 0.05, "importance": 0.5,
                           "description": f"a {t} in the scene, clearly visible", "artifact": {"artifact": False}}
                          for t in tags[:5]],
            "aesthetics_analysis": {k: "good" for k in ("composition", "lighting", "colour", "detail", "focus", "mood")},
            "long_caption": " ".join(tags) * 3, "short_caption": " ".join(tags[:6]),
            "provenance": {k: {"backend": "vllm", "model": "Qwen2.5-VL-72B", "prompt_hash": _sha(k)[:16],
                               "status": "ok"} for k in PROVENANCE_FIELDS},
        }
        text = json.dumps(record, sort_keys=True)
        captions.append({"image_id": iid, "shard": shard, "output_path": f"corpus/{iid[:2]}/{iid}.tif",
                         "parent_id": c["image_id"], "n_tags": len(tags), "n_instances": 5,
                         "long_caption": record["long_caption"], "short_caption": record["short_caption"],
                         "caption_complete": cap_reason != reasons.CAPTION_FAILED, "instance_status": "applied",
                         "instance_decision": "fail" if cap_reason == reasons.INSTANCE_ARTIFACTS else "pass",
                         "instance_flagged": 1 if cap_reason == reasons.INSTANCE_ARTIFACTS else 0,
                         "instance_passed": cap_reason != reasons.INSTANCE_ARTIFACTS, "instance_coverage": 0.4,
                         "noun_match": 0.8, "long_words": 36, "short_words": 6, "backends": "{}", "record": text,
                         "seconds": rnd.uniform(5, 30), "passed": cap_reason is None, "reject_reason": cap_reason,
                         "config_hash": fps["captions"], "code_version": code_version("captions")})
        ok = cap_reason is None and len(released) < quota
        final.append({"image_id": iid, "shard": shard, "output_path": f"corpus/{iid[:2]}/{iid}.tif",
                      "parent_id": c["image_id"], "sha256": sha, "tier": tier, "megapixels": w * h / 1e6,
                      "short_caption": record["short_caption"], "long_caption": record["long_caption"],
                      "passed": ok, "reject_reason": None if ok else cap_reason or reasons.INSTANCE_ARTIFACTS,
                      "config_hash": fps["final_corpus"], "code_version": code_version("final_corpus")})
        if ok:
            released.append((sha, raw_sha))
    return corpus, captions, final, released


def _commit(layout, cfg, stage: str, shard: str, rows: list[dict], extra=None) -> None:
    from curation.manifest import SCHEMAS
    from curation.stages.fingerprint import input_key, stage_fingerprint
    from curation.stages.purification import commit, upstream_versions

    key = input_key(stage_fingerprint(cfg, stage), upstream_versions(layout, stage, shard), extra)
    commit(layout, stage, shard, rows, SCHEMAS[stage], cfg, key)


# -- the Dagster side ---------------------------------------------------------------------------

#: the asset page's definition query (the UI's AssetViewDefinitionQuery, its own fields; the
#: fragments it spreads from other modules of the webapp are left out)
ASSET_VIEW_QUERY = """
query AssetViewDefinitionQuery($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset {
      id
      key { path }
      hasDefinitionOrRecord
      assetMaterializations(limit: 1) { timestamp runId }
      definition {
        id
        pools
        opVersion
        groupName
        isExecutable
        partitionDefinition { description dimensionTypes { type dynamicPartitionsDefinitionName } }
        partitionKeysByDimension { name }
        backfillPolicy { description }
        opTags { key value }
        requiredResources { resourceKey }
        repository { id name location { id name } }
        hasReportRunlessAssetEventPermission
      }
    }
  }
}
"""
#: the asset page's partitions bar (verbatim from dagster-webserver's webapp)
PARTITION_HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey primaryDimStartTime primaryDimEndTime
            secondaryDim {
              ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
              ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
            }
          }
        }
      }
    }
  }
}
"""


def asset_page_seconds(instance, shards: list[str], repeat: int = 3) -> float:
    """Best of ``repeat`` (definition query + partition health query) for ``raw_pool`` on the repo's
    code location (workspace.yaml, loaded in a code server as ``dagster-webserver`` does)."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    var = {"assetKey": {"path": ["raw_pool"]}}
    best = math.inf
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)  # the code server logs to the stdout it inherits: keep ours for the JSON
    try:
        with define_out_of_process_context(str(REPO / "workspace.yaml"), None, instance) as ctx:
            for _ in range(repeat):
                t0 = time.perf_counter()
                a = execute_dagster_graphql(ctx, ASSET_VIEW_QUERY, var)
                b = execute_dagster_graphql(ctx, PARTITION_HEALTH_QUERY, var)
                best = min(best, time.perf_counter() - t0)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    assert a.data["assetOrError"]["definition"]["partitionDefinition"] is not None, a.data
    node = b.data["assetNodeOrError"]
    assert len(node["partitionKeysByDimension"][0]["partitionKeys"]) == len(shards)
    assert len(node["assetPartitionStatuses"]["materializedPartitions"]) == len(shards)
    return best


# -- the threshold reduce, in a child process ----------------------------------------------------

def thresholds_child(root: str) -> None:
    """Run the streaming reduce, then the in-memory one it replaced, each under :class:`PeakRSS`."""
    import pyarrow.parquet as pq

    from curation.config import load_config
    from curation.layout import DataLayout
    from curation.selection import compute_thresholds
    from curation.stages.purification import run_thresholds

    import numpy  # noqa: F401  (imports are not the reduce's memory)
    import pyarrow.compute  # noqa: F401
    import pyarrow.dataset  # noqa: F401  (pq.read_table imports it on first use)

    layout = DataLayout.at(root)
    cfg = load_config("paper")
    out = {}
    with PeakRSS() as m:
        t0 = time.perf_counter()
        th, _ = run_thresholds(layout, cfg)
        out["thresholds_s"] = time.perf_counter() - t0
    out.update(thresholds_peak_mb=m.peak_mb, thresholds_rise_mb=m.rise_mb, threshold_version=th.version,
               entropy_threshold=th.entropy, n_pool=th.n_pool)
    with PeakRSS() as m:  # what run_thresholds did before: every passed score in Python lists
        t0 = time.perf_counter()
        ent, lai, art = [], [], []
        for s in layout.shards_with("image_scores"):
            for r in pq.read_table(layout.manifest("image_scores", s)).select(
                    ["image_id", "passed", "entropy", "laion_score", "artimuse_score"]).to_pylist():
                if r["passed"]:
                    ent.append(r["entropy"]), lai.append(r["laion_score"]), art.append(r["artimuse_score"])
        ref = compute_thresholds(ent, lai, art, 0.6, 0.6)
        out["thresholds_inmemory_s"] = time.perf_counter() - t0
    out.update(thresholds_inmemory_peak_mb=m.peak_mb, thresholds_inmemory_rise_mb=m.rise_mb)
    assert (ref.entropy, ref.laion, ref.artimuse) == (th.entropy, th.laion, th.artimuse)
    print(json.dumps(out))


# -- the run --------------------------------------------------------------------------------------

def run(root: Path, n: int, m: int, release_size: int, log) -> dict:
    from curation.audit import audit_release
    from curation.config import load_config
    from curation.layout import DataLayout
    from curation.lineage import LineageContext, lineage, lineage_batch, link_providers, resolve_image_id
    from curation.lineage.index import RACY_NS, IdIndex
    from curation.release import make_release
    from curation.stages.purification import load_thresholds, run_candidate_pool
    from curation.store import LocalStore, blob_key
    from orchestration.pipeline import dagster_home_for

    cfg = load_config("paper")
    layout = DataLayout.at(root)
    shards = [_shard(s) for s in range(n)]
    res: dict = {"shards": n, "images_per_shard": m, "images": n * m, "load_avg_start": os.getloadavg()[0]}

    t0 = time.perf_counter()
    for s, shard in enumerate(shards):
        raw, scores = purification_rows(cfg, s, m)
        _commit(layout, cfg, "raw_pool", shard, raw, {"shard": shard, "bench": "scale"})
        _commit(layout, cfg, "image_scores", shard, scores)
    res["build_purification_s"] = time.perf_counter() - t0
    log(f"raw_pool + image_scores: {n} shards in {res['build_purification_s']:.0f} s")

    home = dagster_home_for(root)
    os.environ.update(DAGSTER_HOME=str(home), UHR_DATA_ROOT=str(root), UHR_RAW_ROOT=str(root / "raw"),
                      UHR_PROFILE="paper")
    from dagster import AssetMaterialization, DagsterInstance

    instance = DagsterInstance.from_config(str(home))
    t0 = time.perf_counter()
    instance.add_dynamic_partitions("shards", shards)
    res["partitions_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for shard in shards:
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key="raw_pool", partition=shard, metadata={"dagster/row_count": m}))
    res["events_s"] = time.perf_counter() - t0
    log(f"partitions {res['partitions_s']:.2f} s, {n} raw_pool events {res['events_s']:.1f} s")

    child = subprocess.run([sys.executable, __file__, "--thresholds-child", str(root)], capture_output=True,
                           text=True, check=True, cwd=REPO)
    res.update(json.loads(child.stdout.strip().splitlines()[-1]))
    log(f"thresholds {res['thresholds_s']:.2f} s, peak {res['thresholds_peak_mb']:.0f} MB "
        f"(in-memory reduce: {res['thresholds_inmemory_s']:.2f} s, {res['thresholds_inmemory_peak_mb']:.0f} MB)")

    th = load_thresholds(layout)
    t0 = time.perf_counter()
    applies, quota, released = [], math.ceil(release_size / n), []
    for s, shard in enumerate(shards):
        t1 = time.perf_counter()
        cand = run_candidate_pool(layout, shard, cfg, th)
        applies.append(time.perf_counter() - t1)
        corpus, caps, final, rel = downstream_rows(cfg, s, cand.rows, quota)
        _commit(layout, cfg, "corpus_100mp", shard, corpus)
        _commit(layout, cfg, "captions", shard, caps)
        _commit(layout, cfg, "final_corpus", shard, final)
        released.extend(rel)
    res["apply_s"] = statistics.median(applies)
    res["build_downstream_s"] = time.perf_counter() - t0
    log(f"candidate_pool apply {res['apply_s'] * 1e3:.0f} ms per shard; corpus/captions/final in "
        f"{res['build_downstream_s']:.0f} s; {len(released)} images to release")

    store = LocalStore(root / "store")
    t0 = time.perf_counter()
    for sha in {x for pair in released for x in pair}:
        p = store.root / blob_key(sha)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    res["blobs_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    entry = make_release(layout, "scale", store, dvc=None, log=lambda *_: None)
    res["release_100k_s"] = time.perf_counter() - t0
    res["release_images"] = entry["n_images"]
    log(f"release of {entry['n_images']} images: {res['release_100k_s']:.1f} s")

    t0 = time.perf_counter()
    report = audit_release(layout, "scale", store, verify_hashes=False)
    res["audit_100k_s"] = time.perf_counter() - t0
    assert report.ok, report.text(10)
    log(f"audit (presence): {res['audit_100k_s']:.1f} s, {sum(report.checked.values())} checks")

    import pyarrow.parquet as pq

    rel = pq.read_table(layout.release_dir("scale") / "manifest.parquet",
                        columns=["image_id", "tier", "shard"]).to_pylist()
    idx = IdIndex.open(layout)
    stages = idx.collections()  # every stage folder and the release
    last = max(os.stat(idx.stage_dir(st)).st_mtime_ns for st in stages)
    time.sleep(max(0.0, (last + RACY_NS - time.time_ns()) / 1e9 + 0.1))  # out of the racy window
    for st in stages:
        idx.refresh(st)
    t0 = time.perf_counter()
    for st in stages:
        idx.refresh(st, force=True)
    res["index_refresh_s"] = time.perf_counter() - t0
    for st in stages:
        idx.refresh(st)  # (settled again)

    rnd = random.Random(0)
    ups = [r for r in rel if r["tier"] != "archive"]
    picks = rnd.sample(ups, 5)
    times = []
    for r in picks:
        t0 = time.perf_counter()
        ctx = LineageContext(layout, store)
        lin = lineage(ctx, resolve_image_id(ctx, r["image_id"][:10]))
        times.append(time.perf_counter() - t0)
        got = [lk.stage for lk in lin.links]
        assert got[:4] == ["raw_pool", "image_scores", "candidate_pool", "corpus_100mp"] and "release" in got, got
    res["lineage_s"] = min(times)
    res["lineage_median_s"] = statistics.median(times)
    t0 = time.perf_counter()
    ctx = LineageContext(layout, store, use_index=False)
    scan = lineage(ctx, resolve_image_id(ctx, picks[0]["image_id"][:10]))
    res["lineage_scan_s"] = time.perf_counter() - t0
    ctx = LineageContext(layout, store)
    assert lineage(ctx, picks[0]["image_id"]).as_dict() == scan.as_dict()
    log(f"uhr lineage {res['lineage_s'] * 1e3:.0f} ms with the index, {res['lineage_scan_s']:.2f} s scanning")

    ids = [r["image_id"] for r in rnd.sample(rel, min(10_000, len(rel)))]
    t0 = time.perf_counter()
    got = lineage_batch(LineageContext(layout, store), ids, link_providers())
    res["lineage_batch_10k_s"] = time.perf_counter() - t0
    res["lineage_batch_ids"] = len(ids)
    assert all(len(v) >= 6 for v in got.values())
    log(f"lineage_batch of {len(ids)} ids: {res['lineage_batch_10k_s']:.2f} s")

    res["asset_page_s"] = asset_page_seconds(instance, shards)
    log(f"asset page (GraphQL): {res['asset_page_s'] * 1e3:.0f} ms")

    idx.close()
    for p in layout.id_index().parent.iterdir():
        p.unlink()
    t0 = time.perf_counter()
    IdIndex.open(layout).rebuild()
    res["index_build_s"] = time.perf_counter() - t0
    res["index_mb"] = sum(p.stat().st_size for p in layout.id_index().parent.iterdir()) / 2**20
    res["manifests_mb"] = sum(p.stat().st_size for p in (root / "manifests").rglob("*.parquet")) / 2**20
    log(f"index rebuilt in {res['index_build_s']:.1f} s ({res['index_mb']:.0f} MB)")
    res["build_s"] = res["build_purification_s"] + res["build_downstream_s"]
    res["bench_peak_rss_mb"] = peak_rss_mb()
    res["load_avg_end"] = os.getloadavg()[0]  # the machine is shared: other jobs' load inflates the timings
    return res


# -- plot and table -----------------------------------------------------------------------------

LABELS = {
    "partitions_s": "register N partitions (s)", "thresholds_s": "thresholds reduce (s)",
    "thresholds_peak_mb": "thresholds peak RSS (MB)", "apply_s": "candidate_pool apply, 1 shard (s)",
    "lineage_s": "uhr lineage (s)", "lineage_batch_10k_s": "lineage_batch 10K ids (s)",
    "release_100k_s": "release manifest (s)", "audit_100k_s": "audit, presence (s)",
    "asset_page_s": "asset page GraphQL (s)",
}
#: the figure each panel shows beside the measured one (the old way, in the same run)
REFERENCE = {"lineage_s": ("lineage_scan_s", "without index"),
             "thresholds_peak_mb": ("thresholds_inmemory_peak_mb", "in-memory reduce"),
             "thresholds_s": ("thresholds_inmemory_s", "in-memory reduce")}


def table(results: list[dict]) -> str:
    rows = sorted(results, key=lambda r: r["shards"])
    head = "| figure | " + " | ".join(f"{r['shards']:,} shards" for r in rows) + " |"
    lines = [head, "|---|" + "---:|" * len(rows)]
    extra = ["images", "release_images", "lineage_scan_s", "thresholds_rise_mb", "thresholds_inmemory_s",
             "thresholds_inmemory_peak_mb", "events_s", "index_refresh_s", "index_build_s", "index_mb", "manifests_mb",
             "build_s"]
    for k in (*KEYS, *extra):
        vals = []
        for r in rows:
            v = r.get(k)
            vals.append("-" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:.3g}" if v < 100 else f"{v:,.0f}")
        lines.append(f"| `{k}` | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(results, key=lambda r: r["shards"])
    x = [r["shards"] for r in rows]
    fig, axes = plt.subplots(3, 3, figsize=(13, 10.5))
    for ax, k in zip(axes.flat, KEYS):
        ax.plot(x, [r[k] for r in rows], "o-", label="measured")
        if k in REFERENCE and all(REFERENCE[k][0] in r for r in rows):
            ax.plot(x, [r[REFERENCE[k][0]] for r in rows], "s--", color="grey", label=REFERENCE[k][1])
            ax.legend(fontsize=8)
        if k in ("release_100k_s", "audit_100k_s"):
            for r in rows:
                if r.get("release_images") and r["release_images"] < 99_000:
                    ax.annotate(f"{r['release_images']:,} images", (r["shards"], r[k]), fontsize=8,
                                textcoords="offset points", xytext=(4, 6))
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:,}" for v in x])
        ax.minorticks_off()
        ax.set_title(LABELS[k], fontsize=10)
        ax.set_xlabel("shards x 1,000 images")
        if k == "lineage_s":
            ax.set_yscale("log")
            ax.axhline(0.1, color="red", lw=0.8, ls=":")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle("uhrforge at scale (benchmarks/scale.py, 2 shared CPU cores)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--images-per-shard", type=int, default=1000)
    ap.add_argument("--release-size", type=int, default=100_000)
    ap.add_argument("--root", help="data root to build (default: a temporary folder, removed afterwards)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--plot", nargs="+", metavar="JSON", help="results files -> docs/scale.png and a Markdown table")
    ap.add_argument("--thresholds-child", metavar="ROOT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.thresholds_child:
        thresholds_child(args.thresholds_child)
        return
    if args.plot:
        results = [json.loads(Path(p).read_text()) for p in args.plot]
        plot(results, REPO / "docs" / "scale.png")
        print(table(results))
        return
    def log(msg: str) -> None:
        print(f"{msg}  [rss {rss_mb():.0f} MB]", file=sys.stderr if args.json else sys.stdout, flush=True)

    tmp = None
    if args.root:
        root = Path(args.root)
        if root.exists():
            raise SystemExit(f"{root} exists: give a new folder")
    else:
        tmp = tempfile.mkdtemp(prefix="uhr-scale-")
        root = Path(tmp) / "data"
    try:
        res = run(root.resolve(), args.shards, args.images_per_shard, args.release_size, log)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    (OUT / f"scale-{args.shards}x{args.images_per_shard}.json").write_text(json.dumps(res, indent=1) + "\n")
    if args.json:
        print(json.dumps({k: res[k] for k in KEYS} | {k: v for k, v in res.items() if k not in KEYS}))
    else:
        print(table([res]))


if __name__ == "__main__":
    main()
