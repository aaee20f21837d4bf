"""Captions pipeline costs on a 100 MP tiled TIFF (issue 17, performance).

The image is the project's generator photo (:func:`curation.synth.generate_photo`, 4:3,
11547 x 8660 at ``--mp 100``) written as the corpus writes it (:func:`write_array`: tiled
zstd-3 TIFF with its reduced-resolution levels -- a 1/4, 1/8, ... pyramid and a 2048-px
overview) and, for comparison, the same pixels without levels (``pyramid=False``: corpus files
written before the levels existed) and with an extra 1/2 level (``pyramid_first=2``, an option:
its bytes are reported). Every image sent to the VLM is at most ``captions.vlm_max_pixels``
(the VLM's image processor budget) and read from the coarsest stored level that still has that
resolution. Measured:

* **per-image overhead** (one process, ``--repeat`` rounds, best of each; the ratios are
  against a full decode (:func:`full_decode`) of the same file timed in the same process and round):
  the captions stage's own work on one image with zero-cost model stand-ins (fixed tags, 16
  boxes of 256-4096 px, elliptic 64x64 masks, canned VLM answers that never look at the
  images) -- ``caption_row`` (views, RLE, selection, crops, highlights, request building,
  answer parsing, record, instance decision, row) plus the row's cache JSON and its manifest
  table -- minus the stand-ins' own time (``model.*`` steps); split into the source hash (the
  stage checks the corpus file's bytes against its id, ``source_hash``: a stat and a stamp
  read while the stamp the corpus wrote holds, a full re-hash otherwise), the decode of instance crops
  (pixels the VLM must get) and the fixed rest; also as CPU seconds over the decode's CPU
  seconds (less sensitive to other jobs on shared cores); on the corpus file, on the file
  without levels and on the one with a 1/2 level. The reference is :func:`full_decode`
  (``read_image``, with the reader contract's checks, is reported beside it). With the offline
  heuristic backends
  and VLM (which do look at the images) once more: overhead (all but ``model.*``) and model
  seconds.
* **crops vs full decode**: 16 instance crops of typical size (5 % padding, boxes from 256 to
  2048 px), 4 large ones (3000-6000 px), each downscaled to the VLM budget while read, and the
  highlight thumbnail (1024 long edge), each in a fresh child (its codec and decode threads
  started on one corner tile first), against a full decode in another child, on
  the corpus file and on the one with a 1/2 level; with the pixels decoded (tiles touched x
  tile size, per level) and the pixels the VLM gets, both over the image's pixels: the floor
  of a crop read is the VLM's pixels, decoded at the cost per pixel of a full decode;
* **RLE of a 100 MP mask**: the encoder from a 256x256 low-resolution mask (``encode_lowres``)
  vs materialising the full mask and ``pycocotools.mask.encode``; full decode
  (``pycocotools.mask.decode``) and the sampled decode used for highlights;
* **peak RSS** of a captions worker: the stage's work on one image in a fresh child
  (``VmHWM``, with its baseline after the imports), with the stand-ins and with the heuristic
  backends; the file write (with / without levels): seconds and bytes.

Times are wall clock on shared cores: the load average is recorded with them.

    .venv/bin/python benchmarks/captioning.py [--mp 100] [--repeat 3] [--out benchmarks/out/captioning.json]
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


def full_decode(path) -> np.ndarray:
    """The reference: the whole image's pixels decoded (tifffile, its tiles over
    ``WRITE_WORKERS`` threads: the fastest full decode of the corpus file we have; ``read_image``
    adds the reader contract's checks on top)."""
    import tifffile

    from curation.upscale.storage import WRITE_WORKERS

    return tifffile.imread(path, maxworkers=WRITE_WORKERS)


def _child(task: str, path: str, opts: dict, q) -> None:
    try:
        q.put(_task(task, path, opts))
    except BaseException as e:  # report, never hang the parent
        import traceback

        q.put({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]})


class _Layout:
    """What ``caption_row`` asks of a DataLayout: the path of a corpus file, and a data root
    (its ``index/hash_stamps``, which the corpus stage fills when it writes a blob)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def resolve(self, p):
        return Path(p)


def _stage_once(path: str, cache_dir: Path, heuristic: bool = False) -> tuple[float, dict, dict, float]:
    """The captions stage's work on one image, as ``run_captions`` does it per image: the row
    (``caption_row``: the source hash, pipeline, record, instance decision), its cache JSON and
    its manifest table. Returns (wall seconds, step timings, row, CPU seconds of the process)."""
    from curation.atomic import write_json
    from curation.captioning.stage import CountingClient, caption_row
    from curation.config import load_config
    from curation.manifest import CAPTIONS, to_table

    from curation.imageio import write_hash_stamp

    cfg = load_config()
    sha = _sha256(path)
    layout = _Layout(cache_dir)
    write_hash_stamp(path, sha, layout.root / "index" / "hash_stamps")  # as the corpus stage does after writing
    if heuristic:
        from curation.captioning import GROUNDERS, SEGMENTERS, TAGGERS
        from curation.vlm import create_vlm_client

        backends = {"tagger": TAGGERS.create("heuristic"), "grounder": GROUNDERS.create("heuristic"),
                    "segmenter": SEGMENTERS.create("heuristic")}
        client = create_vlm_client({})
    else:
        backends = {"tagger": _FixedTagger(), "grounder": _FixedGrounder(), "segmenter": _FixedSegmenter()}
        client = _const_client()
    tim: dict = {}
    with client:
        clients = {k: CountingClient(client, k) for k in ("llm", "vlm", "judge")}
        t0, c0 = time.perf_counter(), time.process_time()
        row = caption_row(layout, {"image_id": "bench", "shard": "bench", "output_path": str(path), "parent_id": None,
                                      "sha256": sha}, cfg, backends, clients, "bench", tim)
        with _timed(tim, "stage_io"):
            write_json(cache_dir / "bench-cache.json", row)
            to_table([row], CAPTIONS)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if row.get("reject_detail") and not row.get("caption_complete"):
        raise RuntimeError(f"captions failed: {row['reject_detail']}")
    return wall, tim, row, cpu


_SHA: dict = {}


def _sha256(path) -> str:
    """The file's sha256 as the corpus manifest records it (computed once, outside the timing)."""
    if str(path) not in _SHA:
        import hashlib

        with open(path, "rb") as fh:
            _SHA[str(path)] = hashlib.file_digest(fh, "sha256").hexdigest()
    return _SHA[str(path)]


def _timed(tim: dict, name: str):
    from curation.captioning.pipeline import _timed as t

    return t(tim, name)


def _split(wall: float, tim: dict, row: dict, cpu: float, width: int, height: int) -> dict:
    """Overhead of one stage run: wall time minus the model stand-ins' steps, by step; the
    source hash (the stage re-hashes the whole corpus file before reading it by regions) apart;
    ``cpu_s``: the CPU seconds of the run (all threads; the stand-ins' are negligible)."""
    model = sum(v for k, v in tim.items() if k.startswith("model."))
    over = wall - model
    steps = {k: round(v, 4) for k, v in sorted(tim.items()) if not k.startswith("model.")}
    steps["other"] = round(over - sum(v for k, v in tim.items() if not k.startswith("model.")), 4)
    rec = json.loads(row["record"]) if isinstance(row.get("record"), str) else (row.get("record") or {})
    crop_px = sum((c[2] - c[0]) * (c[3] - c[1]) for c in (i.get("crop_box") for i in rec.get("instances", [])) if c)
    src_hash = tim.get("source_hash", 0.0)
    return {"wall_s": round(wall, 4), "model_s": round(model, 4), "overhead_s": round(over, 4), "cpu_s": round(cpu, 4),
            "source_hash_s": round(src_hash, 4), "overhead_without_source_hash_s": round(over - src_hash, 4),
            "fixed_s": round(over - src_hash - tim.get("crops", 0.0), 4),
            "crops_s": round(tim.get("crops", 0.0), 4), "overhead_without_crops_s": round(over - tim.get("crops", 0.0), 4),
            "steps_s": steps, "n_instances": row.get("n_instances"),
            "crop_fraction_of_image": round(crop_px / (width * height), 4)}


def _overhead(path: str, opts: dict) -> dict:
    """Decode (reference) and the stage's per-image work, interleaved in this one process."""
    from curation.upscale.storage import open_source, read_image

    from benchmarks._measure import trim_memory

    with open_source(path) as src:
        W, H = src.width, src.height
    files = {"corpus": path, "no_levels": opts["flat"], "half_level": opts["half"]}
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        _stage_once(path, Path(d))                       # warm: imports, codecs, thread pools
        for _ in range(int(opts["repeat"])):
            t0, c0 = time.perf_counter(), time.process_time()
            a = full_decode(path)
            dec, dec_cpu = time.perf_counter() - t0, time.process_time() - c0
            del a
            trim_memory()
            t0 = time.perf_counter()
            a = read_image(path)
            dec_ri = time.perf_counter() - t0
            del a
            trim_memory()
            t0 = time.perf_counter()
            _SHA.pop(str(path), None)
            _sha256(path)
            sha_s = time.perf_counter() - t0
            r = {"decode_s": dec, "decode_cpu_s": dec_cpu, "read_image_s": dec_ri, "sha256_s": sha_s}
            for name, f in files.items():
                r[name] = _split(*_stage_once(f, Path(d)), W, H)
            rounds.append(r)
        heur = _split(*_stage_once(path, Path(d), heuristic=True), W, H)
    dec = min(r["decode_s"] for r in rounds)
    out: dict = {"decode_s_best": round(dec, 4), "decode_s_all": [round(r["decode_s"], 4) for r in rounds],
                 "read_image_s_best": round(min(r["read_image_s"] for r in rounds), 4),
                 "file_sha256_s_best": round(min(r["sha256_s"] for r in rounds), 4),
                 "decode_cpu_s_best": round(min(r["decode_cpu_s"] for r in rounds), 4)}
    dec_cpu = out["decode_cpu_s_best"]

    def best(name: str, key: str) -> float:
        return min(r[name][key] for r in rounds)

    for name in files:
        best_run = min((r[name] for r in rounds), key=lambda x: x["overhead_s"])
        out[name] = {**best_run,
                     "overhead_s_all": [r[name]["overhead_s"] for r in rounds],
                     "overhead_over_decode": round(best_run["overhead_s"] / dec, 4),
                     "overhead_without_source_hash_over_decode": round(best(name, "overhead_without_source_hash_s") / dec, 4),
                     "fixed_over_decode": round(best(name, "fixed_s") / dec, 4),
                     "source_hash_over_decode": round(best(name, "source_hash_s") / dec, 4),
                     "cpu_over_decode_cpu": round(best(name, "cpu_s") / dec_cpu, 4),
                     "overhead_without_crops_over_decode": round(min(r[name]["overhead_without_crops_s"]
                                                                     for r in rounds) / dec, 4),
                     "crops_over_decode": round(min(r[name]["crops_s"] for r in rounds) / dec, 4)}
    out["heuristic"] = {**heur, "overhead_over_decode": round(heur["overhead_s"] / dec, 4)}
    return out


def _task(task: str, path: str, opts: dict | None = None) -> dict:
    from curation.captioning import geometry as G
    from curation.captioning import rle as R
    from curation.upscale.storage import open_source, read_image

    import cv2  # noqa: F401  (imports outside the timed part)
    import pycocotools.mask  # noqa: F401
    import tifffile  # noqa: F401

    opts = opts or {}
    if task == "overhead":
        return _overhead(path, opts)
    if task.startswith(("crops_", "highlight_")):   # per process, not per image: codec and decode pool start
        with open_source(path) as src:
            for lv in [src] + list(getattr(src, "levels", list)()):
                lv.read(lv.height - 1, lv.height, lv.width - 1, lv.width)   # one corner tile of each
    base = rss_mb()
    out: dict = {}
    t0 = time.perf_counter()
    if task == "full_decode":
        a = full_decode(path)
        out["shape"] = list(a.shape)
    elif task == "read_image":
        a = read_image(path)
        out["shape"] = list(a.shape)
    elif task in ("crops_typical", "crops_large"):
        from curation.config import load_config

        n, lo, hi = (16, 256, 2048) if task == "crops_typical" else (4, 3000, 6000)
        budget = load_config()["captions"]["vlm_max_pixels"]
        with open_source(path) as src:
            boxes = _boxes(src.width, src.height, n, lo, hi)
            px = vlm_px = 0
            for b in boxes:
                crop, cb = G.read_crop(src, b, 0.05, 2048, 1024, budget)
                px += (cb[2] - cb[0]) * (cb[3] - cb[1])
                vlm_px += crop.shape[0] * crop.shape[1]
            n_px = src.width * src.height
            out["n_crops"] = n
            out["vlm_max_pixels"] = budget
            out["crop_megapixels_in_image"] = round(px / 1e6, 1)
            out["vlm_pixels_over_image"] = round(vlm_px / n_px, 4)   # the floor: pixels the VLM gets
            dec = {"1": src.decoded_segments * src.seg_h * src.seg_w}
            for lv in getattr(src, "levels", list)():
                if lv.decoded_segments:
                    dec[f"{lv.fx:g}"] = lv.decoded_segments * lv.seg_h * lv.seg_w
            out["decoded_pixels_over_image_by_reduction"] = {k: round(v / n_px, 4) for k, v in dec.items()}
            out["decoded_pixels_over_image"] = round(sum(dec.values()) / n_px, 4)
            out["decoded_tiles"] = src.decoded_segments
            out["tiles_in_file"] = len(src.page.dataoffsets)
    elif task == "highlight_thumb":
        with open_source(path) as src:
            thumb = G.downscaled_read(src, 1024)
            out["shape"] = list(thumb.shape)
            out["read_from"] = [[lv.width, lv.height] for lv in getattr(src, "levels", list)() if lv.decoded_segments] or "full image"
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
    elif task in ("worker", "worker_heuristic"):   # peak RSS of the stage's work on one image
        with tempfile.TemporaryDirectory() as d:
            _stage_once(path, Path(d), heuristic=task == "worker_heuristic")
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


def in_child(task: str, path: str, opts: dict | None = None) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(task, path, opts or {}, q))
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
    ap.add_argument("--repeat", type=int, default=3, help="rounds of decode + stage work in the overhead process")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    from curation.upscale.storage import write_array

    with tempfile.TemporaryDirectory() as d:
        path, flat, half = Path(d) / "bench.tif", Path(d) / "bench_no_levels.tif", Path(d) / "bench_half_level.tif"
        img = make_image(args.mp)
        res: dict = {"image": {"width": img.shape[1], "height": img.shape[0], "generator": "generate_photo(seed=0)"},
                     "loadavg": {"start": [round(x, 2) for x in os.getloadavg()]}}
        for name, p, pyr, first in (("corpus", path, True, None), ("no_levels", flat, False, None),
                                    ("half_level", half, True, 2)):
            t0 = time.perf_counter()
            info = write_array(p, img, pyramid=pyr, pyramid_first=first)
            res["image"][name] = {"bytes": info["bytes"], "write_s": round(time.perf_counter() - t0, 2)}
        del img
        res["image"]["levels_bytes_over_image"] = round(res["image"]["corpus"]["bytes"] / res["image"]["no_levels"]["bytes"] - 1, 4)
        res["image"]["half_level_bytes_over_image"] = round(res["image"]["half_level"]["bytes"]
                                                            / res["image"]["no_levels"]["bytes"] - 1, 4)
        print("image", json.dumps(res["image"]), flush=True)
        res["overhead"] = in_child("overhead", str(path), {"flat": str(flat), "half": str(half), "repeat": args.repeat})
        print("overhead", json.dumps(res["overhead"]), flush=True)
        res["loadavg"]["after_overhead"] = [round(x, 2) for x in os.getloadavg()]
        for task in ("full_decode", "read_image", "crops_typical", "crops_large", "highlight_thumb", "rle_stream_encode", "rle_full_encode",
                     "rle_decode_full", "rle_decode_resized", "rle_area_bbox_iou", "worker", "worker_heuristic"):
            res[task] = in_child(task, str(path))
            print(task, json.dumps(res[task]), flush=True)
        for task in ("crops_typical", "crops_large"):
            res[task + "_half_level"] = in_child(task, str(half))
            print(task + "_half_level", json.dumps(res[task + "_half_level"]), flush=True)
        res["worker_no_levels"] = in_child("worker", str(flat))
        print("worker_no_levels", json.dumps(res["worker_no_levels"]), flush=True)
        res["loadavg"]["end"] = [round(x, 2) for x in os.getloadavg()]
        dec = res["full_decode"]["seconds"]
        ov = res["overhead"]
        res["ratios"] = {
            "overhead_over_decode": ov["corpus"]["overhead_over_decode"],
            "overhead_without_source_hash_over_decode": ov["corpus"]["overhead_without_source_hash_over_decode"],
            "fixed_over_decode": ov["corpus"]["fixed_over_decode"],
            "source_hash_over_decode": ov["corpus"]["source_hash_over_decode"],
            "cpu_over_decode_cpu": ov["corpus"]["cpu_over_decode_cpu"],
            "no_levels_overhead_without_source_hash_over_decode": ov["no_levels"]["overhead_without_source_hash_over_decode"],
            "half_level_overhead_without_source_hash_over_decode":
                ov["half_level"]["overhead_without_source_hash_over_decode"],
            "overhead_without_crops_over_decode": ov["corpus"]["overhead_without_crops_over_decode"],
            "crops_over_decode": ov["corpus"]["crops_over_decode"],
            "no_levels_overhead_over_decode": ov["no_levels"]["overhead_over_decode"],
            "half_level_overhead_over_decode": ov["half_level"]["overhead_over_decode"],
            "half_level_crops_over_decode": ov["half_level"]["crops_over_decode"],
            "heuristic_overhead_over_decode": ov["heuristic"]["overhead_over_decode"],
            "crops_typical_over_full_decode": round(res["crops_typical"]["seconds"] / dec, 4),
            "crops_large_over_full_decode": round(res["crops_large"]["seconds"] / dec, 4),
            "crops_typical_half_level_over_full_decode": round(res["crops_typical_half_level"]["seconds"] / dec, 4),
            "crops_large_half_level_over_full_decode": round(res["crops_large_half_level"]["seconds"] / dec, 4),
            "highlight_thumb_over_full_decode": round(res["highlight_thumb"]["seconds"] / dec, 4),
            "rle_stream_over_full_encode": round(res["rle_stream_encode"]["seconds"] / res["rle_full_encode"]["seconds"], 4),
        }
        print("ratios", json.dumps(res["ratios"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
