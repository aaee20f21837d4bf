"""Metric base class, result type and registry: one way to create and call every bench metric.

Usage (like pyiqa's ``create_metric``)::

    from evaluation.metrics import create_metric, list_metrics
    m = create_metric("glcm")
    ok, why = m.availability()
    r = m.score_path("img.png")          # MetricResult(metric="glcm", value=0.53, ...)

Rules every metric follows:

* ``kind`` is ``"per_image"`` (``score_path`` / ``score_image`` give one value per image and
  ``score_set`` aggregates them) or ``"per_set"`` (only ``score_set`` is meaningful, e.g. FID).
* ``requires`` names what it needs: ``"weights:<name>"``, ``"judge"``, ``"reference_set"``,
  ``"captions"``. ``availability()`` checks them and says why not.
* A metric that cannot be computed faithfully returns ``value=None`` with
  ``reason="not available: <why>"``; never a stand-in number under its real name. A stand-in
  (e.g. FID on another backbone) must be registered under its own name.
* The class docstring states the exact protocol and every deviation from the reference code;
  ``protocol_version`` changes whenever the numbers a metric produces could change.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Iterable, Sequence

from curation.registry import Registry

PER_IMAGE = "per_image"
PER_SET = "per_set"
KINDS = (PER_IMAGE, PER_SET)

NOT_AVAILABLE = "not available"

# name -> Metric subclass (a curation.registry.Registry); filled by @register when evaluation.metrics is imported
METRICS: Registry[type["Metric"]] = Registry("metric")


@dataclass
class BenchItem:
    """One bench row as the runner hands it to :meth:`Metric.score_item`.

    ``path`` is the generated image (None when missing); ``index`` is the row's position in
    the prompts file (bench order); ``image_id`` identifies the file's exact bytes
    (``sha256:<hex>``); ``views_dir`` is where a metric keeps what its judge saw (None: keep
    nothing)."""

    index: int
    stem: str
    path: str | None
    short_caption: str | None = None
    long_caption: str | None = None
    image_id: str | None = None
    views_dir: str | None = None


@dataclass
class MetricResult:
    """One score. ``value`` is None exactly when ``reason`` says why."""

    metric: str
    value: float | None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def not_available(reason: str) -> str:
    """The one spelling of an unavailable reason: ``"not available: <reason>"``."""
    return reason if reason.startswith(NOT_AVAILABLE) else f"{NOT_AVAILABLE}: {reason}"


class Metric:
    """Base class. Subclasses set the class attributes and implement the scoring hooks.

    Per-image metrics implement :meth:`_score_path` (and usually :meth:`_score_image`);
    per-set metrics implement :meth:`score_set`. The public wrappers check availability
    first and turn expected failures into ``value=None`` results with a reason.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = PER_IMAGE
    requires: ClassVar[tuple[str, ...]] = ()
    protocol_version: ClassVar[str] = "0"
    higher_is_better: ClassVar[bool | None] = None

    def __init__(self, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(kwargs)}")

    # ---- description -------------------------------------------------------------------
    @classmethod
    def protocol(cls) -> str:
        """The protocol text (the class docstring)."""
        return (cls.__doc__ or "").strip()

    @classmethod
    def info(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "kind": cls.kind,
            "requires": list(cls.requires),
            "protocol_version": cls.protocol_version,
            "higher_is_better": cls.higher_is_better,
            "summary": cls.protocol().splitlines()[0] if cls.protocol() else "",
        }

    def availability(self) -> tuple[bool, str | None]:
        """``(True, None)`` when the metric can be computed faithfully here, else ``(False, why)``."""
        return True, None

    # ---- results -----------------------------------------------------------------------
    def result(self, value: float | None, reason: str | None = None, **extra: Any) -> MetricResult:
        if value is not None:
            value = float(value)
            if not math.isfinite(value):
                return MetricResult(self.name, None, f"non-finite value {value!r}", dict(extra))
        elif reason is None:
            raise ValueError("a None value needs a reason")
        return MetricResult(self.name, value, reason, dict(extra))

    def unavailable(self, reason: str, **extra: Any) -> MetricResult:
        return MetricResult(self.name, None, not_available(reason), dict(extra))

    def _gate(self) -> MetricResult | None:
        ok, why = self.availability()
        return None if ok else self.unavailable(why or "requirements missing")

    # ---- per image ---------------------------------------------------------------------
    def score_path(self, path: str | os.PathLike) -> MetricResult:
        """Score one image file. Never raises for a bad file: the reason is in the result."""
        if self.kind != PER_IMAGE:
            return self.unavailable(f"{self.name} is a per-set metric; use score_set")
        gated = self._gate()
        if gated is not None:
            return gated
        return self._score_path(os.fspath(path))

    def score_image(self, rgb: Any, **context: Any) -> MetricResult:
        """Score one decoded image: ``rgb`` is an (H, W, 3) uint8 array (context: captions...)."""
        if self.kind != PER_IMAGE:
            return self.unavailable(f"{self.name} is a per-set metric; use score_set")
        gated = self._gate()
        if gated is not None:
            return gated
        return self._score_image(rgb, **context)

    def score_paths(self, paths: Iterable[str | os.PathLike]) -> list[MetricResult]:
        return [self.score_path(p) for p in paths]

    def score_set(self, paths: Sequence[str | os.PathLike], **kwargs: Any) -> MetricResult:
        """Per-image metrics: the mean over the images that have a value (count in ``extra``)."""
        if self.kind != PER_IMAGE:
            raise NotImplementedError(f"{self.name} must implement score_set")
        return self.aggregate(self.score_paths(paths))

    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        values = [r.value for r in results if r.value is not None]
        extra = {"n_images": len(results), "n_scored": len(values)}
        if not values:
            reasons = sorted({r.reason or "" for r in results})
            return self.result(None, reasons[0] if len(reasons) == 1 else "no image could be scored", **extra)
        return self.result(math.fsum(values) / len(values), **extra)

    # ---- bench runner hooks ------------------------------------------------------------
    def begin_set(self) -> None:
        """Called by the runner before the first image of a set (reset per-set state, e.g. a
        generator shared over the images in bench order)."""

    def score_item(self, item: BenchItem) -> MetricResult:
        """Score one bench row (the runner's entry point). Default: :meth:`score_path`;
        metrics that need captions or keep judge views override it."""
        if item.path is None:
            return self.result(None, "missing image")
        return self.score_path(item.path)

    # ---- hooks -------------------------------------------------------------------------
    def _score_path(self, path: str) -> MetricResult:
        return self.unavailable("not implemented")

    def _score_image(self, rgb: Any, **context: Any) -> MetricResult:
        return self.unavailable("not implemented")


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: add a metric to :data:`METRICS` under ``cls.name`` (another class under
    a taken name is a ``ValueError``)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.kind not in KINDS:
        raise ValueError(f"{cls.__name__}.kind must be one of {KINDS}")
    return METRICS.register(cls.name, cls)


def create_metric(name: str, **kwargs: Any) -> Metric:
    """Instantiate a registered metric by name (``KeyError`` listing the known names if absent)."""
    return METRICS.create(name, **kwargs)


def list_metrics(kind: str | None = None) -> list[str]:
    """Registered metric names, sorted (optionally only one kind)."""
    return [n for n, c in METRICS.items() if kind is None or c.kind == kind]


def describe_metrics() -> list[dict[str, Any]]:
    """Name, kind, requirements, protocol version and one-line summary of every metric."""
    return [METRICS[n].info() for n in list_metrics()]


# ---- requirement probes (cheap: no heavy import, no download) ---------------------------------
def module_available(name: str) -> bool:
    """Whether a Python module can be imported (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def torch_hub_checkpoint(filename: str) -> str | None:
    """Path of a file in torch hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``), if present."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "torch")
    path = os.path.join(home, "hub", "checkpoints", filename)
    return path if os.path.isfile(path) else None


def hf_model_cached(repo_id: str) -> str | None:
    """Snapshot folder of a Hugging Face model in the local cache, if one is present."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    snaps = os.path.join(hub, "models--" + repo_id.replace("/", "--"), "snapshots")
    if os.path.isdir(snaps):
        for d in sorted(os.listdir(snaps)):
            if os.listdir(os.path.join(snaps, d)):
                return os.path.join(snaps, d)
    return None


NOT_WIRED = "computation not wired in this build yet"


def missing_or_not_wired(missing: list[str]) -> str:
    """Reason text for a metric whose computation is not implemented yet."""
    return "; ".join(missing + [NOT_WIRED]) if missing else NOT_WIRED
