"""Tiering of paper 3.1.3: how far each candidate is upscaled to reach 100 MP.

* ``archive``: native >= 100 MP, stored unchanged (scale 1);
* ``2x``: more than 25 MP (and below 100 MP), upscaled 2x (-> > 100 MP);
* ``4x``: 10-25 MP inclusive, upscaled 4x (-> 160-400 MP);
* ``None``: below 10 MP (the raw-pool screen already drops those).

MP = ``resolution_screen.megapixel`` (10^6). Pixel-count bounds scale with
``linear_scale**2`` exactly as :meth:`curation.config.Config.screen_bounds` does, so the
test profile (linear_scale 1/8) tiers its small images the same way; the 25 and 10 MP
bounds are the screen's own (``large.min_megapixels_exclusive``,
``medium.min/max_megapixels_inclusive``); the archive bound is
``corpus.archive_min_megapixels`` when the config has it, else 100 (paper 3.1.3).
Min-side rules are the screen's job, not repeated here.
"""

from __future__ import annotations

from typing import Any

ARCHIVE, X2, X4 = "archive", "2x", "4x"
TIERS = (ARCHIVE, X2, X4)
SCALE = {ARCHIVE: 1, X2: 2, X4: 4}
ARCHIVE_MEGAPIXELS = 100


def tier_bounds(cfg: Any) -> dict[str, float]:
    """Pixel-count bounds of the tiers for a :class:`~curation.config.Config`."""
    b = cfg.screen_bounds()
    s = cfg.linear_scale
    mp = float(cfg.get("resolution_screen.megapixel", 1_000_000))
    archive_mp = float(cfg.get("corpus.archive_min_megapixels", ARCHIVE_MEGAPIXELS))
    return {
        "archive_min_pixels_inclusive": archive_mp * mp * s * s,
        "x2_min_pixels_exclusive": b["large_min_pixels_exclusive"],
        "x4_min_pixels_inclusive": b["medium_min_pixels_inclusive"],
        "x4_max_pixels_inclusive": b["medium_max_pixels_inclusive"],
    }


def tier_for(width: int, height: int, cfg: Any) -> str | None:
    """``"archive"``, ``"2x"``, ``"4x"`` or ``None`` (too small) for an image of that size."""
    b = tier_bounds(cfg)
    p = int(width) * int(height)
    if p >= b["archive_min_pixels_inclusive"]:
        return ARCHIVE
    if p > b["x2_min_pixels_exclusive"]:
        return X2
    if b["x4_min_pixels_inclusive"] <= p <= b["x4_max_pixels_inclusive"]:
        return X4
    return None


def scale_for(tier: str | None) -> int | None:
    return SCALE.get(tier) if tier else None
