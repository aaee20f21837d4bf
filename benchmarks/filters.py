"""Purification scores on a 100 MP image vs OpenCV's decode of the same file (same run).

Prints, for the project's generator image saved as PNG (OpenCV default level) and as JPEG
(quality 95): decode time, score time (all purification scores, strip-wise), their ratio
(target <= 0.5x PNG decode), the straightforward whole-image implementation for reference,
and peak RSS of each step measured in a fresh child process (target < 1 GB per worker).
Also checks that the score cost grows linearly with pixels (25 MP vs 100 MP).

    .venv/bin/python benchmarks/filters.py [--mp 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._measure import best, peak_rss_mb  # noqa: E402


def _child(task: str, path: str, q) -> None:
    from curation.imageio import decode_rgb, to_grey
    from curation.scores import purification_scores, reference_scores

    t0 = time.perf_counter()
    if task == "decode":
        img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img is not None
    elif task == "pipeline":  # what a worker does: decode + grey + strip-wise scores
        grey = to_grey(decode_rgb(path, 10**9))
        purification_scores(grey)
    elif task == "pipeline_reference":
        grey = to_grey(decode_rgb(path, 10**9))
        reference_scores(grey)
    q.put({"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()})


def in_child(task: str, path: str) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(task, path, q))
    p.start()
    out = q.get()
    p.join()
    return out


def make_image(megapixels: float, seed: int = 0) -> np.ndarray:
    from curation.synth import generate_photo

    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(megapixels * 1e6 / w))
    return generate_photo(w, h, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mp", type=float, default=100.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from curation.imageio import to_grey
    from curation.scores import purification_scores

    cv2.setNumThreads(1)
    tmp = Path(tempfile.mkdtemp(prefix="uhr-bench-"))
    print(f"generating a {args.mp:.0f} MP image with curation.synth ...", flush=True)
    rgb = make_image(args.mp)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    files = {"png": tmp / "img.png", "jpeg": tmp / "img.jpg"}
    cv2.imwrite(str(files["png"]), bgr)
    cv2.imwrite(str(files["jpeg"]), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    grey = to_grey(rgb)
    del bgr
    score_s = best(lambda: purification_scores(grey), args.repeat)
    small = np.ascontiguousarray(grey[: grey.shape[0] // 2, : grey.shape[1] // 2])
    score_quarter_s = best(lambda: purification_scores(small), args.repeat)
    results = {"megapixels": grey.size / 1e6, "score_seconds": score_s,
               "linearity_100_over_25": score_s / score_quarter_s / 4.0}
    for fmt, path in files.items():
        buf = np.fromfile(path, np.uint8)
        dec = best(lambda: cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), args.repeat)
        results[fmt] = {
            "file_mb": path.stat().st_size / 1e6,
            "decode_seconds": dec,
            "score_over_decode": score_s / dec,
            "worker_peak_rss_mb": in_child("pipeline", str(path))["peak_rss_mb"],
            "decode_only_peak_rss_mb": in_child("decode", str(path))["peak_rss_mb"],
        }
    ref = in_child("pipeline_reference", str(files["jpeg"]))
    results["reference_whole_image"] = ref
    print(json.dumps(results, indent=2))
    png = results["png"]
    print(f"\nscores / PNG decode = {png['score_over_decode']:.2f}x (target <= 0.5x); "
          f"scores / JPEG decode = {results['jpeg']['score_over_decode']:.2f}x; "
          f"worker peak RSS = {max(png['worker_peak_rss_mb'], results['jpeg']['worker_peak_rss_mb']):.0f} MB (target < 1024); "
          f"cost(100 MP)/cost(25 MP)/4 = {results['linearity_100_over_25']:.2f} (1.0 = linear)")
    for p in files.values():
        p.unlink()
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
