"""The aesthetic-scorer interface (section 3.1.2) and its registry.

An :class:`AestheticScorer` turns RGB thumbnails into one float per image. Every scorer
reports whether it can run *before* it is asked to (:meth:`AestheticScorer.availability`),
with the reason when it cannot (missing weights, no endpoint, ...). A scorer that is not
available never returns made-up numbers: :meth:`AestheticScorer.score` raises
:class:`ScorerUnavailableError` with the same reason, and the caller records the
criterion as not applied (``../shared/DESIGN.md`` section 5).

Scorers are created by name from the config section ``purification.aesthetics.<name>``::

    scorer = create_scorer("laion", cfg.get("purification.aesthetics.laion"))
    ok, reason = scorer.availability()
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from curation.registry import Registry


class ScorerUnavailableError(RuntimeError):
    """Raised by :meth:`AestheticScorer.score` when the scorer cannot run; carries the reason."""


class AestheticScorer(abc.ABC):
    """Base class of aesthetic scorers.

    Subclasses set :attr:`name` (the registry name, also the score column's stem) and
    implement :meth:`availability`, :meth:`_score` and :attr:`version`.
    """

    #: registry name, e.g. ``"laion"``
    name: str = ""

    # -- construction from config -----------------------------------------------------------
    #: config keys the constructor accepts (used by :meth:`from_config` to reject typos)
    config_keys: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg_section: Mapping[str, Any] | None = None) -> AestheticScorer:
        """Build from a config section (a plain dict); unknown keys raise ``ValueError``."""
        cfg = dict(cfg_section or {})
        unknown = sorted(set(cfg) - set(cls.config_keys))
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown config key(s) {unknown}; accepted: {list(cls.config_keys)}"
            )
        return cls(**cfg)

    # -- interface -------------------------------------------------------------------------
    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """``(True, "")`` when :meth:`score` can run, else ``(False, reason)``.

        Must not raise and must not be expensive beyond checking files/settings: model
        weights may still fail to load later (see :meth:`load`).
        """

    def load(self) -> AestheticScorer:
        """Load heavy resources now instead of on the first :meth:`score` call.

        Raises :class:`ScorerUnavailableError` (with the reason) if the scorer cannot run;
        after a failed load :meth:`availability` reports it. Returns ``self``.
        """
        ok, reason = self.availability()
        if not ok:
            raise ScorerUnavailableError(f"{self.name} aesthetic scorer unavailable: {reason}")
        return self

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """A string identifying the model that produced the scores (model id + head hash),
        recorded in manifests next to each score."""

    @abc.abstractmethod
    def _score(self, images: list[np.ndarray]) -> np.ndarray:
        """Score validated, non-empty RGB uint8 images; return float64 of shape ``(N,)``."""

    def score(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Aesthetic scores of ``images`` (RGB uint8 ``(H, W, 3)`` arrays, typically thumbnails).

        Returns a float64 array of shape ``(N,)``; higher is more aesthetic. Raises
        :class:`ScorerUnavailableError` (with the reason) if the scorer is not available.
        """
        ok, reason = self.availability()
        if not ok:
            raise ScorerUnavailableError(f"{self.name} aesthetic scorer unavailable: {reason}")
        imgs = list(images)
        for i, im in enumerate(imgs):
            if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                desc = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
                raise ValueError(f"image {i}: expected an RGB uint8 (H, W, 3) array, got {desc}")
            if im.shape[0] == 0 or im.shape[1] == 0:
                raise ValueError(f"image {i}: empty image {im.shape}")
        if not imgs:
            return np.empty(0, dtype=np.float64)
        out = np.asarray(self._score(imgs), dtype=np.float64).reshape(-1)
        if out.shape != (len(imgs),):
            raise RuntimeError(f"{self.name}: scorer returned {out.shape[0]} scores for {len(imgs)} images")
        return out

    def __repr__(self) -> str:
        ok, reason = self.availability()
        state = "available" if ok else f"unavailable: {reason}"
        return f"<{type(self).__name__} {self.name!r} ({state})>"


#: Registry of aesthetic scorers by name (``laion``, ``artimuse``).
SCORERS: Registry = Registry("aesthetic scorer")


def create_scorer(name: str, cfg_section: Mapping[str, Any] | None = None) -> AestheticScorer:
    """Create the scorer registered as ``name`` from its config section.

    ``cfg_section`` is ``purification.aesthetics.<name>`` of the resolved config (a dict);
    ``None`` means all defaults. Unknown names raise ``KeyError`` listing the known ones.
    Construction never loads weights, so it does not fail when they are missing: ask
    :meth:`AestheticScorer.availability`.
    """
    cls = SCORERS.get(name)
    factory = getattr(cls, "from_config", None)
    if factory is not None:
        return factory(cfg_section)
    return cls(**dict(cfg_section or {}))
