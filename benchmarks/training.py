"""Training benchmarks (issue 18): step throughput and memory per scheme x tier, data loader
crops/s from a 100 MP tiled file vs full decode, generation latency of a trained checkpoint,
and Scheme II's attention cost. CPU, tiny random-weight models, one process.

1. **Step throughput** per scheme and every tier of its ladder (Table A1: I-Full 4K/8K,
   I-LoRA 4K/8K/10K, II 4K, III 4K/8K/10K) at a scaled profile (``--scale``, default 1/16:
   tier sides 256/512/640 px; Scheme II at ``--scale-ii`` 1/8 = 512 px, the smallest scale its
   partition factors fit): median wall time of one optimizer step (flow-matching loss,
   backward, AdamW) of the scheme's LightningModule on a synthetic batch at the tier side
   (``--batch``, default the config's 1), after ``--warmup`` untimed steps; samples/s and
   image tokens/s (I/II: 16-px latent tokens; III: its pixel patches). **Memory per step**: the
   process RSS high-water mark during one more step (``VmHWM`` reset through
   ``/proc/self/clear_refs`` after gc + ``malloc_trim``; whole-process RSS, every allocator
   counted, so torch's CPU tensors too, which tracemalloc would miss), its rise over the RSS
   just before the step, the rise of the first step (which allocates the AdamW moments), and
   parameters + gradients + AdamW moments counted from the tensors.
2. **Data loader**: one ~100 MP 4:3 photo (``--mp``; :func:`curation.synth.generate_photo`,
   11547 x 8660) written as the corpus writes it (:func:`curation.upscale.storage.write_array`:
   tiled zstd-3 TIFF, 512-px tiles) and as PNG, in a temporary folder. ``TierDataset.sample``
   (a random region at the tier's aspect bucket, native pixels, to a float tensor) at the
   paper's 4K/8K/10K tiers reading the region's tiles only, vs the same sample after decoding
   the whole TIFF and the whole PNG: s/crop, crops/s, how many times slower than the region
   read (same process), peak RSS and its rise over the crops of each method.
3. **Generation latency**: each ladder stage (``--gen-tiers first``: only each scheme's first)
   trained one optimizer step with :func:`training.trainer.train_stage` on a tiled TIFF, its
   exported weights reloaded with :func:`training.generate.load_generator`, one image at the
   tier side with the config's sampling steps (28; ``--gen-steps``): s/image (best of
   ``--gen-repeat`` images), s per Euler step, peak RSS.
4. **Attention FLOPs of Scheme II vs full attention** at the paper's token counts
   (4K 65,536; 8K 262,144; 10K 409,600 tokens), per partition factor and for the whole
   cycled model (FLUX.2-klein-4B: 5 double + 20 single blocks), with 512 text tokens and
   without, next to the paper's O(2 N^2/(ab)) ratio 2/(ab).
5. **Measured attention time** (CPU) of :func:`dual_branch_attention` vs full attention at a
   64x64 grid (4,096 image tokens) for each factor of the 4K schedule.

Times are wall clock on shared cores: the load average after each part is recorded with them.
Default arguments run in about 5 minutes on 2 cores; ``--steps``, ``--crops``,
``--full-crops``, ``--gen-steps``, ``--scale`` make longer runs, ``--only`` picks parts.

    .venv/bin/python benchmarks/training.py [--steps 9] [--out benchmarks/out]
    .venv/bin/python benchmarks/training.py --only loader --crops 20 --full-crops 5
    python3 benchmarks/training.py --gpu-attention --out $OUT     # on a CUDA machine (plain torch only)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._measure import PeakRSS, best, git_state, trim_memory  # noqa: E402

TOKENS = {"4K": 65536, "8K": 262144, "10K": 409600}
KLEIN_BLOCKS = (5, 20)       # FLUX.2-klein-4B: double-stream, single-stream blocks
KLEIN_ATTN = (24, 128)       # heads, head_dim
SCHEMES = ("I_full", "I_lora", "II", "III")


def profile_cfg(scale: float, gen_steps: int | None = None) -> dict:
    """The paper's ``training`` section at ``linear_scale = scale`` (optionally another sampling step count)."""
    from curation.config import load_config

    base = load_config("paper").data["training"]
    t = {**base, "linear_scale": float(scale)}
    if gen_steps:
        t["sampling"] = {**(base.get("sampling") or {}), "steps": int(gen_steps)}
    return {"training": t}


def scheme_stages(schemes, scale: float, scale_ii: float, gen_steps: int | None = None):
    """``(scheme, scale, cfg, stage)`` for every stage of each scheme's ladder (Table A1);
    Scheme II at ``scale_ii`` (its partition factors need a token grid side >= 32: scale >= 1/8)."""
    from training import curriculum

    for scheme in schemes:
        s = scale_ii if scheme == "II" else scale
        cfg = profile_cfg(s, gen_steps)
        for stage in curriculum.ladder(cfg, scheme):
            yield scheme, s, cfg, stage


def _frac(x: float) -> str:
    return f"1/{round(1 / x)}" if x < 1 and abs(1 / x - round(1 / x)) < 1e-9 else f"{x:g}"


def _tensor_mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t)) / 2**20


def step_throughput(steps: int, warmup: int = 2, batch: int = 1, scale: float = 1 / 16, scale_ii: float = 1 / 8,
                    schemes=SCHEMES) -> list[dict]:
    """Median wall time of one optimizer step per scheme x tier of its ladder, with the RSS it takes."""
    from training.trainer import build_module

    out = []
    for scheme, s, cfg, stage in scheme_stages(schemes, scale, scale_ii):
        trim_memory()
        module = build_module(stage, cfg, "tiny", seed=0)
        opt = module.configure_optimizers()
        side, bs = stage.tier.side, batch
        g = torch.Generator().manual_seed(0)

        def batch_of(i):
            return {"pixels": torch.rand(bs, 3, side, side, generator=g) * 2 - 1,
                    "prompt": [f"a photo {i} {j}" for j in range(bs)], "key": None,
                    "index": torch.arange(i * bs, (i + 1) * bs)}

        def one(i):
            loss = module.flow_loss(batch_of(i))
            opt.zero_grad()
            loss.backward()
            opt.step()
            return float(loss.detach())

        with PeakRSS() as first:  # the first step also allocates the AdamW moments
            t0 = time.perf_counter()
            one(0)
            first_s = time.perf_counter() - t0
        for i in range(1, warmup):
            one(i)
        times = []
        for i in range(steps):
            t0 = time.perf_counter()
            one(100 + i)
            times.append(time.perf_counter() - t0)
        with PeakRSS() as mem:  # one more (untimed) step: its RSS high-water mark
            one(1000)
        dt = sorted(times)[len(times) // 2]  # median step: the machine's cores are shared
        state = _tensor_mb(module.parameters()) + _tensor_mb(p.grad for p in module.parameters()) + \
            _tensor_mb(v for st in opt.state.values() for v in st.values())
        out.append({"scheme": scheme, "tier": stage.tier.name, "linear_scale": s, "side_px": side,
                    "grid": list(stage.tier.grid), "tokens": stage.tier.tokens, "token_px": stage.tier.token_px,
                    "batch": bs, "trainable_params": module.n_trainable(), "steps": steps, "warmup": warmup,
                    "s_per_step": dt, "s_per_step_min": min(times), "first_step_s": first_s,
                    "samples_per_s": bs / dt, "tokens_per_s": bs * stage.tier.tokens / dt,
                    "samples_per_s_best": bs / min(times), "tokens_per_s_best": bs * stage.tier.tokens / min(times),
                    "state_mb": state, "step_peak_rss_mb": mem.peak_mb, "step_rss_before_mb": mem.before_mb,
                    "step_rss_rise_mb": mem.rise_mb, "first_step_rss_rise_mb": first.rise_mb,
                    "rss_exact": mem.exact})
        print(f"  throughput {scheme}/{stage.tier.name}: {dt:.3f} s/step, +{mem.rise_mb:.0f} MiB", flush=True)
        del module, opt
    trim_memory()
    return out


class _FullDecodeDataset:
    """Mixin for a :class:`TierDataset` that decodes the whole file and crops from memory
    (what a format without region reads costs), whatever the suffix."""

    def _open(self, path: str):
        from curation.upscale.storage import ArraySource, read_image

        return ArraySource(read_image(path))


def loader_crops(mp: float = 100, crops: int = 6, full_crops: int = 2, tiers=("4K", "8K", "10K"),
                 workdir: str | None = None) -> tuple[dict, list[dict]]:
    """crops/s of :meth:`TierDataset.sample` (region crop at an aspect bucket of the tier, native
    pixels, to a float tensor) from one ~``mp`` MP 4:3 photo stored as the corpus stores it (tiled
    zstd-3 TIFF, 512-px tiles, :func:`curation.upscale.storage.write_array`) vs the same crops after
    decoding the whole file (the TIFF, and a PNG of the same image: the formats without region
    reads). Tiers at the paper's scale (the file is full size). Files sit in the page cache."""
    import cv2  # noqa: F401  (imports outside the timed loops)
    import tifffile  # noqa: F401

    import curation.imageio  # noqa: F401
    from curation.synth import generate_photo
    from curation.upscale.storage import TiffRegionSource, read_image, write_array
    from training import curriculum
    from training.data.datasets import Record, TierDataset

    class FullDecode(_FullDecodeDataset, TierDataset):
        pass

    w = int(round((mp * 1e6 * 4 / 3) ** 0.5))
    h = int(round(mp * 1e6 / w))
    cfg = profile_cfg(1.0)
    b = cfg["training"]["buckets"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="uhr-bench-loader-", dir=workdir) as d:
        t0 = time.perf_counter()
        img = generate_photo(w, h, seed=0)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        tif = write_array(Path(d) / "photo.tif", img)
        tif_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        png = write_array(Path(d) / "photo.png", img)
        png_s = time.perf_counter() - t0
        del img
        # warm-up, not timed: each decoder once (codec set-up, first-touch of the page cache)
        t0 = time.perf_counter()
        read_image(png["path"])
        warm = {"png_full_decode_s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        read_image(tif["path"])
        warm["tiff_full_decode_s"] = time.perf_counter() - t0
        with TiffRegionSource(tif["path"]) as src:
            src.read(0, 1024, 0, 1024)
        trim_memory()
        info = {"width": w, "height": h, "megapixels": w * h / 1e6, "generate_s": gen_s,
                "tiff_bytes": tif["bytes"], "tiff_write_s": tif_s, "png_bytes": png["bytes"], "png_write_s": png_s,
                "warmup": warm}
        kinds = (("tiled TIFF, region read", tif["path"], TierDataset, crops),
                 ("tiled TIFF, full decode + crop", tif["path"], FullDecode, full_crops),
                 ("PNG, full decode + crop", png["path"], FullDecode, full_crops))
        for name in tiers:
            tr = curriculum.tier(cfg, name)
            res = {}
            for kind, path, cls, n in kinds:
                ds = cls([Record("photo", path, "a photo", w, h)], tr.pixels, b["ratios"], tr.token_px, seed=0,
                         crop_scale_range=b.get("crop_scale_range", (1.0, 1.0)),
                         allow_full_decode=cls is not TierDataset)
                bucket = ds.buckets[ds.bucket_of[0]]
                ts = []
                with PeakRSS() as mem:
                    for i in range(n):
                        t0 = time.perf_counter()
                        x = ds.sample(0, i)
                        ts.append(time.perf_counter() - t0)
                        del x
                total = sum(ts)
                res[kind] = total / n
                rows.append({"tier": name, "method": kind, "crops": n, "bucket": f"{bucket.width}x{bucket.height}",
                             "bucket_mp": bucket.pixels / 1e6, "region_mp": ds.pixels_read / n / 1e6,
                             "s_per_crop": total / n, "s_per_crop_min": min(ts), "crops_per_s": n / total,
                             "peak_rss_mb": mem.peak_mb, "rss_rise_mb": mem.rise_mb, "rss_exact": mem.exact})
                print(f"  loader {name} {kind}: {total / n:.3f} s/crop, +{mem.rise_mb:.0f} MiB", flush=True)
                del ds
            ref = res["tiled TIFF, region read"]
            for r in rows[-len(kinds):]:
                r["x_slower_than_region_read"] = r["s_per_crop"] / ref
    trim_memory()
    return info, rows


def generation_latency(scale: float = 1 / 16, scale_ii: float = 1 / 8, gen_steps: int | None = None,
                       all_tiers: bool = True, schemes=SCHEMES, workdir: str | None = None,
                       repeat: int = 2) -> list[dict]:
    """Seconds per image at the tier side of a checkpoint trained one optimizer step by
    :func:`training.trainer.train_stage` (tiny backbones) and reloaded by
    :func:`training.generate.load_generator` from its exported weights; Euler steps from the
    config's ``training.sampling.steps`` (28) unless ``gen_steps``; the best of ``repeat`` images."""
    import logging

    from curation.synth import generate_photo
    from curation.upscale.storage import write_array
    from training.generate import load_generator
    from training.trainer import train_stage

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory(prefix="uhr-bench-gen-", dir=workdir) as d:
        recs: dict[int, list[dict]] = {}
        seen: set[str] = set()
        for scheme, s, cfg, stage in scheme_stages(schemes, scale, scale_ii, gen_steps):
            if not all_tiers and scheme in seen:
                continue
            seen.add(scheme)
            side = stage.tier.side
            if side not in recs:  # one square training photo per tier side (a 1:1 bucket at every tier)
                p = Path(d) / f"photo-{side}.tif"
                write_array(p, generate_photo(side, side, seed=side))
                recs[side] = [{"image_id": f"photo-{side}", "path": str(p), "long_caption": "a photo of a harbour",
                               "width": side, "height": side}]
            run = Path(d) / f"{scheme}-{stage.tier.name}"
            trim_memory()
            res = train_stage(cfg, scheme, stage.tier.name, recs[side], run, max_steps=1, batch_size=1, scale=s)
            gen = load_generator(cfg, scheme, stage.tier.name, run / "weights", scale=s, device="cpu")
            n_steps = gen.steps
            gen.steps = 1
            t0 = time.perf_counter()
            gen.generate("a red house by a lake", side, side, seed=0)  # load the weights + a 1-step warm-up
            load_s = time.perf_counter() - t0
            gen.steps = n_steps
            ts = []
            with PeakRSS() as mem:
                for k in range(max(1, repeat)):
                    t0 = time.perf_counter()
                    img = gen.generate("a red house by a lake", side, side, seed=1 + k)
                    ts.append(time.perf_counter() - t0)
            dt = min(ts)
            assert img.shape == (side, side, 3)
            rows.append({"scheme": scheme, "tier": stage.tier.name, "linear_scale": s, "side_px": side,
                         "grid": list(stage.tier.grid), "tokens": stage.tier.tokens, "token_px": stage.tier.token_px,
                         "train_steps": res.steps, "train_wall_s": res.wall_clock_s, "sampling_steps": n_steps,
                         "load_and_1_step_s": load_s, "images": len(ts), "s_per_image": dt,
                         "s_per_image_median": statistics.median(ts), "s_per_sampling_step": dt / n_steps,
                         "peak_rss_mb": mem.peak_mb, "rss_rise_mb": mem.rise_mb, "rss_exact": mem.exact})
            print(f"  generation {scheme}/{stage.tier.name}: {dt:.2f} s/image ({n_steps} steps)", flush=True)
            del gen, img
    trim_memory()
    return rows


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


def _markdown(info, thr, loader_info, loader, gen, flops, meas) -> str:
    lines = ["# Training benchmarks", "",
             f"torch {info['torch']}, {info['threads']} threads, {info['cpus']} CPUs, device {info['device']}; "
             f"memory: {info['memory']}; load average (1/5/15 min) after each part: {info['loadavg_after']}; "
             f"seconds per part: { {k: round(v) for k, v in info['seconds'].items()} }; git {info['git']['head']}, "
             f"uncommitted measured code: {[x.strip() for x in info['git']['dirty']] or 'none'}", ""]
    if thr:
        lines += ["## Step throughput per scheme x tier (tiny random-weight models, scaled profile, CPU)", "",
                  "One optimizer step (flow-matching loss, backward, AdamW) on a synthetic batch at the tier side; "
                  "tokens = image tokens (I/II: 16-px latent tokens; III: pixel patches) per sample, plus 8 hash "
                  "text tokens not counted; samples/s and tokens/s from the median step, (best) from the fastest (the "
                  "least disturbed by other work on the cores). Peak RSS: process high-water mark during one "
                  "extra step; rise = over the RSS just before it; first step = the rise of the first step "
                  "(allocates the AdamW moments). State = parameters + gradients + AdamW moments.", "",
                  "| scheme | tier | scale | side px | token grid | token px | batch | trainable | s/step (median) "
                  "| s/step (min) | samples/s | tokens/s | samples/s (best) | tokens/s (best) | state MiB "
                  "| step peak RSS MiB | step RSS rise MiB | first step RSS rise MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in thr:
            lines.append(f"| {r['scheme']} | {r['tier']} | {_frac(r['linear_scale'])} | {r['side_px']} | "
                         f"{r['grid'][0]}x{r['grid'][1]} | {r['token_px']} | {r['batch']} | "
                         f"{r['trainable_params']:,} | {r['s_per_step']:.3f} | {r['s_per_step_min']:.3f} | "
                         f"{r['samples_per_s']:.2f} | {r['tokens_per_s']:,.0f} | {r['samples_per_s_best']:.2f} | "
                         f"{r['tokens_per_s_best']:,.0f} | {r['state_mb']:.1f} | "
                         f"{r['step_peak_rss_mb']:.0f} | {r['step_rss_rise_mb']:.0f} | "
                         f"{r['first_step_rss_rise_mb']:.0f} |")
        lines.append("")
    if loader:
        li = loader_info
        lines += ["## Data loader: region crops from a 100 MP tiled TIFF vs full decode (CPU)", "",
                  f"One {li['width']}x{li['height']} ({li['megapixels']:.1f} MP) generated photo; tiled zstd-3 TIFF "
                  f"(512-px tiles, the corpus format) {li['tiff_bytes'] / 2**20:.0f} MiB, PNG (level 1, avg filter) "
                  f"{li['png_bytes'] / 2**20:.0f} MiB, both in the page cache; decoding the whole file once "
                  f"(warm-up, not in the table): PNG {li['warmup']['png_full_decode_s']:.2f} s, TIFF "
                  f"{li['warmup']['tiff_full_decode_s']:.2f} s. One crop = "
                  "`TierDataset.sample` at the tier's aspect bucket (native pixels, paper scale; 10K: the 104.9 MP "
                  "bucket is larger than the image, so the whole image is read and resized up) to a float tensor; "
                  "full decode = the same sample after decoding the whole file. Peak RSS: high-water mark over the "
                  "method's crops; rise = over the RSS before them.", "",
                  "| tier | bucket | method | crops | region MP | s/crop (mean) | s/crop (min) | crops/s "
                  "| x region read | peak RSS MiB | RSS rise MiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in loader:
            lines.append(f"| {r['tier']} | {r['bucket']} | {r['method']} | {r['crops']} | {r['region_mp']:.1f} | "
                         f"{r['s_per_crop']:.3f} | {r['s_per_crop_min']:.3f} | {r['crops_per_s']:.2f} | "
                         f"{r['x_slower_than_region_read']:.2f} | {r['peak_rss_mb']:.0f} | {r['rss_rise_mb']:.0f} |")
        lines.append("")
    if gen:
        lines += ["## Generation latency of a trained checkpoint (tiny backbones, CPU)", "",
                  "`train_stage` (1 optimizer step) -> exported weights -> `load_generator` -> one image at the "
                  "tier side (Euler flow sampler, the config's sampling steps, no guidance). Load = weights load + a "
                  "1-step warm-up image; peak RSS over the timed images.", "",
                  "| scheme | tier | scale | side px | token grid | sampling steps | train s (1 step) "
                  "| load + 1 step s | images | s/image (best) | s/image (median) | s/sampling step (best) "
                  "| peak RSS MiB | RSS rise MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in gen:
            lines.append(f"| {r['scheme']} | {r['tier']} | {_frac(r['linear_scale'])} | {r['side_px']} | "
                         f"{r['grid'][0]}x{r['grid'][1]} | {r['sampling_steps']} | {r['train_wall_s']:.2f} | "
                         f"{r['load_and_1_step_s']:.2f} | {r['images']} | {r['s_per_image']:.2f} | "
                         f"{r['s_per_image_median']:.2f} | {r['s_per_sampling_step']:.3f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['rss_rise_mb']:.0f} |")
        lines.append("")
    if flops:
        lines += ["## Scheme II attention FLOPs vs full attention (24 heads x 128, QK^T + PV)", "",
                  "| tier | image tokens | text tokens | factors | full TFLOP | window TFLOP | ratio | 2/(ab) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in flops:
            ft = "" if r["full_tflop"] is None else f"{r['full_tflop']:.2f}"
            wt = "" if r["window_tflop"] is None else f"{r['window_tflop']:.3f}"
            lines.append(f"| {r['tier']} | {r['tokens']:,} | {r['text_tokens']} | {r['factors']} | {ft} | {wt} | "
                         f"{r['ratio']:.4f} | {r['paper_2_over_ab']:.4f} |")
        lines.append("")
    if meas:
        lines += ["## Measured attention time, 64x64 grid + 8 text tokens, 2 heads x 32 (CPU)", "",
                  "| factors | full ms | window ms | measured ratio | 2/(ab) |", "|---|---|---|---|---|"]
        for r in meas:
            lines.append(f"| {r['factors']} | {r['full_ms']:.1f} | {r['window_ms']:.1f} | "
                         f"{r['measured_ratio']:.3f} | {r['paper_2_over_ab']:.4f} |")
        lines.append("")
    return "\n".join(lines)


PARTS = ("throughput", "loader", "generation", "flops", "attention")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=9, help="timed optimizer steps per scheme x tier (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    ap.add_argument("--batch", type=int, default=1, help="samples per step (the config's batch_size is 1)")
    ap.add_argument("--scale", type=float, default=1 / 16, help="linear_scale of Schemes I and III")
    ap.add_argument("--scale-ii", type=float, default=1 / 8, help="linear_scale of Scheme II (>= 1/8)")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--mp", type=float, default=100, help="megapixels of the loader's 4:3 photo")
    ap.add_argument("--crops", type=int, default=8, help="region-read crops per tier")
    ap.add_argument("--full-crops", type=int, default=3, help="full-decode crops per tier and format")
    ap.add_argument("--loader-tiers", default="4K,8K,10K")
    ap.add_argument("--gen-steps", type=int, default=None, help="sampling steps (default: the config's, 28)")
    ap.add_argument("--gen-repeat", type=int, default=2, help="images timed per stage (best reported)")
    ap.add_argument("--gen-tiers", choices=("all", "first"), default="all",
                    help="generate at every tier of each ladder or only its first")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    ap.add_argument("--tmp", default=None, help="folder for the temporary files (100 MP TIFF + PNG: ~0.3 GB)")
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
    parts = {p.strip() for p in a.only.split(",") if p.strip()}
    if parts - set(PARTS):
        ap.error(f"unknown parts {sorted(parts - set(PARTS))}; choose from {PARTS}")
    schemes = [s.strip() for s in a.schemes.split(",") if s.strip()]
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "memory": "process RSS (VmHWM reset through /proc/self/clear_refs, after gc + malloc_trim)",
            "args": vars(a), "git": git_state("training", "curation/upscale/storage.py", "curation/synth",
                                                 "benchmarks/training.py", "benchmarks/_measure.py")}
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    loads = {"start": [round(x, 2) for x in os.getloadavg()]}  # 1/5/15-min load: other work on the cores skews times

    def run(name, fn, empty):
        if name not in parts:
            return empty
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        r = fn()
        timings[name] = time.perf_counter() - t0
        loads[name] = [round(x, 2) for x in os.getloadavg()]
        return r

    thr = run("throughput", lambda: step_throughput(a.steps, a.warmup, a.batch, a.scale, a.scale_ii, schemes), [])
    loader_tiers = [t.strip() for t in a.loader_tiers.split(",") if t.strip()]
    loader_info, loader = run("loader", lambda: loader_crops(a.mp, a.crops, a.full_crops, loader_tiers, a.tmp),
                              ({}, []))
    gen = run("generation", lambda: generation_latency(a.scale, a.scale_ii, a.gen_steps, a.gen_tiers == "all",
                                                       schemes, a.tmp, a.gen_repeat), [])
    flops = run("flops", flop_table, [])
    meas = run("attention", measured_attention, [])
    info["seconds"] = {**timings, "total": time.perf_counter() - t_all}
    info["loadavg_after"] = loads
    text = _markdown(info, thr, loader_info, loader, gen, flops, meas)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "training.md").write_text(text)
    (out / "training.json").write_text(json.dumps({"info": info, "throughput": thr, "loader": loader,
                                                   "loader_file": loader_info, "generation": gen, "flops": flops,
                                                   "measured_attention": meas}, indent=1))


if __name__ == "__main__":
    main()
