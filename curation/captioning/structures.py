"""The data structures every tagger, grounder and segmenter returns (model or heuristic).

All coordinates are pixels of the **view** the backend was given (an RGB uint8 array, e.g. the
whole image downscaled to a 1024 long edge); the pipeline maps them to full-image pixels
(:meth:`Detection.scaled`, :meth:`MaskResult.scaled`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Tag:
    """An open-vocabulary tag and its confidence in [0, 1]."""

    label: str
    score: float
    source: str  # backend name, e.g. "heuristic", "http:ram++"


@dataclass(frozen=True)
class Detection:
    """A grounded box ``(x0, y0, x1, y1)`` (exclusive ends) for ``label``."""

    label: str
    box: tuple[float, float, float, float]
    score: float
    source: str

    def scaled(self, sx: float, sy: float) -> Detection:
        x0, y0, x1, y1 = self.box
        return replace(self, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))


@dataclass(frozen=True)
class MaskResult:
    """A low-resolution mask: probabilities in [0, 1], ``(mh, mw)`` float32, covering ``frame``
    (``x0, y0, x1, y1``); the full-resolution mask is the bilinear upsampling of ``low`` over the
    frame, thresholded (:func:`curation.captioning.rle.encode_lowres`)."""

    low: np.ndarray
    frame: tuple[float, float, float, float]
    score: float
    source: str

    def scaled(self, sx: float, sy: float) -> MaskResult:
        x0, y0, x1, y1 = self.frame
        return replace(self, frame=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))

    def __eq__(self, other: object) -> bool:  # arrays compare element-wise
        return (isinstance(other, MaskResult) and self.frame == other.frame and self.score == other.score
                and self.source == other.source and np.array_equal(self.low, other.low))

    __hash__ = None  # type: ignore[assignment]


class BackendOutputError(RuntimeError):
    """A backend answered something unusable (unreadable response, wrong shape); the message
    says what. The pipeline records the step as failed with this reason."""
