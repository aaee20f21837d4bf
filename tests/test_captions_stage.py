"""The ``captions`` stage end to end against the local OpenAI-compatible test server, and resume.

* every model step (tag pruning, instance descriptions, instance artifact check, aesthetics
  analysis, long and short caption) goes over real HTTP to ``tests/vlm_server.py``; the rows
  pass, the records are complete and name the served backend/model in their provenance;
* a flagged instance rejects its image as ``instance_artifacts`` (the 3.1.4 hook, applied);
* a run killed with SIGKILL mid-shard, then run again, repeats no cached call: the second run
  sends exactly (calls of an uninterrupted run) - (answers the killed run had cached);
* without an endpoint every field is written by the labelled heuristic backends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curation.config import load_config
from curation.layout import DataLayout

pytestmark = pytest.mark.timeout(600)

SERVED = "test-vlm"
USES = ("captions", "captions_llm", "corpus")


def answer(body: dict) -> str:
    """What a well-behaved served model answers to each captions task (valid for its parser)."""
    from vlm_server import default_answer, request_text

    text = request_text(body)
    # the caption prompts carry the other steps' metadata: test their own answer keys first
    if '"short_caption"' in text:
        ans = {"short_caption": "Textured colour regions with two objects under soft light."}
    elif '"long_caption"' in text:
        ans = {"long_caption": " ".join(["A wide photograph shows textured regions of colour, an object near the"
                                         " centre and another one on the right side, under soft light."] * 4)}
    elif '"tangible_tags"' in text:
        tags = next(json.loads(line) for line in text.splitlines() if line.strip().startswith("["))
        ans = {"tangible_tags": tags[:4], "reason": "kept the first ones"}
    elif '"importance"' in text:
        ans = {"description": "A clearly visible object with a distinct colour and shape in the picture.",
               "importance": 6}
    elif '"emotion_viewer_response"' in text:
        ans = {k: f"{k.replace('_', ' ')}: balanced and clear." for k in (
            "composition_design", "visual_elements_structure", "technical_execution", "originality_creativity",
            "theme_communication", "emotion_viewer_response")}
        ans["overall"] = 70
    else:
        return default_answer(body)  # the instance artifact verdict: clean
    return "<json>\n" + json.dumps(ans) + "\n</json>"


def _cfg(endpoint: str | None):
    cfg = load_config("test")
    for use in USES:
        sec = cfg.data["judges"][use]
        sec.update(retries=1, backoff_s=0.01, backoff_max_s=0.02, timeout_s=20, max_concurrency=4)
        if endpoint:
            sec.update(model=SERVED, endpoint=endpoint)
    return cfg


@pytest.fixture(scope="module")
def corpus_shard(tmp_path_factory):
    """One test-profile shard through corpus_100mp (lanczos, heuristic region judge)."""
    from conftest import shard_to_candidates
    from curation.corpus import run_corpus

    cfg, layout, shard = shard_to_candidates(tmp_path_factory.mktemp("captions"), 24, 5)
    res = run_corpus(layout, shard, cfg, "lanczos")
    assert sum(r["passed"] for r in res.rows) >= 3
    return layout, shard


def _fresh(corpus_shard, tmp_path) -> DataLayout:
    """A data root with the shard's manifests and corpus files (no captions yet)."""
    src, _ = corpus_shard
    layout = DataLayout.at(tmp_path / "data")
    for d in ("manifests", "corpus"):
        shutil.copytree(src.root / d, layout.root / d, symlinks=True)
    shutil.rmtree(layout.root / "manifests" / "captions", ignore_errors=True)
    return layout


def _run(layout, shard, cfg):
    from curation.captioning.stage import run_captions

    return run_captions(layout, shard, cfg)


def test_captions_end_to_end_over_http(corpus_shard, tmp_path):
    from vlm_server import VLMTestServer

    layout = _fresh(corpus_shard, tmp_path)
    shard = corpus_shard[1]
    with VLMTestServer(model=SERVED) as server:
        server.default = answer
        res = _run(layout, shard, _cfg(server.base_url))
        assert server.n_requests > 0
    rows = res.rows
    assert rows and all(r["passed"] for r in rows), [(r["reject_reason"], r["reject_detail"]) for r in rows]
    tasks = set()
    for r in rows:
        rec = json.loads(r["record"])
        assert r["caption_complete"] and r["instance_status"] == "applied" and r["instance_decision"] == "pass"
        for field in ("long_caption", "short_caption", "aesthetics_analysis", "tangible_tags"):
            prov = rec["provenance"][field]
            assert prov["backend"] == "vllm" and prov["model"] == SERVED and prov["prompt_hash"], (field, prov)
        for inst in rec["instances"]:
            assert inst["description"] and 0 <= inst["importance"] <= 10
            assert inst["provenance"]["artifact"]["model"] == SERVED
            assert inst["mask_rle"]["size"] == [rec["height"], rec["width"]] and inst["area"] > 0
        tasks.update(rec["provenance"])
        assert r["long_words"] >= 40 and r["short_words"] >= 5
    assert sum(json.loads(r["record"])["instances"].__len__() for r in rows) > 0
    s = res.summary
    assert s["clients"]["vlm"]["calls"] > 0 and s["clients"]["llm"]["calls"] > 0 and s["clients"]["judge"]["calls"] > 0
    assert s["computed"] == len(rows) and s["reused"] == 0


def test_a_flagged_instance_rejects_the_image(corpus_shard, tmp_path, monkeypatch):
    from curation import reasons
    from vlm_server import VLMTestServer

    layout = _fresh(corpus_shard, tmp_path)

    def flag_all(body):  # every artifact verdict flags
        from vlm_server import request_text

        if '"artifact"' in request_text(body) and '"importance"' not in request_text(body):
            return '<json>{"artifact": true, "severity": 3, "reason": "warped edges"}</json>'
        return answer(body)

    with VLMTestServer(model=SERVED) as server:
        server.default = flag_all
        res = _run(layout, corpus_shard[1], _cfg(server.base_url))
    with_instances = [r for r in res.rows if r["n_instances"]]
    assert with_instances
    for r in with_instances:
        assert not r["passed"] and r["reject_reason"] == reasons.INSTANCE_ARTIFACTS and r["instance_decision"] == "fail"


def _child(root: str, shard: str, endpoint: str) -> None:
    layout = DataLayout.at(root)
    _run(layout, shard, _cfg(endpoint))


def _cached_answers(layout: DataLayout) -> int:
    db = layout.root / "cache" / "vlm" / "vlm_cache.sqlite"
    if not db.exists():
        return 0
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return c.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


def test_a_killed_run_repeats_no_cached_call(corpus_shard, tmp_path):
    from vlm_server import VLMTestServer

    def slow_answer(body):  # leaves time to kill the run between answers
        time.sleep(0.05)
        return answer(body)

    shard = corpus_shard[1]
    with VLMTestServer(model=SERVED, lifetime_s=500) as server:
        server.default = answer
        # the calls of an uninterrupted run, on a fresh data root
        full = _fresh(corpus_shard, tmp_path / "full")
        _run(full, shard, _cfg(server.base_url))
        total = server.n_requests
        assert total > 0
        # a run killed with SIGKILL once some answers are cached (slow answers leave time to kill it)
        killed = _fresh(corpus_shard, tmp_path / "killed")
        server.default = slow_answer
        server.reset_stats()
        here = Path(__file__).resolve().parent
        code = (f"import sys; sys.path[:0] = [{str(here.parent)!r}, {str(here)!r}]\n"
                f"from test_captions_stage import _child\n_child({str(killed.root)!r}, {shard!r}, {server.base_url!r})")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=here.parent, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and _cached_answers(killed) < max(3, total // 3):
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        cached = _cached_answers(killed)
        assert 0 < cached < total, (cached, total)
        assert not killed.manifest("captions", shard).exists()  # the manifest is the commit marker
        server.default = answer
        server.reset_stats()
        res = _run(killed, shard, _cfg(server.base_url))
        assert server.n_requests == total - cached, (server.n_requests, total, cached)
        assert all(r["passed"] for r in res.rows)


def test_without_an_endpoint_every_field_is_the_labelled_heuristic(corpus_shard, tmp_path):
    layout = _fresh(corpus_shard, tmp_path)
    res = _run(layout, corpus_shard[1], _cfg(None))
    assert res.rows
    for r in res.rows:
        rec = json.loads(r["record"])
        assert {p["backend"] for p in rec["provenance"].values()} == {"heuristic"}, rec["provenance"]
        assert rec["long_caption"].startswith("heuristic:")
        assert all("heuristic" in v for v in json.loads(r["backends"]).values())
    again = _run(layout, corpus_shard[1], _cfg(None))
    assert again.summary["computed"] == 0 and again.summary.get("manifest_reused")


def test_a_prompt_change_redoes_only_the_calls_of_that_prompt(corpus_shard, tmp_path, monkeypatch):
    import curation.vlm.client as vlm_client
    import curation.vlm.prompts as vlm_prompts
    from curation.stages.fingerprint import fingerprints
    from vlm_server import VLMTestServer

    layout = _fresh(corpus_shard, tmp_path / "root")
    shard = corpus_shard[1]
    with VLMTestServer(model=SERVED) as server:
        server.default = answer
        cfg = _cfg(server.base_url)
        first = _run(layout, shard, cfg)
        assert server.n_requests > 0
        before = fingerprints(cfg)
        prompts = tmp_path / "prompts"
        shutil.copytree(vlm_prompts.DEFAULT_PROMPT_DIR, prompts)
        with open(prompts / "caption_short.md", "a") as fh:
            fh.write("\nKeep it under twenty words.\n")
        monkeypatch.setattr(vlm_prompts, "DEFAULT_PROMPT_DIR", prompts)
        monkeypatch.setattr(vlm_client, "DEFAULT_PROMPT_DIR", prompts)
        after = fingerprints(cfg)
        assert {s for s in before if before[s] != after[s]} == {"captions", "final_corpus", "bench_split"}
        server.reset_stats()
        second = _run(layout, shard, cfg)
        assert second.summary["computed"] == len(second.rows) and not second.summary.get("manifest_reused")
        # every image asks for its short caption again; every other call is served from the cache
        assert server.n_requests == len([r for r in first.rows if r["long_caption"]]) > 0
        texts = [json.dumps(r["body"]) for r in server.requests]
        assert all("twenty words" in t for t in texts)
