"""Scheme II attention processors for diffusers' ``Flux2Transformer2DModel``.

The processors subclass diffusers' own (``Flux2AttnProcessor`` for the double-stream blocks,
``Flux2ParallelSelfAttnProcessor`` for the single-stream blocks): the model only invokes
processors of those types (a plain callable set as a processor is stored but never called,
DESIGN section 8). They keep the parents' projections, QK norms, RoPE and output projections
and replace only the attention itself with :func:`training.schemes.windows.dual_branch_attention`.

The text length and the image token grid are passed explicitly on every forward, through
``joint_attention_kwargs={"text_len": T, "grid": (H, W)}`` (see :func:`window_kwargs`); the
model forwards those keys to every processor. Double-stream blocks also know ``T`` from the
text stream and check it; single-stream blocks see ``[text, image]`` concatenated and need it.

Factors per layer: :func:`install_window_attention` numbers the double-stream blocks first,
then the single-stream blocks, and gives block ``l`` the factors ``schedule[l % 5]``.
``(1, 1)`` runs the parent's plain full attention (``windowed_identity=True`` forces the
windowed code path instead, for tests: it must give the same numbers).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux2 import (
    Flux2AttnProcessor,
    Flux2ParallelSelfAttnProcessor,
    _get_qkv_projections,
)

from .windows import Factors, dual_branch_attention, layer_factors


def window_kwargs(text_len: int, grid: tuple[int, int]) -> dict:
    """The ``joint_attention_kwargs`` a window-attention forward needs."""
    return {"text_len": int(text_len), "grid": (int(grid[0]), int(grid[1]))}


def _resolve(grid, n_image: int) -> tuple[int, int]:
    if grid is None:
        raise ValueError("window attention needs the token grid: pass joint_attention_kwargs=window_kwargs(T, (H, W))")
    h, w = int(grid[0]), int(grid[1])
    if h * w != n_image:
        raise ValueError(f"token grid {h}x{w} does not match {n_image} image tokens")
    return h, w


class _WindowMixin:
    factors: Factors
    windowed_identity: bool

    def _init_window(self, factors: Factors, windowed_identity: bool) -> None:
        self.factors = (int(factors[0]), int(factors[1]))
        self.windowed_identity = bool(windowed_identity)

    @property
    def is_full(self) -> bool:
        return self.factors == (1, 1) and not self.windowed_identity

    def __repr__(self) -> str:
        return f"{type(self).__name__}(factors={self.factors})"


class WindowFlux2AttnProcessor(_WindowMixin, Flux2AttnProcessor):
    """Double-stream blocks: text stream ``encoder_hidden_states`` + image stream ``hidden_states``."""

    def __init__(self, factors: Factors = (1, 1), windowed_identity: bool = False):
        super().__init__()
        self._init_window(factors, windowed_identity)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: torch.Tensor | None = None,
                 text_len: int | None = None, grid: tuple[int, int] | None = None) -> torch.Tensor:
        if self.is_full:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if attention_mask is not None:
            raise NotImplementedError("window attention takes no attention_mask (Flux2 training passes none)")
        if encoder_hidden_states is None or attn.added_kv_proj_dim is None:
            raise ValueError("the double-stream window processor needs the text stream")
        t = encoder_hidden_states.shape[1]
        if text_len is not None and int(text_len) != t:
            raise ValueError(f"text_len {text_len} != text stream length {t}")
        hw = _resolve(grid, hidden_states.shape[1])

        query, key, value, e_query, e_key, e_value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        e_query = attn.norm_added_q(e_query.unflatten(-1, (-1, attn.head_dim)))
        e_key = attn.norm_added_k(e_key.unflatten(-1, (-1, attn.head_dim)))
        e_value = e_value.unflatten(-1, (-1, attn.head_dim))
        query = torch.cat([e_query, query], dim=1)
        key = torch.cat([e_key, key], dim=1)
        value = torch.cat([e_value, value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        out = dual_branch_attention(query, key, value, t, hw, self.factors).flatten(2, 3).to(query.dtype)
        txt_out, img_out = out.split_with_sizes([t, out.shape[1] - t], dim=1)
        txt_out = attn.to_add_out(txt_out)
        img_out = attn.to_out[1](attn.to_out[0](img_out))
        return img_out, txt_out


class WindowFlux2ParallelSelfAttnProcessor(_WindowMixin, Flux2ParallelSelfAttnProcessor):
    """Single-stream blocks: ``hidden_states`` is ``[text (text_len), image (H*W)]``."""

    def __init__(self, factors: Factors = (1, 1), windowed_identity: bool = False):
        super().__init__()
        self._init_window(factors, windowed_identity)

    def __call__(self, attn, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: torch.Tensor | None = None, text_len: int | None = None,
                 grid: tuple[int, int] | None = None) -> torch.Tensor:
        if self.is_full:
            return super().__call__(attn, hidden_states, attention_mask, image_rotary_emb)
        if attention_mask is not None:
            raise NotImplementedError("window attention takes no attention_mask (Flux2 training passes none)")
        if text_len is None:
            raise ValueError("the single-stream window processor needs text_len (joint_attention_kwargs)")
        t = int(text_len)
        hw = _resolve(grid, hidden_states.shape[1] - t)

        hidden_states = attn.to_qkv_mlp_proj(hidden_states)
        qkv_dim = 3 * attn.inner_dim
        mlp_dim = attn.mlp_hidden_dim * attn.mlp_mult_factor
        local_qkv = hidden_states.shape[-1] * qkv_dim // (qkv_dim + mlp_dim)
        qkv, mlp_hidden = torch.split(hidden_states, [local_qkv, hidden_states.shape[-1] - local_qkv], dim=-1)
        query, key, value = qkv.chunk(3, dim=-1)
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        out = dual_branch_attention(query, key, value, t, hw, self.factors).flatten(2, 3).to(query.dtype)
        return attn.to_out(torch.cat([out, attn.mlp_act_fn(mlp_hidden)], dim=-1))


def install_window_attention(model, schedule, windowed_identity: bool = False) -> list[Factors]:
    """Replace every attention processor of a ``Flux2Transformer2DModel`` with the window
    processors, factors cycled over the double-stream then the single-stream blocks.
    Returns the factors per layer (in that order)."""
    double, single = model.transformer_blocks, model.single_transformer_blocks
    factors = layer_factors(schedule, len(double), len(single))
    for i, block in enumerate(double):
        block.attn.set_processor(WindowFlux2AttnProcessor(factors[i], windowed_identity))
    for j, block in enumerate(single):
        block.attn.set_processor(WindowFlux2ParallelSelfAttnProcessor(factors[len(double) + j], windowed_identity))
    return factors


def installed_factors(model) -> list[Factors]:
    """Factors per layer as installed (double-stream first); plain processors count as (1, 1)."""
    out = []
    for block in list(model.transformer_blocks) + list(model.single_transformer_blocks):
        out.append(tuple(getattr(block.attn.processor, "factors", (1, 1))))
    return out
