"""A bench run's result (``scores.json``) and the reasons shared by the runner and the reports.

:class:`BenchResult` is what :func:`evaluation.runner.run_bench` returns and saves; the
reports (:mod:`evaluation.reports`) read it. Both import this module, never each other's
internals. No Dagster import.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

RESULT_FILE = "scores.json"
#: the reason recorded for a registered metric the run did not select
NOT_SELECTED = "not run: not selected for this bench run"


@dataclass
class BenchResult:
    """Everything one bench run produced (``scores.json`` is :meth:`to_dict`)."""

    model: str
    source: dict[str, Any]
    out_dir: str
    prompts_file: str
    prompts_sha256: str
    reference_dir: str | None
    n_prompts: int
    rows: list[dict[str, Any]]
    metrics: dict[str, dict[str, Any]]          # name -> {value, reason, kind, higher_is_better, protocol_version, extra}
    missing: list[str]
    extra_files: list[str]
    ambiguous: dict[str, list[str]]
    reference_missing: list[str]
    judge: dict[str, Any]
    config: dict[str, Any]
    timings: dict[str, Any]
    generation: dict[str, Any] | None = None
    mlflow: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)

    # -- views ------------------------------------------------------------------------------
    def value(self, metric: str) -> float | None:
        m = self.metrics.get(metric)
        return None if m is None else m.get("value")

    def reason(self, metric: str) -> str | None:
        m = self.metrics.get(metric)
        return None if m is None else m.get("reason")

    @property
    def protocols(self) -> dict[str, str]:
        return {k: v["protocol_version"] for k, v in self.metrics.items() if v.get("protocol_version")}

    @property
    def n_images(self) -> int:
        return sum(1 for r in self.rows if r["status"] == "ok")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BenchResult":
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: d[k] for k in names if k in d})

    def save(self, path: str | os.PathLike | None = None) -> str:
        path = Path(path or Path(self.out_dir) / RESULT_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_jsonable(self.to_dict()), indent=1, allow_nan=False))
        os.replace(tmp, path)
        return str(path)


def load_result(path: str | os.PathLike) -> BenchResult:
    """A saved run (``scores.json`` or the folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULT_FILE
    return BenchResult.from_dict(json.loads(p.read_text()))


def _jsonable(x: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists, bytes dropped."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if not isinstance(v, (bytes, bytearray))}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return _jsonable(x.item())
        if isinstance(x, np.ndarray):
            return _jsonable(x.tolist())
    except ImportError:  # pragma: no cover
        pass
    return str(x)
