"""Tier datasets: region crops from the tiled corpus files at an aspect bucket of the tier.

A record is one corpus image: ``image_id``, ``path`` (or ``output_path``, the corpus
manifest's column), its caption (``caption_field``, default ``long_caption``, falling back to
``short_caption`` / ``caption``) and optionally ``width`` / ``height`` (else read from the
file header). Pixels are read with ``curation.upscale.storage.open_source(path).read(y0, y1,
x0, x1)``: a tiled TIFF decodes only the tiles a crop touches and a ``.npy`` is memory-mapped,
so a sample never decodes a whole 100 MP image. Formats without region reads (PNG, JPEG, ...)
are refused unless ``allow_full_decode=True``.

Crop: the bucket's ``(h, w)`` at ``s`` output px per source px, ``s`` drawn from
``crop_scale_range`` (not in paper; 1.0 = native pixels) and raised to fit the image when
the bucket is larger than the image (the 10K tier's 104.9 MP bucket on a 100 MP image), at a
uniformly random position; resized with INTER_AREA (down) / INTER_CUBIC (up) when ``s != 1``.
Every random choice comes from ``(seed, global sample index)``.

:class:`TierStream` is the IterableDataset a DataLoader (``batch_size=None``) reads: it yields
collated batches ``{"pixels" (B, 3, h, w) float32 in [-1, 1], "prompt", "key", "image_id",
"index" (global sample indices), "epoch", "batch_index"}`` from any global batch index on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset

from .buckets import Bucket, BucketBatchOrder, assign_bucket, make_buckets


@dataclass(frozen=True)
class Record:
    image_id: str
    path: str
    caption: str
    width: int
    height: int


def _caption(rec: dict, field: str) -> str:
    for k in (field, "long_caption", "short_caption", "caption", "prompt"):
        v = rec.get(k)
        if isinstance(v, str) and v.strip():
            return v
    return ""


def _size(path: str) -> tuple[int, int]:
    from curation.upscale.storage import open_source

    src = open_source(path)
    try:
        return int(src.width), int(src.height)
    finally:
        getattr(src, "close", lambda: None)()


def records_from(rows, caption_field: str = "long_caption", root: str | os.PathLike | None = None) -> list[Record]:
    """Records from dicts or a DataFrame (corpus manifest rows: ``passed`` rows only if present)."""
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    out = []
    for r in rows:
        if "passed" in r and not r["passed"]:
            continue
        path = r.get("path") or r.get("output_path")
        if root is not None and not os.path.isabs(path):
            path = os.path.join(root, path)
        w, h = r.get("width"), r.get("height")
        if not w or not h:
            w, h = _size(path)
        out.append(Record(str(r.get("image_id") or os.path.basename(path)), str(path), _caption(r, caption_field),
                          int(w), int(h)))
    return out


def crop_box(height: int, width: int, bucket: Bucket, rng: np.random.Generator,
             scale_range=(1.0, 1.0)) -> tuple[int, int, int, int]:
    """``(y0, x0, rh, rw)``: a region of the image whose resize to the bucket is the sample."""
    lo, hi = float(scale_range[0]), float(scale_range[1])
    s = lo if hi <= lo else float(rng.uniform(lo, hi))
    s = max(s, bucket.height / height, bucket.width / width)  # the region must fit the image
    rh = min(height, max(1, int(round(bucket.height / s))))
    rw = min(width, max(1, int(round(bucket.width / s))))
    y0 = int(rng.integers(0, height - rh + 1))
    x0 = int(rng.integers(0, width - rw + 1))
    return y0, x0, rh, rw


class TierDataset:
    """Images of one tier: bucket per image, region-crop reads, prompts."""

    def __init__(self, records: list[Record], pixel_budget: int, ratios, multiple: int, seed: int = 0,
                 crop_scale_range=(1.0, 1.0), allow_full_decode: bool = False, min_grid_side: int = 1):
        if not records:
            raise ValueError("no records")
        self.records = list(records)
        buckets = make_buckets(int(pixel_budget), ratios, int(multiple))
        # Scheme II: a bucket whose token grid is narrower than the largest partition factor is
        # not used (at the paper's sizes every bucket qualifies; small profiles keep fewer)
        self.buckets = [b for b in buckets if min(b.height, b.width) // int(multiple) >= int(min_grid_side)]
        if not self.buckets:
            raise ValueError(f"no aspect bucket of {pixel_budget} px has a token grid side >= {min_grid_side}")
        self.bucket_of = [assign_bucket(r.height, r.width, self.buckets) for r in self.records]
        self.seed = int(seed)
        self.crop_scale_range = tuple(crop_scale_range)
        self.allow_full_decode = bool(allow_full_decode)
        self.region_reads = 0
        self.pixels_read = 0

    def __len__(self) -> int:
        return len(self.records)

    def _open(self, path: str):
        from curation.upscale.storage import ArraySource, TiffRegionSource, open_source

        suffix = os.path.splitext(path)[1].lower()
        if suffix not in (".tif", ".tiff", ".npy") and not self.allow_full_decode:
            raise ValueError(f"{path}: no region reads for {suffix!r} (store the corpus as tiled TIFF), "
                             "or pass allow_full_decode=True")
        src = open_source(path)
        if suffix in (".tif", ".tiff") and not isinstance(src, TiffRegionSource) and not self.allow_full_decode:
            raise ValueError(f"{path}: not a region-readable TIFF")
        assert isinstance(src, (ArraySource, TiffRegionSource))
        return src

    def sample(self, i: int, sample_index: int) -> dict:
        import cv2

        rec = self.records[i]
        bucket = self.buckets[self.bucket_of[i]]
        rng = np.random.default_rng([self.seed, int(sample_index), 7])
        y0, x0, rh, rw = crop_box(rec.height, rec.width, bucket, rng, self.crop_scale_range)
        src = self._open(rec.path)
        try:
            region = np.ascontiguousarray(src.read(y0, y0 + rh, x0, x0 + rw))
        finally:
            getattr(src, "close", lambda: None)()
        self.region_reads += 1
        self.pixels_read += rh * rw
        if (rh, rw) != (bucket.height, bucket.width):
            interp = cv2.INTER_AREA if rh * rw > bucket.pixels else cv2.INTER_CUBIC
            region = cv2.resize(region, (bucket.width, bucket.height), interpolation=interp)
        pixels = torch.from_numpy(region).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        key = f"{rec.image_id}:{y0},{x0},{rh},{rw}->{bucket.height}x{bucket.width}"
        return {"pixels": pixels, "prompt": rec.caption, "key": key, "image_id": rec.image_id}


def collate(samples: list[dict], ref) -> dict:
    return {"pixels": torch.stack([s["pixels"] for s in samples]),
            "prompt": [s["prompt"] for s in samples],
            "key": [s["key"] for s in samples],
            "image_id": [s["image_id"] for s in samples],
            "index": torch.arange(ref.first_sample, ref.first_sample + len(samples)),
            "epoch": ref.epoch, "batch_index": ref.index}


class TierStream(IterableDataset):
    """Collated batches from global batch ``start`` on (read with ``DataLoader(batch_size=None)``)."""

    def __init__(self, dataset: TierDataset, batch_size: int, seed: int = 0, start: int = 0, limit: int | None = None):
        super().__init__()
        self.dataset = dataset
        self.order = BucketBatchOrder(dataset.bucket_of, batch_size, seed)
        self.start = int(start)
        self.limit = limit

    def __iter__(self):
        # data parallel: rank r of w takes the global batches r, r + w, r + 2w, ... (start counts global batches)
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        n = 0
        for ref in self.order.batches(self.start):
            if ref.index % world != rank:
                continue
            if self.limit is not None and n >= self.limit:
                return
            samples = [self.dataset.sample(i, ref.first_sample + j) for j, i in enumerate(ref.items)]
            yield collate(samples, ref)
            n += 1
