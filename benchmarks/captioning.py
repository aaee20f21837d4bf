"""Captions pipeline costs on a 100 MP tiled TIFF (same run, each step in a fresh child process).

Measures, on the project's generator image written as the corpus' tiled zstd TIFF:

* **crops vs full decode**: 16 instance crops of typical size (5 % padding, boxes from 256 to
  2048 px), 4 large ones (3000-6000 px, downscaled to a 2048 long edge while read) and the
  highlight thumbnail (1024 long edge), all through region reads, against ``read_image`` of
  the whole file; ratios;
* **RLE of a 100 MP mask**: the streamed encoder from a 256x256 low-resolution mask
  (``encode_lowres``) vs materialising the full mask and ``pycocotools.mask.encode``; full
  decode (``pycocotools.mask.decode``) and the sampled decode used for highlights;
* **pipeline overhead**: ``caption_image`` with instant stand-in backends (fixed tags, 16
  boxes of 256-4096 px, elliptic 64x64 masks, canned VLM answers): the pipeline's own cost
  (views, RLE, NMS, crops, highlights, parsing) and peak memory, set against the decode of the
  image; and with the offline heuristic backends, seconds per step (``model.*`` steps are the
  backends / VLM calls, the rest is overhead).

Peak memory is each child's ``VmHWM`` (peak RSS), with the baseline after its imports.

    .venv/bin/python benchmarks/captioning.py [--mp 100] [--out benchmarks/out/captioning.json]
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._measure import peak_rss_mb, rss_mb  # noqa: E402


def _boxes(w: int, h: int, n: int = 16, lo: int = 256, hi: int = 2048, seed: int = 0) -> list[tuple[int, int, int, int]]:
    """``n`` instance boxes with sides from ``lo`` to ``hi`` px (geometric), aspect 0.6-1.4."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        side = int(lo * (hi / lo) ** (i / max(1, n - 1)))
        bw, bh = side, int(side * rng.uniform(0.6, 1.4))
        x0, y0 = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
        out.append((x0, y0, min(w, x0 + bw), min(h, y0 + bh)))
    return out


def _low_mask(seed: int = 0) -> np.ndarray:
    """A 256x256 blob-like probability mask covering ~40 % of the frame."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((256, 256)).astype(np.float32), (0, 0), 12)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return (noise > np.quantile(noise, 0.6)).astype(np.float32) * 0.9 + 0.05


def _child(task: str, path: str, q) -> None:
    try:
        q.put(_task(task, path))
    except BaseException as e:  # report, never hang the parent
        q.put({"error": f"{type(e).__name__}: {e}"})


def _task(task: str, path: str) -> dict:
    from curation.captioning import geometry as G
    from curation.captioning import rle as R
    from curation.upscale.storage import open_source, read_image

    import cv2  # noqa: F401  (imports outside the timed part)
    import pycocotools.mask  # noqa: F401
    import tifffile  # noqa: F401

    base = rss_mb()
    out: dict = {}
    t0 = time.perf_counter()
    if task == "full_decode":
        a = read_image(path)
        out["shape"] = list(a.shape)
    elif task in ("crops_typical", "crops_large"):
        n, lo, hi = (16, 256, 2048) if task == "crops_typical" else (4, 3000, 6000)
        with open_source(path) as src:
            boxes = _boxes(src.width, src.height, n, lo, hi)
            px = 0
            for b in boxes:
                crop, cb = G.read_crop(src, b, 0.05, 2048)
                px += (cb[2] - cb[0]) * (cb[3] - cb[1])
            out["n_crops"] = n
            out["crop_megapixels_read"] = round(px / 1e6, 1)
            out["decoded_tiles"] = src.decoded_segments
            out["tiles_in_file"] = len(src.page.dataoffsets)
    elif task == "highlight_thumb":
        with open_source(path) as src:
            thumb = G.downscaled_read(src, 1024)
            out["shape"] = list(thumb.shape)
    elif task.startswith("rle_"):
        with open_source(path) as src:
            W, H = src.width, src.height
        low = _low_mask()
        frame = (0.0, 0.0, float(W), float(H))
        if task == "rle_stream_encode":
            r = R.encode_lowres(low, frame, H, W)
            out["area_fraction"] = R.area(r) / (W * H)
            out["counts_chars"] = len(r["counts"])
        elif task == "rle_full_encode":  # the straightforward way: full mask, then pycocotools
            import cv2

            full = cv2.resize(low, (W, H), interpolation=cv2.INTER_LINEAR) >= 0.5
            r = R.encode(full)
            out["area_fraction"] = R.area(r) / (W * H)
        else:
            r = R.encode_lowres(low, frame, H, W)
            r2 = R.encode_lowres(low[::-1].copy(), frame, H, W)
            base = rss_mb()
            t0 = time.perf_counter()
            if task == "rle_decode_full":
                m = R.decode(r)
                out["fg"] = int(m.sum())
            elif task == "rle_decode_resized":
                m = R.decode_resized(r, 768, 1024)
                out["fg"] = int(m.sum())
            elif task == "rle_area_bbox_iou":
                out["area"], out["bbox"] = R.area(r), R.bbox(r)
                out["iou"] = float(R.iou_matrix([r, r2])[0, 1])
    elif task == "pipeline_no_models":
        from curation.captioning import caption_image

        tim = {}
        with _ConstVLM() as c:
            t0 = time.perf_counter()
            rec = caption_image(path, "bench", tagger=_FixedTagger(), grounder=_FixedGrounder(),
                                segmenter=_FixedSegmenter(), llm=c, vlm=c, timings=tim)
        out["timings_s"] = {k: round(v, 4) for k, v in tim.items()}
        out["n_instances"] = len(rec.instances)
        out["complete"] = rec.complete
    elif task == "pipeline":
        from curation.captioning import GROUNDERS, SEGMENTERS, TAGGERS, caption_image
        from curation.vlm import create_vlm_client

        tim: dict = {}
        with create_vlm_client({}) as c:
            rec = caption_image(path, "bench", tagger=TAGGERS.create("heuristic"), grounder=GROUNDERS.create("heuristic"),
                                segmenter=SEGMENTERS.create("heuristic"), llm=c, vlm=c, timings=tim)
        out["timings_s"] = {k: round(v, 4) for k, v in tim.items()}
        out["overhead_s"] = round(sum(v for k, v in tim.items() if not k.startswith("model.")), 4)
        out["model_s"] = round(sum(v for k, v in tim.items() if k.startswith("model.")), 4)
        out["n_instances"] = len(rec.instances)
        out["complete"] = rec.complete
    else:
        raise ValueError(task)
    out["seconds"] = round(time.perf_counter() - t0, 4)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["baseline_rss_mb"] = round(base, 1)
    return out


class _FixedTagger:
    """Instant stand-ins: what the pipeline costs around the models."""

    def tag(self, view):
        from curation.captioning import Tag

        return [Tag(f"object {i}", 0.9, "fixed") for i in range(8)]

    def describe(self):
        return {"backend": "fixed", "model": "none"}


class _FixedGrounder:
    def ground(self, view, tags):
        from curation.captioning import Detection

        h, w = view.shape[:2]
        s = w / 11547
        return [Detection(tags[i % len(tags)], tuple(v * s for v in b), 0.9 - 0.01 * i, "fixed")
                for i, b in enumerate(_boxes(11547, int(h / s), 16, 256, 4096))]

    def describe(self):
        return {"backend": "fixed", "model": "none"}


class _FixedSegmenter:
    def segment(self, view, boxes):
        from curation.captioning import MaskResult

        yy, xx = np.mgrid[0:64, 0:64]
        ell = (((xx - 31.5) / 32) ** 2 + ((yy - 31.5) / 32) ** 2 <= 1).astype(np.float32)
        return [MaskResult(ell, tuple(b), 0.9, "fixed") for b in boxes]

    def describe(self):
        return {"backend": "fixed", "model": "none"}


_CANNED = {
    "caption_tag_pruning": None,  # echo the candidates
    "caption_instance_description": {"description": "A fixed description of the instance.", "importance": 5},
    "caption_aesthetics_analysis": {"composition_design": "c", "visual_elements_structure": "v",
                                    "technical_execution": "t", "originality_creativity": "o",
                                    "theme_communication": "t", "emotion_viewer_response": "e", "overall": 50},
    "caption_long": {"long_caption": " ".join(["word"] * 200)},
    "caption_short": {"short_caption": "a short fixed caption of the image"},
    "instance_artifact": {"artifact": False, "severity": 0, "reason": "clean"},
}


def _const_client():
    from curation.vlm.client import _Outcome
    from curation.vlm.heuristic import HeuristicVLMClient

    class ConstVLM(HeuristicVLMClient):
        """Answers instantly without looking at the images (images are still encoded-free)."""

        def _attempt(self, p):
            a = _CANNED[p.spec.name] or {"tangible_tags": list(p.req.variables["tags"])}
            return _Outcome("answer", text=json.dumps(a))

    return ConstVLM()


def _ConstVLM():  # noqa: N802
    return _const_client()


def in_child(task: str, path: str) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(task, path, q))
    p.start()
    out = q.get()
    p.join()
    return out


def make_tiff(path: Path, megapixels: float, seed: int = 0) -> tuple[int, int]:
    from curation.synth import generate_photo
    from curation.upscale.storage import write_array

    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(megapixels * 1e6 / w))
    img = generate_photo(w, h, seed=seed)
    write_array(path, img)
    return w, h


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mp", type=float, default=100.0)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--tiff", default=None, help="reuse this tiled TIFF instead of generating one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(args.tiff) if args.tiff else Path(d) / "bench.tif"
        t0 = time.perf_counter()
        if not args.tiff:
            w, h = make_tiff(path, args.mp)
        res: dict = {"image": {"path": str(path) if args.tiff else "generated", "bytes": os.path.getsize(path),
                               "make_s": round(time.perf_counter() - t0, 1)}}
        for task in ("full_decode", "crops_typical", "crops_large", "highlight_thumb", "rle_stream_encode", "rle_full_encode",
                     "rle_decode_full", "rle_decode_resized", "rle_area_bbox_iou", "pipeline_no_models", "pipeline"):
            res[task] = in_child(task, str(path))
            print(task, json.dumps(res[task]), flush=True)
        dec = res["full_decode"]["seconds"]
        res["ratios"] = {
            "crops_typical_over_full_decode": round(res["crops_typical"]["seconds"] / dec, 4),
            "crops_large_over_full_decode": round(res["crops_large"]["seconds"] / dec, 4),
            "highlight_thumb_over_full_decode": round(res["highlight_thumb"]["seconds"] / dec, 4),
            "rle_stream_over_full_encode": round(res["rle_stream_encode"]["seconds"] / res["rle_full_encode"]["seconds"], 4),
            "pipeline_overhead_over_full_decode": round(res["pipeline"]["overhead_s"] / dec, 4),
            "pipeline_no_models_over_full_decode": round(res["pipeline_no_models"]["seconds"] / dec, 4),
        }
        print("ratios", json.dumps(res["ratios"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
