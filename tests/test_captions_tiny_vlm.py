"""The ``captions`` stage against a real (tiny, random-weight) Qwen3-VL behind the local test server.

``tests/tiny_vlm.py`` builds a Qwen3-VL from a config with random weights and an in-memory
tokenizer; the OpenAI-compatible test server (``tests/vlm_server.py``) answers every request with
that model's real ``generate`` on the request's text and images. Its answers are garbage, so the
stage must survive them: nothing raises, every corpus image gets a row, every row whose model
step failed is rejected with a captions reason and a detail, and no model field is written by the
heuristic backend while an endpoint is configured (garbage fails loudly, it never passes as a
heuristic answer).
"""

from __future__ import annotations

import json
import shutil

import pytest

from curation import reasons
from curation.config import load_config
from curation.layout import DataLayout

pytestmark = pytest.mark.timeout(900)

SERVED = "tiny-qwen3-vl"
USES = ("captions", "captions_llm", "corpus")
#: provenance fields written by the VLM / LLM clients (tags, boxes, masks come from the
#: offline tagger / grounder / segmenter backends the test profile configures)
MODEL_FIELDS = ("tangible_tags", "aesthetics_analysis", "long_caption", "short_caption")


def _cfg(endpoint: str):
    cfg = load_config("test")
    for use in USES:
        cfg.data["judges"][use].update(model=SERVED, endpoint=endpoint, retries=0, schema_retries=0, backoff_s=0.01,
                                       backoff_max_s=0.02, timeout_s=60, max_concurrency=1)
    c = cfg.data["captions"]
    c["max_instances"] = 2
    c["caption_view_long_edge"] = 256
    c.setdefault("highlight", {})["long_edge"] = 256
    c.setdefault("crop", {})["max_long_edge"] = 256
    return cfg


@pytest.fixture(scope="module")
def corpus_shard(tmp_path_factory):
    """One test-profile shard through corpus_100mp (lanczos, heuristic region judge)."""
    from conftest import shard_to_candidates
    from curation.corpus import run_corpus

    cfg, layout, shard = shard_to_candidates(tmp_path_factory.mktemp("tinyvlm"), 24, 5)
    res = run_corpus(layout, shard, cfg, "lanczos")
    passed = sum(r["passed"] for r in res.rows)
    assert passed >= 1
    return layout, shard, passed


@pytest.fixture(scope="module")
def tiny():
    from tiny_vlm import TinyQwen3VL

    return TinyQwen3VL(seed=0, max_new_tokens=24)


def _fresh(corpus_shard, tmp_path) -> DataLayout:
    """A data root with the shard's manifests and corpus files (no captions, no answer cache)."""
    src = corpus_shard[0]
    layout = DataLayout.at(tmp_path / "data")
    for d in ("manifests", "corpus"):
        shutil.copytree(src.root / d, layout.root / d, symlinks=True)
    shutil.rmtree(layout.root / "manifests" / "captions", ignore_errors=True)
    return layout


def _failed_model_steps(rec: dict) -> list[str]:
    out = [f for f in MODEL_FIELDS if rec["provenance"].get(f, {}).get("status") == "failed"]
    for inst in rec.get("instances", []):
        out += [f"{inst['instance_id']}:{k}" for k, p in inst.get("provenance", {}).items()
                if k in ("description", "artifact") and p.get("status") == "failed"]
    return out


def _run_and_check(layout, shard, n_passed, tiny, answer):
    """Run the captions stage against the test server answering with ``answer``; check the rows."""
    from curation.captioning.stage import run_captions
    from vlm_server import VLMTestServer

    calls0 = tiny.calls
    with VLMTestServer(model=SERVED, lifetime_s=800) as server:
        server.default = answer
        res = run_captions(layout, shard, _cfg(server.base_url))
        assert server.n_requests > 0
        rejected = [r for r in server.requests if r.get("rejected")]
        assert not rejected, rejected[:1]
        requests = list(server.requests)
    assert tiny.calls - calls0 > 0, "the tiny Qwen3-VL was never called"
    assert tiny.outputs and all(isinstance(o, str) for o in tiny.outputs)

    rows = res.rows
    assert len(rows) == n_passed, (len(rows), n_passed)
    s = res.summary
    assert s["clients"]["llm"]["calls"] + s["clients"]["vlm"]["calls"] > 0
    n_failed_rows = 0
    for r in rows:
        rec = json.loads(r["record"]) if r.get("record") else None
        failed = _failed_model_steps(rec) if rec else ["no record"]
        if failed:
            n_failed_rows += 1
            assert not r["passed"], (r["image_id"], failed)
            assert r["reject_reason"] in (reasons.CAPTION_FAILED, reasons.JUDGE_FAILED, reasons.INSTANCE_ARTIFACTS), r
            assert r["reject_detail"], r
        if not r["passed"]:
            assert r["reject_reason"] in reasons.CAPTION_REASONS and r["reject_detail"], r
        if rec:
            # an endpoint is configured: a model field is the served model's (ok or failed), never heuristic
            for field, prov in rec["provenance"].items():
                if field in MODEL_FIELDS and prov.get("status") != "skipped":
                    assert prov["backend"] != "heuristic" and prov["model"] == SERVED, (field, prov)
            for inst in rec.get("instances", []):
                for k in ("description", "artifact"):
                    if k in inst.get("provenance", {}):
                        prov = inst["provenance"][k]
                        assert prov["backend"] != "heuristic" and prov["model"] == SERVED, (k, prov)
            assert "heuristic:" not in (rec.get("long_caption") or "")
            backends = json.loads(r["backends"])
            assert not any("heuristic" in backends.get(f, "") for f in MODEL_FIELDS), backends
    # a random-weight model's 24 tokens never parse as a valid answer
    assert n_failed_rows == len(rows) and not any(r["passed"] for r in rows)
    return res, requests


def test_captions_survive_a_real_random_weight_qwen3_vl(corpus_shard, tiny, tmp_path):
    """Every request answered by the tiny model: tag pruning fails, so the captions fail."""
    layout = _fresh(corpus_shard, tmp_path)
    res, _ = _run_and_check(layout, corpus_shard[1], corpus_shard[2], tiny,
                            lambda body: tiny.generate(body["messages"]))
    assert all(r["reject_reason"] == reasons.CAPTION_FAILED for r in res.rows)


def test_instances_judged_by_the_random_weight_model_fail_the_image(corpus_shard, tiny, tmp_path):
    """Tag pruning answered validly (scripted), everything else by the tiny model: the instance
    descriptions and artifact verdicts (two images per request) are garbage, so images with
    instances are rejected as ``judge_failed`` and the others as ``caption_failed``."""
    from vlm_server import request_text

    def answer(body):
        text = request_text(body)
        if '"tangible_tags"' in text and '"long_caption"' not in text:
            tags = next(json.loads(line) for line in text.splitlines() if line.strip().startswith("["))
            return "<json>\n" + json.dumps({"tangible_tags": tags[:4], "reason": "kept the first ones"}) + "\n</json>"
        return tiny.generate(body["messages"])

    layout = _fresh(corpus_shard, tmp_path)
    res, requests = _run_and_check(layout, corpus_shard[1], corpus_shard[2], tiny, answer)
    with_instances = [r for r in res.rows if r["n_instances"]]
    assert with_instances, "no image got instances: the instance path was not exercised"
    assert any(len(q["image_sizes"]) == 2 for q in requests)  # crop + highlighted image in one prompt
    assert res.summary["clients"]["judge"]["calls"] > 0
    for r in with_instances:
        assert r["reject_reason"] == reasons.JUDGE_FAILED and r["instance_decision"] == reasons.JUDGE_FAILED, r
