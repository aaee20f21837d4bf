"""The weight-based bench metrics (``aesthetics``, ``clipscore``, ``fgclip2``) on tiny random models.

Each model is built from a config with random weights, written with ``save_pretrained`` (plus
its tokenizer / image processor) into a temporary folder, and loaded back through the same
code a user's configuration takes: a local directory (metric option or environment variable)
or a model id in a Hugging Face cache folder. Values are checked against a computation by hand
through the same modules (processor -> model -> normalise -> head / cosine); the metrics'
own pre/post-processing is checked against independent implementations (manual PIL resize and
crop, open_clip's OpenAI transform, torchmetrics' public ``clip_score``, transformers' own
SigLIP2 text forward).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from evaluation.metrics import BenchItem, create_metric  # noqa: E402
from evaluation.metrics.aesthetics import (  # noqa: E402
    AESTHETIC_WEIGHTS,
    MLP_ENV,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    build_aesthetic_mlp,
    mlp_state_shapes,
    openai_clip_preprocess,
)
from evaluation.metrics.clipscore import (  # noqa: E402
    CLIP_ENV as CLIPSCORE_ENV,
    batch_mean_aggregate,
    torchmetrics_clip_adapter,
)
from evaluation.metrics.fgclip2 import (  # noqa: E402
    FGCLIP2_ENV,
    KEEP_LEN,
    TEXT_MAX_LENGTH,
    fgclip2_model_class,
    max_num_patches,
)
from evaluation.metrics.hf_models import locate_model  # noqa: E402

SIZES = [(48, 40), (40, 64), (90, 30), (33, 71), (200, 180)]  # (w, h); the last gets 256 FG-CLIP2 patches
SHORT = ["a red cat", "two dogs on grass", "a blue car", "an old tree", "a photo of a city at night"]
LONG = [f"a long caption about picture {i}, with a cat and a dog and a car near a tree" for i in range(len(SIZES))]


@pytest.fixture(autouse=True)
def _no_user_model_env(monkeypatch):
    for var in (MLP_ENV, "UHR_LAION_CLIP", CLIPSCORE_ENV, FGCLIP2_ENV):
        monkeypatch.delenv(var, raising=False)


def _from_env(name: str) -> dict:
    """The options of metric ``name`` that the bench settings read from the environment (what
    ``uhr bench``, ``uhr metric`` and the ``bench_scores`` asset pass to the metric)."""
    from orchestration.bench_resources import bench_settings_from_env

    return bench_settings_from_env("data").metric_options().get(name, {})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(3)
    paths = []
    for i, (w, h) in enumerate(SIZES):
        a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        a[: h // 2] //= 2  # some structure
        p = d / f"im{i}.png"
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------
# tiny models
# ---------------------------------------------------------------------------------------------
def _clip_tokenizer():
    from tokenizers import pre_tokenizers

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


def _word_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", "<bos>", *words])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                                eos_token="<eos>", bos_token="<bos>")


@pytest.fixture(scope="module")
def l14(tmp_path_factory):
    """A tiny 'ViT-L/14' (projection 768, 32-px input) and a random aesthetic MLP file."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("aesthetics")
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, image_size=32, patch_size=8, projection_dim=768)
    model = transformers.CLIPVisionModelWithProjection(cfg).eval()
    model.save_pretrained(root / "clip")
    mlp = build_aesthetic_mlp()
    with torch.no_grad():
        for p in mlp.parameters():
            p.normal_(0.0, 0.2)
    torch.save(mlp.state_dict(), root / AESTHETIC_WEIGHTS)
    return {"dir": root / "clip", "mlp": root / AESTHETIC_WEIGHTS, "root": root}


@pytest.fixture(scope="module")
def b16(tmp_path_factory):
    """A tiny full CLIP with a byte-level tokenizer and the PIL CLIP image processor."""
    torch.manual_seed(1)
    d = tmp_path_factory.mktemp("clipscore") / "clip-b16"
    tok = _clip_tokenizer()
    tc = transformers.CLIPTextConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=37,
                                     num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                     bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16)
    vc = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=32, patch_size=8, projection_dim=16)
    cfg = transformers.CLIPConfig(text_config=tc.to_dict(), vision_config=vc.to_dict(), projection_dim=16)
    transformers.CLIPModel(cfg).eval().save_pretrained(d)
    tok.save_pretrained(d)
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(d)
    return d


def _siglip2_config(vocab_size):
    tc = transformers.Siglip2TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                                        pad_token_id=0, eos_token_id=1, bos_token_id=3)
    tc.keep_len, tc.longtext_len = KEEP_LEN, TEXT_MAX_LENGTH
    vc = transformers.Siglip2VisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                          num_attention_heads=4, num_patches=16, patch_size=16)
    return transformers.Siglip2Config(text_config=tc.to_dict(), vision_config=vc.to_dict())


@pytest.fixture(scope="module")
def fg(tmp_path_factory):
    """A tiny FG-CLIP2: SigLIP2 + long-text parameters, saved with an FG-CLIP2-style config.json
    (model_type fgclip2, remote-code auto_map) as the hub checkpoint has; and a plain SigLIP2
    checkpoint without the long-text parameters."""
    torch.manual_seed(2)
    root = tmp_path_factory.mktemp("fgclip2")
    words = sorted({w.strip(",").lower() for t in LONG + SHORT for w in t.split()})
    tok = _word_tokenizer(words)
    cfg = _siglip2_config(len(tok.get_vocab()))
    model = fgclip2_model_class()(cfg).eval()
    with torch.no_grad():  # make the long-text parts matter
        model.text_model.embeddings.position_embedding_res.weight.normal_(0, 0.5)
        model.text_model.embeddings.position_embedding_ori.weight.normal_(0, 0.5)
    d = root / "fg-clip2-base"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    transformers.Siglip2ImageProcessorPil(patch_size=16).save_pretrained(d)
    c = json.loads((d / "config.json").read_text())
    c.update(model_type="fgclip2", architectures=["FG_CLIP2_Model"],
             auto_map={"AutoModelForCausalLM": "modeling_fgclip2.FG_CLIP2_Model"})
    c["text_config"]["model_type"] = "fgclip2_text_model"
    c["vision_config"]["model_type"] = "fgclip2_vision_model"
    (d / "config.json").write_text(json.dumps(c))
    plain = root / "siglip2-plain"
    transformers.Siglip2Model(cfg).save_pretrained(plain)
    tok.save_pretrained(plain)
    transformers.Siglip2ImageProcessorPil(patch_size=16).save_pretrained(plain)
    return {"dir": d, "plain": plain}


def _fake_hf_cache(root: Path, repo_id: str, src: Path) -> Path:
    """``src`` laid out as a Hugging Face hub cache entry for ``repo_id`` (refs/main -> snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = root / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(src, entry / "snapshots" / commit)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    return root


# ---------------------------------------------------------------------------------------------
# hand computations
# ---------------------------------------------------------------------------------------------
def _manual_openai_preprocess(img: Image.Image, n: int) -> torch.Tensor:
    """OpenAI's CLIP preprocessing written out with PIL: short side to n (long side truncated),
    bicubic; centre crop with torchvision's rounding; RGB; /255; CLIP mean/std."""
    w, h = img.size
    size = (n, int(n * h / w)) if w <= h else (int(n * w / h), n)
    r = img.resize(size, Image.BICUBIC)
    top, left = int(round((r.size[1] - n) / 2.0)), int(round((r.size[0] - n) / 2.0))
    c = np.asarray(r.crop((left, top, left + n, top + n)).convert("RGB"), dtype=np.float32) / 255.0
    c = (c - np.array(OPENAI_CLIP_MEAN, np.float32)) / np.array(OPENAI_CLIP_STD, np.float32)
    return torch.from_numpy(c.transpose(2, 0, 1).copy())


def _hand_aesthetic(l14, path) -> float:
    model = transformers.CLIPVisionModelWithProjection.from_pretrained(l14["dir"]).eval()
    state = torch.load(l14["mlp"], weights_only=True)
    x = _manual_openai_preprocess(Image.open(path), model.config.image_size)[None]
    with torch.no_grad():
        e = model(pixel_values=x).image_embeds
        e = e / e.norm(dim=-1, keepdim=True)
        for i in (0, 2, 4, 6, 7):  # the Linear layers; dropouts are inactive, no activations
            e = e @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    return float(e.item())


def _hand_clip_100cos(b16, path, caption) -> float:
    model = transformers.CLIPModel.from_pretrained(b16).eval()
    proc = transformers.CLIPImageProcessorPil.from_pretrained(b16)
    tok = transformers.CLIPTokenizer.from_pretrained(b16)
    pix = proc(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]  # uint8 route
    t = tok([caption], return_tensors="pt", padding=True)
    ids, am = t["input_ids"][:, :77], t["attention_mask"][:, :77]  # torchmetrics cuts at 77 positions
    with torch.no_grad():
        i = model.visual_projection(model.vision_model(pixel_values=pix).pooler_output)
        tx = model.text_projection(model.text_model(input_ids=ids, attention_mask=am).pooler_output)
    i, tx = i / i.norm(dim=-1, keepdim=True), tx / tx.norm(dim=-1, keepdim=True)
    return float(100 * (i * tx).sum())


def _hand_fgclip2(fg, path, caption) -> float:
    """Through transformers' own SigLIP2 text forward: a Siglip2TextModel with 196 positions whose
    position table is FG-CLIP2's long-text table (ori for the first keep_len, res after), its
    last-position hidden state through longtext_head."""
    from evaluation.metrics.fgclip2 import siglip2_config_from_file

    cfg = siglip2_config_from_file(fg["dir"] / "config.json")
    model = fgclip2_model_class().from_pretrained(fg["dir"], config=cfg).eval()
    tok = transformers.AutoTokenizer.from_pretrained(fg["dir"])
    proc = transformers.Siglip2ImageProcessorPil.from_pretrained(fg["dir"])
    img = Image.open(path)
    inputs = proc(images=img.convert("RGB"), max_num_patches=max_num_patches(*img.size), return_tensors="pt")
    text = tok([caption.lower()], padding="max_length", max_length=196, truncation=True, return_tensors="pt")
    tc = transformers.Siglip2TextConfig(**{**cfg.text_config.to_dict(), "max_position_embeddings": 196})
    ref = transformers.Siglip2TextModel(tc).eval()
    sd = {k: v for k, v in model.text_model.state_dict().items() if "position_embedding_" not in k}
    emb = model.text_model.embeddings
    sd["embeddings.position_embedding.weight"] = torch.cat(
        [emb.position_embedding_ori.weight[:KEEP_LEN], emb.position_embedding_res.weight[KEEP_LEN:]])
    ref.load_state_dict(sd, strict=True)
    with torch.no_grad():
        i = model.vision_model(**inputs).pooler_output
        last = ref(input_ids=text["input_ids"], attention_mask=text["attention_mask"]).last_hidden_state
        t = model.longtext_head(last[:, -1, :])
    i, t = i / i.norm(p=2, dim=-1, keepdim=True), t / t.norm(p=2, dim=-1, keepdim=True)
    return max(float((i @ t.T).item()), 0.0) * 100


# ---------------------------------------------------------------------------------------------
# aesthetics
# ---------------------------------------------------------------------------------------------
def test_mlp_layout_matches_the_published_checkpoint():
    shapes = mlp_state_shapes()
    assert list(shapes) == [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]
    assert shapes["layers.0.weight"] == (1024, 768) and shapes["layers.7.weight"] == (1, 16)
    mlp = build_aesthetic_mlp()
    assert {k: tuple(v.shape) for k, v in mlp.state_dict().items()} == shapes
    kinds = [type(m).__name__ for m in mlp.layers]
    assert kinds == ["Linear", "Dropout", "Linear", "Dropout", "Linear", "Dropout", "Linear", "Linear"]
    assert [m.p for m in mlp.layers if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2, 0.1]


def test_openai_preprocess_matches_manual_and_open_clip(images):
    open_clip = pytest.importorskip("open_clip")
    oc = open_clip.image_transform(32, is_train=False, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
    for p in images[:4]:
        img = Image.open(p)
        ours = openai_clip_preprocess(img, 32)
        assert torch.allclose(ours, _manual_openai_preprocess(img, 32), atol=1e-6)
        assert torch.allclose(ours, oc(img), atol=1e-6)
    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 51, 4), dtype=np.uint8), "RGBA")
    assert torch.allclose(openai_clip_preprocess(rgba, 32), oc(rgba), atol=1e-6)


def test_aesthetics_from_local_paths_equals_hand_computation(l14, images):
    m = create_metric("aesthetics", clip_model=str(l14["dir"]), mlp_path=str(l14["mlp"]))
    assert m.availability() == (True, None)
    res = [m.score_path(p) for p in images]
    hand = [_hand_aesthetic(l14, p) for p in images]
    assert [r.value for r in res] == pytest.approx(hand, abs=1e-5)
    assert len({round(v, 6) for v in hand}) == len(hand)  # not a constant
    rgb = np.asarray(Image.open(images[0]).convert("RGB"))
    assert m.score_image(rgb).value == pytest.approx(res[0].value, abs=1e-6)
    s = m.score_set(images)
    assert s.value == pytest.approx(math.fsum(hand) / len(hand), abs=1e-5)
    assert s.extra["n_scored"] == len(images) and s.extra["clip_model"] == f"path:{l14['dir'].resolve()}"
    assert s.extra["reference_architecture"] is False and len(s.extra["mlp_sha256"]) == 16
    assert any("hidden_size=32" in x for x in s.extra["architecture_differs"])


def test_aesthetics_env_and_hf_cache_by_model_id(l14, images, tmp_path, monkeypatch):
    cache = _fake_hf_cache(tmp_path / "hub", "openai/clip-vit-large-patch14", l14["dir"])
    monkeypatch.setenv(MLP_ENV, str(l14["mlp"]))
    m = create_metric("aesthetics", cache_dir=str(cache), **_from_env("aesthetics"))  # default id, MLP from the env
    assert m.availability() == (True, None)
    r = m.score_path(images[1])
    assert r.value == pytest.approx(_hand_aesthetic(l14, images[1]), abs=1e-5)
    assert m.provenance()["clip_model"] == "openai/clip-vit-large-patch14@0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("UHR_LAION_CLIP", str(l14["dir"]))
    assert create_metric("aesthetics", **_from_env("aesthetics")).availability() == (True, None)


def test_aesthetics_unavailable_names_what_is_missing(l14, images, tmp_path):
    empty = str(tmp_path / "empty_hub")
    m = create_metric("aesthetics", cache_dir=empty)
    ok, why = m.availability()
    assert not ok and "OpenAI CLIP ViT-L/14" in why and "openai/clip-vit-large-patch14" in why
    assert AESTHETIC_WEIGHTS in why and MLP_ENV in why
    r = m.score_path(images[0])
    assert r.value is None and r.reason.startswith("not available: ")
    ok, why = create_metric("aesthetics", clip_model=str(tmp_path / "nope"), mlp_path=str(l14["mlp"])).availability()
    assert not ok and f"not found at path {tmp_path / 'nope'}" in why
    linear = tmp_path / "sa_0_4_vit_l_14_linear.pth"
    torch.save(torch.nn.Linear(768, 1).state_dict(), linear)
    ok, why = create_metric("aesthetics", clip_model=str(l14["dir"]), mlp_path=str(linear)).availability()
    assert not ok and "not the improved aesthetic predictor head" in why and "layers.0.weight" in why
    ok, why = create_metric("aesthetics", clip_model=str(l14["dir"]), mlp_path=str(tmp_path / "x.pth")).availability()
    assert not ok and "not found at path" in why


# ---------------------------------------------------------------------------------------------
# clipscore
# ---------------------------------------------------------------------------------------------
def _item(i, path, short=None, long=None):
    return BenchItem(i, Path(path).stem, str(path), short, long)


def test_clipscore_equals_hand_computation_and_torchmetrics(b16, images):
    from torchmetrics.functional.multimodal import clip_score

    m = create_metric("clipscore", clip_model=str(b16))
    assert m.availability() == (True, None)
    long_caption = "a very long caption " * 10  # > 77 tokens: cut as torchmetrics cuts it
    caps = [*SHORT[:4], long_caption]
    res = [m.score_item(_item(i, p, c)) for i, (p, c) in enumerate(zip(images, caps))]
    raws = [_hand_clip_100cos(b16, p, c) for p, c in zip(images, caps)]
    assert [r.extra["score_100cos"] for r in res] == pytest.approx(raws, abs=1e-4)
    assert [r.value for r in res] == pytest.approx([max(x, 0.0) for x in raws], abs=1e-4)
    assert [r.extra["caption_truncated"] for r in res] == [False] * 4 + [True]
    # the reference's call: torchmetrics' public clip_score on a batch of 4 float tensors (x 255)
    from torchvision.transforms import functional as TF

    batch = [TF.to_tensor(Image.open(p).convert("RGB")) * 255 for p in images[:4]]
    with torch.no_grad():
        tm = clip_score(batch, caps[:4], model_name_or_path=lambda: (torchmetrics_clip_adapter(m._model), m._processor))
    assert float(tm) == pytest.approx(max(sum(raws[:4]) / 4, 0.0), abs=1e-4)
    # set value: mean of the batch-of-4 values (4 + 1 images), not the per-image mean
    s = m.aggregate(res)
    want, batches = batch_mean_aggregate(raws)
    assert s.value == pytest.approx(want, abs=1e-4) and s.extra["n_batches"] == 2 and len(batches) == 2
    assert s.extra["per_image_mean"] == pytest.approx(sum(r.value for r in res) / 5, abs=1e-9)
    assert s.extra["reference_architecture"] is False
    assert m.score_set(images, captions=caps).value == pytest.approx(s.value, abs=1e-9)


def test_batch_mean_aggregate_is_the_reference_quirk():
    v, b = batch_mean_aggregate([10.0, 20.0, 30.0, 40.0, 50.0])
    assert b == [25.0, 50.0] and v == 37.5  # a plain mean would be 30
    v, b = batch_mean_aggregate([-5.0, 1.0, 0.0, 0.0, 8.0])
    assert b == [0.0, 8.0] and v == 4.0  # each batch value is clamped at 0, not each image


def test_clipscore_needs_caption_and_weights(b16, images, tmp_path):
    m = create_metric("clipscore", clip_model=str(b16))
    r = m.score_item(_item(0, images[0], ""))
    assert r.value is None and "short caption" in r.reason
    assert m.score_path(images[0]).value is None and "short caption" in m.score_path(images[0]).reason
    assert m.score_image(np.zeros((40, 40, 3), np.uint8), short_caption="a cat").value is not None
    ok, why = create_metric("clipscore", cache_dir=str(tmp_path / "hub")).availability()
    assert not ok and "CLIP ViT-B/16" in why and "openai/clip-vit-base-patch16" in why and CLIPSCORE_ENV in why
    broken = tmp_path / "no-tokenizer"
    shutil.copytree(b16, broken)
    (broken / "tokenizer.json").unlink()
    ok, why = create_metric("clipscore", clip_model=str(broken)).availability()
    assert not ok and "tokenizer.json" in why and str(broken) in why


# ---------------------------------------------------------------------------------------------
# fgclip2
# ---------------------------------------------------------------------------------------------
def test_fgclip2_long_text_mode_equals_hand_computation(fg, images):
    m = create_metric("fgclip2", model=str(fg["dir"]))
    assert m.availability() == (True, None)
    res = [m.score_item(_item(i, p, long=c)) for i, (p, c) in enumerate(zip(images, LONG))]
    assert [r.reason for r in res] == [None] * len(res)
    hand = [_hand_fgclip2(fg, p, c) for p, c in zip(images, LONG)]
    assert [r.value for r in res] == pytest.approx(hand, abs=1e-4)
    assert [r.extra["max_num_patches"] for r in res] == [128, 128, 128, 128, 256]
    for r in res:
        assert r.value == pytest.approx(max(r.extra["cosine"], 0) * 100, abs=1e-9)
    s = m.score_set(images, captions=LONG)
    assert s.value == pytest.approx(sum(r.value for r in res) / len(res), abs=1e-9)
    assert s.extra["model"] == f"path:{fg['dir'].resolve()}"
    # the short-text head is not what long mode uses
    tm = m._model.text_model
    assert not torch.equal(tm.head.weight, m._model.longtext_head.weight)


def test_max_num_patches_budget():
    assert max_num_patches(4096, 4096) == 1024 and max_num_patches(64, 64) == 128
    assert max_num_patches(16 * 12, 16 * 11) == 256 and max_num_patches(16 * 24, 16 * 24) == 576
    assert max_num_patches(16 * 28, 16 * 28) == 784 and max_num_patches(16 * 29, 16 * 28) == 1024


def test_fgclip2_hf_cache_env_and_refusals(fg, images, tmp_path, monkeypatch):
    cache = _fake_hf_cache(tmp_path / "hub", "qihoo360/fg-clip2-base", fg["dir"])
    m = create_metric("fgclip2", cache_dir=str(cache))
    assert m.availability() == (True, None)
    r = m.score_item(_item(0, images[0], long=LONG[0]))
    assert r.value == pytest.approx(_hand_fgclip2(fg, images[0], LONG[0]), abs=1e-4)
    assert m.provenance()["model"].startswith("qihoo360/fg-clip2-base@")
    monkeypatch.setenv(FGCLIP2_ENV, str(fg["dir"]))
    assert create_metric("fgclip2", **_from_env("fgclip2")).availability() == (True, None)
    # no long-text parameters: refused, never scored with a stand-in
    plain = create_metric("fgclip2", model=str(fg["plain"]))
    r = plain.score_item(_item(0, images[0], long=LONG[0]))
    assert r.value is None and r.reason.startswith("not available: ") and "long-text parameters" in r.reason
    assert plain.availability()[0] is False
    monkeypatch.delenv(FGCLIP2_ENV)
    ok, why = create_metric("fgclip2", cache_dir=str(tmp_path / "empty")).availability()
    assert not ok and "FG-CLIP2" in why and "qihoo360/fg-clip2-base" in why and FGCLIP2_ENV in why
    r = create_metric("fgclip2", model=str(fg["dir"])).score_item(_item(0, images[0], long=""))
    assert r.value is None and "long caption" in r.reason


def test_located_model_never_loads(tmp_path):
    loc, why = locate_model(str(tmp_path), "X", ("config.json",))
    assert loc is None and "missing config.json" in why
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors"}}))
    from evaluation.metrics.hf_models import weight_files

    loc, why = locate_model(str(tmp_path), "X", ("config.json", weight_files()))
    assert loc is None and "shard s1.safetensors" in why


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------
def test_runner_reports_the_three_metrics_with_tiny_weights(l14, b16, fg, images, tmp_path, monkeypatch):
    from evaluation.runner import BenchConfig, run_bench

    stems = [f"r{i}" for i in range(len(images))] + ["r_missing"]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for s, p in zip(stems, images):
        shutil.copy(p, model_dir / f"{s}.png")
    prompts = tmp_path / "benchmark.jsonl"
    with open(prompts, "w") as f:
        for i, s in enumerate(stems):
            f.write(json.dumps({"file_name": f"{s}.jpg", "short_caption": SHORT[i % len(SHORT)],
                                "long_caption": LONG[i % len(LONG)]}) + "\n")
    monkeypatch.setenv(CLIPSCORE_ENV, str(b16))   # located through the environment ...
    monkeypatch.setenv(FGCLIP2_ENV, str(fg["dir"]))
    cfg = BenchConfig(metrics=["aesthetics", "clipscore", "fgclip2"], data_root=str(tmp_path / "data"),
                      mlflow=False, thumbnails=False, save_views=False,
                      metric_options={**{m: _from_env(m) for m in ("clipscore", "fgclip2")},
                                      "aesthetics": {"clip_model": str(l14["dir"]), "mlp_path": str(l14["mlp"])}})
    r = run_bench(model_dir, prompts, config=cfg)  # ... and through the config

    aes = [_hand_aesthetic(l14, p) for p in images]
    clip = [_hand_clip_100cos(b16, p, SHORT[i]) for i, p in enumerate(images)]
    fgv = [_hand_fgclip2(fg, p, LONG[i]) for i, p in enumerate(images)]
    ok_rows = [row for row in r.rows if row["status"] == "ok"]
    assert len(ok_rows) == len(images) and r.rows[-1]["status"] == "missing"
    assert [row["values"]["aesthetics"] for row in ok_rows] == pytest.approx(aes, abs=1e-5)
    assert [row["values"]["clipscore"] for row in ok_rows] == pytest.approx([max(c, 0) for c in clip], abs=1e-4)
    assert [row["values"]["fgclip2"] for row in ok_rows] == pytest.approx(fgv, abs=1e-4)
    assert r.rows[-1]["reasons"]["clipscore"] == "missing image"
    assert r.value("aesthetics") == pytest.approx(sum(aes) / len(aes), abs=1e-5)
    assert r.value("clipscore") == pytest.approx(batch_mean_aggregate(clip)[0], abs=1e-4)
    assert r.metrics["clipscore"]["extra"]["n_batches"] == 2
    assert r.value("fgclip2") == pytest.approx(sum(fgv) / len(fgv), abs=1e-4)
    for name in ("aesthetics", "clipscore", "fgclip2"):
        assert r.metrics[name]["reason"] is None and r.metrics[name]["extra"]["n_missing"] == 1
    assert r.metrics["fgclip2"]["extra"]["model"] == f"path:{fg['dir'].resolve()}"
    saved = json.loads((Path(r.out_dir) / "scores.json").read_text())
    assert saved["metrics"]["clipscore"]["value"] == pytest.approx(r.value("clipscore"))
