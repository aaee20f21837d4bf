"""Purification scores on a 100 MP image vs OpenCV's decode of the same file (same run).

Prints, for the project's generator image saved as PNG (OpenCV default level) and as JPEG
(quality 95): decode time, score time (all purification scores in one pass per band of rows,
from the grey image; and from the decoded RGB, grey conversion included, as a worker runs it),
their ratio to the decode (target <= 0.3x the PNG decode, issue 16), the straightforward
whole-image implementation for reference, and peak RSS of each step measured in a fresh child
process (target < 1 GB per worker). Also checks that the score cost grows linearly with pixels
(25 MP vs 100 MP). The worker's own decode (:func:`curation.imageio.decode_rgb`, strip-wise into
RGB) is timed too, with the ratio of the RGB scores to it.

With ``--cleanvision PYTHON`` (an interpreter that has ``cleanvision`` installed, kept out of the
project's lock) it also runs the peer comparison: both files (the PNG and the JPEG), decode
included, each tool in a fresh process: uhr's ``score_one`` (decode + every purification score,
no thumbnail, one process) vs cleanvision's ``Imagelab.find_issues`` with its dark / light /
blurry / low_information checks (its default worker pool); wall time without imports and the
peak RSS of the whole process tree, sampled (targets: >= 5x faster, <= 1/8 of its memory).

    .venv/bin/python benchmarks/filters.py [--mp 100] [--repeat 3] [--cleanvision /path/to/python]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
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


_CLEANVISION = r"""
import json, sys, time
from cleanvision import Imagelab
t0 = time.perf_counter()
lab = Imagelab(filepaths=sys.argv[1:])
lab.find_issues({"dark": {}, "light": {}, "blurry": {}, "low_information": {}})
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

_UHR = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from curation.config import load_config
from curation.purify import score_one
cfg = load_config("paper")
t0 = time.perf_counter()
for i, p in enumerate(sys.argv[2:]):
    out = score_one(p, f"img{i}", cfg["purification"], int(cfg.get("io.max_pixels")))
    assert not out.get("reject_reason"), out
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def tree_run(cmd: list[str], interval: float = 0.02) -> dict:
    """Run ``cmd``; its printed ``seconds`` (imports not timed) and the peak RSS of its whole
    process tree (it and every child it starts, e.g. a multiprocessing pool), sampled every
    ``interval`` s (``tree_peak_rss_mb``), plus the largest single-process ``VmHWM`` seen."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    tree_peak = one_peak = 0.0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        total = 0.0
        for p in procs:
            try:
                total += p.memory_info().rss / 2**20
                with open(f"/proc/{p.pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            one_peak = max(one_peak, int(line.split()[1]) / 1024.0)
            except (psutil.NoSuchProcess, OSError):
                pass
        tree_peak = max(tree_peak, total)
        time.sleep(interval)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err[-2000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(tree_peak_rss_mb=tree_peak, max_process_peak_rss_mb=one_peak)
    return res


def make_image(megapixels: float, seed: int = 0) -> np.ndarray:
    from curation.synth import generate_photo

    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(megapixels * 1e6 / w))
    return generate_photo(w, h, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mp", type=float, default=100.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cleanvision", default=os.environ.get("UHR_CLEANVISION_PYTHON"),
                    help="a Python interpreter with cleanvision installed: also run the peer comparison")
    ap.add_argument("--skip-reference", action="store_true", help="skip the whole-image reference (slow)")
    args = ap.parse_args()
    from curation.imageio import decode_rgb, to_grey
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
    load0 = os.getloadavg()
    score_s = best(lambda: purification_scores(grey), args.repeat)
    score_rgb_s = best(lambda: purification_scores(rgb), args.repeat)  # band-wise grey included
    small = np.ascontiguousarray(grey[: grey.shape[0] // 2, : grey.shape[1] // 2])
    score_quarter_s = best(lambda: purification_scores(small), args.repeat)
    del rgb
    results = {"megapixels": grey.size / 1e6, "score_seconds": score_s, "score_from_rgb_seconds": score_rgb_s,
               "linearity_100_over_25": score_s / score_quarter_s / 4.0}
    for fmt, path in files.items():
        buf = np.fromfile(path, np.uint8)
        dec = best(lambda: cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), args.repeat)
        del buf
        dec_rgb = best(lambda: decode_rgb(str(path), 10**9), args.repeat)  # the worker's own decode
        results[fmt] = {
            "file_mb": path.stat().st_size / 1e6,
            "decode_seconds": dec,
            "decode_rgb_seconds": dec_rgb,
            "score_over_decode": score_s / dec,
            "score_from_rgb_over_decode": score_rgb_s / dec,
            "score_from_rgb_over_decode_rgb": score_rgb_s / dec_rgb,
            "worker_peak_rss_mb": in_child("pipeline", str(path))["peak_rss_mb"],
            "decode_only_peak_rss_mb": in_child("decode", str(path))["peak_rss_mb"],
        }
    if not args.skip_reference:
        results["reference_whole_image"] = in_child("pipeline_reference", str(files["jpeg"]))
    if args.cleanvision:
        both = [str(files["png"]), str(files["jpeg"])]
        uhr = tree_run([sys.executable, "-c", _UHR, str(Path(__file__).resolve().parent.parent), *both])
        cv = tree_run([args.cleanvision, "-c", _CLEANVISION, *both])
        results["vs_cleanvision"] = {"uhr": uhr, "cleanvision": cv,
                                     "speedup": cv["seconds"] / uhr["seconds"],
                                     "memory_ratio": uhr["tree_peak_rss_mb"] / cv["tree_peak_rss_mb"]}
    results["loadavg_before"], results["loadavg_after"], results["cpus"] = load0, os.getloadavg(), os.cpu_count()
    print(json.dumps(results, indent=2))
    png = results["png"]
    print(f"\nscores / PNG decode = {png['score_over_decode']:.2f}x (target <= 0.3x), "
          f"{png['score_from_rgb_over_decode']:.2f}x from the RGB (grey included); "
          f"scores / JPEG decode = {results['jpeg']['score_over_decode']:.2f}x; "
          f"from the RGB / the worker's decode_rgb: PNG {png['score_from_rgb_over_decode_rgb']:.2f}x, "
          f"JPEG {results['jpeg']['score_from_rgb_over_decode_rgb']:.2f}x; "
          f"worker peak RSS = {max(png['worker_peak_rss_mb'], results['jpeg']['worker_peak_rss_mb']):.0f} MB (target < 1024); "
          f"cost(100 MP)/cost(25 MP)/4 = {results['linearity_100_over_25']:.2f} (1.0 = linear); "
          f"load average {load0[0]:.1f} -> {results['loadavg_after'][0]:.1f}")
    if "vs_cleanvision" in results:
        v = results["vs_cleanvision"]
        print(f"vs cleanvision (2 files, decode included): uhr {v['uhr']['seconds']:.1f} s / "
              f"{v['uhr']['tree_peak_rss_mb']:.0f} MB, cleanvision {v['cleanvision']['seconds']:.1f} s / "
              f"{v['cleanvision']['tree_peak_rss_mb']:.0f} MB (process tree) -> {v['speedup']:.1f}x faster (target >= 5), "
              f"1/{1 / v['memory_ratio']:.1f} of its memory (target <= 1/8)")
    for p in files.values():
        p.unlink()
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
