"""Pictures and tables a person would rather look at: contact sheets, histograms, pass rates.

Everything is written as files under the data root; Dagster metadata links to them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np


def contact_sheet(
    groups: "OrderedDict[str, list[tuple[str, str]]]",
    out_path: str | os.PathLike,
    cell: int = 160,
    per_group: int = 12,
) -> Path | None:
    """Grid of thumbnails, one row block per group (e.g. ``pass``, each reject reason).

    ``groups`` maps a title to ``[(thumb_path, caption), ...]``; missing thumbnails show as
    grey cells with their caption, so a reject without pixels (unreadable) still appears.
    """
    blocks = []
    width = cell * per_group
    for title, items in groups.items():
        items = items[:per_group]
        header = np.full((28, width, 3), 255, np.uint8)
        cv2.putText(header, f"{title} ({len(items)} shown)", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        row = np.full((cell + 18, width, 3), 235, np.uint8)
        for i, (thumb, caption) in enumerate(items):
            img = cv2.imread(thumb, cv2.IMREAD_COLOR) if thumb and Path(thumb).exists() else None
            x0 = i * cell
            if img is not None:
                h, w = img.shape[:2]
                s = (cell - 4) / max(h, w)
                img = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
                ih, iw = img.shape[:2]
                oy, ox = (cell - ih) // 2, x0 + (cell - iw) // 2
                row[oy : oy + ih, ox : ox + iw] = img
            else:
                cv2.rectangle(row, (x0 + 4, 4), (x0 + cell - 4, cell - 4), (160, 160, 160), -1)
                cv2.putText(row, "no pixels", (x0 + 12, cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
            cv2.putText(row, caption[:22], (x0 + 3, cell + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        blocks += [header, row]
    if not blocks:
        return None
    sheet = np.vstack(blocks)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), sheet)
    return out_path


def histograms(
    columns: dict[str, list],
    thresholds: dict[str, float | None],
    out_path: str | os.PathLike,
    title: str = "",
) -> Path | None:
    """One histogram panel per score with its threshold drawn as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = {k: [v for v in vals if v is not None and np.isfinite(v)] for k, vals in columns.items()}
    cols = {k: v for k, v in cols.items() if v}
    if not cols:
        return None
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.2), squeeze=False)
    for ax, (name, vals) in zip(axes[0], cols.items()):
        ax.hist(vals, bins=min(30, max(5, len(vals) // 2)), color="#4477aa")
        t = thresholds.get(name)
        if t is not None:
            ax.axvline(t, color="#cc3311", linestyle="--", label=f"threshold {t:.3g}")
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def corpus_contact_sheet(rows: list[dict], out_path: str | os.PathLike, crop: int = 128, zoom: int = 2,
                         max_rows: int = 6, root: str | os.PathLike | None = None) -> Path | None:
    """Native vs SR, side by side: per SR image a ``crop``-px input crop (nearest-zoomed to the
    SR scale) next to the same region of the SR output, both shown at ``zoom``x."""
    from curation.names import fs_path
    from curation.upscale.storage import open_source

    panels = []
    for r in [r for r in rows if r.get("tier") in ("2x", "4x") and r.get("output_path")][:max_rows]:
        try:
            base = Path(root) if root is not None else Path.cwd()
            lr = open_source(str(base / fs_path(r["source_path"])))  # an escaped name: its real bytes
            sr = open_source(str(base / r["output_path"]))
            s = int(r["scale"])
            y0, x0 = max(0, lr.height // 2 - crop // 2), max(0, lr.width // 2 - crop // 2)
            a = lr.read(y0, min(lr.height, y0 + crop), x0, min(lr.width, x0 + crop))
            b = sr.read(y0 * s, min(sr.height, (y0 + crop) * s), x0 * s, min(sr.width, (x0 + crop) * s))
        except Exception:
            continue
        size = (crop * s * zoom // s, crop * s * zoom // s)
        a = cv2.resize(a, size, interpolation=cv2.INTER_NEAREST)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA if b.shape[0] > size[0] else cv2.INTER_NEAREST)
        label = np.full((22, size[0] * 2 + 6, 3), 255, np.uint8)
        verdict = "pass" if r["passed"] else r.get("reject_reason", "")
        cv2.putText(label, f"{r['tier']} {r['image_id'][:10]} native | SR ({verdict})", (4, 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        gap = np.full((size[1], 6, 3), 255, np.uint8)
        panels.append(np.vstack([label, np.hstack([a, gap, b])]))
    if not panels:
        return None
    w = max(p.shape[1] for p in panels)
    panels = [np.pad(p, ((0, 4), (0, w - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), cv2.cvtColor(np.vstack(panels), cv2.COLOR_RGB2BGR))
    return out_path


def caption_overlay(layout, caption_row: dict, out_path: str | os.PathLike, long_edge: int = 768) -> Path | None:
    """One captioned image on a thumbnail: every instance's mask tinted and its box outlined,
    labelled with its index and label (the captions asset links it from its metadata)."""
    from curation.captioning.geometry import downscaled_read
    from curation.captioning.record import CaptionRecord
    from curation.captioning.rle import decode_resized
    from curation.upscale.storage import open_source

    try:
        rec = CaptionRecord.from_json(caption_row["record"])
        src = open_source(str(layout.resolve(caption_row["output_path"])))
        try:
            view = np.ascontiguousarray(downscaled_read(src, long_edge))
        finally:
            if hasattr(src, "close"):
                src.close()
    except Exception:
        return None
    h, w = view.shape[:2]
    sx, sy = w / rec.width, h / rec.height
    out = view.astype(np.float32)
    rng = np.random.default_rng(0)
    colours = [rng.integers(64, 256, 3) for _ in rec.instances]
    for inst, colour in zip(rec.instances, colours):
        m = decode_resized(inst.mask_rle, h, w).astype(bool)
        out[m] = 0.55 * out[m] + 0.45 * colour.astype(np.float32)
    out = np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8))
    for i, (inst, colour) in enumerate(zip(rec.instances, colours)):
        x0, y0, x1, y1 = (int(round(v)) for v in (inst.box[0] * sx, inst.box[1] * sy, inst.box[2] * sx, inst.box[3] * sy))
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), tuple(int(c) for c in colour), 2)
        cv2.putText(out, f"{i} {inst.label}"[:32], (x0 + 3, max(12, y0 + 14)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    return out_path
