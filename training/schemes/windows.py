"""Dual-branch window attention of Scheme II, in plain torch (no diffusers import).

Section 3.2 (Scheme II): text queries attend to every text and image token; an image query
attends to every text token plus two image neighbourhoods, and the two results are averaged:

* **close** branch: the ``H x W`` token grid is cut into ``a x b`` contiguous windows
  (``a`` parts along the height, ``b`` along the width; window ``(H/a) x (W/b)`` tokens);
* **remote** branch: tokens with the same offset modulo the partition stride ``(a, b)``
  form one group (``(i mod a, j mod b)``): ``a*b`` dilated groups of ``(H/a)(W/b)`` tokens
  spread over the whole canvas.

Each branch is its own softmax over ``[all text keys, the query's group]``. Image-image cost:
``a*b`` groups of ``N/(ab)`` tokens, ``(N/(ab))^2 * ab = N^2/(ab)`` per branch, ``2 N^2/(ab)``
for both (the paper's O(2N^2/(ab))); text-image terms stay linear in ``N``.

``(1, 1)`` is one window and one group holding every image token: both branches equal full
attention, so their mean does too. A grid that a factor does not divide is cut into
near-equal parts (``floor(i * a / H)``); groups are then padded and masked.

Tensors use diffusers' attention layout ``(batch, sequence, heads, head_dim)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Factors = tuple[int, int]

#: Partition factors per layer, cycled by block index mod 5 (issue 18; section 4.1 names the
#: window aspect ratios 1:1, 1:2, 2:1, 1:8, 8:1). configs/paper.yaml training.schemes.II holds them.
SCHEDULE_4K: tuple[Factors, ...] = ((1, 1), (8, 16), (16, 8), (4, 32), (32, 4))
SCHEDULE_8K_10K: tuple[Factors, ...] = ((1, 1), (16, 32), (32, 16), (8, 64), (64, 8))


def layer_factors(schedule: list[Factors] | tuple[Factors, ...], num_double: int, num_single: int) -> list[Factors]:
    """Factors of every attention layer: the double-stream blocks first, then the single-stream
    blocks, one running block index ``l``, factors ``schedule[l % len(schedule)]``."""
    sched = [tuple(int(v) for v in f) for f in schedule]
    return [sched[i % len(sched)] for i in range(num_double + num_single)]  # type: ignore[misc]


def _part_index(n: int, parts: int) -> torch.Tensor:
    """Contiguous part of each of ``n`` positions cut into ``parts`` near-equal runs."""
    return torch.div(torch.arange(n) * parts, n, rounding_mode="floor")


def group_ids(grid: tuple[int, int], factors: Factors, branch: str) -> torch.Tensor:
    """Group of every image token (row-major over the ``H x W`` grid) for one branch.

    ``close``: window ``(floor(i a / H), floor(j b / W))``; ``remote``: ``(i mod a, j mod b)``."""
    h, w = int(grid[0]), int(grid[1])
    a, b = int(factors[0]), int(factors[1])
    if a < 1 or b < 1:
        raise ValueError(f"partition factors must be >= 1, got {factors}")
    if a > h or b > w:
        raise ValueError(f"partition factors {factors} need a token grid of at least {a}x{b}, got {h}x{w}: "
                         "scale the tier up (training.linear_scale) rather than change the factors")
    if branch == "close":
        gi, gj = _part_index(h, a), _part_index(w, b)
    elif branch == "remote":
        gi, gj = torch.arange(h) % a, torch.arange(w) % b
    else:
        raise ValueError(f"unknown branch {branch!r} (close | remote)")
    return (gi[:, None] * b + gj[None, :]).reshape(-1)


@dataclass(frozen=True)
class Grouping:
    """Tokens sorted by group and padded to the largest group: ``index`` (G, L) token indices
    (padding repeats a member), ``valid`` (G, L) bool or None when every group is full."""

    index: torch.Tensor
    valid: torch.Tensor | None
    inverse: torch.Tensor  # (N,) position of each token in index.reshape(-1)


def make_grouping(ids: torch.Tensor) -> Grouping:
    n = ids.numel()
    order = torch.argsort(ids, stable=True)
    counts = torch.bincount(ids)
    counts = counts[counts > 0]
    g, longest = counts.numel(), int(counts.max())
    if int(counts.min()) == longest:
        index = order.reshape(g, longest)
        inverse = torch.empty(n, dtype=torch.long)
        inverse[order] = torch.arange(n)
        return Grouping(index, None, inverse)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(longest)[None, :]
    valid = slot < counts[:, None]
    src = (starts[:, None] + torch.minimum(slot, counts[:, None] - 1)).reshape(-1)
    index = order[src].reshape(g, longest)
    flat_pos = torch.arange(g * longest).reshape(g, longest)
    inverse = torch.empty(n, dtype=torch.long)
    inverse[index[valid]] = flat_pos[valid]
    return Grouping(index, valid, inverse)


def _branch(q_img: torch.Tensor, k_txt: torch.Tensor, v_txt: torch.Tensor, k_img: torch.Tensor,
            v_img: torch.Tensor, grouping: Grouping) -> torch.Tensor:
    """Image queries over [text keys, own group]; inputs (B, h, S, D), output (B, h, N, D)."""
    bsz, heads, n, d = q_img.shape
    g, length = grouping.index.shape
    idx = grouping.index.to(q_img.device).reshape(-1)

    def gather(x):  # (B, h, N, D) -> (B, h, G, L, D)
        return x.index_select(2, idx).reshape(bsz, heads, g, length, d)

    qg, kg, vg = gather(q_img), gather(k_img), gather(v_img)
    t = k_txt.shape[2]
    k = torch.cat([k_txt[:, :, None].expand(bsz, heads, g, t, d), kg], dim=3)
    v = torch.cat([v_txt[:, :, None].expand(bsz, heads, g, t, d), vg], dim=3)
    mask = None
    if grouping.valid is not None:
        keep = torch.cat([torch.ones(g, t, dtype=torch.bool), grouping.valid], dim=1).to(q_img.device)
        mask = keep[None, :, None, :].expand(heads, g, length, t + length).reshape(heads * g, length, t + length)
    # 4-D for every SDPA kernel: (B, h*G, L, D) queries over (B, h*G, T+L, D) keys
    out = F.scaled_dot_product_attention(qg.reshape(bsz, heads * g, length, d), k.reshape(bsz, heads * g, t + length, d),
                                         v.reshape(bsz, heads * g, t + length, d), attn_mask=mask)
    out = out.reshape(bsz, heads, g * length, d)
    return out.index_select(2, grouping.inverse.to(q_img.device))


def dual_branch_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, text_len: int,
                          grid: tuple[int, int], factors: Factors) -> torch.Tensor:
    """Scheme II attention over a ``[text (text_len), image (H*W, row-major)]`` sequence.

    ``query/key/value``: ``(B, S, heads, D)`` with ``S = text_len + H*W``; returns the same
    shape. Text queries: full attention. Image queries: mean of the close and remote branches."""
    h, w = int(grid[0]), int(grid[1])
    s = query.shape[1]
    if s != text_len + h * w:
        raise ValueError(f"sequence of {s} tokens is not text_len {text_len} + grid {h}x{w}")
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (B, h, S, D)
    q_txt, q_img = q[:, :, :text_len], q[:, :, text_len:]
    k_txt, k_img = k[:, :, :text_len], k[:, :, text_len:]
    v_txt, v_img = v[:, :, :text_len], v[:, :, text_len:]
    outs = []
    if text_len:
        outs.append(F.scaled_dot_product_attention(q_txt, k, v))
    close = _branch(q_img, k_txt, v_txt, k_img, v_img, make_grouping(group_ids((h, w), factors, "close")))
    remote = _branch(q_img, k_txt, v_txt, k_img, v_img, make_grouping(group_ids((h, w), factors, "remote")))
    outs.append(0.5 * (close + remote))
    return torch.cat(outs, dim=2).transpose(1, 2)


def full_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Plain joint attention in the same ``(B, S, heads, D)`` layout (the reference)."""
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)


def attention_pairs(n_image: int, factors: Factors, text_len: int = 0) -> dict[str, float]:
    """Query-key pairs scored by full vs dual-branch attention (exact, divisible grid assumed).

    ``full = (T+N)^2``; window: text queries ``T (T+N)``, image queries ``2 N (T + N/(ab))``.
    Image-image terms alone: ``N^2`` vs ``2 N^2/(ab)`` (the paper's O(2N^2/(ab)))."""
    a, b = factors
    n, t = float(n_image), float(text_len)
    ab = float(a * b)
    full = (t + n) ** 2
    if ab == 1:
        window = full  # (1, 1) runs as plain full attention
        img_img = n * n
    else:
        window = t * (t + n) + 2 * n * (t + n / ab)
        img_img = 2 * n * n / ab
    return {"full": full, "window": window, "image_image_full": n * n, "image_image_window": img_img,
            "paper_ratio": 2.0 / ab if ab > 1 else 1.0, "ratio": window / full}


def attention_flops(n_image: int, factors: Factors, text_len: int, heads: int, head_dim: int) -> dict[str, float]:
    """Matmul FLOPs of one attention layer (QK^T and PV, 2 flops per multiply-add)."""
    p = attention_pairs(n_image, factors, text_len)
    per_pair = 2 * 2 * heads * head_dim
    return {"full": p["full"] * per_pair, "window": p["window"] * per_pair, "ratio": p["ratio"],
            "paper_ratio": p["paper_ratio"]}


def cycle_flop_ratio(n_image: int, schedule, num_double: int, num_single: int, text_len: int = 0) -> float:
    """Attention FLOPs of a whole model with the cycled schedule over full attention everywhere."""
    fac = layer_factors(schedule, num_double, num_single)
    win = sum(attention_pairs(n_image, f, text_len)["window"] for f in fac)
    full = sum(attention_pairs(n_image, f, text_len)["full"] for f in fac)
    return win / full


def grid_for(side_or_hw, token_px: int = 16) -> tuple[int, int]:
    """Token grid of an image: one token per ``token_px x token_px`` pixels."""
    if isinstance(side_or_hw, (int, float)):
        hh = ww = int(side_or_hw)
    else:
        hh, ww = (int(v) for v in side_or_hw)
    return math.ceil(hh / token_px), math.ceil(ww / token_px)
