"""LAION improved aesthetic predictor on OpenAI CLIP ViT-L/14 (PixVerve ``compute_aesthetics``)."""

from __future__ import annotations

import os
from typing import Any

from evaluation.metrics.base import PER_IMAGE, MetricResult, register, torch_hub_checkpoint
from evaluation.metrics.hf_models import (
    CONFIG_FILES,
    HFModelMetric,
    file_sha256,
    image_from_rgb,
    resolve_device,
    setting,
    try_open_image,
)

AESTHETIC_WEIGHTS = "sac+logos+ava1-l14-linearMSE.pth"
MLP_LAYERS = (768, 1024, 128, 64, 16, 1)
#: the reference's ``nn.Sequential`` layout: Linear, Dropout(0.2), Linear, Dropout(0.2), Linear,
#: Dropout(0.1), Linear, Linear -> the Linear layers sit at indices 0, 2, 4, 6, 7
MLP_LINEAR_INDICES = (0, 2, 4, 6, 7)
MLP_DROPOUTS = {1: 0.2, 3: 0.2, 5: 0.1}
CLIP_L14_MODEL = "openai/clip-vit-large-patch14"
CLIP_ENV = "UHR_LAION_CLIP"  # the same CLIP ViT-L/14 as the curation's LAION scorer
MLP_ENV = "UHR_AESTHETIC_MLP"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: OpenAI ViT-L/14 as transformers' CLIPVisionConfig spells it
REFERENCE_ARCHITECTURE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                          "patch_size": 14, "image_size": 224, "projection_dim": 768}


def mlp_state_shapes() -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of ``sac+logos+ava1-l14-linearMSE.pth`` (``layers.0.weight`` ...)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for k, idx in enumerate(MLP_LINEAR_INDICES):
        n_in, n_out = MLP_LAYERS[k], MLP_LAYERS[k + 1]
        shapes[f"layers.{idx}.weight"] = (n_out, n_in)
        shapes[f"layers.{idx}.bias"] = (n_out,)
    return shapes


def build_aesthetic_mlp() -> Any:
    """The improved-aesthetic-predictor head with the reference's layer layout (eval mode, no
    activations: the reference's ``AestheticsMLP`` has none), randomly initialised."""
    import torch
    from torch import nn

    mods: list[nn.Module] = []
    k = 0
    for idx in range(MLP_LINEAR_INDICES[-1] + 1):
        if idx in MLP_DROPOUTS:
            mods.append(nn.Dropout(MLP_DROPOUTS[idx]))
        else:
            mods.append(nn.Linear(MLP_LAYERS[k], MLP_LAYERS[k + 1]))
            k += 1

    class AestheticsMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(*mods)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    return AestheticsMLP().eval()


def load_aesthetic_mlp(path: str | os.PathLike) -> Any:
    """The MLP with the weights of ``path`` (a plain state dict as LAION publishes it).

    ``ValueError`` naming the keys or shapes when the file is not this head."""
    import torch

    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    want = mlp_state_shapes()
    if set(state) != set(want):
        raise ValueError(f"{path} is not the improved aesthetic predictor head: expected keys {sorted(want)}, "
                         f"got {sorted(state)[:12]}")
    bad = [f"{k} {tuple(state[k].shape)} (expected {v})" for k, v in want.items() if tuple(state[k].shape) != v]
    if bad:
        raise ValueError(f"{path}: wrong shapes: {', '.join(bad)}")
    mlp = build_aesthetic_mlp()
    mlp.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return mlp.eval()


def openai_clip_preprocess(img: Any, n_px: int) -> Any:
    """OpenAI CLIP's ``_transform(n_px)`` on a PIL image: ``Resize(n_px, BICUBIC)`` (short side,
    long side truncated), ``CenterCrop(n_px)``, ``convert("RGB")``, ``ToTensor``, ``Normalize``
    with CLIP's mean/std -- torchvision's own transforms, in the reference's order (the resize
    and crop act on the image as opened, the RGB conversion after them)."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Normalize, Resize, ToTensor

    x = CenterCrop(n_px)(Resize(n_px, interpolation=InterpolationMode.BICUBIC)(img))
    return Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)(ToTensor()(x.convert("RGB")))


@register
class AestheticsMetric(HFModelMetric):
    """LAION aesthetics: CLIP ViT-L/14 image embedding, L2-normalised, through the improved
    aesthetic predictor's MLP; per image, mean over the set.

    Protocol (reference: PixVerve-95K ``eval/metrics.py`` @3f9e7bd, ``compute_aesthetics`` and
    ``AestheticsMLP``):

    * OpenAI CLIP ViT-L/14 and its own preprocessing of the image as opened: resize the short
      side to 224 (bicubic, torchvision ``Resize`` on the PIL image), center crop 224, then
      ``convert("RGB")``, ``ToTensor``, CLIP mean/std normalisation (:func:`openai_clip_preprocess`;
      the crop size is the model's ``image_size``, as ``clip.load`` uses the model's input
      resolution);
    * ``encode_image`` (here: ``CLIPVisionModelWithProjection(...).image_embeds``, the projected
      pooled CLS token, which is what ``encode_image`` returns), divided by its L2 norm, cast to
      float32;
    * MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 laid out as the reference's ``nn.Sequential``
      (Linear, Dropout 0.2, Linear, Dropout 0.2, Linear, Dropout 0.1, Linear, Linear; no
      activations; dropout inactive in eval), weights ``sac+logos+ava1-l14-linearMSE.pth``
      (state-dict keys ``layers.{0,2,4,6,7}.{weight,bias}``, checked with their shapes);
    * image score = the MLP output; set score = mean over the images that have a score
      (the reference's batches of 8 do not change the mean).

    Where the weights come from (nothing is downloaded):

    * CLIP: metric option ``clip_model`` (the bench settings pass ``$UHR_LAION_CLIP``), else the hub id
      ``openai/clip-vit-large-patch14``; a hub id is read from the local HF cache only
      (option ``cache_dir``), a directory is any ``save_pretrained`` copy (full ``CLIPModel`` or
      vision-only checkpoint). ``config.json`` and the weights are required;
    * MLP: option ``mlp_path`` (the bench settings pass ``$UHR_AESTHETIC_MLP``), else
      ``$TORCH_HOME/hub/checkpoints/sac+logos+ava1-l14-linearMSE.pth``.

    Deviations: the reference loads ``clip.load("ViT-L/14")`` (OpenAI's ``ViT-L-14.pt``); here
    the same weights come as transformers' ``openai/clip-vit-large-patch14`` conversion. The
    reference runs CLIP in fp16 on CUDA (``clip.load`` on a GPU keeps fp16 weights); this runs
    fp32 on any device, so values differ from it in the last digits. The set ``extra`` names the
    model (``<id>@<commit>`` or ``path:<dir>``), the MLP file hash, and whether the model's
    architecture is ViT-L/14 (``reference_architecture``); a non-reference model is the user's
    choice and is flagged there, not refused.
    """

    name = "aesthetics"
    kind = PER_IMAGE
    requires = ("weights:clip-vit-l-14", "weights:laion-aesthetic-mlp")
    protocol_version = "pixverve-3f9e7bd/laion-aesthetic-l14-mlp/1"
    higher_is_better = True
    # model location and loading: see HFModelMetric
    model_option = "clip_model"
    model_env = CLIP_ENV
    model_default = CLIP_L14_MODEL
    model_label = "OpenAI CLIP ViT-L/14"
    model_files = CONFIG_FILES
    needs_modules = ("torch", "torchvision", "transformers")
    reference_architecture = REFERENCE_ARCHITECTURE

    def __init__(self, device: str = "cpu", clip_model: str | os.PathLike | None = None,
                 mlp_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__(device, clip_model, cache_dir)
        self.mlp_path = setting(os.fspath(mlp_path) if mlp_path else None, MLP_ENV, None)
        self._mlp: Any = None
        self._mlp_hash: str | None = None
        self._n_px: int | None = None

    # ---- requirements ----------------------------------------------------------------------
    def _check_extra(self) -> str | None:
        return self._check_mlp()

    def _check_mlp(self) -> str | None:
        path = self.mlp_path or torch_hub_checkpoint(AESTHETIC_WEIGHTS)
        if not path:
            return (f"aesthetic MLP weights {AESTHETIC_WEIGHTS} not found: set ${MLP_ENV} or the metric option "
                    f"'mlp_path' to the file, or put it in the torch hub checkpoint cache")
        if not os.path.isfile(path):
            return f"aesthetic MLP weights {AESTHETIC_WEIGHTS} not found at path {path}"
        try:
            self._mlp = load_aesthetic_mlp(path)
        except Exception as exc:
            return f"aesthetic MLP weights at {path} could not be loaded: {type(exc).__name__}: {exc}"
        self.mlp_path = str(path)
        self._mlp_hash = file_sha256(path)
        return None

    def _load_model(self, src: str, kw: dict[str, Any]) -> tuple[Any, Any]:
        """CLIP's vision tower with projection (float32), refused unless it projects to 768."""
        import torch
        from transformers import CLIPVisionModelWithProjection

        dev = resolve_device(self.device)
        model = CLIPVisionModelWithProjection.from_pretrained(src, dtype=torch.float32, **kw)
        if model.config.projection_dim != MLP_LAYERS[0]:
            raise ValueError(f"CLIP projection_dim is {model.config.projection_dim}; the aesthetic MLP needs "
                             f"{MLP_LAYERS[0]} (ViT-L/14)")
        return dev, model

    def _use_model(self, loaded: tuple[Any, Any]) -> None:
        dev, model = loaded
        self._torch_device = dev
        self._model = model.eval().to(dev)
        self._mlp = self._mlp.to(dev)
        self._n_px = int(model.config.image_size)

    # ---- scoring ---------------------------------------------------------------------------
    def _score_pil(self, img: Any) -> MetricResult:
        import torch

        why = self._load()
        if why:
            return self.unavailable(why)
        x = openai_clip_preprocess(img, self._n_px).unsqueeze(0).to(self._torch_device)
        with torch.no_grad():
            feats = self._model(pixel_values=x).image_embeds
            feats = feats / feats.norm(dim=-1, keepdim=True)
            out = self._mlp(feats.float())
        return self.result(float(out.reshape(-1)[0]))

    def _score_path(self, path: str) -> MetricResult:
        img, why = try_open_image(path)
        if why:
            return self.result(None, why)
        return self._score_pil(img)

    def _score_image(self, rgb: Any, **context: Any) -> MetricResult:
        return self._score_pil(image_from_rgb(rgb))

    def _provenance_extra(self) -> dict[str, Any]:
        """The head that produced the values, after the model (see :meth:`provenance`)."""
        return {"mlp_path": self.mlp_path, "mlp_sha256": self._mlp_hash}
