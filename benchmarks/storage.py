"""Lossless storage formats for 100 MP images: encode, decode, size, random 1024² crop.

The image is :func:`curation.synth.generate_photo` at ~100 MP (11547 x 8660 RGB; with
``--source upscaled``: a 25 MP generated photo upscaled 2x with Lanczos, i.e. what most corpus
images are). Every codec runs in this process on the same array, 2 threads where the codec
has them (the machine has 2 cores):

* PNG, OpenCV ``imencode`` with no flags (its default) and with ``IMWRITE_PNG_COMPRESSION 1``;
* PNG, our streaming writer (:class:`curation.upscale.storage.PngStreamWriter`, ``avg``
  filter, zlib level 1, 2 threads) - the one the tile engine uses;
* tiled TIFF 512², tifffile, zstd level 1 and 3 and deflate level 6, horizontal predictor;
* tiled TIFF 512² with JPEG XL lossless tiles (tifffile + imagecodecs only);
* JPEG XL lossless, effort 1 (imagecodecs / libjxl);
* WebP lossless, method 0 (imagecodecs / libwebp);
* raw ``.npy`` (reference for the disk).

Crop: mean time to get one random 1024² crop (5 seeded positions) starting from the file:
tiled TIFFs decode only the tiles it touches (:class:`~curation.upscale.storage.TiffRegionSource`),
the other formats decode the whole image first. Times are single runs (best of ``--repeat``).
Prints a Markdown table and writes ``benchmarks/out/storage.md``.

    .venv/bin/python benchmarks/storage.py [--mp 100] [--source native|upscaled] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation.upscale.storage import TiffRegionSource, write_array  # noqa: E402

THREADS = 2


def make_image(mp: float, source: str) -> np.ndarray:
    from curation.synth import generate_photo

    w = int(round((mp * 1e6 * 4 / 3) ** 0.5))
    h = int(round(mp * 1e6 / w))
    if source == "upscaled":
        small = generate_photo(w // 2, h // 2, seed=0)
        return cv2.resize(small, (w // 2 * 2, h // 2 * 2), interpolation=cv2.INTER_LANCZOS4)
    return generate_photo(w, h, seed=0)


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def codecs(img: np.ndarray, d: Path):
    """name -> (suffix, encode(path), decode(path) -> array, crop(path, y, x) -> array, note)."""
    import imagecodecs
    import tifffile

    bgr_cache: dict = {}

    def bgr():
        if "b" not in bgr_cache:
            bgr_cache["b"] = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        return bgr_cache["b"]

    def png_cv(flags):
        def enc(p):
            ok, buf = cv2.imencode(".png", bgr(), flags)
            assert ok
            _write_bytes(p, buf.tobytes())
        return enc

    def png_dec(p):
        return cv2.cvtColor(cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)

    def tiff_enc(compression, level=None, args=None):
        def enc(p):
            kw = {"compression": compression, "compressionargs": args or ({"level": level} if level else {})}
            if compression in ("zstd", "zlib"):
                kw["predictor"] = True
            tifffile.imwrite(p, img, tile=(512, 512), photometric="rgb", maxworkers=THREADS, metadata=None, **kw)
        return enc

    def tiff_dec(p):
        return tifffile.imread(p, maxworkers=THREADS)

    def tiff_crop(p, y, x):
        with TiffRegionSource(p, workers=THREADS) as src:
            return src.read(y, y + 1024, x, x + 1024)

    def full_crop(dec):
        return lambda p, y, x: dec(p)[y:y + 1024, x:x + 1024]

    def jxl_dec(p):
        return imagecodecs.jpegxl_decode(p.read_bytes(), numthreads=THREADS)

    def webp_dec(p):
        return imagecodecs.webp_decode(p.read_bytes())

    out = {
        "PNG, OpenCV default": (".png", png_cv([]), png_dec, full_crop(png_dec), "cv2.imencode, no flags"),
        "PNG, OpenCV level 1": (".png", png_cv([cv2.IMWRITE_PNG_COMPRESSION, 1]), png_dec, full_crop(png_dec),
                                "fast zlib level"),
        "PNG, streaming (ours)": (".png", lambda p: write_array(p, img, png_filter="avg", level=1, workers=THREADS),
                                  png_dec, full_crop(png_dec), "avg filter, zlib 1, 2 threads, row bands"),
        "TIFF tiled, zstd 1 + predictor": (".tif", tiff_enc("zstd", 1), tiff_dec, tiff_crop, "512² tiles"),
        "TIFF tiled, zstd 3 + predictor": (".tif", tiff_enc("zstd", 3), tiff_dec, tiff_crop, "512² tiles"),
        "TIFF tiled, deflate 6 + predictor": (".tif", tiff_enc("zlib", 6), tiff_dec, tiff_crop, "512² tiles"),
        "TIFF tiled, JPEG XL lossless tiles": (".tif", tiff_enc("jpegxl", args={"lossless": True, "effort": 1}),
                                               tiff_dec, tiff_crop, "tifffile+imagecodecs only"),
        "JPEG XL lossless, effort 1": (".jxl", lambda p: _write_bytes(p, imagecodecs.jpegxl_encode(
            img, lossless=True, effort=1, numthreads=THREADS)), jxl_dec, full_crop(jxl_dec), "imagecodecs/libjxl"),
        "WebP lossless, method 0": (".webp", lambda p: _write_bytes(p, imagecodecs.webp_encode(
            img, lossless=True, method=0)), webp_dec, full_crop(webp_dec), "imagecodecs/libwebp, max side 16383"),
        "raw .npy": (".npy", lambda p: np.save(p, img), lambda p: np.load(p), lambda p, y, x: np.load(
            p, mmap_mode="r")[y:y + 1024, x:x + 1024].copy(), "uncompressed"),
    }
    if not imagecodecs.JPEGXL.available:
        out = {k: v for k, v in out.items() if "JPEG XL" not in k}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mp", type=float, default=100.0)
    ap.add_argument("--source", choices=["native", "upscaled"], default="native")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--only", default="", help="semicolon-separated substrings of codec names to run")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "storage.md"))
    args = ap.parse_args()
    cv2.setNumThreads(THREADS)
    t0 = time.perf_counter()
    img = make_image(args.mp, args.source)
    h, w = img.shape[:2]
    print(f"image: {w}x{h} ({w * h / 1e6:.1f} MP, {args.source}), generated in {time.perf_counter() - t0:.1f} s",
          flush=True)
    rng = np.random.default_rng(0)
    crops = [(int(rng.integers(0, h - 1024)), int(rng.integers(0, w - 1024))) for _ in range(5)]
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("UHR_BENCH_TMP")) as td:
        for name, (suffix, enc, dec, crop, note) in codecs(img, Path(td)).items():
            if args.only and not any(s.strip() in name for s in args.only.split(";")):
                continue
            p = Path(td) / f"img{suffix}"
            t_enc, _ = timed(lambda: enc(p), args.repeat)
            size = p.stat().st_size
            t_dec, back = timed(lambda: dec(p), args.repeat)
            ok = back.shape == img.shape and np.array_equal(back, img)
            del back
            ts = []
            for y, x in crops:
                t1 = time.perf_counter()
                c = crop(p, y, x)
                ts.append(time.perf_counter() - t1)
                assert np.array_equal(c, img[y:y + 1024, x:x + 1024])
            rows.append((name, t_enc, t_dec, size, size / img.nbytes, float(np.mean(ts)), ok, note))
            print(f"{name}: enc {t_enc:.2f} s, dec {t_dec:.2f} s, ratio {size / img.nbytes:.3f}, "
                  f"crop {np.mean(ts) * 1000:.0f} ms, lossless {ok}", flush=True)
            p.unlink()
    lines = [f"# Lossless storage of a {w * h / 1e6:.0f} MP image ({w}x{h} RGB, generate_photo, {args.source})", "",
             f"2 threads where the codec has them; {os.cpu_count()} cores; times in seconds (crop: mean of 5 random "
             "1024² crops, from the file).", "",
             "| format | encode s | decode s | size MB | ratio to raw | 1024² crop ms | lossless | note |",
             "|---|---|---|---|---|---|---|---|"]
    for name, te, td_, size, ratio, tc, ok, note in rows:
        lines.append(f"| {name} | {te:.2f} | {td_:.2f} | {size / 1e6:.0f} | {ratio:.3f} | {tc * 1000:.0f} | "
                     f"{'yes' if ok else 'NO'} | {note} |")
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and args.source != "native":
        text = out.read_text() + "\n" + text
    out.write_text(text)


if __name__ == "__main__":
    main()
