"""Asset checks built on great_expectations: schema, score ranges, rows conserved.

The checks run inside the materialisation (``check_specs`` on the asset), one result per
partition. ``rows_conserved`` is blocking: when rows in != passed + rejected, or the
manifest lost (or invented, or doubled) a row of its input -- matched by key with
:func:`curation.stages.conservation.conserved`; for ``raw_pool`` the input is every directory
entry of the shard folder --, downstream assets in the run do not execute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from assets import gx_checks

if TYPE_CHECKING:
    from curation.stages.conservation import Conservation

SCORE_RANGES = {
    "exposure_fraction": (0.0, 1.0),
    "flat_fraction": (0.0, 1.0),
    "entropy": (0.0, 8.0),
    "laplacian_var": (0.0, None),
    "megapixels": (0.0, None),
}


def specs(asset_key: str, with_scores: bool = True) -> list[AssetCheckSpec]:
    out = [
        AssetCheckSpec("manifest_schema", asset=asset_key, description="GX: columns match the stage schema; non-null columns have no nulls; decisions consistent."),
        AssetCheckSpec("rows_conserved", asset=asset_key, blocking=True, description="GX + curation.stages.conservation: rows in = passed + rejected; every input (raw_pool: every directory entry of the shard folder) has exactly one row, none comes from nowhere."),
    ]
    if with_scores:
        out.append(AssetCheckSpec("score_ranges", asset=asset_key, description="GX: every score inside its valid range."))
    return out


def _result(name: str, asset_key: str, ok: bool, details: list[dict], extra: dict | None = None) -> AssetCheckResult:
    md = {"expectations": MetadataValue.json(details)}
    md.update(extra or {})
    return AssetCheckResult(check_name=name, asset_key=asset_key, passed=ok, severity=AssetCheckSeverity.ERROR, metadata=md)


def run_checks(asset_key: str, table: pa.Table, expected_rows: int | Conservation,
               with_scores: bool = True) -> list[AssetCheckResult]:
    """Validate one manifest. ``expected_rows``: the stage's inputs matched with its rows
    (:func:`curation.stages.conservation.conserved`: every input has exactly one row, none comes
    from nowhere), or only the number of rows the stage received."""
    from curation.stages.conservation import Conservation

    df = table.to_pandas()
    ok_s, det_s = gx_checks.validate(
        gx_checks.with_decision_column(df), gx_checks.schema_expectations(table.schema, ("decision_consistent",)) + gx_checks.decision_expectations()
    )
    passed = int(df["passed"].sum())
    rejected = int((~df["passed"].astype(bool)).sum())
    cons = expected_rows if isinstance(expected_rows, Conservation) else None
    n_in = cons.rows_in if cons is not None else int(expected_rows)
    ok_r, det_r = gx_checks.validate(df, gx_checks.row_count_expectation(n_in))
    ok_r = ok_r and passed + rejected == n_in and (cons is None or cons.ok)
    extra = {"rows_in": n_in, "passed": passed, "rejected": rejected}
    if cons is not None:
        s = cons.summary()
        extra.update(lost=s["lost"], invented=s["invented"], duplicated=s["duplicated"])
        if not cons.ok:
            extra["unmatched"] = MetadataValue.json({k: s[k] for k in ("missing", "extra", "duplicated_keys")})
    results = [
        _result("manifest_schema", asset_key, ok_s, det_s),
        _result("rows_conserved", asset_key, ok_r, det_r, extra),
    ]
    if with_scores:
        ranges = {c: r for c, r in SCORE_RANGES.items() if c in df.columns}
        ok_v, det_v = gx_checks.validate(df, gx_checks.range_expectations(ranges))
        results.append(_result("score_ranges", asset_key, ok_v, det_v))
    return results


def corpus_specs(asset_key: str) -> list[AssetCheckSpec]:
    return specs(asset_key, with_scores=False) + [
        AssetCheckSpec("passed_at_least_100mp", asset=asset_key, blocking=True,
                       description="GX: every passed image has >= 100 MP (scaled by the profile)."),
        AssetCheckSpec("lineage_and_scores_present", asset=asset_key,
                       description="GX: parent id on every row; every passed SR image carries all final-filter scores."),
    ]


def run_corpus_checks(asset_key: str, table: pa.Table, expected_rows, cfg) -> list[AssetCheckResult]:
    import great_expectations as gx

    from curation.upscale.tiers import tier_bounds

    results = run_checks(asset_key, table, expected_rows, with_scores=False)
    df = table.to_pandas()
    passed = df[df["passed"].astype(bool)].copy()
    min_mp = tier_bounds(cfg)["archive_min_pixels_inclusive"] / 1e6
    ok, det = gx_checks.validate(passed, [gx.expectations.ExpectColumnValuesToBeBetween(
        column="megapixels", min_value=min_mp, max_value=None)]) if len(passed) else (True, [])
    results.append(_result("passed_at_least_100mp", asset_key, ok, det, {"min_megapixels": min_mp}))
    sr = passed[passed["tier"].isin(["2x", "4x"])]
    exps = [gx.expectations.ExpectColumnValuesToNotBeNull(column="parent_id")]
    ok1, det1 = gx_checks.validate(df, exps)
    ok2, det2 = (True, [])
    if len(sr):
        ok2, det2 = gx_checks.validate(sr, [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in
                                            ("seam_max_ratio", "psnr", "ssim", "region_patches", "sha256")])
    results.append(_result("lineage_and_scores_present", asset_key, ok1 and ok2, det1 + det2))
    return results
