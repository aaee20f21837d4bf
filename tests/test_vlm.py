"""The VLM client (curation/vlm/) against a real local OpenAI-compatible server (tests/vlm_server.py).

Every failure mode: retries then success, persistent failure, 4xx not retried, malformed and
out-of-schema answers (judge_failed, never a pass), timeouts, connection resets, the
concurrency bound, the answer cache, prompt hashes, the API key; and the offline heuristic
backend (labelled, deterministic)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time

import numpy as np
import pytest

import vlm_server as vs
from curation import vlm
from curation.vlm import JUDGE_FAILED, OK, VLMRequest, create_vlm_client
from evaluation.metrics import ics as _ics, msfi as _msfi  # noqa: F401  (register the bench's judge tasks)

pytestmark = pytest.mark.timeout(60)

MODEL = "Qwen3-VL-30B-A3B-Instruct"


# ---- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def _server():
    srv = vs.VLMTestServer(model=MODEL, lifetime_s=240).start()
    yield srv
    srv.stop()


@pytest.fixture
def server(_server):
    _server.reset_stats()
    _server.api_key = None
    _server.default = vs.default_answer
    yield _server
    _server.reset_stats()


@pytest.fixture
def make_client(server, tmp_path):
    clients = []

    def make(**kw):
        cfg = {"endpoint": server.base_url, "model": MODEL, "timeout_s": 2.0, "retries": 2, "schema_retries": 1,
               "backoff_s": 0.01, "backoff_max_s": 0.05, "max_concurrency": 4, "seed": 0}
        cfg.update(kw)
        c = create_vlm_client(cfg)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def case_prompt(tmp_path):
    """A region-artifact prompt with a ``{{case}}`` placeholder carrying the server script tag."""
    p = tmp_path / "region_case.md"
    src = (vlm.DEFAULT_PROMPT_DIR / "region_artifact.md").read_text()
    p.write_text(src + "\n{{case}}\n")
    return p


def patch(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((size, size, 3)) * 255).astype(np.uint8)


def req(image_id="img-1", case=None, prompt=None, task="region_artifact", images=None, **variables):
    if case is not None:
        variables["case"] = f"[[case:{case}]]"
    return VLMRequest(task, image_id, images if images is not None else [patch()], variables, prompt)


# ---- normal answers ------------------------------------------------------------------------
def test_ok_answer_and_request_like_vllm(make_client, server):
    c = make_client()
    r = c.run_one(req())
    assert r.status == OK and r.ok
    assert r.answer["artifact"] is False and r.answer["severity"] == 0 and r.answer["reason"] == "clean"
    assert (r.backend, r.model, r.attempts, r.cached) == ("vllm", MODEL, 1, False)
    assert r.prompt_hash == hashlib.sha256((vlm.DEFAULT_PROMPT_DIR / "region_artifact.md").read_bytes()).hexdigest()
    assert r.prompt_path.endswith("region_artifact.md") and r.latency_s > 0 and r.usage["total_tokens"] > 0
    assert len(server.requests) == 1
    body = server.requests[0]["body"]
    assert body["model"] == MODEL and body["temperature"] == 0.1
    assert body["response_format"] == {"type": "json_object"}
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert server.requests[0]["image_sizes"] == [(64, 64)]
    assert "<!--" not in parts[1]["text"] and "768" in parts[1]["text"]  # maintainer comment not sent
    assert "authorization" not in server.requests[0]["headers"]
    json.dumps(r.to_dict())  # serialisable


def test_wrapped_answers_are_parsed(make_client, server, case_prompt):
    server.script("fence", vs.ok('```json\n{"artifact": true, "severity": 3, "reason": "seam"}\n```'))
    server.script("bare", vs.ok('Here: {"artifact": true, "severity": "2", "reason": "halo"} done'))
    r1, r2 = make_client().run([req("a", "fence", case_prompt), req("b", "bare", case_prompt)])
    assert r1.ok and r1.answer == {"artifact": True, "severity": 3, "reason": "seam"}
    assert r2.ok and r2.answer["severity"] == 2 and isinstance(r2.answer["severity"], int)


def test_bench_tasks_use_reference_settings_and_variables(make_client, server):
    from evaluation.metrics import ics, msfi

    c = make_client()
    g = c.run_one(VLMRequest("msfi_global", "g", [patch(1)]))
    loc = c.run_one(VLMRequest("msfi_local", "g@512:0,0,512,512", [patch(2), patch(1)],
                               {"relative_coords": [0.0, 0.0, 0.25, 0.5]}))
    i = c.run_one(VLMRequest("ics", "g", [patch(1)], {"long_caption": "A red fox on a mossy log."}))
    assert g.ok and g.answer["SC-global"] == 4 and loc.ok and loc.answer["TF"] == 4 and i.ok and i.answer["IEV"] == 9
    bodies = [r["body"] for r in server.requests]
    for b in bodies:
        assert b["temperature"] == msfi.JUDGE_REQUEST["temperature"] == 0.1
        assert b["max_tokens"] == 8192 and b["chat_template_kwargs"] == {"enable_thinking": False}
        assert "extra_body" not in b
    assert bodies[0]["response_format"] == {"type": "json_object"} and "response_format" not in bodies[2]
    assert "response_format" not in ics.JUDGE_REQUEST
    assert "[0.0, 0.0, 0.25, 0.5]" in vs.request_text(bodies[1])
    assert len(bodies[1]["messages"][0]["content"]) == 3
    assert "A red fox on a mossy log." in vs.request_text(bodies[2])
    # the metric maths accept the validated answers as they are
    assert msfi.msfi_from_answers(g.answer, [loc.answer] * 10)[0] is not None
    assert ics.ics_from_answer(i.answer)[0] is not None


def test_bytes_images_pass_through(make_client, server):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(patch(3, 48)).save(buf, format="PNG")
    png = buf.getvalue()
    r = make_client().run_one(req(images=[png]))
    assert r.ok
    url = server.requests[0]["body"]["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == png


# ---- transport failures ---------------------------------------------------------------------
def test_500_then_success(make_client, server, case_prompt):
    server.script("flaky", vs.status(500), vs.status(503), vs.ok())
    r = make_client().run_one(req(case="flaky", prompt=case_prompt))
    assert r.ok and r.attempts == 3 and server.n_requests == 3


def test_429_honours_retry_after(make_client, server, case_prompt):
    server.script("busy", vs.status(429, "rate limited", retry_after=0.2), vs.ok())
    t0 = time.perf_counter()
    r = make_client(backoff_max_s=1.0).run_one(req(case="busy", prompt=case_prompt))
    assert r.ok and r.attempts == 2 and time.perf_counter() - t0 >= 0.2


def test_persistent_5xx_is_judge_failed(make_client, server, case_prompt):
    server.script("down", vs.status(502, "bad gateway"))
    r = make_client(retries=3).run_one(req(case="down", prompt=case_prompt))
    assert r.status == JUDGE_FAILED and not r.ok and r.answer is None
    assert r.attempts == 4 and server.n_requests == 4
    assert "HTTP 502" in r.reason and "bad gateway" in r.reason and "gave up after 4 attempts" in r.reason


def test_4xx_is_not_retried(make_client, server, case_prompt):
    server.script("bad", vs.status(400, "context length exceeded"))
    r = make_client().run_one(req(case="bad", prompt=case_prompt))
    assert r.status == JUDGE_FAILED and r.attempts == 1 and server.n_requests == 1
    assert "HTTP 400" in r.reason and "not retried" in r.reason
    # a real validation error: the server does not serve this model (vLLM answers 404)
    r = make_client(model="no-such-model").run_one(req("other"))
    assert r.status == JUDGE_FAILED and r.attempts == 1 and "HTTP 404" in r.reason and "does not exist" in r.reason


def test_timeout_then_success_and_persistent_timeout(make_client, server, case_prompt):
    server.script("slow-once", vs.slow(1.5), vs.ok())
    c = make_client(timeout_s=0.3, retries=1)
    t0 = time.perf_counter()
    r = c.run_one(req("a", "slow-once", case_prompt))
    assert r.ok and r.attempts == 2
    server.script("slow", vs.slow(1.5))
    r = c.run_one(req("b", "slow", case_prompt))
    assert r.status == JUDGE_FAILED and r.attempts == 2 and r.reason.startswith("timeout")
    assert time.perf_counter() - t0 < 2.5  # never waited for the slow answers


def test_connection_reset_is_retried(make_client, server, case_prompt):
    server.script("rst", vs.reset(), vs.ok())
    r = make_client().run_one(req("a", "rst", case_prompt))
    assert r.ok and r.attempts == 2
    server.script("rst-always", vs.reset())
    r = make_client(retries=1).run_one(req("b", "rst-always", case_prompt))
    assert r.status == JUDGE_FAILED and r.attempts == 2 and r.reason.startswith("transport")


def test_connection_refused_is_judge_failed(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    c = create_vlm_client({"endpoint": f"http://127.0.0.1:{port}", "model": MODEL, "retries": 2,
                           "backoff_s": 0.01, "backoff_max_s": 0.02, "timeout_s": 1})
    r = c.run_one(req())
    c.close()
    assert r.status == JUDGE_FAILED and r.attempts == 3 and "ConnectError" in r.reason


# ---- answer failures ------------------------------------------------------------------------
def test_malformed_answer_is_never_a_pass(make_client, server, case_prompt):
    server.script("junk", vs.malformed("The patch looks fine to me."))
    r = make_client(schema_retries=2).run_one(req(case="junk", prompt=case_prompt))
    assert r.status == JUDGE_FAILED and r.answer is None and r.attempts == 3
    assert "no JSON object" in r.reason and r.raw == "The patch looks fine to me."


def test_malformed_then_valid(make_client, server, case_prompt):
    server.script("fixme", vs.malformed('{"artifact": false, "severity": 0,'), vs.ok())
    r = make_client().run_one(req(case="fixme", prompt=case_prompt))
    assert r.ok and r.attempts == 2


@pytest.mark.parametrize("answer,why", [
    ({"artifact": False, "reason": "clean"}, "missing severity"),
    ({"artifact": True, "severity": 7, "reason": "x"}, "severity out of range [0, 3]: 7"),
    ({"artifact": "no", "severity": 0, "reason": "x"}, "artifact is not a boolean"),
    ({"artifact": False, "severity": 1.5, "reason": "x"}, "severity is not an integer"),
    ({"artifact": False, "severity": 3, "reason": "x"}, "artifact is false but severity is 3"),
])
def test_out_of_schema_answers(make_client, server, case_prompt, answer, why):
    server.script("schema", vs.ok(answer))
    r = make_client().run_one(req(case="schema", prompt=case_prompt))
    assert r.status == JUDGE_FAILED and r.answer is None and r.attempts == 2
    assert why in r.reason and r.reason.startswith("invalid answer after 2 attempts")


def test_bench_answer_out_of_range(make_client, server):
    server.default = lambda body: '<json>{"SC-global": 6, "PI": 5, "LC": 4, "CH": 5}</json>'
    r = make_client().run_one(VLMRequest("msfi_global", "g", [patch()]))
    assert r.status == JUDGE_FAILED and "SC-global out of range [1, 5]: 6" in r.reason


def test_truncated_answer_is_retried(make_client, server, case_prompt):
    server.script("cut", vs.truncated(), vs.ok())
    r = make_client().run_one(req(case="cut", prompt=case_prompt))
    assert r.ok and r.attempts == 2


# ---- concurrency, order, dedup ----------------------------------------------------------------
def test_concurrency_bound_and_order(make_client, server):
    server.default = lambda body: vs.default_answer(body)
    server.queue(*[vs.slow(0.15) for _ in range(12)])
    c = make_client(max_concurrency=3)
    reqs = [req(f"img-{i}", images=[patch(i)]) for i in range(12)]
    t0 = time.perf_counter()
    res = c.run(reqs)
    wall = time.perf_counter() - t0
    assert [r.image_id for r in res] == [f"img-{i}" for i in range(12)] and all(r.ok for r in res)
    assert server.n_requests == 12
    assert server.max_in_flight == 3  # bound reached, never exceeded
    assert wall > 0.55  # at least 4 waves of 0.15 s


def test_identical_requests_in_a_batch_are_sent_once(make_client, server):
    res = make_client().run([req("same"), req("same"), req("other")])
    assert all(r.ok for r in res) and server.n_requests == 2
    assert res[0].cache_key == res[1].cache_key != res[2].cache_key


def test_invalid_requests_raise_before_sending(make_client, server):
    c = make_client()
    with pytest.raises(ValueError, match="expects 2..2 image"):
        c.run([req(), VLMRequest("msfi_local", "x", [patch()], {"relative_coords": [0, 0, 1, 1]})])
    with pytest.raises(ValueError, match="relative_coords"):
        c.run([VLMRequest("msfi_local", "x", [patch(), patch()])])
    with pytest.raises(KeyError, match="unknown VLM task"):
        c.run([VLMRequest("nope", "x", [patch()])])
    assert server.n_requests == 0


# ---- cache ------------------------------------------------------------------------------------
def test_cache_hit_sends_no_request(make_client, server, tmp_path):
    cache = tmp_path / "cache"
    reqs = [req(f"img-{i}", images=[patch(i)]) for i in range(3)]
    first = make_client(cache_dir=str(cache)).run(reqs)
    assert all(r.ok and not r.cached for r in first) and server.n_requests == 3
    again = make_client(cache_dir=str(cache)).run(reqs)  # a new client, a new process would do the same
    assert server.n_requests == 3
    assert all(r.cached and r.attempts == 0 and r.ok for r in again)
    assert [r.answer for r in again] == [r.answer for r in first]
    assert [r.cache_key for r in again] == [r.cache_key for r in first]
    # another model, another variable value or another image id is a different key
    make_client(cache_dir=str(cache)).run([req("img-0", images=[patch(0)], extra="x")])
    assert server.n_requests == 3  # unused variables do not change the rendered prompt -> same key
    make_client(cache_dir=str(cache)).run([req("img-9", images=[patch(0)])])
    assert server.n_requests == 4
    # heuristic answers in the same cache are never served as the model's
    h = create_vlm_client({"cache_dir": str(cache)}).run([req("img-5", images=[patch(5)])])
    assert h[0].backend == "heuristic" and not h[0].cached
    r = make_client(cache_dir=str(cache)).run_one(req("img-5", images=[patch(5)]))
    assert not r.cached and r.backend == "vllm" and server.n_requests == 5


def test_failures_are_not_cached_as_answers(make_client, server, tmp_path, case_prompt):
    cache = tmp_path / "cache"
    server.script("later", vs.status(503))
    r = make_client(cache_dir=str(cache), retries=0).run_one(req(case="later", prompt=case_prompt))
    assert r.status == JUDGE_FAILED
    c = make_client(cache_dir=str(cache))
    assert c.cache.count() == 0 and c.cache.failures()[0]["reason"].startswith("HTTP 503")
    server.script("later", vs.ok())
    r = c.run_one(req(case="later", prompt=case_prompt))
    assert r.ok and not r.cached and server.n_requests == 2
    assert c.cache.failures() == [] and c.cache.count() == 1


def test_prompt_hash_recorded_and_changes_with_the_file(make_client, server, tmp_path):
    p = tmp_path / "my_region.md"
    p.write_text("Judge this patch. Answer {\"artifact\": bool, \"severity\": 0-3, \"reason\": str}.\n")
    c = make_client(cache_dir=str(tmp_path / "cache"), prompts={"region_artifact": str(p)})
    r1 = c.run_one(req())
    assert r1.prompt_hash == hashlib.sha256(p.read_bytes()).hexdigest() == c.prompt_for("region_artifact").sha256
    assert r1.prompt_path == str(p)
    assert c.run_one(req()).cached and server.n_requests == 1
    p.write_text(p.read_text() + "Be strict.\n")
    r2 = c.run_one(req())
    assert not r2.cached and r2.prompt_hash != r1.prompt_hash and server.n_requests == 2
    assert r2.prompt_hash == hashlib.sha256(p.read_bytes()).hexdigest()
    assert "Be strict." in vs.request_text(server.requests[-1]["body"])


# ---- API key ----------------------------------------------------------------------------------
def test_api_key_from_env_sent_as_bearer_never_recorded(make_client, server, tmp_path, monkeypatch):
    secret = "sk-test-" + "9" * 24
    server.api_key = secret
    monkeypatch.setenv("UHR_TEST_VLM_KEY", secret)
    c = make_client(api_key_env="UHR_TEST_VLM_KEY", cache_dir=str(tmp_path / "cache"))
    r = c.run_one(req())
    assert r.ok and server.requests[0]["headers"]["authorization"] == f"Bearer {secret}"
    assert secret not in json.dumps(r.to_dict()) and secret not in repr(c) and secret not in repr(r)
    assert secret.encode() not in b"".join(f.read_bytes() for f in (tmp_path / "cache").iterdir())
    # without the key the server refuses (401, not retried) and the failure says so
    r = make_client().run_one(req("other"))
    assert r.status == JUDGE_FAILED and "HTTP 401" in r.reason and r.attempts == 1
    monkeypatch.delenv("UHR_TEST_VLM_KEY")
    with pytest.raises(ValueError, match="UHR_TEST_VLM_KEY"):
        make_client(api_key_env="UHR_TEST_VLM_KEY")


# ---- backend selection ------------------------------------------------------------------------
def test_backend_selection_and_config_validation(server, tmp_path):
    with create_vlm_client({"endpoint": server.base_url + "/v1", "model": MODEL}) as hc:
        assert isinstance(hc, vlm.HttpVLMClient)
    h = create_vlm_client({"endpoint": None, "model": MODEL})
    assert isinstance(h, vlm.HeuristicVLMClient) and h.backend == "heuristic" and h.model == vlm.HEURISTIC_MODEL
    assert isinstance(create_vlm_client(None), vlm.HeuristicVLMClient)
    with create_vlm_client({"cache_dir": "cache/vlm"}, base_dir=tmp_path) as hc:
        assert hc.cache.path == tmp_path / "cache" / "vlm" / "vlm_cache.sqlite"
    assert vlm.VLM_BACKENDS.names() == ["heuristic", "vllm"]
    with pytest.raises(ValueError, match="unknown config key"):
        create_vlm_client({"endpont": "http://x"})
    with pytest.raises(ValueError, match="needs 'endpoint' and 'model'"):
        create_vlm_client({"backend": "vllm"})
    c = create_vlm_client({"endpoint": server.base_url + "/v1/", "model": MODEL, "temperature": 0.0,
                           "thinking": True})
    assert c.url == server.base_url + "/v1/chat/completions"
    c.close()
    s = c.request_settings(vlm.get_task("msfi_global"))
    assert s["temperature"] == 0.0 and s["chat_template_kwargs"] == {"enable_thinking": True}


# ---- heuristic backend ------------------------------------------------------------------------
def _photo(seed=0, size=256):
    from curation.synth import generate_photo

    return generate_photo(size, size, seed=seed)


def test_heuristic_backend_labelled_and_deterministic(tmp_path):
    img = _photo(1)
    reqs = [
        VLMRequest("region_artifact", "p", [img]),
        VLMRequest("instance_artifact", "p", [img, img], {"label": "cat"}),
        VLMRequest("artimuse_aesthetics", "p", [img]),
        VLMRequest("msfi_global", "p", [img]),
        VLMRequest("msfi_local", "p", [img, img], {"relative_coords": [0, 0, 1, 1]}),
        VLMRequest("ics", "p", [img], {"long_caption": "anything"}),
    ]
    a = create_vlm_client({}).run(reqs)
    b = create_vlm_client({"cache_dir": str(tmp_path / "c")}).run(reqs)
    for x, y in zip(a, b):
        assert x.ok and x.backend == "heuristic" and x.model == vlm.HEURISTIC_MODEL, x.reason
        assert x.answer == y.answer and x.prompt_hash == y.prompt_hash
    assert a[0].answer["reason"].startswith("heuristic:") and a[2].answer["analysis"].startswith("heuristic:")
    assert a[3].answer["reasoning"].startswith("heuristic:") and a[5].answer["reasoning"].startswith("heuristic:")
    c = create_vlm_client({"cache_dir": str(tmp_path / "c")}).run(reqs)
    assert all(r.cached and r.backend == "heuristic" for r in c)


def test_heuristic_artifact_judge_separates_clean_from_damaged():
    import cv2

    img = _photo(2, 384)
    seam = img.astype(np.int16)
    seam[192:] += 20
    seam = np.clip(seam, 0, 255).astype(np.uint8)
    blocky = cv2.imdecode(cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 8])[1], 1)[:, :, ::-1]
    res = create_vlm_client({}).run([VLMRequest("region_artifact", k, [x])
                                     for k, x in (("clean", img), ("seam", seam), ("blocky", blocky))])
    assert [r.answer["artifact"] for r in res] == [False, True, True]
    assert res[0].answer["severity"] <= 1 and res[1].answer["severity"] >= 2 and res[2].answer["severity"] == 3


def test_heuristic_without_a_task_heuristic_is_judge_failed():
    spec = vlm.register_task(vlm.TaskSpec("test_caption", "region_artifact.md", json_answer=False))
    r = create_vlm_client({}).run_one(VLMRequest(spec.name, "x", [patch()]))
    assert r.status == JUDGE_FAILED and "no heuristic" in r.reason


def test_free_text_task_over_http(make_client, server):
    vlm.register_task(vlm.TaskSpec("test_caption", "region_artifact.md", json_answer=False))
    server.queue(vs.ok("A red fox on a log."))
    r = make_client().run_one(VLMRequest("test_caption", "x", [patch()]))
    assert r.ok and r.answer == {"text": "A red fox on a log."}
