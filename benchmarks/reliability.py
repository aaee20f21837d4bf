"""Reliability report: hostile inputs through every entry point, and faults injected into the real
services, written to ``docs/reliability.md`` (and ``--json``).

Usage::

    .venv/bin/python benchmarks/reliability.py                 # everything, writes docs/reliability.md
    .venv/bin/python benchmarks/reliability.py --quick --out /tmp/r.md --json /tmp/r.json

**Inputs** (:data:`CLASSES`): one file (or directory entry) per input class, each named with a
unique ASCII tag ``cNN`` so its row or output line can be found whatever the rest of its name is
(not UTF-8, hidden, an odd suffix). Every entry goes through:

* ``purification`` -- the ``raw_pool`` + ``image_scores`` stages of a shard holding them all
  (rows read back from the manifests; ``replaced_after_raw_pool`` is rewritten between the two);
* ``score-image``, ``metric glcm``, ``seam-check`` -- one ``uhr`` call with every path;
* ``bench`` -- ``uhr bench`` on a model folder holding the files (``--metric glcm``);
* ``upscale`` -- ``uhr upscale IN OUT --scale 2``, one call per file (full run only).

Each (class, entry point) gets one outcome: ``rejected`` (a file reason in the class's expected
set), ``wrong_reason`` (rejected, for another file reason), ``accepted`` (read and scored),
``false_reject`` (a valid input rejected for a file reason), ``silent_pass`` (an input that
must be rejected was read and scored: must be 0), ``lost`` (no row / line / result at all:
must be 0), ``crash`` (a traceback or a whole call failing) or ``hang`` (past the time limit).

**Faults** (:func:`run_faults`): the S3 server stopped and restarted during a store upload and
during ``dvc push``; PostgreSQL restarted during a Dagster materialisation (run storage) and
during MLflow logging (backend store); the VLM endpoint slow, trickling, answering garbage and
killed then restarted under the corpus judge; a full data root (a tmpfs of a few hundred KB,
mounted as root; else skipped). For each: rows in, rows out, lost, corrupted files, whether a
re-run completed, the seconds from the service's return to the stage's completion.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
UHR = str(Path(sys.executable).parent / "uhr")

#: a valid test image is 800 x 600 (0.48 MP: passes the test profile's screen, > 0.39 MP)
W, H = 800, 600
ITEM_1, ITEM_2, ITEM_3 = "reader contract (15.1)", "every entry a row (15.2)", "content pinned (15.3)"


# =================================================================================================
# input classes
# =================================================================================================
def _rgb(seed: int, w: int = W, h: int = H):
    """A textured RGB uint8 (h, w, 3) image, distinct per seed (no two classes dedup)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([(x / w) * 200 + 20, (y / h) * 180 + 30, ((x + y) / (w + h)) * 150 + 50], axis=2)
    noise = rng.normal(0, 18, (h, w, 3))
    blocks = rng.integers(0, 60, (h // 40 + 1, w // 40 + 1, 3)).repeat(40, 0).repeat(40, 1)[:h, :w]
    return np.clip(base + noise + blocks, 0, 255).astype(np.uint8)


def _pil(seed: int, mode: str = "RGB"):
    from PIL import Image

    im = Image.fromarray(_rgb(seed))
    return im if mode == "RGB" else im.convert(mode)


def _save(im, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _jpeg(seed: int, q: int = 90) -> bytes:
    return _save(_pil(seed), "JPEG", quality=q)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _huge_png() -> bytes:
    """~1 KB PNG whose header declares 100000 x 100000 RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _corrupt_scan_jpeg(seed: int) -> bytes:
    """A valid JPEG with 4 KB of random bytes written into the middle of its scan (EOI kept)."""
    import numpy as np

    data = bytearray(_jpeg(seed))
    mid = len(data) // 2
    data[mid:mid + 4096] = np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    return bytes(data)


def _png_bad_crc(seed: int) -> bytes:
    data = bytearray(_save(_pil(seed), "PNG"))
    i = data.index(b"IDAT") + 4 + 100
    data[i] ^= 0xFF
    return bytes(data)


def _png16(seed: int) -> bytes:
    import cv2

    a = _rgb(seed).astype("uint16") * 257
    ok, enc = cv2.imencode(".png", a)
    return enc.tobytes()


def _tiff(arr, **kw) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def _grey_alpha_tiff(seed: int) -> bytes:
    import numpy as np

    g = _rgb(seed)[:, :, 0]
    return _tiff(np.stack([g, np.full_like(g, 255)], axis=2), photometric="minisblack", extrasamples=["unassalpha"])


def _tiff16(seed: int) -> bytes:
    return _tiff(_rgb(seed).astype("uint16") * 257, photometric="rgb")


def _rotated_jpeg(seed: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    return _save(_pil(seed), "JPEG", quality=90, exif=exif)


def _animated(fmt: str, seed: int) -> bytes:
    frames = [_pil(seed + k, "P" if fmt == "GIF" else "RGB") for k in range(3)]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


@dataclass(frozen=True)
class InputClass:
    """One hostile (or merely unusual) input. ``expect``: the file reasons that are a correct
    rejection (empty: a valid input that must be read and scored). ``kind``: ``bytes`` (a file
    with these bytes), or a directory-entry kind made by ``make``. ``depends``: the part of
    issue 15 that makes it hold. ``only``: entry points it applies to (None: all)."""

    tag: str
    name: str
    expect: frozenset
    depends: str
    data: Callable[[int], bytes] | None = None
    filename: str | bytes | None = None  # default: "<tag>_<name>.<ext>"
    ext: str = ".jpg"
    special: str | None = None  # broken_symlink | symlink_loop | symlink | fifo | directory | replaced
    only: tuple[str, ...] | None = None

    def fname(self) -> bytes:
        if self.filename is not None:
            f = self.filename
            return f if isinstance(f, bytes) else f.encode()
        return f"{self.tag}_{self.name}{self.ext}".encode()


def _r(*reasons: str) -> frozenset:
    return frozenset(reasons)


ACCEPT = frozenset()
NOT_REGULAR = _r("not_a_regular_file")

#: every class tried; the expected reasons follow curation/reasons.py
CLASSES: tuple[InputClass, ...] = (
    InputClass("c01", "jpeg", ACCEPT, "baseline", _jpeg),
    InputClass("c02", "png_16bit", ACCEPT, ITEM_1, _png16, ext=".png"),
    InputClass("c03", "jpeg_cmyk", ACCEPT, ITEM_1, lambda s: _save(_pil(s, "CMYK"), "JPEG", quality=90)),
    InputClass("c04", "png_rgba", ACCEPT, ITEM_1, lambda s: _save(_pil(s, "RGBA"), "PNG"), ext=".png"),
    InputClass("c05", "tiff_grey_alpha", ACCEPT, ITEM_1, _grey_alpha_tiff, ext=".tif"),
    InputClass("c06", "png_grey_alpha", ACCEPT, ITEM_1, lambda s: _save(_pil(s, "LA"), "PNG"), ext=".png"),
    InputClass("c07", "png_palette", ACCEPT, ITEM_1, lambda s: _save(_pil(s, "P"), "PNG"), ext=".png"),
    InputClass("c08", "jpeg_exif_rotated", ACCEPT, ITEM_1, _rotated_jpeg),
    InputClass("c09", "jpeg_trailing_bytes", ACCEPT, ITEM_1, lambda s: _jpeg(s) + b"\x00TRAILER" * 512),
    InputClass("c10", "png_grey", ACCEPT, ITEM_1, lambda s: _save(_pil(s, "L"), "PNG"), ext=".png"),
    InputClass("c11", "tiff_16bit", ACCEPT, ITEM_1, _tiff16, ext=".tif"),
    InputClass("c12", "hidden_file", ACCEPT, ITEM_2, _jpeg, filename=".c12_hidden.jpg"),
    InputClass("c13", "upper_json_suffix", ACCEPT, ITEM_2, _jpeg, filename="c13_photo.JSON"),
    InputClass("c14", "non_utf8_name", ACCEPT, ITEM_2, _jpeg, filename=b"c14_caf\xe9_\xff.jpg",
               only=("purification", "score-image", "metric glcm", "seam-check", "upscale")),
    InputClass("c15", "jpeg_truncated", _r("truncated"), ITEM_1, lambda s: _jpeg(s)[: len(_jpeg(s)) // 2]),
    InputClass("c16", "jpeg_garbage_in_scan", _r("corrupt"), ITEM_1, _corrupt_scan_jpeg),
    InputClass("c17", "png_bad_crc", _r("corrupt"), ITEM_1, _png_bad_crc, ext=".png"),
    InputClass("c18", "png_huge_declared", _r("too_many_pixels"), ITEM_1, lambda s: _huge_png(), ext=".png"),
    InputClass("c19", "gif_animated", _r("animated"), ITEM_1, lambda s: _animated("GIF", s), ext=".gif"),
    InputClass("c20", "apng", _r("animated"), ITEM_1, lambda s: _animated("PNG", s), ext=".png"),
    InputClass("c21", "gif_static", _r("unsupported_format"), ITEM_1, lambda s: _save(_pil(s, "P"), "GIF"),
               ext=".gif"),
    InputClass("c22", "bmp", _r("unsupported_format"), ITEM_1, lambda s: _save(_pil(s), "BMP"), ext=".bmp"),
    InputClass("c23", "avif", _r("unsupported_format"), ITEM_1, lambda s: _save(_pil(s), "AVIF", quality=60),
               ext=".avif"),
    InputClass("c24", "empty_file", _r("not_an_image", "truncated"), ITEM_1, lambda s: b""),
    InputClass("c25", "text_file", _r("not_an_image"), ITEM_1, lambda s: b"this is not an image\n" * 20,
               ext=".txt"),
    InputClass("c26", "text_named_jpg", _r("not_an_image"), ITEM_1, lambda s: b"<html>404</html>\n" * 20),
    InputClass("c27", "broken_symlink", NOT_REGULAR, ITEM_2, special="broken_symlink"),
    InputClass("c28", "symlink_loop", NOT_REGULAR, ITEM_2, special="symlink_loop"),
    InputClass("c29", "symlink_to_image", NOT_REGULAR, ITEM_2, special="symlink", only=("purification",)),
    InputClass("c30", "fifo", NOT_REGULAR, ITEM_2, special="fifo", only=("purification", "score-image",
                                                                        "metric glcm", "seam-check", "upscale")),
    InputClass("c31", "directory", NOT_REGULAR, ITEM_2, special="directory",
               only=("purification", "score-image", "metric glcm", "seam-check", "upscale")),
    InputClass("c32", "replaced_after_raw_pool", _r("source_changed"), ITEM_3, _jpeg, special="replaced",
               only=("purification",)),
    # a path named on the command line (or a file of a model folder) is followed, as `cat` does; an
    # entry of a raw shard is not (c29)
    InputClass("c34", "symlink_followed", ACCEPT, ITEM_1, special="symlink",
               only=("score-image", "metric glcm", "seam-check", "bench", "upscale")),
    InputClass("c33", "webp", ACCEPT, ITEM_1, lambda s: _save(_pil(s), "WEBP", quality=80),
               ext=".webp"),
)

ENTRY_POINTS = ("purification", "score-image", "metric glcm", "seam-check", "bench", "upscale")


def applies(c: InputClass, entry: str) -> bool:
    return c.only is None or entry in c.only


def make_inputs(folder: Path, classes=CLASSES) -> dict[str, bytes]:
    """Write every class into ``folder`` (created); ``{tag: entry name as bytes}``."""
    folder.mkdir(parents=True, exist_ok=True)
    outside = folder.parent / f"{folder.name}-targets"
    outside.mkdir(exist_ok=True)
    out = {}
    for i, c in enumerate(classes):
        name = c.fname()
        p = os.path.join(os.fsencode(folder), name)
        if c.special in (None, "replaced"):
            with open(p, "wb") as fh:
                fh.write(c.data(1000 + i))
        elif c.special == "broken_symlink":
            os.symlink(b"does-not-exist.jpg", p)
        elif c.special == "symlink_loop":
            other = os.path.join(os.fsencode(folder), c.tag.encode() + b"_loop_b.jpg")
            os.symlink(os.path.basename(other), p)
            os.symlink(os.path.basename(p), other)  # also a loop entry, same class: carries the tag
        elif c.special == "symlink":
            target = outside / f"{c.tag}_target.jpg"
            target.write_bytes(_jpeg(1000 + i))
            os.symlink(os.fsencode(target), p)
        elif c.special == "fifo":
            os.mkfifo(p)
        elif c.special == "directory":
            os.mkdir(p)
            with open(os.path.join(p, b"inner.jpg"), "wb") as fh:
                fh.write(_jpeg(5000 + i))
        out[c.tag] = name
    return out


# =================================================================================================
# outcomes
# =================================================================================================
def file_reasons() -> tuple[str, ...]:
    from curation import reasons

    return tuple(reasons.FILE_REASONS)


def reason_in(text: str | None) -> str | None:
    """The file reason named in ``text``; when several are (``unreadable: ImageReadError:
    truncated: ...``), the most specific: the one named last."""
    if not text:
        return None
    found = [(text.rfind(r), r) for r in file_reasons() if r in text]
    return max(found)[1] if found else None


def classify(c: InputClass, reason: str | None, present: bool, read: bool) -> str:
    """One outcome. ``reason``: the file reason found (None: none); ``read``: the input was read and
    scored (a value, a verdict on content)."""
    if not present:
        return "lost"
    if c.expect:
        if reason in c.expect:
            return "rejected"
        if reason is not None:
            return "wrong_reason"
        return "silent_pass" if read else "rejected_no_reason"
    if reason is not None:
        return "false_reject"
    return "accepted" if read else "no_result"


@dataclass
class Cell:
    outcome: str
    reason: str | None = None
    detail: str | None = None


def _find(tag: str, items: dict[str, dict]) -> dict | None:
    for k, v in items.items():
        if tag + "_" in k:
            return v
    return None


# -- purification ----------------------------------------------------------------------------
def run_purification(work: Path, classes=CLASSES) -> dict[str, Cell]:
    """raw_pool + image_scores over one shard holding every class; one cell per class."""
    from curation.config import load_config
    from curation.layout import DataLayout
    from curation.manifest import read_manifest
    from curation.stages import run_image_scores, run_raw_pool

    cfg = load_config("test")
    shard = "shard-00000"
    raw = work / "raw"
    cls = [c for c in classes if applies(c, "purification")]
    make_inputs(raw / shard, cls)
    layout = DataLayout.at(work / "data")
    cells: dict[str, Cell] = {}
    try:
        run_raw_pool(layout, raw, shard, cfg)
    except Exception as exc:  # the whole shard failed: every row lost
        return {c.tag: Cell("crash", detail=f"raw_pool: {type(exc).__name__}: {exc}"[:300]) for c in cls}
    for c in cls:  # content replaced after raw_pool: the id no longer matches the bytes
        if c.special == "replaced":
            p = os.path.join(os.fsencode(raw / shard), c.fname())
            with open(p, "wb") as fh:
                fh.write(_jpeg(9999))
    rp = read_manifest(layout.manifest("raw_pool", shard)).to_pylist()
    try:
        run_image_scores(layout, shard, cfg)
        sc = {r["image_id"]: r for r in read_manifest(layout.manifest("image_scores", shard)).to_pylist()}
    except Exception as exc:
        return {c.tag: Cell("crash", detail=f"image_scores: {type(exc).__name__}: {exc}"[:300]) for c in cls}
    by_path = {}
    for r in rp:
        by_path.setdefault(Path(str(r["source_path"])).name, r)
    for c in cls:
        row = _find(c.tag, by_path)
        if row is None:
            cells[c.tag] = Cell("lost")
            continue
        score = sc.get(row["image_id"]) if row.get("passed") else None
        reason = row.get("reject_reason") if row.get("reject_reason") in file_reasons() else None
        detail = row.get("reject_detail")
        if reason is None and score is not None and score.get("reject_reason") in file_reasons():
            reason, detail = score["reject_reason"], score.get("reject_detail")
        read = reason is None and (score is not None and score.get("width") is not None
                                   or row.get("width") is not None)
        cells[c.tag] = Cell(classify(c, reason, True, read), reason, (str(detail) if detail else None))
    return cells


# -- the CLI -----------------------------------------------------------------------------------
def _uhr(args: list, timeout: float, cwd: Path) -> tuple[int | None, str, str, float]:
    t0 = time.perf_counter()
    p = subprocess.Popen([UHR, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), time.perf_counter() - t0


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _cli_cells(cls, rc, out, err, read_key, reason_of, timeout: float) -> dict[str, Cell]:
    if rc is None:
        return {c.tag: Cell("hang", detail=f"killed after {timeout:.0f} s") for c in cls}
    lines = {str(d.get("path")): d for d in _json_lines(out)}
    cells = {}
    for c in cls:
        d = _find(c.tag, {Path(k).name: v for k, v in lines.items()})
        if d is None:
            tail = (err.strip().splitlines() or [""])[-1][:200]
            cells[c.tag] = Cell("crash" if "Traceback" in err else "lost", detail=f"rc={rc}: {tail}")
            continue
        reason = reason_in(reason_of(d))
        read = d.get(read_key) is not None
        cells[c.tag] = Cell(classify(c, reason, True, read), reason, reason_of(d))
    return cells


def run_cli(work: Path, entry: str, classes=CLASSES, timeout: float = 180.0) -> dict[str, Cell]:
    cls = [c for c in classes if applies(c, entry)]
    folder = work / entry.replace(" ", "_")
    names = make_inputs(folder, cls)
    paths = [os.path.join(os.fsencode(folder), names[c.tag]) for c in cls]
    if entry == "score-image":
        rc, out, err, _ = _uhr(["score-image", *paths, "--json", "--profile", "test"], timeout, work)
        return _cli_cells(cls, rc, out, err, "width",
                          lambda d: f"{d.get('verdict')}: {d.get('reject_detail')}"
                          if d.get("verdict") in file_reasons() else None, timeout)
    if entry == "metric glcm":
        rc, out, err, _ = _uhr(["metric", "glcm", *paths, "--json"], timeout, work)
        return _cli_cells(cls, rc, out, err, "value", lambda d: d.get("reason"), timeout)
    if entry == "seam-check":
        rc, out, err, _ = _uhr(["seam-check", *paths, "--json"], timeout, work)
        return _cli_cells(cls, rc, out, err, "max_ratio", lambda d: d.get("error") or d.get("reason"), timeout)
    if entry == "bench":
        return _run_bench(work, folder, cls, names, timeout)
    if entry == "upscale":
        cells = {}
        for c, p in zip(cls, paths):
            dst = work / "upscaled" / f"{c.tag}.png"
            dst.parent.mkdir(exist_ok=True)
            rc, out, err, _ = _uhr(["upscale", p, str(dst), "--scale", "2", "--json"], 120.0, work)
            text = (out + "\n" + err).strip()
            if rc is None:
                cells[c.tag] = Cell("hang", detail="killed after 120 s")
            elif "Traceback" in err:
                cells[c.tag] = Cell("crash", detail=text.splitlines()[-1][:200])
            else:
                reason = reason_in(text) if rc != 0 else None
                read = rc == 0 and dst.exists()
                cells[c.tag] = Cell(classify(c, reason, True, read), reason,
                                    (text.splitlines() or [""])[-1][:200] if rc != 0 else None)
        return cells
    raise ValueError(entry)


def _run_bench(work: Path, folder: Path, cls, names: dict, timeout: float) -> dict[str, Cell]:
    prompts = work / "bench_prompts.jsonl"
    with open(prompts, "w") as fh:
        for c in cls:
            n = names[c.tag].decode("utf-8", "surrogateescape")
            fh.write(json.dumps({"file_name": n, "short_caption": "a photo", "long_caption": "a photo"},
                                ensure_ascii=True) + "\n")
    out_dir = work / "bench_out"
    rc, out, err, _ = _uhr(["bench", str(folder), "--prompts", str(prompts), "--metric", "glcm", "--out", str(out_dir),
                            "--data-root", str(work / "bench_root"), "--judge", "none", "--json"], timeout, work)
    if rc is None:
        return {c.tag: Cell("hang", detail=f"killed after {timeout:.0f} s") for c in cls}
    rows = {}
    csv_path = out_dir / "per_image.csv"
    if csv_path.exists():
        with open(csv_path, newline="") as fh:
            for r in csv.DictReader(fh):
                rows[r.get("file_name") or r.get("stem") or ""] = r
    cells = {}
    for c in cls:
        r = _find(c.tag, rows)
        if r is None:
            tail = (err.strip().splitlines() or [""])[-1][:200]
            cells[c.tag] = Cell("crash" if "Traceback" in err or rc else "lost", detail=f"rc={rc}: {tail}")
            continue
        why = r.get("glcm_reason") or (r.get("status") if r.get("status") not in ("ok", None) else None)
        reason = reason_in(why)
        read = bool(r.get("glcm"))
        cells[c.tag] = Cell(classify(c, reason, True, read), reason, why or None)
    return cells


def run_inputs(work: Path, entries=ENTRY_POINTS, classes=CLASSES, log=print) -> dict[str, dict[str, Cell]]:
    """``{entry point: {tag: Cell}}`` over ``classes``."""
    out = {}
    for e in entries:
        t0 = time.perf_counter()
        sub = work / e.replace(" ", "_")
        sub.mkdir(parents=True, exist_ok=True)
        out[e] = run_purification(sub, classes) if e == "purification" else run_cli(sub, e, classes)
        log(f"inputs: {e}: {time.perf_counter() - t0:.1f} s")
    return out


BAD = ("lost", "silent_pass", "crash", "hang")


def summarise_inputs(res: dict[str, dict[str, Cell]], classes=CLASSES) -> dict:
    """Counts per entry point and in all: tried, and per outcome."""
    per = {}
    for e, cells in res.items():
        counts: dict[str, int] = {}
        for c in cells.values():
            counts[c.outcome] = counts.get(c.outcome, 0) + 1
        per[e] = {"tried": len(cells), **counts}
    total: dict[str, int] = {}
    for d in per.values():
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return {"per_entry": per, "total": total, "classes": len(classes)}


# =================================================================================================
# faults
# =================================================================================================
@dataclass
class FaultResult:
    stage: str
    fault: str
    rows_in: int
    rows_out: int
    lost: int
    corrupted: int
    outcome: str  # "survived" (retried through it), "clear failure, re-run completed", "FAILED"
    recover_s: float | None = None  # seconds from the service's return to the stage done
    detail: str = ""
    extra: dict = field(default_factory=dict)


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.startswith(".") and (".tmp" in p.name or p.name.endswith(".part"))]


class _RetryCounter:
    """Counts the retry warnings of :mod:`curation.retry` whose message holds ``needle``."""

    def __init__(self, needle: str):
        import logging

        self.needle, self.n = needle, 0
        outer = self

        class _H(logging.Handler):
            def emit(self, record):
                if outer.needle in record.getMessage():
                    outer.n += 1

        self._h, self._log = _H(logging.WARNING), logging.getLogger("curation.retry")

    def __enter__(self):
        self._log.addHandler(self._h)
        return self

    def __exit__(self, *exc):
        self._log.removeHandler(self._h)


def _s3_outage(s3, delay_s: float, down_s: float, back: dict) -> threading.Thread:
    """Start a thread that stops the S3 server ``delay_s`` seconds from now for ``down_s`` seconds,
    then starts it again and sets ``back["t"]`` (``time.monotonic()``); join it after the work."""

    def fault():
        time.sleep(delay_s)
        s3.stop()
        time.sleep(down_s)
        s3.start()
        back["t"] = time.monotonic()

    th = threading.Thread(target=fault)
    th.start()
    return th


def fault_s3_upload(base: Path, down_s: float = 6.0, n: int = 40) -> FaultResult:
    """Upload ``n`` blobs while the S3 server is stopped for ``down_s`` s and restarted."""
    from curation.store import RetryPolicy, S3Store, blob_digest, put_blob
    from infra.services import S3Server

    s3 = S3Server(base / "s3-upload").start()
    try:
        st = S3Store(s3.endpoint_url, "faults", access_key=s3.access_key, secret_key=s3.secret_key,
                     retry=RetryPolicy(attempts=30, backoff_s=0.25, backoff_max_s=2.0, deadline_s=60.0))
        files = []
        src = base / "upload-src"
        src.mkdir(exist_ok=True)
        for i in range(n):
            p = src / f"f{i:03d}.bin"
            p.write_bytes(os.urandom(2048) + i.to_bytes(4, "big"))
            files.append(p)
        back = {}
        th = _s3_outage(s3, 0.3, down_s, back)
        keys, err = [], None
        try:
            for p in files:
                keys.append(put_blob(st, p)[0])
                time.sleep(0.02)
        except Exception as exc:  # noqa: BLE001 - recorded
            err = f"{type(exc).__name__}: {exc}"
        th.join()
        done = time.monotonic()
        from curation.hashing import sha256_file
        from curation.store import blob_key

        listed = set(st.list("blobs/"))
        expected = {p: sha256_file(p) for p in files}
        lost = sum(1 for p in files if blob_key(expected[p]) not in listed)
        bad = sum(1 for p in files if blob_key(expected[p]) in listed and blob_digest(st, expected[p]) != expected[p])
        outcome = "survived" if err is None and lost == 0 and bad == 0 else f"FAILED: {err}"
        return FaultResult("store sync (S3 upload)", f"S3 server stopped {down_s:g} s mid-upload, restarted", n,
                           n - lost, lost, bad, outcome,
                           round(done - back["t"], 2) if "t" in back and err is None else None, detail=err or "")
    finally:
        s3.stop()


def fault_s3_pipeline(base: Path, down_s: float = 8.0, delay_s: float = 2.0) -> FaultResult:
    """``materialize_all`` (raw_pool -> candidate_pool) publishing blobs and manifests to S3 (the
    stage sync of every asset), the S3 server stopped ``delay_s`` s in for ``down_s`` s."""
    from dagster import DagsterInstance

    from curation.layout import DataLayout
    from curation.store import S3Store, blob_key, remote_shards
    from infra.services import S3Server
    from orchestration.definitions import build_definitions
    from orchestration.pipeline import materialize_all
    from orchestration.resources import AestheticModels, CurationSettings, ObjectStoreResource, VLMEndpoint

    work = base / "s3-pipeline"
    work.mkdir(parents=True, exist_ok=True)
    s3 = S3Server(work / "s3").start()
    instance = None
    try:
        raw = _pool(work)
        data = work / "data"
        store = ObjectStoreResource(endpoint=s3.endpoint_url, bucket="uhrforge", access_key=s3.access_key,
                                    secret_key=s3.secret_key, retry_deadline_s=90.0)
        defs = build_definitions({"settings": CurationSettings(data_root=str(data), raw_root=str(raw), profile="test"),
                                  "aesthetics": AestheticModels(), "store": store, "vlm": VLMEndpoint()})
        home = work / "dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        instance = DagsterInstance.from_config(str(home))
        back = {}
        th = _s3_outage(s3, delay_s, down_s, back)
        err = None
        with _RetryCounter("S3 ") as retried:
            try:
                materialize_all(defs, instance, raw, log=lambda *_: None, with_corpus=False)
            except Exception as exc:  # noqa: BLE001
                err = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        th.join()
        done = time.monotonic()
        st = S3Store(s3.endpoint_url, "uhrforge", access_key=s3.access_key, secret_key=s3.secret_key)
        layout = DataLayout.at(data)
        from curation.manifest import read_manifest

        stages = ("raw_pool", "image_scores", "candidate_pool")
        missing = [s for s in stages if "shard-00000" not in remote_shards(st, s)]
        rp = read_manifest(layout.manifest("raw_pool", "shard-00000")).to_pylist() if not err else []
        blobs = set(st.list("blobs/"))
        no_blob = sum(1 for r in rp if r["passed"] and blob_key(r["sha256"]) not in blobs)
        n_in = _entries(raw / "shard-00000")
        lost = (n_in - len(rp)) + no_blob + len(missing)
        ok = err is None and lost == 0
        return FaultResult("store sync (materialize -> S3)", f"S3 server stopped {delay_s:g} s into the run for "
                           f"{down_s:g} s", n_in, len(rp), lost, 0, "survived" if ok else f"FAILED: {err}",
                           round(done - back["t"], 2) if ok and "t" in back else None, detail=err or "",
                           extra={"manifests_missing_in_s3": len(missing), "blobs_missing": no_blob,
                                  "s3_calls_retried": retried.n})
    finally:
        if instance is not None:
            instance.dispose()
        s3.stop()


def fault_dvc_push(base: Path, down_s: float = 8.0) -> FaultResult:
    """``dvc push`` of a 20-file release folder to S3 while the server is down ``down_s`` s."""
    from curation.dvc_repo import DvcRepo
    from curation.store import RetryPolicy
    from infra.services import S3Server

    s3 = S3Server(base / "s3-dvc").start()
    try:
        s3.make_bucket("dvc")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key)
        root = base / "dvcrepo"
        rel = root / "data" / "rel"
        rel.mkdir(parents=True)
        for i in range(20):
            (rel / f"f{i:02d}").write_bytes(os.urandom(1000))
        r = DvcRepo.for_data_root(root / "data", repo=root, env=env)
        r.retry = RetryPolicy(attempts=20, backoff_s=0.5, backoff_max_s=3.0, deadline_s=90.0)
        r.configure_remote("s3", "s3://dvc/remote", s3.endpoint_url)
        f = r.dvc_file_for("v1")
        r.track(f, rel)
        s3.stop()
        back = {}
        th = threading.Thread(target=lambda: (time.sleep(down_s), s3.start(), back.setdefault("t", time.monotonic())))
        th.start()
        err = None
        try:
            r.push(f, "s3")
        except Exception as exc:  # noqa: BLE001
            err = f"{type(exc).__name__}: {exc}"
        th.join()
        done = time.monotonic()
        pushed = r.in_remote(f, "s3") if err is None else False
        n_remote = len([o for o in s3.client().list_objects("dvc", prefix="remote/", recursive=True)])
        return FaultResult("release (dvc push)", f"S3 server down {down_s:g} s when the push starts", 20,
                           n_remote - 1 if n_remote else 0, 0 if pushed else 20, 0,
                           "survived" if pushed else f"FAILED: {err}",
                           round(done - back["t"], 2) if pushed and "t" in back else None,
                           detail=err or "", extra={"objects_in_remote": n_remote})
    finally:
        s3.stop()


def _pool(base: Path, n: int = 24, seed: int = 1) -> Path:
    from curation.config import load_config
    from curation.synth import make_raw_pool

    raw = base / "raw"
    if not raw.exists():
        make_raw_pool(raw, n, seed, load_config("test"))
    return raw


def _to_candidates(data_root: Path, raw: Path, cfg, shard: str = "shard-00000"):
    """Run the purification stages of ``shard`` on ``data_root``: (layout, shard, candidates passed)."""
    from curation.layout import DataLayout
    from curation.manifest import read_manifest
    from curation.stages import run_candidate_pool, run_image_scores, run_raw_pool, run_thresholds

    layout = DataLayout.at(data_root)
    run_raw_pool(layout, raw, shard, cfg)
    run_image_scores(layout, shard, cfg)
    run_thresholds(layout, cfg)
    run_candidate_pool(layout, shard, cfg)
    n_in = sum(r["passed"] for r in read_manifest(layout.manifest("candidate_pool", shard)).to_pylist())
    return layout, shard, n_in


def _entries(shard_dir: Path) -> int:
    """Directory entries of a raw shard that must each get a row (licence sidecars ``<stem>.json``
    of another entry excepted)."""
    names = os.listdir(shard_dir)
    stems = {os.path.splitext(n)[0] for n in names if not n.endswith(".json")}
    return sum(1 for n in names if not (n.endswith(".json") and n[:-5] in stems))


def _rows(layout, stage: str) -> int:
    from curation.manifest import read_manifest

    return sum(read_manifest(p).num_rows for p in layout.manifests(stage))


def fault_postgres_dagster(base: Path, down_s: float = 25.0, delay_s: float = 2.0, n_images: int = 24) -> FaultResult:
    """Materialise raw_pool -> candidate_pool with Dagster's run storage in Postgres; Postgres
    shut down (fast) ``delay_s`` s in, for ``down_s`` s, then started again."""
    from dagster import DagsterInstance

    from curation.layout import DataLayout
    from infra.services import PostgresServer
    from orchestration.definitions import build_definitions
    from orchestration.pipeline import materialize_all
    from orchestration.resources import AestheticModels, CurationSettings, ObjectStoreResource, VLMEndpoint

    work = base / "pg-dagster"
    work.mkdir(parents=True, exist_ok=True)
    pg = PostgresServer(work / "pg", password="uhr-faults-pg").start()
    saved = mock.patch.dict(os.environ)  # the DAGSTER_PG_* settings below are put back after
    saved.start()
    instance = None
    try:
        pg.create_database("dagster")
        os.environ.update(DAGSTER_PG_HOST="127.0.0.1", DAGSTER_PG_PORT=str(pg.port), DAGSTER_PG_USER=pg.user,
                          DAGSTER_PG_PASSWORD="uhr-faults-pg", DAGSTER_PG_DB="dagster")
        home = work / "dagster_home"
        home.mkdir(exist_ok=True)
        shutil.copy(ROOT / "infra/dagster/postgres.yaml", home / "dagster.yaml")
        instance = DagsterInstance.from_config(str(home))
        raw = _pool(work, n_images)
        data = work / "data"
        defs = build_definitions({"settings": CurationSettings(data_root=str(data), raw_root=str(raw), profile="test"),
                                  "aesthetics": AestheticModels(), "store": ObjectStoreResource(), "vlm": VLMEndpoint()})
        back = {}

        def fault():
            time.sleep(delay_s)
            back["down"] = pg.restart(down_s=down_s, mode="fast")
            back["t"] = time.monotonic()

        import logging

        retries: list[str] = []

        class _Count(logging.Handler):  # the job re-runs materialize_all made (curation.retry warnings)
            def emit(self, record):
                if "Dagster run storage" in record.getMessage():
                    retries.append(record.getMessage())

        handler = _Count(logging.WARNING)
        logging.getLogger("curation.retry").addHandler(handler)
        th = threading.Thread(target=fault)
        th.start()
        err = None
        try:
            materialize_all(defs, instance, raw, log=lambda *_: None, with_corpus=False)
        except Exception as exc:  # noqa: BLE001
            err = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            logging.getLogger("curation.retry").removeHandler(handler)
        th.join()
        done = time.monotonic()
        layout = DataLayout.at(data)
        n_in = _entries(raw / "shard-00000")
        rp, cp = _rows(layout, "raw_pool"), _rows(layout, "candidate_pool")
        scored = _rows(layout, "image_scores")
        from curation.manifest import read_manifest

        passed_rp = sum(sum(1 for r in read_manifest(p).to_pylist() if r["passed"]) for p in layout.manifests("raw_pool"))
        lost = (n_in - rp) + (passed_rp - scored) + (scored - cp if cp else scored)
        statuses = [str(r.status).split(".")[-1] for r in instance.get_runs()]
        ok = err is None and lost == 0
        return FaultResult("Dagster run storage (Postgres)",
                           f"Postgres fast shutdown {delay_s:g} s into the run, down {back.get('down', 0):.0f} s",
                           n_in, rp, lost, 0, "survived (job re-run after the outage)" if ok and retries
                           else "survived" if ok else f"FAILED: {err}",
                           round(done - back["t"], 2) if ok and "t" in back else None, detail=err or "",
                           extra={"runs": statuses, "job_retries": len(retries), "candidate_pool_rows": cp})
    finally:
        if instance is not None:
            instance.dispose()
        pg.stop()
        saved.stop()


def fault_postgres_mlflow(base: Path, down_s: float = 6.0) -> FaultResult:
    """MLflow with its backend store in Postgres (a ``postgresql://`` tracking URI): 30 metrics
    logged while Postgres is shut down for ``down_s`` s and started again."""
    from curation.tracking import open_experiment
    from infra.services import PostgresServer

    work = base / "pg-mlflow"
    pg = PostgresServer(work / "pg", password="uhr-faults-pg").start()
    try:
        uri = pg.create_database("mlflow").replace("postgresql://", "postgresql+psycopg2://")
        client, exp = open_experiment(uri, "faults")
        run = client.create_run(exp)
        rid = run.info.run_id
        back = {}
        th = threading.Thread(target=lambda: (back.setdefault("down", pg.restart(down_s=down_s)),
                                              back.setdefault("t", time.monotonic())))
        n, err = 30, None
        th.start()
        time.sleep(0.3)
        try:
            for i in range(n):
                client.log_metric(rid, "m", float(i), step=i)
                time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001
            err = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        th.join()
        done = time.monotonic()
        got = len(client.get_metric_history(rid, "m"))
        return FaultResult("MLflow backend store (Postgres)", f"Postgres fast shutdown mid-logging, down {down_s:g} s",
                           n, got, n - got, 0, "survived" if err is None and got == n else f"FAILED: {err}",
                           round(done - back["t"], 2) if err is None and "t" in back else None, detail=err or "")
    finally:
        pg.stop()


def _vlm_server(port: int, behaviour: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(ROOT / "tests" / "vlm_server.py"), "--port", str(port),
                          "--behaviour", behaviour], stdout=subprocess.PIPE, start_new_session=True)
    p.stdout.readline()  # the port: listening
    return p


def _kill(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(timeout=10)


VLM_MODES = (("slow:3", "slow (3 s per answer, timeout 1 s)"),
             ("trickle:0.05", "trickling (1 byte / 50 ms, timeout 1 s)"),
             ("garbage", "garbage answers (not JSON)"), ("status:503", "HTTP 503 on every call"))


def fault_vlm(base: Path, modes=VLM_MODES, n: int = 6, kill: bool = True) -> list[FaultResult]:
    """The corpus judge's client against a VLM server process that is slow, trickles its answer,
    answers garbage, and is killed then restarted; each bounded, every request answered
    (``judge_failed`` is a failure, never a pass), a re-run after the restart passes."""
    import numpy as np

    from curation.vlm import create_vlm_client
    from curation.vlm.client import VLMRequest
    from infra.services import free_port

    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = 200
    settings = {"model": "test-vlm", "timeout_s": 1.0, "retries": 2, "backoff_s": 0.2, "backoff_max_s": 1.0,
                "schema_retries": 1, "max_concurrency": 4}
    out = []
    for behaviour, label in modes:
        port = free_port()
        srv = _vlm_server(port, behaviour)
        try:
            c = create_vlm_client({**settings, "endpoint": f"http://127.0.0.1:{port}"})
            t0 = time.perf_counter()
            res = c.run([VLMRequest(task="region_artifact", image_id=f"{behaviour}-{i}", images=[img]) for i in range(n)])
            dt = time.perf_counter() - t0
            c.close()
        finally:
            _kill(srv)
        failed = sum(r.status == "judge_failed" for r in res)
        passed = sum(r.ok for r in res)
        reasons = sorted({(r.reason or "").split(" (gave up")[0][:80] for r in res if not r.ok})
        out.append(FaultResult("corpus judge (VLM)", label, n, len(res), n - len(res), 0,
                               "clear failure (judge_failed)" if failed == n else f"FAILED: {passed} passed",
                               None, detail="; ".join(reasons), extra={"seconds": round(dt, 2)}))
    if not kill:
        return out
    # killed mid-batch, restarted: a re-run judges what failed
    port = free_port()
    srv = _vlm_server(port, "slow:0.3")
    c = create_vlm_client({**settings, "endpoint": f"http://127.0.0.1:{port}", "cache_dir": str(base / "vlm-cache")})
    reqs = [VLMRequest(task="region_artifact", image_id=f"k-{i}", images=[img]) for i in range(12)]
    threading.Timer(0.5, lambda: _kill(srv)).start()
    first = c.run(reqs)
    srv = _vlm_server(port, "ok")
    t_back = time.monotonic()
    try:
        second = c.run(reqs)
        done = time.monotonic()
    finally:
        _kill(srv)
        c.close()
    f1 = sum(not r.ok for r in first)
    ok2 = sum(r.ok for r in second)
    out.append(FaultResult("corpus judge (VLM)", "server process killed mid-batch, restarted; re-run", len(reqs),
                           len(second), len(reqs) - len(second), 0,
                           "clear failure, re-run completed" if ok2 == len(reqs) else f"FAILED: {ok2} ok on re-run",
                           round(done - t_back, 2), detail=f"first run: {f1} judge_failed, {len(reqs) - f1} ok "
                           "(answered before the kill, cached)"))
    return out


def _stages_until_error(data_root: Path, raw: Path, shard: str = "shard-00000") -> str | None:
    """raw_pool then image_scores of ``shard`` on ``data_root``; the first error as one string."""
    from curation.config import load_config
    from curation.layout import DataLayout
    from curation.stages import run_image_scores, run_raw_pool

    cfg, layout = load_config("test"), DataLayout.at(data_root)
    for fn in (lambda: run_raw_pool(layout, raw, shard, cfg), lambda: run_image_scores(layout, shard, cfg)):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            return f"{type(exc).__name__}: {exc}"
    return None


_RLIMIT_CHILD = """
import resource, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/benchmarks")
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[4]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
import reliability
from pathlib import Path
print(reliability._stages_until_error(Path(sys.argv[2]), Path(sys.argv[3])) or "")
"""


def fault_full_disk(base: Path, size: str = "200k", rlimit: bool | None = None) -> FaultResult:
    """raw_pool + image_scores on a data root that is a ``size`` tmpfs (mounted here, as root);
    it fills, the stage fails with one line, nothing partial is left; the tmpfs is grown and a
    re-run completes with every row. Where mounting is refused (not root), or with ``rlimit``,
    the first run is a child process whose files may not grow past 8 KB (``RLIMIT_FSIZE``:
    ``EFBIG``, the same class of error) and the re-run is this process, without the limit."""
    from curation.manifest import read_manifest

    work = base / "disk"
    work.mkdir(parents=True, exist_ok=True)
    raw = _pool(work)
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    mounted = False
    if not rlimit:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                           text=True)
        mounted = r.returncode == 0
    how = f"full disk ({size} tmpfs), grown to 64 MB, re-run" if mounted else \
        "file size limit (RLIMIT_FSIZE 8 KB) in the first run, lifted, re-run"
    try:
        data = mnt / "data"
        if mounted:
            err = _stages_until_error(data, raw)
        else:
            child = subprocess.run([sys.executable, "-c", _RLIMIT_CHILD, str(ROOT), str(data), str(raw), "8192"],
                                   capture_output=True, text=True, timeout=300)
            err = (child.stdout.strip().splitlines() or [None])[-1] or \
                (f"child exited {child.returncode}: {child.stderr.strip()[-200:]}" if child.returncode else None)
        leftovers = _leftovers(mnt)
        partial = []
        for p in (data / "manifests").rglob("*.parquet") if (data / "manifests").exists() else []:
            try:
                read_manifest(p)
            except Exception:  # noqa: BLE001
                partial.append(str(p))
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        t0 = time.monotonic()
        err2 = _stages_until_error(data, raw)
        done = time.monotonic()
        shard = "shard-00000"
        n_in = _entries(raw / shard)
        from curation.layout import DataLayout

        layout = DataLayout.at(data)
        rp = read_manifest(layout.manifest("raw_pool", shard)).to_pylist() if err2 is None else []
        sc = read_manifest(layout.manifest("image_scores", shard)).num_rows if err2 is None else 0
        passed = sum(r["passed"] for r in rp)
        lost = (n_in - len(rp)) + (passed - sc)
        one_line = bool(err) and "\n" not in err
        outcome = ("clear failure, re-run completed" if err and one_line and not leftovers and not partial
                   and lost == 0 and err2 is None
                   else f"FAILED: error={err} leftovers={leftovers} partial={partial} rerun={err2}")
        return FaultResult("purification (data root)", how, n_in, len(rp), lost, len(partial) + len(leftovers),
                           outcome, round(done - t0, 2), detail=(err or "no error: the disk did not fill")[:200])
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fault_vlm_corpus(base: Path) -> FaultResult:
    """``corpus_100mp`` with its region judge on an HTTP VLM endpoint that is down (nothing
    listening): every judged row is ``judge_failed`` (never a pass), in bounded time; the server
    process is started and the stage run again: those rows are judged, no row lost."""
    from curation.config import load_config
    from curation.corpus import run_corpus
    from curation.vlm import create_vlm_client
    from infra.services import free_port

    cfg = load_config("test")
    work = base / "vlm-corpus"
    work.mkdir(parents=True, exist_ok=True)
    raw = _pool(work)
    layout, shard, n_in = _to_candidates(work / "data", raw, cfg)
    port = free_port()
    model = cfg.get("judges.corpus")["model"]
    settings = {"endpoint": f"http://127.0.0.1:{port}", "model": model, "timeout_s": 2.0, "retries": 2,
                "backoff_s": 0.1, "backoff_max_s": 0.5, "cache_dir": str(work / "vlm-cache")}
    client = create_vlm_client(settings)
    t0 = time.perf_counter()
    first = run_corpus(layout, shard, cfg, judge_client=client).rows
    t_down = time.perf_counter() - t0
    failed = sum(r.get("reject_reason") == "judge_failed" for r in first)
    leaked = sum(bool(r.get("passed")) for r in first if r.get("tier") in ("2x", "4x"))
    srv = subprocess.Popen([sys.executable, str(ROOT / "tests" / "vlm_server.py"), "--port", str(port),
                            "--model", model], stdout=subprocess.PIPE, start_new_session=True)
    try:
        srv.stdout.readline()
        t_back = time.monotonic()
        second = run_corpus(layout, shard, cfg, judge_client=client).rows
        done = time.monotonic()
    finally:
        _kill(srv)
        client.close()
    still = sum(r.get("reject_reason") == "judge_failed" for r in second)
    ok = failed > 0 and leaked == 0 and still == 0 and len(first) == len(second) == n_in
    return FaultResult("corpus_100mp (VLM judge)", "endpoint down for a whole run, then started; re-run", n_in,
                       len(second), n_in - len(second), 0,
                       "clear failure, re-run completed" if ok else
                       f"FAILED: judge_failed {failed}, upscaled passed while down {leaked}, still failed {still}",
                       round(done - t_back, 2),
                       detail=f"first run: {failed} of {len(first)} rows judge_failed in {t_down:.0f} s, none passed; "
                              f"re-run: {still} judge_failed")


def fault_full_disk_corpus(base: Path) -> FaultResult:
    """The 100 MP corpus stage on a tmpfs data root that holds the purification stages with 3 MB
    to spare: the first upscaled output fills it; the stage must fail (no ``upscale_failed``
    verdict recorded, no partial output left), and after growing the tmpfs a re-run gives every
    candidate its row."""
    from curation.config import load_config
    from curation.corpus import run_corpus

    cfg = load_config("test")
    work = base / "disk-corpus"
    work.mkdir(parents=True, exist_ok=True)
    raw = _pool(work)
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        return FaultResult("corpus_100mp (data root)", "full disk during SR", 0, 0, 0, 0,
                           f"skipped: mount refused ({r.stderr.strip()[:100]})")
    try:
        layout, shard, n_in = _to_candidates(mnt / "data", raw, cfg)
        used = int(subprocess.run(["df", "-k", "--output=used", str(mnt)], capture_output=True,
                                  text=True).stdout.split()[-1])
        subprocess.run(["mount", "-o", f"remount,size={used + 3000}k", str(mnt)], check=True)
        err = None
        try:
            run_corpus(layout, shard, cfg)
        except Exception as exc:  # noqa: BLE001
            err = f"{type(exc).__name__}: {exc}"
        committed = layout.manifest("corpus_100mp", shard).exists()
        leftovers = _leftovers(mnt) + [str(p) for p in (mnt / "data" / "corpus" / "_work").glob("*")]
        subprocess.run(["mount", "-o", "remount,size=512m", str(mnt)], check=True)
        t0 = time.monotonic()
        res = run_corpus(layout, shard, cfg)
        done = time.monotonic()
        rows = res.rows
        wrong = sum(1 for r in rows if r.get("reject_reason") == "upscale_failed")
        ok = err is not None and "\n" not in err and not committed and not leftovers and len(rows) == n_in and not wrong
        return FaultResult("corpus_100mp (data root)", "full disk at the first SR output (3 MB free), grown, re-run",
                           n_in, len(rows), n_in - len(rows), len(leftovers),
                           "clear failure, re-run completed" if ok else
                           f"FAILED: error={err} committed={committed} leftovers={leftovers} upscale_failed={wrong}",
                           round(done - t0, 2), detail=(err or "no error: the disk did not fill")[:200])
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def run_faults(base: Path, quick: bool = False, log=print) -> list[FaultResult]:
    out: list[FaultResult] = []
    steps = [("s3 upload", lambda: [fault_s3_upload(base, down_s=6.0)]),
             ("s3 pipeline", lambda: [fault_s3_pipeline(base)]),
             ("dvc push", lambda: [fault_dvc_push(base, down_s=8.0)]),
             ("postgres dagster", lambda: [fault_postgres_dagster(base, down_s=20.0 if quick else 30.0)]),
             ("vlm", lambda: fault_vlm(base)),
             ("full disk", lambda: [fault_full_disk(base / "tmpfs"), fault_full_disk(base / "rlimit", rlimit=True)])]
    if not quick:
        steps.append(("vlm corpus", lambda: [fault_vlm_corpus(base)]))
        steps.append(("full disk corpus", lambda: [fault_full_disk_corpus(base)]))
    if not quick:
        steps.insert(3, ("postgres mlflow", lambda: [fault_postgres_mlflow(base)]))
    for name, fn in steps:
        t0 = time.perf_counter()
        try:
            out.extend(fn())
        except Exception as exc:  # noqa: BLE001 - the harness itself failed: say so in the report
            out.append(FaultResult(name, "harness error", 0, 0, 0, 0, f"FAILED: {type(exc).__name__}: {exc}"[:300]))
        log(f"faults: {name}: {time.perf_counter() - t0:.1f} s")
    return out


# =================================================================================================
# report
# =================================================================================================
_SYMBOL = {"rejected": "ok", "accepted": "ok", "wrong_reason": "wrong reason", "false_reject": "FALSE REJECT",
           "silent_pass": "SILENT PASS", "lost": "LOST", "crash": "CRASH", "hang": "HANG",
           "rejected_no_reason": "rejected, no reason", "no_result": "no result"}


def render(inputs: dict[str, dict[str, Cell]], faults: list[FaultResult], meta: dict, classes=CLASSES) -> str:
    summ = summarise_inputs(inputs, classes)
    tot = summ["total"]
    entries = list(inputs)
    L = ["# Reliability report", "",
         f"Generated by `benchmarks/reliability.py` on {meta['date']} (commit {meta['commit']}, "
         f"{meta['cpus']} CPUs, load average {meta['load_before']} before / {meta['load_after']} after, "
         f"{meta['seconds']:.0f} s{', quick run' if meta.get('quick') else ''}). Regenerate: "
         "`.venv/bin/python benchmarks/reliability.py` (as root, for the tmpfs).", "",
         "## Summary", "",
         f"* **{summ['classes']} input classes** x **{len(entries)} entry points**: {sum(tot.get(k, 0) for k in tot if k != 'tried')} "
         f"(class, entry point) pairs tried.",
         f"* **rows lost: {tot.get('lost', 0)}**, **silent passes: {tot.get('silent_pass', 0)}**, crashes: "
         f"{tot.get('crash', 0)}, hangs: {tot.get('hang', 0)}, false rejects: {tot.get('false_reject', 0)}, "
         f"wrong reasons: {tot.get('wrong_reason', 0)}.",
         f"* **faults injected: {len(faults)}**; rows lost over all of them: {sum(f.lost for f in faults)}, "
         f"files corrupted or left partial: {sum(f.corrupted for f in faults)}; "
         f"not recovered: {sum(1 for f in faults if f.outcome.startswith('FAILED'))}.", "",
         "## Inputs: outcome per class and entry point", "",
         "`ok` = rejected for an expected reason, or (valid input) read and scored. The reason found is "
         "given in brackets. `LOST` = no row or output line at all; `SILENT PASS` = an input that must be "
         "rejected was read and scored; `FALSE REJECT` = a valid input rejected for a file reason; "
         "`CRASH` = a traceback or the whole call failing; `HANG` = killed at the time limit; `-` = not "
         "applicable. *Depends on* names the part of issue 15 that makes the class hold.", "",
         "| class | expected | depends on | " + " | ".join(entries) + " |",
         "|---|---|---|" + "---|" * len(entries)]
    for c in classes:
        cells = []
        for e in entries:
            cell = inputs[e].get(c.tag)
            if cell is None:
                cells.append("-")
                continue
            s = _SYMBOL.get(cell.outcome, cell.outcome)
            if cell.reason and cell.outcome != "accepted":
                s += f" ({cell.reason})"
            cells.append(s)
        exp = ", ".join(sorted(c.expect)) if c.expect else "read"
        L.append(f"| {c.tag} {c.name} | {exp} | {c.depends} | " + " | ".join(cells) + " |")
    L += ["", "| entry point | tried | " + " | ".join(_SYMBOL) + " |", "|---|---|" + "---|" * len(_SYMBOL)]
    for e, d in summ["per_entry"].items():
        L.append(f"| {e} | {d['tried']} | " + " | ".join(str(d.get(k, 0)) for k in _SYMBOL) + " |")
    problems = [(e, c.tag, cell) for e in entries for c in classes
                for cell in [inputs[e].get(c.tag)] if cell and cell.outcome not in ("rejected", "accepted")]
    if problems:
        L += ["", "### Open problems (details)", ""]
        groups: dict[tuple, list[str]] = {}
        for e, tag, cell in problems:  # one line per entry point, outcome and detail
            detail = str(cell.detail or "")[:200]
            if meta.get("work"):
                detail = detail.replace(str(meta["work"]), "<work>")
            groups.setdefault((e, cell.outcome, detail), []).append(tag)
        for (e, outcome, detail), tags in groups.items():
            L.append(f"* `{e}` / {', '.join(tags)}: **{outcome}**" + (f" -- {detail}" if detail else ""))
    L += ["", "## Faults injected into the real services", "",
          "Each fault is injected into the real server process (SeaweedFS `weed mini`, PostgreSQL 15, the "
          "local OpenAI-compatible VLM server run as its own process, a tmpfs data root) while the stage "
          "runs. *Recover s*: from the service being back to the stage finished.", "",
          "| stage | fault | rows in | rows out | lost | corrupted | outcome | recover s | detail |",
          "|---|---|---|---|---|---|---|---|---|"]
    for f in faults:
        det = (f.detail or "").replace("|", "/").replace("\n", " ")
        if meta.get("work"):
            det = det.replace(str(meta["work"]), "<work>")
        det = det[:160]
        extra = f" ({', '.join(f'{k}={v}' for k, v in f.extra.items())})" if f.extra else ""
        L.append(f"| {f.stage} | {f.fault} | {f.rows_in} | {f.rows_out} | {f.lost} | {f.corrupted} | {f.outcome} | "
                 f"{'' if f.recover_s is None else f'{f.recover_s:.1f}'} | {det}{extra} |")
    L += ["", "## What bounds each fault", "",
          "* **S3** (`curation.store.S3Store`): every call retried with exponential backoff and jitter "
          "(`curation.retry.RetryPolicy`: 10 attempts, 0.5 s doubling to 8 s, 120 s deadline by default; "
          "`ObjectStoreResource.retry_attempts` / `retry_deadline_s`), urllib3's own retries off, connect "
          "10 s / read 120 s; then `StoreUnavailable` with one line (operation, key, endpoint, attempts, "
          "seconds, last error). Downloads go to a temporary file renamed into place; uploads are whole "
          "objects, so a retry never leaves half a blob.",
          "* **DVC push** (`curation.dvc_repo.DvcRepo.push` / `in_remote`): retried while the remote is "
          "unreachable (same policy; a push sends only what the remote lacks), then one `DvcError` line "
          "holding DVC's own ERROR line.",
          "* **Postgres behind Dagster** (`orchestration.pipeline.materialize_all`): Dagster's own connection "
          "retries cover a few seconds; a longer outage fails the run (recorded FAILURE once Postgres is back) "
          "and the job is run again (`RUN_STORAGE_RETRY`: 5 attempts, 180 s); committed stages are reused.",
          "* **Postgres behind MLflow** (`curation.tracking.RetryingClient`): every client call retried "
          "while the backend store or server is unreachable (8 attempts, 120 s).",
          "* **VLM** (`curation.vlm.client`): per-request timeout on the whole answer (a trickling server "
          "too), transport errors and 408/429/5xx retried with backoff, garbage re-asked "
          "`schema_retries` times; then `judge_failed` with the reason (never a pass); the corpus stage "
          "retries `judge_failed` rows on its next run.",
          "* **Full disk** (`curation.atomic.replacing`): every manifest, cache entry, thumbnail, model view "
          "and corpus file is written to a temporary file and renamed; a failed write removes the "
          "temporary file and names the target; a disk error fails the stage (never recorded as a "
          "verdict on an image), so the re-run redoes exactly that work.", "",
          "## What this report does not cover", "",
          "* The slow / trickling / garbage / 503 VLM faults drive the judge client alone; only \"endpoint down "
          "for a whole run\" goes through `corpus_100mp` itself (full report only).",
          "* MLflow is faulted with a `postgresql://` tracking URI (the client's own store); behind an "
          "`mlflow server` the server's connection pool meets the outage and the client sees HTTP 5xx, which "
          "MLflow's REST client and `RetryingClient` both retry, but that path is not injected here.",
          "* S3 faults stop the server between requests and during small uploads; a server killed in the "
          "middle of a multipart upload of a large blob is not tried (S3 never shows an incomplete object).",
          "* Full-disk faults cover the purification and corpus stages; the release writer, the captions "
          "export and the bench's reports are not run on a full disk here.",
          "* `tests/test_faults.py` runs the faults with short outages and the input half on `purification` and "
          "`score-image` only (the other entry points run here, in the full report).", ""]
    return "\n".join(L) + "\n"


def _meta(quick: bool, t0: float, load0: str) -> dict:
    from benchmarks._measure import git_state

    git = git_state(".", ":(exclude)docs")  # the code measured: everything but the reports
    commit = f"`{git['head'] or '?'}`" + (" with uncommitted changes to " + ", ".join(
        f"`{line[3:]}`" for line in git["dirty"]) if git["dirty"] else "")
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
            "cpus": os.cpu_count(), "load_before": load0, "load_after": "%.2f" % os.getloadavg()[0],
            "seconds": time.perf_counter() - t0, "quick": quick}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="no `uhr upscale`/`uhr bench`, shorter outages, no MLflow")
    ap.add_argument("--no-faults", action="store_true")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    load0 = "%.2f" % os.getloadavg()[0]
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="uhr-reliability-"))
    try:
        entries = tuple(e for e in ENTRY_POINTS if not (a.quick and e in ("upscale", "bench")))
        inputs = run_inputs(work / "inputs", entries, log=lambda m: print(m, file=sys.stderr))
        faults = [] if a.no_faults else run_faults(work / "faults", a.quick, log=lambda m: print(m, file=sys.stderr))
        meta = _meta(a.quick, t0, load0)
        text = render(inputs, faults, {**meta, "work": str(work)})
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
        if a.json:
            Path(a.json).write_text(json.dumps({
                "meta": meta, "summary": summarise_inputs(inputs),
                "inputs": {e: {t: asdict(c) for t, c in cells.items()} for e, cells in inputs.items()},
                "faults": [asdict(f) for f in faults]}, indent=1, default=str))
        s = summarise_inputs(inputs)["total"]
        print(f"{a.out}: lost {s.get('lost', 0)}, silent passes {s.get('silent_pass', 0)}, "
              f"faults not recovered {sum(1 for f in faults if f.outcome.startswith('FAILED'))}")
        return 0
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
