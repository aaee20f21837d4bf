"""Bench reports: the Table 3 layout (methods x metrics, best in bold), per-image CSV and HTML.

* :func:`table3` / :func:`table3_markdown` / :func:`table3_csv` -- one row per model, one
  column per metric in Table 3's order (FID, FID_patch, Aesthetics, GLCM Score, MSFI, CLIPScore,
  FG-CLIP2 Score, ICS; then the project's extra and stand-in metrics next to the metric they
  stand in for), the arrow of each metric's direction in its header, the best value of each
  column in **bold** and the second best underlined (as the paper), per direction (FID lower is
  better, the others higher); a metric with no direction (compression ratio) is reported, not
  ranked. A cell without a value is ``n/a`` with a numbered note giving the reason. The MSFI
  and ICS columns are ``msfi`` / ``ics`` (the reference's judge protocol) when that protocol
  ran for some model, else ``msfi_strict`` / ``ics_strict`` (the project's own protocol), never
  both (:data:`PROTOCOL_PAIRS`; the same for their ``_heuristic`` stand-ins). Then a
  latency / memory column per model, like the paper's Table A2: generation latency and peak
  memory for a generator, scoring latency and peak memory for a folder (labelled).
* :func:`per_image_csv` -- one row per bench row, value and reason per metric.
* :func:`per_image_html` -- the audit page: thumbnail, captions, every value or reason, the MSFI
  global view and patches the judge saw with their sub-scores, the ICS view and answer.

No Dagster import.
"""

from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path
from typing import Any, Sequence

from evaluation.results import NOT_SELECTED

#: Table 3's columns first, then the project's metrics next to what they stand in for
COLUMN_ORDER = (
    "fid", "fid_fidhelper_inception", "fid_patch", "fid_patch_fidhelper_inception", "aesthetics", "glcm",
    "glcm_entropy", "msfi", "msfi_strict", "msfi_heuristic", "msfi_strict_heuristic", "clipscore", "fgclip2", "ics",
    "ics_strict", "ics_heuristic", "ics_strict_heuristic", "compression_ratio",
)
#: (reference-protocol column, the project's own protocol's column): Table 3 shows the first when
#: the reference protocol ran for some model, else the second
PROTOCOL_PAIRS = (("msfi", "msfi_strict"), ("ics", "ics_strict"), ("msfi_heuristic", "msfi_strict_heuristic"),
                  ("ics_heuristic", "ics_strict_heuristic"))
DISPLAY = {
    "fid": "FID",
    "fid_fidhelper_inception": "FID (fid-helper Inception, stand-in)",
    "fid_patch": "FID_patch",
    "fid_patch_fidhelper_inception": "FID_patch (fid-helper Inception, stand-in)",
    "aesthetics": "Aesthetics",
    "glcm": "GLCM Score",
    "glcm_entropy": "GLCM entropy (F.1 text)",
    "msfi": "MSFI",
    "msfi_strict": "MSFI (uhrforge strict judge protocol)",
    "msfi_heuristic": "MSFI (heuristic judge, not a model)",
    "msfi_strict_heuristic": "MSFI strict (heuristic judge, not a model)",
    "clipscore": "CLIPScore",
    "fgclip2": "FG-CLIP2 Score",
    "ics": "ICS",
    "ics_strict": "ICS (uhrforge strict judge protocol)",
    "ics_heuristic": "ICS (heuristic judge, not a model)",
    "ics_strict_heuristic": "ICS strict (heuristic judge, not a model)",
    "compression_ratio": "Compression ratio",
}
NA = "n/a"
#: the reference judge protocol's counts (evaluation.metrics.reference_judge.StrictCounts)
STRICT_COUNTS = ("n_strict_refused", "n_defaulted", "n_not_number", "n_half_points", "n_out_of_range", "n_non_finite",
                 "n_boolean", "n_truncated", "n_reasoning_not_string", "n_no_answer")


def display_name(metric: str) -> str:
    return DISPLAY.get(metric, metric)


def _arrow(higher: bool | None) -> str:
    return " ↑" if higher is True else (" ↓" if higher is False else "")


def _fmt(v: float | None, digits: int = 3) -> str:
    return NA if v is None else f"{v:.{digits}f}"


def _order_key(name: str) -> tuple[int, str]:
    try:
        return COLUMN_ORDER.index(name), name
    except ValueError:
        return len(COLUMN_ORDER), name


def protocol_ran(results: Sequence[Any], metric: str) -> bool:
    """Whether ``metric`` was computed for some model: a value, or a reason that is not "not
    available" / "not selected" / "not run" (e.g. every judge call failed)."""
    for r in results:
        m = r.metrics.get(metric)
        if m is None:
            continue
        why = m.get("reason") or ""
        if m.get("value") is not None or not why.startswith(("not available", "not run", NOT_SELECTED)):
            return True
    return False


def table_metrics(results: Sequence[Any]) -> list[str]:
    """Metric columns: every metric that was run for at least one model (not 'not selected');
    of each :data:`PROTOCOL_PAIRS` pair only one, the reference protocol's when it ran."""
    names = {k for r in results for k, v in r.metrics.items() if v.get("reason") != NOT_SELECTED}
    for reference, strict in PROTOCOL_PAIRS:
        names.discard(strict if protocol_ran(results, reference) else reference)
    return sorted(names, key=_order_key)


def _direction(results: Sequence[Any], metric: str) -> bool | None:
    for r in results:
        m = r.metrics.get(metric)
        if m is not None:
            return m.get("higher_is_better")
    return None


def ranks(values: Sequence[float | None], higher_is_better: bool | None) -> list[int | None]:
    """Dense rank of each value (0 = best, ties share a rank); None for no value or no direction."""
    if higher_is_better is None:
        return [None] * len(values)
    distinct = sorted({v for v in values if v is not None}, reverse=bool(higher_is_better))
    pos = {v: i for i, v in enumerate(distinct)}
    return [None if v is None else pos[v] for v in values]


def cost_columns(result: Any) -> dict[str, Any]:
    """The Table A2-like columns of one model: latency (s per image), peak memory (MiB) and
    what was measured (generation for a generator, scoring for a folder)."""
    gen = result.generation or {}
    if gen.get("latency_mean_s") is not None:
        mem = gen.get("peak_memory_bytes")
        return {"latency_s": gen["latency_mean_s"], "peak_memory_mb": mem / 2**20 if mem else None,
                "measured": f"generation ({gen.get('memory_kind') or 'memory n/a'})"}
    t = result.timings or {}
    mem = t.get("peak_memory_bytes")
    return {"latency_s": t.get("scoring_per_image_s"), "peak_memory_mb": mem / 2**20 if mem else None,
            "measured": f"scoring ({t.get('memory_kind') or 'memory n/a'})"}


def resolution(result: Any) -> str:
    """The images' size as ``H x W`` (Table 3's resolution column): the most common one, with
    ``+`` when the images are not all the same size; ``n/a`` without images."""
    from collections import Counter

    sizes = Counter((r.get("height"), r.get("width")) for r in result.rows
                    if r.get("status") == "ok" and r.get("width") and r.get("height"))
    if not sizes:
        return NA
    (h, w), _n = sizes.most_common(1)[0]
    return f"{h} × {w}" + ("+" if len(sizes) > 1 else "")


def table3(results: Sequence[Any], metrics: Sequence[str] | None = None, digits: int = 3) -> dict[str, Any]:
    """The table as data: ``headers``, ``rows`` (Markdown cells), ``values`` (raw), ``notes``
    (reason footnotes), ``best`` ({metric: model names with the best value})."""
    metrics = list(metrics) if metrics is not None else table_metrics(results)
    notes: list[str] = []
    note_ids: dict[str, int] = {}
    cells = [[r.model, resolution(r)] for r in results]
    best: dict[str, list[str]] = {}
    for m in metrics:
        vals = [r.value(m) for r in results]
        rk = ranks(vals, _direction(results, m))
        best[m] = [r.model for r, k in zip(results, rk) if k == 0]
        for i, (r, v, k) in enumerate(zip(results, vals, rk)):
            if v is None:
                why = r.reason(m) or "no value"
                if why not in note_ids:
                    notes.append(why)
                    note_ids[why] = len(notes)
                cells[i].append(f"{NA} [{note_ids[why]}]")
            elif k == 0 and len([x for x in vals if x is not None]) > 1:
                cells[i].append(f"**{_fmt(v, digits)}**")
            elif k == 1:
                cells[i].append(f"<u>{_fmt(v, digits)}</u>")
            else:
                cells[i].append(_fmt(v, digits))
    for i, r in enumerate(results):
        c = cost_columns(r)
        n_ok = r.n_images
        cells[i] += [f"{n_ok}/{r.n_prompts}", _fmt(c["latency_s"], 3), _fmt(c["peak_memory_mb"], 0), c["measured"]]
    headers = ["Method", "Resolution (H × W)"] + [display_name(m) + _arrow(_direction(results, m)) for m in metrics] + \
              ["images", "latency (s/image)", "peak memory (MiB)", "measured"]
    values = [{m: r.value(m) for m in metrics} for r in results]
    return {"headers": headers, "rows": cells, "values": values, "notes": notes, "best": best, "metrics": metrics}


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def table3_markdown(results: Sequence[Any], metrics: Sequence[str] | None = None, digits: int = 3,
                    title: str | None = "Bench results (layout of PixVerve Table 3)") -> str:
    """Markdown: the table, then the notes (reasons of n/a cells), protocol versions and judge."""
    if not results:
        return "_no bench results yet_\n"
    t = table3(results, metrics, digits)
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [_md_row(t["headers"]), _md_row(["---", "---"] + [":---:"] * (len(t["headers"]) - 2))]
    lines += [_md_row(r) for r in t["rows"]]
    lines.append("")
    lines.append("Best per column in **bold**, second best underlined (per the arrow: ↓ lower is better, "
                 "↑ higher is better; no arrow: reported, not ranked). Latency / memory: generation for a "
                 "generator, scoring for a folder of images (as measured on this machine).")
    if t["notes"]:
        lines += ["", "Notes:"]
        lines += [f"{i}. {html.escape(n, quote=False)}" for i, n in enumerate(t["notes"], 1)]
    judges = sorted({str(r.judge.get("backend")) + " / " + str(r.judge.get("model")) for r in results
                     if r.judge.get("backend")})
    if judges:
        lines += ["", "Judge (backend / model): " + "; ".join(judges)]
    protos = {}
    for r in results:
        for k, v in r.protocols.items():
            if k in t["metrics"]:
                protos.setdefault(k, set()).add(v)
    if protos:
        lines += ["", "Protocols: " + "; ".join(f"`{k}` {', '.join(sorted(v))}" for k, v in sorted(protos.items()))]
    return "\n".join(lines) + "\n"


def table3_csv(results: Sequence[Any], path: str | os.PathLike | None = None,
               metrics: Sequence[str] | None = None) -> str:
    """CSV: one row per model, raw values (full precision; empty = no value), the reason of each
    empty value, images, latency, memory. Returns the path (or the text when ``path`` is None)."""
    metrics = list(metrics) if metrics is not None else table_metrics(results)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "resolution"] + metrics + [f"{m}_reason" for m in metrics] +
               ["n_images", "n_prompts", "latency_s_per_image", "peak_memory_mb", "measured", "judge_backend"])
    for r in results:
        c = cost_columns(r)
        w.writerow([r.model, resolution(r)] + ["" if r.value(m) is None else repr(float(r.value(m))) for m in metrics] +
                   [r.reason(m) or "" for m in metrics] +
                   [r.n_images, r.n_prompts, "" if c["latency_s"] is None else c["latency_s"],
                    "" if c["peak_memory_mb"] is None else round(c["peak_memory_mb"], 1), c["measured"],
                    r.judge.get("backend") or ""])
    if path is None:
        return buf.getvalue()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(buf.getvalue())
    return str(path)


def write_table3(results: Sequence[Any], out_dir: str | os.PathLike, stem: str = "table3") -> dict[str, str]:
    """``<stem>.md``, ``<stem>.csv`` and ``<stem>.html`` (the Markdown rendered) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = table3_markdown(results)
    (out / f"{stem}.md").write_text(md)
    table3_csv(results, out / f"{stem}.csv")
    (out / f"{stem}.html").write_text(_page("Bench results", table3_html(results)))
    return {"md": str(out / f"{stem}.md"), "csv": str(out / f"{stem}.csv"), "html": str(out / f"{stem}.html")}


def table3_html(results: Sequence[Any]) -> str:
    if not results:
        return "<p>no bench results yet</p>"
    t = table3(results)
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t["headers"]) + "</tr>"]
    for row in t["rows"]:
        cells = []
        for c in row:
            s = html.escape(str(c))
            if s.startswith("**") and s.endswith("**"):
                s = f"<b>{s[2:-2]}</b>"
            s = s.replace("&lt;u&gt;", "<u>").replace("&lt;/u&gt;", "</u>")
            cells.append(f"<td>{s}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if t["notes"]:
        out.append("<ol>" + "".join(f"<li>{html.escape(n)}</li>" for n in t["notes"]) + "</ol>")
    return "\n".join(out)


# =============================================================================================
# per image
# =============================================================================================
def _row_metrics(result: Any) -> list[str]:
    names = {k for row in result.rows for k in row.get("values", {})}
    return sorted(names, key=_order_key)


def per_image_csv(result: Any, path: str | os.PathLike) -> str:
    """One row per bench row: identity, file facts, then ``<metric>`` and ``<metric>_reason``."""
    metrics = _row_metrics(result)
    fixed = ["index", "stem", "file_name", "status", "path", "sha256", "width", "height", "format", "bytes",
             "judge_backend"]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fixed + [c for m in metrics for c in (m, f"{m}_reason")])
        for row in result.rows:
            vals = []
            for m in metrics:
                v = row["values"].get(m)
                vals += ["" if v is None else repr(float(v)), row["reasons"].get(m) or ""]
            w.writerow([row.get(k, "") if row.get(k) is not None else "" for k in fixed] + vals)
    return str(path)


_CSS = """
body{font-family:sans-serif;margin:1.5em;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top}
th{background:#f3f3f3}.na{color:#a33}.img{margin:1.5em 0;padding-top:1em;border-top:2px solid #888}
.patches{display:flex;flex-wrap:wrap;gap:8px}.patch{border:1px solid #ddd;padding:4px;font-size:12px;width:200px}
.patch img{width:192px;height:192px;object-fit:contain;background:#eee}.cap{font-size:12px;color:#444;max-width:900px}
.heur{background:#fff3cd;padding:4px 8px;border:1px solid #e0c36c}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def _rel(target: str | None, base: Path) -> str | None:
    if not target:
        return None
    try:
        return os.path.relpath(target, base)
    except ValueError:  # another drive
        return target


def _val(v: Any, reason: str | None) -> str:
    if v is None:
        return f"<span class='na'>{html.escape(reason or NA)}</span>"
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def per_image_html(result: Any, path: str | os.PathLike) -> str:
    """The audit page of one model (see the module docstring). Image links are relative to the
    page, so the output folder can be moved as a whole."""
    base = Path(path).resolve().parent
    metrics = _row_metrics(result)
    b: list[str] = [f"<h1>Bench: {html.escape(result.model)}</h1>"]
    b.append(f"<p>prompts <code>{html.escape(result.prompts_file)}</code> (sha256 {result.prompts_sha256[:16]}...), "
             f"{result.n_images}/{result.n_prompts} images; source {html.escape(str(result.source))}; "
             f"reference {html.escape(str(result.reference_dir))}</p>")
    jb = result.judge.get("backend")
    if jb and not result.judge.get("is_model"):
        b.append(f"<p class='heur'>Judge backend <b>{html.escape(str(jb))}</b> ({html.escape(str(result.judge.get('model')))}): "
                 "not a vision-language model. Its MSFI / ICS-shaped scores are reported as <code>msfi_heuristic</code> / "
                 "<code>ics_heuristic</code> (<code>msfi_strict_heuristic</code> / <code>ics_strict_heuristic</code>), "
                 "never as MSFI / ICS.</p>")
    b.append("<h2>Set scores</h2><table><tr><th>metric</th><th>value</th><th>protocol</th><th>notes</th></tr>")
    for k, m in sorted(result.metrics.items(), key=lambda kv: _order_key(kv[0])):
        ex = m.get("extra") or {}
        note = ", ".join([f"{a}={ex[a]}" for a in ("n_scored", "n_images", "n_pairs", "n_complete", "judge_backend")
                          if a in ex] + [f"{a}={ex[a]}" for a in ("n_left_out", *STRICT_COUNTS) if ex.get(a)])
        b.append(f"<tr><td>{html.escape(display_name(k))}{_arrow(m.get('higher_is_better'))}</td>"
                 f"<td>{_val(m.get('value'), m.get('reason'))}</td><td><code>{html.escape(str(m.get('protocol_version')))}"
                 f"</code></td><td>{html.escape(note)}</td></tr>")
    b.append("</table>")
    if result.missing:
        b.append(f"<p class='na'>missing images: {html.escape(', '.join(result.missing))}</p>")
    if result.extra_files:
        b.append(f"<p>files not in the bench (ignored): {html.escape(', '.join(Path(p).name for p in result.extra_files))}</p>")
    b.append("<h2>Images</h2>")
    for row in result.rows:
        b.append(f"<div class='img' id='{html.escape(row['stem'])}'><h3>#{row['index']} {html.escape(row['stem'])} "
                 f"<small>({html.escape(row['status'])})</small></h3>")
        thumb = _rel(row.get("thumb"), base)
        if thumb:
            link = _rel(row.get("path"), base) or thumb
            b.append(f"<a href='{html.escape(link)}'><img src='{html.escape(thumb)}' style='max-width:256px'></a>")
        facts = [f"{k}: {row[k]}" for k in ("path", "sha256", "width", "height", "format", "bytes") if row.get(k)]
        b.append("<div class='cap'>" + "<br>".join(html.escape(str(f)) for f in facts) + "</div>")
        b.append(f"<p class='cap'><b>short:</b> {html.escape(row.get('short_caption') or '')}<br>"
                 f"<b>long:</b> {html.escape(row.get('long_caption') or '')}</p>")
        b.append("<table><tr>" + "".join(f"<th>{html.escape(display_name(m))}</th>" for m in metrics) + "</tr><tr>" +
                 "".join(f"<td>{_val(row['values'].get(m), row['reasons'].get(m))}</td>" for m in metrics) + "</tr></table>")
        for m in metrics:
            ex = (row.get("extra") or {}).get(m) or {}
            if m.startswith("msfi") and ex:
                b.append(_msfi_block(m, ex, base))
            elif m.startswith("ics") and ex:
                b.append(_ics_block(m, ex, base))
        b.append("</div>")
    return _write(path, _page(f"bench {result.model}", "\n".join(b)))


def _counts_line(ex: dict) -> str:
    """The reference protocol's counts of what a strict reading would refuse (non-zero ones)."""
    shown = [f"{k}={ex[k]}" for k in STRICT_COUNTS if ex.get(k)]
    return f"<p class='cap'>strict reading would refuse: {html.escape(', '.join(shown))}</p>" if shown else ""


def _msfi_block(name: str, ex: dict, base: Path) -> str:
    out = [f"<h4>{html.escape(display_name(name))}: what the judge saw (backend {html.escape(str(ex.get('judge_backend')))}, "
           f"model {html.escape(str(ex.get('judge_model')))})</h4>"]
    g = _rel(ex.get("global_view"), base)
    gsub = {k: v for k, v in (ex.get("global_sub") or {}).items() if isinstance(v, (int, float))}
    out.append("<div class='patches'>")
    if g:
        out.append(f"<div class='patch'><a href='{html.escape(g)}'><img src='{html.escape(g)}'></a><br>global view "
                   f"(long edge 2048)<br>{html.escape(', '.join(f'{k}={v:g}' for k, v in gsub.items()))}<br>"
                   f"S_g={_val(ex.get('s_global'), ex.get('global_reason'))}</div>")
    for p in ex.get("patches") or []:
        src = _rel(p.get("view"), base)
        sub = ", ".join(f"{k}={v}" for k, v in (p.get("sub") or {}).items())
        score = (ex.get("local_scores") or [None] * 99)[p["i"]] if p["i"] < len(ex.get("local_scores") or []) else None
        out.append(f"<div class='patch'>" + (f"<a href='{html.escape(src)}'><img src='{html.escape(src)}'></a><br>" if src else "")
                   + f"#{p['i']} {html.escape(p['source'])} (rank {p['rank']}) box {p['box']}<br>"
                   + (html.escape(sub) if sub else f"<span class='na'>{html.escape(str(p.get('reason')))}</span>")
                   + f"<br>S_l={_val(score, p.get('reason'))}</div>")
    out.append("</div>")
    ph = ex.get("prompt_hashes") or {}
    out.append(f"<p class='cap'>prompt hashes: {html.escape(', '.join(f'{k} {str(v)[:16]}' for k, v in ph.items()))}; "
               f"complete (all 11 answers): {ex.get('complete')}</p>")
    if ex.get("failures"):
        out.append(f"<p class='na'>judge failures: {html.escape(str(ex['failures']))}</p>")
    out.append(_counts_line(ex))
    return "\n".join(out)


def _ics_block(name: str, ex: dict, base: Path) -> str:
    v = _rel(ex.get("view"), base)
    subs = ", ".join(f"{k}={ex[k]:g}" for k in ("IEV", "AAA", "SRA") if isinstance(ex.get(k), (int, float)))
    out = [f"<h4>{html.escape(display_name(name))} (backend {html.escape(str(ex.get('judge_backend')))})</h4>"]
    if v:
        out.append(f"<a href='{html.escape(v)}'>judge view {ex.get('view_size')}</a> ")
    out.append(f"<span>{html.escape(subs)}</span>")
    ph = ex.get("prompt_hashes") or {}
    out.append(f"<p class='cap'>prompt hash: {html.escape(', '.join(str(v)[:16] for v in ph.values()))}</p>")
    if ex.get("failures"):
        out.append(f"<p class='na'>judge failures: {html.escape(str(ex['failures']))}</p>")
    out.append(_counts_line(ex))
    return "\n".join(out)


def _write(path: str | os.PathLike, text: str) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return str(path)
