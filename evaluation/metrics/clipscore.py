"""CLIPScore with CLIP ViT-B/16 on the short caption (PixVerve ``compute_clip_score``)."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from evaluation.metrics.base import PER_IMAGE, MetricResult, register
from evaluation.metrics.hf_models import (
    CONFIG_FILES,
    PREPROCESSOR_FILES,
    TOKENIZER_FILES,
    CaptionedImageMixin,
    HFModelMetric,
    resolve_device,
)

CLIP_MODEL = "openai/clip-vit-base-patch16"
CLIP_ENV = "UHR_CLIPSCORE_CLIP"
BATCH = 4
#: openai/clip-vit-base-patch16 as transformers' CLIPConfig spells it
REFERENCE_ARCHITECTURE = {"vision_config.hidden_size": 768, "vision_config.num_hidden_layers": 12,
                          "vision_config.patch_size": 16, "vision_config.image_size": 224,
                          "text_config.hidden_size": 512, "text_config.num_hidden_layers": 12,
                          "text_config.max_position_embeddings": 77, "projection_dim": 512}


def _features_tensor(out: Any) -> Any:
    """transformers >= 5 returns a ``BaseModelOutputWithPooling`` from ``get_*_features`` (the
    projected features in ``pooler_output``); torchmetrics 1.x expects the tensor itself."""
    return out if hasattr(out, "norm") else out.pooler_output


def torchmetrics_clip_adapter(model: Any) -> Any:
    """The CLIP model as torchmetrics' ``clip_score`` calls it: ``.to``, ``.config``,
    ``get_image_features(pixel_values)`` and ``get_text_features(input_ids, attention_mask)``
    returning feature tensors (the only change: unwrapping transformers 5's output objects)."""
    from torch import nn

    class TensorFeatures(nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner
            self.config = inner.config

        def get_image_features(self, *args: Any, **kwargs: Any) -> Any:
            return _features_tensor(self.inner.get_image_features(*args, **kwargs))

        def get_text_features(self, *args: Any, **kwargs: Any) -> Any:
            return _features_tensor(self.inner.get_text_features(*args, **kwargs))

    return TensorFeatures(model).eval()


def reference_image_tensor(img: Any) -> Any:
    """The reference's CLIPScore input: ``TF.to_tensor(img.convert("RGB")) * 255`` (float32, C x H
    x W, full resolution; the CLIP processor resizes and crops)."""
    from torchvision.transforms import functional as TF

    return TF.to_tensor(img.convert("RGB")) * 255


def batch_mean_aggregate(raw_scores: Sequence[float], batch: int = BATCH) -> tuple[float, list[float]]:
    """The reference's set value from per-image ``100 * cos`` in bench order: torchmetrics'
    ``clip_score`` per batch of ``batch`` (``max(mean(100 * cos), 0)``), then the mean of the
    batch values. Returns ``(value, batch_values)``."""
    if not raw_scores:
        raise ValueError("no scores")
    batches = [list(raw_scores[i:i + batch]) for i in range(0, len(raw_scores), batch)]
    values = [max(math.fsum(b) / len(b), 0.0) for b in batches]
    return math.fsum(values) / len(values), values


@register
class ClipScoreMetric(CaptionedImageMixin, HFModelMetric):
    """CLIPScore of each generated image with its *short* caption.

    Protocol (reference: PixVerve-95K ``eval/metrics.py`` @3f9e7bd, ``compute_clip_score``):

    * image ``convert("RGB")``, ``to_tensor * 255`` (float, full resolution; the CLIP
      processor resizes the short side to 224 (bicubic) and center-crops 224);
    * torchmetrics' CLIP score (``torchmetrics.functional.multimodal.clip_score`` internals,
      ``_clip_score_update``) with CLIP ViT-B/16 (``openai/clip-vit-base-patch16``): the HF
      ``CLIPProcessor`` (text ``padding=True``; captions longer than CLIP's 77 positions are cut
      to 77 tokens by torchmetrics, as it does), ``get_image_features`` / ``get_text_features``,
      both L2-normalised, ``100 * cos``; torchmetrics' ``clip_score`` is
      ``max(mean over the batch of 100 * cos, 0)``;
    * per image: the value for a batch of one, ``max(100 * cos, 0)``; the unclamped
      ``100 * cos`` is kept in ``extra["score_100cos"]``, and ``extra["caption_truncated"]``
      says whether the caption was cut to 77 tokens;
    * set value (:meth:`aggregate`, what the runner reports): the reference calls ``clip_score``
      on batches of 4 in bench order and reports the *mean of the batch values*; with a set size
      that is not a multiple of 4 this weights the last batch's images more than a plain
      per-image mean (which is kept in ``extra["per_image_mean"]``). Reproduced from the
      per-image ``100 * cos`` (batch composition does not change a sample's score: images are
      processed one by one, and CLIP's text tower is causal and pools at the EOS position,
      which the batch's padding does not move).

    Where the weights come from (nothing is downloaded): metric option ``clip_model`` (the
    bench settings pass ``$UHR_CLIPSCORE_CLIP``), else the hub id ``openai/clip-vit-base-patch16`` (local HF cache
    only, option ``cache_dir``); a directory must hold ``config.json``,
    ``preprocessor_config.json``, the tokenizer and the weights.

    Deviations: torchmetrics 1.x cannot call transformers 5's CLIP directly (``get_*_features``
    now return output objects), so the model is handed to torchmetrics through a wrapper
    (:func:`torchmetrics_clip_adapter`) that only unwraps them. The image processor is
    transformers' PIL implementation (``CLIPImageProcessorPil``), the one ``CLIPProcessor``
    loaded by default under transformers 4 (transformers 5's default is a torchvision
    re-implementation that resamples slightly differently). The model runs in float32, as
    torchmetrics loads it. Rows whose image is missing are skipped before batching (the
    reference drops such rows too, and also those whose *real* image is missing). Needs the
    captions; the set ``extra`` names the model used and whether it has ViT-B/16's architecture.
    """

    name = "clipscore"
    caption_field = "short_caption"
    kind = PER_IMAGE
    requires = ("weights:clip-vit-b-16", "captions")
    protocol_version = "pixverve-3f9e7bd/clipscore-b16-short-batch4/1"
    higher_is_better = True
    # model location and loading: see HFModelMetric
    model_option = "clip_model"
    model_env = CLIP_ENV
    model_default = CLIP_MODEL
    model_label = "CLIP ViT-B/16"
    model_files = (*CONFIG_FILES, *PREPROCESSOR_FILES, TOKENIZER_FILES)
    needs_modules = ("torch", "torchvision", "transformers", "torchmetrics")
    reference_architecture = REFERENCE_ARCHITECTURE

    def __init__(self, device: str = "cpu", clip_model: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__(device, clip_model, cache_dir)
        self._adapter: Any = None
        self._processor: Any = None

    def _load_model(self, src: str, kw: dict[str, Any]) -> tuple[Any, Any, Any]:
        """``CLIPModel`` (float32, eval, on the device) and a ``CLIPProcessor`` with the PIL image
        processor."""
        import torch
        from torchmetrics.functional.multimodal.clip_score import _clip_score_update  # noqa: F401
        from transformers import CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

        dev = resolve_device(self.device)
        model = CLIPModel.from_pretrained(src, dtype=torch.float32, **kw).eval().to(dev)
        processor = CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(src, **kw),
                                  tokenizer=CLIPTokenizer.from_pretrained(src, **kw))
        return dev, model, processor

    def _use_model(self, loaded: tuple[Any, Any, Any]) -> None:
        dev, model, processor = loaded
        self._torch_device = dev
        self._model = model
        self._adapter = torchmetrics_clip_adapter(model)
        self._processor = processor

    # ---- scoring ---------------------------------------------------------------------------
    def score_100cos(self, image_chw: Any, caption: str) -> tuple[float, bool]:
        """torchmetrics' per-sample ``100 * cos`` of one (3, H, W) float image (0..255) and its
        caption, and whether torchmetrics cut the caption to the text tower's positions (its
        warning is turned into this flag; other warnings pass through)."""
        import warnings

        import torch
        from torchmetrics.functional.multimodal.clip_score import _clip_score_update

        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            score, _ = _clip_score_update(image_chw.to(self._torch_device), [caption], self._adapter, self._processor)
        truncated = False
        for w in caught:
            if "Encountered caption longer than" in str(w.message):
                truncated = True
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return float(score.reshape(-1)[0]), truncated

    def _score(self, img: Any, caption: str | None) -> MetricResult:
        if not caption:
            return self.result(None, "no short caption for this image")
        why = self._load()
        if why:
            return self.unavailable(why)
        raw, truncated = self.score_100cos(reference_image_tensor(img), caption)
        return self.result(max(raw, 0.0), score_100cos=raw, caption_truncated=truncated)

    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        """Mean of the batch-of-4 CLIP scores over the scored images in bench order (see the
        protocol); the plain per-image mean is in ``extra["per_image_mean"]``."""
        scored = [r for r in results if r.value is not None]
        if not scored:
            return super().aggregate(results)  # the plain mean's reason, with the provenance
        raws = [float(r.extra.get("score_100cos", r.value)) for r in scored]
        value, batch_values = batch_mean_aggregate(raws, BATCH)
        extra = {"n_images": len(results), "n_scored": len(scored), "batch_size": BATCH,
                 "n_batches": len(batch_values), "batch_values": batch_values,
                 "per_image_mean": math.fsum(r.value for r in scored) / len(scored), **self.provenance()}
        return self.result(value, **extra)
