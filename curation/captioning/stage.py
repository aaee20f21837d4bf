"""The ``captions`` stage of one shard (paper 3.1.5, with the 3.1.4 instance artifact check).

For every passed image of the shard's ``corpus_100mp`` manifest, :func:`caption_image` reads the
tiled corpus file by regions and produces a :class:`CaptionRecord` (tags, instances with box,
COCO RLE mask, area, description and importance, the aesthetics analysis, long and short
caption, per-field provenance). The instance artifact verdicts of the record decide the 3.1.4
instance check through the same rule as the region check (``final_filters.judging.decide``,
``corpus.final_filters.instances.max_flagged``). One row per image in ``manifests/captions/``:

* ``passed``: captions complete and the instance check passed;
* ``reject_reason``: ``instance_artifacts`` (a flagged instance), ``judge_failed`` (a judgement
  could not be made: never a pass) or ``caption_failed`` (a step failed; ``caption_failures``).

Each image's row is cached under ``cache/captions/<fingerprint>/`` keyed by the image and the
clients (backend/model of each), and every model call by the VLM client's own cache (image,
task, model, prompt hash): a killed run repeats no call; a prompt change redoes only the calls
of that prompt. Failed rows are captioned again on the next run. ``summary`` carries images
computed / reused and, per client, calls, cache hits, tokens and seconds.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from typing import Any, Callable

from curation import reasons
from curation.atomic import read_json, write_json
from curation.config import Config
from curation.imageio import ImageReadError, hash_regular_file
from curation.layout import DataLayout
from curation.manifest import CAPTIONS, read_manifest
from curation.stages.fingerprint import input_key, stage_fingerprint
from curation.stages.purification import (StageError, StageResult, code_version, commit, reuse_committed,
                                          upstream_versions)


class CountingClient:
    """Wraps a VLM client: counts calls, cache hits, tokens and seconds of every request it runs."""

    def __init__(self, client: Any, label: str) -> None:
        self.client, self.label = client, label
        self.stats = {"calls": 0, "cached": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def _count(self, results: list) -> list:
        for r in results:
            self.stats["calls"] += 1
            self.stats["cached"] += bool(getattr(r, "cached", False))
            self.stats["failed"] += not getattr(r, "ok", False)
            usage = getattr(r, "usage", None) or {}
            self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self.stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        return results

    def run(self, requests):
        t0 = time.perf_counter()
        out = self._count(list(self.client.run(requests)))
        self.stats["seconds"] += time.perf_counter() - t0
        return out

    def run_one(self, request):
        return self.run([request])[0]


def describe_client(client: Any) -> str:
    return f"{getattr(client, 'backend', type(client).__name__)}/{getattr(client, 'model', '')}"


def create_backends(cfg: Config) -> dict[str, Any]:
    """Tagger, grounder and segmenter from ``captions.<step>.backend`` (registry names)."""
    from curation.captioning.backends import create_grounder, create_segmenter, create_tagger

    c = cfg["captions"]
    return {
        "tagger": create_tagger(c["tagger"]["backend"], max_tags=int(c["tagger"]["max_tags"])),
        "grounder": create_grounder(c["grounder"]["backend"], box_threshold=float(c["grounder"]["box_threshold"]),
                                    max_boxes_per_tag=int(c["grounder"]["max_boxes_per_tag"])),
        "segmenter": create_segmenter(c["segmenter"]["backend"]),
    }


def instance_decision(record, max_flagged: int) -> dict:
    """The 3.1.4 instance check from a record's artifact verdicts (a failed judgement fails it)."""
    from curation.final_filters.judging import decide

    verdicts = []
    for inst in record.instances:
        prov = inst.provenance.get("artifact")
        if prov is None or not prov.ok or not isinstance(inst.artifact, dict):
            verdicts.append({"status": reasons.JUDGE_FAILED, "artifact": None,
                             "reason": prov.reason if prov is not None else "no artifact verdict"})
        else:
            verdicts.append({"status": "ok", "artifact": bool(inst.artifact.get("artifact")),
                             "reason": str(inst.artifact.get("reason", ""))})
    out = decide(verdicts, max_flagged)
    out["status"] = "applied"
    return out


def caption_row(layout: DataLayout, corpus_row: dict, cfg: Config, backends: dict, clients: dict,
                fingerprint: str, timings: dict | None = None) -> dict:
    """Caption one corpus image and decide its instance check; returns the CAPTIONS row (never raises)."""
    from curation.captioning.pipeline import caption_image
    from curation.captioning.record import caption_quality

    t0 = time.perf_counter()
    row = {"image_id": corpus_row["image_id"], "shard": corpus_row["shard"], "output_path": corpus_row["output_path"],
           "parent_id": corpus_row.get("parent_id"), "config_hash": fingerprint,
           "code_version": code_version("captions"), "passed": False}
    try:
        image = str(layout.resolve(corpus_row["output_path"]))
        try:  # the blob must still hold the bytes its id names (streamed hash; read by regions below)
            from curation.captioning.pipeline import _timed

            with _timed(timings, "source_hash"):   # the whole file (~0.1-0.2 s at 100 MP) unless its stamp holds
                hash_regular_file(image, corpus_row.get("sha256") or corpus_row["image_id"],
                                  stamps=layout.root / "index" / "hash_stamps")  # re-read only if its stat changed
        except ImageReadError as exc:
            if exc.reason != reasons.SOURCE_CHANGED:
                raise
            row.update(reject_reason=reasons.SOURCE_CHANGED, reject_detail=exc.detail, caption_complete=False,
                       seconds=time.perf_counter() - t0)
            return row
        rec = caption_image(image, corpus_row["image_id"],
                            tagger=backends["tagger"], grounder=backends["grounder"],
                            segmenter=backends["segmenter"], llm=clients["llm"], vlm=clients["vlm"],
                            params=cfg["captions"], check_artifacts=True, artifact_judge=clients["judge"],
                            timings=timings)
        dec = instance_decision(rec, int(cfg.get("corpus.final_filters.instances.max_flagged")))
        q = caption_quality(rec)
        failures = rec.failures
        row.update(
            n_tags=len(rec.tags), n_instances=len(rec.instances), long_caption=rec.long_caption,
            short_caption=rec.short_caption, caption_complete=rec.complete,
            caption_failures=json.dumps(failures, sort_keys=True) if failures else None,
            instance_status=dec["status"], instance_decision=dec["decision"], instance_flagged=dec["n_flagged"],
            instance_passed=bool(dec["passed"]), instance_coverage=q["instance_coverage"],
            noun_match=q["noun_match"], long_words=q["long_words"], short_words=q["short_words"],
            backends=json.dumps({k: f"{p.backend}/{p.model}" for k, p in sorted(rec.provenance.items())}),
            record=rec.to_json(),
        )
        if dec["decision"] == reasons.JUDGE_FAILED:
            row.update(reject_reason=reasons.JUDGE_FAILED, reject_detail=dec["reason"])
        elif not dec["passed"]:
            row.update(reject_reason=reasons.INSTANCE_ARTIFACTS, reject_detail=dec["reason"])
        elif not rec.complete:
            row.update(reject_reason=reasons.CAPTION_FAILED,
                       reject_detail="; ".join(f"{k}: {v}" for k, v in sorted(failures.items()))[:500]
                       or "a caption is missing")
        else:
            row["passed"] = True
    except Exception as exc:  # an unreadable file or a backend bug never takes the shard down
        row.update(reject_reason=reasons.CAPTION_FAILED, reject_detail=f"{type(exc).__name__}: {exc}"[:500],
                   caption_complete=False)
    row["seconds"] = time.perf_counter() - t0
    return row


_RETRY = (reasons.JUDGE_FAILED, reasons.CAPTION_FAILED, reasons.SOURCE_CHANGED)


def run_captions(layout: DataLayout, shard: str, cfg: Config, clients: dict | None = None,
                 backends: dict | None = None, progress: Callable[[int], None] | None = None) -> StageResult:
    """Captions + instance check for the passed corpus images of one shard; writes the manifest.

    ``clients``: ``{"llm", "vlm", "judge"}`` VLM clients (tag pruning; descriptions, aesthetics
    and captions; the instance artifact judge), default: from ``judges.captions_llm``,
    ``judges.captions`` and ``judges.corpus`` of ``cfg``.
    """
    src = layout.manifest("corpus_100mp", shard)
    if not src.exists():
        raise StageError(f"corpus_100mp manifest for {shard} is missing: materialise corpus_100mp first")
    images = [r for r in read_manifest(src).to_pylist() if r["passed"]]
    if clients is None:
        from curation.vlm import create_vlm_client, use_config

        clients = {use: create_vlm_client(use_config(cfg, name), base_dir=layout.root)
                   for use, name in (("llm", "captions_llm"), ("vlm", "captions"), ("judge", "corpus"))}
    clients = {k: v if isinstance(v, CountingClient) else CountingClient(v, k) for k, v in clients.items()}
    backends = backends or create_backends(cfg)
    fp = stage_fingerprint(cfg, "captions")
    who = {k: describe_client(c.client) for k, c in sorted(clients.items())}
    who.update({k: getattr(b, "name", type(b).__name__) for k, b in sorted(backends.items())})
    key = input_key(fp, upstream_versions(layout, "captions", shard), who)
    dst = layout.manifest("captions", shard)
    res = reuse_committed(dst, key, retry=_RETRY)  # failed rows are captioned again
    if res is not None:
        return _summarise(res, {})
    cache = layout.cache("captions", fp)
    ident = hashlib.sha256(json.dumps(who, sort_keys=True).encode()).hexdigest()[:12]
    rows, computed, reused = [], 0, 0
    timings: dict = {}
    for r in images:
        path = cache / f"{r['image_id']}-{ident}.json"
        cached = read_json(path)
        if cached is not None and cached.get("reject_reason") not in _RETRY:
            rows.append(cached)
            reused += 1
        else:
            row = caption_row(layout, r, cfg, backends, clients, fp, timings)
            write_json(path, row)
            rows.append(row)
            computed += 1
        if progress:
            progress(1)
    table, out = commit(layout, "captions", shard, rows, CAPTIONS, cfg, key)
    res = StageResult(table, out, {"computed": computed, "reused": reused})
    return _summarise(res, {"clients": {k: dict(c.stats, model=describe_client(c.client)) for k, c in clients.items()},
                            "step_seconds": {k: round(v, 3) for k, v in sorted(timings.items())}})


def _summarise(res: StageResult, extra: dict) -> StageResult:
    rows = res.rows
    passed = [r for r in rows if r["passed"]]
    res.summary.update({
        "rows_in": len(rows), "passed": len(passed), "rejected": len(rows) - len(passed),
        "by_reason": dict(Counter(r["reject_reason"] for r in rows if not r["passed"])),
        **extra,
    })
    return res
