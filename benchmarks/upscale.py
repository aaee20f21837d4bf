"""Tiled 2x Lanczos 25 MP -> 100 MP vs OpenCV's one-shot resize; final-filter costs at 100 MP.

1. **Upscale** (each run in a fresh spawned child; peak RSS = the child's ``ru_maxrss``):

   * compute only: input array loaded from ``.npy``; one-shot ``cv2.resize(INTER_LANCZOS4)``
     vs the tile engine (``TileSpec()`` defaults: 384 stride, 32 overlap, pad 4) with its rows
     consumed and dropped;
   * file to file: input a tiled zstd TIFF; one-shot = ``tifffile.imread`` + resize +
     ``tifffile.imwrite`` (same tiled zstd format) vs the engine streaming from
     :class:`~curation.upscale.storage.TiffRegionSource` into the streaming TIFF writer.

   Targets: wall-time ratio tiled / one-shot <= 3, tiled peak RSS < 1 GB (one-shot needs
   more), PSNR(tiled, one-shot) >= 40 dB (computed strip-wise on the two files). Peak RSS is
   the child's ``VmHWM``; ``baseline_rss_mb`` is its value after the imports.
2. **Final filters at 100 MP** (the 2x output above, in memory): seam check
   (:func:`curation.final_filters.seams.seam_check`) and region sampling + the 10 crops
   (:func:`curation.final_filters.regions.sample_regions` / ``crop_regions``) vs
   ``cv2.imdecode`` of the same image as PNG (OpenCV default). Target: each <= 0.1x.

    .venv/bin/python benchmarks/upscale.py [--mp 25] [--repeat 2] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._measure import peak_rss_mb  # noqa: E402


def _child(task: str, inp: str, out: str, workers: int, q) -> None:
    import tifffile

    from curation.upscale.backends import create_backend
    from curation.upscale.storage import TiffRegionSource, write_array  # noqa: F401  (import cost outside timing)
    from curation.upscale.tiles import TiledUpscaler, TileSpec

    base = peak_rss_mb()
    res: dict = {}
    if task in ("oneshot", "tiled"):
        img = np.load(inp)
        t0 = time.perf_counter()
        if task == "oneshot":
            o = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2), interpolation=cv2.INTER_LANCZOS4)
            res["shape"] = list(o.shape)
            del o
        else:
            n = 0
            for _, rows in TiledUpscaler(create_backend("lanczos", 2), TileSpec(), workers).iter_rows(img):
                n += rows.shape[0]
            res["rows"] = n
        res["seconds"] = time.perf_counter() - t0
    elif task == "oneshot_file":
        t0 = time.perf_counter()
        img = tifffile.imread(inp, maxworkers=2)
        o = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2), interpolation=cv2.INTER_LANCZOS4)
        write_array(out, o)  # same writer/format as the tiled run, whole array in memory
        res["seconds"] = time.perf_counter() - t0
    elif task == "tiled_file":
        t0 = time.perf_counter()
        with TiffRegionSource(inp) as src:
            TiledUpscaler(create_backend("lanczos", 2), TileSpec(), workers).upscale_file(src, out)
        res["seconds"] = time.perf_counter() - t0
    res["peak_rss_mb"] = peak_rss_mb()
    res["baseline_rss_mb"] = base
    q.put(res)


def in_child(task: str, inp: str, out: str = "", workers: int = 1) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(task, inp, out, workers, q))
    p.start()
    res = q.get()
    p.join()
    return res


def best_child(task: str, inp: str, out: str, workers: int, repeat: int) -> dict:
    runs = [in_child(task, inp, out, workers) for _ in range(repeat)]
    return min(runs, key=lambda r: r["seconds"]) | {"peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def psnr_files(a: str, b: str, band: int = 1024) -> float:
    from curation.upscale.storage import TiffRegionSource

    se, n = 0.0, 0
    with TiffRegionSource(a) as sa, TiffRegionSource(b) as sb:
        for y in range(0, sa.height, band):
            x = sa.read(y, y + band).astype(np.int32) - sb.read(y, y + band)
            se += float(np.einsum("ijk,ijk->", x, x, dtype=np.float64))
            n += x.size
    mse = se / n
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def best(fn, repeat: int) -> tuple[float, object]:
    out, ts = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mp", type=float, default=25.0, help="input megapixels (output = 4x)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="engine tile threads")
    args = ap.parse_args()

    from curation.final_filters.regions import crop_regions, sample_regions
    from curation.final_filters.seams import seam_check
    from curation.synth import generate_photo
    from curation.upscale.storage import write_array

    w = int(round((args.mp * 1e6 * 4 / 3) ** 0.5))
    h = int(round(args.mp * 1e6 / w))
    img = generate_photo(w, h, seed=0)
    report: dict = {"input": [w, h], "output": [2 * w, 2 * h], "workers": args.workers}
    with tempfile.TemporaryDirectory() as td:
        npy, tif = f"{td}/in.npy", f"{td}/in.tif"
        np.save(npy, img)
        write_array(tif, img)
        del img
        one = best_child("oneshot", npy, "", args.workers, args.repeat)
        til = best_child("tiled", npy, "", args.workers, args.repeat)
        onef = best_child("oneshot_file", tif, f"{td}/one.tif", args.workers, 1)
        tilf = best_child("tiled_file", tif, f"{td}/tiled.tif", args.workers, 1)
        report["compute"] = {"oneshot": one, "tiled": til, "time_ratio": til["seconds"] / one["seconds"]}
        report["file_to_file"] = {"oneshot": onef, "tiled": tilf, "time_ratio": tilf["seconds"] / onef["seconds"]}
        report["psnr_tiled_vs_oneshot_db"] = psnr_files(f"{td}/tiled.tif", f"{td}/one.tif")

        # final filters on the 100 MP output
        import tifffile

        big = tifffile.imread(f"{td}/tiled.tif", maxworkers=2)
        ok, png = cv2.imencode(".png", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
        assert ok
        t_dec, _ = best(lambda: cv2.imdecode(png, cv2.IMREAD_UNCHANGED), args.repeat)
        del png
        t_seam, r = best(lambda: seam_check(big), args.repeat)
        t_reg, boxes = best(lambda: crop_regions(big, sample_regions(big, "bench-image")), args.repeat)
        report["filters_100mp"] = {
            "png_decode_s": t_dec, "seam_check_s": t_seam, "seam_ratio_to_decode": t_seam / t_dec,
            "seams": r.seams, "seam_max_ratio": r.max_ratio, "seam_flagged": r.flagged,
            "regions_s": t_reg, "regions_ratio_to_decode": t_reg / t_dec,
        }
    c, f, fl = report["compute"], report["file_to_file"], report["filters_100mp"]
    print(json.dumps(report, indent=1, default=float))
    print()
    print(f"| 25 -> 100 MP 2x lanczos | one-shot | tiled (stream) | ratio | target |")
    print(f"|---|---|---|---|---|")
    print(f"| compute time (s) | {c['oneshot']['seconds']:.2f} | {c['tiled']['seconds']:.2f} | "
          f"{c['time_ratio']:.2f}x | <= 3x |")
    print(f"| compute peak RSS (MB) | {c['oneshot']['peak_rss_mb']:.0f} | {c['tiled']['peak_rss_mb']:.0f} | | "
          f"tiled < 1024 |")
    print(f"| file->file time (s) | {f['oneshot']['seconds']:.2f} | {f['tiled']['seconds']:.2f} | "
          f"{f['time_ratio']:.2f}x | |")
    print(f"| file->file peak RSS (MB) | {f['oneshot']['peak_rss_mb']:.0f} | {f['tiled']['peak_rss_mb']:.0f} | | "
          f"tiled < 1024 |")
    print(f"| PSNR tiled vs one-shot | | {report['psnr_tiled_vs_oneshot_db']:.1f} dB | | >= 40 dB |")
    print()
    print(f"| 100 MP | seconds | ratio to PNG decode ({fl['png_decode_s']:.2f} s) | target |")
    print(f"|---|---|---|---|")
    print(f"| seam check ({fl['seams']} seams) | {fl['seam_check_s']:.3f} | {fl['seam_ratio_to_decode']:.3f} | <= 0.1 |")
    print(f"| region sampling + 10 crops | {fl['regions_s']:.3f} | {fl['regions_ratio_to_decode']:.3f} | <= 0.1 |")


if __name__ == "__main__":
    main()
