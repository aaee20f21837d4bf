"""MSFI / ICS under the reference's judge protocol (issue 19), with a fake judge client.

* the reference's prompts are read from a prompts file the user points to (here a stand-in the
  test writes: the structure of PixVerve-95K's ``eval/util/build_prompts.py``, placeholder
  wording) -- parsed, never executed; the protocol id records its sha256;
* the same canned answers through the ``msfi`` / ``ics`` path and through a re-implementation of
  the reference's scoring written here from the published formula give equal set scores
  (defaults of 3, half points, out-of-range values, rounding to 4 decimals);
* the request body puts the text before the images; the reference's request settings;
* without the prompts file the metrics are "not available"; the project's own protocol runs
  as ``msfi_strict`` / ``ics_strict``; Table 3 shows one of each pair.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.patch_sampler import PatchBox
from curation.vlm import JUDGE_FAILED, OK, JudgeResult, create_vlm_client, get_task, VLMRequest
from evaluation.metrics import create_metric
from evaluation.metrics.msfi import MsfiViews
from evaluation.metrics.reference_judge import ReferencePromptsError, load_reference_prompts

STAND_IN = '''"""Stand-in for the reference's prompt builders: the same structure, placeholder wording."""
import json

raise SystemExit("this file is parsed, never executed")


def build_global_eval_prompt():
    """Global-scale placeholder."""
    prompt = f"""
GLOBAL PLACEHOLDER. Reply as <json>{{"SC-global": 0, "PI": 0, "LC": 0, "CH": 0}}</json>
    """
    return prompt.strip()


def build_local_eval_prompt(relative_coords):
    """Local-scale placeholder."""
    prompt = f"""
LOCAL PLACEHOLDER at {relative_coords}.
Image 1 covers {relative_coords}. Reply as <json>{{"NGE": 0}}</json>
    """
    return prompt.strip()


def build_ICS_eval_prompt(long_caption):
    """ICS placeholder."""
    prompt = f"""
ICS PLACEHOLDER. Caption: "{long_caption}" {{"IEV": 0}}
    """
    return prompt.strip()
'''


@pytest.fixture
def ref_file(tmp_path):
    p = tmp_path / "ref" / "eval" / "util" / "build_prompts.py"
    p.parent.mkdir(parents=True)
    p.write_text(STAND_IN)
    return p


# ---------------------------------------------------------------------------------------------
# the prompts file
# ---------------------------------------------------------------------------------------------
def test_prompts_are_read_from_the_file_not_executed(ref_file, tmp_path):
    import hashlib

    r = load_reference_prompts(ref_file)
    assert r.sha256 == hashlib.sha256(ref_file.read_bytes()).hexdigest() and not r.pinned
    assert r.global_prompt() == 'GLOBAL PLACEHOLDER. Reply as <json>{"SC-global": 0, "PI": 0, "LC": 0, "CH": 0}</json>'
    coords = [0.125, 0.0, 0.375, 0.5]
    assert r.local_prompt(coords) == ("LOCAL PLACEHOLDER at [0.125, 0.0, 0.375, 0.5].\n"
                                      'Image 1 covers [0.125, 0.0, 0.375, 0.5]. Reply as <json>{"NGE": 0}</json>')
    assert r.ics_prompt("a fox") == 'ICS PLACEHOLDER. Caption: "a fox" {"IEV": 0}'
    assert load_reference_prompts(tmp_path / "ref").sha256 == r.sha256  # the checkout: eval/util/ found
    assert load_reference_prompts(tmp_path / "ref" / "eval").sha256 == r.sha256


@pytest.mark.parametrize("edit, why", [
    (lambda s: s.replace("def build_ICS_eval_prompt", "def build_ics"), "no function build_ICS_eval_prompt"),
    (lambda s: s.replace("(relative_coords):", "(coords):"), "expected parameters"),
    (lambda s: s.replace('Caption: "{long_caption}"', 'Caption: "{open(long_caption)}"'), "replacement field"),
    (lambda s: s.replace('    """ICS placeholder."""', '    import os\n    os.remove("x")'), "unexpected statement"),
    (lambda s: s.replace("    return prompt.strip()\n", "    return build()\n"), "not a string"),
    (lambda s: s + "\ndef (:\n", "not a readable Python file"),
])
def test_a_file_of_another_structure_is_refused_with_the_reason(ref_file, edit, why):
    ref_file.write_text(edit(STAND_IN))
    with pytest.raises(ReferencePromptsError, match=re.escape(why)):
        load_reference_prompts(ref_file)


def test_without_the_reference_copy_the_metrics_are_not_available(ref_file, tmp_path):
    judge = FakeJudge({})
    for name in ("msfi", "ics"):
        m = create_metric(name, judge=judge)
        ok, why = m.availability()
        assert not ok and "no local copy of the reference evaluation code" in why and "UHR_BENCH_REFERENCE_PROMPTS" in why
        r = m.score_item(_item(tmp_path))
        assert r.value is None and r.reason.startswith("not available: ") and r.metric == name
        bad = create_metric(name, judge=judge, reference_prompts=tmp_path / "nowhere.py")
        assert "does not exist" in bad.availability()[1]
        good = create_metric(name, judge=judge, reference_prompts=ref_file)
        assert good.availability() == (True, None)
        assert good.protocol_version.endswith("+build_prompts-sha256:" + load_reference_prompts(ref_file).sha256)
    for name in ("msfi_strict", "ics_strict"):  # the project's own protocol needs no reference copy
        assert create_metric(name, judge=judge).availability() == (True, None)
    assert not judge.requests


# ---------------------------------------------------------------------------------------------
# a fake judge client: canned raw answers, read by each task's own answer check
# ---------------------------------------------------------------------------------------------
class FakeJudge:
    """A model-backed judge (as an endpoint would be) answering from canned raw texts keyed by
    ``(image, call)`` (call 0: global view, 1..: patches; ICS: 0). ``None`` is a failed call.
    Each text goes through the task's own answer check (``TaskSpec.validate``), as the client
    does with ``schema_retries=0``."""

    backend, model = "vllm", "fake-qwen"

    def __init__(self, canned: dict, truncated: frozenset = frozenset()):
        self.canned, self.truncated, self.requests = canned, truncated, []

    def prompt_for(self, task):
        from curation.vlm import DEFAULT_PROMPT_DIR, load_prompt

        return load_prompt(DEFAULT_PROMPT_DIR / get_task(task).prompt_file)

    def run(self, reqs):
        out = []
        for call, r in enumerate(reqs):
            self.requests.append(r)
            image = r.image_id.split("@")[0]
            text = self.canned.get((image, call))
            answer, problems = get_task(r.task).validate(text) if text is not None else (None, ["HTTP 503"])
            status = OK if not problems else JUDGE_FAILED
            out.append(JudgeResult(r.task, r.image_id, status, answer, "; ".join(problems) or None, self.model,
                                   self.backend, str(r.prompt or "p"), "h" * 64, 0.0, 1, False, "k", raw=text,
                                   truncated=(image, call) in self.truncated))
        return out


def _tiny_jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _views(n: int = 10) -> MsfiViews:
    boxes = [PatchBox(512 * (i % 5), 512 * (i // 5), 512, 512, "top" if i < 6 else "random", i, 1.0, (0, 0, 1))
             for i in range(n)]
    return MsfiViews(2560, 1024, 512, _tiny_jpeg(1), [(b, _tiny_jpeg(2 + i)) for i, b in enumerate(boxes)])


def _item(tmp_path, caption="a red fox"):
    from evaluation.metrics import BenchItem

    p = tmp_path / "item.png"
    if not p.exists():
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(p)
    return BenchItem(0, "item", str(p), "short", caption, image_id="sha256:item")


def j(d) -> str:
    return "<json>" + json.dumps(d) + "</json>"


G = {"SC-global": 5, "PI": 4, "LC": 4, "CH": 3}
L = {"NGE": 4, "GA": 4, "TF": 3, "MGC": 5, "SC-local": 4}

#: canned MSFI answers of six images: what the reference would default, take as is, or leave out
CANNED_MSFI = {
    # half points, a missing sub-score (-> 3), a numeric string, a value outside 1..5, a truncated answer
    "img0": [j({**G, "LC": 4.5})] + [j(L)] * 6 + [j({k: v for k, v in L.items() if k != "TF"}),
                                                  j({**L, "GA": "4"}), j({**L, "MGC": 6}), j({**L, "TF": 4.5})],
    # a global answer without CH; two failed patch calls; one unreadable sub-score (whole answer 3.0);
    # Markdown fences and prose around the JSON; an empty object (every sub-score 3)
    "img1": ['```json\n' + json.dumps({k: v for k, v in G.items() if k != "CH"}) + '\n```'] +
            [None, None, j({**L, "NGE": "abc"}), "Sure: " + json.dumps(L) + " done", "{}"] + [j(L)] * 5,
    # a global value outside the scale and a boolean; a list-valued reasoning
    "img2": [j({**G, "PI": 7, "CH": True})] + [j({**L, "reasoning": ["a", "b"]})] + [j({**L, "SC-local": 2})] * 9,
    "img3": ["I cannot answer that."] + [j(L)] * 10,       # no JSON object in the global answer: left out
    "img4": ["{}"] + [j(L)] * 10,                         # an empty global object: left out (not saved)
    "img5": [j(G)] + [None] * 10,                         # no patch answer at all: left out
}


# ---- the reference's scoring, re-implemented from the published formula and evaluator ----------
def ref_extract(text):
    """The evaluator's JSON extraction: the <json> block (else the text), fences removed, json.loads;
    else the outermost {...}; else nothing."""
    try:
        m = re.search(r"<json>(.*?)</json>", text, re.DOTALL)
        content = (m.group(1).strip() if m else text).replace("```json", "").replace("```", "").strip()
        return json.loads(content)
    except Exception:
        try:
            m = re.search(r"(\{.*\})", text, re.DOTALL)
            return json.loads(m.group(1)) if m else None
        except Exception:
            return None


def ref_weighted(scores, weights):
    """S = sum(w_i s_i) / sum(w_i) with a missing s_i = 3; an unreadable one makes S = 3."""
    try:
        if not isinstance(scores, dict):
            return 3.0
        return sum(float(scores.get(k, 3)) * w for k, w in weights.items()) / sum(weights.values())
    except Exception:
        return 3.0


def ref_msfi_set(canned):
    """Per image MSFI = S_g + S_g / 5 * S_l (S_l: mean over the patches that answered), rounded to 4
    decimals; images without a (truthy) global answer or without any patch answer are left out;
    the set score is the mean of the rounded values, printed to 4 decimals."""
    wg = {"SC-global": 5, "PI": 3, "LC": 2, "CH": 2}
    wl = {"NGE": 2, "GA": 3, "TF": 5, "MGC": 2, "SC-local": 2}
    per_image = {}
    for image, texts in canned.items():
        g = ref_extract(texts[0]) if texts[0] is not None else None
        patches = [ref_extract(t) for t in texts[1:] if t is not None]
        patches = [p for p in patches if p is not None]
        if not g or not patches:
            continue
        s_g = ref_weighted(g, wg)
        s_l = sum(ref_weighted(p, wl) for p in patches) / len(patches)
        per_image[image] = round(s_g + (s_g / 5) * s_l, 4)
    mean = sum(per_image.values()) / len(per_image)
    return float(f"{mean:.4f}"), per_image


def _run_msfi(judge, ref_file, canned):
    m = create_metric("msfi", judge=judge, reference_prompts=ref_file)
    m.begin_set()
    return m, [m.score_views(_views(len(t) - 1), f"{image}") for image, t in canned.items()]


def test_msfi_reference_path_equals_the_published_formula_on_canned_answers(ref_file):
    judge = FakeJudge({(im, i): t for im, ts in CANNED_MSFI.items() for i, t in enumerate(ts)},
                      truncated=frozenset({("img0", 3)}))
    m, rows = _run_msfi(judge, ref_file, CANNED_MSFI)
    want_set, want_rows = ref_msfi_set(CANNED_MSFI)
    assert {im: r.value for im, r in zip(CANNED_MSFI, rows) if r.value is not None} == want_rows
    assert set(want_rows) == {"img0", "img1", "img2"}
    agg = m.aggregate(rows)
    assert agg.value == want_set and agg.extra["n_scored"] == 3 and agg.extra["n_left_out"] == 3
    # the numbers by hand: S_g(img0) = (25 + 12 + 9 + 6) / 12; one patch TF missing -> 3, one MGC 6, one TF 4.5
    s_l = lambda d: (2 * d["NGE"] + 3 * d["GA"] + 5 * d["TF"] + 2 * d["MGC"] + 2 * d["SC-local"]) / 14
    s_g0 = 52 / 12
    s_l0 = (6 * s_l(L) + s_l({**L, "TF": 3}) + s_l(L) + s_l({**L, "MGC": 6}) + s_l({**L, "TF": 4.5})) / 10
    assert rows[0].value == round(s_g0 + s_g0 / 5 * s_l0, 4) and rows[0].extra["msfi_unrounded"] != rows[0].value
    assert rows[0].extra["n_half_points"] == 2 and rows[0].extra["n_defaulted"] == 1
    assert rows[0].extra["n_out_of_range"] == 1 and rows[0].extra["n_truncated"] == 1
    assert rows[0].extra["n_strict_refused"] == 5 and rows[0].extra["valid_patches"] == 10
    r1 = rows[1].extra
    assert r1["n_defaulted"] == 1 + 5 and r1["n_not_number"] == 1 and r1["n_no_answer"] == 2 and r1["valid_patches"] == 8
    assert r1["local_scores"][2] == 3.0 and r1["local_scores"][4] == 3.0  # "abc" -> the whole answer 3; {} -> 3
    assert rows[2].extra["n_out_of_range"] == 1 and rows[2].extra["n_boolean"] == 1
    assert rows[2].extra["n_reasoning_not_string"] == 1
    assert rows[3].value is None and "no global answer" in rows[3].reason
    assert rows[4].value is None and "empty JSON object" in rows[4].reason
    assert rows[5].value is None and "no patch answer" in rows[5].reason
    for k in ("n_defaulted", "n_half_points", "n_out_of_range", "n_not_number", "n_no_answer", "n_strict_refused"):
        assert agg.extra[k] == sum(r.extra[k] for r in rows), k
    assert agg.extra["mean"] == pytest.approx(sum(want_rows.values()) / 3, abs=1e-12)
    # the text went first: each request carries the reference file's text, not the project's prompt
    g_req, l_req = judge.requests[0], judge.requests[1]
    assert g_req.task == "pixverve_msfi_global" and g_req.text.startswith("GLOBAL PLACEHOLDER")
    assert l_req.text.startswith("LOCAL PLACEHOLDER at [0.0, 0.0, 0.2, 0.5]") and len(l_req.images) == 2
    assert Path(g_req.prompt) == ref_file.resolve()
    # the project's strict reading of the same answers refuses most of them
    strict = create_metric("msfi_strict", judge=FakeJudge(judge.canned))
    srows = [strict.score_views(_views(len(t) - 1), im) for im, t in CANNED_MSFI.items()]
    assert all(r.value is None and r.reason.startswith("judge failure") for r in srows)  # every global refused
    assert strict.aggregate(srows).value is None


def test_ics_reference_path_equals_the_published_formula_on_canned_answers(ref_file, tmp_path):
    canned = {
        "a": j({"IEV": 9, "AAA": 8, "SRA": 7, "reasoning": "ok"}),
        "b": j({"IEV": 8.5, "AAA": "7", "SRA": 11, "reasoning": ["list", "kept"]}),  # half point, range, list
        "c": j({"IEV": 10, "AAA": 9}),                                               # SRA missing: failure
        "d": "no json at all",
        "e": j({"IEV": 7, "AAA": 6, "SRA": 6}),
        "f": j({"IEV": "x", "AAA": 6, "SRA": 6}),                                    # float() fails
    }
    judge = FakeJudge({(k, 0): v for k, v in canned.items()})
    m = create_metric("ics", judge=judge, reference_prompts=ref_file)
    rows = [m.score_view(_tiny_jpeg(), (32, 32), f"caption {k}", k) for k in canned]

    def ref_ics(text):  # sqrt(IEV / 10) * (0.6 AAA + 0.4 SRA), every key required, float() of each
        d = ref_extract(text)
        if not d or not all(k in d for k in ("IEV", "AAA", "SRA")):
            return None
        try:
            iev, aaa, sra = float(d["IEV"]), float(d["AAA"]), float(d["SRA"])
        except Exception:
            return None
        return math.sqrt(iev / 10.0) * (0.6 * aaa + 0.4 * sra)

    ref = {k: ref_ics(v) for k, v in canned.items()}
    valid = [v for v in ref.values() if v is not None]
    assert [r.value for r in rows] == [None if v is None else round(v, 4) for v in ref.values()]
    agg = m.aggregate(rows)
    assert agg.value == float(f"{sum(valid) / len(valid):.4f}") and agg.extra["n_valid_answers"] == 3
    b = rows[1].extra
    assert b["n_half_points"] == 1 and b["n_out_of_range"] == 1 and b["n_reasoning_not_string"] == 1
    assert agg.extra["n_no_answer"] == 1 and agg.extra["n_strict_refused"] >= 2
    assert judge.requests[0].text == 'ICS PLACEHOLDER. Caption: "caption a" {"IEV": 0}'
    assert judge.requests[0].task == "pixverve_ics"


# ---------------------------------------------------------------------------------------------
# the request: text first, the reference's settings; read once
# ---------------------------------------------------------------------------------------------
def test_request_body_puts_the_text_before_the_images(ref_file):
    client = create_vlm_client({"endpoint": "http://judge.invalid:8000", "model": "judge", "temperature": 0.1,
                                "thinking": False})
    ref = load_reference_prompts(ref_file)
    img = _tiny_jpeg()
    local = client.request_body(VLMRequest("pixverve_msfi_local", "x", [img, img], prompt=str(ref_file),
                                           text=ref.local_prompt([0, 0, 1, 1])))
    parts = local["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    assert parts[0]["text"] == ref.local_prompt([0, 0, 1, 1])
    assert local["temperature"] == 0.1 and local["max_tokens"] == 8192
    assert local["response_format"] == {"type": "json_object"}
    assert local["chat_template_kwargs"] == {"enable_thinking": False} and "extra_body" not in local
    ics = client.request_body(VLMRequest("pixverve_ics", "x", [img], prompt=str(ref_file), text=ref.ics_prompt("c")))
    assert [p["type"] for p in ics["messages"][0]["content"]] == ["text", "image_url"]
    assert "response_format" not in ics and ics["max_tokens"] == 8192
    strict = client.request_body(VLMRequest("msfi_local", "x", [img, img], {"relative_coords": [0, 0, 1, 1]}))
    assert [p["type"] for p in strict["messages"][0]["content"]] == ["image_url", "image_url", "text"]
    with pytest.raises(ValueError, match="prompt file"):
        client.request_body(VLMRequest("pixverve_ics", "x", [img], text="no source file"))
    # a configured override of the reference's settings makes the reference metrics unavailable
    other = create_vlm_client({"endpoint": "http://judge.invalid:8000", "model": "judge", "max_tokens": 1024})
    ok, why = create_metric("msfi", judge=other, reference_prompts=ref_file).availability()
    assert not ok and "max_tokens" in why
    client.close()
    other.close()


def test_reference_tasks_read_each_answer_once_as_it_comes(ref_file, tmp_path):
    import vlm_server as vs

    with vs.VLMTestServer(model="judge", lifetime_s=60).start() as server:
        c = create_vlm_client({"endpoint": server.base_url, "model": "judge", "schema_retries": 2, "retries": 0,
                               "timeout_s": 5, "cache_dir": str(tmp_path / "cache")})
        req = lambda i, text: VLMRequest("pixverve_ics", f"img{i}", [_tiny_jpeg()], prompt=str(ref_file),
                                         text=f"{text} [[case:c{i}]]")
        server.script("c0", vs.malformed("no json here"), vs.ok({"IEV": 9, "AAA": 8, "SRA": 7}))
        server.script("c1", vs.truncated('<json>{"IEV": 9, "AAA": 8, "SRA": 7.5}</json> and then the'))
        server.script("c2", vs.ok({"IEV": 9}))  # no schema: an incomplete answer is the metric's to judge
        r0, r1, r2 = c.run([req(0, "a"), req(1, "b"), req(2, "c")])
        assert r0.status == JUDGE_FAILED and r0.attempts == 1  # not asked again
        assert r1.ok and r1.truncated and r1.answer["SRA"] == 7.5
        assert r2.ok and r2.answer == {"IEV": 9}
        again = c.run([req(1, "b")])[0]
        assert again.cached and again.truncated  # the flag survives the cache
        assert server.requests[0]["body"]["messages"][0]["content"][0]["type"] == "text"
        c.close()


# ---------------------------------------------------------------------------------------------
# the runner, the settings and Table 3
# ---------------------------------------------------------------------------------------------
def test_bench_run_reports_msfi_only_under_the_reference_protocol(ref_file, tmp_path, monkeypatch):
    from evaluation.reports import table3, table_metrics
    from evaluation.runner import BenchConfig, run_bench
    from orchestration.bench_resources import bench_settings_from_env

    models = tmp_path / "models" / "m"
    models.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(tmp_path / "bench.jsonl", "w") as f:
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (620, 1100, 3), dtype=np.uint8)).save(models / f"b{i}.png")
            f.write(json.dumps({"file_name": f"b{i}.jpg", "short_caption": "s", "long_caption": f"long {i}"}) + "\n")

    class Judge(FakeJudge):
        def run(self, reqs):
            self.canned = {(r.image_id.split("@")[0], i): j({**G, **L, "IEV": 9, "AAA": 8, "SRA": 7})
                           for i, r in enumerate(reqs)}
            return super().run(reqs)

    metrics = ["msfi", "ics", "msfi_strict", "ics_strict"]
    with_ref = run_bench(models, tmp_path / "bench.jsonl", out_dir=tmp_path / "o1", config=BenchConfig(
        metrics=metrics, judge=Judge({}), reference_prompts=str(ref_file), mlflow=False, data_root=str(tmp_path)))
    without = run_bench(models, tmp_path / "bench.jsonl", out_dir=tmp_path / "o2", name="m2", config=BenchConfig(
        metrics=metrics, judge=Judge({}), mlflow=False, data_root=str(tmp_path)))
    sha = load_reference_prompts(ref_file).sha256
    assert with_ref.metrics["msfi"]["value"] is not None and with_ref.metrics["ics"]["value"] is not None
    assert with_ref.protocols["msfi"].endswith(sha) and with_ref.protocols["msfi_strict"].startswith("uhrforge/")
    assert with_ref.judge["reference_prompts"]["sha256"] == sha and with_ref.judge["prompt_hashes"]["pixverve_ics"] == sha
    row = with_ref.rows[0]["extra"]["msfi"]
    assert row["n_strict_refused"] == 0 and row["reference_prompts"]["pinned"] is False
    for k in ("msfi", "ics"):
        assert without.metrics[k]["value"] is None
        assert without.metrics[k]["reason"].startswith("not available: no local copy of the reference")
        assert all(r["reasons"][k].startswith("not available") for r in without.rows)
        assert without.metrics[f"{k}_strict"]["value"] is not None
    assert table_metrics([with_ref]) == ["msfi", "ics"]
    assert table_metrics([without]) == ["msfi_strict", "ics_strict"]
    assert table_metrics([with_ref, without]) == ["msfi", "ics"]  # ran for one model: the n/a cell says why
    t = table3([with_ref, without])
    assert "n/a" in t["rows"][1][2] and any("no local copy" in n for n in t["notes"])
    # the settings: --reference-prompts / UHR_BENCH_REFERENCE_PROMPTS / judges.bench.reference_prompts
    monkeypatch.delenv("UHR_BENCH_REFERENCE_PROMPTS", raising=False)
    assert bench_settings_from_env(str(tmp_path)).reference_prompts_path() is None
    env = {"UHR_BENCH_REFERENCE_PROMPTS": str(ref_file)}
    assert bench_settings_from_env(str(tmp_path), env).reference_prompts_path() == str(ref_file)
    s = bench_settings_from_env(str(tmp_path), env, reference_prompts="/elsewhere.py", judge_backend="none")
    assert s.bench_config(mlflow=False).reference_prompts == "/elsewhere.py"
    # uhr bench --reference-prompts: the protocol id names the file even where no judge is configured
    from click.testing import CliRunner

    from cli.main import cli

    res = CliRunner().invoke(cli, ["bench", str(models), "--prompts", str(tmp_path / "bench.jsonl"), "--metric", "msfi",
                                   "--metric", "msfi_strict", "--judge", "none", "--reference-prompts", str(ref_file),
                                   "--no-mlflow", "--json", "--out", str(tmp_path / "o3"), "--data-root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)["metrics"]
    assert out["msfi"]["protocol_version"].endswith(sha) and "no judge client" in out["msfi"]["reason"]
    assert "no local copy" not in out["msfi"]["reason"] and out["msfi_strict"]["value"] is None
