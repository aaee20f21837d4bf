"""The captions library (paper 3.1.5): geometry, RLE, answer parsing, tasks, heuristic backends,
HTTP adapters, the record and the pipeline on a small synthetic tiled TIFF. Fast, CPU only."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from curation.captioning import answers as A
from curation.captioning import geometry as G
from curation.captioning import rle as R

ROOT = Path(__file__).resolve().parent.parent


# =============================================================================================
# fixtures
# =============================================================================================
def _scene(w: int = 1200, h: int = 800) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Grey background, a red disc and a blue rectangle; their ground-truth masks."""
    img = np.full((h, w, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (xx - 0.6 * w) ** 2 + (yy - 0.55 * h) ** 2 <= (0.15 * h) ** 2
    rect = np.zeros((h, w), bool)
    rect[int(0.1 * h):int(0.35 * h), int(0.08 * w):int(0.3 * w)] = True
    img[disc] = (200, 30, 30)
    img[rect] = (40, 70, 200)
    return img, {"red": disc, "blue": rect}


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory):
    from curation.upscale.storage import write_array

    img, gt = _scene()
    path = tmp_path_factory.mktemp("cap") / "scene.tif"
    write_array(path, img, tile=256)
    return path, img, gt


# =============================================================================================
# geometry
# =============================================================================================
def test_nms_keeps_the_best_of_overlapping_masks():
    a = np.zeros((20, 20), bool)
    a[2:12, 2:12] = True
    b = np.zeros_like(a)
    b[3:12, 2:12] = True          # IoU(a, b) = 0.9
    c = np.zeros_like(a)
    c[14:18, 14:18] = True        # disjoint
    d = np.zeros_like(a)
    d[2:12, 7:17] = True          # IoU(a, d) = 50 / 150
    assert G.mask_iou(a, b) == pytest.approx(0.9)
    assert G.mask_iou(a, d) == pytest.approx(1 / 3)
    kept = G.mask_nms([a, b, c, d], [0.5, 0.9, 0.1, 0.4], 0.5)
    assert kept == [1, 3, 2]      # a suppressed by the better b (IoU 0.9); d kept (IoU 45/145 with b)
    assert G.mask_nms([a, b, c, d], [0.5, 0.9, 0.1, 0.4], 0.95) == [1, 0, 3, 2]
    assert G.mask_nms([a, b, c, d], [0.5, 0.9, 0.1, 0.4], 0.2) == [1, 2]
    # ties: lower index first; NaN scores go last
    assert G.nms([0.5, 0.5], np.array([[1, 1], [1, 1.0]]), 0.5) == [0]
    assert G.nms([float("nan"), 0.1], np.eye(2), 0.5) == [1, 0]
    assert G.mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 0.0
    with pytest.raises(ValueError):
        G.nms([0.1, 0.2], np.eye(3), 0.5)


def test_nms_on_rle_matches_nms_on_arrays():
    rng = np.random.default_rng(1)
    masks = []
    for _ in range(6):
        m = np.zeros((60, 90), bool)
        x, y = rng.integers(0, 60), rng.integers(0, 30)
        m[y:y + 30, x:x + 30] = True
        masks.append(m)
    scores = rng.random(6)
    iou = R.iou_matrix([R.encode(m) for m in masks])
    assert np.allclose(iou, G.mask_iou_matrix(masks))
    assert G.nms(scores, iou, 0.3) == G.mask_nms(masks, scores, 0.3)


def test_area_filter():
    assert G.area_filter([0, 5, 10, 11, 1000], 10_000, 0.001) == [2, 3, 4]
    assert G.area_filter([5, 10], 10_000, 0.0) == [0, 1]      # empty masks never pass, even at 0
    assert G.area_filter([0], 10_000, 0.0) == []


@pytest.mark.parametrize("box,expected", [
    ((100, 200, 300, 400), (90, 190, 310, 410)),                  # centre: 5 % of 200 = 10 px per side
    ((5, 200, 105, 300), (0, 195, 110, 305)),                     # left border: clipped at 0
    ((900, 200, 995, 300), (895, 195, 1000, 305)),                # right: 995 + 4.75 -> 1000 (clipped)
    ((400, 3, 500, 103), (395, 0, 505, 108)),                     # top
    ((400, 520, 500, 599), (395, 516, 505, 600)),                 # bottom: 599 + 3.95 -> 600 (clipped)
    ((0, 0, 1000, 600), (0, 0, 1000, 600)),                       # whole image
    ((10.5, 20.25, 30.5, 40.25), (9, 19, 32, 42)),                # fractional: rounded outwards
])
def test_crop_box_padding_and_borders(box, expected):
    assert G.crop_box(box, 1000, 600, 0.05) == expected


def test_crop_box_is_centred_and_rejects_non_boxes():
    x0, y0, x1, y1 = G.crop_box((400, 300, 600, 340), 1000, 1000, 0.05)
    assert (x0 + x1) / 2 == 500 and (y0 + y1) / 2 == 320
    assert (x1 - x0, y1 - y0) == (220, 44)
    for bad in [(5, 5, 5, 10), (float("nan"), 0, 1, 1), "box", (1, 2, 3)]:
        with pytest.raises(ValueError):
            G.crop_box(bad, 100, 100)
    with pytest.raises(ValueError):
        G.crop_box((200, 200, 300, 300), 100, 100)


def test_read_crop_uses_region_reads(scene_tif):
    from curation.upscale.storage import open_source

    path, img, _ = scene_tif
    with open_source(path) as src:
        crop, cb = G.read_crop(src, (300, 100, 400, 180), 0.05, max_long_edge=None)
        assert cb == (295, 96, 405, 184)
        assert np.array_equal(crop, img[96:184, 295:405])
        assert src.decoded_segments < 15   # 15 tiles of 256 in the file: a crop touches few
        big, cb = G.read_crop(src, (0, 0, 1200, 800), 0.05, max_long_edge=300, band_rows=128)
        assert big.shape == (200, 300, 3) and cb == (0, 0, 1200, 800)
        thumb = G.downscaled_read(src, 300, band_rows=100)
    import cv2

    ref = cv2.resize(img, (300, 200), interpolation=cv2.INTER_AREA)
    assert thumb.shape == ref.shape
    assert np.abs(thumb.astype(int) - ref.astype(int)).mean() < 2.0


@pytest.fixture(scope="module")
def level_tifs(tmp_path_factory):
    """A photo with an overview (long edge 300) and pyramid levels 4, 8 (thresholds scaled down
    for a 1600x1000 image), and the same pixels without levels."""
    from curation.upscale import storage

    img = np.asarray(__import__("curation.synth", fromlist=["generate_photo"]).generate_photo(1600, 1000, seed=5))
    d = tmp_path_factory.mktemp("lv")
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(storage, "TIFF_PYRAMID_MIN_EDGE", 128)
        mp.setattr(storage, "TIFF_OVERVIEW_LONG_EDGE", 300)
        storage.write_array(d / "pyr.tif", img, tile=256)
    finally:
        mp.undo()
    storage.write_array(d / "flat.tif", img, tile=256, pyramid=False)
    return d / "pyr.tif", d / "flat.tif", img


def test_region_reads_use_the_coarsest_level_that_suffices(level_tifs):
    import cv2

    from curation.upscale.storage import open_source

    pyr, flat, img = level_tifs
    with open_source(pyr) as src, open_source(flat) as ref:
        assert [(lv.width, lv.height) for lv in src.levels()] == [(400, 250), (300, 188), (200, 125)]
        assert [lv.fx for lv in src.levels()] == [4.0, 1600 / 300, 8.0]
        # the whole image at the overview's size: the same pixels as a band-wise read without levels
        assert np.array_equal(G.downscaled_read(src, 300), G.downscaled_read(ref, 300))
        assert src.decoded_segments == 0 and src.levels()[1].decoded_segments > 0
        # smaller: from a pyramid level (8: 200 px >= 150), an antialiased downscale like the area one
        a = G.downscaled_read(src, 150).astype(int)
        b = cv2.resize(img, a.shape[1::-1], interpolation=cv2.INTER_AREA).astype(int)
        assert a.shape == (94, 150, 3) and np.abs(a - b).mean() < 3 and src.decoded_segments == 0
        # a large crop downscaled >= 4x: from level 4, the same place of the image (to half a level
        # pixel); this photo's texture is at the output's resolution, so a few grey levels differ
        crop, cb = G.read_crop(src, (100, 80, 1500, 900), 0.05, max_long_edge=300)
        full = cv2.resize(img[cb[1]:cb[3], cb[0]:cb[2]], crop.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert crop.shape == full.shape and np.abs(crop.astype(int) - full).mean() < 5
        shifted = cv2.resize(img[cb[1]:cb[3], cb[0] + 8:cb[2] + 8], crop.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(crop.astype(int) - full).mean() < np.abs(crop.astype(int) - shifted).mean()
        assert src.decoded_segments == 0
        # a crop that needs full resolution still reads (only) full-resolution tiles
        crop, cb = G.read_crop(src, (300, 100, 400, 180), 0.05, max_long_edge=None)
        assert np.array_equal(crop, img[96:184, 295:405]) and 0 < src.decoded_segments < 4


def test_render_highlight_dims_outside_keeps_inside_and_outlines():
    rng = np.random.default_rng(0)
    img = rng.integers(50, 250, (60, 80, 3), dtype=np.uint8)
    m = np.zeros((60, 80), bool)
    m[20:40, 30:60] = True
    out = G.render_highlight(img, m, dim=0.5, outline_px=2, outline_rgb=(255, 0, 0))
    assert np.array_equal(out[m], img[m])                                   # inside untouched
    far = np.ones_like(m)
    far[15:45, 25:65] = False                                               # away from the outline
    assert np.allclose(out[far], np.round(img[far] * 0.5), atol=1)          # outside dimmed
    ring = np.zeros_like(m)
    ring[18:42, 28:62] = True
    ring &= ~m
    assert (out[ring] == (255, 0, 0)).all()                                 # 2-px outline outside the mask
    assert not (out[m] == (255, 0, 0)).all(axis=1).all()
    with pytest.raises(ValueError):
        G.render_highlight(img, m[:10])


def test_highlight_image_from_rle_on_the_tiled_file(scene_tif):
    from curation.upscale.storage import open_source

    path, img, gt = scene_tif
    r = R.encode(gt["red"])
    with open_source(path) as src:
        hl = G.highlight_image(src, r, long_edge=300, dim=0.3, outline_px=1)
        with pytest.raises(ValueError):
            G.highlight_image(src, R.encode(np.zeros((10, 10), bool)), long_edge=300)
    assert hl.shape == (200, 300, 3)
    # centre of the disc: original red; a far corner: grey 128 dimmed to ~38
    cy, cx = int(0.55 * 200), int(0.6 * 300)
    assert tuple(hl[cy, cx]) == (200, 30, 30)
    assert np.allclose(hl[190, 10], 38, atol=2)


# =============================================================================================
# RLE
# =============================================================================================
@pytest.mark.parametrize("shape", [(37, 53), (53, 37), (1, 9), (9, 1)])
def test_rle_round_trip_non_square(shape):
    rng = np.random.default_rng(sum(shape))
    m = rng.random(shape) > 0.6
    r = R.encode(m)
    assert isinstance(r["counts"], str) and r["size"] == list(shape)
    r2 = json.loads(json.dumps(r))
    assert np.array_equal(R.decode(r2), m)
    assert R.area(r2) == int(m.sum())
    ys, xs = np.nonzero(m)
    assert R.bbox(r2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    counts = R.counts_from_string(r["counts"])
    assert counts.sum() == m.size
    # column-major runs: the first run counts zeros from the top of the first column
    col = m.T.ravel()
    first_one = int(np.argmax(col)) if col.any() else col.size
    assert counts[0] == first_one
    assert R.from_counts(counts, *shape) == r
    assert np.array_equal(R.decode_region(r, (2, 1, min(shape[1], 7), min(shape[0], 5))),
                          m[1:min(shape[0], 5), 2:min(shape[1], 7)])


def test_rle_empty_and_full_masks():
    e = R.encode(np.zeros((30, 50), bool))
    assert R.area(e) == 0 and R.bbox(e) is None and not R.decode(e).any()
    assert R.decode(e).shape == (30, 50)
    f = R.encode(np.ones((30, 50), bool))
    assert R.area(f) == 1500 and R.bbox(f) == (0, 0, 50, 30)
    assert list(R.counts_from_string(f["counts"])) == [0, 1500]
    with pytest.raises(ValueError):
        R.encode(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        R.from_counts([3, 4], 2, 2)


def _reference_upsample(low, frame, H, W, thr):
    """Brute-force reference: bilinear value at every full pixel centre inside the frame."""
    mh, mw = low.shape
    fx0, fy0, fx1, fy1 = frame
    out = np.zeros((H, W), bool)
    for y in range(H):
        cy = y + 0.5
        if not fy0 <= cy < fy1:
            continue
        u = min(max((cy - fy0) * mh / (fy1 - fy0) - 0.5, 0), mh - 1)
        i0 = int(math.floor(u))
        i1, wy = min(i0 + 1, mh - 1), u - i0
        row = low[i0] * (1 - wy) + low[i1] * wy
        for x in range(W):
            cx = x + 0.5
            if not fx0 <= cx < fx1:
                continue
            v = min(max((cx - fx0) * mw / (fx1 - fx0) - 0.5, 0), mw - 1)
            j0 = int(math.floor(v))
            j1, wx = min(j0 + 1, mw - 1), v - j0
            out[y, x] = row[j0] * (1 - wx) + row[j1] * wx >= thr
    return out


@pytest.mark.parametrize("frame,chunk,dense", [((7.3, 4.1, 61.7, 38.9), 5, False), ((-10, -3, 90, 70), 1000, False),
                                               ((0, 0, 70, 45), 1, False), ((5, 0, 60, 30), 3, True),
                                               ((5, 20, 60, 45), 4, True), ((0, 10, 70, 30), 7, True)])
def test_encode_lowres_matches_the_reference(frame, chunk, dense):
    rng = np.random.default_rng(3)
    low = (rng.random((6, 9)) * (0.5 if dense else 1.0) + (0.45 if dense else 0.0)).astype(np.float32)
    H, W = 45, 70
    r = R.encode_lowres(low, frame, H, W, 0.5, chunk_columns=chunk)
    ref = _reference_upsample(low.astype(np.float64), tuple(round(v) for v in frame), H, W, 0.5)  # frame -> whole px
    got = R.decode(r)
    assert (got != ref).sum() <= 2   # float32 vs float64 ties at the threshold only
    assert R.area(r) == int(got.sum())


def test_encode_lowres_edge_cases():
    assert R.area(R.encode_lowres(np.ones((2, 2)), (-5, -5, 105, 55), 50, 100)) == 5000
    assert R.area(R.encode_lowres(np.zeros((2, 2)), (0, 0, 100, 50), 50, 100)) == 0
    assert R.area(R.encode_lowres(np.ones((2, 2)), (200, 200, 300, 300), 50, 100)) == 0   # frame outside
    r = R.encode_lowres(np.ones((3, 3), bool), (10, 20, 30, 40), 50, 100)
    assert R.bbox(r) == (10, 20, 30, 40) and R.area(r) == 400
    for bad in [np.zeros((0, 3)), np.zeros(5)]:
        with pytest.raises(ValueError):
            R.encode_lowres(bad, (0, 0, 10, 10), 10, 10)
    with pytest.raises(ValueError):
        R.encode_lowres(np.ones((2, 2)), (5, 5, 5, 9), 10, 10)


def test_encode_lowres_counts_a_value_equal_to_the_threshold_as_foreground():
    """Rows whose centre lies exactly on a threshold crossing (value == threshold) are inside,
    rising or falling, in any column."""
    up, down = np.array([[0.0], [1.0]]), np.array([[1.0], [0.0]])
    # row centres sample u = r/2 - 1/4: values 0, 0.25, 0.75, 1 going up; 1, 0.75, 0.25, 0 going down
    assert R.decode(R.encode_lowres(up, (0, 0, 1, 4), 4, 1, 0.25))[:, 0].tolist() == [False, True, True, True]
    assert R.decode(R.encode_lowres(down, (0, 0, 1, 4), 4, 1, 0.25))[:, 0].tolist() == [True, True, True, False]
    both = R.decode(R.encode_lowres(np.array([[0.0, 1.0], [1.0, 0.0]]), (0, 0, 2, 4), 4, 2, 0.25))
    assert both[:, 0].tolist() == [False, True, True, True] and both[:, 1].tolist() == [True, True, True, False]


def test_decode_resized_samples_the_mask():
    m = np.zeros((400, 600), bool)
    m[100:300, 150:450] = True
    small = R.decode_resized(R.encode(m), 40, 60)
    assert small.shape == (40, 60)
    assert small[10:30, 15:45].all() and small.sum() == 20 * 30


def test_decode_resized_matches_sampling_the_runs():
    rng = np.random.default_rng(7)
    for it in range(60):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        m = rng.random((h, w)) > rng.uniform(0, 1)
        if it % 5 == 0:
            m[:] = it % 10 == 0                                   # empty and full masks
        oh, ow = (int(v) for v in rng.integers(1, 70, 2))
        ys = np.minimum(((np.arange(oh) + 0.5) * (h / oh)).astype(np.int64), h - 1)
        xs = np.minimum(((np.arange(ow) + 0.5) * (w / ow)).astype(np.int64), w - 1)
        got = R.decode_resized(R.encode(m), oh, ow)
        assert np.array_equal(got, m[ys[:, None], xs[None, :]])
        assert np.array_equal(got, R.sample(R.encode(m), ys[:, None], xs[None, :]))


@pytest.mark.parametrize("frame", [(13.4, 7.2, 380.6, 290.1), (-40, -25, 450, 330), (100, 50, 103, 52)])
def test_encode_lowres_matches_a_dense_resize(frame):
    """Against thresholding the whole upsampled mask (OpenCV's bilinear resize, float32)."""
    import cv2

    rng = np.random.default_rng(11)
    low = cv2.GaussianBlur(rng.random((48, 64)).astype(np.float32), (0, 0), 2)
    low = (low - low.min()) / (low.max() - low.min())
    H, W = 300, 400
    fx0, fy0, fx1, fy1 = (round(v) for v in frame)
    dense = cv2.resize(low, (fx1 - fx0, fy1 - fy0), interpolation=cv2.INTER_LINEAR) >= 0.5
    ref = np.zeros((H, W), bool)
    ys, xs = slice(max(0, fy0), min(H, fy1)), slice(max(0, fx0), min(W, fx1))
    ref[ys, xs] = dense[ys.start - fy0: ys.stop - fy0, xs.start - fx0: xs.stop - fx0]
    rles = [R.encode_lowres(low, frame, H, W, 0.5, chunk_columns=c) for c in (1, 37, 512)]
    assert rles[0] == rles[1] == rles[2]                      # the column chunks do not matter
    got = R.decode(rles[0])
    assert (got != ref).sum() <= 3                            # float32 vs float64 ties only
    assert R.area(rles[0]) == int(got.sum())


def test_render_highlight_with_the_dimmed_image_given():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    dark = G.dimmed(img, 0.4)
    for m in (np.zeros((50, 70), bool), np.ones((50, 70), bool), rng.random((50, 70)) > 0.7):
        for px in (0, 2):
            a = G.render_highlight(img, m, 0.4, px, (1, 2, 3))
            assert np.array_equal(a, G.render_highlight(img, m, 0.4, px, (1, 2, 3), dark=dark))
            slot = np.full((2,) + img.shape, 7, np.uint8)
            b = G.render_highlight(img, m, 0.4, px, (1, 2, 3), dark=dark, out=slot[1])
            assert np.shares_memory(b, slot) and np.array_equal(slot[1], a) and (slot[0] == 7).all()
    assert np.array_equal(dark, G.dimmed(img, 0.4))           # the given image is not written to


# =============================================================================================
# answers
# =============================================================================================
GARBAGE = [None, "", "   ", "not json at all", "{broken json", "[1, 2, 3]", "```json\n{}\n```", 42, ["a"], b"\xff\xfe"]

VALID = {
    "tags": ("```json\n{\"tags\": [\"Dog\", \"tree\", \"dog\"]}\n```", {"tags": ["dog", "tree"]}),
    "tag_pruning": ('<json>{"tangible_tags": ["dog"], "reason": "x"}</json>', {"tangible_tags": ["dog"]}),
    "instance_description": ('{"description": "A brown dog sits on grass.", "importance": 7}',
                             {"description": "A brown dog sits on grass.", "importance": 7}),
    "aesthetics_analysis": (json.dumps({k: f"text about {k}" for k in A.AESTHETIC_DIMENSIONS} | {"overall": 70}), None),
    "long_caption": (json.dumps({"long_caption": " ".join(["word"] * 60)}), None),
    "short_caption": ('{"short_caption": "A brown dog sits on green grass."}', None),
    "instance_artifact": ('{"artifact": true, "severity": 2, "reason": "fused fingers"}',
                          {"artifact": True, "severity": 2, "reason": "fused fingers"}),
}
PARSE = {
    "tags": A.parse_tags,
    "tag_pruning": lambda x: A.parse_tag_pruning(x, ["dog", "tree", "sky"]),
    "instance_description": A.parse_instance_description,
    "aesthetics_analysis": A.parse_aesthetics_analysis,
    "long_caption": A.parse_long_caption,
    "short_caption": A.parse_short_caption,
    "instance_artifact": A.parse_instance_artifact,
}
BAD = {
    "tags": ['{"tags": "dog"}', '{"tags": []}', '{"tags": ["dog", 3]}', '{"tags": [""]}', '{"labels": ["dog"]}'],
    "tag_pruning": ['{"tangible_tags": ["dog", "unicorn"]}', '{"tangible_tags": "dog"}', '{"reason": "x"}',
                    '{"tangible_tags": [null]}'],
    "instance_description": ['{"description": "A dog.", "importance": 11}', '{"description": "A big dog.", "importance": -1}',
                             '{"description": "", "importance": 5}', '{"description": "A big dog.", "importance": 4.5}',
                             '{"description": "A big dog.", "importance": true}', '{"description": "A big dog."}',
                             '{"description": ["A", "dog"], "importance": 3}', '{"importance": 3}',
                             '{"description": "A big dog.", "importance": "high"}',
                             '{"description": "A big dog.", "importance": NaN}'],
    "aesthetics_analysis": [json.dumps({k: "ok text" for k in list(A.AESTHETIC_DIMENSIONS)[:5]}),
                            json.dumps({k: "" for k in A.AESTHETIC_DIMENSIONS}),
                            json.dumps({k: 7 for k in A.AESTHETIC_DIMENSIONS}),
                            json.dumps({k: "t" for k in A.AESTHETIC_DIMENSIONS} | {"overall": 140})],
    "long_caption": ['{"long_caption": ""}', '{"long_caption": "too short"}', '{"caption": "x"}',
                     json.dumps({"long_caption": " ".join(["w"] * 2000)}), '{"long_caption": 5}'],
    "short_caption": ['{"short_caption": "   "}', '{"short_caption": ["a"]}', '{"short_caption": "two words"}'],
    "instance_artifact": ['{"artifact": "yes", "severity": 2, "reason": "x"}', '{"artifact": true, "severity": 0, "reason": "x"}',
                          '{"artifact": false, "severity": 3, "reason": "x"}', '{"artifact": true, "severity": 5, "reason": "x"}',
                          '{"artifact": true, "severity": 2}'],
}


@pytest.mark.parametrize("step", sorted(PARSE))
def test_every_parser_turns_garbage_into_a_failure(step):
    parse = PARSE[step]
    for g in [x for x in GARBAGE if not (step == "tags" and x == ["a"])] + BAD[step]:
        r = parse(g)
        assert isinstance(r, A.Parsed)
        assert r.status == A.FAILED and not r.ok, (step, g, r)
        assert r.value is None and isinstance(r.reason, str) and r.reason, (step, g)
    text, expected = VALID[step]
    r = parse(text)
    assert r.ok, (step, r.reason)
    if expected is not None:
        assert r.value == expected
    assert parse(json.loads(text.replace("```json", "").replace("```", "").replace("<json>", "")
                            .replace("</json>", ""))).ok   # a dict works as well as text


def test_parser_reasons_name_the_problem():
    r = A.parse_instance_description('{"description": "", "importance": 12}')
    assert "description is empty" in r.reason and "importance out of range" in r.reason
    assert "unicorn" in A.parse_tag_pruning('{"tangible_tags": ["unicorn"]}', ["dog"]).reason
    assert A.parse_tag_pruning('{"tangible_tags": []}', ["dog"]).value == {"tangible_tags": []}
    assert A.parse_tags("dog, Cat ,  tree\nbird").value == {"tags": ["dog", "cat", "tree", "bird"]}
    assert A.parse_instance_description('{"description": "a b c d", "importance": "7"}').value["importance"] == 7
    assert A.parse_long_caption('{"long_caption": "a b c"}', min_words=2, max_words=3).ok


# =============================================================================================
# tasks and the heuristic VLM answers
# =============================================================================================
def _client():
    from curation.vlm import create_vlm_client

    return create_vlm_client({})


def test_caption_tasks_are_registered_with_prompts():
    from curation.captioning.tasks import CAPTION_TASKS
    from curation.vlm import DEFAULT_PROMPT_DIR, TASKS, get_task, load_prompt

    for name in CAPTION_TASKS:
        assert name in TASKS
        spec = get_task(name)
        pr = load_prompt(DEFAULT_PROMPT_DIR / spec.prompt_file)
        assert pr.text.startswith("<!--") and "<!--" not in pr.body and len(pr.sha256) == 64
        assert spec.heuristic is not None and spec.check is not None
    assert get_task("caption_long").request_settings()["max_tokens"] == 2048
    assert get_task("caption_aesthetics_analysis") is not get_task("artimuse_aesthetics")
    assert set(load_prompt(DEFAULT_PROMPT_DIR / "caption_long.md").variables) == {"tags", "instances", "aesthetics"}


def test_heuristic_answers_every_caption_task_deterministically():
    from curation.vlm import VLMRequest

    img, _ = _scene(400, 300)
    reqs = [
        VLMRequest("caption_tag_pruning", "x", [], {"tags": ["red blob", "bright scene", "grey tones", "blue block"]}),
        VLMRequest("caption_instance_description", "x@c", [img[100:250, 150:330], img],
                   {"label": "red blob", "box": [0.4, 0.4, 0.8, 0.7], "area_fraction": 0.07}),
        VLMRequest("caption_aesthetics_analysis", "x", [img]),
        VLMRequest("caption_short", "x", [img], {"long_caption": "A red disc and a blue block on grey. More."}),
        VLMRequest("instance_artifact", "x@c", [img[100:250, 150:330], img], {"label": "red blob"}),
    ]
    with _client() as c:
        a = c.run(reqs)
    with _client() as c:
        b = c.run(reqs)
    assert [r.answer for r in a] == [r.answer for r in b]
    for r in a:
        assert r.ok, (r.task, r.reason)
        assert r.backend == "heuristic" and "heuristic" in r.model
    prune, desc, aes, short, art = (r.answer for r in a)
    assert prune["tangible_tags"] == ["red blob", "blue block"] and prune["reason"].startswith("heuristic:")
    assert desc["description"].startswith("heuristic:") and "red" in desc["description"] and 0 <= desc["importance"] <= 10
    assert all(aes[k].startswith("heuristic:") for k in A.AESTHETIC_DIMENSIONS)
    assert short["short_caption"].startswith("heuristic:")
    assert A.parse_instance_artifact(art).ok
    # the long caption carries the metadata it was given
    with _client() as c:
        lc = c.run_one(VLMRequest("caption_long", "x", [img], {"tags": prune["tangible_tags"], "instances": [desc],
                                                              "aesthetics": {k: aes[k] for k in A.AESTHETIC_DIMENSIONS}}))
    assert lc.ok and lc.answer["long_caption"].startswith("heuristic:")
    assert "red blob" in lc.answer["long_caption"] and A.parse_long_caption(lc.answer).ok


# =============================================================================================
# heuristic backends and the pipeline
# =============================================================================================
def test_heuristic_tagger_grounder_segmenter_find_the_drawn_objects(scene_tif):
    from curation.captioning.backends import GROUNDERS, SEGMENTERS, TAGGERS
    from curation.upscale.storage import open_source

    path, img, gt = scene_tif
    with open_source(path) as src:
        view = G.downscaled_read(src, 600)
    s = 1200 / 600
    tags = TAGGERS.create("heuristic").tag(view)
    labels = [t.label for t in tags]
    assert {"red blob", "blue block"} <= set(labels) and all(t.source == "heuristic" for t in tags)
    assert {"mid-tone scene", "grey tones"} <= set(labels)
    dets = GROUNDERS.create("heuristic").ground(view, ["red blob", "blue block", "purple strip"])
    assert sorted(d.label for d in dets) == ["blue block", "red blob"]
    masks = SEGMENTERS.create("heuristic").segment(view, [d.box for d in dets])
    assert len(masks) == 2
    for d, m in zip(dets, masks):
        truth = gt["red" if d.label == "red blob" else "blue"]
        ys, xs = np.nonzero(truth)
        full_box = tuple(v * s for v in d.box)
        assert G.box_iou(full_box, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)) > 0.9
        r = R.encode_lowres(m.low, m.scaled(s, s).frame, 800, 1200)
        assert G.mask_iou(R.decode(r), truth) > 0.9
    # a garbage box gives an empty mask, not an exception
    bad = SEGMENTERS.create("heuristic").segment(view, [(float("nan"), 0, 5, 5), (700, 700, 800, 800)])
    assert [float(b.low.sum()) for b in bad] == [0.0, 0.0]


def _run(path, **kw):
    from curation.captioning import GROUNDERS, SEGMENTERS, TAGGERS, caption_image

    c = kw.pop("client", None) or _client()
    args = dict(tagger=TAGGERS.create("heuristic"), grounder=GROUNDERS.create("heuristic"),
                segmenter=SEGMENTERS.create("heuristic"), llm=c, vlm=c)
    args.update(kw)
    return caption_image(path, "img0001", **args)


def test_pipeline_end_to_end_offline(scene_tif):
    from curation.captioning import CaptionRecord, caption_quality

    path, img, gt = scene_tif
    tim: dict = {}
    rec = _run(path, params={"captions.analysis_long_edge": 600, "captions.highlight.long_edge": 300}, timings=tim)
    assert rec.complete, rec.failures
    assert (rec.width, rec.height) == (1200, 800)
    assert "mid-tone scene" not in rec.tangible_tags and "red blob" in rec.tangible_tags
    by_label = {i.label: i for i in rec.instances}
    red = by_label["red blob"]
    ys, xs = np.nonzero(gt["red"])
    assert G.box_iou(red.box, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)) > 0.9
    assert G.mask_iou(R.decode(red.mask_rle), gt["red"]) > 0.9 and red.area == R.area(red.mask_rle)
    assert red.crop_box == list(G.crop_box(red.box, 1200, 800, 0.05))
    assert red.description.startswith("heuristic:") and 0 <= red.importance <= 10
    assert A.parse_instance_artifact(red.artifact).ok                          # a parsed verdict is recorded
    assert all(p.backend == "heuristic" for p in red.provenance.values())
    assert rec.provenance["long_caption"].backend == "heuristic" and len(rec.provenance["long_caption"].prompt_hash) == 64
    assert rec.long_caption.startswith("heuristic:") and rec.short_caption.startswith("heuristic:")
    # instances never overlap above the NMS threshold and are above the area floor
    iou = R.iou_matrix([i.mask_rle for i in rec.instances])
    assert (iou[~np.eye(len(iou), dtype=bool)] <= 0.5).all()
    assert all(i.area >= 0.001 * 1200 * 800 for i in rec.instances)
    q = caption_quality(rec)
    assert q["instance_coverage"] == 1.0 and q["long_words"] >= 40 and 5 <= q["short_words"] <= 80
    back = CaptionRecord.from_json(rec.to_json())
    assert back == rec
    assert {"views", "rle_encode", "crops", "highlights", "model.tagger"} <= set(tim)


def test_pipeline_gives_the_same_record_from_a_file_with_levels(level_tifs):
    """Views read from the overview are the views computed from the full image: same record."""
    pyr, flat, _ = level_tifs
    params = {"captions.analysis_long_edge": 300, "captions.highlight.long_edge": 200,
              "captions.caption_view_long_edge": 300}
    tim: dict = {}
    a = _run(pyr, params=params, timings=tim)
    b = _run(flat, params=params)
    assert a == b and a.complete
    assert tim["views"] > 0


def test_pipeline_survives_garbage_everywhere(scene_tif):
    from curation.captioning import GROUNDERS, SEGMENTERS, Detection, MaskResult
    from curation.vlm.client import _Outcome
    from curation.vlm.heuristic import HeuristicVLMClient

    path, _, _ = scene_tif

    class Garbage(HeuristicVLMClient):
        def _attempt(self, p):
            return _Outcome("answer", text='```json\n{"long_caption": "", "importance": 99, "tangible_tags": "x"}```')

    class NanGrounder:
        def ground(self, view, tags):
            return [Detection(tags[0], (1.0, 1.0, 50.0, 50.0), 0.9, "bad"), Detection(tags[0], (0, 0, 9, 9), float("nan"), "bad")]

        def describe(self):
            return {"backend": "bad", "model": "nan"}

    class NanSegmenter:
        def segment(self, view, boxes):
            return [MaskResult(np.full((4, 4), np.nan, np.float32), (0, 0, 10, 10), 0.5, "bad") for _ in boxes]

        def describe(self):
            return {"backend": "bad", "model": "nan"}

    class Raises:
        def tag(self, view):
            raise RuntimeError("tagger exploded")

        def describe(self):
            return {"backend": "boom", "model": "boom"}

    rec = _run(path, client=Garbage(schema_retries=0))
    assert not rec.complete and rec.long_caption is None and rec.short_caption is None
    f = rec.failures
    assert "tangible_tags" in f and "long_caption" in f and "aesthetics_analysis" in f
    assert rec.provenance["short_caption"].status == "skipped"
    assert rec.instances == [] and rec.tangible_tags == []

    rec = _run(path, grounder=NanGrounder(), segmenter=NanSegmenter())   # NaN masks -> empty -> filtered
    assert rec.instances == [] and rec.long_caption                        # captions still written

    junk = type("Junk", (), {"segment": lambda self, v, b: ["not a mask"] * len(b), "describe": lambda self: {}})()
    rec = _run(path, segmenter=junk)
    assert rec.instances == [] and "unusable" in rec.provenance["masks"].reason and rec.long_caption

    rec = _run(path, tagger=Raises())
    assert "tagger exploded" in rec.failures["tags"] and rec.tags == [] and rec.long_caption

    rec = _run(path, segmenter=type("Short", (), {"segment": lambda self, v, b: [], "describe": lambda self: {}})())
    assert "masks" in rec.failures and rec.instances == []
    assert GROUNDERS.create("heuristic") and SEGMENTERS.create("heuristic")


# =============================================================================================
# HTTP adapters
# =============================================================================================
def _http(cls, handler, **kw):
    import httpx

    return cls("http://models.test/predict", transport=httpx.MockTransport(handler), **kw)


def test_http_tagger_and_grounder_parse_and_drop_garbage():
    import httpx

    from curation.captioning.backends import HttpGrounder, HttpTagger
    from curation.captioning.structures import BackendOutputError

    view = np.zeros((100, 200, 3), np.uint8)
    seen = {}

    def tags_ok(req):
        seen["body"] = json.loads(req.content)
        return httpx.Response(200, json={"tags": ["Dog", {"label": "tree", "score": 0.7}, {"label": "", "score": 1},
                                                  {"label": "cat", "score": "nan"}, {"label": "car", "score": 3}, 7]})

    t = _http(HttpTagger, tags_ok, max_tags=10)
    tags = t.tag(view)
    assert [(x.label, x.score) for x in tags] == [("dog", 1.0), ("tree", 0.7)] and t.dropped == 4
    assert seen["body"]["image"].startswith("data:image/jpeg;base64,") and seen["body"]["max_tags"] == 10

    def dets(req):
        return httpx.Response(200, json={"detections": [
            {"label": "dog", "box": [10, 10, 50, 60], "score": 0.9},
            {"label": "dog", "box": [10, 10, 10, 60], "score": 0.9},          # no width
            {"label": "dog", "box": [500, 500, 600, 600], "score": 0.9},      # outside
            {"label": "dog", "box": [0, 0, 10, 10], "score": 0.1},            # below threshold
            {"label": "dog", "box": ["a", 0, 1, 1], "score": 0.9}, "junk"]})

    g = _http(HttpGrounder, dets, box_threshold=0.3)
    out = g.ground(view, ["dog"])
    assert [d.box for d in out] == [(10.0, 10.0, 50.0, 60.0)] and g.dropped == 5
    for handler in (lambda r: httpx.Response(200, text="<html>"), lambda r: httpx.Response(500, text="down"),
                    lambda r: httpx.Response(200, json=[1, 2]), lambda r: httpx.Response(200, json={"tags": "dog"})):
        with pytest.raises(BackendOutputError):
            _http(HttpTagger, handler).tag(view)
    with pytest.raises(BackendOutputError):
        _http(HttpGrounder, lambda r: httpx.Response(200, json={"boxes": []})).ground(view, ["dog"])


def test_backend_registries_and_availability():
    from curation.captioning.backends import GROUNDERS, SEGMENTERS, TAGGERS, Sam2Segmenter

    assert TAGGERS.names() == ["heuristic", "http"]
    assert GROUNDERS.names() == ["heuristic", "http", "owlv2"]
    assert SEGMENTERS.names() == ["heuristic", "sam2"]
    assert not Sam2Segmenter.availability(path="/nonexistent/sam2")
    with pytest.raises(FileNotFoundError):
        Sam2Segmenter(path="/nonexistent/sam2")
    assert not TAGGERS["http"].availability()


# =============================================================================================
# record, config, layering
# =============================================================================================
def test_caption_quality_measures():
    from curation.captioning import CaptionRecord, Instance, caption_quality

    def inst(label, desc):
        return Instance(f"i#{label}", label, [0, 0, 1, 1], {"size": [1, 1], "counts": "01"}, 1, 0.9, description=desc)

    rec = CaptionRecord("i", 10, 10, tags=[{"label": "dog", "score": 1.0}], tangible_tags=["dog", "bicycle"],
                        instances=[inst("dog", "A brown dog."), inst("bicycle", "A red bicycle leaning on a wall."),
                                   inst("kite", "A kite high above.")],
                        long_caption="Two dogs play near a red bicycle under tall trees.", short_caption="Dogs and a bicycle.")
    q = caption_quality(rec)
    assert q["instance_coverage"] == pytest.approx(2 / 3)        # dog (plural folded), bicycle; not kite
    # object nouns: dog, play, bicycle, tree -> dog and bicycle match
    assert q["n_object_nouns"] == 4 and q["noun_match"] == pytest.approx(0.5)
    assert (q["long_words"], q["short_words"]) == (10, 4)
    empty = caption_quality(CaptionRecord("j", 1, 1))
    assert empty["instance_coverage"] is None and empty["long_words"] is None


def test_record_json_round_trip_and_schema_guard():
    from curation.captioning import CaptionRecord, Instance, Provenance

    rec = CaptionRecord("id", 30, 20, tags=[{"label": "dog", "score": 0.5}], tangible_tags=["dog"],
                        instances=[Instance("id#0", "dog", [1, 2, 3, 4], R.encode(np.eye(20, 30, dtype=bool)), 20, 0.7,
                                            crop_box=[0, 0, 5, 6], description="d", importance=3,
                                            provenance={"description": Provenance("vllm", "m", "ab" * 32)})],
                        long_caption="x", provenance={"long_caption": Provenance("heuristic", "h", None, "failed", "why")})
    back = CaptionRecord.from_json(rec.to_json())
    assert back == rec and back.failures == {"long_caption": "why"} and not back.complete
    d = json.loads(rec.to_json())
    d["schema_version"] = 99
    with pytest.raises(ValueError):
        CaptionRecord.from_dict(d)


def test_config_defaults_document_their_source():
    from curation.captioning.config import DEFAULTS, param, resolve

    src = (ROOT / "curation" / "captioning" / "config.py").read_text()
    for key in DEFAULTS:
        line = next(ln for ln in src.splitlines() if f'"{key}"' in ln)
        assert "# paper" in line or "# not in paper" in line, key
    assert DEFAULTS["captions.crop.padding"] == 0.05
    p = resolve({"captions": {"nms": {"iou_threshold": 0.6}}, "crop.padding": 0.1})
    assert p["captions.nms.iou_threshold"] == 0.6 and p["captions.crop.padding"] == 0.1
    assert param(p, "nms.iou_threshold") == 0.6 and param(None, "max_instances") == 16
    with pytest.raises(KeyError):
        resolve({"nms": {"iou_treshold": 0.6}})


def test_captioning_imports_neither_dagster_nor_evaluation():
    for path in sorted((ROOT / "curation" / "captioning").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert not n.split(".")[0] in ("dagster", "evaluation", "assets", "orchestration"), (path.name, n)


def test_counts_from_string_matches_explicit_runs():
    rng = np.random.default_rng(5)
    for shape, p in [((7, 13), 0.5), ((300, 200), 0.999), ((64, 64), 0.01), ((1, 1), 0.5)]:
        m = rng.random(shape) < p
        col = m.T.ravel().astype(np.int8)
        d = np.flatnonzero(np.diff(np.concatenate([[0], col])) != 0)
        ref = np.diff(np.concatenate([[0], d, [col.size]]))
        assert list(R.counts_from_string(R.encode(m)["counts"])) == list(ref)
    big = np.zeros((5000, 3000), bool)
    big[100:4900, 5:2990] = True
    big[0, 0] = True
    r = R.encode(big)
    assert R.from_counts(R.counts_from_string(r["counts"]), 5000, 3000) == r
    for bad in ("\x10", "a" * 3 + "o"):
        with pytest.raises(ValueError):
            R.counts_from_string(bad)
