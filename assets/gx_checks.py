"""great_expectations 1.x expectations on stage manifests, called from Dagster asset checks.

(``dagster-ge`` pins GX < 1 and numpy < 2, so the project calls GX itself.)
An ephemeral GX context is made once per process; each check validates a pandas frame
of the manifest and returns (success, details) for an ``AssetCheckResult``.
"""

from __future__ import annotations

import functools
import itertools

import pandas as pd
import pyarrow as pa

_counter = itertools.count()


@functools.lru_cache(maxsize=1)
def _context():
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # older/newer GX: progress bars are cosmetic
        pass
    return ctx, ctx.data_sources.add_pandas("uhrforge_manifests")


def validate(df: pd.DataFrame, expectations: list) -> tuple[bool, list[dict]]:
    """Run expectations on one frame; returns (all passed, one summary dict per expectation)."""
    _, ds = _context()
    name = f"m{next(_counter)}"
    batch = ds.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": df}
    )
    out = []
    ok = True
    for exp in expectations:
        res = batch.validate(exp)
        ok &= bool(res.success)
        result = res.result or {}
        out.append({
            "expectation": type(exp).__name__,
            "column": getattr(exp, "column", None),
            "success": bool(res.success),
            "observed": str(result.get("observed_value", result.get("unexpected_count", "")))[:200],
        })
    return ok, out


def schema_expectations(schema: pa.Schema, derived: tuple[str, ...] = ()) -> list:
    """Columns exactly the stage schema (plus ``derived`` check columns appended), non-nulls hold."""
    import great_expectations as gx

    exps = [gx.expectations.ExpectTableColumnsToMatchOrderedList(column_list=list(schema.names) + list(derived))]
    for f in schema:
        if not f.nullable:
            exps.append(gx.expectations.ExpectColumnValuesToNotBeNull(column=f.name))
    return exps


def range_expectations(ranges: dict[str, tuple[float | None, float | None]]) -> list:
    import great_expectations as gx

    return [
        gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi)
        for c, (lo, hi) in ranges.items()
    ]


def row_count_expectation(n: int) -> list:
    import great_expectations as gx

    return [gx.expectations.ExpectTableRowCountToEqual(value=int(n))]


def with_decision_column(df: pd.DataFrame) -> pd.DataFrame:
    """Adds ``decision_consistent``: a rejected row names its reason, a passed row names none."""
    df = df.copy()
    df["decision_consistent"] = df["passed"].astype(bool) == df["reject_reason"].isna()
    return df


def decision_expectations() -> list:
    """Expectations on the frame returned by :func:`with_decision_column`."""
    import great_expectations as gx

    return [gx.expectations.ExpectColumnValuesToBeInSet(column="decision_consistent", value_set=[True])]
