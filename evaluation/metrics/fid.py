"""FID on whole images resized to the evaluation size (PixVerve ``compute_fid``)."""

from __future__ import annotations

from typing import Any

from evaluation.metrics.base import module_available, register, torch_hub_checkpoint
from evaluation.metrics.fid_common import PairedFidMetric, whole_view

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


class TorchmetricsFidMetric(PairedFidMetric):
    """``fid`` and ``fid_patch``: torchmetrics' ``FrechetInceptionDistance`` on torch-fidelity's
    Inception weights (``feature_module``: a test hook, another backbone, so another name)."""

    requires = ("weights:inception", "reference_set")

    def __init__(self, size: int = 4096, device: str = "cpu", feature_module: Any = None) -> None:
        self.size = int(size)
        self.device = device
        # test hook: a custom torchmetrics feature extractor is another backbone, so another name
        self.feature_module = feature_module
        if feature_module is not None:
            self.name = f"{type(self).name}_custom_features"

    def availability(self) -> tuple[bool, str | None]:
        if self.feature_module is not None:
            return True, None
        missing = inception_missing()
        return (False, "; ".join(missing)) if missing else (True, None)


@register
class FidMetric(TorchmetricsFidMetric):
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

    Needs the Inception weights (torch-fidelity's, in the torch hub cache) and the real
    reference set. Without the weights this metric reports "not available"; the offline
    stand-in on another copy of the network is ``fid_fidhelper_inception``, never ``fid``.
    Pairs with a missing image on either side are dropped (``extra["n_pairs"]``).
    """

    name = "fid"
    protocol_version = "pixverve-3f9e7bd/fid-bilinear-SxS-uint8trunc/1"

    def _fid(self, pairs: list[tuple[str, str]]) -> tuple[float, dict[str, Any]]:
        fid = torchmetrics_fid(self.feature_module, self.device)
        for r, g in pairs:  # the reference updates real then generated, pair by pair
            fid_update(fid, whole_view(r, self.size), real=True, device=self.device)
            fid_update(fid, whole_view(g, self.size), real=False, device=self.device)
        return float(fid.compute()), {}


def torchmetrics_fid(feature_module: Any = None, device: str = "cpu") -> Any:
    """``FrechetInceptionDistance(normalize=False)`` with the 2048-d FID Inception (or a custom
    feature module, for tests), as the reference constructs it."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    feature = feature_module if feature_module is not None else 2048
    return FrechetInceptionDistance(feature=feature, normalize=False).to(device)


def fid_update(fid: Any, chw_or_nchw: Any, real: bool, device: str = "cpu") -> None:
    """One ``update`` with uint8 image(s) (3, H, W) or (N, 3, H, W)."""
    import numpy as np
    import torch

    a = np.asarray(chw_or_nchw)
    if a.ndim == 3:
        a = a[None]
    fid.update(torch.from_numpy(np.ascontiguousarray(a)).to(device), real=real)
