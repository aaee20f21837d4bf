"""One VLM endpoint for every VLM use, and no silent pass.

The ``vlm`` resource (``UHR_VLM_ENDPOINT``) pointing at a dead loopback port (a socket bound, then
closed): the corpus judge rejects an SR image as ``judge_failed`` and the bench's MSFI judge
reports failures under the model's name, never heuristic scores. With the variable set, the
resources built from the environment carry that endpoint for the corpus judge, the bench judge
and ArtiMuse alike, and the assets that call a VLM take the ``vlm`` resource."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from curation.config import load_config
from curation.layout import DataLayout

pytestmark = pytest.mark.timeout(240)


def _dead_endpoint() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/v1"


def _fast(cfg, use: str):
    """Retries and backoff low through the config (``judges.<use>``), as a lab would for a test."""
    cfg.data["judges"][use].update(retries=1, backoff_s=0.01, backoff_max_s=0.02, timeout_s=2, cache_dir=None)
    return cfg


@pytest.fixture
def dead(monkeypatch):
    url = _dead_endpoint()
    monkeypatch.setenv("UHR_VLM_ENDPOINT", url)
    monkeypatch.delenv("UHR_VLM_API_KEY_ENV", raising=False)
    return url


# -- (a) corpus judge -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_shard(tmp_path_factory):
    """A small test-profile shard up to candidate_pool, with at least one SR (2x / 4x) candidate."""
    from conftest import shard_to_candidates

    _, layout, shard = shard_to_candidates(tmp_path_factory.mktemp("vlm_corpus"))
    return layout, shard


def _corpus(one_shard, tmp_path, vlm):
    import shutil

    from curation.corpus import DEFERRED, run_corpus

    layout0, shard = one_shard
    layout = DataLayout.at(tmp_path / "data")
    shutil.copytree(layout0.root / "manifests", layout.root / "manifests")
    cfg = _fast(load_config("test"), "corpus")
    cfg.data["corpus"]["max_upscales_per_shard"] = 1  # one SR image is enough
    with vlm.client(cfg, "corpus", base_dir=layout.root) as judge:
        rows = run_corpus(layout, shard, cfg, "lanczos", judge).rows
    return [r for r in rows if r["tier"] in ("2x", "4x") and r["reject_reason"] != DEFERRED], judge


def test_corpus_judge_on_a_dead_endpoint_rejects_as_judge_failed(one_shard, tmp_path, dead):
    from curation.corpus import JUDGE_FAILED
    from orchestration.resources import resources_from_env

    vlm = resources_from_env()["vlm"]
    assert vlm.endpoint == dead
    sr, judge = _corpus(one_shard, tmp_path, vlm)
    assert judge.backend == "vllm" and judge.endpoint == dead.removesuffix("/v1")
    assert sr, "no SR image was processed"
    for r in sr:
        assert not r["passed"] and r["reject_reason"] == JUDGE_FAILED, (r["reject_reason"], r.get("reject_detail"))
        assert r["judge_backend"] == "vllm" and r["region_passed"] is not True
        # the row says why: the endpoint's error, not only that judgements failed (issue 15)
        detail = r["reject_detail"] or ""
        assert "judgements failed: " in detail and "gave up after" in detail, detail
        assert "refused" in detail.lower() or "connect" in detail.lower(), detail


def test_corpus_judge_without_any_endpoint_is_the_labelled_heuristic(one_shard, tmp_path, monkeypatch):
    from orchestration.resources import resources_from_env

    monkeypatch.delenv("UHR_VLM_ENDPOINT", raising=False)
    vlm = resources_from_env()["vlm"]
    assert vlm.endpoint is None
    sr, judge = _corpus(one_shard, tmp_path, vlm)
    assert judge.backend == "heuristic" and sr
    assert all(r["judge_backend"] == "heuristic" and r["reject_reason"] != "judge_failed" for r in sr)


# -- (b) bench MSFI judge ---------------------------------------------------------------------------

def test_bench_msfi_judge_on_a_dead_endpoint_fails_never_heuristic(tmp_path, dead):
    from PIL import Image

    from curation.vlm import use_config
    from evaluation.metrics import create_metric
    from evaluation.runner import make_judge
    from orchestration.bench_resources import bench_settings_from_env
    from orchestration.resources import resources_from_env

    settings = bench_settings_from_env(str(tmp_path / "data"))
    vlm = resources_from_env()["vlm"]
    for judge in (settings.judge(vlm), settings.judge()):  # the asset's resource; the CLI (same env variable)
        assert judge.backend == "vllm" and judge.endpoint == dead.removesuffix("/v1")
        assert judge.model == load_config("paper").get("judges.bench.model")
        judge.close()
    # the same path (judges.bench + the resource's endpoint -> make_judge), retries low via the config
    cfg = _fast(load_config("paper"), "bench")
    judge = make_judge("auto", use_config(cfg, "bench", endpoint=vlm.endpoint, api_key_env=vlm.api_key_env))
    assert judge.backend == "vllm" and judge.retries == 1
    rng = np.random.default_rng(0)
    img = tmp_path / "gen.png"
    Image.fromarray(rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)).save(img)
    res = create_metric("msfi_strict", judge=judge).score_path(img)
    judge.close()
    assert res.metric == "msfi_strict" and res.value is None  # the model's name, no number
    assert res.extra["judge_backend"] == "vllm" and res.extra["global_status"] == "judge_failed"
    assert res.extra["judge_failures"] and all("ConnectError" in f for f in res.extra["judge_failures"])
    assert res.extra["patches"] and all(p["status"] == "judge_failed" for p in res.extra["patches"])
    # an explicit heuristic judge next to a configured endpoint is refused, not silently used
    with pytest.raises(ValueError, match="heuristic backend is used only"):
        settings.model_copy(update={"judge_backend": "heuristic"}).judge(vlm)


# -- (c) one endpoint for every use -----------------------------------------------------------------

def test_env_endpoint_reaches_corpus_bench_and_artimuse(tmp_path, monkeypatch):
    from orchestration.bench_resources import bench_settings_from_env
    from orchestration.definitions import build_definitions
    from orchestration.resources import platform_resources_from_env, resources_from_env

    url = "http://vlm.invalid:8000/v1"
    env = {"UHR_VLM_ENDPOINT": url, "UHR_VLM_API_KEY_ENV": "UHR_TEST_VLM_KEY", "UHR_DATA_ROOT": str(tmp_path)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("UHR_TEST_VLM_KEY", "not-a-real-key")
    res = resources_from_env()
    vlm = res["vlm"]
    assert (vlm.endpoint, vlm.api_key_env) == (url, "UHR_TEST_VLM_KEY")
    assert platform_resources_from_env(env)["vlm"].endpoint == url
    cfg = res["settings"].config()
    for use in ("corpus", "bench", "artimuse"):
        section = vlm.client_config(cfg, use)
        assert section["endpoint"] == url and section["api_key_env"] == "UHR_TEST_VLM_KEY", use
        assert section["model"] == cfg.get(f"judges.{use}.model"), use  # the model from the profile
    # corpus judge
    with vlm.client(cfg, "corpus", base_dir=tmp_path) as c:
        assert c.backend == "vllm" and c.endpoint == "http://vlm.invalid:8000" and c.model == cfg.get("judges.corpus.model")
    # bench judge (the asset passes the resource; the CLI builds the same one from the environment)
    bench = bench_settings_from_env(str(tmp_path))
    for j in (bench.judge(vlm), bench.judge()):
        assert j.backend == "vllm" and j.endpoint == "http://vlm.invalid:8000" and j.api_key_env == "UHR_TEST_VLM_KEY"
        j.close()
    # ArtiMuse: the same endpoint; its model comes from judges.artimuse (null in the paper profile)
    _, unavailable = res["aesthetics"].load(cfg, vlm)
    assert "judges.artimuse.model" in unavailable["artimuse"] and url in unavailable["artimuse"]
    cfg.data["judges"]["artimuse"]["model"] = "ArtiMuse"
    from curation.aesthetics import create_scorer
    from curation.vlm import use_config

    scorer = create_scorer("artimuse", use_config(cfg, "artimuse", endpoint=vlm.endpoint, api_key_env=vlm.api_key_env))
    assert scorer.availability() == (True, "") and scorer.endpoint == url
    client = scorer._get_client()
    assert client.backend == "vllm" and client.endpoint == "http://vlm.invalid:8000" and client.model == "ArtiMuse"
    client.close()
    # the assets that call a VLM take the one `vlm` resource
    defs = build_definitions(res)
    for key in ("corpus_100mp", "image_scores", "purification_thresholds", "bench_scores"):
        node = next(a for a in defs.assets if key in {k.to_user_string() for k in a.keys})
        assert "vlm" in node.required_resource_keys, key


def test_removed_variable_names_are_gone():
    """One name per setting: the old judge / ArtiMuse variables are read and documented nowhere."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    old = ("UHR_JUDGE_ENDPOINT", "UHR_JUDGE_MODEL", "UHR_JUDGE_BACKEND", "UHR_JUDGE_API_KEY_ENV",
           "UHR_ARTIMUSE_ENDPOINT", "UHR_VLM_MODEL")
    files = [p for d in ("curation", "evaluation", "orchestration", "assets", "cli", "infra") for p in (root / d).rglob("*")
             if p.suffix in (".py", ".yaml", ".yml", ".md")]
    files += [root / "docker-compose.yml", root / "README.md", root / "configs" / "paper.yaml"]
    hits = [f"{p.relative_to(root)}: {name}" for p in files if p.exists() for name in old if name in p.read_text()]
    assert not hits, hits


def test_corpus_never_reuses_a_verdict_across_judges_and_retries_failed_ones(one_shard, tmp_path):
    """Same data root: a heuristic verdict is not reused once an endpoint is configured, and a
    ``judge_failed`` row is judged again on the next run (counted)."""
    import shutil

    from curation.corpus import DEFERRED, JUDGE_FAILED, run_corpus
    from orchestration.resources import VLMEndpoint

    layout0, shard = one_shard
    layout = DataLayout.at(tmp_path / "data")
    shutil.copytree(layout0.root / "manifests", layout.root / "manifests")
    cfg = _fast(load_config("test"), "corpus")
    cfg.data["corpus"]["max_upscales_per_shard"] = 1

    def run(vlm):
        with vlm.client(cfg, "corpus", base_dir=layout.root) as judge:
            res = run_corpus(layout, shard, cfg, "lanczos", judge)
        sr = [r for r in res.rows if r["tier"] in ("2x", "4x") and r["reject_reason"] != DEFERRED]
        return sr, res.summary

    sr, s = run(VLMEndpoint(endpoint=None))
    assert sr and all(r["judge_backend"] == "heuristic" for r in sr) and s["computed"] >= len(sr)
    dead = VLMEndpoint(endpoint=_dead_endpoint())
    sr, s = run(dead)
    assert all(r["reject_reason"] == JUDGE_FAILED and r["judge_backend"] == "vllm" for r in sr), sr
    assert s["computed"] >= len(sr) and not s.get("manifest_reused")
    sr, s = run(dead)  # failed calls are retried, not reused
    assert all(r["reject_reason"] == JUDGE_FAILED for r in sr) and s["computed"] >= len(sr)
    sr, s = run(VLMEndpoint(endpoint=None))  # back to the heuristic: its cached verdicts are valid again
    assert all(r["judge_backend"] == "heuristic" for r in sr) and s["reused"] >= len(sr) and s["computed"] == 0
