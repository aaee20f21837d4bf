"""The "6 + 4" patch sampler: 6 highest-texture cells plus 4 random ones, at full resolution.

Shared by MSFI's local views (512-px patches, 1024 px when the long edge is >= 7680; bench
issue) and the corpus's region-level artifact check (768-px patches; paper 3.1.4). Library
only: no Dagster, no model.

Protocol (reference: PixVerve-95K ``eval/util/image_process.py`` @3f9e7bd,
``MSFI_Preprocessor.process_image``):

1. **Analysis copy**: the RGB image resized with Pillow's LANCZOS so its long edge is 2048
   (``w > h``: ``(2048, int(h * 2048 / w))``, else ``(int(w * 2048 / h), 2048)``), then
   ``convert("L")``. *Deviation*: an image whose long edge is already <= 2048 is used as is
   (never upscaled); the reference upscales it.
2. **Grid**: ``scale = analysis_width / width``; cell side ``a = int(patch_size * scale)``;
   cells at ``x, y = 0, a, 2a, ...`` while the whole cell fits (partial cells dropped),
   row-major (y outer, x inner).
3. **Score**: per cell (computed on the cell alone, OpenCV's default reflected border),
   ``Sobel(cell, CV_64F, 1, 0, ksize=3)`` and ``(0, 1)``, magnitude ``sqrt(gx^2 + gy^2)``,
   score = its variance (``np.var``, population).
4. **Select**: cells sorted by score, descending, ties kept in grid order (stable); the first
   ``n_top`` (6) are "top"; from the rest, ``n_random`` (4) drawn without replacement by the
   caller's generator, in draw order ("random"). When fewer than ``n_random`` remain, all of
   them are taken in score order and the generator is not used (as the reference).
5. **Map back**: ``x = int(round(ax / scale))``, ``y = int(round(ay / scale))`` (Python's
   round: half to even), ``right = min(x + patch_size, width)``, ``bottom = min(y +
   patch_size, height)``, then ``x = max(0, right - patch_size)``, ``y = max(0, bottom -
   patch_size)``: the box is shifted back inside the image, and is smaller than the patch
   only when the image is.

Generators: pass a ``numpy.random.Generator`` (draws ``rng.choice(n, k, replace=False)``) or a
``random.Random``; with ``random.Random(42)`` shared over the images in bench order this
reproduces the reference exactly (it calls ``random.sample(remaining, 4)`` on the module
``random`` seeded 42 at import). The numpy draws differ from the reference's.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from typing import Any, Union

import numpy as np

ANALYSIS_LONG_EDGE = 2048
N_TOP = 6
N_RANDOM = 4

Generator = Union[np.random.Generator, random.Random]


@dataclass(frozen=True)
class PatchBox:
    """A selected patch: full-resolution box ``(x, y, w, h)`` and how it was chosen."""

    x: int
    y: int
    w: int
    h: int
    source: str  # "top" | "random"
    rank: int  # position in the score order (0 = highest Sobel variance)
    score: float  # Sobel-magnitude variance of the analysis cell
    cell: tuple[int, int, int]  # (ax, ay, side) of the cell on the analysis copy

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)

    def pil_box(self) -> tuple[int, int, int, int]:
        """``(left, upper, right, lower)`` for ``PIL.Image.crop``."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def relative_coords(self, width: int, height: int) -> list[float]:
        """``[x_min, y_min, x_max, y_max]`` / image size, rounded to 6 digits (the judge prompt's)."""
        return [round(self.x / width, 6), round(self.y / height, 6),
                round((self.x + self.w) / width, 6), round((self.y + self.h) / height, 6)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_pil(image: Any):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        from curation.imageio import open_checked  # the reader contract: pixel limit before decode

        with open_checked(image) as im:
            return im.convert("RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise ValueError(f"expected a PIL image, a path or a uint8 array, got {a.dtype} {a.shape}")
    return Image.fromarray(np.ascontiguousarray(a))


def resize_long_edge(img: Any, long_edge: int, upscale: bool = False):
    """Pillow LANCZOS resize to ``long_edge`` with the reference's size rule (``int`` truncation).

    Returns the image unchanged when its long edge is already ``<= long_edge`` and
    ``upscale`` is False.
    """
    from PIL import Image

    w, h = img.size
    if max(w, h) <= long_edge and not upscale:
        return img
    if w > h:
        size = (long_edge, int(h * (long_edge / w)))
    else:
        size = (int(w * (long_edge / h)), long_edge)
    return img.resize(size, resample=Image.LANCZOS)


def analysis_copy(image: Any, long_edge: int = ANALYSIS_LONG_EDGE) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Grey analysis copy (uint8), the scale ``analysis_width / width`` and the full size (w, h)."""
    img = _as_pil(image)
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    small = resize_long_edge(img, long_edge)
    grey = np.asarray(small.convert("L"), dtype=np.uint8)
    return grey, grey.shape[1] / w, (w, h)


def sobel_variance(cell: np.ndarray) -> float:
    """Variance of the Sobel gradient magnitude of one cell (CV_64F, ksize 3)."""
    import cv2

    gx = cv2.Sobel(cell, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(cell, cv2.CV_64F, 0, 1, ksize=3)
    return float(np.var(np.sqrt(gx * gx + gy * gy)))


def grid_scores(grey: np.ndarray, side: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Row-major cell origins ``(ax, ay)`` of the ``side`` grid and each cell's score."""
    h, w = grey.shape
    side = max(1, int(side))
    coords = [(x, y) for y in range(0, h - side + 1, side) for x in range(0, w - side + 1, side)]
    scores = np.array([sobel_variance(grey[y:y + side, x:x + side]) for x, y in coords], dtype=np.float64)
    return coords, scores


def _draw(rng: Generator, n: int, k: int) -> list[int]:
    if isinstance(rng, random.Random):
        return rng.sample(range(n), k)  # same draws as random.sample(remaining_list, k)
    if isinstance(rng, np.random.Generator):
        return [int(i) for i in rng.choice(n, size=k, replace=False)]
    raise TypeError(f"rng must be a numpy Generator or random.Random, got {type(rng).__name__}")


def sample_patches(
    image: Any,
    patch_size: int,
    rng: Generator,
    n_top: int = N_TOP,
    n_random: int = N_RANDOM,
    analysis_long_edge: int = ANALYSIS_LONG_EDGE,
) -> list[PatchBox]:
    """Select ``n_top`` highest-Sobel-variance cells plus ``n_random`` random others (see module doc).

    ``image``: a PIL image, a path, or a uint8 array (RGB or grey). ``rng`` is required so
    runs are reproducible; share one generator over a set of images in a fixed order.
    Returns up to ``n_top + n_random`` boxes (fewer when the grid has fewer cells; none when
    the image is smaller than one cell).
    """
    if patch_size < 1:
        raise ValueError("patch_size must be positive")
    grey, scale, size = analysis_copy(image, analysis_long_edge)
    return select_patches(grey, scale, size, patch_size, rng, n_top, n_random)


def select_patches(grey: np.ndarray, scale: float, size: tuple[int, int], patch_size: int, rng: Generator,
                   n_top: int = N_TOP, n_random: int = N_RANDOM) -> list[PatchBox]:
    """Steps 2-5 of the protocol on a given grey analysis copy (``scale`` = analysis width /
    full width, ``size`` = full ``(w, h)``): grid, score, select, map back to full resolution."""
    w, h = size
    side = int(patch_size * scale)
    if side < 1:
        return []
    coords, scores = grid_scores(grey, side)
    order = np.argsort(-scores, kind="stable")  # descending, ties in grid order
    top = [int(i) for i in order[:n_top]]
    rest = [int(i) for i in order[n_top:]]
    if len(rest) >= n_random:  # the reference samples (a permutation) even when exactly n_random remain
        picked = [rest[j] for j in _draw(rng, len(rest), n_random)]
    else:
        picked = rest
    rank_of = {int(c): r for r, c in enumerate(order)}
    boxes = []
    for source, cells in (("top", top), ("random", picked)):
        for ci in cells:
            ax, ay = coords[ci]
            x, y = int(round(ax / scale)), int(round(ay / scale))
            right, bottom = min(x + patch_size, w), min(y + patch_size, h)
            x, y = max(0, right - patch_size), max(0, bottom - patch_size)
            boxes.append(PatchBox(x, y, right - x, bottom - y, source, rank_of[ci],
                                  float(scores[ci]), (ax, ay, side)))
    return boxes
