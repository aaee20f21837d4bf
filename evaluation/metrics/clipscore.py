"""CLIPScore with CLIP ViT-B/16 on the short caption (PixVerve ``compute_clip_score``)."""

from __future__ import annotations

from evaluation.metrics.base import (
    PER_IMAGE,
    Metric,
    hf_model_cached,
    missing_or_not_wired,
    module_available,
    register,
)

CLIP_MODEL = "openai/clip-vit-base-patch16"
BATCH = 4


@register
class ClipScoreMetric(Metric):
    """CLIPScore of each generated image with its *short* caption.

    Protocol (reference: PixVerve-95K ``eval/metrics.py`` @3f9e7bd, ``compute_clip_score``):

    * image ``convert("RGB")``, ``to_tensor * 255`` (float, full resolution; the CLIP
      processor resizes to 224 and center-crops);
    * ``torchmetrics.functional.multimodal.clip_score(images, captions,
      model_name_or_path="openai/clip-vit-base-patch16")`` = ``max(100 * cos(image, text), 0)``
      (text truncated to CLIP's 77 tokens by the processor);
    * the reference calls it on batches of 4 in bench order and reports the *mean of the
      batch means*; with a set size that is not a multiple of 4 this weights the last batch's
      images more than a plain per-image mean. ``score_set`` reproduces the batch-mean
      aggregation; per-image values are the per-image CLIPScore.

    Needs the CLIP ViT-B/16 weights and the captions.
    """

    name = "clipscore"
    kind = PER_IMAGE
    requires = ("weights:clip-vit-b-16", "captions")
    protocol_version = "pixverve-3f9e7bd/clipscore-b16-short-batch4/1"
    higher_is_better = True

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def availability(self) -> tuple[bool, str | None]:
        missing = []
        if not module_available("torchmetrics"):
            missing.append("torchmetrics not installed")
        if hf_model_cached(CLIP_MODEL) is None:
            missing.append(f"{CLIP_MODEL} weights not in the Hugging Face cache")
        return False, missing_or_not_wired(missing)
