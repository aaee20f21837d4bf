"""FID on whole images resized to the evaluation size (PixVerve ``compute_fid``)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from evaluation.metrics.base import (
    PER_SET,
    Metric,
    MetricResult,
    missing_or_not_wired,
    module_available,
    register,
    torch_hub_checkpoint,
)

# torchmetrics' FrechetInceptionDistance uses torch-fidelity's FID Inception v3 weights
INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
EVAL_SIZES = {"4k": 4096, "8k": 8192, "10k": 10240}


def inception_missing() -> list[str]:
    missing = []
    if not module_available("torchmetrics"):
        missing.append("torchmetrics not installed")
    if not module_available("torch_fidelity"):
        missing.append("torch-fidelity (torchmetrics' Inception backbone) not installed")
    if torch_hub_checkpoint(INCEPTION_WEIGHTS) is None:
        missing.append(f"Inception weights {INCEPTION_WEIGHTS} not in the torch hub cache")
    return missing


@register
class FidMetric(Metric):
    """FID between the generated set and the real bench set, whole images at the evaluation size.

    Protocol (reference: PixVerve-95K ``eval/metrics.py`` @3f9e7bd, ``compute_fid`` and
    ``fid_preprocess``):

    * pairs (real, generated) in bench order (prompts file order; a generated image matches a
      row by file stem);
    * each image ``convert("RGB")``, ``torchvision.transforms.functional.resize`` to
      ``(S, S)`` with the default (bilinear, Pillow) interpolation, ``center_crop((S, S))``
      (a no-op), then ``(to_tensor(img) * 255).to(torch.uint8)`` -- a *truncation*, which the
      reference applies and which is reproduced;
    * ``torchmetrics.image.fid.FrechetInceptionDistance(normalize=False)`` (2048-d pool
      features of the FID Inception v3, ``pt_inception-2015-12-05``), ``update`` real then
      generated for each pair, ``compute()``;
    * S = 4096, 8192, 10240 for the 4K, 8K, 10K tiers (``EVAL_SIZES``).

    Needs the Inception weights and the real reference set. Without the weights this metric
    reports "not available"; a stand-in backbone would be a different metric with its own
    name, never ``fid``.
    """

    name = "fid"
    kind = PER_SET
    requires = ("weights:inception", "reference_set")
    protocol_version = "pixverve-3f9e7bd/fid-bilinear-SxS-uint8trunc/1"
    higher_is_better = False

    def __init__(self, size: int = 4096, device: str = "cpu") -> None:
        self.size = int(size)
        self.device = device

    def availability(self) -> tuple[bool, str | None]:
        return False, missing_or_not_wired(inception_missing())

    def score_set(self, paths: Sequence[str | os.PathLike], reference_paths: Sequence[str | os.PathLike] | None = None,
                  **kwargs: Any) -> MetricResult:
        gated = self._gate()
        if gated is not None:
            return gated
        return self.unavailable("not implemented")  # pragma: no cover
