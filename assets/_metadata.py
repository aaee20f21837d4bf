"""Turn stage summaries into Dagster materialisation metadata (files linked, tables inline)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pyarrow as pa
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from curation.reports import contact_sheet, histograms

_PA_TO_DAGSTER = {"string": "string", "bool": "bool", "int32": "int", "int64": "int", "double": "float"}


def column_schema(schema: pa.Schema) -> TableSchema:
    return TableSchema(
        columns=[TableColumn(f.name, _PA_TO_DAGSTER.get(str(f.type), str(f.type))) for f in schema]
    )


def counts_table(rows: list[list], headers: list[tuple[str, str]]) -> MetadataValue:
    schema = TableSchema(columns=[TableColumn(n, t) for n, t in headers])
    records = [TableRecord(dict(zip([n for n, _ in headers], r))) for r in rows]
    return MetadataValue.table(records, schema=schema)


def reason_table(summary: dict) -> MetadataValue:
    rows = [["pass", summary["passed"], summary["passed"] / max(1, summary["rows_in"])]]
    for reason, n in sorted(summary["by_reason"].items(), key=lambda kv: -kv[1]):
        rows.append([reason, n, n / max(1, summary["rows_in"])])
    return counts_table(rows, [("outcome", "string"), ("images", "int"), ("share", "float")])


def base_metadata(table: pa.Table, path: Path, summary: dict) -> dict:
    return {
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": column_schema(table.schema),
        "manifest": MetadataValue.path(str(path)),
        "rows_in": summary["rows_in"],
        "passed": summary["passed"],
        "rejected": summary["rejected"],
        "outcomes": reason_table(summary),
    }


def sheet_and_histograms(rows: list[dict], out_dir: Path, score_cols: list[str], thresholds: dict, title: str,
                         with_sheet: bool = True, root: Path | None = None) -> dict:
    """Contact sheet (passes + rejects per reason) and score histograms, linked as paths.
    ``root``: the data root that relative thumbnail paths are under."""
    def thumb(r):
        t = r.get("thumb_path")
        return str(Path(root) / t) if t and root is not None else t

    groups: "OrderedDict[str, list]" = OrderedDict()
    groups["pass"] = [(thumb(r), Path(r["source_path"]).name) for r in rows if r["passed"]]
    for r in rows:
        if not r["passed"]:
            groups.setdefault(f"reject: {r['reject_reason']}", []).append(
                (thumb(r), Path(r["source_path"]).name)
            )
    md = {}
    sheet = contact_sheet(groups, out_dir / "contact_sheet.png") if with_sheet else None
    if sheet:
        md["contact_sheet"] = MetadataValue.path(str(sheet))
    hist = histograms({c: [r.get(c) for r in rows] for c in score_cols}, thresholds, out_dir / "histograms.png", title)
    if hist:
        md["histograms"] = MetadataValue.path(str(hist))
    return md
