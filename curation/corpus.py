"""The 100 MP corpus of one shard (sections 3.1.3-3.1.4): tiered SR, then the final filters.

For every passed candidate of the shard:

1. **tier** (:func:`curation.upscale.tiers.tier_for`): ``archive`` (native >= 100 MP, stored
   unchanged), ``2x`` (> 25 MP) or ``4x`` (10-25 MP); bounds scale with the profile's
   ``linear_scale`` like the resolution screen.
2. **SR** through the shared tile engine (:mod:`curation.upscale.tiles`) with the configured
   backend (``lanczos`` offline; ``diffusers`` text-guided SR on GPU), streamed into the
   corpus format (tiled zstd TIFF by default, chosen from ``benchmarks/out/storage.md``).
   The output is content addressed: its id is the sha256 of the file, ``parent_id`` the
   candidate's id.
3. **final filters**, each its own step with its scores in the row (SR outputs only; an
   archived native image has no synthetic pixels, its checks are ``not_applicable``):
   seam continuity, post-SR consistency (PSNR/SSIM/LPIPS vs the input), region-level
   artifacts (10 patches of 768 px judged by the VLM client), instance-level artifacts (hook;
   crops arrive with the captions stage).

The first failing check names ``reject_reason`` (``seam_discontinuity``,
``inconsistent_with_input``, ``region_artifacts``, ``judge_failed``, ``instance_artifacts``,
``below_100mp``, ``upscale_failed``); every check's outcome is in its own columns.
A per-image result cache (keyed by config hash and input id) makes re-runs idempotent and
lets a killed run resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from curation.atomic import is_disk_full, read_json, replacing, write_json
from curation.config import Config
from curation.imageio import ImageReadError, content_hash, copy_pinned, decode_rgb, image_id_from_hash, write_hash_stamp
from curation.layout import DataLayout
from curation.manifest import CORPUS, read_manifest
from curation.stages.fingerprint import input_key, stage_fingerprint
from curation.stages.purification import StageError, StageResult, code_version as stage_code_version, commit, reuse_committed, upstream_versions
from curation.reasons import (BELOW_100MP, DEFERRED, INCONSISTENT, INSTANCE_ARTIFACTS, JUDGE_FAILED,
                              REGION_ARTIFACTS, SEAM_DISCONTINUITY, SOURCE_CHANGED, UPSCALE_FAILED)

_EXT = {"tiff": ".tif", "png": ".png", "jxl": ".jxl", "webp": ".webp"}


def corpus_blob(layout: DataLayout, image_id: str, ext: str) -> Path:
    return layout.root / "corpus" / image_id[:2] / f"{image_id}{ext}"


def select_for_upscale(rows: list[dict], cap: int | None) -> set[str]:
    """Which SR candidates this run upscales when a profile caps the count (demo): alternate
    tiers (4x, 2x, ...), smallest inputs first (then image id), so both tiers are represented
    at the least cost. ``None`` = all."""
    if cap is None:
        return {r["image_id"] for r in rows}
    by_tier: dict[str, list[str]] = {}
    for r in sorted(rows, key=lambda r: (r["width"] * r["height"], r["image_id"])):
        by_tier.setdefault(r["tier"], []).append(r["image_id"])
    chosen: list[str] = []
    order = [t for t in ("4x", "2x") if t in by_tier]
    while len(chosen) < cap and any(by_tier.get(t) for t in order):
        for t in order:
            if by_tier.get(t) and len(chosen) < cap:
                chosen.append(by_tier[t].pop(0))
    return set(chosen)


def region_judge(client, image_id: str, patch: int) -> Callable:
    """Adapter: the VLM client as the ``judge(patches) -> verdicts`` callable of the filters."""
    from curation.vlm import VLMRequest

    def judge(patches):
        reqs = [VLMRequest("region_artifact", f"{image_id}@{patch}:{i}", [p]) for i, p in enumerate(patches)]
        out = []
        for r in client.run(reqs):
            if r.status == "ok":
                out.append({"status": "ok", "artifact": bool(r.answer.get("artifact")),
                            "reason": str(r.answer.get("reason", "")), "backend": r.backend})
            else:
                out.append({"status": JUDGE_FAILED, "artifact": None, "reason": r.reason, "backend": r.backend})
        return out

    return judge


class _InputError(Exception):
    """The candidate's input file failed the reader contract (e.g. ``source_changed``)."""

    def __init__(self, error: ImageReadError):
        super().__init__(str(error))
        self.error = error


def _read_input(path: str, max_pixels: int, expect_sha256: str):
    """The input decoded once from bytes pinned to the id raw_pool recorded for it."""
    try:
        return decode_rgb(path, max_pixels, expect_sha256=expect_sha256)
    except ImageReadError as exc:
        raise _InputError(exc) from exc


def process_image(row: dict, layout: DataLayout, cfg: Config, backend_name: str, judge_client,
                  code_version: str, config_hash: str | None = None) -> dict:
    """SR + final filters of one candidate row; returns the CORPUS row (never raises).

    ``row["source_path"]`` is as stored in the manifest (resolved through ``layout``);
    ``config_hash``: the corpus stage fingerprint the row records (default: the whole config's hash).
    """
    from curation.final_filters import consistency, instances, regions, seams
    from curation.upscale.backends import create_backend
    from curation.upscale.tiers import scale_for, tier_bounds, tier_for
    from curation.upscale.tiles import TileSpec, upscale_image

    t0 = time.perf_counter()
    region_reason = None
    cc = cfg["corpus"]
    ff = cc["final_filters"]
    out = {"parent_id": row["image_id"], "shard": row["shard"], "source_path": row["source_path"],
           "config_hash": config_hash or cfg.hash, "code_version": code_version, "passed": False}
    source = str(layout.resolve(row["source_path"]))
    tier = tier_for(row["width"], row["height"], cfg)
    scale = scale_for(tier)
    out.update(tier=tier, scale=scale)
    min_pixels = tier_bounds(cfg)["archive_min_pixels_inclusive"]
    fmt = cc["storage_format"]
    try:
        if tier is None:
            raise ValueError(f"{row['width']}x{row['height']} is below every SR tier")
        if tier == "archive":
            sha = row.get("sha256") or content_hash(source)
            image_id = image_id_from_hash(sha)
            dst = corpus_blob(layout, image_id, Path(source).suffix.lower())
            if not dst.exists():
                with replacing(dst) as tmp:  # a full disk leaves no partial copy
                    # hashed while copied: the blob holds exactly the bytes its id names
                    try:
                        copy_pinned(source, tmp, row.get("sha256") or row["image_id"])
                    except ImageReadError as exc:
                        raise _InputError(exc) from exc
            out.update(image_id=image_id, sha256=sha, output_path=layout.rel(dst), width=row["width"],
                       height=row["height"], backend="none (native)", file_format=Path(dst).suffix.lstrip("."),
                       checks="not_applicable: native image, no synthetic pixels")
        else:
            spec = TileSpec(tile=int(cc["tile"]), overlap=int(cc["overlap"]), ramp=cc.get("ramp", "cosine"))
            backend = create_backend(backend_name, scale)
            tmp_out = layout.root / "corpus" / "_work" / f"{row['image_id']}{_EXT[fmt]}"
            tmp_out.parent.mkdir(parents=True, exist_ok=True)
            # the input decoded once, from bytes pinned to the id raw_pool recorded (source_changed
            # otherwise), through the one reader contract; SR and the consistency check share it
            lr = _read_input(source, int(cfg.get("io.max_pixels")), row.get("sha256") or row["image_id"])
            try:
                info = upscale_image(lr, tmp_out, backend, spec, prompt=row.get("caption"), seed=0)
            except BaseException as exc:
                tmp_out.unlink(missing_ok=True)  # no half-written output left on a full disk
                if isinstance(exc, OSError) and is_disk_full(exc) and not exc.filename:
                    raise OSError(exc.errno, exc.strerror or str(exc), str(tmp_out)) from exc
                raise
            sha = content_hash(tmp_out)
            image_id = image_id_from_hash(sha)
            dst = corpus_blob(layout, image_id, _EXT[fmt])
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_out, dst)
            write_hash_stamp(dst, sha, layout.root / "index" / "hash_stamps")  # later region readers skip the re-hash
            desc = backend.describe()
            out.update(image_id=image_id, sha256=sha, output_path=layout.rel(dst), width=int(info["width"]),
                       height=int(info["height"]), backend=backend_name,
                       backend_detail=json.dumps(desc, sort_keys=True), tile=spec.tile, overlap=spec.overlap,
                       ramp=spec.ramp, file_format=fmt, checks="seams,consistency,regions,instances")
            # 1. seam continuity
            sr = seams.seam_check(dst, stride=int(ff["seam"]["stride"]), r_t=float(ff["seam"]["r_t"]))
            out.update(seam_max_ratio=float(sr.max_ratio), seam_count=int(sr.seams), seam_flagged=bool(sr.flagged))
            # 2. post-SR consistency
            cm = consistency.consistency_metrics(dst, lr)
            cd = consistency.decide(cm, dict(ff["consistency"]))
            out.update(psnr=cm.get("psnr"), ssim=cm.get("ssim"), psnr_block_min=cm.get("psnr_block_min"),
                       ssim_block_min=cm.get("ssim_block_min"), lpips=cm.get("lpips"),
                       lpips_reason=cm.get("lpips_reason"), consistency_failed=",".join(cd["failed"]) or None,
                       consistency_passed=bool(cd["passed"]))
            # 3. region-level artifacts
            patch = int(ff["regions"]["patch"])
            rr = regions.check_regions(dst, image_id, region_judge(judge_client, image_id, patch), patch=patch,
                                       n_top=int(ff["regions"]["n_top"]), n_random=int(ff["regions"]["n_random"]),
                                       max_flagged=int(ff["regions"]["max_flagged"]))
            region_reason = rr.get("reason")  # a failed judgement: the endpoint / parse errors
            out.update(region_patches=int(rr.get("n_patches", 0)), region_flagged=int(rr.get("n_artifact", 0)),
                       region_judge_failed=int(rr.get("n_judge_failed", 0)), region_decision=str(rr.get("decision")),
                       region_passed=bool(rr["passed"]), judge_backend=getattr(judge_client, "backend", None))
            # 4. instance-level artifacts: crops arrive with the captions stage
            ir = instances.check_instances(row.get("instance_crops"), judge=None)
            out.update(instance_status=ir["status"], instance_reason=ir.get("reason"))
        out["megapixels"] = out["width"] * out["height"] / 1e6
        reason = _first_failure(out, min_pixels)
        out.update(passed=reason is None, reject_reason=reason,
                   reject_detail=_failure_detail(reason, out, min_pixels, region_reason))
    except _InputError as exc:  # the input changed since raw_pool (or can no longer be read)
        e = exc.error
        out.update(reject_reason=SOURCE_CHANGED if e.reason == SOURCE_CHANGED else UPSCALE_FAILED,
                   reject_detail=f"input {e.reason}: {e.detail}"[:500])
        out.setdefault("image_id", row["image_id"])
    except Exception as exc:  # one bad image never takes the shard down
        if is_disk_full(exc):  # ... but a full data root is no verdict on the image: the stage fails
            raise
        out.update(reject_reason=UPSCALE_FAILED, reject_detail=f"{type(exc).__name__}: {exc}"[:500])
        out.setdefault("image_id", row["image_id"])
    out["seconds"] = time.perf_counter() - t0
    return out


def _failure_detail(reason: str | None, out: dict, min_pixels: float, region_reason: str | None) -> str | None:
    """The ``reject_detail`` of a final-check verdict: the numbers or the judge's errors behind it."""
    if reason is None:
        return None
    if reason == BELOW_100MP:
        return f"{out['width']}x{out['height']} = {out['megapixels']:.2f} MP < {min_pixels / 1e6:.2f} MP"
    if reason == SEAM_DISCONTINUITY:
        return f"{out.get('seam_count')} seam(s) flagged, max ratio {out.get('seam_max_ratio'):.3g}"
    if reason == INCONSISTENT:
        return f"failed {out.get('consistency_failed')}: psnr {out.get('psnr')}, ssim {out.get('ssim')}"[:500]
    if reason in (JUDGE_FAILED, REGION_ARTIFACTS):
        return (region_reason or f"{out.get('region_judge_failed')} judgement(s) failed")[:500]
    return (out.get("instance_reason") or reason)[:500]


def _first_failure(out: dict, min_pixels: float) -> str | None:
    if out["width"] * out["height"] < min_pixels:
        return BELOW_100MP
    if out.get("seam_flagged"):
        return SEAM_DISCONTINUITY
    if out.get("consistency_passed") is False:
        return INCONSISTENT
    if out.get("region_judge_failed"):
        return JUDGE_FAILED
    if out.get("region_passed") is False:
        return REGION_ARTIFACTS
    if out.get("instance_status") == "applied" and out.get("instance_passed") is False:
        return INSTANCE_ARTIFACTS
    return None


def run_corpus(layout: DataLayout, shard: str, cfg: Config, backend_name: str | None = None, judge_client=None,
               progress: Callable[[int], None] | None = None) -> StageResult:
    """Tiered SR + final filters for the passed candidates of one shard; writes the manifest."""
    src = layout.manifest("candidate_pool", shard)
    if not src.exists():
        raise StageError(f"candidate_pool manifest for {shard} is missing: materialise candidate_pool first")
    cc = cfg["corpus"]
    backend_name = backend_name or cc["backend"]
    cap = cc.get("max_upscales_per_shard")
    if judge_client is None:
        from curation.vlm import create_vlm_client

        judge_client = create_vlm_client(cfg.get("judges.corpus") or {}, base_dir=layout.root)
    fp = stage_fingerprint(cfg, "corpus_100mp")
    # the judge (backend + model) is part of the inputs: a heuristic verdict is never reused for a
    # served judge, nor one model's verdict for another's
    judge = f"{getattr(judge_client, 'backend', None)}/{getattr(judge_client, 'model', None)}"
    key = input_key(fp, upstream_versions(layout, "corpus_100mp", shard), {"backend": backend_name, "judge": judge})
    dst = layout.manifest("corpus_100mp", shard)
    # rows waiting for a failed judge, or whose input had changed, are retried
    res = reuse_committed(dst, key, retry=(JUDGE_FAILED, SOURCE_CHANGED))
    if res is not None and all(layout.resolve(r["output_path"]).exists() for r in res.rows if r.get("passed")):
        res = _with_tiers(res)
        res.summary["reused"] = sum(r["reject_reason"] != DEFERRED for r in res.rows)  # images, as `computed` counts
        return res
    from curation.upscale.tiers import tier_for

    cands = [r for r in read_manifest(src).to_pylist() if r["passed"]]
    raw = {r["image_id"]: r for r in read_manifest(layout.manifest("raw_pool", shard)).to_pylist()}
    for r in cands:
        r["sha256"] = raw.get(r["image_id"], {}).get("sha256")
        r["tier"] = tier_for(r["width"], r["height"], cfg)
    chosen = select_for_upscale([r for r in cands if r["tier"] in ("2x", "4x")], cap)
    cache = layout.cache("corpus", fp)
    cv = stage_code_version("corpus_100mp")
    rows = []
    computed = reused = 0
    for r in cands:
        if r["tier"] in ("2x", "4x") and r["image_id"] not in chosen:
            rows.append({"image_id": r["image_id"], "parent_id": r["image_id"], "shard": shard,
                         "source_path": r["source_path"], "tier": r["tier"], "passed": False,
                         "reject_reason": DEFERRED, "config_hash": fp,
                         "reject_detail": f"corpus.max_upscales_per_shard={cap} in profile {cfg.name}",
                         "code_version": cv})
            continue
        ckey = hashlib.sha256(f"{r['image_id']}:{backend_name}:{judge}".encode()).hexdigest()[:24]
        cached = read_json(cache / f"{ckey}.json")
        if (cached and cached.get("reject_reason") not in (JUDGE_FAILED, SOURCE_CHANGED)  # retried
                and (not cached.get("output_path") or layout.resolve(cached["output_path"]).exists())):
            rows.append(cached)
            reused += 1
        else:
            res = process_image(r, layout, cfg, backend_name, judge_client, cv, config_hash=fp)
            write_json(cache / f"{ckey}.json", res)
            rows.append(res)
            computed += 1
        if progress:
            progress(1)
    rows = [{k: v for k, v in row.items() if k in CORPUS.names} for row in rows]
    table, path = commit(layout, "corpus_100mp", shard, rows, CORPUS, cfg, key)
    res = _with_tiers(StageResult(table, path, {}))
    res.summary.update(computed=computed, reused=reused)
    return res


def _with_tiers(res: StageResult) -> StageResult:
    """Add the corpus counts (per reason, per tier, passed per tier) to a result's summary."""
    rows = res.rows
    passed = [r for r in rows if r["passed"]]
    res.summary.update({
        "rows_in": len(rows), "passed": len(passed), "rejected": len(rows) - len(passed),
        "by_reason": dict(Counter(r["reject_reason"] for r in rows if not r["passed"])),
        "by_tier": dict(Counter(r.get("tier") for r in rows if r.get("reject_reason") != DEFERRED)),
        "passed_by_tier": dict(Counter(r.get("tier") for r in passed)),
    })
    return res
