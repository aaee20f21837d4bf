"""Scheme III: patch-based diffusion in pixel space (section 3.2, after L2P [8] / DiP [7]).

Our own small model, trained with the same flow-matching objective (training/schemes/flow.py)
directly on pixels -- the paper's production backbone (L2P: Z-Image converted to pixel space
plus a U-Net local decoder, in PixVerve's public code) is not reproduced here:

1. **Global transformer over large patches.** The noisy image ``(B, 3, H, W)`` is cut into
   ``p x p`` patches (``p`` = the tier's patch: 64 / 128 / 320 px at 4K / 8K / 10K, section
   4.1, scaled by the profile), each patch a token (linear embedding of its ``3 p^2`` pixels +
   a 2-D sin-cos position code). Prompt tokens are projected to the same width and prepended;
   the timestep embedding is added to every token. Pre-norm transformer encoder layers mix
   everything (joint attention, as in the latent schemes); the image tokens then give a
   ``ctx``-channel context vector per patch: the long-range, low-frequency part.
2. **U-Net local decoder per patch.** Each patch is decoded on its own from its noisy pixels
   and its context vector (broadcast over the patch): conv in -> a stride-2 down level ->
   a middle conv -> nearest up + skip -> conv out, all ``3 x 3`` convolutions with SiLU; the
   output is the velocity of that patch. This is the local inductive bias the paper says large
   patches need for high frequencies; its cost is linear in pixels and its memory is bounded
   by the patch, whatever the image size.

The model is a diffusers ``ModelMixin`` + ``ConfigMixin``: ``save_pretrained`` writes
``config.json`` + ``diffusion_pytorch_model.safetensors`` and ``from_pretrained`` reloads it.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .flow import FlowMatchingModule

TINY_PIXEL = dict(patch_size=8, dim=64, depth=2, heads=2, text_dim=64, ctx_channels=16, unet_channels=16)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


def sincos_2d(grid: tuple[int, int], dim: int, device=None) -> torch.Tensor:
    h, w = grid
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    ey, ex = ys.reshape(-1, 1) * omega, xs.reshape(-1, 1) * omega
    pe = torch.cat([ey.sin(), ey.cos(), ex.sin(), ex.cos()], dim=1)
    return F.pad(pe, (0, dim - pe.shape[1]))


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, N, C, p, p)`` row-major patches."""
    b, c, h, w = x.shape
    return x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c, p, p)


def unpatchify(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    b, n, c, p, _ = x.shape
    gh, gw = grid
    return x.view(b, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, gh * p, gw * p)


class LocalUNet(nn.Module):
    """Per-patch U-Net: (noisy patch, context) -> velocity of the patch (one down/up level)."""

    def __init__(self, ctx_channels: int, channels: int, out_channels: int = 3):
        super().__init__()
        c = channels
        self.inp = nn.Conv2d(3 + ctx_channels, c, 3, padding=1)
        self.enc = nn.Conv2d(c, c, 3, padding=1)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.up = nn.Conv2d(2 * c, c, 3, padding=1)
        self.dec = nn.Conv2d(2 * c, c, 3, padding=1)
        self.out = nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, patch: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        p = patch.shape[-1]
        x = torch.cat([patch, ctx[:, :, None, None].expand(-1, -1, p, p)], dim=1)
        h0 = F.silu(self.enc(F.silu(self.inp(x))))
        h1 = F.silu(self.mid(F.silu(self.down(h0))))
        u = F.silu(self.up(F.interpolate(h1, size=h0.shape[-2:], mode="nearest")))
        return self.out(F.silu(self.dec(torch.cat([u, h0], dim=1))))


class TinyPatchDiffusion(ModelMixin, ConfigMixin):
    _supports_gradient_checkpointing = True  # enable_gradient_checkpointing(): recompute blocks and U-Net in backward

    @register_to_config
    def __init__(self, patch_size: int = 8, dim: int = 64, depth: int = 2, heads: int = 2, text_dim: int = 64,
                 ctx_channels: int = 16, unet_channels: int = 16):
        super().__init__()
        self.patch_in = nn.Linear(3 * patch_size * patch_size, dim)
        self.text_in = nn.Linear(text_dim, dim)
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.to_ctx = nn.Linear(dim, ctx_channels)
        self.local = LocalUNet(ctx_channels, unet_channels)
        self.gradient_checkpointing = False

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, patch_size: int | None = None):
        p = int(patch_size or self.config.patch_size)
        if p != self.config.patch_size:
            raise ValueError(f"model built for {self.config.patch_size}-px patches, got {p}")
        b, c, h, w = x_t.shape
        if h % p or w % p:
            raise ValueError(f"image {h}x{w} is not a multiple of the {p}-px patch")
        grid = (h // p, w // p)
        patches = patchify(x_t, p)                                   # (B, N, 3, p, p)
        tok = self.patch_in(patches.flatten(2)) + sincos_2d(grid, self.config.dim, x_t.device)
        temb = self.time_mlp(timestep_embedding(t, self.config.dim))[:, None]
        txt = self.text_in(text)
        seq = torch.cat([txt, tok], dim=1) + temb
        ckpt = self.gradient_checkpointing and torch.is_grad_enabled()
        hid = self._gradient_checkpointing_func(self.blocks, seq) if ckpt else self.blocks(seq)
        ctx = self.to_ctx(self.norm(hid)[:, txt.shape[1]:])          # (B, N, ctx)
        n = patches.shape[1]
        args = (patches.reshape(b * n, c, p, p), ctx.reshape(b * n, -1))
        v = self._gradient_checkpointing_func(self.local, *args) if ckpt else self.local(*args)
        return unpatchify(v.view(b, n, c, p, p), grid)


def tiny_pixel_model(patch_size: int = 8, seed: int = 0, **overrides) -> TinyPatchDiffusion:
    torch.manual_seed(seed)
    return TinyPatchDiffusion(**{**TINY_PIXEL, "patch_size": int(patch_size), **overrides})


class SchemeIII(FlowMatchingModule):
    """Flow matching in pixel space on :class:`TinyPatchDiffusion` (every parameter trains)."""

    scheme = "III"

    def __init__(self, model: TinyPatchDiffusion, text_encoder, lr: float, seed: int = 0, **kw):
        super().__init__(lr=lr, seed=seed, **kw)
        self.model = model
        self.__dict__["_encoders"] = {"text": text_encoder}

    @property
    def text_encoder(self):
        return self._encoders["text"]

    def on_fit_start(self) -> None:
        if hasattr(self.text_encoder, "to"):
            self.text_encoder.to(self.device)

    def prepare(self, batch):
        emb, _ = self.text_encoder(list(batch["prompt"]))
        return batch["pixels"].to(self.device), {"text": emb.to(self.device)}

    def predict(self, x_t, t, cond):
        return self.model(x_t, t, cond["text"])

    def enable_gradient_checkpointing(self) -> None:
        self.model.enable_gradient_checkpointing()

    def export_weights(self, folder) -> dict:
        self.model.save_pretrained(folder, safe_serialization=True)
        return {"format": "diffusers", "folder": str(folder)}


def resample_patch_weights(state: dict, target: dict) -> dict:
    """Carry a Scheme III state dict to a model of another patch size (tier change, e.g. 8K
    from 4K: 64 -> 128 px). Only ``patch_in`` depends on the patch: its weight, viewed as
    ``(dim, 3, p, p)``, is resized bilinearly to the new patch and scaled by ``(p_old/p_new)^2``
    so that a smooth image gives the same embedding. Everything else is size-agnostic."""
    key = next((k for k in state if k.endswith("patch_in.weight")), None)
    if key is None or key not in target or state[key].shape == target[key].shape:
        return state
    w = state[key]
    dim, n_old = w.shape
    n_new = target[key].shape[1]
    p_old, p_new = int(round((n_old / 3) ** 0.5)), int(round((n_new / 3) ** 0.5))
    w4 = w.view(dim, 3, p_old, p_old)
    w4 = F.interpolate(w4, size=(p_new, p_new), mode="bilinear", align_corners=False) * (p_old / p_new) ** 2
    out = dict(state)
    out[key] = w4.reshape(dim, n_new).to(w.dtype)
    return out
