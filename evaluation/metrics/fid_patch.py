"""FID on 299-px crops at shared random positions (PixVerve ``compute_fid_patch``)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from evaluation.metrics.base import register
from evaluation.metrics.fid import TorchmetricsFidMetric, fid_update, torchmetrics_fid
from evaluation.metrics.fid_common import patch_views

N_CROPS = 20
CROP = 299
SEED = 42


def crop_positions(n_images: int, size: int, n_crops: int = N_CROPS, crop: int = CROP,
                   seed: int = SEED) -> np.ndarray:
    """Crop origins ``(top, left)`` for ``n_images`` pairs in bench order: shape (n_images, n_crops, 2).

    Reproduces the reference exactly: one Python ``random.Random(seed)`` stream (the reference
    calls ``random.seed(42)`` in ``MetricEvaluator.__init__`` and nothing else draws from the
    module generator before ``compute_fid_patch``), and for every pair, for every crop,
    ``top = randint(0, size - crop)`` then ``left = randint(0, size - crop)``. The same
    positions are used for the real and the generated image of a pair. Pure and
    deterministic: the result depends only on the arguments.
    """
    if size < crop:
        raise ValueError(f"evaluation size {size} is smaller than the crop {crop}")
    rng = random.Random(seed)
    out = np.empty((n_images, n_crops, 2), dtype=np.int64)
    hi = size - crop
    for i in range(n_images):
        for k in range(n_crops):
            out[i, k, 0] = rng.randint(0, hi)
            out[i, k, 1] = rng.randint(0, hi)
    return out


@register
class FidPatchMetric(TorchmetricsFidMetric):
    """FID_patch: FID over 20 crops of 299 px per image pair, at the same positions in both.

    Protocol (reference: PixVerve-95K ``eval/metrics.py`` @3f9e7bd, ``compute_fid_patch``):

    * pairs (real, generated) in bench order;
    * the real image ``convert("RGB")`` and resized to ``(S, S)`` with Lanczos
      (``torchvision`` ``resize(..., InterpolationMode.LANCZOS)`` on a PIL image = Pillow
      LANCZOS); the generated image likewise, unless it is already ``S x S`` (then used as is);
    * 20 crops of 299 x 299 per pair at ``(top, left)`` from :func:`crop_positions` -- one
      ``random.Random(42)`` stream over the whole set, ``randint(0, S - 299)`` for top then
      left, crop by crop, pair by pair; the same positions in both images;
    * each crop ``(to_tensor(crop) * 255).to(torch.uint8)`` (truncation, reproduced), then
      ``torchmetrics`` ``FrechetInceptionDistance(normalize=False)``: all real crops vs all
      generated crops;
    * S = 4096, 8192, 10240 for the 4K, 8K, 10K tiers.

    The positions depend on the number of pairs before a given pair, so the bench order must
    be fixed (the runner uses the prompts file order); a subset of the bench gets different
    crops than the full bench. Needs the Inception weights and the real set.
    """

    name = "fid_patch"
    protocol_version = "pixverve-3f9e7bd/fid-patch-20x299-random42/1"

    def crop_positions(self, n_images: int) -> np.ndarray:
        return crop_positions(n_images, self.size)

    def _set_extra(self) -> dict[str, Any]:
        return {"n_crops": N_CROPS}

    def _fid(self, pairs: list[tuple[str, str]]) -> tuple[float, dict[str, Any]]:
        pos = self.crop_positions(len(pairs))
        fid = torchmetrics_fid(self.feature_module, self.device)
        for i, (r, g) in enumerate(pairs):
            fid_update(fid, patch_views(r, self.size, pos[i], CROP, keep_if_sized=False), real=True,
                       device=self.device)
            fid_update(fid, patch_views(g, self.size, pos[i], CROP, keep_if_sized=True), real=False,
                       device=self.device)
        return float(fid.compute()), {}
