"""A tiny bench for the demo and the tests: prompts, reference images and "models" that are the
reference images degraded in different ways (no generator or weights needed).

Layout written under ``root``::

    bench_models/benchmark.jsonl        the prompts file (PixVerve-Bench layout)
    bench_models/<model>/<stem>.png     one folder per "model"
    bench_reference/<stem>.png          the real images (FID family)

Models (all saved as PNG, so the compression ratio compares content, not codecs):

* ``blur_jpeg``: Gaussian blur (sigma 1.5) then a JPEG round trip at quality 35;
* ``down_up``: area downscale by 4 then bicubic upscale back (a cheap "upscaler");
* ``reference_copy`` (optional): the reference itself, an oracle (FID ~ 0).

References come from :func:`curation.synth.generate_photo` (procedural photos: smooth fields,
texture, hard-edged shapes), so nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

DEFAULT_SIZE = (2048, 1536)  # width, height: 3.1 MP, 12 MSFI patch cells of 512 px
PROMPTS = [
    ("a sunlit meadow", "A wide sunlit meadow of mottled green and ochre texture with a pale violet ellipse "
                        "floating in the upper left and a dark triangular shape near the centre."),
    ("stones on a beach", "Rounded stones scattered over a grainy beach, warm grey tones, a large soft circle in "
                          "the lower half and small bright fragments clustered to the right."),
    ("a misty forest", "A misty forest floor in muted blues and greens, blotchy foliage texture, a tall "
                       "rectangular trunk on the left and a magenta banner shape in the middle."),
    ("an abstract mural", "An abstract painted mural with cloudy pastel colours, overlapping translucent "
                          "polygons and a cyan triangle at the bottom right edge."),
    ("autumn leaves", "Close-up of autumn leaves on wet ground, rich orange and brown speckles, a pink teardrop "
                      "shape at the left border and scattered confetti-like shards."),
    ("a rocky cliff", "A rocky cliff face with fine grain and deep shadows, a pale horizontal band across the top "
                      "and a bright rounded boulder in the foreground."),
]


@dataclass
class DemoBench:
    root: Path
    bench_root: Path
    prompts_file: Path
    reference_dir: Path
    models: list[str] = field(default_factory=list)


def degrade_blur_jpeg(rgb: np.ndarray, sigma: float = 1.5, quality: int = 35) -> np.ndarray:
    import cv2
    from PIL import Image

    blurred = cv2.GaussianBlur(rgb, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    buf = io.BytesIO()
    Image.fromarray(blurred).save(buf, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return np.asarray(im.convert("RGB"))


def degrade_down_up(rgb: np.ndarray, factor: int = 4) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blur_jpeg": degrade_blur_jpeg,
    "down_up": degrade_down_up,
    "reference_copy": lambda rgb: rgb,
}


def build_demo_bench(root: str | os.PathLike, n: int = 5, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0,
                     models: tuple[str, ...] = ("blur_jpeg", "down_up"), force: bool = False,
                     log: Callable[[str], None] | None = None) -> DemoBench:
    """Write the demo bench under ``root`` (kept when already complete, unless ``force``)."""
    from PIL import Image

    from curation.synth import generate_photo

    if not 1 <= n <= len(PROMPTS):
        raise ValueError(f"n must be in 1..{len(PROMPTS)}")
    unknown = [m for m in models if m not in DEGRADATIONS]
    if unknown:
        raise ValueError(f"unknown demo model(s) {unknown}; known: {sorted(DEGRADATIONS)}")
    root = Path(root)
    bench = DemoBench(root, root / "bench_models", root / "bench_models" / "benchmark.jsonl",
                      root / "bench_reference", list(models))
    bench.bench_root.mkdir(parents=True, exist_ok=True)
    bench.reference_dir.mkdir(parents=True, exist_ok=True)
    stems = [f"pvb_{i:04d}" for i in range(n)]
    lines = [json.dumps({"file_name": f"{s}.jpg", "short_caption": PROMPTS[i][0], "long_caption": PROMPTS[i][1]})
             for i, s in enumerate(stems)]
    text = "\n".join(lines) + "\n"
    if force or not bench.prompts_file.exists() or bench.prompts_file.read_text() != text:
        bench.prompts_file.write_text(text)
    w, h = size
    for i, stem in enumerate(stems):
        ref = bench.reference_dir / f"{stem}.png"
        outs = {m: bench.bench_root / m / f"{stem}.png" for m in models}
        if not force and ref.exists() and all(p.exists() for p in outs.values()):
            continue
        if force or not ref.exists():
            rgb = generate_photo(w, h, seed + i)
            Image.fromarray(rgb).save(ref, compress_level=1)
        else:
            from curation.imageio import open_checked  # the reader contract, as every reader

            with open_checked(ref) as im:
                rgb = np.asarray(im.convert("RGB"))
        for m, p in outs.items():
            if force or not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(DEGRADATIONS[m](rgb)).save(p, compress_level=1)
        if log:
            log(f"  demo bench image {stem} ({w}x{h}) and {len(models)} degraded copies")
    return bench
