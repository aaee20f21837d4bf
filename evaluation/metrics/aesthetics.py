"""LAION improved aesthetic predictor on OpenAI CLIP ViT-L/14 (PixVerve ``compute_aesthetics``)."""

from __future__ import annotations

from typing import Any

from evaluation.metrics.base import (
    PER_IMAGE,
    Metric,
    MetricResult,
    hf_model_cached,
    missing_or_not_wired,
    module_available,
    register,
    torch_hub_checkpoint,
)

AESTHETIC_WEIGHTS = "sac+logos+ava1-l14-linearMSE.pth"
MLP_LAYERS = (768, 1024, 128, 64, 16, 1)


@register
class AestheticsMetric(Metric):
    """LAION aesthetics: CLIP ViT-L/14 image embedding, L2-normalised, through the improved
    aesthetic predictor's MLP; per image, mean over the set.

    Protocol (reference: PixVerve-95K ``eval/metrics.py`` @3f9e7bd, ``compute_aesthetics`` and
    ``AestheticsMLP``):

    * OpenAI ``clip.load("ViT-L/14")`` and its own preprocessing (resize the short side to 224
      with bicubic, center crop 224, RGB, CLIP mean/std normalisation) of the full image;
    * ``encode_image``, divide by its L2 norm, cast to float32;
    * MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 (Linear layers; dropout 0.2, 0.2, 0.1 inactive in
      eval), weights ``sac+logos+ava1-l14-linearMSE.pth`` (LAION improved-aesthetic-predictor);
    * image score = the MLP output; set score = mean over images (batches of 8 do not change it).

    Deviation to expect: the reference runs CLIP in fp16 on CUDA (``clip.load`` on a GPU); a
    CPU fp32 run differs in the last digits. Needs both weight files; no stand-in is reported
    under this name.
    """

    name = "aesthetics"
    kind = PER_IMAGE
    requires = ("weights:clip-vit-l-14", "weights:laion-aesthetic-mlp")
    protocol_version = "pixverve-3f9e7bd/laion-aesthetic-l14-mlp/1"
    higher_is_better = True

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def availability(self) -> tuple[bool, str | None]:
        missing = []
        have_clip = (module_available("clip") and torch_hub_checkpoint("ViT-L-14.pt") is not None) or \
            hf_model_cached("openai/clip-vit-large-patch14") is not None
        if not have_clip:
            missing.append("OpenAI CLIP ViT-L/14 weights not found")
        if torch_hub_checkpoint(AESTHETIC_WEIGHTS) is None:
            missing.append(f"aesthetic MLP weights {AESTHETIC_WEIGHTS} not found")
        return False, missing_or_not_wired(missing)

    def _score_path(self, path: str) -> MetricResult:  # pragma: no cover - gated
        return self.unavailable("not implemented")
