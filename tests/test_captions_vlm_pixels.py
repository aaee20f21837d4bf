"""Images sent to the VLM by the captions pipeline (issue 17, performance): at most
``captions.vlm_max_pixels`` pixels each (what the VLM's image processor keeps), read from the
coarsest stored level of the tiled file that still has them, with the content of the
full-resolution crop resized the same way; request ids name the sizes sent. Fast, CPU only."""

from __future__ import annotations

import numpy as np
import pytest

from curation.captioning import geometry as G

W, H = 1600, 1200
BUDGET = 40_000          # px: small, so a 1600x1200 test image has crops above and below it
BOXES = [(100, 100, 190, 170),      # a 99x77 crop: under the budget, sent as it is
         (200, 300, 900, 800),      # 770x550 -> 236x169: reduction 3.3 (full resolution, or the 1/2 level)
         (0, 0, W, H)]              # the whole image -> 230x172: reduction 6.9 (the overview, 5.3)


@pytest.fixture(scope="module")
def tifs(tmp_path_factory):
    """One photo as three tiled files (128-px tiles): corpus levels (1/4, 1/8, 1/16 and a 300-px
    overview; thresholds scaled down for 2 MP), the same with a 1/2 level, and no levels."""
    from curation.synth import generate_photo
    from curation.upscale import storage

    img = np.asarray(generate_photo(W, H, seed=7))
    d = tmp_path_factory.mktemp("vlmpx")
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(storage, "TIFF_PYRAMID_MIN_EDGE", 64)
        mp.setattr(storage, "TIFF_OVERVIEW_LONG_EDGE", 300)
        storage.write_array(d / "levels.tif", img, tile=128)
        storage.write_array(d / "half.tif", img, tile=128, pyramid_first=2)
    finally:
        mp.undo()
    storage.write_array(d / "flat.tif", img, tile=128, pyramid=False)
    return {"levels": d / "levels.tif", "half": d / "half.tif", "flat": d / "flat.tif"}, img


def _reference(img: np.ndarray, cb, size) -> np.ndarray:
    """The crop of the full-resolution image, area-resampled to ``size = (w, h)``."""
    import cv2

    return cv2.resize(img[cb[1]:cb[3], cb[0]:cb[2]], size, interpolation=cv2.INTER_AREA)


# Tolerance of a downscaled crop against the area-resampled full-resolution crop. A crop is
# reduced the way a pyramid level is made: means of k x k blocks (k: the integer part of the
# reduction, from the file's coarsest level that suffices or from full resolution), then bilinear
# for the remaining factor (< 2). Both are antialiased box-like filters; they differ where an
# output pixel's footprint cuts a block (the block is weighed whole) and by the mapping of the
# box to level pixels (<= f/2 image px, under half an output pixel): fine texture at the output's
# resolution moves, a mean of ~2-3 grey levels on this photo (measured 1.6-2.95, the same with an
# area step instead of the bilinear one), while a crop misplaced by one output pixel differs by 7-9.
MEAN_TOL = 4.0


def test_target_size_keeps_the_vlm_budget():
    assert G.target_size(770, 550, 2048, BUDGET) == (236, 169)
    assert G.target_size(99, 77, 2048, BUDGET) == (99, 77)               # never upscaled
    assert G.target_size(4000, 1000, 2048, None) == (2048, 512)          # the long-edge limit alone
    assert G.target_size(4000, 1000, 2048, 1003520) == (2003, 500)       # both: the tighter wins
    for w, h in ((11547, 8660), (3, 5000), (2253, 2253), (1001, 1003)):
        tw, th = G.target_size(w, h, None, 1003520)
        assert tw * th <= 1003520 and abs(tw / th - w / h) < 0.02 * w / h + 1 / th


@pytest.mark.parametrize("kind", ["levels", "half", "flat"])
def test_crops_are_read_at_the_vlm_size_from_the_coarsest_level(tifs, kind):
    import cv2

    from curation.upscale.storage import open_source

    files, img = tifs
    with open_source(files[kind]) as src:
        reductions = [lv.fx for lv in src.levels()]
        assert reductions == {"levels": [4.0, W / 300, 8.0, 16.0], "half": [2.0, 4.0, W / 300, 8.0, 16.0],
                              "flat": []}[kind]
        for box in BOXES:
            before = {lv.fx: lv.decoded_segments for lv in src.levels()} | {1.0: src.decoded_segments}
            crop, cb = G.read_crop(src, box, 0.05, 2048, 1024, BUDGET, fast=True)
            after = {lv.fx: lv.decoded_segments for lv in src.levels()} | {1.0: src.decoded_segments}
            used = {f for f in after if after[f] > before[f]}
            tw, th = G.target_size(cb[2] - cb[0], cb[3] - cb[1], 2048, BUDGET)
            assert crop.shape == (th, tw, 3) and tw * th <= max(BUDGET, (cb[2] - cb[0]) * (cb[3] - cb[1]))
            ref = _reference(img, cb, (tw, th))
            need = min((cb[2] - cb[0]) / tw, (cb[3] - cb[1]) / th)
            expect = max([1.0] + [f for f in reductions if f <= need])
            assert used == {expect}, (box, used, expect)       # only the coarsest level that suffices
            if (tw, th) == (cb[2] - cb[0], cb[3] - cb[1]):      # sent as it is: the same pixels
                assert expect == 1.0 and np.array_equal(crop, ref)
            else:
                diff = np.abs(crop.astype(int) - ref).mean()
                assert diff < MEAN_TOL, diff
                dx = int(np.ceil(need))          # one output pixel to the right: a real misplacement
                if cb[2] + dx <= W:
                    shifted = cv2.resize(img[cb[1]:cb[3], cb[0] + dx:cb[2] + dx], (tw, th), interpolation=cv2.INTER_AREA)
                    assert np.abs(crop.astype(int) - shifted).mean() > 2 * diff


class _Recording:
    """A VLM client that keeps every request it runs (answers from the heuristic client)."""

    def __init__(self):
        from curation.vlm import create_vlm_client

        self.client, self.requests = create_vlm_client({}), []

    def run(self, reqs):
        reqs = list(reqs)
        self.requests += reqs
        return self.client.run(reqs)

    def run_one(self, req):
        return self.run([req])[0]


class _Tagger:
    def tag(self, view):
        from curation.captioning import Tag

        return [Tag(f"object {i}", 0.9, "fixed") for i in range(len(BOXES))]


class _Grounder:
    def ground(self, view, tags):
        from curation.captioning import Detection

        s = view.shape[1] / W
        return [Detection(tags[i], tuple(v * s for v in b), 0.9 - 0.1 * i, "fixed") for i, b in enumerate(BOXES)]


class _Segmenter:
    def segment(self, view, boxes):
        from curation.captioning import MaskResult

        yy, xx = np.mgrid[0:32, 0:32]
        ell = (((xx - 15.5) / 16) ** 2 + ((yy - 15.5) / 16) ** 2 <= 1).astype(np.float32)
        return [MaskResult(ell, tuple(b), 0.9, "fixed") for b in boxes]


PARAMS = {"captions.vlm_max_pixels": BUDGET, "captions.analysis_long_edge": 400,
          "captions.highlight.long_edge": 300, "captions.caption_view_long_edge": 400}


@pytest.mark.parametrize("kind", ["levels", "flat"])
def test_vlm_requests_carry_crops_at_the_budget_with_their_content(tifs, kind):
    from curation.captioning import caption_image

    files, img = tifs
    client = _Recording()
    rec = caption_image(files[kind], "img", tagger=_Tagger(), grounder=_Grounder(), segmenter=_Segmenter(),
                        llm=client, vlm=client, params=PARAMS)
    assert len(rec.instances) == len(BOXES)
    by_task: dict = {}
    for r in client.requests:
        by_task.setdefault(r.task, []).append(r)
    hl_size = G.target_size(W, H, 300, BUDGET)                        # 230x172: the budget binds
    seen = set()
    for inst, req in zip(rec.instances, by_task["caption_instance_description"]):
        crop, hl = req.images
        cb = inst.crop_box
        tw, th = G.target_size(cb[2] - cb[0], cb[3] - cb[1], 2048, BUDGET)
        assert crop.shape == (th, tw, 3) and hl.shape == (hl_size[1], hl_size[0], 3)
        assert hl.shape[0] * hl.shape[1] <= BUDGET
        ref = _reference(img, cb, (tw, th))
        diff = np.abs(crop.astype(int) - ref).mean()
        assert diff == 0 if (tw, th) == (cb[2] - cb[0], cb[3] - cb[1]) else diff < MEAN_TOL, diff
        # the id names the box and the sizes sent: an answer cached for another pair is never reused
        assert req.image_id == (f"img@caption-crop{tw}x{th}+hl{hl_size[0]}x{hl_size[1]}:"
                                f"{cb[0]},{cb[1]},{cb[2] - cb[0]},{cb[3] - cb[1]}|{inst.label}")
        seen.add((tw, th) == (cb[2] - cb[0], cb[3] - cb[1]))
    assert seen == {True, False}                                      # crops below and above the budget
    art = by_task["instance_artifact"]
    assert [a.image_id for a in art] == [r.image_id for r in by_task["caption_instance_description"]]
    vw, vh = G.target_size(W, H, 400, BUDGET)
    for task in ("caption_aesthetics_analysis", "caption_long", "caption_short"):
        (req,) = by_task[task]
        assert req.images[0].shape == (vh, vw, 3) and vw * vh <= BUDGET
        assert req.image_id == f"img@view{vw}x{vh}:0,0,{W},{H}"


def test_half_level_is_optional_and_files_without_it_still_read(tifs):
    """The 1/2 level (``pyramid_first=2``) is only written on request; a 1/2-level file gives a
    crop needing a 2-4x reduction from it, within the tolerance of the corpus file's."""
    from curation.upscale.storage import open_source, pyramid_factors

    files, img = tifs
    assert pyramid_factors(W, H, 128, min_edge=64) == [4, 8, 16]
    assert pyramid_factors(W, H, 128, 2, min_edge=64) == [2, 4, 8, 16]
    with open_source(files["half"]) as half, open_source(files["levels"]) as corpus:
        a, cb = G.read_crop(half, BOXES[1], 0.05, 2048, 1024, BUDGET, fast=True)
        b, _ = G.read_crop(corpus, BOXES[1], 0.05, 2048, 1024, BUDGET, fast=True)
        assert half.decoded_segments == 0 and corpus.levels()[0].decoded_segments == 0
        assert half.levels()[0].fx == 2.0 and half.levels()[0].decoded_segments > 0
        assert np.abs(a.astype(int) - b).mean() < MEAN_TOL
        assert np.abs(b.astype(int) - _reference(img, cb, b.shape[1::-1])).mean() < MEAN_TOL


def test_fast_reduction_in_bands_equals_the_one_shot_reduction(tifs):
    """Band by band (bands of a multiple of k rows), the block means are those of the whole crop:
    the same pixels as :func:`reduce_fast` on the crop in memory, whatever the band height."""
    from curation.upscale.storage import open_source

    files, img = tifs
    with open_source(files["flat"]) as src:
        for box, band in (((0, 0, W, H), 1024), ((165, 275, 935, 825), 100), ((165, 275, 935, 825), 7)):
            tw, th = G.target_size(box[2] - box[0], box[3] - box[1], None, BUDGET)
            got = G.read_region(src, box, None, band, BUDGET, fast=True)
            assert np.array_equal(got, G.reduce_fast(img[box[1]:box[3], box[0]:box[2]], tw, th))
