"""The purification stages of one shard (paper 3.1.1-3.1.2), without Dagster.

Each function reads the previous stage's manifest from the :class:`DataLayout`, writes its own
manifest atomically (the commit marker of the shard) and returns a :class:`StageResult` with the
table and a summary the asset turns into metadata. Rows record the stage's fingerprint as
``config_hash`` (:mod:`curation.stages.fingerprint`). A manifest written from the same inputs
(same input key) is reused as it is; per-image work is cached under the stage fingerprint, so
a killed run resumes where it stopped and a config change outside a stage's keys recomputes
nothing there. ``summary["computed"]`` / ``summary["reused"]`` count the images.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa

from curation import reasons
from curation.config import Config
from curation.layout import DataLayout
from curation.manifest import CANDIDATE_POOL, IMAGE_SCORES, RAW_POOL, read_manifest, to_table, write_manifest
from curation.purify import MemoryBudget, score_files
from curation.raw_pool import build_raw_pool_rows, list_shards, scan_shard
from curation.selection import Thresholds, assemble_thresholds, decide_candidate, streaming_top_fraction_thresholds
from curation.stages.fingerprint import (file_listing, input_key, manifest_versions, reusable, snapshot_config,
                                         stage_fingerprint, with_versions)
from curation.stages.table import STAGES


def code_version(stage: str) -> str:
    return STAGES[stage].code_version


class StageError(RuntimeError):
    """A stage cannot run (missing input, out-of-order shard); the message says what to do."""


@dataclass
class StageResult:
    table: pa.Table
    path: Path
    summary: dict = field(default_factory=dict)

    @property
    def rows(self) -> list[dict]:
        return self.table.to_pylist()

    @property
    def data_version(self) -> str | None:
        return manifest_versions(self.path)["data_version"]


def _count(rows: list[dict]) -> dict:
    passed = sum(1 for r in rows if r["passed"])
    by_reason = Counter(r["reject_reason"] for r in rows if not r["passed"])
    return {"rows_in": len(rows), "passed": passed, "rejected": len(rows) - passed, "by_reason": dict(by_reason)}


def upstream_versions(layout: DataLayout, stage: str, shard: str) -> dict[str, str | None]:
    """Data versions of the same-shard manifests ``stage`` reads (its ``inputs`` in the table)."""
    return {u: manifest_versions(layout.manifest(u, shard))["data_version"] for u in STAGES[stage].inputs}


def reuse_committed(path: Path, key: str, summary: dict | None = None, retry: tuple[str, ...] = ()) -> StageResult | None:
    """The committed manifest at ``path`` as this run's result (nothing recomputed) when it was
    written from exactly these inputs (input ``key``) and none of its rows was rejected for one of
    the ``retry`` reasons (failures worth another try, such as a judge that could not answer);
    else None."""
    if not reusable(path, key):
        return None
    table = read_manifest(path)
    rows = table.to_pylist()
    if retry and any(r.get("reject_reason") in retry for r in rows):
        return None
    out = _count(rows)
    out.update(summary or {})
    out.update(computed=0, reused=len(rows), manifest_reused=True)
    return StageResult(table, path, out)


def commit(layout: DataLayout, stage: str, shard: str, rows: list[dict], schema: pa.Schema, cfg: Config,
           key: str) -> tuple[pa.Table, Path]:
    """Write a stage's manifest with its input key and data version; snapshot the config."""
    table = with_versions(to_table(rows, schema), key)
    snapshot_config(layout, cfg, stage)
    return table, write_manifest(table, layout.manifest(stage, shard))


# -- raw pool -----------------------------------------------------------------------------

def run_raw_pool(layout: DataLayout, raw_root: str | Path, shard: str, cfg: Config,
                 progress: Callable[[int], None] | None = None) -> StageResult:
    """Ingest ``<raw_root>/<shard>``: one row per directory entry (its sidecars excepted), dedup
    against earlier shards, screen.

    Dedup needs every shard with a smaller key to be committed first (first seen wins
    across shards); otherwise StageError names the missing ones.
    """
    shard_dir = Path(raw_root) / shard
    if not shard_dir.is_dir():
        raise StageError(f"raw shard folder {shard_dir} does not exist")
    # earlier shards: local raw folders, plus shards committed elsewhere (manifests fetched from the store)
    local = {s for s in list_shards(raw_root) if s < shard}
    earlier = sorted(local | {s for s in layout.shards_with("raw_pool") if s < shard})
    missing = [s for s in earlier if not layout.manifest("raw_pool", s).exists()]
    if missing:
        raise StageError(
            f"shard {shard}: earlier shards {missing} are not materialised yet; raw_pool dedups against "
            "every earlier shard (first seen wins), so materialise shards in key order"
        )
    seen: dict[str, str] = {}
    for s in earlier:
        t = read_manifest(layout.manifest("raw_pool", s)).select(["sha256", "source_path", "reject_reason"])
        for sha, src, rr in zip(*(t.column(c).to_pylist() for c in ("sha256", "source_path", "reject_reason"))):
            if sha and rr != reasons.DUPLICATE:
                seen.setdefault(sha, src)
    fp = stage_fingerprint(cfg, "raw_pool")
    listed = scan_shard(shard_dir)  # every entry, sidecars included (a licence edit changes the key)
    key = input_key(fp, {s: manifest_versions(layout.manifest("raw_pool", s))["data_version"] for s in earlier},
                    {"shard": shard, "files": file_listing([e.path for e in listed], shard_dir)})
    dst = layout.manifest("raw_pool", shard)
    res = reuse_committed(dst, key)
    if res is not None:
        res.summary["by_tier"] = dict(Counter(r.get("screen_tier") for r in res.rows if r["passed"]))
        return res
    sidecars = {e.sidecar for e in listed if e.sidecar}
    files = [e for e in listed if e.name not in sidecars]
    rows = build_raw_pool_rows(shard, files, cfg, seen, code_version("raw_pool"), progress,
                               config_hash=fp, relpath=layout.rel)
    table, path = commit(layout, "raw_pool", shard, rows, RAW_POOL, cfg, key)
    summary = _count(rows)
    summary.update(computed=len(rows), reused=0)
    summary["by_tier"] = dict(Counter(r.get("screen_tier") for r in rows if r["passed"]))
    return StageResult(table, path, summary)


# -- per-image scores (map) ------------------------------------------------------------

def run_image_scores(layout: DataLayout, shard: str, cfg: Config, scorers: list | None = None,
                     unavailable: dict[str, str] | None = None,
                     progress: Callable[[int], None] | None = None) -> StageResult:
    """Decode every screened image of the shard once; all per-image scores + aesthetic scores.

    ``scorers``: available aesthetic scorers (objects with ``name``, ``version`` and
    ``score(list_of_rgb) -> array``); their views are 224-px copies written during decode.
    """
    src = layout.manifest("raw_pool", shard)
    if not src.exists():
        raise StageError(f"raw_pool manifest for {shard} is missing: materialise raw_pool first")
    raw = [r for r in read_manifest(src).to_pylist() if r["passed"]]
    scorers = scorers or []
    fp = stage_fingerprint(cfg, "image_scores")
    key = input_key(fp, upstream_versions(layout, "image_scores", shard),
                    {"scorers": [f"{s.name}={s.version}" for s in scorers]})
    dst = layout.manifest("image_scores", shard)
    res = reuse_committed(dst, key, {"unavailable_scorers": dict(unavailable or {}), "seconds_total": 0.0},
                          retry=(reasons.SOURCE_CHANGED,))  # a source that had changed is read again
    if res is not None:
        return res
    thumb_px = int(cfg.get("report.thumb_px"))
    jobs = [
        {
            "path": str(layout.resolve(r["source_path"])),
            "image_id": r["image_id"],
            "sha256": r.get("sha256"),  # the bytes decoded must still be those raw_pool hashed
            "thumb_path": str(layout.thumb(r["image_id"])),
            "thumb_px": thumb_px,
            "view_path": str(layout.view(r["image_id"])) if scorers else None,
            "pixels": (r.get("width") or 0) * (r.get("height") or 0) or None,  # header: the memory estimate
        }
        for r in raw
    ]
    stats: dict = {}
    results = score_files(
        jobs, cfg["purification"], int(cfg.get("io.max_pixels")), int(cfg.get("runtime.workers")),
        layout.cache("image_scores", fp), progress, stats=stats, memory=MemoryBudget.from_config(cfg),
    )
    aest_models = []
    for scorer in scorers:
        ok_idx = [i for i, r in enumerate(results) if not r.get("reject_reason")]
        values = _score_views(scorer, [jobs[i]["view_path"] for i in ok_idx])
        for i, v in zip(ok_idx, values):
            results[i][f"{scorer.name}_score"] = float(v) if v == v else None  # NaN (judge failed) -> null
        aest_models.append(f"{scorer.name}={scorer.version}")
    rows = []
    for r, res in zip(raw, results):
        row = {k: v for k, v in res.items() if k in IMAGE_SCORES.names}
        row.update(image_id=r["image_id"], shard=shard, source_path=r["source_path"],
                   config_hash=fp, code_version=code_version("image_scores"),
                   aesthetic_models=";".join(aest_models) or None)
        if row.get("thumb_path"):
            row["thumb_path"] = layout.rel(row["thumb_path"])
        row["passed"] = not res.get("reject_reason")
        rows.append(row)
    table, path = commit(layout, "image_scores", shard, rows, IMAGE_SCORES, cfg, key)
    summary = _count(rows)
    summary.update(computed=stats.get("computed", 0), reused=stats.get("reused", 0))
    summary["unavailable_scorers"] = dict(unavailable or {})
    summary["seconds_total"] = float(sum(r.get("seconds") or 0 for r in results))
    return StageResult(table, path, summary)


def _score_views(scorer, view_paths: list[str]):
    import cv2
    import numpy as np

    out = []
    batch = int(getattr(scorer, "batch_size", 16) or 16)
    for i in range(0, len(view_paths), batch):
        imgs = [cv2.cvtColor(cv2.imread(p, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in view_paths[i : i + batch]]
        out.extend(np.asarray(scorer.score(imgs), dtype=float).tolist())
    return out


# -- global thresholds (reduce) ------------------------------------------------------

#: the image_scores columns the threshold reduce reads
_SCORE_COLUMNS = ("image_id", "passed", "entropy", "laion_score", "artimuse_score")
_CUTS = {"entropy": "entropy", "laion": "laion_score", "artimuse": "artimuse_score"}


def run_thresholds(layout: DataLayout, cfg: Config, unavailable: dict[str, str] | None = None) -> tuple[Thresholds, Path]:
    """One threshold set over every committed image_scores shard; saved as <version>.json and latest.json.

    A streaming reduce: the shards are read one at a time, score columns only, a few times
    (:func:`curation.selection.streaming_top_fraction_thresholds`), so memory does not grow with
    the number of shards; the result is exactly :func:`curation.selection.compute_thresholds` of
    the whole pool."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shards = layout.shards_with("image_scores")
    if not shards:
        raise StageError("no image_scores shard is materialised yet")
    counts = dict.fromkeys(_CUTS, 0)
    digest = hashlib.sha256()  # the scored ids and their scores, not file bytes: reproducible across runs

    def passed_scores(s: str) -> pa.Table:
        t = pq.read_table(layout.manifest("image_scores", s), columns=list(_SCORE_COLUMNS))
        return t.filter(pc.fill_null(t.column("passed"), False))

    def first_pass():
        for s in shards:
            t = passed_scores(s)
            digest.update(s.encode() + b"\0")
            for iid, e, la, ar in zip(*(t.column(c).to_pylist() for c in _SCORE_COLUMNS if c != "passed")):
                digest.update(f"{iid}:{e!r}:{la!r}:{ar!r};".encode())
            for cut, col in _CUTS.items():
                counts[cut] += len(t) - t.column(col).null_count
            yield _score_arrays(t)

    passes = iter([first_pass])

    def chunks():
        return next(passes, lambda: (_score_arrays(passed_scores(s)) for s in shards))()

    pur = cfg["purification"]
    keep_e, keep_a = float(pur["richness"]["keep_top_fraction"]), float(pur["aesthetics"]["keep_top_fraction"])
    cut = streaming_top_fraction_thresholds(chunks, {"entropy": keep_e, "laion": keep_a, "artimuse": keep_a})
    th = assemble_thresholds(
        cut["entropy"], cut["laion"] if counts["laion"] else None, cut["artimuse"] if counts["artimuse"] else None,
        counts["entropy"], counts["laion"], counts["artimuse"], keep_e, keep_a,
        unavailable=unavailable, shards=shards, inputs_digest=digest.hexdigest()[:16],
    )
    d = layout.thresholds_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{th.version}.json"
    for target in (path, d / "latest.json"):
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(th.to_json())
        tmp.replace(target)
    return th, path


def _score_arrays(t: pa.Table) -> dict:
    """``{cut: float64 array}`` of one shard's passed rows (null -> NaN: not a score)."""
    import numpy as np

    return {cut: np.asarray(t.column(col).to_numpy(zero_copy_only=False), dtype=np.float64)
            for cut, col in _CUTS.items()}


def previous_thresholds_version(layout: DataLayout) -> str | None:
    """The version of the committed ``latest.json`` thresholds (None when there are none)."""
    try:
        return load_thresholds(layout).version
    except StageError:
        return None


def load_thresholds(layout: DataLayout) -> Thresholds:
    p = layout.thresholds_dir() / "latest.json"
    if not p.exists():
        raise StageError("purification_thresholds is not materialised yet")
    return Thresholds.from_json(p.read_text())


# -- candidate pool (apply) -----------------------------------------------------------

_CARRY = ("width", "height", "megapixels", "exposure_fraction", "laplacian_var", "flat_fraction", "entropy",
          "laion_score", "artimuse_score", "pass_exposure", "pass_sharpness", "pass_flatness", "thumb_path")


def run_candidate_pool(layout: DataLayout, shard: str, cfg: Config, th: Thresholds | None = None) -> StageResult:
    """Intersection of the five detections for one shard, using the global thresholds."""
    th = th or load_thresholds(layout)
    if shard not in th.shards:
        raise StageError(f"thresholds {th.version} do not include shard {shard}: re-materialise purification_thresholds")
    src = layout.manifest("image_scores", shard)
    fp = stage_fingerprint(cfg, "candidate_pool")
    key = input_key(fp, upstream_versions(layout, "candidate_pool", shard), {"thresholds": th.version})
    dst = layout.manifest("candidate_pool", shard)
    res = reuse_committed(dst, key, {"threshold_version": th.version, "aesthetics_note": th.aesthetics_note})
    if res is not None:
        res.summary["criteria"] = _criteria(res.rows)
        return res
    scored = read_manifest(src).to_pylist()
    rows = []
    for r in scored:
        row = {k: r.get(k) for k in ("image_id", "shard", "source_path") + _CARRY}
        row["reject_reason"] = r.get("reject_reason")
        row["reject_detail"] = r.get("reject_detail")
        row.update(decide_candidate(row, th))
        row.update(config_hash=fp, code_version=code_version("candidate_pool"))
        rows.append(row)
    table, path = commit(layout, "candidate_pool", shard, rows, CANDIDATE_POOL, cfg, key)
    summary = _count(rows)
    summary.update(computed=len(rows), reused=0)
    summary["criteria"] = _criteria(rows)
    summary["threshold_version"] = th.version
    summary["aesthetics_note"] = th.aesthetics_note
    return StageResult(table, path, summary)


def _criteria(rows: list[dict]) -> OrderedDict:
    crit = OrderedDict()
    for name, col in (("exposure", "pass_exposure"), ("sharpness", "pass_sharpness"), ("flatness", "pass_flatness"),
                      ("richness", "pass_richness"), ("aesthetics", "pass_aesthetics")):
        vals = [r[col] for r in rows if r[col] is not None]
        crit[name] = {"evaluated": len(vals), "passed": sum(vals), "applied": bool(vals)}
    return crit
