"""Curation throughput on the demo pool: images/s and MP/s per stage, 1 vs 2 worker processes.

Builds (or reuses) the demo raw pool (``uhr make-raw-pool --profile demo``: 36 files in 2 shards,
10-32 MP clean images and two 100-120 MP ones, JPEG / PNG / TIFF / WebP, defects included), then
times the stages' own code (:mod:`curation.stages.purification`) in fresh data roots:

* ``raw_pool`` -- list, hash, probe, dedup, screen every entry; shards in key order (dedup needs
  the earlier shards), one process;
* ``image_scores`` -- decode + thumbnail + every purification score of each screened image, in
  three layouts: ``1 process`` (``runtime.workers = 1``, shards one after the other);
  ``2 workers / shard`` (``runtime.workers = 2``: the shard's process pool, the default);
  ``2 shards at once`` (two processes, one shard each, ``runtime.workers = 1``).

Each layout runs in fresh spawned processes, so peak RSS (``VmHWM``) is per worker: the driver's
own peak, or, for the process pool, the largest pool child (``RUSAGE_CHILDREN``; a forked child
counts its parent's RSS at fork, ~0.1 GB). Throughput counts decoded images and their pixels
(rejected-before-decode entries are counted by ``raw_pool`` only). The projection to the paper's
raw pool (Table 1: 300,316 images, ``paper_table1.raw_pool``) assumes the demo pool's
megapixels per image (the paper gives no size distribution): core-hours = CPU-seconds per image
x images / 3600, CPU-seconds being the user + system time the processes used (so other load on
the machine, printed as the load average, slows the wall-clock figures but not this one).

    .venv/bin/python benchmarks/throughput.py [--pool DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._measure import peak_rss_mb  # noqa: E402


def _cfg(workers: int):
    from curation.config import Config, load_config

    cfg = load_config("demo")
    data = json.loads(json.dumps(cfg.data))
    data.setdefault("runtime", {})["workers"] = workers
    return Config(cfg.name, data)


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _layout(root: Path):
    from curation.layout import DataLayout

    return DataLayout.at(root)


def _ingest(raw: Path, root: Path) -> dict:
    """raw_pool for every shard in key order (child process): seconds, entries, passed, peak RSS."""
    from curation.raw_pool import list_shards
    from curation.stages.purification import run_raw_pool

    cfg = _cfg(1)
    layout = _layout(root)
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    entries = passed = 0
    mpx = 0.0
    for shard in list_shards(raw):
        res = run_raw_pool(layout, raw, shard, cfg)
        entries += len(res.rows)
        for r in res.rows:
            if r.get("passed"):
                passed += 1
                mpx += (r.get("width") or 0) * (r.get("height") or 0) / 1e6
    return {"seconds": time.perf_counter() - t0, "images": entries, "passed": passed,
            "megapixels": mpx, "peak_rss_mb": peak_rss_mb(), "cpu_s": _cpu_s() - cpu0}


def _score(root: str, shards: list[str], workers: int, q) -> None:
    """image_scores of ``shards`` one after the other with ``workers`` pool processes (child)."""
    from curation.stages.purification import run_image_scores

    cfg = _cfg(workers)
    layout = _layout(Path(root))
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    n = 0
    mpx = 0.0
    for shard in shards:
        res = run_image_scores(layout, shard, cfg)
        for r in res.rows:
            if r.get("width"):
                n += 1
                mpx += r["width"] * r["height"] / 1e6
    q.put({"seconds": time.perf_counter() - t0, "images": n, "megapixels": mpx,
           "peak_rss_mb": peak_rss_mb(), "cpu_s": _cpu_s() - cpu0,
           "pool_child_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
           if workers > 1 else None})


def _ingest_child(raw: str, root: str, q) -> None:
    q.put(_ingest(Path(raw), Path(root)))


def _spawn(target, *args) -> list[dict]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, q)) for a in args]
    for p in procs:
        p.start()
    out = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return out


def _fresh_root(base: Path, ingested: Path, name: str) -> Path:
    """A data root holding only the committed raw_pool manifests (no score cache)."""
    root = base / name
    shutil.copytree(ingested, root)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default=None, help="an existing demo raw pool (default: build one in a temp dir)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    from curation.config import load_config
    from curation.raw_pool import list_shards

    paper_n = int(load_config("paper").get("paper_table1.raw_pool"))
    tmp = Path(tempfile.mkdtemp(prefix="uhr-throughput-"))
    try:
        raw = Path(args.pool) if args.pool else tmp / "raw"
        if not args.pool:
            from curation.synth import make_raw_pool

            print("building the demo raw pool ...", flush=True)
            make_raw_pool(raw, int(load_config("demo").get("synth.n")), 0, load_config("demo"))
        shards = list_shards(raw)
        load0 = os.getloadavg()
        ingested = tmp / "ingested"
        ing = _spawn(_ingest_child, (str(raw), str(ingested)))[0]
        layouts = {}
        root = _fresh_root(tmp, ingested, "w1")
        layouts["1 process"] = (1, _spawn(_score, (str(root), shards, 1)))
        root = _fresh_root(tmp, ingested, "w2")
        layouts["2 workers / shard"] = (2, _spawn(_score, (str(root), shards, 2)))
        root = _fresh_root(tmp, ingested, "s2")
        halves = [shards[0::2], shards[1::2]]
        layouts["2 shards at once"] = (2, _spawn(_score, *[(str(root), h, 1) for h in halves if h]))
        load1 = os.getloadavg()
        stages = {"raw_pool (1 process)": {
            "processes": 1, "seconds": ing["seconds"], "images": ing["images"],
            "images_per_s": ing["images"] / ing["seconds"],
            "megapixels_per_s": ing["megapixels"] / ing["seconds"],
            "peak_rss_mb_per_worker": ing["peak_rss_mb"], "cpu_s": ing["cpu_s"],
            "core_hours_paper_pool": paper_n * ing["cpu_s"] / ing["images"] / 3600}}
        for name, (procs, outs) in layouts.items():
            wall = max(o["seconds"] for o in outs)
            n = sum(o["images"] for o in outs)
            mpx = sum(o["megapixels"] for o in outs)
            peaks = [o["pool_child_peak_rss_mb"] or o["peak_rss_mb"] for o in outs]
            cpu = sum(o["cpu_s"] for o in outs)
            stages[f"image_scores ({name})"] = {
                "processes": procs, "seconds": wall, "images": n, "megapixels": mpx,
                "images_per_s": n / wall, "megapixels_per_s": mpx / wall,
                "peak_rss_mb_per_worker": max(peaks), "cpu_s": cpu,
                "cores_obtained": cpu / wall,  # < processes: other load held the cores
                "core_hours_paper_pool": paper_n * cpu / n / 3600,
            }
        one = stages["image_scores (1 process)"]
        for name in ("2 workers / shard", "2 shards at once"):
            s = stages[f"image_scores ({name})"]
            s["speedup_vs_1_process"] = s["images_per_s"] / one["images_per_s"]
        res = {"pool": str(raw), "shards": len(shards), "paper_raw_pool": paper_n,
               "mean_megapixels_per_scored_image": one["megapixels"] / one["images"],
               "cpus": os.cpu_count(), "loadavg_before": load0, "loadavg_after": load1, "stages": stages}
        print(json.dumps(res, indent=2))
        print(f"\n{'stage':36s} {'img/s':>6s} {'MP/s':>6s} {'CPU s/img':>9s} {'cores':>5s} {'peak MB':>8s} "
              f"{'core-h @300,316':>16s}")
        for name, s in stages.items():
            print(f"{name:36s} {s['images_per_s']:6.2f} {s['megapixels_per_s']:6.1f} {s['cpu_s'] / s['images']:9.2f} "
                  f"{s['cpu_s'] / s['seconds']:5.2f} {s['peak_rss_mb_per_worker']:8.0f} {s['core_hours_paper_pool']:16.0f}")
        print(f"load average {load0[0]:.1f} -> {load1[0]:.1f} on {os.cpu_count()} cores")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
