"""Measure every filter against the generator's ground-truth labels (precision / recall).

Each filter is judged on the images it actually evaluated (an image rejected earlier,
e.g. a duplicate, never reaches the flatness filter). A filter "fires" on an image when
its own decision rejects it, whatever the other filters said, because the five detections
decide independently. The positives of a filter are the labelled images whose
``expected_reason`` is that filter's reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from curation import reasons

# filter name -> (reason string it emits, manifest column or None for reject_reason based)
FILTERS = [
    ("dedup", reasons.DUPLICATE),
    ("not_an_image", reasons.NOT_AN_IMAGE),
    ("truncated", reasons.TRUNCATED),
    ("screen: too_few_pixels", reasons.TOO_FEW_PIXELS),
    ("screen: min_side_too_short", reasons.MIN_SIDE_TOO_SHORT),
    ("exposure", reasons.OVER_OR_UNDER_EXPOSED),
    ("sharpness", reasons.BLURRED),
    ("flatness", reasons.FLAT),
    ("richness (entropy top 60 %)", reasons.LOW_ENTROPY),
    ("aesthetics (top 60 %)", reasons.LOW_AESTHETICS),
]
_PASS_COL = {
    reasons.OVER_OR_UNDER_EXPOSED: "pass_exposure",
    reasons.BLURRED: "pass_sharpness",
    reasons.FLAT: "pass_flatness",
    reasons.LOW_ENTROPY: "pass_richness",
    reasons.LOW_AESTHETICS: "pass_aesthetics",
}


def load_labels(raw_root: str | Path) -> dict[str, dict]:
    """labels.jsonl -> {absolute source path: label}."""
    raw_root = Path(raw_root)
    out = {}
    with open(raw_root / "labels.jsonl") as fh:
        for line in fh:
            if line.strip():
                lab = json.loads(line)
                out[str((raw_root / lab["file"]).resolve())] = lab
    return out


def evaluate(labels: dict[str, dict], raw_rows: list[dict], cand_rows: list[dict],
             root: str | Path | None = None) -> list[dict]:
    """One dict per filter: evaluated, fired, positives, tp, precision, recall.
    ``root``: the data root relative manifest paths are under."""
    base = Path(root) if root is not None else Path.cwd()
    raw_by = {str((base / r["source_path"]).resolve()): r for r in raw_rows}
    cand_by = {str((base / r["source_path"]).resolve()): r for r in cand_rows}
    out = []
    for name, reason in FILTERS:
        evaluated = fired = pos = tp = 0
        for path, lab in labels.items():
            expected = lab["expected_reason"]
            if reason in _PASS_COL:
                row = cand_by.get(path)
                if row is None or row.get(_PASS_COL[reason]) is None:
                    continue
                hit = row[_PASS_COL[reason]] is False
            else:
                row = raw_by.get(path)
                if row is None:
                    continue
                rr = row["reject_reason"]
                if reason in (reasons.TRUNCATED,):
                    crow = cand_by.get(path)
                    rr = crow["reject_reason"] if crow is not None and crow["reject_reason"] in reasons.FILE_REASONS else rr
                hit = rr == reason
            evaluated += 1
            fired += hit
            pos += expected == reason
            tp += hit and expected == reason
        out.append({
            "filter": name,
            "reason": reason,
            "evaluated": evaluated,
            "fired": fired,
            "labelled": pos,
            "tp": tp,
            "precision": tp / fired if fired else None,
            "recall": tp / pos if pos else None,
        })
    return out
