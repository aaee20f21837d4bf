"""Resolution screen of section 3.1.1, with MP = 10^6 pixels.

Keep (i) more than 25 MP with min side >= 3000, or (ii) 10-25 MP inclusive with min side
>= 1500. Bounds come from :meth:`Config.screen_bounds` (scaled together by a profile's
``linear_scale``). Returns ``(reason or "pass", tier)`` with tier ``"large"``/``"medium"``.
"""

from __future__ import annotations

from curation import reasons


def screen(width: int, height: int, bounds: dict[str, float]) -> tuple[str, str | None]:
    pixels = width * height
    side = min(width, height)
    if pixels > bounds["large_min_pixels_exclusive"]:
        if side >= bounds["large_min_side"]:
            return reasons.PASS, "large"
        return reasons.MIN_SIDE_TOO_SHORT, None
    if bounds["medium_min_pixels_inclusive"] <= pixels <= bounds["medium_max_pixels_inclusive"]:
        if side >= bounds["medium_min_side"]:
            return reasons.PASS, "medium"
        return reasons.MIN_SIDE_TOO_SHORT, None
    return reasons.TOO_FEW_PIXELS, None
