"""The offline tagger / grounder / segmenter: classical colour regions, no weights.

Labelled ``heuristic`` everywhere (``source="heuristic"``, model ``uhrforge-heuristic-regions/1``).
It lets the captions pipeline run on a laptop CPU and in tests; its tags are colour + shape
words, not object names, and must never be published as RAM++ / Rex-Omni / SAM 2 output.

Method (deterministic, on a working copy with long edge :data:`WORK_LONG_EDGE`):

1. every pixel is assigned the nearest of :data:`PALETTE` (named colours) in CIE Lab;
2. per colour, a 3x3 opening then 8-connected components; components smaller than
   ``min_fraction`` of the working area are dropped;
3. each component gets a shape word from its box aspect and fill ratio (``strip`` if the box
   is > 3:1, ``block`` if it fills > 80 % of its box, ``blob`` if > 50 %, else ``shape``), so
   its tag is e.g. ``"red blob"``; its position word (``top-left`` ... ``centre``) comes from
   its centroid. Two non-tangible scene tags are added (``"<bright|dark|mid-tone> scene"``,
   ``"<colour> tones"``) so the tag-pruning step has something to prune;
4. **grounder**: the boxes of the components whose tag is asked for, score
   ``0.5 + 0.5 x fill ratio``;
5. **segmenter**: inside each box, the pixels of the box's modal palette colour (computed on
   the central half of the box), largest 8-connected component; the mask covers the box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curation.captioning.structures import Detection, MaskResult, Tag

SOURCE = "heuristic"
MODEL = "uhrforge-heuristic-regions/1"
WORK_LONG_EDGE = 256
MIN_FRACTION = 0.004

#: named colours (sRGB) the heuristic quantises to
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20), "white": (240, 240, 240), "grey": (128, 128, 128), "red": (200, 30, 30),
    "orange": (240, 140, 20), "yellow": (235, 215, 40), "green": (50, 160, 50), "teal": (30, 150, 150),
    "blue": (40, 70, 200), "purple": (130, 50, 170), "pink": (240, 140, 180), "brown": (120, 75, 35),
}
_NAMES = list(PALETTE)


def _lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)


_PAL_LAB = None


def quantise(rgb: np.ndarray) -> np.ndarray:
    """Index into :data:`PALETTE` of every pixel (nearest in Lab), ``(h, w)`` uint8."""
    global _PAL_LAB
    if _PAL_LAB is None:
        _PAL_LAB = _lab(np.array([list(PALETTE.values())], dtype=np.uint8))[0]
    lab = _lab(rgb)
    best = np.full(lab.shape[:2], np.inf, np.float32)
    idx = np.zeros(lab.shape[:2], np.uint8)
    for i, ref in enumerate(_PAL_LAB):  # one colour at a time: memory ~ 2 planes
        d = ((lab - ref) ** 2).sum(axis=2)
        closer = d < best
        best[closer] = d[closer]
        idx[closer] = i
    return idx


def _work_copy(view: np.ndarray) -> tuple[np.ndarray, float]:
    import cv2

    h, w = view.shape[:2]
    s = min(1.0, WORK_LONG_EDGE / max(h, w))
    if s < 1.0:
        view = cv2.resize(view, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return view, s


def position_word(cx: float, cy: float) -> str:
    """``top-left`` ... ``bottom-right`` or ``centre`` of a point in [0, 1]^2."""
    v = "top" if cy < 1 / 3 else ("bottom" if cy > 2 / 3 else "")
    h = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "")
    if v and h:
        return f"{v}-{h}"
    return v or h or "centre"


def shape_word(w: float, h: float, fill: float) -> str:
    aspect = max(w, h) / max(1e-9, min(w, h))
    if aspect > 3.0:
        return "strip"
    if fill > 0.8:
        return "block"
    if fill > 0.5:
        return "blob"
    return "shape"


@dataclass(frozen=True)
class Region:
    """A colour component in working-copy pixels."""

    colour: str
    shape: str
    box: tuple[int, int, int, int]
    area: int
    fill: float
    centroid: tuple[float, float]

    @property
    def tag(self) -> str:
        return f"{self.colour} {self.shape}"


def regions(view: np.ndarray, min_fraction: float = MIN_FRACTION) -> tuple[list[Region], float]:
    """Colour components of ``view`` (largest first) and the working-copy scale."""
    import cv2

    work, s = _work_copy(np.asarray(view))
    q = quantise(work)
    h, w = q.shape
    min_area = max(4, int(math.ceil(min_fraction * h * w)))
    k = np.ones((3, 3), np.uint8)
    out: list[Region] = []
    for ci, name in enumerate(_NAMES):
        m = (q == ci).astype(np.uint8)
        if int(m.sum()) < min_area:
            continue
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, k)
        n, _, stats, cents = cv2.connectedComponentsWithStats(m, connectivity=8)
        for j in range(1, n):
            x, y, bw, bh, a = (int(v) for v in stats[j])
            if a < min_area:
                continue
            fill = a / float(bw * bh)
            out.append(Region(name, shape_word(bw, bh, fill), (x, y, x + bw, y + bh), a, round(fill, 4),
                              (float(cents[j][0]) / w, float(cents[j][1]) / h)))
    out.sort(key=lambda r: (-r.area, r.box))
    return out, s


def scene_tags(view: np.ndarray) -> list[str]:
    """The two non-tangible tags: brightness of the scene and its dominant colour tone."""
    work, _ = _work_copy(np.asarray(view))
    g = float(work.mean())
    bright = "bright" if g > 160 else ("dark" if g < 80 else "mid-tone")
    q = quantise(work)
    dom = _NAMES[int(np.bincount(q.ravel(), minlength=len(_NAMES)).argmax())]
    return [f"{bright} scene", f"{dom} tones"]


class HeuristicTagger:
    """Tags = the distinct region tags (score = their total area fraction, largest first) plus
    two scene tags (score 1.0 and 0.9), at most ``max_tags``."""

    name = SOURCE
    model = MODEL

    @classmethod
    def availability(cls, **_: object):
        from curation.upscale.backends import Availability

        return Availability(True, "")

    def __init__(self, max_tags: int = 40, min_fraction: float = MIN_FRACTION, **_: object) -> None:
        self.max_tags = int(max_tags)
        self.min_fraction = float(min_fraction)

    def tag(self, view: np.ndarray) -> list[Tag]:
        regs, s = regions(view, self.min_fraction)
        h, w = view.shape[:2]
        work_area = max(1, round(h * s) * round(w * s))
        score: dict[str, float] = {}
        for r in regs:
            score[r.tag] = score.get(r.tag, 0.0) + r.area / work_area
        tags = [Tag(t, 1.0 - 0.1 * i, SOURCE) for i, t in enumerate(scene_tags(view))]
        tags += [Tag(t, round(min(1.0, v), 4), SOURCE) for t, v in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))]
        return tags[: self.max_tags]

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model}


class HeuristicGrounder:
    """Boxes of the regions carrying each requested tag (view pixels)."""

    name = SOURCE
    model = MODEL

    @classmethod
    def availability(cls, **_: object):
        from curation.upscale.backends import Availability

        return Availability(True, "")

    def __init__(self, min_fraction: float = MIN_FRACTION, max_boxes_per_tag: int = 5, **_: object) -> None:
        self.min_fraction = float(min_fraction)
        self.max_boxes_per_tag = int(max_boxes_per_tag)

    def ground(self, view: np.ndarray, tags: Sequence[str]) -> list[Detection]:
        regs, s = regions(view, self.min_fraction)
        want = [" ".join(t.lower().split()) for t in tags]
        out: list[Detection] = []
        for t in want:
            hits = [r for r in regs if r.tag == t][: self.max_boxes_per_tag]
            for r in hits:
                x0, y0, x1, y1 = r.box
                box = (x0 / s, y0 / s, min(view.shape[1], x1 / s), min(view.shape[0], y1 / s))
                out.append(Detection(t, box, round(0.5 + 0.5 * r.fill, 4), SOURCE))
        return out

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model}


class HeuristicSegmenter:
    """Per box: the modal palette colour of the box centre, largest component of it in the box."""

    name = SOURCE
    model = MODEL

    @classmethod
    def availability(cls, **_: object):
        from curation.upscale.backends import Availability

        return Availability(True, "")

    def __init__(self, **_: object) -> None:
        pass

    def segment(self, view: np.ndarray, boxes: Sequence[Sequence[float]]) -> list[MaskResult]:
        import cv2

        from curation.captioning.geometry import valid_box

        H, W = view.shape[:2]
        out: list[MaskResult] = []
        for b in boxes:
            vb = valid_box(b, W, H)
            if vb is None:
                out.append(MaskResult(np.zeros((1, 1), np.float32), (0.0, 0.0, 1.0, 1.0), 0.0, SOURCE))
                continue
            x0, y0 = int(math.floor(vb[0])), int(math.floor(vb[1]))
            x1, y1 = max(x0 + 1, int(math.ceil(vb[2]))), max(y0 + 1, int(math.ceil(vb[3])))
            q = quantise(view[y0:y1, x0:x1])
            h, w = q.shape
            centre = q[h // 4: h - h // 4 or h, w // 4: w - w // 4 or w]
            mode = int(np.bincount(centre.ravel(), minlength=len(_NAMES)).argmax())
            m = (q == mode).astype(np.uint8)
            n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
            if n > 1:
                j = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
                m = (lab == j).astype(np.float32)
            else:
                m = m.astype(np.float32)
            out.append(MaskResult(m, (float(x0), float(y0), float(x1), float(y1)), round(float(m.mean()), 4), SOURCE))
        return out

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model}
