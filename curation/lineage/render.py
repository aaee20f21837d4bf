"""Lineage as text: the ``uhr lineage`` report and the demo's example (one function for both)."""

from __future__ import annotations

from curation.lineage.core import LineageContext, lineage, link_providers, resolve_image_id


def lineage_text(lin, image_id: str) -> str:
    """The human-readable lineage of ``image_id``: its derivation chain, then one line per link in
    provider order (a required stage without a record says MISSING), each with where it is recorded."""
    lines = []
    chain = " -> ".join(b for _, b in lin.edges) if lin.edges else ""
    lines.append(f"image {image_id}" + (f"  (derived: {lin.edges[0][0]} -> {chain})" if lin.edges else ""))
    by_stage = lin.by_stage()
    for p in link_providers():
        title = p.title or p.stage
        links = by_stage.get(p.stage, [])
        if not links:
            if p.required:
                lines.append(f"  [{title}] MISSING: no {p.stage} record")
            continue
        for lk in links:
            lines.append(f"  [{title}] {lk.status.upper():<8} {lk.image_id}: {lk.summary}")
            if lk.record:
                lines.append(f"      record: {lk.record}")
    return "\n".join(lines)


def image_lineage(ctx: LineageContext, image_id: str):
    """``(full id, Lineage)`` of an id or a unique prefix; KeyError / ValueError name what is wrong."""
    full = resolve_image_id(ctx, image_id)
    return full, lineage(ctx, full)
