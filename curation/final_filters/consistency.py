"""Post-SR consistency (paper 3.1.4): downsample the SR output back to the input size and
compare it with the input (PSNR, SSIM, LPIPS).

* **Downsampling**: OpenCV ``INTER_AREA`` to the input size; the scale is an integer
  (2 or 4), so INTER_AREA is the mean of each ``s x s`` block and a band of ``s*k`` output rows
  gives exactly the rows of a one-shot resize. Computed band by band (bounded memory).
* **PSNR**: ``10 log10(255^2 / MSE)``, MSE over all pixels and the 3 RGB channels; identical
  images report ``PSNR_CAP`` (100 dB) instead of infinity.
* **SSIM**: Wang et al. 2004 with a Gaussian window (sigma 1.5, 11 taps, ``K1 = 0.01``,
  ``K2 = 0.03``, ``L = 255``), per RGB channel, population (co)variances, averaged over the
  image minus a 5-px border and over channels - the definition of
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255, channel_axis=2)``. Ours is a strip-wise
  re-implementation (OpenCV Gaussian, float32, 5-row halos), equal to skimage to ~1e-5 on
  the test images; skimage itself would need ~10 float64 copies of the image (GBs at 25 MP).
* **Blocks**: the same PSNR / mean SSIM per block of ``block`` input pixels (default: one
  block per output tile, ``384 / scale``): ``psnr_block_min`` / ``ssim_block_min`` (worst
  block), ``*_block_median`` and ``*_block_drop`` = median block minus worst block - a global
  score hides one bad tile among 680, and the drop is comparable across SR models whose
  absolute fidelity differs by 15 dB.
* **LPIPS**: needs AlexNet/VGG ImageNet backbone weights. ``torchmetrics`` and the ``lpips``
  wheel ship only LPIPS's small linear heads; the backbones are torchvision downloads, which
  this offline platform cannot do. When ``alexnet-owt-7be5be79.pth`` is in the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``), LPIPS (AlexNet) is the mean over up to ``lpips_tiles``
  512-px tiles on a regular grid; otherwise ``lpips`` is ``None`` with ``lpips_reason``.

Thresholds: see :data:`DEFAULT_THRESHOLDS` (the paper gives none) and :func:`decide`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

PSNR_CAP = 100.0
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * 1.5 + 0.5): skimage's truncate=3.5 window
K1, K2, L = 0.01, 0.03, 255.0
C1, C2 = (K1 * L) ** 2, (K2 * L) ** 2
BAND_ROWS = 256
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
LPIPS_TILE = 512

# Chosen from measurements on generate_photo images (benchmarks/consistency.py ->
# benchmarks/out/consistency.md), so that every *good* output measured passes with margin:
# tiled lanczos (PSNR >= 40.9), Real-ESRGAN animevideov3 (>= 34.5) and the photo GAN
# Real-ESRGAN x4plus (PSNR >= 26.6, SSIM >= 0.89, worst block >= 23.9 dB / 0.81, worst block
# <= 3.2 dB and <= 0.044 SSIM below the median block). Generative SR sits ~15 dB below
# interpolation, so absolute floors only catch gross failures; a single bad tile is caught by
# the *drop* of the worst block below the image's median block (colour-shifted +10, blurred
# sigma 3 or 3-px-shifted tile on lanczos/animevideov3 outputs: 11.7-22.4 dB; blurred or
# shifted tile on x4plus at 2x: SSIM drop 0.17-0.51). A colour-shifted tile on a GAN output
# is within the GAN's own deviation: the seam check catches that one. No LPIPS threshold: it
# cannot be measured offline here (None = not checked). Re-calibrate on real data with the
# production SR model.
DEFAULT_THRESHOLDS = {
    "psnr_min": 24.0,
    "ssim_min": 0.85,
    "psnr_block_min": 20.0,
    "ssim_block_min": 0.70,
    "psnr_block_drop_max": 6.0,
    "ssim_block_drop_max": 0.10,
    "lpips_max": None,
}


def _gauss(a: np.ndarray) -> np.ndarray:
    import cv2

    k = 2 * SSIM_RADIUS + 1
    return cv2.GaussianBlur(a, (k, k), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)


def ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-pixel, per-channel SSIM of two float32 arrays (same shape, 0..255 range)."""
    ux, uy = _gauss(x), _gauss(y)
    xc, yc = x - 128.0, y - 128.0  # centred for the second moments (float32 precision)
    uxc, uyc = ux - 128.0, uy - 128.0
    vx = _gauss(xc * xc) - uxc * uxc
    vy = _gauss(yc * yc) - uyc * uyc
    vxy = _gauss(xc * yc) - uxc * uyc
    num = (2 * ux * uy + C1) * (2 * vxy + C2)
    den = (ux * ux + uy * uy + C1) * (vx + vy + C2)
    return num / den


def lpips_status() -> dict:
    """Whether LPIPS can run offline here, and why not."""
    try:
        import torch
        import torchmetrics  # noqa: F401
    except ImportError as exc:
        return {"available": False, "reason": f"torch/torchmetrics not importable: {exc}"}
    path = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS
    if not path.exists():
        return {"available": False,
                "reason": (f"LPIPS backbone weights missing: torchmetrics/lpips ship only the linear heads; the "
                           f"AlexNet ImageNet weights ({ALEXNET_WEIGHTS}) are a torchvision download and are not in "
                           f"{path.parent} (offline platform)")}
    return {"available": True, "reason": f"AlexNet weights at {path}"}


_LPIPS_NET = None


def _lpips_net(random_backbone: bool = False):
    """torchmetrics' LPIPS network (AlexNet + the shipped linear heads), inputs in [-1, 1]."""
    global _LPIPS_NET
    from torchmetrics.functional.image.lpips import _LPIPS

    if random_backbone:  # tests only: exercises the code path without the backbone download
        return _LPIPS(pretrained=True, net="alex", pnet_rand=True).eval()
    if _LPIPS_NET is None:
        _LPIPS_NET = _LPIPS(pretrained=True, net="alex", pnet_rand=False).eval()
    return _LPIPS_NET


def _lpips_tiles(h: int, w: int, n: int, tile: int = LPIPS_TILE) -> list[tuple[int, int, int, int]]:
    t = min(tile, h, w)
    ny = max(1, min(int(math.sqrt(n * h / w)), h // t))
    nx = max(1, min(n // ny, w // t))
    ys = np.linspace(0, h - t, ny).astype(int)
    xs = np.linspace(0, w - t, nx).astype(int)
    return [(int(y), int(x), t, t) for y in ys for x in xs][:n]


def _lpips_score(sr_src, lr_src, s: int, n_tiles: int, random_backbone: bool = False) -> float:
    import cv2
    import torch

    model = _lpips_net(random_backbone)
    vals = []
    for y, x, th, tw in _lpips_tiles(lr_src.height, lr_src.width, n_tiles):
        a = cv2.resize(sr_src.read(y * s, (y + th) * s, x * s, (x + tw) * s), (tw, th), interpolation=cv2.INTER_AREA)
        b = lr_src.read(y, y + th, x, x + tw)
        ta = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        tb = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        with torch.no_grad():
            vals.append(float(model(ta, tb).mean()))
    return float(np.mean(vals))


def _psnr(mse: float) -> float:
    return PSNR_CAP if mse <= 0 else min(PSNR_CAP, 10.0 * math.log10(L * L / mse))


def consistency_metrics(sr: Any, lr: Any, block: int | None = None, band_rows: int = BAND_ROWS,
                        lpips: bool = True, lpips_tiles: int = 16, _random_lpips: bool = False) -> dict:
    """PSNR / SSIM / LPIPS of ``sr`` downsampled to ``lr``'s size vs ``lr`` (arrays, region
    sources or paths), plus per-block minima. Memory: a band of ``band_rows`` input rows."""
    import cv2

    from curation.upscale.storage import open_source

    sr_src = open_source(sr) if not hasattr(sr, "read") else sr
    lr_src = open_source(lr) if not hasattr(lr, "read") else lr
    H, W = lr_src.height, lr_src.width
    s = sr_src.height // H
    if s < 1 or sr_src.height != s * H or sr_src.width != s * W:
        raise ValueError(f"SR size {sr_src.width}x{sr_src.height} is not an integer multiple of {W}x{H}")
    block = block or max(1, 384 // s)
    nby, nbx = -(-H // block), -(-W // block)
    sq_blocks = np.zeros((nby, nbx), np.float64)
    px_blocks = np.zeros((nby, nbx), np.float64)
    ss_blocks = np.zeros((nby, nbx), np.float64)
    sn_blocks = np.zeros((nby, nbx), np.float64)
    r = SSIM_RADIUS
    col_block = np.arange(W) // block
    for y0 in range(0, H, band_rows):
        y1 = min(H, y0 + band_rows)
        a0, a1 = max(0, y0 - r), min(H, y1 + r)
        srb = sr_src.read(a0 * s, a1 * s, 0, sr_src.width)
        down = srb if s == 1 else cv2.resize(srb, (W, a1 - a0), interpolation=cv2.INTER_AREA)
        x = down.astype(np.float32)
        y = lr_src.read(a0, a1, 0, W).astype(np.float32)
        inner = slice(y0 - a0, y1 - a0)
        err = ((x[inner] - y[inner]) ** 2).sum(axis=2)  # (rows, W)
        smap = ssim_map(x, y)[inner].mean(axis=2)  # channel mean per pixel
        rows = np.arange(y0, y1)
        by = rows // block
        # SSIM counts only pixels >= r from every image border (skimage's crop)
        keep_r = (rows >= r) & (rows < H - r)
        keep_c = (np.arange(W) >= r) & (np.arange(W) < W - r)
        for b in np.unique(by):
            m = by == b
            e = err[m]
            sq_blocks[b] += np.bincount(col_block, weights=e.sum(axis=0), minlength=nbx)
            px_blocks[b] += np.bincount(col_block, minlength=nbx) * m.sum()
            mr = m & keep_r
            if mr.any():
                sm = smap[mr][:, keep_c]
                ss_blocks[b] += np.bincount(col_block[keep_c], weights=sm.sum(axis=0), minlength=nbx)
                sn_blocks[b] += np.bincount(col_block[keep_c], minlength=nbx) * mr.sum()
    mse = sq_blocks.sum() / (3.0 * px_blocks.sum())
    ssim = ss_blocks.sum() / max(1.0, sn_blocks.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        block_mse = sq_blocks / (3.0 * px_blocks)
        block_ssim = np.where(sn_blocks > 0, ss_blocks / np.maximum(sn_blocks, 1), np.nan)
    psnr_blocks = np.array([_psnr(v) for v in block_mse.ravel()]).reshape(block_mse.shape)
    worst = np.unravel_index(int(np.argmin(psnr_blocks)), psnr_blocks.shape)
    p_med = float(np.median(psnr_blocks))
    has_ssim = bool(np.isfinite(block_ssim).any())
    s_min = float(np.nanmin(block_ssim)) if has_ssim else None
    s_med = float(np.nanmedian(block_ssim)) if has_ssim else None
    out = {
        "psnr": round(_psnr(mse), 4), "ssim": round(float(ssim), 6),
        "psnr_block_min": round(float(psnr_blocks.min()), 4),
        "ssim_block_min": round(s_min, 6) if has_ssim else None,
        "psnr_block_median": round(p_med, 4),
        "ssim_block_median": round(s_med, 6) if has_ssim else None,
        "psnr_block_drop": round(p_med - float(psnr_blocks.min()), 4),
        "ssim_block_drop": round(s_med - s_min, 6) if has_ssim else None,
        "worst_block": {"x": int(worst[1] * block), "y": int(worst[0] * block), "size": block},
        "block": block, "scale": s, "ssim_impl": "strip-wise Gaussian SSIM (== skimage gaussian_weights=True)",
        "downsample": "cv2.INTER_AREA",
    }
    st = lpips_status() if not _random_lpips else {"available": True, "reason": "random backbone (test)"}
    if lpips and st["available"]:
        out["lpips"] = round(_lpips_score(sr_src, lr_src, s, lpips_tiles, _random_lpips), 6)
        out["lpips_reason"] = st["reason"]
    else:
        out["lpips"] = None
        out["lpips_reason"] = st["reason"] if lpips else "disabled"
    for src, orig in ((sr_src, sr), (lr_src, lr)):
        if src is not orig and hasattr(src, "close"):
            src.close()
    return out


def thresholds_from_config(cfg: Any = None) -> dict:
    """``corpus.final_filters.consistency`` (or ``final_filters.consistency``) of the config over
    :data:`DEFAULT_THRESHOLDS`."""
    th = dict(DEFAULT_THRESHOLDS)
    if cfg is not None and hasattr(cfg, "get"):
        for key in ("corpus.final_filters.consistency", "final_filters.consistency"):
            over = cfg.get(key, None)
            if isinstance(over, dict):
                th.update({k: v for k, v in over.items() if k in th})
                break
    return th


def decide(metrics: dict, thresholds: dict | None = None) -> dict:
    """Pass iff every available metric meets its threshold (``None`` threshold = unchecked;
    an unavailable LPIPS is recorded in ``skipped``, not treated as a pass of LPIPS)."""
    th = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    failed, skipped = [], []
    for key, metric, higher in (("psnr_min", "psnr", True), ("ssim_min", "ssim", True),
                                ("psnr_block_min", "psnr_block_min", True),
                                ("ssim_block_min", "ssim_block_min", True),
                                ("psnr_block_drop_max", "psnr_block_drop", False),
                                ("ssim_block_drop_max", "ssim_block_drop", False),
                                ("lpips_max", "lpips", False)):
        t = th.get(key)
        if t is None:
            continue
        v = metrics.get(metric)
        if v is None:
            skipped.append(metric)
            continue
        if (v < t) if higher else (v > t):
            failed.append(metric)
    return {"passed": not failed, "failed": failed, "skipped": skipped, "thresholds": th}

