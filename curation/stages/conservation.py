"""Rows in = passed + rejected at every stage: no row lost, none invented. No Dagster import.

:func:`stage_inputs` lists what a per-shard stage received, without the stage's own code: for
``raw_pool`` every directory entry of the raw shard folder (``os.listdir``, names escaped as
:mod:`curation.names` stores them), for every later stage the keys of its input manifest's rows
(all of them, or the passed ones). :func:`check_conserved` matches them with the stage's manifest:
every input has exactly one row (an entry of a raw shard: one row, or it is the licence sidecar a
row read), no row comes from nowhere, and rows = passed + rejected. The Dagster asset checks
(``rows_conserved``, :mod:`assets.checks`) report this result; tests call it directly.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from curation.layout import DataLayout
from curation.manifest import read_manifest
from curation.names import encode_name

#: stage -> (input stage, only its passed rows, key column of the input, key column of the stage's rows)
RULES: dict[str, tuple[str, bool, str, str]] = {
    "image_scores": ("raw_pool", True, "image_id", "image_id"),
    "candidate_pool": ("image_scores", False, "image_id", "image_id"),
    "corpus_100mp": ("candidate_pool", True, "image_id", "parent_id"),
    "captions": ("corpus_100mp", True, "image_id", "image_id"),
    "final_corpus": ("corpus_100mp", True, "image_id", "image_id"),
}


@dataclass
class Conservation:
    """The outcome of one check. ``missing``: inputs without a row; ``extra``: rows (keys) from no
    input; ``duplicated``: keys with more than one row; counts are rows."""

    stage: str
    shard: str
    rows_in: int
    rows: int
    passed: int
    rejected: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.missing and not self.extra and not self.duplicated
                and self.rows == self.passed + self.rejected and self.rows_in == self.passed + self.rejected)

    def summary(self, limit: int = 20) -> dict:
        """Plain values for metadata and reports (the first ``limit`` keys of each list)."""
        return {"ok": self.ok, "rows_in": self.rows_in, "rows": self.rows, "passed": self.passed,
                "rejected": self.rejected, "lost": len(self.missing), "invented": len(self.extra),
                "duplicated": len(self.duplicated), "missing": self.missing[:limit], "extra": self.extra[:limit],
                "duplicated_keys": self.duplicated[:limit]}


def raw_entry_names(shard_dir: str | os.PathLike) -> list[str]:
    """Every directory entry of a raw shard folder, as the stored (escaped) name."""
    return sorted(encode_name(n) for n in os.listdir(os.fsencode(Path(shard_dir))))


def stage_inputs(layout: DataLayout, stage: str, shard: str, raw_root: str | os.PathLike | None = None) -> list[str]:
    """The keys of what ``stage`` received for ``shard`` (entry names for ``raw_pool``, else ids)."""
    if stage == "raw_pool":
        if raw_root is None:
            raise ValueError("raw_pool's inputs are the raw shard folder: give raw_root")
        return raw_entry_names(Path(raw_root) / shard)
    if stage not in RULES:
        raise ValueError(f"no conservation rule for stage {stage!r}: choose from raw_pool, {', '.join(RULES)}")
    src, only_passed, key, _ = RULES[stage]
    t = read_manifest(layout.manifest(src, shard)).select([key, "passed"])
    keys, passed = t.column(key).to_pylist(), t.column("passed").to_pylist()
    return [k for k, p in zip(keys, passed) if p or not only_passed]


def _row_keys(stage: str, table: pa.Table) -> tuple[list[str], list[str]]:
    """(keys of the rows, keys the rows consumed besides themselves: raw_pool's sidecars)."""
    if stage == "raw_pool":
        names = [s.rsplit("/", 1)[-1] for s in table.column("source_path").to_pylist()]
        sidecars = [s for s in table.column("sidecar").to_pylist() if s] if "sidecar" in table.column_names else []
        return names, sidecars
    return [str(k) for k in table.column(RULES[stage][3]).to_pylist()], []


def check_conserved(stage: str, shard: str, table: pa.Table, inputs: list[str]) -> Conservation:
    """Match the rows of ``stage``'s manifest ``table`` with its ``inputs`` (:func:`stage_inputs`)."""
    keys, consumed = _row_keys(stage, table)
    passed_col = table.column("passed").to_pylist()
    passed = sum(1 for p in passed_col if p is True)
    rejected = sum(1 for p in passed_col if p is False)
    have = Counter(keys)
    used = Counter(set(consumed))  # one sidecar may serve several entries (a.jpg and a.png)
    want = Counter(inputs)
    got = have + used
    missing = sorted((want - got).elements())
    extra = sorted((got - want).elements())
    dup = sorted(k for k, n in have.items() if n > 1)
    rows_in = len(inputs) - sum(used[k] for k in used if k in want)
    return Conservation(stage, shard, rows_in, len(keys), passed, rejected, missing, extra, dup)


def conserved(layout: DataLayout, stage: str, shard: str, raw_root: str | os.PathLike | None = None,
              table: pa.Table | None = None) -> Conservation:
    """:func:`check_conserved` of the committed manifest of ``stage`` for ``shard`` (or ``table``)."""
    table = table if table is not None else read_manifest(layout.manifest(stage, shard))
    return check_conserved(stage, shard, table, stage_inputs(layout, stage, shard, raw_root))
