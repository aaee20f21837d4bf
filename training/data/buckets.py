"""Aspect-ratio buckets at a tier's pixel budget and a deterministic, resumable batch order.

Bucketing is not in the paper (marked so in configs/paper.yaml): each ratio ``rh:rw`` gets
the largest ``(h, w)``, both multiples of ``multiple`` (16 px per Flux2 token; the patch
size for Scheme III), with ``h * w <= budget`` and ``h / w`` as close to the ratio as the
multiple allows. An image goes to the bucket nearest its aspect ratio in log space. Every
batch holds one bucket (one token grid per batch).

Order: epoch ``e`` shuffles each bucket's images with ``seed + e``, cuts them into batches
and shuffles the batches; the stream of batches is a pure function of (seed, batch index),
so a resumed run starts at batch ``k`` and sees exactly what the uninterrupted run saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bucket:
    height: int
    width: int

    @property
    def ratio(self) -> float:
        return self.height / self.width

    @property
    def pixels(self) -> int:
        return self.height * self.width


def make_buckets(budget: int, ratios, multiple: int) -> list[Bucket]:
    out: list[Bucket] = []
    for rh, rw in ratios:
        r = float(rh) / float(rw)
        h = math.sqrt(budget * r)
        hm = max(1, int(h // multiple))
        wm = max(1, int((budget / (hm * multiple)) // multiple))
        b = Bucket(hm * multiple, wm * multiple)
        if b not in out:
            out.append(b)
    return out


def assign_bucket(height: int, width: int, buckets: list[Bucket]) -> int:
    r = math.log(height / width)
    return int(np.argmin([abs(r - math.log(b.ratio)) for b in buckets]))


@dataclass(frozen=True)
class BatchRef:
    index: int                 # global batch index (0, 1, ...) over all epochs
    epoch: int
    bucket: int
    items: tuple[int, ...]     # dataset indices
    first_sample: int          # global index of the batch's first sample (index * batch_size)


class BucketBatchOrder:
    """The batch stream of a tier dataset: ``batches(start)`` yields :class:`BatchRef` from the
    global batch index ``start`` on, epoch after epoch (forever; the trainer stops it)."""

    def __init__(self, bucket_of: list[int], batch_size: int, seed: int = 0, drop_last: bool = False):
        self.bucket_of = list(bucket_of)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        if not self.bucket_of:
            raise ValueError("a tier dataset needs at least one image")

    def epoch_batches(self, epoch: int) -> list[tuple[int, tuple[int, ...]]]:
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for b in sorted(set(self.bucket_of)):
            idx = np.array([i for i, x in enumerate(self.bucket_of) if x == b])
            idx = idx[rng.permutation(len(idx))]
            for s in range(0, len(idx), self.batch_size):
                chunk = tuple(int(i) for i in idx[s:s + self.batch_size])
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append((b, chunk))
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def batches_per_epoch(self) -> int:
        return len(self.epoch_batches(0))

    def batches(self, start: int = 0):
        per = self.batches_per_epoch()
        epoch, offset = divmod(int(start), per)
        g = int(start)
        while True:
            for b, items in self.epoch_batches(epoch)[offset:]:
                yield BatchRef(index=g, epoch=epoch, bucket=b, items=items, first_sample=g * self.batch_size)
                g += 1
            epoch, offset = epoch + 1, 0
