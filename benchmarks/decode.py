"""Decoders and the strip-wise conversions at 100 MP, as a user meets them.

1. Decoders on the project's generator image (8-bit RGB, 100 MP) saved as PNG (OpenCV's default
   level) and JPEG (quality 95): OpenCV as the old path used it (``IMREAD_UNCHANGED`` + BGR->RGB),
   OpenCV straight into RGB (``IMREAD_COLOR_RGB``, decoders.py's fallback), simplejpeg
   (libjpeg-turbo, adopted for JPEG), pyspng (libspng, when installed) and this project's
   row-band PNG path (adopted); best-of-``repeat`` seconds and whether the pixels equal the old
   path's.
2. ``uhr score-image`` on one file per layout (8-bit RGB PNG / JPEG / TIFF, RGBA PNG, 16-bit RGBA
   PNG, 16-bit RGB TIFF chunky and planar, grey + alpha PNG, palette + tRNS PNG, CMYK JPEG, 8-bit RGB JPEG with EXIF
   orientation 6): wall seconds and peak RSS of each CLI process (its ``ru_maxrss``), and
   their ratios against the 8-bit RGB file of the same container in the same run (PNG for the
   layouts without one). ``--before DIR`` runs the same CLI from another source tree (e.g. a
   ``git archive`` of the commit before decoders.py) in the same session, for before/after.
   ``after_from_path``: the same decode + scores with the decoder given the open file (no hash,
   no checks), the floor the reader contract's decode from its open file
   (:func:`curation.imageio.open_pinned`: PNG, TIFF, CMYK JPEG) is measured against.

16-bit samples: the photo in the high byte, the neighbouring pixel's value in the low byte (it
compresses like a photo, not like noise). Alpha: a diagonal ramp with a fully transparent corner.

    .venv/bin/python benchmarks/decode.py [--mp 100] [--repeat 2] [--before /tmp/old-tree]
                                          [--layouts png_rgb8,png_rgba16] [--skip-decoders | --skip-cli]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._measure import best  # noqa: E402

#: layout -> (container, the 8-bit RGB layout its ratio is taken against)
LAYOUTS = {
    "png_rgb8": ("png", "png_rgb8"),
    "jpeg_rgb8": ("jpeg", "jpeg_rgb8"),
    "tiff_rgb8": ("tiff", "tiff_rgb8"),
    "png_rgba8": ("png", "png_rgb8"),
    "png_rgba16": ("png", "png_rgb8"),
    "png_la8": ("png", "png_rgb8"),
    "png_palette_trns": ("png", "png_rgb8"),
    "tiff_rgb16": ("tiff", "tiff_rgb8"),
    "tiff_rgb16_planar": ("tiff", "tiff_rgb8"),
    "jpeg_cmyk": ("jpeg", "jpeg_rgb8"),
    "jpeg_rgb8_rot6": ("jpeg", "jpeg_rgb8"),
}


def make_rgb(megapixels: float, seed: int = 0) -> np.ndarray:
    from curation.synth import generate_photo

    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(megapixels * 1e6 / w))
    return generate_photo(w, h, seed=seed)


def _alpha(h: int, w: int) -> np.ndarray:
    y, x = np.ogrid[:h, :w]
    a = ((x / w + y / h) * 200).astype(np.int32) - 30  # ramp, clipped: a transparent corner
    return np.clip(a, 0, 255).astype(np.uint8)


def _exif_app1(orientation: int) -> bytes:
    from PIL import Image

    ex = Image.Exif()
    ex[0x0112] = orientation
    payload = ex.tobytes()  # b"Exif\0\0" + the TIFF-structured IFD
    assert payload.startswith(b"Exif\x00\x00")
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def make_file(layout: str, rgb: np.ndarray, folder: Path) -> Path:
    """Write ``rgb`` (H, W, 3 uint8) in ``layout``; returns the path."""
    import tifffile
    from PIL import Image

    h, w = rgb.shape[:2]
    fmt = LAYOUTS[layout][0]
    path = folder / f"{layout}.{ 'jpg' if fmt == 'jpeg' else fmt}"
    bgr = lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2BGR)  # noqa: E731
    if layout == "png_rgb8":
        cv2.imwrite(str(path), bgr(rgb))
    elif layout == "jpeg_rgb8":
        cv2.imwrite(str(path), bgr(rgb), [cv2.IMWRITE_JPEG_QUALITY, 95])
    elif layout == "jpeg_rgb8_rot6":
        ok, enc = cv2.imencode(".jpg", bgr(rgb), [cv2.IMWRITE_JPEG_QUALITY, 95])
        data = enc.tobytes()
        path.write_bytes(data[:2] + _exif_app1(6) + data[2:])
    elif layout == "tiff_rgb8":
        tifffile.imwrite(path, rgb, photometric="rgb", compression="zlib", compressionargs={"level": 1})
    elif layout == "tiff_rgb16":
        hi = rgb.astype(np.uint16) << 8
        hi |= np.roll(rgb, 1, axis=1)
        tifffile.imwrite(path, hi, photometric="rgb", compression="zlib", compressionargs={"level": 1})
    elif layout == "tiff_rgb16_planar":
        hi = rgb.astype(np.uint16) << 8
        hi |= np.roll(rgb, 1, axis=1)
        tifffile.imwrite(path, np.moveaxis(hi, 2, 0), photometric="rgb", planarconfig="separate", compression="zlib",
                         compressionargs={"level": 1})
    elif layout == "png_rgba8":
        cv2.imwrite(str(path), np.dstack([bgr(rgb), _alpha(h, w)]))
    elif layout == "png_rgba16":
        a16 = np.dstack([bgr(rgb), _alpha(h, w)]).astype(np.uint16) << 8
        a16 |= np.roll(a16 >> 8, 1, axis=1).astype(np.uint16)
        cv2.imwrite(str(path), a16)
    elif layout == "png_la8":
        la = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), _alpha(h, w)])
        Image.fromarray(la, "LA").save(path, compress_level=6)
    elif layout == "png_palette_trns":
        im = Image.fromarray(rgb).quantize(256, method=Image.Quantize.FASTOCTREE)
        trns = bytes(range(0, 256))
        im.save(path, transparency=trns, compress_level=6)
    elif layout == "jpeg_cmyk":
        Image.fromarray(rgb).convert("CMYK").save(path, "JPEG", quality=95)
    else:
        raise ValueError(layout)
    return path


# -- 1. decoders -----------------------------------------------------------------------------------


def decoder_table(png: Path, jpg: Path, repeat: int) -> dict:
    from curation import decoders

    out: dict = {}
    for name, path in (("png", png), ("jpeg", jpg)):
        data = path.read_bytes()
        buf = np.frombuffer(data, np.uint8)
        ref = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
        cands = {
            "opencv_unchanged_bgr2rgb (old)": lambda: cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB),
            "opencv_color_rgb (fallback)": lambda: cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION),
        }
        if name == "jpeg":
            try:
                import simplejpeg

                cands["simplejpeg (adopted)"] = lambda: simplejpeg.decode_jpeg(data, colorspace="RGB")
            except ImportError:
                out["simplejpeg"] = "not installed"
        else:
            try:
                import pyspng

                cands["pyspng"] = lambda: pyspng.load(data)
            except ImportError:
                out["pyspng"] = "not installed"
            cands["uhr_png_rows (adopted)"] = lambda: decoders.decode_png(path, 1, data)
        row = {"file_mb": len(data) / 1e6}
        if name == "png":
            row["inflate_seconds"] = inflate_table(data, repeat)
        for cname, fn in cands.items():
            img = fn()
            row[cname] = {"seconds": best(fn, repeat), "identical": bool(np.array_equal(img, ref))}
            del img
        out[name] = row
    return out


def inflate_table(png: bytes, repeat: int) -> dict:
    """Seconds to inflate a PNG's IDAT stream 1 MiB of input at a time into 4 MiB outputs (the
    row path's pattern) with the standard library's zlib and with ISA-L (isal), when installed."""
    import zlib

    pos, idat = 8, []
    while pos < len(png):
        n, t = struct.unpack(">I4s", png[pos : pos + 8])
        if t == b"IDAT":
            idat.append(png[pos + 8 : pos + 8 + n])
        pos += 12 + n
    stream = b"".join(idat)

    def run(mod) -> int:
        d, i, pending, total = mod.decompressobj(), 0, b"", 0
        while True:
            if not pending:
                if i >= len(stream):
                    return total
                pending, i = stream[i : i + (1 << 20)], i + (1 << 20)
            total += len(d.decompress(pending, 4 << 20))
            pending = d.unconsumed_tail

    out = {"zlib": best(lambda: run(zlib), repeat)}
    try:
        from isal import isal_zlib

        assert run(isal_zlib) == run(zlib), "isal inflated a different number of bytes"
        out["isal (adopted)"] = best(lambda: run(isal_zlib), repeat)
    except ImportError:
        out["isal (adopted)"] = "not installed"
    return out


# -- 2. the CLI ------------------------------------------------------------------------------------


def _measured_child(code: str, path: Path, tree: Path) -> dict:
    """Run ``python -c code PATH`` from source tree ``tree`` as the only child of a fresh wrapper
    process, whose ``RUSAGE_CHILDREN`` ``ru_maxrss`` is then the child's own high-water mark:
    ``{"seconds", "peak_rss_mb", "ok", "last_line", "stderr"}`` (the last line of its stdout, the
    last 300 characters of its stderr)."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t0 = time.perf_counter()\n"
        f"p = subprocess.run([sys.executable, '-c', {code!r}, sys.argv[1]], capture_output=True, text=True)\n"
        "dt = time.perf_counter() - t0\n"
        "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'seconds': dt, 'peak_rss_mb': ru.ru_maxrss / 1024.0, 'ok': p.returncode == 0,\n"
        "                  'last_line': (p.stdout.strip().splitlines() or [''])[-1], 'stderr': p.stderr[-300:]}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", wrapper, str(path)], cwd=tree, env=env, capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def cli_run(path: Path, tree: Path) -> dict:
    """``uhr score-image PATH --json`` run from source tree ``tree`` (:func:`_measured_child`):
    wall seconds, peak RSS (MiB) and verdict."""
    r = _measured_child("import sys; from cli.main import main; "
                        "sys.argv = ['uhr', 'score-image', sys.argv[1], '--json']; main()", path, tree)
    line = r.pop("last_line")
    r["verdict"] = json.loads(line).get("verdict") if line else "error: " + r["stderr"]
    del r["stderr"], r["ok"]
    return r


def from_path_run(path: Path) -> dict:
    """What ``uhr score-image`` does after the reader, with ``decoders.decode_to_rgb`` given the
    open file (PNG, TIFF and CMYK JPEG read a piece at a time, the others read whole by the
    decoder), no hash and no checks: the floor for the reader contract's own decode from its
    open file. Same measurement as :func:`cli_run`."""
    r = _measured_child(
        "import sys; from curation import decoders; from curation.imageio import probe; "
        "from curation.scores import purification_scores; fh = open(sys.argv[1], 'rb'); "
        "purification_scores(decoders.decode_to_rgb(fh, probe(sys.argv[1], 10**9)))",  # grey band by band, as the CLI
        path, ROOT)
    del r["last_line"], r["stderr"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mp", type=float, default=100.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--before", type=Path, default=None, help="source tree of the code before, run in the same session")
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--skip-decoders", action="store_true")
    ap.add_argument("--skip-cli", action="store_true", help="only the decoder table")
    ap.add_argument("--keep", type=Path, default=None, help="folder to write / reuse the files in")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    layouts = [x for x in args.layouts.split(",") if x]
    needed = [LAYOUTS[lay][1] for lay in layouts] + ([] if args.skip_decoders else ["png_rgb8", "jpeg_rgb8"])
    for ref in needed:
        if ref not in layouts:
            layouts.insert(0, ref)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="uhr-decode-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    rgb = None
    for lay in layouts:
        fmt = LAYOUTS[lay][0]
        p = folder / f"{lay}.{'jpg' if fmt == 'jpeg' else fmt}"
        if not p.exists():
            if rgb is None:
                print(f"generating a {args.mp:.0f} MP image with curation.synth ...", flush=True)
                rgb = make_rgb(args.mp)
            print(f"writing {p.name} ...", flush=True)
            make_file(lay, rgb, folder)
        files[lay] = p
    del rgb
    results: dict = {"megapixels": args.mp, "load_average": os.getloadavg()}
    if not args.skip_decoders:
        results["decoders"] = decoder_table(files["png_rgb8"], files["jpeg_rgb8"], args.repeat)
        print(json.dumps(results["decoders"], indent=2), flush=True)
    if args.skip_cli:
        return
    trees = {"after": ROOT}
    if args.before:
        trees["before"] = args.before
    cli: dict = {}
    for lay in layouts:
        row = {"file_mb": files[lay].stat().st_size / 1e6}
        for tag, tree in trees.items():
            row[tag] = cli_run(files[lay], tree)
        row["after_from_path"] = from_path_run(files[lay])
        cli[lay] = row
        print(lay, json.dumps(row), flush=True)
    for lay, row in cli.items():
        ref = cli[LAYOUTS[lay][1]]
        for tag in list(trees) + ["after_from_path"]:
            row[tag]["rss_over_rgb8"] = row[tag]["peak_rss_mb"] / ref[tag]["peak_rss_mb"]
            row[tag]["seconds_over_rgb8"] = row[tag]["seconds"] / ref[tag]["seconds"]
    results["score_image"] = cli
    results["load_average_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    tags = list(trees) + ["after_from_path"]
    print(f"\n{'layout':18} {'file MB':>8} " + " ".join(f"{t[:10] + ' MB':>13} {'s':>5} {'x rgb8':>6}" for t in tags))
    for lay, row in cli.items():
        cols = " ".join(f"{row[t]['peak_rss_mb']:13.0f} {row[t]['seconds']:5.1f} {row[t]['rss_over_rgb8']:6.2f}" for t in tags)
        print(f"{lay:18} {row['file_mb']:8.0f} {cols}")
    print("(after_from_path: decoders.decode_to_rgb given the open file, no hash, no checks; "
          "grey + scores as in the CLI)")
    worst = max(r["after"]["peak_rss_mb"] for r in cli.values())
    worst_ratio = max(r["after"]["rss_over_rgb8"] for r in cli.values())
    print(f"\nworst peak {worst:.0f} MiB (target < 1024), worst ratio to 8-bit RGB {worst_ratio:.2f} (target <= 1.3); "
          f"load average {results['load_average']} -> {results['load_average_end']}")


if __name__ == "__main__":
    main()
