"""The real model code paths of the captions backends on CPU: tiny random-weight SAM 2
(``transformers.Sam2Model``) and OWLv2 (``Owlv2ForObjectDetection``) built from configs, their
garbage outputs survived (random weights, then NaN / inf outputs forced)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_sam2():
    from transformers import (Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2Model,
                              Sam2PromptEncoderConfig, Sam2VisionConfig)

    torch.manual_seed(0)
    backbone = Sam2HieraDetConfig(hidden_size=16, num_attention_heads=1, image_size=[128, 128],
                                  blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                                  num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
                                  global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4])
    cfg = Sam2Config(
        vision_config=Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
                                       backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32),
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=4),
        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32))
    return Sam2Model(cfg).eval()


class _Tok:
    """A stand-in tokenizer (ids from a hash of each word); the real one comes with the weights."""

    def __call__(self, texts, padding=None, truncation=None, max_length=16, return_tensors=None):
        ids = torch.zeros((len(texts), max_length), dtype=torch.long)
        am = torch.zeros_like(ids)
        for i, t in enumerate(texts):
            toks = [1] + [3 + (sum(map(ord, w)) % 90) for w in t.split()][: max_length - 2] + [2]
            ids[i, :len(toks)] = torch.tensor(toks)
            am[i, :len(toks)] = 1
        return {"input_ids": ids, "attention_mask": am}


@pytest.fixture(scope="module")
def tiny_owlv2():
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2TextConfig, Owlv2VisionConfig

    torch.manual_seed(0)
    cfg = Owlv2Config(
        text_config=Owlv2TextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, max_position_embeddings=16, bos_token_id=1, eos_token_id=2,
                                    pad_token_id=0),
        vision_config=Owlv2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                        image_size=64, patch_size=16),
        projection_dim=32)
    return Owlv2ForObjectDetection(cfg).eval()


def _view(h=90, w=120):
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_tiny_sam2_segments_boxes(tiny_sam2):
    from curation.captioning import rle as R
    from curation.captioning.backends import Sam2Segmenter

    seg = Sam2Segmenter(model=tiny_sam2)
    assert seg.size == 128 and seg.describe()["backend"] == "sam2"
    view = _view()
    out = seg.segment(view, [(10, 10, 60, 50), (0, 0, 120, 90), (float("nan"), 0, 3, 4), (500, 500, 600, 600)])
    assert len(out) == 4 and seg.dropped == 2
    for m in out[:2]:
        assert m.low.shape == (32, 32) and m.low.dtype == np.float32
        assert np.isfinite(m.low).all() and 0.0 <= m.low.min() and m.low.max() <= 1.0
        assert m.frame == (0.0, 0.0, 120.0, 90.0) and np.isfinite(m.score)
        r = R.encode_lowres(m.low, m.scaled(10, 10).frame, 900, 1200)   # full-resolution mask from the low-res one
        assert r["size"] == [900, 1200] and 0 <= R.area(r) <= 900 * 1200
    assert out[2].score == 0.0 and float(out[2].low.sum()) == 0.0
    assert seg.segment(view, []) == []


def test_sam2_survives_nan_outputs(tiny_sam2):
    from curation.captioning.backends import Sam2Segmenter

    seg = Sam2Segmenter(model=tiny_sam2)

    def broken(**kw):
        n = kw["input_boxes"].shape[1]
        return SimpleNamespace(pred_masks=torch.full((1, n, 1, 32, 32), float("nan")),
                               iou_scores=torch.full((1, n, 1), float("inf")))

    seg.net = broken
    out = seg.segment(_view(), [(10, 10, 60, 50)])
    assert len(out) == 1 and out[0].score == 0.0 and float(out[0].low.sum()) == 0.0 and seg.dropped == 1


@pytest.fixture(scope="module")
def tiny_owlv2_grid(tiny_owlv2):
    """The tiny OWLv2 with its box head's last layer zeroed: boxes = sigmoid(box_bias), the
    model's own prior of one box per patch cell (valid boxes; the class logits stay random)."""
    import copy

    m = copy.deepcopy(tiny_owlv2)
    with torch.no_grad():
        m.box_head.dense2.weight.zero_()
        m.box_head.dense2.bias.zero_()
    return m


def test_tiny_owlv2_random_boxes_are_validated(tiny_owlv2):
    from curation.captioning.backends import Owlv2Grounder

    g = Owlv2Grounder(model=tiny_owlv2, tokenizer=_Tok(), box_threshold=0.0, max_boxes_per_tag=16)
    dets = g.ground(_view(), ["red car", "tree"])
    for d in dets:   # random weights: mostly degenerate boxes, dropped; whatever is returned is valid
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 90 and x1 - x0 >= 1 and y1 - y0 >= 1
    assert len(dets) + g.dropped >= 1


def test_tiny_owlv2_grounds_tags(tiny_owlv2_grid):
    from curation.captioning.backends import Owlv2Grounder

    tiny_owlv2 = tiny_owlv2_grid
    g = Owlv2Grounder(model=tiny_owlv2, tokenizer=_Tok(), box_threshold=0.0, max_boxes_per_tag=3)
    assert g.size == 64
    view = _view()
    dets = g.ground(view, ["red car", "tree", "  "])
    assert dets and {d.label for d in dets} == {"red car", "tree"}
    for t in ("red car", "tree"):
        assert sum(d.label == t for d in dets) <= 3
    for d in dets:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 90 and x1 - x0 >= 1 and y1 - y0 >= 1
        assert 0.0 <= d.score <= 1.0 and d.source == "owlv2"
    assert Owlv2Grounder(model=tiny_owlv2, tokenizer=_Tok(), box_threshold=1.01).ground(view, ["tree"]) == []
    assert g.ground(view, []) == []
    with pytest.raises(ValueError):
        Owlv2Grounder(model=tiny_owlv2)


def test_owlv2_survives_garbage_outputs(tiny_owlv2):
    from curation.captioning.backends import Owlv2Grounder

    g = Owlv2Grounder(model=tiny_owlv2, tokenizer=_Tok(), box_threshold=0.0)

    def broken(**kw):
        t = kw["input_ids"].shape[0]
        logits = torch.full((1, 16, t), float("nan"))
        logits[0, 0] = 5.0                                                      # one confident patch ...
        boxes = torch.tensor([[[0.5, 0.5, float("inf"), 0.2]] + [[0.5, 0.5, 0.0, 0.0]] * 15])  # ... with an inf box
        return SimpleNamespace(logits=logits, pred_boxes=boxes)

    g.net = broken
    assert g.ground(_view(), ["tree"]) == [] and g.dropped >= 1


def test_pipeline_with_tiny_models(tmp_path, tiny_sam2, tiny_owlv2_grid):
    from curation.captioning import TAGGERS, caption_image
    from curation.captioning import rle as R
    from curation.captioning.backends import Owlv2Grounder, Sam2Segmenter
    from curation.synth import generate_photo
    from curation.upscale.storage import write_array
    from curation.vlm import create_vlm_client

    path = tmp_path / "p.tif"
    write_array(path, generate_photo(640, 480, seed=4), tile=256)
    with create_vlm_client({}) as c:
        rec = caption_image(path, "tiny", tagger=TAGGERS.create("heuristic"),
                            grounder=Owlv2Grounder(model=tiny_owlv2_grid, tokenizer=_Tok(), box_threshold=0.0),
                            segmenter=Sam2Segmenter(model=tiny_sam2), llm=c, vlm=c,
                            params={"analysis_long_edge": 256, "min_area_fraction": 0.0001})
    assert rec.provenance["boxes"].backend == "owlv2" and rec.provenance["masks"].backend == "sam2"
    assert rec.instances and not rec.failures   # seed 0: 4 instances survive area filter + NMS
    for inst in rec.instances:   # whatever random weights produced: valid, non-empty, de-duplicated
        assert inst.mask_rle["size"] == [480, 640] and inst.area == R.area(inst.mask_rle) > 0
        assert inst.provenance["mask"].backend == "sam2"
    iou = R.iou_matrix([i.mask_rle for i in rec.instances])
    assert (iou[~np.eye(len(iou), dtype=bool)] <= 0.5).all()
    assert rec.long_caption and rec.short_caption
