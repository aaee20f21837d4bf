"""Training benchmarks: step throughput per scheme (tiny configs, CPU) and Scheme II's attention cost.

1. **Step throughput**: samples/s of one optimizer step (flow-matching loss, backward, AdamW)
   of each scheme's LightningModule on the tiny random-weight models, at the 4K tier of a
   scaled profile (Schemes I: 1/16 -> 16x16 tokens; II: 1/8 -> 32x32 tokens, the smallest
   scale its partition factors fit; III: 1/16 -> 64x64 patches of 4 px). Synthetic batches
   (the data path is measured by the data tests, not here). Warm-up steps are not timed.
2. **Attention FLOPs of Scheme II vs full attention** at the paper's token counts
   (4K 65,536; 8K 262,144; 10K 409,600 tokens), per partition factor and for the whole
   cycled model (FLUX.2-klein-4B: 5 double + 20 single blocks), with 512 text tokens and
   without, next to the paper's O(2 N^2/(ab)) ratio 2/(ab).
3. **Measured attention time** (CPU) of :func:`dual_branch_attention` vs full attention at a
   64x64 grid (4,096 image tokens) for each factor of the 4K schedule.

    .venv/bin/python benchmarks/training.py [--steps 9] [--out benchmarks/out]
    python3 benchmarks/training.py --gpu-attention --out $OUT     # on a CUDA machine (plain torch only)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._measure import best  # noqa: E402

TOKENS = {"4K": 65536, "8K": 262144, "10K": 409600}
KLEIN_BLOCKS = (5, 20)       # FLUX.2-klein-4B: double-stream, single-stream blocks
KLEIN_ATTN = (24, 128)       # heads, head_dim


def step_throughput(steps: int) -> list[dict]:
    from curation.config import load_config
    from training import curriculum
    from training.trainer import build_module

    base = load_config("paper").data
    out = []
    for scheme, scale, bs in (("I_full", 1 / 16, 2), ("I_lora", 1 / 16, 2), ("II", 1 / 8, 1), ("III", 1 / 16, 1)):
        cfg = {"training": {**base["training"], "linear_scale": scale}}
        stage = curriculum.ladder(cfg, scheme)[0]
        module = build_module(stage, cfg, "tiny", seed=0)
        opt = module.configure_optimizers()
        side = stage.tier.side
        g = torch.Generator().manual_seed(0)

        def batch(i):
            return {"pixels": torch.rand(bs, 3, side, side, generator=g) * 2 - 1,
                    "prompt": [f"a photo {i} {j}" for j in range(bs)], "key": None,
                    "index": torch.arange(i * bs, (i + 1) * bs)}

        def one(i):
            loss = module.flow_loss(batch(i))
            opt.zero_grad()
            loss.backward()
            opt.step()
            return float(loss.detach())

        for i in range(2):
            one(i)
        times = []
        for i in range(steps):
            t0 = time.perf_counter()
            one(100 + i)
            times.append(time.perf_counter() - t0)
        dt = sorted(times)[len(times) // 2]  # median step: the machine's cores are shared
        out.append({"scheme": scheme, "tier": "4K", "linear_scale": scale, "side_px": side,
                    "grid": list(stage.tier.grid), "tokens": stage.tier.tokens, "token_px": stage.tier.token_px,
                    "batch": bs, "trainable_params": module.n_trainable(), "steps": steps,
                    "s_per_step": dt, "s_per_step_min": min(times), "samples_per_s": bs / dt})
    return out


def flop_table() -> list[dict]:
    from curation.config import load_config
    from training.schemes.windows import attention_flops, attention_pairs, cycle_flop_ratio

    sched = load_config("paper").data["training"]["schemes"]["II"]["partition_factors"]
    heads, hd = KLEIN_ATTN
    rows = []
    for tier, n in TOKENS.items():
        for t in (0, 512):
            for f in sched[tier]:
                fac = (int(f[0]), int(f[1]))
                fl = attention_flops(n, fac, t, heads, hd)
                p = attention_pairs(n, fac, t)
                rows.append({"tier": tier, "tokens": n, "text_tokens": t, "factors": f"{fac[0]}x{fac[1]}",
                             "full_tflop": fl["full"] / 1e12, "window_tflop": fl["window"] / 1e12,
                             "ratio": fl["ratio"], "paper_2_over_ab": p["paper_ratio"]})
            rows.append({"tier": tier, "tokens": n, "text_tokens": t, "factors": "cycle (5+20 blocks)",
                         "full_tflop": None, "window_tflop": None,
                         "ratio": cycle_flop_ratio(n, [tuple(f) for f in sched[tier]], *KLEIN_BLOCKS, text_len=t),
                         "paper_2_over_ab": sum(1.0 if tuple(f) == (1, 1) else 2.0 / (f[0] * f[1])
                                                for f in sched[tier]) / len(sched[tier])})
    return rows


def measured_attention(repeat: int = 3) -> list[dict]:
    from training.schemes.windows import SCHEDULE_4K, dual_branch_attention, full_attention

    g = torch.Generator().manual_seed(0)
    grid, t, heads, d = (64, 64), 8, 2, 32
    q, k, v = (torch.randn(1, t + grid[0] * grid[1], heads, d, generator=g) for _ in range(3))

    full = best(lambda: full_attention(q, k, v), repeat)
    rows = []
    for f in SCHEDULE_4K:
        dual_branch_attention(q, k, v, t, grid, f)  # warm-up (allocations, kernel selection)
        w = best(lambda: dual_branch_attention(q, k, v, t, grid, f), repeat) if f != (1, 1) else full
        rows.append({"grid": "64x64", "tokens": 4096, "factors": f"{f[0]}x{f[1]}", "full_ms": full * 1e3,
                     "window_ms": w * 1e3, "measured_ratio": w / full,
                     "paper_2_over_ab": 1.0 if f == (1, 1) else 2 / (f[0] * f[1])})
    return rows


def gpu_attention(repeat: int = 3, device: str = "cuda", cases=None) -> list[dict]:
    """Scheme II attention vs full attention at the paper's token counts on a CUDA GPU (bf16,
    24 heads x 128, 512 text tokens, batch 1): one factor per tier, CUDA-event timing."""
    from training.schemes.windows import attention_flops, dual_branch_attention, full_attention

    dev = torch.device(device)
    rows = []
    cuda = dev.type == "cuda"
    for tier, n, fac in cases or (("4K", 65536, (8, 16)), ("8K", 262144, (16, 32)), ("10K", 409600, (16, 32))):
        side = int(n ** 0.5)
        heads, d, t = KLEIN_ATTN[0], KLEIN_ATTN[1], 512
        g = torch.Generator(device=dev).manual_seed(0)
        q, k, v = (torch.randn(1, t + n, heads, d, generator=g, device=dev, dtype=torch.bfloat16) for _ in range(3))

        def timed(fn):
            fn()
            if not cuda:
                t0 = time.perf_counter()
                fn()
                return time.perf_counter() - t0
            torch.cuda.synchronize()
            best = float("inf")
            for _ in range(repeat):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                best = min(best, a.elapsed_time(b) / 1e3)
            return best

        full = timed(lambda: full_attention(q, k, v))
        win = timed(lambda: dual_branch_attention(q, k, v, t, (side, side), fac))
        fl = attention_flops(n, fac, t, heads, d)
        rows.append({"tier": tier, "tokens": n, "text_tokens": t, "factors": f"{fac[0]}x{fac[1]}", "full_s": full,
                     "window_s": win, "measured_ratio": win / full, "flop_ratio": fl["ratio"],
                     "paper_2_over_ab": 2 / (fac[0] * fac[1]), "full_tflops": fl["full"] / full / 1e12,
                     "window_tflops": fl["window"] / win / 1e12,
                     "gpu": torch.cuda.get_device_name(0) if cuda else "cpu"})
        del q, k, v
        if cuda:
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--gpu-attention", action="store_true", help="only the CUDA attention timing at real token counts")
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.gpu_attention:
        rows = gpu_attention()
        lines = ["| tier | tokens | factors | full s | window s | measured ratio | FLOP ratio | 2/(ab) | full TFLOP/s |"
                 " window TFLOP/s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['tier']} | {r['tokens']:,} | {r['factors']} | {r['full_s']:.4f} | {r['window_s']:.4f} | "
                         f"{r['measured_ratio']:.4f} | {r['flop_ratio']:.4f} | {r['paper_2_over_ab']:.4f} | "
                         f"{r['full_tflops']:.0f} | {r['window_tflops']:.0f} |")
        text = f"GPU: {rows[0]['gpu']}, bf16, 24 heads x 128, 512 text tokens\n\n" + "\n".join(lines) + "\n"
        print(text)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "training_gpu.md").write_text(text)
        (out / "training_gpu.json").write_text(json.dumps(rows, indent=1))
        return
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}
    thr = step_throughput(a.steps)
    flops = flop_table()
    meas = measured_attention()
    lines = ["# Training benchmarks", "", f"torch {info['torch']}, {info['threads']} threads, device {info['device']}",
             "", "## Step throughput (tiny random-weight models, 4K tier of a scaled profile, CPU)", "",
             "| scheme | scale | side px | token grid | token px | batch | trainable | s/step (median) | s/step (min) "
             "| samples/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in thr:
        lines.append(f"| {r['scheme']} | 1/{round(1 / r['linear_scale'])} | {r['side_px']} | "
                     f"{r['grid'][0]}x{r['grid'][1]} | {r['token_px']} | {r['batch']} | {r['trainable_params']:,} | "
                     f"{r['s_per_step']:.3f} | {r['s_per_step_min']:.3f} | {r['samples_per_s']:.2f} |")
    lines += ["", "## Scheme II attention FLOPs vs full attention (24 heads x 128, QK^T + PV)", "",
              "| tier | image tokens | text tokens | factors | full TFLOP | window TFLOP | ratio | 2/(ab) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in flops:
        ft = "" if r["full_tflop"] is None else f"{r['full_tflop']:.2f}"
        wt = "" if r["window_tflop"] is None else f"{r['window_tflop']:.3f}"
        lines.append(f"| {r['tier']} | {r['tokens']:,} | {r['text_tokens']} | {r['factors']} | {ft} | {wt} | "
                     f"{r['ratio']:.4f} | {r['paper_2_over_ab']:.4f} |")
    lines += ["", "## Measured attention time, 64x64 grid + 8 text tokens, 2 heads x 32 (CPU)", "",
              "| factors | full ms | window ms | measured ratio | 2/(ab) |", "|---|---|---|---|---|"]
    for r in meas:
        lines.append(f"| {r['factors']} | {r['full_ms']:.1f} | {r['window_ms']:.1f} | {r['measured_ratio']:.3f} | "
                     f"{r['paper_2_over_ab']:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "training.md").write_text(text)
    (out / "training.json").write_text(json.dumps({"info": info, "throughput": thr, "flops": flops,
                                                   "measured_attention": meas}, indent=1))


if __name__ == "__main__":
    main()
