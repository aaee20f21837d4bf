"""Aesthetic scorers and the registry.

The LAION adapter is driven by a tiny random-weight CLIP vision model built from a config,
saved with ``save_pretrained`` and loaded back through the same config-dict path a user
takes (``create_scorer("laion", {"clip_model": <dir>, "head_path": <file>})``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from curation.aesthetics import (  # noqa: E402
    SCORERS,
    AestheticScorer,
    ArtiMuseScorer,
    LaionAestheticScorer,
    ScorerUnavailableError,
    create_scorer,
)
from curation.aesthetics.laion import HEAD_ENV  # noqa: E402
from curation.registry import Registry  # noqa: E402


def _tiny_vision_config(**kw):
    return transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=768,
        **kw,
    )


def _tiny_processor():
    return transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny CLIP vision model + processor (one dir) and a saved random linear head."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("laion")
    model_dir = root / "clip"
    model = transformers.CLIPVisionModelWithProjection(_tiny_vision_config()).eval()
    processor = _tiny_processor()
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    head = torch.nn.Linear(768, 1)
    with torch.no_grad():
        head.weight.normal_(0.0, 1.0)
        head.bias.fill_(0.25)
    head_path = root / "sa_0_4_vit_l_14_linear.pth"
    torch.save(head.state_dict(), head_path)
    return {"dir": model_dir, "head_path": head_path, "model": model, "processor": processor, "head": head}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    shapes = [(40, 50), (64, 48), (32, 32), (90, 30), (33, 71)]
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]


@pytest.fixture()
def no_head_env(monkeypatch):
    monkeypatch.delenv(HEAD_ENV, raising=False)


def _cfg(tiny, **kw):
    cfg = {"clip_model": str(tiny["dir"]), "head_path": str(tiny["head_path"]), "batch_size": 2}
    cfg.update(kw)
    return cfg


def _by_hand(tiny, images):
    """processor -> image_embeds -> L2-normalise -> head, on the in-memory originals."""
    with torch.no_grad():
        pix = tiny["processor"](images=images, return_tensors="pt")["pixel_values"]
        emb = tiny["model"](pixel_values=pix).image_embeds.double()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        w = tiny["head"].weight.double()
        b = tiny["head"].bias.double()
        return (emb @ w.T + b).squeeze(-1).numpy(), emb


# -- LAION adapter through the user's loading path ---------------------------------------------

def test_laion_scores_shape_dtype_and_hand_computation(tiny, images):
    scorer = create_scorer("laion", _cfg(tiny))
    assert isinstance(scorer, LaionAestheticScorer)
    assert scorer.availability() == (True, "")
    s = scorer.score(images)
    assert s.shape == (len(images),)
    assert s.dtype == np.float64
    assert np.all(np.isfinite(s))
    expected, _ = _by_hand(tiny, images)
    np.testing.assert_allclose(s, expected, rtol=1e-5, atol=1e-5)
    assert scorer.device == "cpu" or scorer.device.startswith("cuda")


def test_laion_deterministic(tiny, images):
    a = create_scorer("laion", _cfg(tiny)).score(images)
    scorer = create_scorer("laion", _cfg(tiny))
    b = scorer.score(images)
    c = scorer.score(images)
    np.testing.assert_array_equal(b, c)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_laion_batch_size_independent(tiny, images):
    ref = create_scorer("laion", _cfg(tiny, batch_size=1)).score(images)
    for bs in (2, 3, 16):
        np.testing.assert_allclose(create_scorer("laion", _cfg(tiny, batch_size=bs)).score(images), ref, atol=1e-5)
    # one image alone scores as it does within a batch
    one = create_scorer("laion", _cfg(tiny)).score(images[3:4])
    np.testing.assert_allclose(one, ref[3:4], atol=1e-5)


def test_laion_embedding_is_l2_normalised(tiny, images):
    scorer = create_scorer("laion", _cfg(tiny))
    ref = scorer.score(images)
    emb = scorer.embed(images)
    assert emb.shape == (len(images), 768)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    # scaling the embedding (the projection) by 7 leaves the scores unchanged ...
    scaled = copy.deepcopy(tiny["model"])
    with torch.no_grad():
        scaled.visual_projection.weight.mul_(7.0)
    s7 = LaionAestheticScorer.from_modules(scaled, tiny["processor"], tiny["head"], device="cpu").score(images)
    np.testing.assert_allclose(s7, ref, atol=1e-5)

    # ... while an un-normalised head would see a different input (the test has teeth)
    with torch.no_grad():
        pix = tiny["processor"](images=images, return_tensors="pt")["pixel_values"]
        raw = tiny["model"](pixel_values=pix).image_embeds.double()
        no_norm = (raw @ tiny["head"].weight.double().T + tiny["head"].bias.double()).squeeze(-1).numpy()
    assert not np.allclose(raw.norm(dim=-1).numpy(), 1.0, atol=1e-3)
    assert not np.allclose(no_norm, ref, atol=1e-3)


def test_laion_from_modules_matches_path_loading(tiny, images):
    by_path = create_scorer("laion", _cfg(tiny))
    in_mem = LaionAestheticScorer.from_modules(
        tiny["model"], tiny["processor"], tiny["head"].state_dict(), device="cpu"
    )
    np.testing.assert_allclose(in_mem.score(images), by_path.score(images), atol=1e-5)
    # the head hash does not depend on how the head arrived
    assert by_path.version.split("/head=")[1] == in_mem.version.split("/head=")[1]
    assert by_path.version.startswith("laion-linear/clip=path:")


def test_laion_version_records_model_and_head(tiny, tmp_path):
    v1 = create_scorer("laion", _cfg(tiny))
    v1.availability()
    head2 = torch.nn.Linear(768, 1)
    p2 = tmp_path / "other_head.pth"
    torch.save(head2.state_dict(), p2)
    v2 = create_scorer("laion", _cfg(tiny, head_path=str(p2)))
    v2.availability()
    assert str(tiny["dir"].resolve()) in v1.version
    assert "head=sha256:" in v1.version
    assert v1.version != v2.version


def test_laion_head_from_env(tiny, images, monkeypatch):
    from orchestration.resources import aesthetic_models_from_env

    monkeypatch.setenv(HEAD_ENV, str(tiny["head_path"]))
    monkeypatch.setenv("UHR_LAION_CLIP", str(tiny["dir"]))
    models = aesthetic_models_from_env()  # the resource reads the environment, the library does not
    assert (models.clip_model, models.head_path) == (str(tiny["dir"]), str(tiny["head_path"]))
    assert create_scorer("laion", {"clip_model": str(tiny["dir"]), "head_path": None}).availability()[0] is False
    scorer = create_scorer("laion", {"clip_model": models.clip_model, "head_path": models.head_path})
    assert scorer.availability() == (True, "")
    assert scorer.score(images[:2]).shape == (2,)


def test_laion_full_clip_checkpoint_loads_vision_tower(tmp_path, images):
    """The real openai/clip-vit-large-patch14 is a full CLIPModel checkpoint: the vision
    tower and projection must load from it (not be silently re-initialised)."""
    torch.manual_seed(1)
    text_cfg = transformers.CLIPTextConfig(
        vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=16, projection_dim=768,
    )
    cfg = transformers.CLIPConfig(
        text_config=text_cfg.to_dict(), vision_config=_tiny_vision_config().to_dict(), projection_dim=768
    )
    clip = transformers.CLIPModel(cfg).eval()
    d = tmp_path / "full_clip"
    clip.save_pretrained(d)
    _tiny_processor().save_pretrained(d)
    head = torch.nn.Linear(768, 1)
    hp = tmp_path / "head.pth"
    torch.save(head.state_dict(), hp)

    scorer = create_scorer("laion", {"clip_model": str(d), "head_path": str(hp)})
    emb = scorer.embed(images)
    with torch.no_grad():
        pix = _tiny_processor()(images=images, return_tensors="pt")["pixel_values"]
        pooled = clip.vision_model(pixel_values=pix).pooler_output
        ref = torch.nn.functional.normalize(clip.visual_projection(pooled), dim=-1).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_laion_model_id_from_hf_cache(tiny, images, tmp_path, no_head_env):
    """A hub id resolves from a local HF cache only, and the version records the snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-clip"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in tiny["dir"].iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    scorer = create_scorer(
        "laion",
        {"clip_model": "acme/tiny-clip", "head_path": str(tiny["head_path"]), "cache_dir": str(tmp_path / "hub")},
    )
    assert scorer.availability() == (True, "")
    assert f"clip=acme/tiny-clip@{commit}" in scorer.version
    expected, _ = _by_hand(tiny, images)
    np.testing.assert_allclose(scorer.score(images), expected, atol=1e-5)


# -- unavailability: say what is missing, never a score ------------------------------------------

def test_missing_head_file(tiny):
    missing = tiny["dir"].parent / "nowhere" / "sa_0_4_vit_l_14_linear.pth"
    scorer = create_scorer("laion", _cfg(tiny, head_path=str(missing)))  # must not raise
    ok, reason = scorer.availability()
    assert not ok
    assert "head" in reason and str(missing) in reason
    with pytest.raises(ScorerUnavailableError, match="head"):
        scorer.score([np.zeros((8, 8, 3), np.uint8)])
    assert "head=unavailable" in scorer.version


def test_head_not_configured(tiny, no_head_env):
    ok, reason = create_scorer("laion", _cfg(tiny, head_path=None)).availability()
    assert not ok
    assert "head" in reason and HEAD_ENV in reason


def test_wrong_head_rejected(tiny, tmp_path):
    p = tmp_path / "mlp.pth"
    torch.save(torch.nn.Linear(512, 1).state_dict(), p)
    ok, reason = create_scorer("laion", _cfg(tiny, head_path=str(p))).availability()
    assert not ok and "(1, 768)" in reason
    p2 = tmp_path / "improved.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(768, 16), torch.nn.Linear(16, 1)).state_dict(), p2)
    ok, reason = create_scorer("laion", _cfg(tiny, head_path=str(p2))).availability()
    assert not ok and "not a LAION linear aesthetic head" in reason


def test_missing_model_dir(tiny, tmp_path):
    missing = tmp_path / "no_clip_here"
    scorer = create_scorer("laion", _cfg(tiny, clip_model=str(missing)))
    ok, reason = scorer.availability()
    assert not ok
    assert "CLIP ViT-L/14 weights not found" in reason and str(missing) in reason
    with pytest.raises(ScorerUnavailableError, match="CLIP"):
        scorer.score([np.zeros((8, 8, 3), np.uint8)])


def test_model_dir_without_weights(tiny, tmp_path):
    d = tmp_path / "config_only"
    d.mkdir()
    (d / "config.json").write_text((tiny["dir"] / "config.json").read_text())
    ok, reason = create_scorer("laion", _cfg(tiny, clip_model=str(d))).availability()
    assert not ok and "model.safetensors" in reason and "preprocessor_config.json" in reason


def test_model_id_not_in_cache(tiny, tmp_path):
    scorer = create_scorer(
        "laion", _cfg(tiny, clip_model="openai/clip-vit-large-patch14", cache_dir=str(tmp_path / "empty"))
    )
    ok, reason = scorer.availability()
    assert not ok
    assert "HF cache" in reason and "openai/clip-vit-large-patch14" in reason


def test_both_missing_reports_both(tmp_path, no_head_env):
    ok, reason = create_scorer("laion", {"clip_model": str(tmp_path / "x"), "head_path": None}).availability()
    assert not ok and "CLIP" in reason and "head" in reason


def test_paper_config_section_constructs(paper_cfg, no_head_env):
    """The paper profile's sections build scorers without loading anything or failing, and say why
    neither can run from the profile alone: LAION's head_path is null (no UHR_LAION_HEAD here) and
    its CLIP must be in the HF cache; ArtiMuse has no endpoint (the vlm resource sets it)."""
    from huggingface_hub import try_to_load_from_cache

    assert paper_cfg.get("purification.aesthetics.scorers") == ["laion", "artimuse"]
    laion = paper_cfg.get("purification.aesthetics.laion")
    assert laion["head_path"] is None
    ok, reason = create_scorer("laion", laion).availability()
    assert ok is False and "LAION aesthetic head not configured" in reason, reason
    if not isinstance(try_to_load_from_cache(laion["clip_model"], "config.json"), str):  # not cached here
        assert "CLIP ViT-L/14 weights not found in HF cache" in reason and laion["clip_model"] in reason, reason
    ok, reason = create_scorer("artimuse", paper_cfg.get("purification.aesthetics.artimuse")).availability()
    assert ok is False and "needs a VLM endpoint" in reason and "endpoint=None" in reason, reason


def test_input_validation(tiny):
    scorer = create_scorer("laion", _cfg(tiny))
    assert scorer.score([]).shape == (0,)
    with pytest.raises(ValueError, match="RGB uint8"):
        scorer.score([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="RGB uint8"):
        scorer.score([np.zeros((8, 8, 3), np.float32)])


# -- ArtiMuse through the VLM client -------------------------------------------------------

def test_artimuse_unavailable_without_endpoint():
    s = create_scorer("artimuse", {"endpoint": None})
    assert isinstance(s, ArtiMuseScorer)
    ok, reason = s.availability()
    assert not ok and "endpoint=None" in reason
    with pytest.raises(ScorerUnavailableError):
        s.score([np.zeros((8, 8, 3), np.uint8)])


def test_artimuse_needs_a_model_name():
    s = create_scorer("artimuse", {"endpoint": "http://127.0.0.1:8000/v1"})
    ok, reason = s.availability()
    assert not ok and "model" in reason


class _FakeClient:
    backend, model = "vllm", "ArtiMuse"

    def __init__(self, answers):
        self.answers, self.requests = list(answers), []

    def run(self, reqs):
        from types import SimpleNamespace

        self.requests += reqs
        out = []
        for _ in reqs:
            a = self.answers.pop(0)
            out.append(SimpleNamespace(status="ok", answer={"overall": a}) if a is not None
                       else SimpleNamespace(status="judge_failed", answer=None))
        return out


def test_artimuse_scores_overall_and_failures_are_nan():
    client = _FakeClient([61, None, 44.5])
    s = ArtiMuseScorer(client=client)
    assert s.availability() == (True, "")
    imgs = [np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 30)]
    out = s.score(imgs)
    assert out[0] == 61 and np.isnan(out[1]) and out[2] == 44.5
    assert [r.task for r in client.requests] == ["artimuse_aesthetics"] * 3
    assert len({r.image_id for r in client.requests}) == 3  # cache key per distinct image


def test_artimuse_refuses_the_heuristic_judge():
    from curation.vlm import create_vlm_client

    ok, reason = ArtiMuseScorer(client=create_vlm_client({})).availability()
    assert not ok and "heuristic" in reason


# -- registry ---------------------------------------------------------------------------------

def test_scorer_registry_names_and_errors():
    assert SCORERS.names() == ["artimuse", "laion"]
    assert SCORERS.get("laion") is LaionAestheticScorer
    with pytest.raises(KeyError) as e:
        create_scorer("nima", {})
    assert "nima" in str(e.value) and "artimuse" in str(e.value) and "laion" in str(e.value)
    with pytest.raises(ValueError, match="clip_modle"):
        create_scorer("laion", {"clip_modle": "x"})
    s = create_scorer("laion", None)
    assert isinstance(s, AestheticScorer) and s.name == "laion"


def test_generic_registry():
    reg: Registry = Registry("widget")
    assert reg.names() == [] and len(reg) == 0

    @reg.register("b")
    class B:
        def __init__(self, x=1):
            self.x = x

    def make_a(x):
        return ("a", x)

    assert reg.register("a", make_a) is make_a
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and "a" in reg
    assert reg.create("b", x=5).x == 5
    assert reg.create("a", 3) == ("a", 3)
    reg.register("b", B)  # same object again: no-op
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", lambda: None)
    with pytest.raises(KeyError, match=r"unknown widget 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(KeyError, match=r"known: \(none registered\)"):
        Registry("gizmo").create("x")
    with pytest.raises(TypeError):
        reg.register("z", 42)


def test_corrupt_weights_fail_at_load_and_flip_availability(tiny, tmp_path):
    d = tmp_path / "corrupt"
    d.mkdir()
    for f in tiny["dir"].iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    scorer = create_scorer("laion", _cfg(tiny, clip_model=str(d)))
    assert scorer.availability() == (True, "")  # cheap file check passes
    with pytest.raises(ScorerUnavailableError, match="could not be loaded"):
        scorer.load()
    ok, reason = scorer.availability()
    assert not ok and "could not be loaded" in reason
    with pytest.raises(ScorerUnavailableError):
        scorer.score([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ScorerUnavailableError):
        create_scorer("artimuse", {}).load()
