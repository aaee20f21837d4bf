"""Scheme II dual-branch window attention (training/schemes/windows.py, window_attention.py)."""

from __future__ import annotations

import math

import pytest
import torch

from training.schemes.windows import (
    SCHEDULE_4K,
    SCHEDULE_8K_10K,
    attention_pairs,
    dual_branch_attention,
    full_attention,
    group_ids,
    layer_factors,
)


def _qkv(b=2, s=27, h=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, s, h, d, generator=g, dtype=torch.float64) for _ in range(3)]


def test_groups_of_a_tiny_grid_by_hand():
    # 4x4 grid, factors (2, 2): windows are 2x2 blocks, remote groups are the (i mod 2, j mod 2) lattices
    close = group_ids((4, 4), (2, 2), "close").reshape(4, 4).tolist()
    remote = group_ids((4, 4), (2, 2), "remote").reshape(4, 4).tolist()
    assert close == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert remote == [[0, 1, 0, 1], [2, 3, 2, 3], [0, 1, 0, 1], [2, 3, 2, 3]]
    # a = parts along the height, b along the width: (1, 2) cuts left/right halves of 2 x 4
    assert group_ids((2, 4), (1, 2), "close").tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert group_ids((2, 4), (1, 2), "remote").tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="at least"):
        group_ids((4, 4), (8, 1), "close")


@pytest.mark.parametrize("text_len", [0, 3])
def test_all_ones_factors_equal_full_attention(text_len):
    q, k, v = _qkv(s=text_len + 24)
    out = dual_branch_attention(q, k, v, text_len, (4, 6), (1, 1))
    assert torch.allclose(out, full_attention(q, k, v), atol=1e-12, rtol=0)


def _masked_softmax_attention(q, k, v, allowed):
    """Reference: explicit scores, -inf outside ``allowed`` (S_q, S_k), softmax, weighted sum."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


@pytest.mark.parametrize("grid,factors", [((2, 4), (1, 2)), ((4, 6), (2, 3)), ((5, 7), (2, 3)), ((4, 4), (4, 1))])
def test_matches_explicit_masks(grid, factors):
    t = 2
    n = grid[0] * grid[1]
    q, k, v = _qkv(b=1, s=t + n, h=1, d=4, seed=sum(grid))
    allowed = {}
    for branch in ("close", "remote"):
        gid = group_ids(grid, factors, branch)
        m = torch.ones(t + n, t + n, dtype=torch.bool)
        m[t:, t:] = gid[:, None] == gid[None, :]       # image queries: own group ...
        allowed[branch] = m                             # ... plus every text key; text queries: all
    ref = 0.5 * (_masked_softmax_attention(q, k, v, allowed["close"])
                 + _masked_softmax_attention(q, k, v, allowed["remote"]))
    ref[:, :t] = full_attention(q, k, v)[:, :t]
    out = dual_branch_attention(q, k, v, t, grid, factors)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)


def test_hand_computed_single_head_case():
    """1 head, d=1, no text, grid 1x2 with factors (1, 2): the close branch gives each token its
    own window (itself: output = its own value); the remote branch (j mod 2) too. So with
    factors (1, 2) on a 1x2 grid each token outputs its own value exactly."""
    q = torch.tensor([[[[1.0]], [[2.0]]]], dtype=torch.float64)
    k = torch.tensor([[[[0.5]], [[-1.0]]]], dtype=torch.float64)
    v = torch.tensor([[[[3.0]], [[7.0]]]], dtype=torch.float64)
    out = dual_branch_attention(q, k, v, 0, (1, 2), (1, 2))
    assert out.flatten().tolist() == [3.0, 7.0]
    # 1x4 grid, factors (1, 2): close windows {0,1},{2,3}; remote groups {0,2},{1,3}
    q = torch.tensor([1.0, 0.0, 2.0, -1.0], dtype=torch.float64).reshape(1, 4, 1, 1)
    k = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64).reshape(1, 4, 1, 1)
    v = torch.tensor([10.0, 20.0, 30.0, 40.0], dtype=torch.float64).reshape(1, 4, 1, 1)
    out = dual_branch_attention(q, k, v, 0, (1, 4), (1, 2)).flatten()

    def attend(qi, keys):
        w = torch.softmax(torch.tensor([qi * k.flatten()[j] for j in keys], dtype=torch.float64), 0)
        return float(sum(wi * v.flatten()[j] for wi, j in zip(w, keys)))

    qs = q.flatten().tolist()
    expect = [0.5 * (attend(qs[0], [0, 1]) + attend(qs[0], [0, 2])),
              0.5 * (attend(qs[1], [0, 1]) + attend(qs[1], [1, 3])),
              0.5 * (attend(qs[2], [2, 3]) + attend(qs[2], [0, 2])),
              0.5 * (attend(qs[3], [2, 3]) + attend(qs[3], [1, 3]))]
    assert out.tolist() == pytest.approx(expect, abs=1e-12)
    assert out[1].item() == pytest.approx(0.5 * (15.0 + 30.0))  # q=0: uniform weights


def test_cycle_over_double_then_single_blocks():
    assert layer_factors(SCHEDULE_4K, 2, 2) == [(1, 1), (8, 16), (16, 8), (4, 32)]
    # FLUX.2-klein-4B: 5 double-stream + 20 single-stream blocks
    f = layer_factors(SCHEDULE_8K_10K, 5, 20)
    assert f[:5] == list(SCHEDULE_8K_10K) and f[5:10] == list(SCHEDULE_8K_10K) and len(f) == 25
    f = layer_factors(SCHEDULE_4K, 3, 4)
    assert f == [(1, 1), (8, 16), (16, 8), (4, 32), (32, 4), (1, 1), (8, 16)]


def test_cost_is_two_n_squared_over_ab():
    for n, fac in ((65536, (8, 16)), (262144, (16, 32)), (409600, (64, 8))):
        p = attention_pairs(n, fac)
        assert p["image_image_window"] == pytest.approx(2 * n * n / (fac[0] * fac[1]))
        assert p["ratio"] == pytest.approx(2 / (fac[0] * fac[1]))


@pytest.fixture(scope="module")
def tiny_flux2():
    from training.schemes.flux2 import tiny_flux2_transformer

    return tiny_flux2_transformer(seed=0)


def _inputs(grid=(8, 8), t=5, seed=1):
    from training.schemes.flux2 import position_ids

    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    x = torch.randn(2, n, 16, generator=g)
    e = torch.randn(2, t, 64, generator=g)
    img_ids, txt_ids = position_ids(grid, t)
    return x, e, torch.tensor([0.3, 0.7]), img_ids, txt_ids


def test_processors_in_the_model_full_equivalence_and_cycle(tiny_flux2):
    from training.schemes.window_attention import (
        WindowFlux2AttnProcessor,
        WindowFlux2ParallelSelfAttnProcessor,
        install_window_attention,
        installed_factors,
        window_kwargs,
    )
    from diffusers.models.transformers.transformer_flux2 import Flux2AttnProcessor, Flux2ParallelSelfAttnProcessor

    model = tiny_flux2
    x, e, t, img_ids, txt_ids = _inputs()
    with torch.no_grad():
        ref = model(x, e, t, img_ids, txt_ids).sample
    try:
        # every layer (1,1) through the windowed code path: same numbers as full attention
        install_window_attention(model, [(1, 1)], windowed_identity=True)
        procs = [b.attn.processor for b in list(model.transformer_blocks) + list(model.single_transformer_blocks)]
        assert isinstance(procs[0], WindowFlux2AttnProcessor) and isinstance(procs[0], Flux2AttnProcessor)
        assert isinstance(procs[-1], WindowFlux2ParallelSelfAttnProcessor)
        assert isinstance(procs[-1], Flux2ParallelSelfAttnProcessor)
        with torch.no_grad():
            out = model(x, e, t, img_ids, txt_ids, joint_attention_kwargs=window_kwargs(5, (8, 8))).sample
        assert torch.allclose(out, ref, atol=1e-5, rtol=0)

        # the processors are invoked: a real schedule changes the output, and needs the grid
        sched = [(1, 1), (2, 4), (4, 2), (1, 8), (8, 1)]
        assert install_window_attention(model, sched) == [(1, 1), (2, 4), (4, 2), (1, 8)]
        assert installed_factors(model) == [(1, 1), (2, 4), (4, 2), (1, 8)]
        with torch.no_grad():
            out = model(x, e, t, img_ids, txt_ids, joint_attention_kwargs=window_kwargs(5, (8, 8))).sample
        assert out.shape == ref.shape and (out - ref).abs().max() > 1e-4
        with pytest.raises(ValueError, match="grid"):
            model(x, e, t, img_ids, txt_ids)
        # gradients flow through the window path
        model.zero_grad()
        model(x, e, t, img_ids, txt_ids, joint_attention_kwargs=window_kwargs(5, (8, 8))).sample.square().mean().backward()
        assert model.transformer_blocks[1].attn.to_q.weight.grad.abs().sum() > 0
    finally:
        install_window_attention(model, [(1, 1)])
