"""``uhr audit RELEASE``: check every image of a release, end to end (no Dagster here).

Per image: its blob is in the object store and hashes to its id's hash; the raw source blob
too, with a licence; every *required* lineage stage holds a passed record in the image's
family; the corpus record's hash equals the release's. Required stages: those release.json
names (``required_stages``: a release made from the final corpus adds ``captions`` and
``final_corpus``), else -- a release.json from before that key -- raw_pool, image_scores,
candidate_pool and corpus_100mp; and each provider that registers as ``required`` later.
A release with captions also checks that the captions record it references is the one in the
captions manifest now (``caption record``: sha256 of the record) and that no image is a
PixVerve-Bench image (``bench held out``: the ids release.json recorded and the current split).
Per release: the table entry exists and the manifest's digest matches it. Failures are named
(image, check, detail).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from curation.layout import DataLayout
from curation.lineage import LineageContext, lineage_batch, link_providers
from curation.lineage.core import PASSED
from curation.release import (ReleaseError, check_name, read_entry, read_release_info, read_release_manifest,
                              release_required_stages, rows_digest)
from curation.store import ObjectStore, blob_digest, blob_key


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass
class AuditFailure:
    image_id: str
    check: str
    detail: str


@dataclass
class AuditReport:
    release: str
    n_images: int = 0
    checked: Counter = field(default_factory=Counter)
    failures: list[AuditFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.n_images > 0

    def fail(self, image_id: str, check: str, detail: str) -> None:
        self.failures.append(AuditFailure(image_id, check, detail))

    def as_dict(self) -> dict:
        failed = Counter(f.check for f in self.failures)
        return {"release": self.release, "ok": self.ok, "n_images": self.n_images,
                "checks": {c: {"checked": n, "failed": failed.get(c, 0)} for c, n in sorted(self.checked.items())},
                "failures": [f.__dict__ for f in self.failures]}

    def text(self, limit: int = 50) -> str:
        d = self.as_dict()
        lines = [f"release {self.release}: {self.n_images} images -- {'OK' if self.ok else 'FAILED'}"]
        lines += [f"  {c:<28} {v['checked']:>7} checked  {v['failed']:>5} failed" for c, v in d["checks"].items()]
        for f in self.failures[:limit]:
            lines.append(f"  FAIL {f.image_id} {f.check}: {f.detail}")
        if len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more failures")
        return "\n".join(lines)


def audit_release(layout: DataLayout, name: str, store: ObjectStore, verify_hashes: bool = True,
                  progress: Callable[[int], None] | None = None, batch: int = 10000) -> AuditReport:
    """Audit release ``name``. A name that is no valid release name (:func:`curation.release.check_name`:
    traversal such as ``v1/../v1``, a path, a newline) raises :class:`ReleaseError` before anything is read."""
    check_name(name)
    report = AuditReport(name)
    entry = read_entry(layout, name, store)
    report.checked["release entry"] += 1
    if entry is None:
        report.fail("-", "release entry", f"release {name} is not in the releases table ({layout.release_index()})")
        return report
    try:
        table = read_release_manifest(layout, name, store)
    except ReleaseError as exc:
        report.fail("-", "release manifest", str(exc))
        return report
    rows = table.to_pylist()
    report.n_images = len(rows)
    report.checked["release manifest"] += 1
    if rows_digest(rows) != entry["manifest_sha256"]:
        report.fail("-", "release manifest", f"manifest digest {rows_digest(rows)[:16]} differs from the "
                                              f"releases table's {entry['manifest_sha256'][:16]}")
    if len(rows) != entry["n_images"]:
        report.fail("-", "release manifest", f"{len(rows)} rows, the releases table says {entry['n_images']}")

    info = read_release_info(layout, name, store)
    wanted = set(release_required_stages(info, entry)) | {p.stage for p in link_providers() if p.required}
    required = [p for p in link_providers() if p.stage in wanted]
    report.checked["required stages"] += 1
    for stage in sorted(wanted - {p.stage for p in required}):
        report.fail("-", "required stages", f"stage {stage} is required by the release but has no lineage provider")
    held: set[str] = set()
    if info and info.get("bench_split") is not None:
        from curation.stages.final import SPLIT_FILE, bench_ids, split_dir
        from curation.store import data_key, ensure_local

        try:  # the current split too (a worker that did not run bench_split fetches it)
            ensure_local(store, data_key(layout, split_dir(layout) / SPLIT_FILE), split_dir(layout) / SPLIT_FILE)
        except Exception:
            pass  # not in the store: the recorded ids still hold
        held = set(info["bench_split"].get("image_ids") or []) | bench_ids(layout)
    ctx = LineageContext(layout, store)
    sha_memo: dict[str, str | None] = {}

    def check_blob(image_id: str, sha: str | None, check: str) -> None:
        report.checked[check] += 1
        if not sha:
            report.fail(image_id, check, "no content hash recorded")
            return
        if sha not in sha_memo:
            if verify_hashes:
                sha_memo[sha] = blob_digest(store, sha)
            else:
                sha_memo[sha] = sha if store.exists(blob_key(sha)) else None
        got = sha_memo[sha]
        if got is None:
            report.fail(image_id, check, f"blob {blob_key(sha)} missing from {store.url('blobs')}")
        elif got != sha:
            report.fail(image_id, check, f"blob {blob_key(sha)} hashes to {got}, not {sha}")

    # batches of whole shards (a shard's images and their parents share its manifests): each
    # manifest is read by one batch, not by every batch; failures are reported in manifest order
    order = sorted(range(len(rows)), key=lambda i: (rows[i].get("shard") or "", i))
    first_row_failure = len(report.failures)
    spans: list[tuple[int, int, int]] = []
    for start in range(0, len(order), batch):
        chunk = [rows[i] for i in order[start:start + batch]]
        links = lineage_batch(ctx, [r["image_id"] for r in chunk], required)
        for pos, r in zip(order[start:start + batch], chunk):
            spans.append((pos, len(report.failures), 0))
            iid = r["image_id"]
            check_blob(iid, r["sha256"], "blob")
            if r["sha256"] == _EMPTY_SHA256:
                report.fail(iid, "blob", "empty file")
            report.checked["source"] += 1
            if not r.get("raw_sha256") or not r.get("licence"):
                report.fail(iid, "source", "no raw source hash or licence recorded")
            else:
                check_blob(iid, r["raw_sha256"], "source blob")
            by_stage: dict[str, list] = {}
            for lk in links[iid]:
                by_stage.setdefault(lk.stage, []).append(lk)
            for p in required:
                check = f"stage {p.stage}"
                report.checked[check] += 1
                got = by_stage.get(p.stage, [])
                if not got:
                    report.fail(iid, check, f"no {p.stage} record for the image or its parent")
                elif not any(lk.status == PASSED for lk in got):
                    report.fail(iid, check, "rejected: " + "; ".join(lk.summary.split("REJECTED: ")[-1] for lk in got))
            if info and info.get("bench_split") is not None:
                report.checked["bench held out"] += 1
                if iid in held:
                    report.fail(iid, "bench held out", "a PixVerve-Bench image is in the release's training set")
            if r.get("caption_record"):
                report.checked["caption record"] += 1
                ref = json.loads(r["caption_record"])
                cap = [lk for lk in by_stage.get("captions", []) if lk.image_id == iid]
                now = cap[0].details.get("record_sha256") if cap else None
                if now is None:
                    report.fail(iid, "caption record", f"no captions record for the image ({ref.get('manifest')})")
                elif now != ref.get("record_sha256"):
                    report.fail(iid, "caption record", f"captions record hashes to {now[:16]} now, the release "
                                                       f"references {str(ref.get('record_sha256'))[:16]}")
            report.checked["corpus hash"] += 1
            own = [lk for lk in by_stage.get("corpus_100mp", []) if lk.image_id == iid and lk.status == PASSED]
            if own and own[0].details.get("sha256") != r["sha256"]:
                report.fail(iid, "corpus hash", f"corpus row says {own[0].details.get('sha256')}, release says {r['sha256']}")
            if progress:
                progress(1)
            spans[-1] = (pos, spans[-1][1], len(report.failures))
    row_failures = report.failures[first_row_failure:]
    report.failures[first_row_failure:] = [
        f for _, a, b in sorted(spans) for f in row_failures[a - first_row_failure:b - first_row_failure]]
    return report
