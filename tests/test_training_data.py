"""Tier datasets: buckets, resumable batch order, region crops from tiled files, latent cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curation.upscale.storage import write_array
from training.data.buckets import BucketBatchOrder, assign_bucket, make_buckets
from training.data.datasets import TierDataset, TierStream, crop_box, records_from

RATIOS = [[1, 1], [4, 3], [3, 4], [16, 9], [9, 16], [2, 1], [1, 2]]


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 7 + y) % 256, (y * 5) % 256, rng.integers(0, 256, (h, w))], -1)
    return a.astype(np.uint8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    rows, arrays = [], {}
    for i, (h, w) in enumerate([(1100, 1500), (1500, 1000), (1200, 1200), (700, 1400)]):
        a = _image(h, w, i)
        p = d / f"img{i}.tif"
        write_array(p, a)  # tiled TIFF (512^2 tiles), the corpus format
        arrays[f"im{i}"] = a
        rows.append({"image_id": f"im{i}", "output_path": str(p), "passed": True, "width": w, "height": h,
                     "long_caption": f"a long caption {i}", "short_caption": f"short {i}"})
    rows.append({"image_id": "rejected", "output_path": str(d / "missing.tif"), "passed": False})
    return rows, arrays


def test_buckets_hold_the_budget():
    budget = 512 * 512
    bs = make_buckets(budget, RATIOS, 16)
    assert bs[0].height == bs[0].width == 512
    for b, (rh, rw) in zip(bs, RATIOS):
        assert b.height % 16 == 0 and b.width % 16 == 0 and b.pixels <= budget
        assert b.pixels > 0.9 * budget and b.ratio == pytest.approx(rh / rw, rel=0.08)
    assert assign_bucket(900, 1600, bs) == RATIOS.index([9, 16])
    assert assign_bucket(1000, 1000, bs) == 0


def test_batch_order_is_deterministic_and_resumable():
    order = BucketBatchOrder([0, 1, 0, 2, 0, 1, 0], batch_size=2, seed=3)
    per = order.batches_per_epoch()
    stream = order.batches(0)
    first = [next(stream) for _ in range(3 * per)]
    for e in range(3):  # every epoch covers every image once, one bucket per batch
        items = sorted(i for b in first[e * per:(e + 1) * per] for i in b.items)
        assert items == list(range(7))
    assert all(len({order.bucket_of[i] for i in b.items}) == 1 for b in first)
    assert [b.items for b in first[:per]] != [b.items for b in first[per:2 * per]]  # reshuffled per epoch
    resumed = order.batches(5)
    assert [next(resumed) for _ in range(4)] == first[5:9]
    assert first[5].first_sample == 10


def test_region_crops_never_decode_the_whole_image(corpus, monkeypatch):
    import curation.upscale.storage as storage

    rows, arrays = corpus
    recs = records_from(rows)
    assert [r.image_id for r in recs] == ["im0", "im1", "im2", "im3"] and recs[0].caption == "a long caption 0"

    def no_full_decode(*a, **k):
        raise AssertionError("a whole image was decoded")

    monkeypatch.setattr(storage, "read_image", no_full_decode)
    decoded = []
    orig = storage.TiffRegionSource._segments

    def count(self, idx):
        decoded.extend(idx)
        return orig(self, idx)

    monkeypatch.setattr(storage.TiffRegionSource, "_segments", count)
    ds = TierDataset(recs, 256 * 256, RATIOS, 16, seed=1)
    for k in range(4):
        s = ds.sample(k, sample_index=k)
        b = ds.buckets[ds.bucket_of[k]]
        assert s["pixels"].shape == (3, b.height, b.width)
        assert s["pixels"].min() >= -1 and s["pixels"].max() <= 1
        # native-resolution crop (crop scale 1.0): exactly the source pixels of the box in the key
        box = s["key"].split(":")[1].split("->")[0]
        y0, x0, rh, rw = (int(v) for v in box.split(","))
        ref = arrays[s["image_id"]][y0:y0 + rh, x0:x0 + rw]
        got = ((s["pixels"].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
        assert np.array_equal(got, ref)
    assert len(decoded) <= 4 * 4  # a <= 256x~360 crop touches at most 2x2 tiles of 512^2 per sample
    assert ds.pixels_read < sum(r.width * r.height for r in recs) / 4


def test_a_bucket_larger_than_the_image_is_resized(corpus):
    rows, _ = corpus
    recs = records_from(rows)
    ds = TierDataset(recs[2:3], 1600 * 1600, [[1, 1]], 16, seed=0)   # the 10K case: budget > image
    s = ds.sample(0, 0)
    assert s["pixels"].shape == (3, 1600, 1600) and s["key"].endswith("0,0,1200,1200->1600x1600")
    rng = np.random.default_rng(0)
    y0, x0, rh, rw = crop_box(1000, 2000, ds.buckets[0], rng, (0.5, 0.5))   # zoomed-out crop: region 2x bucket
    assert (rh, rw) == (1000, 1000) and y0 == 0


def test_png_is_refused_without_region_reads(tmp_path):
    import cv2

    p = tmp_path / "a.png"
    cv2.imwrite(str(p), _image(300, 300))
    ds = TierDataset(records_from([{"image_id": "a", "path": str(p), "caption": "x", "width": 300, "height": 300}]),
                     128 * 128, [[1, 1]], 16)
    with pytest.raises(ValueError, match="region reads"):
        ds.sample(0, 0)


def test_stream_batches_and_latent_cache(corpus, tmp_path):
    from training.data.latents import Flux2LatentEncoder, LatentCache, pack, patchify_latents, tiny_flux2_vae, unpack

    rows, _ = corpus
    ds = TierDataset(records_from(rows), 128 * 128, RATIOS, 16, seed=0)
    batches = list(TierStream(ds, batch_size=2, seed=0, limit=3))
    assert [b["batch_index"] for b in batches] == [0, 1, 2]
    assert batches[1]["index"].tolist()[0] == 2 and all(isinstance(p, str) for p in batches[0]["prompt"])
    again = next(iter(TierStream(ds, batch_size=2, seed=0, start=1, limit=1)))
    assert torch.equal(again["pixels"], batches[1]["pixels"]) and again["key"] == batches[1]["key"]

    enc = Flux2LatentEncoder(tiny_flux2_vae())
    assert enc.downsample == 16 and enc.channels == 16
    cache = LatentCache(tmp_path / "lat", enc.fingerprint)
    b = batches[0]
    z1 = cache.encode(enc, b["pixels"], b["key"])
    h, w = b["pixels"].shape[-2:]
    assert z1.shape == (len(b["key"]), 16, h // 16, w // 16) and cache.misses == len(b["key"])
    z2 = cache.encode(enc, b["pixels"], b["key"])
    assert cache.hits == len(b["key"]) and torch.equal(z1, z2)
    assert all(p.suffix == ".safetensors" for p in (tmp_path / "lat").rglob("*") if p.is_file())
    # patchify / pack layout: channel c*4 + 2*dy + dx, tokens row-major
    z = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    pz = patchify_latents(z)
    assert pz.shape == (1, 8, 2, 2) and pz[0, :4, 0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]
    assert torch.equal(unpack(pack(pz), (2, 2)), pz) and pack(pz)[0, 1, 0].item() == 2.0
