"""Small helpers shared by the providers."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from curation.lineage.core import PASSED, REJECTED, Link, LinkProvider


def status(row: dict) -> str:
    return PASSED if row.get("passed") else REJECTED


def record(row: dict) -> str:
    m = row.pop("_manifest", "") or ""
    return _norm(m) if m else ""


@lru_cache(maxsize=65536)
def _norm(path: str) -> str:
    """The manifest path as written in a link (one per manifest: cached, an audit asks 10^5 times)."""
    return str(Path(path))


def num(v, fmt: str = ".3g") -> str:
    return "n/a" if v is None else format(v, fmt)


def cmp(value, op: str, limit, fmt: str = ".3g") -> str:
    """``value op limit`` with ok/FAIL, e.g. ``0.03 <= 0.2 ok``."""
    if value is None:
        return "n/a"
    if limit is None:
        return f"{num(value, fmt)} (limit unknown)"
    ok = {"<=": value <= limit, ">=": value >= limit, "<": value < limit, ">": value > limit}[op]
    return f"{num(value, fmt)} {op} {num(limit, fmt)} {'ok' if ok else 'FAIL'}"


def rejected_suffix(row: dict) -> str:
    if row.get("passed"):
        return ""
    detail = f" ({row['reject_detail']})" if row.get("reject_detail") else ""
    return f"; REJECTED: {row.get('reject_reason')}{detail}"


class ManifestLinks(LinkProvider):
    """A stage whose manifest rows are keyed by ``image_id``: one link per row, summarised by
    :meth:`summarize` (which may add fields to the row: they land in the link's details)."""

    def summarize(self, ctx, row: dict) -> str:
        raise NotImplementedError

    def links(self, ctx, ids):
        out = []
        for r in ctx.rows(self.stage, ids):
            where = record(r)
            out.append(Link(self.stage, r["image_id"], status(r), self.summarize(ctx, r), r, where))
        return out
