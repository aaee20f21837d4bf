"""Training through Dagster on a real test-profile data root: training_set -> checkpoint (Pipes
subprocess) -> checkpoint_bench; MLflow runs and registered versions, the ledger, reuse, resume,
``uhr train`` / ``uhr gpu-hours``, lineage from a released image to its checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from curation.layout import DataLayout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(materialised, tmp_path_factory):
    from curation.config import load_config
    from curation.release import read_entry
    from orchestration.definitions import build_definitions
    from orchestration.resources import AestheticModels, CurationSettings, MLflowSettings, ObjectStoreResource
    from orchestration.runs import instance_for, run_release_job, run_training_ladder

    cfg = load_config("test")
    data = materialised.copy(tmp_path_factory.mktemp("train_assets") / "data")  # the session's curated pool
    raw = data / "raw"
    store_root = data / "store"
    uri = f"sqlite:///{data / 'mlflow' / 'mlflow.db'}"
    defs = build_definitions({
        "settings": CurationSettings(data_root=str(data), raw_root=str(raw), profile="test"),
        "aesthetics": AestheticModels(),
        "store": ObjectStoreResource(local_root=str(store_root)),
        "mlflow": MLflowSettings(tracking_uri=uri),
    })
    instance = instance_for(data)
    layout = DataLayout.at(data)
    run_release_job(defs, instance, "t1", tag=False, push=False)  # DVC-tracked, as `uhr release` does
    entry = read_entry(layout, "t1")
    iii = run_training_ladder(defs, instance, "III", bench=False, log=lambda *_: None)
    return {"data": data, "layout": layout, "defs": defs, "instance": instance, "entry": entry, "III": iii,
            "uri": uri, "cfg": cfg, "store_root": store_root}


def _mlflow(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def test_training_sets_hold_out_the_bench_split_and_record_the_release(root):
    from curation.release import read_release_manifest
    from curation.stages.final import bench_ids
    from training.data.sets import load_training_set

    layout, entry = root["layout"], root["entry"]
    released = set(read_release_manifest(layout, "t1").column("image_id").to_pylist())
    held = bench_ids(layout)
    assert held and len(released) >= 1
    for tier, side in (("4K", 256), ("8K", 512), ("10K", 640)):
        rows, info = load_training_set(layout, tier)
        ids = {r["image_id"] for r in rows}
        assert ids == released and not ids & held
        assert info["release"]["name"] == "t1" and info["release"]["dvc_md5"] == entry["dvc"]["md5"]
        assert info["release"]["tags"]["uhrforge.release"] == "t1" and not info["unreleased"]
        for r in rows:  # aspect buckets at the tier's budget, on the 16-px token grid
            assert r["bucket_h"] % 16 == 0 and r["bucket_w"] % 16 == 0
            assert abs(r["bucket_h"] * r["bucket_w"] / side**2 - 1) < 0.15
            assert Path(r["path"]).is_file() and r["caption"]


def test_the_ladder_chains_checkpoints_and_writes_safetensors_only(root):
    from training.schemes.pixel import TinyPatchDiffusion

    iii = {r["tier"]: r for r in root["III"]}
    assert list(iii) == ["4K", "8K", "10K"]
    assert iii["4K"]["parent_fingerprint"] is None and iii["4K"]["init_from"] == "base"
    assert iii["8K"]["parent_fingerprint"] == iii["4K"]["fingerprint"]
    assert iii["10K"]["parent_fingerprint"] == iii["8K"]["fingerprint"] and iii["10K"]["init_from"] == "8K@1"
    assert "III/8K/epoch-1" in iii["8K"]["checkpoints"]  # the mark 10K starts from
    data = root["data"]
    for r in iii.values():
        run_dir = data / r["run_dir"]
        suffixes = {p.suffix for p in run_dir.rglob("*") if p.is_file()}
        assert suffixes <= {".safetensors", ".json", ".jsonl"}, suffixes  # never a pickle
        assert r["steps"] == 2 and r["samples"] == 2 and math.isfinite(r["last_loss"])
        m = TinyPatchDiffusion.from_pretrained(data / r["weights"])
        assert m.config.patch_size == {"4K": 4, "8K": 8, "10K": 20}[r["tier"]]


def test_mlflow_runs_and_registered_versions(root):
    client = _mlflow(root["uri"])
    iii = {r["tier"]: r for r in root["III"]}
    for tier, r in iii.items():
        run = client.get_run(r["mlflow"]["run_id"])
        tags = run.data.tags
        assert tags["uhrforge.scheme"] == "III" and tags["uhrforge.tier"] == tier
        assert tags["uhrforge.release"] == "t1" and tags["uhrforge.dvc_md5"] == root["entry"]["dvc"]["md5"]
        assert tags["uhrforge.backbone"].startswith("tiny") and tags["uhrforge.fingerprint"] == r["fingerprint"]
        assert run.data.params["training_set_version"] == r["training_set"]["version"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1]
        mv = client.get_model_version("uhrforge-III", r["registered_model"]["version"])
        assert mv.run_id == run.info.run_id and mv.tags["uhrforge.checkpoint_run"] == run.info.run_id
        assert mv.source.endswith("/weights")
    assert client.get_run(iii["8K"]["mlflow"]["run_id"]).data.tags["uhrforge.parent_checkpoint_run"] == \
        iii["4K"]["mlflow"]["run_id"]
    alias = client.get_model_version_by_alias("uhrforge-III", "tier-10K")
    assert str(alias.version) == str(iii["10K"]["registered_model"]["version"])
    # the weights folder was logged: the registered source holds the safetensors
    local = client.download_artifacts(iii["4K"]["mlflow"]["run_id"], "weights", str(root["data"] / "dl"))
    assert any(p.suffix == ".safetensors" for p in Path(local).iterdir())


def test_ledger_rows_are_cpu_hours_and_gpu_hours_json_lays_out_table_a1(root):
    from cli.main import cli
    from training import ledger
    from training.run import ledger_path

    rows = ledger.read(ledger_path(root["layout"]))
    iii = [r for r in rows if r.scheme == "III"]
    assert {r.tier for r in iii} == {"4K", "8K", "10K"}
    for r in iii:
        assert r.gpu_hours is None and r.cpu_hours == pytest.approx(r.wall_clock_s / 3600)
    out = CliRunner().invoke(cli, ["gpu-hours", "--data-root", str(root["data"]), "--profile", "test", "--json",
                                   "--forecast"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    table = [r for r in doc["rows"] if r["scheme"]]
    assert [(r["scheme"], r["tier"]) for r in table] == [
        ("I_full", "4K"), ("I_full", "8K"), ("I_lora", "4K"), ("I_lora", "8K"), ("I_lora", "10K"), ("II", "4K"),
        ("III", "4K"), ("III", "8K"), ("III", "10K")]
    for r in table:
        assert set(r) >= {"scheme", "tier", "epochs", "device", "device_count", "wall_s", "gpu_hours", "cpu_hours",
                          "paper_epochs", "paper_gpu_hours"}
        ran = r["scheme"] == "III" or r["wall_s"] is not None
        assert r["gpu_hours"] is None  # CPU runs never count as GPU hours
        if r["scheme"] == "III":
            assert r["cpu_hours"] > 0 and r["wall_s"] > 0
        assert ran or r["cpu_hours"] is None
    assert {r["paper_gpu_hours"] for r in table if r["scheme"] == "III"} == {8448, 18432, 23040}
    text = CliRunner().invoke(cli, ["gpu-hours", "--data-root", str(root["data"]), "--profile", "test"]).output
    iii_lines = [ln for ln in text.splitlines() if ln.startswith("| L2P-III |")]
    assert len(iii_lines) == 3 and all("CPU" in ln for ln in iii_lines) and "| 8448 |" in iii_lines[0]
    stages = {r["stage"]: r for r in doc["rows"] if not r["scheme"]}
    assert stages["corpus_100mp"]["images"] > 0 and stages["corpus_100mp"]["cpu_hours"] > 0  # the GPU-pool stages
    assert "captions" in stages
    fc = {(f["scheme"], f["tier"]): f for f in doc["forecast"]}
    r4 = next(r for r in iii if r.tier == "4K")
    assert fc[("III", "4K")]["device_hours"] == pytest.approx(95735 * 4.3 * r4.device_seconds_per_sample / 3600,
                                                              rel=0.5)


def test_rerun_reuses_every_checkpoint(root):
    from orchestration.runs import run_training_ladder
    from training import ledger
    from training.run import ledger_path

    n = len(ledger.read(ledger_path(root["layout"])))
    again = run_training_ladder(root["defs"], root["instance"], "III", bench=False, log=lambda *_: None)
    assert [r["fingerprint"] for r in again] == [r["fingerprint"] for r in root["III"]]
    assert len(ledger.read(ledger_path(root["layout"]))) == n  # nothing trained, nothing billed


def test_a_stage_needs_its_init_tier_and_resumes_a_killed_run(root, monkeypatch):
    from orchestration.runs import run_training_ladder
    from training import run as R
    from training.trainer import train_stage

    with pytest.raises(RuntimeError, match="I-Full_4K, which has not been trained"):
        run_training_ladder(root["defs"], root["instance"], "I-Full", ["8K"], bench=False, log=lambda *_: None)
    # a run killed after one step: its folder holds step 1; the next run resumes there
    layout, cfg = root["layout"], root["cfg"]
    from training.data.sets import load_training_set

    rows, info = load_training_set(layout, "4K")
    stage = R._stage(cfg, "I_lora", "4K")
    fp = R.fingerprint(cfg, stage, info, None, "tiny", 2)
    out = R.stage_dir(layout, "I_lora", "4K") / fp
    train_stage(cfg, "I_lora", "4K", rows, out, max_steps=1, checkpoint_every=1, export=False)
    rep = R.run_checkpoint(root["data"], "I-LoRA", "4K", profile="test", tracking_uri=root["uri"],
                           log=lambda *_: None)
    assert rep["fingerprint"] == fp and rep["resumed_from_step"] == 1 and rep["steps"] == 2
    assert rep["weights_format"] == "lora" and rep["latents"]["latent_cache_misses"] == 0  # precomputed


def test_a_checkpoint_on_the_bench_and_in_the_lineage_of_its_images(root):
    from curation.lineage.core import LineageContext, lineage
    from curation.release import read_release_manifest
    from orchestration.runs import run_training_ladder

    out = run_training_ladder(root["defs"], root["instance"], "III", ["4K"], bench=True, log=lambda *_: None)
    rep = out[0]
    assert rep["reused"] and rep["bench_model"] == f"ckpt-III-4K-{rep['fingerprint'][:8]}"
    scores = rep["bench_scores"]
    assert scores and all(math.isfinite(v) for v in scores.values()), rep
    client = _mlflow(root["uri"])
    bench_run = client.get_run(rep["bench_run"])
    ckpt_run = rep["mlflow"]["run_id"]
    assert bench_run.data.tags["uhrforge.checkpoint_run"] == ckpt_run
    assert bench_run.data.tags["uhrforge.scheme"] == "III" and bench_run.data.tags["uhrforge.tier"] == "4K"
    # the generated images exist at the tier's side, one per bench prompt
    from curation.stages.final import bench_ids

    settings = root["defs"].resources["bench"]
    folder = Path(settings.model_dir(rep["bench_model"]))
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == len(bench_ids(root["layout"]))
    from PIL import Image

    assert all(Image.open(p).size == (256, 256) for p in pngs)
    # lineage: a released image lists the checkpoints trained on its release and their bench runs
    image_id = read_release_manifest(root["layout"], "t1").column("image_id").to_pylist()[0]
    lin = lineage(LineageContext(root["layout"], tracking_uri=root["uri"]), image_id)
    links = [lk for lk in lin.links if lk.stage == "checkpoints"]
    by_run = {lk.details["run_id"]: lk for lk in links}
    assert {r["mlflow"]["run_id"] for r in root["III"]} <= set(by_run)
    assert by_run[ckpt_run].details["bench_runs"] == [rep["bench_run"]]
    assert rep["bench_run"] not in by_run  # a bench run is not a checkpoint


def test_two_data_parallel_processes_through_torchrun(root):
    """The launcher with 2 processes per node: torchrun, CPU DDP (gloo), rank 0 reports once."""
    from orchestration.definitions import build_definitions
    from orchestration.runs import run_training_ladder
    from orchestration.training_launch import TrainingLauncher
    from training import ledger
    from training.run import ledger_path

    defs = build_definitions({**root["defs"].resources, "training_launcher": TrainingLauncher(procs_per_node=2)})
    n = len(ledger.read(ledger_path(root["layout"])))
    rep = run_training_ladder(defs, root["instance"], "I-LoRA", ["10K"], bench=False, log=lambda *_: None)[0]
    assert rep["world_size"] == 2 and rep["device_count"] == 2 and rep["steps"] == 2
    assert rep["samples"] == 4  # two global batches of one sample per rank
    rows = ledger.read(ledger_path(root["layout"]))
    assert len(rows) == n + 1 and rows[-1].device_count == 2  # one row, device-hours count both processes
    assert rows[-1].cpu_hours == pytest.approx(2 * rows[-1].wall_clock_s / 3600)
    client = _mlflow(root["uri"])
    runs = client.search_runs([client.get_experiment_by_name("uhrforge-training").experiment_id],
                              filter_string=f"tags.`uhrforge.fingerprint` = '{rep['fingerprint']}'")
    assert len(runs) == 1  # only global rank 0 logged


def test_a_failing_training_process_reports_its_reason(root):
    from orchestration.runs import run_training_ladder

    with pytest.raises(RuntimeError, match=r"checkpoint\[III_4K\] failed: .*Error: .*no-such-backbone"):
        run_training_ladder(root["defs"], root["instance"], "III", ["4K"], backbone="/no-such-backbone", bench=False,
                            log=lambda *_: None)
