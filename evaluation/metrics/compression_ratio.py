"""Compression ratio (Diffusion-4K, seed 003; its public ``eval.py``)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from evaluation.metrics.base import PER_IMAGE, Metric, MetricResult, register


def image_header(path: str | os.PathLike) -> dict[str, Any]:
    """Width, height, format and mode from the file header (no pixel decode), through the reader
    contract's header step (:func:`curation.imageio.probe`: a regular file, a read format, one
    frame, within ``io.max_pixels``; the stored size, EXIF orientation not applied, as Pillow's)."""
    from curation.imageio import default_max_pixels, probe

    h = probe(path, default_max_pixels())
    w, ht = (h.height, h.width) if h.orientation in (5, 6, 7, 8) else (h.width, h.height)
    return {"width": int(w), "height": int(ht), "format": h.format, "mode": h.mode}


@register
class CompressionRatioMetric(Metric):
    """Compression ratio: raw RGB bytes over the bytes of the file as given.

    Protocol (reference: zhang0jhon/diffusion-4k ``eval.py``, "Compression Ratio"):

    * per image: ``width * height * 3 / file_size_bytes`` (raw 8-bit RGB, 3 bytes per pixel,
      whatever the file's own mode or bit depth), with the width and height read from the
      file header (nothing is decoded); the file's format, mode and sizes go in ``extra``;
    * per set: the ratio of the totals, ``sum(w * h * 3) / sum(file bytes)`` (not the mean of
      the per-image ratios).

    Higher means the encoder squeezed the image more, i.e. less fine detail for a given
    codec; compare only images saved with the same format and settings (the format is
    reported so a table can say so).

    Deviation: the reference uses the nominal ``--size`` (``size * size * 3``) for every image
    instead of each file's own width and height; the two agree when all images are
    ``size x size``. File sizes are in bytes here (the reference divides both sides by 2**20,
    which cancels).
    """

    name = "compression_ratio"
    kind = PER_IMAGE
    requires = ()
    protocol_version = "diffusion4k-eval/raw-rgb-over-file-bytes/1"
    higher_is_better = None  # depends on what is compared; reported, not ranked

    def _measure(self, path: str) -> tuple[MetricResult, int, int]:
        try:
            file_bytes = os.path.getsize(path)
            hdr = image_header(path)
        except (OSError, ValueError, SyntaxError) as exc:
            from curation.imageio import describe_error

            return self.result(None, f"unreadable: {describe_error(exc)}"), 0, 0
        raw = hdr["width"] * hdr["height"] * 3
        extra = {**hdr, "file_bytes": file_bytes, "raw_rgb_bytes": raw}
        if file_bytes <= 0 or raw <= 0:
            return self.result(None, "empty file or image", **extra), 0, 0
        return self.result(raw / file_bytes, **extra), raw, file_bytes

    def _score_path(self, path: str) -> MetricResult:
        return self._measure(path)[0]

    def _score_image(self, rgb: Any, **context: Any) -> MetricResult:
        return self.unavailable("needs the encoded file (score_path), not decoded pixels")

    def aggregate(self, results: Sequence[MetricResult]) -> MetricResult:
        """The set value from per-image results: the ratio of the totals (not the mean)."""
        ok = [r for r in results if r.value is not None]
        formats: dict[str, int] = {}
        for r in ok:
            fmt = r.extra.get("format", "")
            formats[fmt] = formats.get(fmt, 0) + 1
        raw_total = sum(int(r.extra["raw_rgb_bytes"]) for r in ok)
        file_total = sum(int(r.extra["file_bytes"]) for r in ok)
        extra = {"n_images": len(results), "n_scored": len(ok), "formats": formats,
                 "raw_rgb_bytes": raw_total, "file_bytes": file_total}
        if file_total == 0:
            return self.result(None, "no image could be measured", **extra)
        return self.result(raw_total / file_total, **extra)

    def score_set(self, paths: Sequence[str | os.PathLike], **kwargs: Any) -> MetricResult:
        raw_total = file_total = 0
        formats: dict[str, int] = {}
        failed = 0
        for p in paths:
            r, raw, fb = self._measure(os.fspath(p))
            if r.value is None:
                failed += 1
                continue
            raw_total += raw
            file_total += fb
            fmt = r.extra.get("format", "")
            formats[fmt] = formats.get(fmt, 0) + 1
        extra = {"n_images": len(paths), "n_scored": len(paths) - failed, "formats": formats,
                 "raw_rgb_bytes": raw_total, "file_bytes": file_total}
        if file_total == 0:
            return self.result(None, "no image could be measured", **extra)
        return self.result(raw_total / file_total, **extra)
