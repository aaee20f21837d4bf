"""FG-CLIP2 score on the long caption (PixVerve ``compute_fgclip2_score``)."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from evaluation.metrics.base import PER_IMAGE, MetricResult, register
from evaluation.metrics.hf_models import (
    CONFIG_FILES,
    PREPROCESSOR_FILES,
    TOKENIZER_FILES,
    CaptionedImageMixin,
    HFModelMetric,
    resolve_device,
)

FGCLIP2_MODEL = "qihoo360/fg-clip2-base"
FGCLIP2_ENV = "UHR_FGCLIP2_MODEL"
TEXT_MAX_LENGTH = 196
#: FG-CLIP2's long-text position scheme (text config ``keep_len`` / ``longtext_len``; these are
#: the defaults of its configuration class when the checkpoint's config does not name them)
KEEP_LEN = 20
LONGTEXT_LEN = 196
#: parameters the long-text mode needs beyond a plain SigLIP2 checkpoint
LONG_TEXT_KEYS = ("text_model.embeddings.position_embedding_ori.weight",
                  "text_model.embeddings.position_embedding_res.weight",
                  "longtext_head.weight", "longtext_head.bias")
#: fg-clip2-base (SigLIP2 base, patch 16) as transformers' Siglip2Config spells it
REFERENCE_ARCHITECTURE = {"vision_config.hidden_size": 768, "vision_config.num_hidden_layers": 12,
                          "vision_config.patch_size": 16, "text_config.hidden_size": 768,
                          "text_config.num_hidden_layers": 12}


def max_num_patches(width: int, height: int) -> int:
    """The image patch budget the reference passes to the FG-CLIP2 processor.

    ``n = (width // 16) * (height // 16)``; 1024 if ``n > 784``, 784 if ``n > 576``, 576 if
    ``n > 256``, 256 if ``n > 128``, else 128 (``determine_max_value``). Every UHR image gets
    1024.
    """
    n = (int(width) // 16) * (int(height) // 16)
    for threshold, budget in ((784, 1024), (576, 784), (256, 576), (128, 256)):
        if n > threshold:
            return budget
    return 128


@lru_cache(maxsize=1)
def fgclip2_model_class() -> type:
    """``Siglip2Model`` plus FG-CLIP2's long-text parameters, so that ``from_pretrained`` loads an
    FG-CLIP2 checkpoint's ``text_model.embeddings.position_embedding_{ori,res}`` and
    ``longtext_head`` with the rest (its box/dense heads are not needed and are left out)."""
    from torch import nn
    from transformers import Siglip2Model

    class FgClip2LongTextModel(Siglip2Model):
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            tc = config.text_config
            n = int(getattr(tc, "longtext_len", None) or LONGTEXT_LEN)
            self.text_model.embeddings.position_embedding_ori = nn.Embedding(n, tc.hidden_size)
            self.text_model.embeddings.position_embedding_res = nn.Embedding(n, tc.hidden_size)
            self.longtext_head = nn.Linear(tc.hidden_size, tc.hidden_size)
            self.post_init()

    return FgClip2LongTextModel


def siglip2_config_from_file(config_json: str | os.PathLike) -> Any:
    """A ``Siglip2Config`` from an FG-CLIP2 (or SigLIP2) ``config.json``: the text and vision
    sub-configs as written (``keep_len`` / ``longtext_len`` kept), their ``model_type`` dropped."""
    import json

    from transformers import Siglip2Config

    raw = json.loads(open(config_json, encoding="utf-8").read())
    subs = {}
    for key in ("text_config", "vision_config"):
        d = dict(raw.get(key) or {})
        d.pop("model_type", None)
        subs[key] = d
    return Siglip2Config(**subs)


def image_features(model: Any, inputs: Any) -> Any:
    """FG-CLIP2 ``get_image_features``: the vision tower's attention-pooled output."""
    return model.vision_model(pixel_values=inputs["pixel_values"],
                              pixel_attention_mask=inputs["pixel_attention_mask"],
                              spatial_shapes=inputs["spatial_shapes"]).pooler_output


def long_text_features(model: Any, input_ids: Any, attention_mask: Any = None) -> Any:
    """FG-CLIP2 ``get_text_features(..., walk_type="long")`` on the SigLIP2 text tower.

    Token embeddings plus the long-text positions (``position_embedding_ori`` for the first
    ``keep_len`` positions, ``position_embedding_res`` after them, combined with 0/1 masks as
    FG-CLIP2 does), the bidirectional encoder with the padding mask when the tokenizer gives
    one, the final layer norm, the hidden state of the *last* position (padding included, as
    FG-CLIP2 pools), then ``longtext_head`` (not the short-text ``head``)."""
    import torch
    from transformers.masking_utils import create_bidirectional_mask

    tm = model.text_model
    emb = tm.embeddings
    keep = int(getattr(tm.config, "keep_len", None) or KEEP_LEN)
    n = emb.position_embedding_ori.num_embeddings
    seq = input_ids.shape[-1]
    if seq > n:
        raise ValueError(f"{seq} text tokens but the long-text positions cover {n}")
    position_ids = torch.arange(seq, device=input_ids.device).unsqueeze(0)
    mask1 = torch.zeros((n, 1), device=input_ids.device)
    mask1[:keep] = 1
    mask2 = 1 - mask1
    tok = emb.token_embedding(input_ids)
    hidden = (tok + (emb.position_embedding_ori(position_ids) * mask1[:seq]).type(tok.dtype)
              + (emb.position_embedding_res(position_ids) * mask2[:seq]).type(tok.dtype))
    mask = create_bidirectional_mask(config=tm.config, inputs_embeds=hidden, attention_mask=attention_mask)
    last = tm.final_layer_norm(tm.encoder(inputs_embeds=hidden, attention_mask=mask).last_hidden_state)
    return model.longtext_head(last[:, -1, :])


@register
class FgClip2Metric(CaptionedImageMixin, HFModelMetric):
    """FG-CLIP2 score of each generated image with its *long* caption.

    Protocol (reference: PixVerve-95K ``eval/metrics.py`` @3f9e7bd, ``compute_fgclip2_score``):

    * model ``qihoo360/fg-clip2-base``, its tokenizer and image processor;
    * image ``convert("RGB")`` through the SigLIP2 image processor with ``max_num_patches =``
      :func:`max_num_patches` of the image size (aspect-preserving resize to at most that many
      16-px patches, rescale, normalise, patchify, pad);
    * text ``caption.lower()``, ``padding="max_length"``, ``max_length=196``, truncation;
      ``get_text_features(..., walk_type="long")`` (the long-caption mode,
      :func:`long_text_features`);
    * image features = the vision tower's pooled output (``get_image_features``);
    * both L2-normalised; score = ``max(cos, 0) * 100``; set score = mean over images. The
      cosine and the patch budget are kept in ``extra``.

    Where the weights come from (nothing is downloaded): metric option ``model`` (the bench
    settings pass ``$UHR_FGCLIP2_MODEL``), else the hub id ``qihoo360/fg-clip2-base`` (local HF cache only,
    option ``cache_dir``); the folder must hold ``config.json``, ``preprocessor_config.json``,
    the tokenizer and the weights.

    Deviations: the reference loads the checkpoint with ``AutoModelForCausalLM(...,
    trust_remote_code=True)``, i.e. the model code shipped in the hub repository. transformers
    5.23 has no FG-CLIP2 class, and remote code is neither run nor needed here: FG-CLIP2 is a
    SigLIP2 model, so the checkpoint is loaded into transformers' ``Siglip2Model`` plus the
    parameters of FG-CLIP2's long-text mode (``position_embedding_ori`` / ``_res`` and
    ``longtext_head``; :func:`fgclip2_model_class`), and the long-text forward is written out in
    :func:`long_text_features` after FG-CLIP2's published modelling code (the FG-CLIP
    repository and its transformers port). A checkpoint without the long-text parameters is
    refused, never scored with stand-ins. The vision side is transformers' SigLIP2 vision tower,
    whose pooling head equals FG-CLIP2's for one image. Not verified numerically against the
    hub's remote code (no weights here). The image processor is transformers' PIL
    implementation (``Siglip2ImageProcessorPil``), what ``AutoImageProcessor`` gave by default
    under transformers 4; the model runs in float32 (transformers 4's default load dtype).
    """

    name = "fgclip2"
    caption_field = "long_caption"
    kind = PER_IMAGE
    requires = ("weights:fg-clip2-base", "captions")
    protocol_version = "pixverve-3f9e7bd/fgclip2-base-long196/1"
    higher_is_better = True
    # model location and loading: see HFModelMetric
    model_option = "model"
    model_env = FGCLIP2_ENV
    model_default = FGCLIP2_MODEL
    model_label = "FG-CLIP2 base"
    load_label = "FG-CLIP2"
    model_files = (*CONFIG_FILES, *PREPROCESSOR_FILES, TOKENIZER_FILES)
    needs_modules = ("torch", "transformers")
    reference_architecture = REFERENCE_ARCHITECTURE

    def __init__(self, device: str = "cpu", model: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__(device, model, cache_dir)
        self._tokenizer: Any = None
        self._image_processor: Any = None

    def _load_model(self, src: str, kw: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
        """The checkpoint in :func:`fgclip2_model_class` (float32; refused when parameters are
        missing), its tokenizer and the PIL SigLIP2 image processor."""
        import torch
        from transformers import AutoTokenizer, Siglip2ImageProcessorPil

        dev = resolve_device(self.device)
        config = siglip2_config_from_file(os.path.join(src, "config.json"))
        model, info = fgclip2_model_class().from_pretrained(src, config=config, dtype=torch.float32,
                                                            output_loading_info=True, **kw)
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            long_missing = [k for k in missing if k in LONG_TEXT_KEYS]
            what = "FG-CLIP2 long-text parameters" if long_missing else "parameters"
            raise ValueError(f"the checkpoint lacks {what} {', '.join(missing[:6])}"
                             + (f" (+{len(missing) - 6} more)" if len(missing) > 6 else ""))
        tokenizer = AutoTokenizer.from_pretrained(src, **kw)
        image_processor = Siglip2ImageProcessorPil.from_pretrained(src, **kw)
        return dev, model, tokenizer, image_processor

    def _use_model(self, loaded: tuple[Any, Any, Any, Any]) -> None:
        dev, model, tokenizer, image_processor = loaded
        self._torch_device = dev
        self._model = model.eval().to(dev)
        self._tokenizer = tokenizer
        self._image_processor = image_processor

    # ---- scoring ---------------------------------------------------------------------------
    def _score(self, img: Any, caption: str | None) -> MetricResult:
        import torch

        if not caption:
            return self.result(None, "no long caption for this image")
        why = self._load()
        if why:
            return self.unavailable(why)
        budget = max_num_patches(*img.size)
        inputs = self._image_processor(images=img.convert("RGB"), max_num_patches=budget,
                                       return_tensors="pt").to(self._torch_device)
        text = self._tokenizer([caption.lower()], padding="max_length", max_length=TEXT_MAX_LENGTH,
                               truncation=True, return_tensors="pt").to(self._torch_device)
        with torch.no_grad():
            img_feat = image_features(self._model, inputs)
            txt_feat = long_text_features(self._model, text["input_ids"], text.get("attention_mask"))
            img_feat = img_feat / img_feat.norm(p=2, dim=-1, keepdim=True)
            txt_feat = txt_feat / txt_feat.norm(p=2, dim=-1, keepdim=True)
            cos = float((img_feat @ txt_feat.T).item())
        extra: dict[str, Any] = {"cosine": cos, "max_num_patches": budget}
        if text.get("attention_mask") is not None:
            extra["text_tokens"] = int(text["attention_mask"].sum())
        return self.result(max(cos, 0.0) * 100, **extra)
