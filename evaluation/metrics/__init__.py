"""Bench metrics: a registry with one way to create and call them (see :mod:`.base`).

    from evaluation.metrics import create_metric, list_metrics
    create_metric("glcm").score_path("img.png")

Importing this package registers every metric module (each is cheap to import: heavy
libraries such as torch load only when a metric actually computes).
"""

from evaluation.metrics.base import (
    METRICS,
    PER_IMAGE,
    PER_SET,
    BenchItem,
    Metric,
    MetricResult,
    create_metric,
    describe_metrics,
    list_metrics,
    not_available,
    register,
)
from evaluation.metrics import (  # noqa: F401,E402  (registration side effects)
    aesthetics,
    clipscore,
    compression_ratio,
    fgclip2,
    fid,
    fid_fidhelper,
    fid_patch,
    glcm,
    ics,
    msfi,
)

__all__ = [
    "METRICS",
    "PER_IMAGE",
    "PER_SET",
    "BenchItem",
    "Metric",
    "MetricResult",
    "create_metric",
    "describe_metrics",
    "list_metrics",
    "not_available",
    "register",
]
