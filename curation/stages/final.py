"""``final_corpus`` (per shard) and ``bench_split`` (global): what a release and the bench read.

* ``final_corpus``: one row per passed ``corpus_100mp`` image; ``passed`` = the 3.1.4 instance
  check passed and the captions are complete (``captions`` stage), so final = corpus passed ∩
  instance check passed (a row without complete captions is ``caption_failed``: nothing trains
  on an image without its prompt). Paper Table 1: 95,935 final images.
* ``bench_split``: PixVerve-Bench holds ``bench_split.n_images`` images (200, paper 3.3) out of
  the final corpus, picked by a seeded rule (the smallest ``sha256(f"{seed}:{image_id}")``
  over every committed final_corpus shard), so the split is reproducible and stable when shards
  are added (an image leaves the bench only if a smaller hash arrives). Written as
  ``manifests/bench_split/split.json`` (ids, the rule, the inputs' data versions), a
  PixVerve-style ``benchmark.jsonl`` (``file_name``, ``short_caption``, ``long_caption``) and a
  ``reference/`` folder of links to the corpus files: ``uhr bench MODEL --prompts
  <root>/manifests/bench_split/benchmark.jsonl --reference <root>/manifests/bench_split/reference``.
  Releases and training sets leave these ids out.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from curation import reasons
from curation.atomic import write_text
from curation.config import Config
from curation.layout import DataLayout
from curation.manifest import FINAL_CORPUS, read_manifest
from curation.stages.fingerprint import input_key, manifest_versions, stage_fingerprint
from curation.stages.purification import StageError, StageResult, _count, code_version, commit, reuse_committed, upstream_versions

SPLIT_FILE = "split.json"
PROMPTS_FILE = "benchmark.jsonl"
REFERENCE_DIR = "reference"


def run_final_corpus(layout: DataLayout, shard: str, cfg: Config) -> StageResult:
    for dep in ("corpus_100mp", "captions"):
        if not layout.manifest(dep, shard).exists():
            raise StageError(f"{dep} manifest for {shard} is missing: materialise {dep} first")
    fp = stage_fingerprint(cfg, "final_corpus")
    key = input_key(fp, upstream_versions(layout, "final_corpus", shard))
    dst = layout.manifest("final_corpus", shard)
    res = reuse_committed(dst, key)
    if res is not None:
        return res
    caps = {r["image_id"]: r for r in read_manifest(layout.manifest("captions", shard)).to_pylist()}
    rows = []
    for r in read_manifest(layout.manifest("corpus_100mp", shard)).to_pylist():
        if not r["passed"]:
            continue
        c = caps.get(r["image_id"])
        row = {"image_id": r["image_id"], "shard": shard, "output_path": r.get("output_path"),
               "parent_id": r.get("parent_id"), "sha256": r.get("sha256"), "tier": r.get("tier"),
               "megapixels": r.get("megapixels"), "config_hash": fp, "code_version": code_version("final_corpus")}
        if c is None:
            row.update(passed=False, reject_reason=reasons.CAPTION_FAILED, reject_detail="no captions row")
        else:
            row.update(short_caption=c.get("short_caption"), long_caption=c.get("long_caption"),
                       passed=bool(c["passed"]), reject_reason=c.get("reject_reason"),
                       reject_detail=c.get("reject_detail"))
        rows.append(row)
    table, path = commit(layout, "final_corpus", shard, rows, FINAL_CORPUS, cfg, key)
    summary = _count(rows)
    summary.update(computed=len(rows), reused=0)
    return StageResult(table, path, summary)


def split_dir(layout: DataLayout) -> Path:
    return layout.root / "manifests" / "bench_split"


def split_key(seed: int, image_id: str) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def load_split(layout: DataLayout) -> dict | None:
    p = split_dir(layout) / SPLIT_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def bench_ids(layout: DataLayout) -> set[str]:
    """The image ids held out for the bench (empty when no split exists yet)."""
    split = load_split(layout)
    return set(split["image_ids"]) if split else set()


def run_bench_split(layout: DataLayout, cfg: Config) -> tuple[dict, dict]:
    """Pick the bench images; write split.json, benchmark.jsonl and reference/. Returns (split, counts)."""
    shards = layout.shards_with("final_corpus")
    if not shards:
        raise StageError("no final_corpus shard is materialised yet")
    n = int(cfg.get("bench_split.n_images"))
    seed = int(cfg.get("bench_split.seed"))
    fp = stage_fingerprint(cfg, "bench_split")
    versions = {s: manifest_versions(layout.manifest("final_corpus", s))["data_version"] for s in shards}
    key = input_key(fp, versions)
    prior = load_split(layout)
    if prior and prior.get("input_key") == key and _exports_present(layout, prior):
        return prior, {"computed": 0, "reused": int(prior["n_final"])}
    passed = []
    for s in shards:
        for r in read_manifest(layout.manifest("final_corpus", s)).to_pylist():
            if r["passed"]:
                passed.append(r)
    passed.sort(key=lambda r: split_key(seed, r["image_id"]))
    chosen = sorted(passed[:n], key=lambda r: r["image_id"])
    d = split_dir(layout)
    ref = d / REFERENCE_DIR
    ref.mkdir(parents=True, exist_ok=True)
    for old in ref.iterdir():
        if old.name not in {_ref_name(r) for r in chosen}:
            old.unlink()
    lines = []
    for r in chosen:
        name = _ref_name(r)
        target = ref / name
        if not target.exists():
            src = layout.resolve(r["output_path"])
            try:
                os.link(src, target)  # same file system: no copy of a 100 MP file
            except OSError:
                os.symlink(os.path.relpath(src, ref), target)
        lines.append(json.dumps({"file_name": name, "image_id": r["image_id"],
                                 "short_caption": r["short_caption"], "long_caption": r["long_caption"]},
                                ensure_ascii=False))
    write_text(d / PROMPTS_FILE, "\n".join(lines) + ("\n" if lines else ""))
    split = {"image_ids": [r["image_id"] for r in chosen], "n_requested": n, "n_final": len(passed),
             "rule": f"the {n} smallest sha256('{seed}:<image_id>') over the passed final_corpus rows",
             "seed": seed, "shards": shards, "input_key": key, "config_hash": fp,
             "code_version": code_version("bench_split"), "prompts": PROMPTS_FILE, "reference": REFERENCE_DIR,
             "version": hashlib.sha256(json.dumps(sorted(r["image_id"] for r in chosen)).encode()).hexdigest()[:12]}
    write_text(d / SPLIT_FILE, json.dumps(split, indent=1, sort_keys=True))
    return split, {"computed": len(passed), "reused": 0}


def _ref_name(r: dict) -> str:
    return f"{r['image_id']}{Path(r['output_path']).suffix}"


def _exports_present(layout: DataLayout, split: dict) -> bool:
    d = split_dir(layout)
    return (d / PROMPTS_FILE).exists() and all(
        any((d / REFERENCE_DIR).glob(f"{i}.*")) for i in split["image_ids"])
