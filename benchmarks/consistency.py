"""Calibrate the post-SR consistency thresholds (the paper gives none) on generated photos.

For images from :func:`curation.synth.generate_photo` (inputs 768x576 and 1152x864, two
seeds each) upscaled 2x and 4x, measures PSNR / SSIM / per-tile-block minima of the SR output
downsampled back (INTER_AREA) against the input, for

* good outputs: tiled ``lanczos``; tiled ``realesrgan`` (``animevideov3``, native 2x/4x) and,
  on one small input, ``realesrgan`` ``x4plus`` (the photo model; slow on CPU) when the
  backend is available;
* built defects on the lanczos output: one tile colour-shifted (+10/-5/+6), one tile blurred
  (Gaussian sigma 3), one tile shifted by 3 px, a global colour cast (+6), the whole image
  blurred (sigma 2).

Writes ``benchmarks/out/consistency.md`` and prints it.

    .venv/bin/python benchmarks/consistency.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation.final_filters.consistency import DEFAULT_THRESHOLDS, consistency_metrics, decide  # noqa: E402
from curation.synth import generate_photo  # noqa: E402
from curation.upscale.backends import availability, create_backend  # noqa: E402
from curation.upscale.tiles import TiledUpscaler, TileSpec  # noqa: E402

KEYS = ("psnr", "ssim", "psnr_block_min", "ssim_block_min", "psnr_block_drop", "ssim_block_drop")


def defects(out: np.ndarray, s: int) -> dict[str, np.ndarray]:
    t = 384
    y, x = t, t  # the second tile on the diagonal
    ys, xs = slice(y, y + t), slice(x, x + t)
    d = {}
    a = out.copy()
    a[ys, xs] = np.clip(a[ys, xs].astype(np.int16) + np.array([10, -5, 6]), 0, 255)
    d["colour-shifted tile (+10)"] = a
    a = out.copy()
    a[ys, xs] = cv2.GaussianBlur(out, (0, 0), 3.0)[ys, xs]
    d["blurred tile (sigma 3)"] = a
    a = out.copy()
    a[ys, xs] = np.roll(out, (3, 3), axis=(0, 1))[ys, xs]
    d["shifted tile (3 px)"] = a
    d["global colour cast (+6)"] = np.clip(out.astype(np.int16) + np.array([6, 0, -6]), 0, 255).astype(np.uint8)
    d["whole image blurred (sigma 2)"] = cv2.GaussianBlur(out, (0, 0), 2.0)
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one image per size, no x4plus")
    args = ap.parse_args()
    rows: list[tuple[str, str, int, dict]] = []
    have_esr = bool(availability("realesrgan"))
    sizes = [(768, 576), (1152, 864)]
    seeds = [3] if args.quick else [3, 4]
    for w, h in sizes:
        for seed in seeds:
            hi = generate_photo(w * 2, h * 2, seed)  # the "true" detail, for realism of the input
            for s in (2, 4):
                lr = cv2.resize(hi, (w * 2 // s, h * 2 // s), interpolation=cv2.INTER_AREA)
                name = f"{lr.shape[1]}x{lr.shape[0]} s{seed}"
                up = TiledUpscaler(create_backend("lanczos", s), TileSpec()).upscale_array(lr)
                rows.append(("good", "lanczos (tiled)", s, consistency_metrics(up, lr, lpips=False)))
                if have_esr:
                    t0 = time.perf_counter()
                    esr = TiledUpscaler(create_backend("realesrgan", s, model="animevideov3"), TileSpec())
                    out = esr.upscale_array(lr)
                    m = consistency_metrics(out, lr, lpips=False)
                    m["seconds"] = time.perf_counter() - t0
                    rows.append(("good", "realesrgan animevideov3 (tiled)", s, m))
                for dname, d in defects(up, s).items():
                    rows.append(("defect", dname, s, consistency_metrics(d, lr, lpips=False)))
                print(name, "done", flush=True)
    if have_esr and not args.quick:  # the photo GAN model, slow on CPU: small inputs only
        for seed in (5, 6):
            hi = generate_photo(768, 576, seed)
            for s, (w, h) in ((4, (192, 144)), (2, (288, 216))):
                lr = cv2.resize(hi, (w, h), interpolation=cv2.INTER_AREA)
                t0 = time.perf_counter()
                out = TiledUpscaler(create_backend("realesrgan", s, model="x4plus"), TileSpec()).upscale_array(lr)
                m = consistency_metrics(out, lr, lpips=False)
                m["seconds"] = time.perf_counter() - t0
                rows.append(("good", "realesrgan x4plus (tiled, small inputs)", s, m))
                up = TiledUpscaler(create_backend("lanczos", s), TileSpec()).upscale_array(lr)
                rows.append(("good", "lanczos (same small inputs)", s, consistency_metrics(up, lr, lpips=False)))
                for dname, d in defects(out, s).items():
                    if "tile" in dname:
                        rows.append(("defect", f"x4plus + {dname}", s, consistency_metrics(d, lr, lpips=False)))
                print(f"x4plus {w}x{h} s{seed} {m['seconds']:.0f} s", flush=True)

    lines = ["# Post-SR consistency on generated photos", "",
             "SR output downsampled with INTER_AREA to the input size vs the input; `*_block_min` = worst "
             "block of 384/scale input px (one output tile); `drop` = median block minus worst block. LPIPS: not available offline (no backbone weights).", "",
             "| case | kind | scale | n | PSNR min / mean | SSIM min / mean | block PSNR min | block SSIM min | "
             "block PSNR drop max | block SSIM drop max | passes defaults |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for kind, name, s, m in rows:
        groups.setdefault((kind, name, s), []).append(m)
    for (kind, name, s), ms in groups.items():
        v = {k: np.array([m[k] for m in ms], float) for k in KEYS}
        npass = sum(decide(m)["passed"] for m in ms)
        lines.append(f"| {name} | {kind} | {s}x | {len(ms)} | {v['psnr'].min():.2f} / {v['psnr'].mean():.2f} | "
                     f"{v['ssim'].min():.4f} / {v['ssim'].mean():.4f} | {v['psnr_block_min'].min():.2f} | "
                     f"{v['ssim_block_min'].min():.4f} | {v['psnr_block_drop'].max():.2f} | "
                     f"{v['ssim_block_drop'].max():.4f} | {npass}/{len(ms)} |")
    lines += ["", f"Defaults (`DEFAULT_THRESHOLDS`): `{DEFAULT_THRESHOLDS}`", ""]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "out" / "consistency.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
