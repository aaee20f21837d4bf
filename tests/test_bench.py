"""Bench runner, reports, MLflow logging, ``uhr bench`` and the ``bench_scores`` asset, on a tiny
synthetic bench (a few small procedural photos; degraded copies as "models")."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.runner import (
    NOT_SELECTED,
    BenchConfig,
    BenchResult,
    load_prompts,
    load_result,
    make_judge,
    match_images,
    run_bench,
)

W, H = 1100, 620  # two 512-px MSFI cells, 17 x 9 GLCM patches
EVAL = 320        # FID evaluation size (>= 299 for the patch crops)


def _photo(seed: int, w: int = W, h: int = H) -> np.ndarray:
    from curation.synth import generate_photo

    return generate_photo(w, h, seed)


def _write_prompts(path: Path, stems: list[str]) -> Path:
    with open(path, "w") as f:
        for i, s in enumerate(stems):
            f.write(json.dumps({"file_name": f"{s}.jpg", "short_caption": f"short {i}",
                                "long_caption": f"a long caption about picture {i}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """3 prompts; reference has all 3; model ``soft`` has 2 (one missing) plus a stray file."""
    import cv2

    root = tmp_path_factory.mktemp("bench")
    stems = ["b0", "b1", "b2"]
    prompts = _write_prompts(root / "benchmark.jsonl", stems)
    ref, soft, sharp = root / "reference", root / "models" / "soft", root / "models" / "sharp"
    for d in (ref, soft, sharp):
        d.mkdir(parents=True)
    for i, s in enumerate(stems):
        rgb = _photo(i)
        Image.fromarray(rgb).save(ref / f"{s}.png")
        Image.fromarray(rgb).save(sharp / f"{s}.png")
        if s != "b2":
            Image.fromarray(cv2.GaussianBlur(rgb, (0, 0), 2.0)).save(soft / f"{s}.png")
    Image.fromarray(_photo(9, 200, 100)).save(soft / "not_in_bench.png")
    return {"root": root, "prompts": prompts, "ref": ref, "soft": soft, "sharp": sharp,
            "tracking": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}", "data": root / "data"}


@pytest.fixture(scope="module")
def soft_run(bench):
    judge = make_judge("heuristic", cache_dir=bench["data"] / "cache" / "vlm")
    cfg = BenchConfig(judge=judge, eval_size=EVAL, data_root=str(bench["data"]), tracking_uri=bench["tracking"],
                      metric_options={"fid_patch_fidhelper_inception": {"n_crops": 2}})
    return run_bench(bench["soft"], bench["prompts"], reference=bench["ref"], config=cfg)


# ---------------------------------------------------------------------------------------------
# prompts and matching
# ---------------------------------------------------------------------------------------------
def test_prompts_file_and_stem_matching(tmp_path):
    p = _write_prompts(tmp_path / "p.jsonl", ["a", "b", "c", "d"])
    rows = load_prompts(p)
    assert [r.stem for r in rows] == ["a", "b", "c", "d"] and rows[2].index == 2
    assert rows[0].file_name == "a.jpg" and rows[0].long_caption.startswith("a long caption")
    d = tmp_path / "imgs"
    d.mkdir()
    tiny = Image.new("RGB", (8, 8))
    tiny.save(d / "a.png")            # a.jpg in the prompts file matches a.png by stem
    tiny.save(d / "b.webp")
    tiny.save(d / "c.png")
    tiny.save(d / "c.jpg")            # ambiguous
    tiny.save(d / "zz.png")           # not in the bench
    (d / "notes.txt").write_text("x")
    m = match_images(d, rows)
    assert set(m.paths) == {"a", "b"} and m.paths["a"].endswith("a.png")
    assert m.missing == ["c", "d"] and set(m.ambiguous) == {"c"}
    assert [Path(x).name for x in m.extra] == ["zz.png"]
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"file_name": "x.jpg"}\n{"file_name": "x.png"}\n')
    with pytest.raises(ValueError, match="already on line 1"):
        load_prompts(dup)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"short_caption": "no file name"}\n')
    with pytest.raises(ValueError, match="file_name"):
        load_prompts(bad)


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------
def test_runner_rows_missing_and_extra(soft_run, bench):
    r = soft_run
    assert r.model == "soft" and r.n_prompts == 3 and r.n_images == 2
    assert [row["status"] for row in r.rows] == ["ok", "ok", "missing"]
    assert r.missing == ["b2"] and [Path(p).name for p in r.extra_files] == ["not_in_bench.png"]
    ok, missing = r.rows[0], r.rows[2]
    assert ok["sha256"] and ok["width"] == W and ok["height"] == H and ok["reference_path"].endswith("b0.png")
    for name in ("glcm", "compression_ratio", "msfi_strict_heuristic"):
        assert missing["values"][name] is None and missing["reasons"][name] == "missing image"
    assert Path(r.out_dir) == (bench["data"] / "bench" / "soft").resolve()
    assert load_result(r.out_dir).to_dict() == r.to_dict()


def test_unavailable_metrics_carry_reasons_never_numbers(soft_run):
    r = soft_run
    for name in ("aesthetics", "clipscore", "fgclip2", "fid", "fid_patch"):
        m = r.metrics[name]
        assert m["value"] is None and m["reason"].startswith("not available: ") and len(m["reason"]) > 25
        for row in r.rows:
            if r.metrics[name]["kind"] == "per_image":
                assert row["values"][name] is None and row["reasons"][name].startswith(("not available", "missing"))
    # the heuristic judge never produces msfi / ics: the real names say why, stand-ins are labelled
    for base in ("msfi", "ics", "msfi_strict", "ics_strict"):
        assert r.metrics[base]["value"] is None and "heuristic" in r.metrics[base]["reason"]
    for base in ("msfi", "ics"):
        stand_in = r.metrics[f"{base}_strict_heuristic"]
        assert stand_in["value"] is not None and stand_in["extra"]["judge_backend"] == "heuristic"
        # the reference protocol needs the reference's prompts file, even for a stand-in judge
        assert r.metrics[f"{base}_heuristic"]["reason"].startswith("not available: no local copy of the reference")
    assert all(row["judge_backend"] == "heuristic" for row in r.rows if row["status"] == "ok")
    assert r.judge["backend"] == "heuristic" and r.judge["is_model"] is False
    assert set(r.judge["prompt_hashes"]) == {"msfi_global", "msfi_local", "ics"}
    # the option that changes the FID_patch protocol renames the metric and leaves the real one empty
    assert r.metrics["fid_patch_fidhelper_inception"]["value"] is None
    assert r.metrics["fid_patch_fidhelper_inception_2crops"]["value"] is not None
    # every metric states its protocol version
    assert all(v["protocol_version"] for v in r.metrics.values())
    assert r.protocols["glcm"] == "pixverve-3f9e7bd/glcm-value-entropy/1"


def test_per_image_vs_per_set(soft_run):
    r = soft_run
    vals = [row["values"]["glcm"] for row in r.rows if row["status"] == "ok"]
    assert len(vals) == 2 and r.metrics["glcm"]["value"] == pytest.approx(sum(vals) / 2, abs=1e-12)
    assert r.metrics["glcm"]["extra"]["n_scored"] == 2 and r.metrics["glcm"]["extra"]["n_missing"] == 1
    ex = [row["extra"]["compression_ratio"] for row in r.rows if row["status"] == "ok"]
    ratio = sum(e["raw_rgb_bytes"] for e in ex) / sum(e["file_bytes"] for e in ex)
    assert r.metrics["compression_ratio"]["value"] == pytest.approx(ratio, rel=1e-12)  # ratio of totals
    fid = r.metrics["fid_fidhelper_inception"]
    assert fid["kind"] == "per_set" and fid["value"] > 0 and fid["extra"]["n_pairs"] == 2  # the missing pair dropped
    assert all("fid_fidhelper_inception" not in row["values"] for row in r.rows)
    assert r.timings["scoring_s"] > 0 and r.timings["peak_memory_bytes"] > 0


def test_judge_views_kept_for_audit(soft_run):
    row = soft_run.rows[0]
    ex = row["extra"]["msfi_strict_heuristic"]
    assert Path(ex["global_view"]).is_file() and ex["patch_size"] == 512
    assert len(ex["patches"]) == 2  # a 1100 x 620 image has two 512-px cells
    for p in ex["patches"]:
        assert Path(p["view"]).is_file() and set(p["sub"]) == {"NGE", "GA", "TF", "MGC", "SC-local"}
        with Image.open(p["view"]) as im:
            assert im.size == (512, 512) and im.format == "JPEG"
    with Image.open(ex["global_view"]) as im:
        assert max(im.size) == 2048  # the reference upscales the global view to long edge 2048
    ics = row["extra"]["ics_strict_heuristic"]
    assert Path(ics["view"]).is_file() and {"IEV", "AAA", "SRA"} <= set(ics)
    assert ex["prompt_hashes"]["msfi_global"] == soft_run.judge["prompt_hashes"]["msfi_global"]


class _ModelJudge:
    """A judge with a model backend (as an HTTP endpoint would be): fixed answers, the third
    local call fails, and it records what it was sent."""

    backend, model = "vllm", "fake-qwen"

    def __init__(self):
        self.requests = []

    def prompt_for(self, task):
        from curation.vlm import get_task, load_prompt, DEFAULT_PROMPT_DIR

        return load_prompt(DEFAULT_PROMPT_DIR / get_task(task).prompt_file)

    def run(self, reqs):
        from curation.vlm import JudgeResult

        out = []
        for i, r in enumerate(reqs):
            self.requests.append(r)
            answer = {"msfi_global": {"SC-global": 5, "PI": 4, "LC": 4, "CH": 3},
                      "msfi_local": {"NGE": 4, "GA": 4, "TF": 3, "MGC": 5, "SC-local": 4},
                      "ics": {"IEV": 9, "AAA": 8, "SRA": 7}}[r.task]
            failed = r.task == "msfi_local" and i == 2
            out.append(JudgeResult(r.task, r.image_id, "judge_failed" if failed else "ok", None if failed else answer,
                                   "HTTP 503: overloaded" if failed else None, self.model, self.backend, "p",
                                   "h" * 64, 0.0, 1, False, "k"))
        return out


def test_model_judge_keeps_the_published_names_and_records_failures(bench, tmp_path):
    judge = _ModelJudge()
    cfg = BenchConfig(metrics=["msfi_strict", "ics_strict"], judge=judge, mlflow=False, data_root=str(tmp_path))
    r = run_bench(bench["sharp"], bench["prompts"], config=cfg, out_dir=tmp_path / "o")
    assert set(r.metrics) >= {"msfi_strict", "ics_strict"} and "msfi_strict_heuristic" not in r.metrics
    row = r.rows[0]
    ex = row["extra"]["msfi_strict"]
    s_g = (5 * 5 + 3 * 4 + 2 * 4 + 2 * 3) / 12
    s_l = (2 * 4 + 3 * 4 + 5 * 3 + 2 * 5 + 2 * 4) / 14
    assert row["values"]["msfi_strict"] == pytest.approx(s_g + s_g / 5 * s_l)  # the failed patch is left out
    assert ex["complete"] is False and ex["n_valid_patches"] == 1 and "HTTP 503" in ex["judge_failures"][0]
    assert [p["status"] for p in ex["patches"]] == ["ok", "judge_failed"]
    assert row["values"]["ics_strict"] == pytest.approx(math.sqrt(0.9) * (0.6 * 8 + 0.4 * 7))
    assert r.metrics["msfi_strict"]["extra"]["n_complete"] == 0 and r.judge["is_model"] is True
    local = [q for q in judge.requests if q.task == "msfi_local"]
    assert len(local[0].images) == 2 and local[0].images[1] == judge.requests[0].images[0]  # patch, global view
    assert local[0].variables["relative_coords"] == ex["patches"][0]["relative_coords"]
    ics = [q for q in judge.requests if q.task == "ics"]
    assert ics[0].variables["long_caption"] == "a long caption about picture 0"


def test_mlflow_run_has_params_metrics_and_reports(soft_run, bench):
    from mlflow.tracking import MlflowClient

    info = soft_run.mlflow
    assert info["tracking_uri"] == bench["tracking"]
    run = MlflowClient(bench["tracking"]).get_run(info["run_id"])
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert run.info.run_name == "soft" and run.info.status == "FINISHED"
    assert params["protocol.glcm"] == "pixverve-3f9e7bd/glcm-value-entropy/1"
    assert params["protocol.fid"] == "pixverve-3f9e7bd/fid-bilinear-SxS-uint8trunc/1"
    assert params["judge.backend"] == "heuristic" and params["judge.model"] == "uhrforge-heuristic/1"
    assert len(params["prompt_hash.msfi_local"]) == 64 and len(params["prompts_sha256"]) == 64
    assert params["eval_size"] == str(EVAL)
    assert metrics["glcm"] == pytest.approx(soft_run.metrics["glcm"]["value"])
    assert "msfi_strict_heuristic" in metrics and "fid_fidhelper_inception" in metrics
    assert not {"msfi", "ics", "fid", "fid_patch", "aesthetics"} & set(metrics)  # never a number under these
    assert tags["unavailable.fid"].startswith("not available: ")
    arts = {a.path for a in MlflowClient(bench["tracking"]).list_artifacts(info["run_id"], "reports")}
    assert {"reports/scores.json", "reports/per_image.csv", "reports/index.html"} <= arts
    assert str(bench["root"]) in run.info.artifact_uri  # next to the store, not in the CWD


def test_fid_stand_in_is_zero_on_identical_sets(bench):
    from evaluation.metrics import create_metric

    refs = sorted(str(p) for p in bench["ref"].glob("*.png"))
    r = create_metric("fid_fidhelper_inception", size=EVAL).score_set(refs, reference_paths=refs)
    assert abs(r.value) < 1e-6 and r.extra["n_pairs"] == 3
    r = create_metric("fid_fidhelper_inception", size=EVAL).score_set(refs)
    assert r.value is None and r.reason == "not available: no reference set given"


@pytest.mark.slow  # importing torchmetrics alone takes ~12 s on the 2-core machine
def test_torchmetrics_fid_path_matches_the_shared_maths(bench, tmp_path):
    """``fid`` / ``fid_patch`` run torchmetrics' FrechetInceptionDistance; with a small custom
    feature module (the real Inception weights are a download) they must equal the shared
    preprocessing + Frechet maths, and carry another name."""
    import torch

    from evaluation.metrics import create_metric
    from evaluation.metrics.fid_common import frechet_distance, patch_views, whole_view
    from evaluation.metrics.fid_patch import crop_positions

    class Pool(torch.nn.Module):
        def forward(self, x):  # uint8 (N, 3, H, W) -> 12 centred features
            return torch.nn.functional.adaptive_avg_pool2d(x.double() / 255 - 0.5, 2).flatten(1)

    refs = sorted(str(p) for p in bench["ref"].glob("*.png"))
    gens = []
    for i in range(2):  # other photos, darker: a distance well above rounding noise
        gens.append(str(tmp_path / f"g{i}.png"))
        Image.fromarray((_photo(20 + i, 700, 400) * 0.6).astype(np.uint8)).save(gens[-1])
    gens.append(None)  # a missing image drops its pair
    m = create_metric("fid", size=EVAL, feature_module=Pool())
    r = m.score_set(gens, reference_paths=refs)
    assert r.metric == "fid_custom_features" and r.extra["n_pairs"] == 2
    feats = lambda ps: Pool()(torch.from_numpy(np.stack([whole_view(p, EVAL) for p in ps]))).double().numpy()
    assert r.value == pytest.approx(frechet_distance(feats(refs[:2]), feats(gens[:2])), rel=1e-5, abs=1e-9)
    mp = create_metric("fid_patch", size=EVAL, feature_module=Pool())
    rp = mp.score_set(gens, reference_paths=refs)
    pos = crop_positions(2, EVAL)
    crops = lambda ps, keep: np.concatenate([patch_views(p, EVAL, pos[i], 299, keep) for i, p in enumerate(ps)])
    want = frechet_distance(Pool()(torch.from_numpy(crops(refs[:2], False))).double().numpy(),
                            Pool()(torch.from_numpy(crops(gens[:2], True))).double().numpy())
    assert rp.metric == "fid_patch_custom_features" and rp.value == pytest.approx(want, rel=1e-5, abs=1e-9)
    assert not create_metric("fid").availability()[0]  # the real backbone is not here


def test_frechet_distance_and_resize_helpers():
    import torch

    from evaluation.metrics.fid_common import frechet_distance, tf1_bilinear_resize, to_uint8_like_reference

    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(12, 30)), rng.normal(size=(9, 30)) * 1.3 + 0.2
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    eig = np.linalg.eigvals(s1 @ s2).astype(complex)
    full = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).real.sum()
    assert frechet_distance(f1, f2) == pytest.approx(full, rel=1e-6)  # low-rank path (n < d)
    # full-rank path (n >= d): against the formula with scipy's matrix square root ...
    from scipy import linalg

    g1, g2 = rng.normal(size=(60, 5)), rng.normal(size=(50, 5)) @ rng.normal(size=(5, 5)) * 0.7 + 0.3
    m1, m2 = g1.mean(0), g2.mean(0)
    c1, c2 = np.cov(g1, rowvar=False), np.cov(g2, rowvar=False)
    want = float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real))
    assert frechet_distance(g1, g2) == pytest.approx(want, rel=1e-9)
    # ... and by hand in 1-D, where it is (mu1 - mu2)^2 + (sigma1 - sigma2)^2 with unbiased variances:
    # {0, 2, 4}: mean 2, variance 4; {10, 11, 12}: mean 11, variance 1 -> 81 + (2 - 1)^2 = 82
    assert frechet_distance(np.array([[0.0], [2.0], [4.0]]), np.array([[10.0], [11.0], [12.0]])) == \
        pytest.approx(82.0, rel=1e-12)
    assert frechet_distance(g1, g1) == pytest.approx(0.0, abs=1e-9)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).reshape(2, 3, 8, 8)
    y = tf1_bilinear_resize(x, out=4)  # TF1 (asymmetric) mapping: src = 2 * dst, integer positions
    assert torch.equal(y, x[:, :, ::2, ::2].float())
    assert torch.equal(tf1_bilinear_resize(x, out=8), x.float())
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = to_uint8_like_reference(img)
    ref = (torch.from_numpy(img).permute(2, 0, 1).float().div(255) * 255).to(torch.uint8).numpy()
    assert t.shape == (3, 5, 7) and np.array_equal(t, ref)


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------
def _fake(model: str, values: dict, reasons: dict | None = None) -> BenchResult:
    from evaluation.metrics import create_metric

    metrics = {}
    for name, v in values.items():
        m = create_metric(name)
        metrics[name] = {"value": v, "reason": None if v is not None else (reasons or {}).get(name, "not available: x"),
                         "kind": m.kind, "higher_is_better": m.higher_is_better,
                         "protocol_version": m.protocol_version, "extra": {}}
    return BenchResult(model=model, source={"kind": "folder"}, out_dir="/nonexistent", prompts_file="p",
                       prompts_sha256="0" * 64, reference_dir=None, n_prompts=2,
                       rows=[{"status": "ok"}, {"status": "ok"}], metrics=metrics, missing=[], extra_files=[],
                       ambiguous={}, reference_missing=[], judge={}, config={},
                       timings={"scoring_per_image_s": 1.5, "peak_memory_bytes": 3 * 2**20, "memory_kind": "x"})


def test_table3_best_in_bold_per_direction(tmp_path):
    from evaluation.reports import table3, table3_markdown, write_table3

    rs = [
        _fake("A", {"fid": 120.0, "glcm": 0.80, "compression_ratio": 3.0, "aesthetics": None}),
        _fake("B", {"fid": 150.0, "glcm": 1.05, "compression_ratio": 5.0, "aesthetics": None}),
        _fake("C", {"fid": 130.0, "glcm": 0.90, "compression_ratio": 4.0, "aesthetics": None},
              {"aesthetics": "not available: no weights"}),
    ]
    t = table3(rs)
    assert t["metrics"] == ["fid", "aesthetics", "glcm", "compression_ratio"]  # Table 3's order
    assert t["best"]["fid"] == ["A"] and t["best"]["glcm"] == ["B"] and t["best"]["compression_ratio"] == []
    md = table3_markdown(rs)
    lines = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln}
    assert "| FID ↓ |" in md and "GLCM Score ↑" in md and "| Compression ratio |" in md
    assert "**120.000**" in lines["A"] and "<u>130.000</u>" in lines["C"] and "150.000" in lines["B"]
    assert "**1.050**" in lines["B"] and "<u>0.900</u>" in lines["C"]
    assert "**" not in lines["A"].split("|")[6]  # compression ratio: reported, not ranked
    assert "n/a [1]" in lines["A"] and "n/a [2]" in lines["C"]
    assert "1. not available: x" in md and "2. not available: no weights" in md
    assert "1.500" in lines["A"] and "| 2/2 |" in lines["A"]  # latency and images columns
    files = write_table3(rs, tmp_path)
    with open(files["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["A", "B", "C"]
    assert float(rows[1]["glcm"]) == 1.05 and rows[0]["aesthetics"] == "" and rows[2]["aesthetics_reason"]
    assert "<b>120.000</b>" in Path(files["html"]).read_text()


def test_per_image_csv_and_html_written(soft_run):
    files = soft_run.files
    with open(files["per_image_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["stem"] for r in rows] == ["b0", "b1", "b2"] and rows[2]["status"] == "missing"
    assert float(rows[0]["glcm"]) == pytest.approx(soft_run.rows[0]["values"]["glcm"])
    assert "fid" not in rows[0] and "fid_reason" not in rows[0]  # per-set metrics: no per-image column
    assert rows[0]["aesthetics"] == "" and rows[0]["aesthetics_reason"].startswith("not available")
    page = Path(files["html"]).read_text()
    assert "views/b0/msfi_patch_00.jpg" in page and "thumbs/b0.jpg" in page and "heuristic" in page
    assert (Path(soft_run.out_dir) / "thumbs" / "b0.jpg").is_file()


# ---------------------------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------------------------
class _FakePipeline:
    """A diffusers-shaped callable: returns ``.images`` of PIL images, seeded by the generator."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompt, width, height, generator, **kw):
        self.calls.append((prompt, width, height, kw))
        seed = int(generator.initial_seed())
        rgb = _photo(seed, width, height)

        class Out:
            images = [Image.fromarray(rgb)]
        return Out()


def test_generator_generates_then_scores(bench, tmp_path):
    from evaluation.generation import DiffusersPipelineGenerator, ImageGenerator
    from evaluation.reports import cost_columns

    pipe = _FakePipeline()
    gen = DiffusersPipelineGenerator(pipe, name="fake-pipe", call_kwargs={"num_inference_steps": 2})
    assert isinstance(gen, ImageGenerator)
    cfg = BenchConfig(metrics=["glcm"], mlflow=False, width=320, height=192, base_seed=5, data_root=str(tmp_path))
    r = run_bench(gen, bench["prompts"], config=cfg, out_dir=tmp_path / "out")
    assert r.model == "fake-pipe" and r.source["kind"] == "generator" and r.n_images == 3
    assert [c[1:3] for c in pipe.calls] == [(320, 192)] * 3 and pipe.calls[0][3] == {"num_inference_steps": 2}
    assert pipe.calls[1][0] == "a long caption about picture 1"  # the long caption is the prompt
    assert [rec["seed"] for rec in r.generation["records"]] == [5, 6, 7]
    assert r.generation["latency_mean_s"] > 0 and r.generation["peak_memory_bytes"] > 0
    assert cost_columns(r)["measured"].startswith("generation")
    assert r.metrics["glcm"]["value"] is not None and r.metrics["fid"]["reason"] == NOT_SELECTED
    missing = DiffusersPipelineGenerator(model_id="nobody/no-such-model")
    ok, why = missing.availability()
    assert not ok and "no-such-model" in why
    with pytest.raises(RuntimeError, match="not available"):
        run_bench(missing, bench["prompts"], config=cfg)


# ---------------------------------------------------------------------------------------------
# CLI and the asset
# ---------------------------------------------------------------------------------------------
def test_cli_bench_json(bench, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    args = ["bench", str(bench["sharp"]), "--prompts", str(bench["prompts"]), "--out", str(tmp_path / "o"),
            "--metric", "glcm", "--metric", "compression_ratio", "--metric", "msfi", "--judge", "none",
            "--no-mlflow", "--json", "--data-root", str(tmp_path)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["model"] == "sharp" and out["n_images"] == 3 and out["missing"] == []
    assert out["metrics"]["glcm"]["value"] > 0 and out["metrics"]["glcm"]["protocol_version"]
    assert out["metrics"]["msfi"]["value"] is None and out["metrics"]["msfi"]["reason"].startswith("not available")
    assert out["metrics"]["fid"]["reason"] == NOT_SELECTED and out["mlflow"] is None
    assert Path(out["files"]["html"]).is_file() and Path(out["files"]["per_image_csv"]).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(cli, ["bench", str(empty), "--prompts", str(bench["prompts"]), "--metric", "glcm",
                                   "--no-mlflow", "--json", "--out", str(tmp_path / "e")])
    assert res.exit_code == 1 and json.loads(res.output)["n_images"] == 0


def test_bench_asset_materialises_partitions(bench, tmp_path):
    from dagster import AssetKey, DagsterInstance

    from assets.bench import bench_model_partitions, register_bench_models
    from orchestration.bench_resources import BenchSettings
    from orchestration.definitions import build_definitions
    from orchestration.resources import AestheticModels, CurationSettings

    settings = BenchSettings(data_root=str(tmp_path / "data"), bench_root=str(bench["root"] / "models"),
                             prompts_file=str(bench["prompts"]), reference_dir=str(bench["ref"]),
                             mlflow_tracking_uri=bench["tracking"], metrics=["glcm", "compression_ratio", "fid"],
                             judge_backend="none")
    defs = build_definitions({"settings": CurationSettings(data_root=str(tmp_path / "data"), profile="test"),
                              "aesthetics": AestheticModels(), "bench": settings})
    instance = DagsterInstance.ephemeral()
    keys = register_bench_models(instance, settings.bench_root)
    assert keys == ["sharp", "soft"] and instance.get_dynamic_partitions(bench_model_partitions.name) == keys
    job = defs.resolve_job_def("bench_scores_job")
    for k in keys:
        assert job.execute_in_process(partition_key=k, instance=instance).success
    ev = instance.get_latest_materialization_event(AssetKey("bench_scores"))
    mat = ev.asset_materialization
    assert mat.partition == "soft"
    md = mat.metadata
    table = md["table"].value
    assert "| sharp | 620 × 1100 |" in table and "| soft | 620 × 1100 |" in table and "GLCM Score ↑" in table
    assert "**" in table.split("| sharp |")[1].split("\n")[0]  # the unblurred copy has the best GLCM score
    assert md["dagster/row_count"].value == 3 and md["missing"].value == 1 and md["models_in_table"].value == 2
    assert Path(md["table_csv"].value).is_file() and Path(md["table_html"].value).is_file()
    assert Path(md["per_image_html"].value).is_file()
    assert md["unavailable"].value["fid"].startswith("not available")
    assert md["score/glcm"].value > 0 and md["mlflow_run_id"].value
    assert defs.resolve_asset_graph().get(AssetKey("bench_scores")).code_version.startswith("bench-runner/")
