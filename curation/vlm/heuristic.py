"""The deterministic offline VLM backend (``heuristic``): answers from image statistics.

Used only when no endpoint is configured at all (``create_vlm_client`` refuses it next to an
endpoint). Every one of its results says ``backend="heuristic"`` and
``model="uhrforge-heuristic/1"``; it never claims to be a model. Per task: artifacts (region
and instance) = the worse of an 8-px blockiness ratio and a straight-line discontinuity ratio
(:data:`ARTIFACT_THRESHOLDS`), flagged at severity >= 2; ArtiMuse-shaped aesthetics, MSFI
global/local and ICS = integer levels mapped from sharpness, contrast, exposure,
colourfulness, entropy, noise, histogram gaps (see each ``heuristic_*`` function). These are
signals for running the pipeline offline, not the paper's scores: ICS's heuristic does not even
read the caption. A task is answered by the ``heuristic`` of its
:class:`~curation.vlm.tasks.TaskSpec`; a task without one is a judge failure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from curation.vlm.client import BACKEND_HEURISTIC, VLM_BACKENDS, VLMClient, _as_array, _Outcome, _Prepared

HEURISTIC_MODEL = "uhrforge-heuristic/1"


class HeuristicVLMClient(VLMClient):
    """The offline judge: deterministic answers from image statistics, labelled ``heuristic``.

    Same interface, schema validation and cache as the HTTP client; no model is involved and
    the numbers mean only what the heuristics below compute. Every result carries
    ``backend="heuristic"`` and ``model="uhrforge-heuristic/1"``; consumers that publish a
    model-based score (ArtiMuse S_A, MSFI, ICS) must not report these under the model's name.
    """

    backend = BACKEND_HEURISTIC

    def __init__(self, **kw: Any) -> None:
        kw.pop("model", None)
        super().__init__(model=HEURISTIC_MODEL, **kw)

    def _attempt(self, p: _Prepared) -> _Outcome:
        if p.spec.heuristic is None:
            return _Outcome("fatal", reason=f"no heuristic for task {p.spec.name!r} (offline backend)")
        arrays = [_as_array(im) for im in p.req.images]
        answer = p.spec.heuristic(arrays, dict(p.req.variables))
        return _Outcome("answer", text=json.dumps(answer))


def _grey(rgb: np.ndarray) -> np.ndarray:
    a = rgb.astype(np.float64)
    return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]


def blockiness(grey: np.ndarray, period: int = 8) -> float:
    """Mean absolute step across the ``period`` grid lines over the mean step elsewhere
    (1.0 = no grid structure; JPEG-like blocking or tile grids raise it)."""
    ratios = []
    for d in (np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=0)).T):
        n = d.shape[1]
        if n < 2 * period:
            continue
        on = np.zeros(n, dtype=bool)
        on[period - 1::period] = True
        a, b = d[:, on].mean(), d[:, ~on].mean()
        ratios.append((a + 0.5) / (b + 0.5))
    return float(max(ratios)) if ratios else 1.0


def line_discontinuity(rgb: np.ndarray, neighbours: int = 6, floor: float = 1.0) -> float:
    """Straight-line discontinuity: per channel and per row (column) boundary, the step across
    the whole line, ``max(median |step|, |mean step|)``, over the median of the median
    |steps| of the ``neighbours`` lines on each side (plus ``floor`` grey levels); the largest
    ratio. A seam or colour shift along a whole line scores high (about 3-4 for a +20 shift on
    a textured photo), texture and natural edges that cross only part of a line stay near 1.
    Limitation: a perfectly straight full-width edge (a level horizon) also scores high."""
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = a[:, :, None]
    best = 1.0
    nb = int(neighbours)
    for ch in range(a.shape[2]):
        g = a[:, :, ch].astype(np.float32)
        for d in (np.diff(g, axis=0), np.ascontiguousarray(np.diff(g, axis=1).T)):
            if d.shape[0] < 3 or d.shape[1] < 1:
                continue
            med = np.median(np.abs(d), axis=1)
            stat = np.maximum(med, np.abs(d.mean(axis=1, dtype=np.float64)))
            k = min(nb, d.shape[0] - 1)
            win = np.lib.stride_tricks.sliding_window_view(np.pad(med, k, mode="reflect"), 2 * k + 1)
            base = np.median(np.delete(win, k, axis=1), axis=1)
            best = max(best, float((stat / (base + floor)).max()))
    return best


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkaer's fast noise estimate (grey levels)."""
    import cv2

    if min(grey.shape) < 3:
        return 0.0
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    r = cv2.filter2D(grey, cv2.CV_64F, k, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * np.abs(r).mean() / 6.0)


def _laplacian_var(grey: np.ndarray) -> float:
    import cv2

    return float(cv2.Laplacian(grey, cv2.CV_64F, ksize=3).var())


def _stats(rgb: np.ndarray) -> dict[str, float]:
    g = _grey(rgb)
    a = rgb.astype(np.float64)
    rg, yb = a[..., 0] - a[..., 1], 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    colourful = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    hist = np.bincount(np.clip(g, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    gi = np.clip(g, 0, 255)
    lo, hi = int(gi.min()), int(gi.max())
    span = hist[lo:hi + 1]
    h, w = g.shape
    lv = [_laplacian_var(q) for q in (g[: h // 2, : w // 2], g[: h // 2, w // 2:], g[h // 2:, : w // 2], g[h // 2:, w // 2:])
          if q.size >= 9 and min(q.shape) >= 3]
    lv_log = [math.log10(1.0 + v) for v in lv] or [0.0]
    return {
        "sharpness": min(1.0, math.log10(1.0 + _laplacian_var(g)) / 3.5) if min(g.shape) >= 3 else 0.0,
        "contrast": min(1.0, g.std() / 64.0),
        "exposure": 1.0 - abs(g.mean() - 127.5) / 127.5,
        "clipped": float(((g < 5) | (g > 250)).mean()),
        "entropy": float(-(p * np.log2(p)).sum() / 8.0),
        "colourfulness": min(1.0, colourful / 80.0),
        "gaps": float((span == 0).mean()) if span.size > 2 else 0.0,
        "sharpness_uniformity": min(lv_log) / max(lv_log) if max(lv_log) > 0 else 1.0,
        "thirds": _thirds(g),
    }


def _thirds(g: np.ndarray) -> float:
    """1 - distance of the gradient-energy centroid to the nearest rule-of-thirds point (norm.)."""
    gy, gx = np.gradient(g)
    e = np.hypot(gx, gy)
    s = e.sum()
    if s <= 0:
        return 0.5
    h, w = g.shape
    cy = float((e.sum(axis=1) * np.arange(h)).sum() / s) / max(h - 1, 1)
    cx = float((e.sum(axis=0) * np.arange(w)).sum() / s) / max(w - 1, 1)
    d = min(math.hypot(cx - tx, cy - ty) for tx in (1 / 3, 2 / 3) for ty in (1 / 3, 2 / 3))
    return max(0.0, 1.0 - d / 0.4714)  # 0.4714 = distance of a corner to the nearest point


def _level(x: float, lo: int, hi: int) -> int:
    """Map x in [0, 1] to an integer level in [lo, hi]."""
    x = min(1.0, max(0.0, float(x)))
    return int(lo + math.floor(x * (hi - lo) + 0.5))


def _artifact_stats(rgb: np.ndarray) -> dict[str, float]:
    return {"blockiness": blockiness(_grey(rgb)), "discontinuity": line_discontinuity(rgb)}


#: severity thresholds of the heuristic artifact judge: lower bounds of severity 1, 2, 3 for
#: each statistic. Calibrated on 768-px patches of ``curation.synth.generate_photo`` (seeds
#: 0-5): clean, JPEG q90 and Lanczos-2x patches stay below severity 1 (blockiness <= 1.26,
#: discontinuity <= 1.40); a +20 grey-level shift of half the patch scores 3.2-4.0 (flagged),
#: a blurred tile 1.75-2.0 (severity 1), JPEG q8 blocking >= 3.0 (severity 3).
ARTIFACT_THRESHOLDS = {"blockiness": (1.3, 1.6, 2.2), "discontinuity": (1.6, 2.2, 3.5)}


def heuristic_artifact(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """Region / instance artifact heuristic on the first image: severity from the worse of
    blockiness (8-px grid) and straight-line discontinuity (seams, shifted tiles); flagged at
    severity >= 2."""
    st = _artifact_stats(images[0])
    sev = 0
    for name, bounds in ARTIFACT_THRESHOLDS.items():
        sev = max(sev, sum(st[name] >= b for b in bounds))
    what = [n for n, b in ARTIFACT_THRESHOLDS.items() if st[n] >= b[1]]
    reason = ("heuristic: " + (", ".join(what) + " above threshold" if what else "clean")
              + f" (blockiness={st['blockiness']:.3f}, discontinuity={st['discontinuity']:.3f})")
    return {"artifact": sev >= 2, "severity": int(sev), "reason": reason, "heuristic_stats": st}


def heuristic_aesthetics(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """ArtiMuse-shaped answer from image statistics (NOT an aesthetic model): dimensions 1-10
    from rule-of-thirds centroid, entropy, sharpness and exposure, colourfulness, contrast;
    overall = 10 x their mean."""
    s = _stats(images[0])
    dims = {
        "composition_design": _level(s["thirds"], 1, 10),
        "visual_elements_structure": _level(s["entropy"], 1, 10),
        "technical_execution": _level(0.5 * s["sharpness"] + 0.5 * s["exposure"] * (1 - s["clipped"]), 1, 10),
        "originality_creativity": _level(0.5 * s["colourfulness"] + 0.5 * s["entropy"], 1, 10),
        "theme_communication": _level(s["contrast"], 1, 10),
        "emotion_viewer_response": _level(s["colourfulness"], 1, 10),
    }
    overall = round(10.0 * sum(dims.values()) / len(dims), 1)
    return {"overall": overall, **dims, "analysis": "heuristic: image statistics, not an aesthetic model",
            "heuristic_stats": s}


def heuristic_msfi_global(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """MSFI global-shaped answer from image statistics (NOT a judge): SC-global from sharpness,
    PI from contrast, LC from exposure and clipping, CH from histogram gaps (banding)."""
    s = _stats(images[0])
    return {
        "SC-global": _level(s["sharpness"], 1, 5),
        "PI": _level(s["contrast"], 1, 5),
        "LC": _level(s["exposure"] * (1 - min(1.0, 5 * s["clipped"])), 1, 5),
        "CH": _level(1 - s["gaps"], 1, 5),
        "reasoning": "heuristic: image statistics, not an MLLM judge",
    }


def heuristic_msfi_local(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """MSFI local-shaped answer for the patch (first image) from statistics (NOT a judge): NGE
    from the noise estimate, GA from blockiness, TF from sharpness, MGC from line
    discontinuity, SC-local from the uniformity of sharpness over the quadrants."""
    rgb = images[0]
    g = _grey(rgb)
    s = _stats(rgb)
    a = _artifact_stats(rgb)
    return {
        "NGE": _level(1 - min(1.0, noise_sigma(g) / 12.0), 1, 5),
        "GA": _level(1 - min(1.0, (a["blockiness"] - 1.0) / 1.2), 1, 5),
        "TF": _level(s["sharpness"], 1, 5),
        "MGC": _level(1 - min(1.0, (a["discontinuity"] - 1.0) / 2.5), 1, 5),
        "SC-local": _level(s["sharpness_uniformity"], 1, 5),
        "reasoning": "heuristic: image statistics, not an MLLM judge",
    }


def heuristic_ics(images: list[np.ndarray], variables: Mapping[str, Any]) -> dict:
    """ICS-shaped answer from image statistics only (NOT a judge; it does not read the
    caption): IEV from entropy, AAA from colourfulness, SRA from contrast."""
    s = _stats(images[0])
    return {
        "reasoning": "heuristic: image statistics only, the caption is not read",
        "IEV": _level(s["entropy"], 1, 10),
        "AAA": _level(s["colourfulness"], 1, 10),
        "SRA": _level(s["contrast"], 1, 10),
    }



VLM_BACKENDS.register(BACKEND_HEURISTIC, HeuristicVLMClient)
