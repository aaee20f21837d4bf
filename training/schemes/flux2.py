"""Schemes I (full, LoRA) and II on diffusers' ``Flux2Transformer2DModel`` (section 3.2, 4.1).

* :class:`SchemeIFull` -- full-parameter fine-tuning, lr 1e-5 at every tier (section 4.1).
* :class:`SchemeILoRA` -- PEFT LoRA, rank 32, lr 1e-4, every tier from the base model
  (section 4.1, appendix E.1): base weights frozen first, then ``add_adapter(LoraConfig)``.
* :class:`SchemeII` -- full-parameter fine-tuning with the dual-branch window attention
  processors installed (training/schemes/window_attention.py), the tier's factor schedule.

Production backbone: ``load_flux2_transformer("black-forest-labs/FLUX.2-klein-base-4B")``
(``from_pretrained``, subfolder ``transformer``; a local path or the HF cache, never a
download from here). Tests and CPU runs: :func:`tiny_flux2_transformer` (DESIGN section 8,
about 0.42 M parameters). The batch gives pixels (B, 3, H, W) in [-1, 1], prompts and sample
keys; latents come from the :class:`training.data.latents.Flux2LatentEncoder` (through a
:class:`~training.data.latents.LatentCache` when one is given), prompts from a text encoder
(training/schemes/text.py). Neither encoder is part of the module's state.
"""

from __future__ import annotations

import torch

from ..data.latents import pack, unpack
from .flow import FlowMatchingModule
from .text import text_ids

#: DESIGN section 8: a tiny random-weight Flux2 transformer that trains on CPU in milliseconds
TINY_FLUX2 = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=32,
                  num_attention_heads=2, joint_attention_dim=64, axes_dims_rope=(8, 8, 8, 8), guidance_embeds=False)

#: LoRA targets of the Flux2 attention (DESIGN section 8); lora_alpha is not in the paper (alpha = r)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                "to_qkv_mlp_proj")


def tiny_flux2_transformer(seed: int = 0, **overrides):
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    return Flux2Transformer2DModel(**{**TINY_FLUX2, **overrides})


def load_flux2_transformer(path: str, subfolder: str | None = "transformer", torch_dtype=torch.bfloat16):  # pragma: no cover
    """The production backbone from a local folder or the HF cache (FLUX.2-klein-base-4B)."""
    from diffusers import Flux2Transformer2DModel

    kw = {"subfolder": subfolder} if subfolder else {}
    return Flux2Transformer2DModel.from_pretrained(path, torch_dtype=torch_dtype, **kw)


def position_ids(grid: tuple[int, int], text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(img_ids (H*W, 4), txt_ids (T, 4))``: image ``(0, h, w, 0)`` row-major, text ``(0, 0, 0, l)``
    (the coordinates of the FLUX.2 pipelines' ``_prepare_latent_ids`` / ``_prepare_text_ids``)."""
    h, w = int(grid[0]), int(grid[1])
    img = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
    return img, text_ids(text_len)


class Flux2FlowModule(FlowMatchingModule):
    """Flow matching on Flux2 latents; subclasses pick what trains."""

    scheme = "flux2"

    def __init__(self, transformer, latent_encoder, text_encoder, lr: float, seed: int = 0, latent_cache=None,
                 window_schedule=None, **kw):
        super().__init__(lr=lr, seed=seed, **kw)
        self.transformer = transformer
        # plain attributes (not submodules): frozen encoders stay out of checkpoints and the optimiser
        self.__dict__["_encoders"] = {"latent": latent_encoder, "text": text_encoder, "cache": latent_cache}
        self.window_schedule = [tuple(f) for f in window_schedule] if window_schedule else None
        self.layer_factors = None
        if self.window_schedule:
            from .window_attention import install_window_attention

            self.layer_factors = install_window_attention(self.transformer, self.window_schedule)

    @property
    def latent_encoder(self):
        return self._encoders["latent"]

    @property
    def text_encoder(self):
        return self._encoders["text"]

    def on_fit_start(self) -> None:
        for enc in (self.latent_encoder, self.text_encoder):
            if hasattr(enc, "to"):
                enc.to(self.device)

    def prepare(self, batch):
        pixels = batch["pixels"]
        cache = self._encoders["cache"]
        z = cache.encode(self.latent_encoder, pixels, batch.get("key")) if cache is not None \
            else self.latent_encoder(pixels)
        z = z.to(self.device)
        grid = (z.shape[2], z.shape[3])
        emb, txt_ids = self.text_encoder(list(batch["prompt"]))
        return pack(z), {"grid": grid, "text": emb.to(self.device), "txt_ids": txt_ids.to(self.device)}

    def predict(self, x_t, t, cond):
        grid = cond["grid"]
        img_ids, _ = position_ids(grid, 0)
        kwargs = None
        if self.window_schedule:
            from .window_attention import window_kwargs

            kwargs = window_kwargs(cond["text"].shape[1], grid)
        return self.transformer(hidden_states=x_t, encoder_hidden_states=cond["text"], timestep=t,
                                img_ids=img_ids.to(x_t.device), txt_ids=cond["txt_ids"],
                                joint_attention_kwargs=kwargs, return_dict=False)[0]

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()

    def export_weights(self, folder) -> dict:
        """Weights as safetensors (+ config.json): the whole transformer (diffusers format)."""
        self.transformer.save_pretrained(folder, safe_serialization=True)
        return {"format": "diffusers", "folder": str(folder)}


class SchemeIFull(Flux2FlowModule):
    scheme = "I_full"


class SchemeII(Flux2FlowModule):
    scheme = "II"

    def __init__(self, transformer, latent_encoder, text_encoder, lr: float, window_schedule, **kw):
        if not window_schedule:
            raise ValueError("Scheme II needs the tier's partition-factor schedule")
        super().__init__(transformer, latent_encoder, text_encoder, lr, window_schedule=window_schedule, **kw)


class SchemeILoRA(Flux2FlowModule):
    scheme = "I_lora"

    def __init__(self, transformer, latent_encoder, text_encoder, lr: float, rank: int = 32,
                 alpha: float | None = None, targets=LORA_TARGETS, **kw):
        from peft import LoraConfig

        transformer.requires_grad_(False)  # freeze the base first; add_adapter adds trainable A/B
        transformer.add_adapter(LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else rank),
                                           target_modules=list(targets), init_lora_weights=True))
        super().__init__(transformer, latent_encoder, text_encoder, lr, **kw)
        self.rank = int(rank)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(self.transformer)

    def export_weights(self, folder) -> dict:
        """Only the adapter (safetensors, diffusers' LoRA format); the base stays the base checkpoint."""
        self.transformer.save_lora_adapter(folder, safe_serialization=True)
        return {"format": "lora", "folder": str(folder), "rank": self.rank}
