"""Lineage and audit at corpus scale: cost relative to reading every manifest once.

Builds a synthetic data root with ``--shards`` shards of ``--rows`` images each (the paper's
pool: 300 shards x 1,000 = 300K raw images): raw_pool, image_scores and candidate_pool rows
for every image, a corpus_100mp row for ~1/3 of them (half archived, half upscaled with a new
id), and a release of every passed corpus image. Then, in this process:

* reference: ``pyarrow.parquet.read_table`` of every manifest of the four stages (what any
  whole-corpus question costs at least);
* ``uhr lineage`` of one upscaled image (id prefix resolved, family walked, every provider);
* the audit's stage checks for the whole release in its batches (blob hashing excluded: that is
  I/O bound and the same for any design), and ``lineage_batch`` for 10,000 ids.

Prints a Markdown table of seconds and ratios to the reference; writes ``benchmarks/out/lineage.md``.

    .venv/bin/python benchmarks/lineage.py [--shards 300] [--rows 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation.audit import audit_release  # noqa: E402
from curation.layout import DataLayout  # noqa: E402
from curation.manifest import (CANDIDATE_POOL, CORPUS, IMAGE_SCORES, RAW_POOL, RELEASE, to_table,  # noqa: E402
                               write_manifest)


BATCH = inspect.signature(audit_release).parameters["batch"].default


def _sha(*parts) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def build(root: Path, shards: int, rows: int) -> tuple[DataLayout, list[dict]]:
    layout = DataLayout.at(root)
    release = []
    common = {"config_hash": "c0ffee", "code_version": "bench"}
    for s in range(shards):
        shard = f"shard-{s:05d}"
        raw, sc, cand, corp = [], [], [], []
        for i in range(rows):
            sha = _sha(s, i)
            iid = sha[:20]
            src = f"/pool/{shard}/{i}.jpg"
            raw.append({"image_id": iid, "shard": shard, "source_path": src, "sha256": sha, "licence": "CC0-1.0",
                        "origin": "bench", "file_bytes": 1, "passed": True, **common})
            sc.append({"image_id": iid, "shard": shard, "source_path": src, "entropy": 7.0 + i / rows,
                       "exposure_fraction": 0.01, "laplacian_var": 50.0, "flat_fraction": 0.1,
                       "passed": True, **common})
            keep = i % 3 == 0
            cand.append({"image_id": iid, "shard": shard, "source_path": src, "entropy": 7.0 + i / rows,
                         "entropy_threshold": 7.0, "aesthetics_applied": False, "threshold_version": "t1",
                         "passed": keep, "reject_reason": None if keep else "low_entropy", **common})
            if keep:
                up = i % 2 == 0
                osha = _sha("out", s, i) if up else sha
                corp.append({"image_id": osha[:20], "parent_id": iid, "shard": shard, "source_path": src,
                             "sha256": osha, "tier": "2x" if up else "archive", "scale": 2 if up else 1,
                             "megapixels": 100.0, "checks": "seams", "passed": True, **common})
                release.append({"image_id": osha[:20], "sha256": osha, "blob_key": f"blobs/{osha[:2]}/{osha}",
                                "parent_id": iid, "raw_sha256": sha, "shard": shard, "licence": "CC0-1.0",
                                "tier": "2x" if up else "archive"})
        for stage, schema, rs in (("raw_pool", RAW_POOL, raw), ("image_scores", IMAGE_SCORES, sc),
                                  ("candidate_pool", CANDIDATE_POOL, cand), ("corpus_100mp", CORPUS, corp)):
            write_manifest(to_table(rs, schema), layout.manifest(stage, shard))
    write_manifest(to_table(release, RELEASE), layout.release_dir("bench") / "manifest.parquet")
    return layout, release


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=300)
    ap.add_argument("--rows", type=int, default=1000)
    args = ap.parse_args()
    from curation.lineage import LineageContext, lineage, lineage_batch, link_providers, resolve_image_id

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        layout, release = build(Path(tmp), args.shards, args.rows)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        n = sum(pq.read_table(p).num_rows for st in ("raw_pool", "image_scores", "candidate_pool", "corpus_100mp")
                for p in layout.manifests(st))
        t_ref = time.perf_counter() - t0
        up = next(r for r in release if r["tier"] == "2x")
        t0 = time.perf_counter()
        ctx = LineageContext(layout)
        lin = lineage(ctx, resolve_image_id(ctx, up["image_id"][:10]))
        t_one = time.perf_counter() - t0
        assert [lk.stage for lk in lin.links][:4] == ["raw_pool", "image_scores", "candidate_pool", "corpus_100mp"]
        required = [p for p in link_providers() if p.required]
        ids = [r["image_id"] for r in release]
        t0 = time.perf_counter()
        ctx = LineageContext(layout)
        done = 0
        for i in range(0, len(ids), BATCH):
            got = lineage_batch(ctx, ids[i:i + BATCH], required)
            done += sum(1 for v in got.values() if len(v) >= 4)
        t_audit = time.perf_counter() - t0
        assert done == len(ids)
        t0 = time.perf_counter()
        lineage_batch(LineageContext(layout), ids[:10000], required)
        t_10k = time.perf_counter() - t0
    rows = [
        ("read every manifest once (reference)", n, t_ref),
        ("uhr lineage, one upscaled image (prefix resolved)", 1, t_one),
        ("lineage_batch, 10,000 released ids", min(10000, len(ids)), t_10k),
        (f"audit stage checks, whole release ({len(ids)} images, batches of {BATCH:,})", len(ids), t_audit),
    ]
    md = [f"Lineage at {args.shards} shards x {args.rows} rows ({n} manifest rows; built in {t_build:.0f} s)", "",
          "| what | rows/ids | seconds | / reference |", "|---|---:|---:|---:|"]
    md += [f"| {w} | {k} | {s:.2f} | {s / t_ref:.2f} |" for w, k, s in rows]
    text = "\n".join(md)
    print(text)
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "lineage.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
