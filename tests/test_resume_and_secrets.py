"""Two README claims proven on real ``uhr`` processes, not simulated in-process.

* **A killed run resumes.** ``uhr materialize`` (the CLI, in its own process group) is killed with
  SIGKILL while it decodes the first shard's images; ``uhr materialize`` run again decodes exactly
  the images the killed run had not cached (the per-stage counts it prints, the cache files and
  thumbnails the killed run wrote are left untouched), and every manifest equals the one the
  session's clean run (``materialised`` in conftest, the same raw pool) wrote.
* **Secrets are never recorded.** With planted credentials in the environment (the S3 keys, the
  VLM API key -- which the local VLM server then requires on every request --, a Hugging Face
  token, the Postgres and MLflow passwords), ``uhr materialize`` (VLM judges and captions over
  HTTP) and ``uhr bench`` (VLM judge, MLflow run) run; no secret appears in their output, in any
  manifest, cache, Dagster run, event or compute log under the data root, or in MLflow's runs
  (tags, params, metrics) and artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

UHR = str(Path(sys.executable).parent / "uhr")

#: the killed run: the ``uhr`` CLI itself (``cli.main``), with a pause before every image decode so
#: that the kill lands mid-shard (the re-run is the unmodified ``uhr`` executable)
SLOW_UHR = """
import sys, time
import curation.purify as purify

_score_one = purify.score_one


def score_one(*args, **kwargs):
    time.sleep(0.25)
    return _score_one(*args, **kwargs)


purify.score_one = score_one
from cli.main import cli

cli(sys.argv[1:], prog_name="uhr")
"""


def _env(**extra: str) -> dict:
    """This environment without any platform setting (no store, MLflow, VLM, Postgres from the caller)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UHR_", "DAGSTER_", "MLFLOW_", "AWS_", "VLLM_", "HF_TOKEN"))}
    env.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


def _table(path: Path):
    """A manifest's rows without its wall-clock columns."""
    t = pq.read_table(path)
    return t.drop_columns([c for c in t.column_names if c == "seconds" or c.endswith("_seconds")])


def _passed_ids(layout, stage: str, shard: str) -> list[str]:
    return [r["image_id"] for r in pq.read_table(layout.manifest(stage, shard)).to_pylist() if r["passed"]]


def test_a_killed_uhr_materialize_resumes_decoding_only_uncached_images(materialised, tmp_path):
    from curation.layout import DataLayout
    from curation.stages.fingerprint import fingerprints
    from curation.stages.table import STAGES

    clean = materialised.layout
    shards = materialised.out["shards"]
    first = shards[0]
    data = tmp_path / "data"
    shutil.copytree(materialised.raw, data / "raw")  # the same pool, at the same place in its data root
    layout = DataLayout.at(data)
    cache = layout.cache("image_scores", fingerprints(materialised.cfg)["image_scores"])
    args = ["materialize", "--data-root", str(data), "--raw-root", str(data / "raw"), "--profile", "test"]
    env = _env()
    log = open(tmp_path / "killed.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_UHR, *args], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and len(list(cache.glob("*.json"))) < 4:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed: " + (tmp_path / "killed.log").read_text()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, mid-shard
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    in_first = _passed_ids(clean, "raw_pool", first)  # the images image_scores decodes in that shard
    cached = {p.stem: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.glob("*.json")}
    thumbs = {i: layout.thumb(i).stat().st_mtime_ns for i in cached if layout.thumb(i).exists()}
    assert 0 < len(cached) < len(in_first) and set(cached) <= set(in_first), (len(cached), len(in_first))
    assert layout.manifest("raw_pool", first).exists()  # committed before the kill ...
    assert not layout.manifest("image_scores", first).exists()  # ... the shard being decoded was not

    # the killed run is left STARTED by the kill, tagged with the process that ran it
    from dagster import DagsterInstance, DagsterRunStatus

    from orchestration.runs import WORKER_TAG

    def started_runs():
        with DagsterInstance.from_config(str(data / "dagster_home")) as inst:
            return [r.dagster_run for r in inst.get_run_records() if r.dagster_run.status == DagsterRunStatus.STARTED]

    (killed,) = started_runs()
    assert killed.tags[WORKER_TAG].split(":")[1] == str(proc.pid), killed.tags

    res = subprocess.run([UHR, *args, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # ... and the re-run marked it failed (issue 15: no run stays STARTED after its worker died)
    assert started_runs() == []
    with DagsterInstance.from_config(str(data / "dagster_home")) as inst:
        assert inst.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
    counts = {s["stage"]: s for s in json.loads(res.stdout.strip().splitlines()[-1])["stages"]}
    n_decoded = sum(len(_passed_ids(clean, "raw_pool", s)) for s in shards)
    # the re-run decoded exactly the images the killed run had not cached, in every shard
    assert counts["image_scores"]["computed"] == n_decoded - len(cached), counts["image_scores"]
    assert counts["image_scores"]["reused"] == len(cached)
    for i, (mtime, body) in cached.items():  # a decoded image rewrites its cache entry and thumbnail
        p = cache / f"{i}.json"
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == body, i
    assert all(layout.thumb(i).stat().st_mtime_ns == m for i, m in thumbs.items())
    assert len(list(cache.glob("*.json"))) == n_decoded
    # and what it wrote is what an uninterrupted run writes
    compared = 0
    for stage in STAGES.names():
        if not STAGES[stage].partitioned:
            continue
        for shard in shards:
            a, b = _table(layout.manifest(stage, shard)), _table(clean.manifest(stage, shard))
            assert a.column_names == b.column_names, (stage, shard)
            assert a.equals(b), (stage, shard, [c for c in a.column_names if not a.column(c).equals(b.column(c))])
            compared += 1
    assert compared == len(shards) * sum(STAGES[s].partitioned for s in STAGES.names())
    got = json.loads((layout.thresholds_dir() / "latest.json").read_text())
    want = json.loads((clean.thresholds_dir() / "latest.json").read_text())
    assert got["version"] == want["version"] and got["entropy"] == want["entropy"]


#: planted in the environment of both commands; none may be recorded anywhere
SECRETS = {
    "UHR_S3_ACCESS_KEY": "AKIAPLANTEDACCESS7731",
    "UHR_S3_SECRET_KEY": "planted-s3-secret-4f0c9e11",
    "VLLM_API_KEY": "planted-vlm-api-key-b81d2a70",
    "HF_TOKEN": "hf_plantedtoken5e77c1d9",
    "DAGSTER_PG_PASSWORD": "planted-pg-password-0d3b5c",
    "MLFLOW_TRACKING_PASSWORD": "planted-mlflow-password-9a64",
}


def _scan(blob: bytes | str, where: str, hits: list) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for name, secret in SECRETS.items():
        if secret.encode() in data:
            hits.append(f"{name} in {where}")


def _scan_tree(root: Path, hits: list) -> dict:
    """Every file under ``root`` as bytes (sqlite databases, logs, JSON, images...), and every
    parquet file decoded as well (its pages may be compressed); returns files seen per kind."""
    seen = {"files": 0, "parquet": 0, "compute_logs": 0, "dagster_dbs": 0, "sqlite": 0}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        seen["files"] += 1
        _scan(p.read_bytes(), str(p), hits)
        if p.suffix == ".parquet":
            t = pq.read_table(p)
            _scan(json.dumps(t.to_pylist(), default=str) + repr(t.schema.metadata), f"{p} (decoded)", hits)
            seen["parquet"] += 1
        if p.parent.name == "compute_logs":
            seen["compute_logs"] += 1
        if p.suffix == ".db":
            seen["sqlite"] += 1
            seen["dagster_dbs"] += "dagster_home" in p.parts
    return seen


def _bench_inputs(root: Path) -> tuple[Path, Path]:
    from PIL import Image

    from curation.synth import generate_photo

    model = root / "bench_model"
    model.mkdir(parents=True)
    prompts = root / "benchmark.jsonl"
    with open(prompts, "w") as f:
        for i in range(2):
            Image.fromarray(generate_photo(1100, 620, 40 + i)).save(model / f"b{i}.png")
            f.write(json.dumps({"file_name": f"b{i}.jpg", "short_caption": f"short {i}",
                                "long_caption": f"a long caption about picture {i}"}) + "\n")
    return model, prompts


def test_planted_secrets_are_recorded_nowhere(materialised, tmp_path, monkeypatch):
    import vlm_server
    from dagster import DagsterInstance
    from mlflow.tracking import MlflowClient
    from test_captions_stage import answer

    from curation.config import load_config

    real_validate = vlm_server.validate_body
    # one local server stands in for every VLM use (each asks for its own model name)
    monkeypatch.setattr(vlm_server, "validate_body",
                        lambda body, served: real_validate(body, body.get("model") if isinstance(body, dict) else served))
    data = tmp_path / "data"
    shutil.copytree(materialised.raw / "shard-00000", data / "raw" / "shard-00000")
    uri = f"sqlite:///{data / 'mlflow' / 'mlflow.db'}"
    hits: list[str] = []
    with vlm_server.VLMTestServer(api_key=SECRETS["VLLM_API_KEY"], lifetime_s=800) as server:
        server.default = answer
        env = _env(**SECRETS, UHR_VLM_ENDPOINT=server.base_url, UHR_VLM_API_KEY_ENV="VLLM_API_KEY",
                   MLFLOW_TRACKING_URI=uri, UHR_PROFILE="test")
        cur = subprocess.run([UHR, "materialize", "--data-root", str(data), "--raw-root", str(data / "raw"),
                              "--profile", "test", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert cur.returncode == 0, cur.stdout[-3000:] + cur.stderr[-3000:]
        model, prompts = _bench_inputs(tmp_path)
        bench = subprocess.run([UHR, "bench", str(model), "--prompts", str(prompts), "--metric", "msfi_strict",
                                "--metric", "glcm", "--judge", "vllm", "--data-root", str(data), "--json"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
        requests = list(server.requests)
        n_requests = server.n_requests
    # the VLM key was in use: every request carried it (a request without it is answered 401 and
    # not recorded), for the corpus judge, the captions and the bench judge
    cfg = load_config("test")
    assert requests and len(requests) == n_requests
    auth = [{k.lower(): v for k, v in r["headers"].items()}.get("authorization") for r in requests]
    assert set(auth) == {f"Bearer {SECRETS['VLLM_API_KEY']}"}, set(auth)
    models = {r["body"]["model"] for r in requests}
    assert {cfg.get("judges.corpus.model"), cfg.get("judges.captions.model"), cfg.get("judges.bench.model")} <= models
    out = json.loads(bench.stdout.strip().splitlines()[-1])
    assert out["metrics"]["msfi_strict"]["value"] is not None and out["mlflow"]["run_id"]

    # CLI output
    for name, proc in (("uhr materialize", cur), ("uhr bench", bench)):
        _scan(proc.stdout, f"{name} stdout", hits)
        _scan(proc.stderr, f"{name} stderr", hits)
    # everything under the data root: manifests, caches, the VLM answer cache, Dagster's runs,
    # event logs and compute logs, the MLflow store and its artifacts, bench reports
    seen = _scan_tree(data, hits)
    from curation.stages.table import STAGES

    n_manifests = sum(STAGES[s].partitioned for s in STAGES.names())  # one shard
    assert seen["parquet"] >= n_manifests and seen["compute_logs"] > 0 and seen["dagster_dbs"] >= 3, seen
    # Dagster through its API: run tags and configs, every event of every run
    instance = DagsterInstance.from_config(str(data / "dagster_home"))
    try:
        runs = instance.get_runs()
        assert runs
        for run in runs:
            _scan(json.dumps({"tags": run.tags, "config": run.run_config}, default=str), f"run {run.run_id}", hits)
            for ev in instance.all_logs(run.run_id):
                _scan(repr(ev), f"event of run {run.run_id}", hits)
    finally:
        instance.dispose()
    # MLflow through its API: every run's tags, params and metric names, every artifact
    client = MlflowClient(uri)
    mlruns = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert mlruns
    for r in mlruns:
        _scan(json.dumps({"tags": r.data.tags, "params": r.data.params, "metrics": list(r.data.metrics),
                          "name": r.info.run_name}), f"mlflow run {r.info.run_id}", hits)
        dst = tmp_path / "artifacts" / r.info.run_id
        dst.mkdir(parents=True)
        local = Path(client.download_artifacts(r.info.run_id, "", str(dst)))
        assert any(p.is_file() for p in local.rglob("*"))
        _scan_tree(local, hits)
    assert not hits, hits
