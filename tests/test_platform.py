"""Platform contract, checked without a Docker engine, a cluster or any network.

* the object store (local folder; S3 client construction) and its key layout, blob integrity;
* resources from the environment: secrets only through ``EnvVar``, never in repr or metadata;
* ``docker-compose.yml`` parses and names every service the code expects, secrets only by reference;
* ``infra/k8s/values.yaml`` (Dagster Helm chart): user deployment, K8sRunLauncher, GPU step config;
* ``infra/dagster/*.yaml`` are valid instance configs, Postgres settings from env vars only;
* every instance config (those yamls, the Helm values, the ``dagster.yaml`` uhr writes) limits the
  ingest tag to 1 run and the scores tag to :data:`~orchestration.automation.SCORES_RUN_LIMIT`, and
  the run queue then starts scores runs of two shards at once but never two ingest runs;
* Definitions load with the production resources and the k8s job executor.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from curation.store import (
    BlobIntegrityError,
    LocalStore,
    ObjectNotFound,
    S3Store,
    blob_key,
    ensure_local,
    get_blob,
    list_raw_shards,
    manifest_key,
    publish_blobs,
    put_blob,
    raw_shard_status,
    restore_sources,
    sha256_file,
    upload_shard,
    download_shard,
    verify_blob,
)

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-value-never-shown"
PG_SECRET = "pg-s3cr3t-never-shown"

PROD_ENV = {
    "UHR_S3_ENDPOINT": "http://minio.invalid:9000",
    "UHR_S3_BUCKET": "uhrforge",
    "UHR_S3_ACCESS_KEY": "access-key-id",
    "UHR_S3_SECRET_KEY": SECRET,
    "UHR_S3_RAW_PREFIX": "raw",
    "MLFLOW_TRACKING_URI": "http://mlflow.invalid:5000",
    "UHR_VLM_ENDPOINT": "http://vllm.invalid:8000/v1",
    "UHR_DVC_REMOTE": "s3://uhrforge/dvc",
    "DAGSTER_PG_HOST": "postgres.invalid",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": PG_SECRET,
    "DAGSTER_PG_DB": "dagster",
    "UHR_EXECUTOR": "k8s",
}


# -- object store -----------------------------------------------------------------------------

def test_keys_are_content_addressed_and_per_stage():
    sha = "ab" + "0" * 62
    assert blob_key(sha) == f"blobs/ab/{sha}"
    assert manifest_key("raw_pool", "shard-00001") == "manifests/raw_pool/shard-00001.parquet"
    with pytest.raises(ValueError):
        blob_key("not-a-hash")


def test_local_store_roundtrip_list_stat_and_blob_integrity(tmp_path):
    store = LocalStore(tmp_path / "store")
    f = tmp_path / "img.bin"
    f.write_bytes(b"pixels" * 1000)
    sha = sha256_file(f)
    key, uploaded = put_blob(store, f)
    assert key == blob_key(sha) and uploaded
    assert put_blob(store, f) == (key, False)  # content-addressed: stored once
    info = store.stat(key)
    assert info.size == f.stat().st_size and info.etag and info.metadata == {"sha256": sha}
    assert store.exists(key) and not store.exists("blobs/00/missing")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("manifests/none.parquet")
    out = get_blob(store, sha, tmp_path / "out" / "img.bin")
    assert out.read_bytes() == f.read_bytes() and verify_blob(store, sha)
    # a corrupted blob is refused and nothing is written at the destination
    (tmp_path / "store" / key).write_bytes(b"tampered")
    assert not verify_blob(store, sha)
    with pytest.raises(BlobIntegrityError):
        get_blob(store, sha, tmp_path / "bad" / "img.bin")
    assert not (tmp_path / "bad" / "img.bin").exists()
    store.put_bytes("manifests/raw_pool/shard-1.parquet", b"x")
    assert store.list("manifests/") == ["manifests/raw_pool/shard-1.parquet"]
    assert not any(k.startswith(".meta") for k in store.list(""))


def test_raw_shards_upload_list_download_and_restore(tmp_path):
    store = LocalStore(tmp_path / "store")
    shard = tmp_path / "raw" / "shard-00003"
    shard.mkdir(parents=True)
    (shard / "a.jpg").write_bytes(b"A" * 100)
    (shard / "a.json").write_text('{"licence": "cc-by"}')
    lone_json = tmp_path / "raw" / "shard-00004"
    lone_json.mkdir()
    (lone_json / "x.json").write_text("{}")
    assert upload_shard(store, shard) == 2
    upload_shard(store, lone_json)
    # a.json is a.jpg's sidecar (no row); a lone x.json is an input like any file (issue 15: every
    # entry gets a row, decoded by content), so shard-00004 is a shard
    assert list_raw_shards(store) == ["shard-00003", "shard-00004"]
    assert raw_shard_status(store)["shard-00003"]["files"] == 1
    assert raw_shard_status(store)["shard-00004"]["files"] == 1
    got = download_shard(store, "shard-00003", tmp_path / "worker")
    assert got["files"] == 2 and (tmp_path / "worker" / "shard-00003" / "a.json").exists()
    assert download_shard(store, "shard-00003", tmp_path / "worker")["downloaded"] == 0
    # blobs of passed rows, restored at the recorded path on a worker that lacks them
    rows = [{"sha256": sha256_file(shard / "a.jpg"), "source_path": str(shard / "a.jpg"), "passed": True},
            {"sha256": sha256_file(shard / "a.json"), "source_path": str(shard / "a.json"), "passed": False}]
    assert publish_blobs(store, rows)["uploaded"] == 1
    (shard / "a.jpg").unlink()
    assert restore_sources(store, rows) == {"restored": 1, "present": 0}
    assert (shard / "a.jpg").read_bytes() == b"A" * 100


def test_ensure_local_refreshes_a_stale_copy(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put_bytes("manifests/x/s.parquet", b"new contents")
    dest = tmp_path / "data" / "s.parquet"
    dest.parent.mkdir()
    dest.write_bytes(b"old contents")
    assert ensure_local(store, "manifests/x/s.parquet", dest, refresh=False) and dest.read_bytes() == b"old contents"
    assert ensure_local(store, "manifests/x/s.parquet", dest, refresh=True) and dest.read_bytes() == b"new contents"
    assert ensure_local(store, "manifests/x/none.parquet", tmp_path / "none") is False


def test_store_resource_local_default_and_s3_without_secrets_in_repr(tmp_path, monkeypatch):
    from orchestration.resources import platform_resources_from_env

    local = platform_resources_from_env({})["store"].store_or_default(tmp_path)
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "store").resolve()
    env = {"UHR_S3_ENDPOINT": "https://s3.invalid:9000", "UHR_S3_BUCKET": "b", "UHR_S3_PREFIX": "p/q",
           "UHR_S3_ACCESS_KEY": "AKIA-visible-id", "UHR_S3_SECRET_KEY": SECRET}
    for k, v in env.items():  # the keys are EnvVars, resolved from the process environment
        monkeypatch.setenv(k, v)
    s3 = platform_resources_from_env(env)["store"].get_store()
    assert isinstance(s3, S3Store) and s3.secure and s3.url("blobs/x") == "s3://b/p/q/blobs/x"
    text = repr(s3) + str(s3.describe()) + json.dumps(s3.describe())
    assert SECRET not in text and "AKIA-visible-id" not in text
    assert s3.describe() == {"kind": "s3", "endpoint": "https://s3.invalid:9000", "bucket": "b", "prefix": "p/q/"}


# -- resources ----------------------------------------------------------------------------------

def test_resources_take_secrets_from_env_vars_only(monkeypatch):
    from dagster import EnvVar

    from orchestration.resources import resources_from_env

    for k, v in PROD_ENV.items():
        monkeypatch.setenv(k, v)
    res = resources_from_env()
    store, pg = res["store"], res["postgres"]
    assert isinstance(store.secret_key, EnvVar) and isinstance(store.access_key, EnvVar)
    assert isinstance(pg.password, EnvVar)
    text = " ".join(repr(r) + str(r) for r in res.values())
    assert SECRET not in text and PG_SECRET not in text
    assert store.raw_prefix == "raw" and store.enabled
    assert SECRET not in json.dumps(store.describe())
    assert pg.masked_url() == "postgresql://dagster:***@postgres.invalid:5432/dagster"
    assert PG_SECRET in pg.url()  # only the driver-facing URL carries it
    assert res["mlflow"].uri() == "http://mlflow.invalid:5000"
    assert res["vlm"].endpoint == PROD_ENV["UHR_VLM_ENDPOINT"]
    assert res["vlm"].client_config(res["settings"].config(), "corpus")["endpoint"] == PROD_ENV["UHR_VLM_ENDPOINT"]
    assert res["dvc"].endpoint_url == "http://minio.invalid:9000" and res["dvc"].env({})["AWS_ENDPOINT_URL"]


def test_resources_default_to_local_without_env(monkeypatch, tmp_path):
    from orchestration.resources import resources_from_env

    for k in list(PROD_ENV) + ["UHR_STORE_ROOT", "UHR_VLM_API_KEY_ENV"]:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("UHR_DATA_ROOT", str(tmp_path))
    res = resources_from_env()
    assert not res["store"].enabled and res["store"].prepare(res["settings"], "raw_pool", "s") == {}
    assert res["mlflow"].uri().startswith("sqlite:///")
    assert res["vlm"].endpoint is None and res["vlm"].client_config(res["settings"].config(), "corpus")["endpoint"] is None
    assert not res["postgres"].enabled


# -- docker compose -----------------------------------------------------------------------------

def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _interpolate(value: str, env: dict) -> str:
    """docker compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$`` rules."""
    def sub(m):
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if op == ":?" and not env.get(name):
            raise KeyError(f"{name}: {arg}")
        if op == ":-" and not env.get(name):
            return arg
        return env.get(name, "")

    value = value.replace("$$", "\0")
    value = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}", sub, value)
    return value.replace("\0", "$")


def test_compose_names_every_service_the_code_expects():
    from orchestration.platform import CODE_LOCATION_ENV, COMPOSE_SERVICES

    services = _compose()["services"]
    assert set(COMPOSE_SERVICES) <= set(services)
    vllm = services["vllm"]
    assert vllm["profiles"] == ["gpu"] and vllm["image"].startswith("vllm/vllm-openai")
    assert "--served-model-name" in vllm["command"]
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for name in ("code", "webserver", "daemon"):
        env = services[name]["environment"]
        assert set(CODE_LOCATION_ENV) <= set(env), (name, set(CODE_LOCATION_ENV) - set(env))
    assert "code-server start" in services["code"]["command"] and "orchestration.definitions" in services["code"]["command"]
    assert "mlflow server" in " ".join(services["mlflow"]["command"])
    assert "s3://mlflow/" in " ".join(services["mlflow"]["command"])
    assert services["minio"]["image"].startswith("minio/minio")
    assert services["postgres"]["image"].startswith("postgres:")
    # every mounted file and the Dockerfile exist
    for svc in services.values():
        for vol in svc.get("volumes", []) or []:
            src = vol.split(":")[0]
            if src.startswith("./infra"):
                assert (ROOT / src).exists(), src
        build = svc.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).exists()
    ws = yaml.safe_load((ROOT / "infra/docker/workspace.yaml").read_text())
    assert ws["load_from"][0]["grpc_server"] == {"host": "code", "port": 4000, "location_name": "uhrforge"}
    # ports only on the loopback interface
    for name, svc in services.items():
        for port in svc.get("ports", []) or []:
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_compose_has_no_inline_secrets_and_requires_them():
    from orchestration.platform import SECRET_ENV

    text = (ROOT / "docker-compose.yml").read_text()
    secretish = re.compile(r"(PASSWORD|SECRET|ACCESS_KEY|TOKEN|API_KEY)$")

    def walk(node, path=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, path + (str(k),))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, path + (str(i),))
        else:
            yield path, node

    for path, value in walk(_compose()):
        if secretish.search(path[-1]) and not path[-1].endswith("_ENV"):
            assert isinstance(value, str) and value.startswith("${"), (path, value)
    for name in ("DAGSTER_PG_PASSWORD", "UHR_S3_ACCESS_KEY", "UHR_S3_SECRET_KEY"):
        assert f"${{{name}:?" in text and name in SECRET_ENV
    # interpolation: a missing required secret stops compose; with the env set everything resolves
    env = {k: "x" for k in ("DAGSTER_PG_PASSWORD", "UHR_S3_ACCESS_KEY", "UHR_S3_SECRET_KEY", "VLLM_API_KEY")}
    for _, value in walk(_compose()):
        if isinstance(value, str):
            _interpolate(value, env)
    with pytest.raises(KeyError, match="DAGSTER_PG_PASSWORD"):
        _interpolate(_compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"], {})


# -- Dagster instance yaml ------------------------------------------------------------------------

def test_instance_yamls_are_valid_and_postgres_comes_from_env(tmp_path, monkeypatch):
    import shutil

    from dagster._core.instance.config import dagster_instance_config

    for k in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(k, "5432" if k.endswith("PORT") else "x")
    pg = yaml.safe_load((ROOT / "infra/dagster/postgres.yaml").read_text())
    db = pg["storage"]["postgres"]["postgres_db"]
    assert set(db) == {"hostname", "port", "username", "password", "db_name"}
    assert all(isinstance(v, dict) and set(v) == {"env"} for v in db.values()), db
    assert pg["run_retries"]["enabled"] and pg["run_retries"]["max_retries"] >= 1
    assert pg["concurrency"]["pools"]["default_limit"] >= 1
    for name in ("postgres", "sqlite"):
        home = tmp_path / name
        home.mkdir()
        shutil.copy(ROOT / "infra/dagster" / f"{name}.yaml", home / "dagster.yaml")
        cfg, _ = dagster_instance_config(str(home))
        assert "concurrency" in cfg and cfg["run_retries"]["enabled"]


# -- the run queue: ingest one at a time, scores a few at once ------------------------------------

def _instance_configs() -> dict[str, dict]:
    """name -> the run-queue part of each instance config we ship, as a dagster.yaml fragment."""
    from orchestration.pipeline import DAGSTER_YAML

    out = {}
    for name in ("postgres", "sqlite"):
        cfg = yaml.safe_load((ROOT / "infra/dagster" / f"{name}.yaml").read_text())
        out[name] = {k: cfg[k] for k in ("run_coordinator", "concurrency") if k in cfg}
    values = yaml.safe_load((ROOT / "infra/k8s/values.yaml").read_text())
    runs = values["concurrency"]["runs"]  # the chart writes these into the daemon's dagster.yaml
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    out["k8s"] = {"concurrency": {"runs": {"max_concurrent_runs": runs["maxConcurrentRuns"],
                                           "tag_concurrency_limits": runs["tagConcurrencyLimits"]}}}
    out["uhr dagster_home"] = {k: v for k, v in yaml.safe_load(DAGSTER_YAML).items() if k == "concurrency"}
    return out


def _tag_limits(cfg: dict) -> dict[tuple[str, str], int]:
    return {(t["key"], t["value"]): t["limit"] for t in cfg["concurrency"]["runs"]["tag_concurrency_limits"]}


def test_every_instance_config_limits_ingest_to_one_and_scores_to_the_documented_count():
    from orchestration.automation import INGEST_TAG, SCORES_RUN_LIMIT, SCORES_TAG

    (ingest,), (scores,) = INGEST_TAG.items(), SCORES_TAG.items()
    configs = _instance_configs()
    assert set(configs) == {"postgres", "sqlite", "k8s", "uhr dagster_home"}
    for name, cfg in configs.items():
        assert _tag_limits(cfg) == {ingest: 1, scores: SCORES_RUN_LIMIT}, name
    # what the docs say: the limit, the rule that bounds it, in the yaml comments and the README
    for f in ("infra/dagster/postgres.yaml", "infra/dagster/sqlite.yaml", "infra/k8s/values.yaml"):
        text = (ROOT / f).read_text()
        assert f"uhrforge/pool=scores (shard_scores: image_scores): {SCORES_RUN_LIMIT} scores runs" in text, f
        assert "Rule: limit x runtime.workers x one worker's peak" in text and "memory_budget_mb" in text, f
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"tag `uhrforge/pool: scores`) runs up to {SCORES_RUN_LIMIT} shards at once" in readme
    assert "limit x `runtime.workers` x one worker's peak" in readme
    assert f"(`uhrforge/pool: scores`, limit {SCORES_RUN_LIMIT})" in " ".join(
        (ROOT / "docs/scale.md").read_text().split())


@pytest.mark.parametrize("name", ["postgres", "sqlite", "k8s", "uhr dagster_home"])
def test_the_run_queue_starts_two_scores_runs_at_once_but_one_ingest_run(tmp_path, name):
    """Dagster's own queue daemon picks what to start from queued per-shard runs, under each
    instance config's limits (on sqlite storage): ingest runs one at a time in shard order,
    scores runs of two shards side by side, a third when one of them ends."""
    from dagster import DagsterEvent, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.test_utils import create_run_for_test
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    from orchestration.automation import INGEST_JOB, INGEST_TAG, SCORES_JOB, SCORES_RUN_LIMIT, SCORES_TAG

    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False},
                                                            **_instance_configs()[name]}))
    instance = DagsterInstance.from_config(str(tmp_path))
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    try:
        def queue(job, tags, shard):  # as the sensors submit them: queued, from the code location
            origin = RemoteJobOrigin(repository_origin=RemoteRepositoryOrigin(
                RegisteredCodeLocationOrigin("uhrforge"), "__repository__"), job_name=job)
            return create_run_for_test(instance, job_name=job, status=DagsterRunStatus.QUEUED,
                                       remote_job_origin=origin, tags={**tags, "dagster/partition": shard}).run_id

        def report(run_id, event_type):
            run = instance.get_run_by_id(run_id)
            instance.report_dagster_event(DagsterEvent(event_type.value, job_name=run.job_name), run_id)

        def start_dequeued() -> list[tuple[str, str]]:
            runs = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
            for r in runs:  # what launching does to them
                report(r.run_id, DagsterEventType.RUN_START)
            return sorted((r.job_name, r.tags["dagster/partition"]) for r in runs)

        shards = [f"shard-{i:05d}" for i in range(4)]
        ingest = {s: queue(INGEST_JOB, INGEST_TAG, s) for s in shards}
        scores = {s: queue(SCORES_JOB, SCORES_TAG, s) for s in shards[:3]}
        assert SCORES_RUN_LIMIT == 2
        # first pass: one ingest run (the first shard: the queue is FIFO), two scores runs
        assert start_dequeued() == [(INGEST_JOB, shards[0]), (SCORES_JOB, shards[0]), (SCORES_JOB, shards[1])]
        assert start_dequeued() == []  # nothing else while they run
        in_progress = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
        assert sum(r.job_name == SCORES_JOB for r in in_progress) == 2  # two scores runs at once
        # a scores run ends: the third shard's starts; ingest still waits for its one run
        report(scores[shards[0]], DagsterEventType.RUN_SUCCESS)
        assert start_dequeued() == [(SCORES_JOB, shards[2])]
        # the ingest run ends: the next shard ingests (in key order), still one at a time
        report(ingest[shards[0]], DagsterEventType.RUN_SUCCESS)
        assert start_dequeued() == [(INGEST_JOB, shards[1])]
        assert start_dequeued() == []
    finally:
        instance.dispose()


# -- k8s values -----------------------------------------------------------------------------------

def test_helm_values_k8s_launcher_user_code_and_gpu_tags():
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor

    from orchestration.automation import GPU_ASSETS
    from orchestration.platform import SECRET_ENV, k8s_executor_config

    values = yaml.safe_load((ROOT / "infra/k8s/values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    uds = values["dagster-user-deployments"]
    assert uds["enabled"] is True
    dep = uds["deployments"][0]
    assert dep["image"]["repository"] and dep["image"]["tag"]
    assert dep["dagsterApiGrpcArgs"] == ["-m", "orchestration.definitions"]
    env = {e["name"]: e.get("value") for e in dep["env"]}
    assert env["UHR_EXECUTOR"] == "k8s"
    assert not set(SECRET_ENV) & set(env), "secrets come from envSecrets, not values"
    assert dep["envSecrets"][0]["name"] == "uhrforge-secrets"
    gpu = json.loads(env["UHR_GPU_K8S_CONFIG"])
    assert gpu["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert values["postgresql"]["enabled"] is False and not values["postgresql"]["postgresqlPassword"]
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["dagsterDaemon"]["runRetries"]["enabled"] is True
    assert values["concurrency"]["enabled"] is True
    # the executor config built from those values validates against dagster-k8s's schema
    cfg = k8s_executor_config(env)
    assert set(cfg["per_step_k8s_config"]) == set(GPU_ASSETS)
    assert cfg["per_step_k8s_config"]["image_scores"] == gpu
    res = validate_config(k8s_job_executor.config_schema.as_field().config_type, cfg)
    assert res.success, res.errors


# -- Definitions in production mode ---------------------------------------------------------------

def test_definitions_load_with_production_resources_and_k8s_executor(monkeypatch):
    from dagster import Definitions

    from orchestration.automation import SCHEDULES, SENSORS, automation_conditions
    from orchestration.definitions import build_definitions
    from orchestration.platform import executor_from_env
    from orchestration.resources import resources_from_env

    for k, v in PROD_ENV.items():
        monkeypatch.setenv(k, v)
    executor = executor_from_env()
    assert executor.name == "k8s_job_executor"
    defs = build_definitions(resources_from_env())
    # build_definitions itself wires the executor, the sensors, the schedules and the automation
    assert defs.executor is not None and defs.executor.name == "k8s_job_executor"
    assert sorted(s.name for s in defs.sensors or []) == sorted(s.name for s in SENSORS) and SENSORS
    assert sorted(s.name for s in defs.schedules or []) == sorted(s.name for s in SCHEDULES) and SCHEDULES
    conds = automation_conditions()
    for a in defs.assets:
        if a.key.to_user_string() in conds:
            assert a.automation_conditions_by_key.get(a.key) is not None, a.key
    Definitions.validate_loadable(defs)
    for job in ("shard_ingest", "shard_scores", "candidate_selection", "purification_thresholds_job",
                "bench_scores_job"):
        assert defs.resolve_job_def(job).executor_def.name == "k8s_job_executor"
    assert defs.resolve_sensor_def("new_shard_sensor").job_name == "shard_ingest"
    assert defs.resolve_sensor_def("scores_after_ingest_sensor").job_name == "shard_scores"
    assert defs.resolve_schedule_def("weekly_bench_schedule").job_name == "bench_scores_job"
    snap = json.dumps({k: repr(v) for k, v in defs.resources.items()})
    assert SECRET not in snap and PG_SECRET not in snap
    monkeypatch.setenv("UHR_EXECUTOR", "multiprocess")
    monkeypatch.setenv("UHR_MAX_CONCURRENT", "2")
    assert executor_from_env().name == "multiprocess_executor"
    monkeypatch.setenv("UHR_EXECUTOR", "nonsense")
    with pytest.raises(ValueError):
        executor_from_env()


# -- object-store sync inside the assets --------------------------------------------------------

def test_assets_sync_with_the_store_so_a_fresh_data_root_runs_from_it(tmp_path):
    """Worker A ingests and scores a shard dropped into a local store; worker A is then deleted and
    worker B (an empty data root, same store and instance) runs thresholds -> candidate_pool ->
    corpus_100mp: every asset fetched its own inputs and published its own outputs, with no
    prepare/publish around the runs."""
    import shutil

    from dagster import AssetKey, DagsterInstance

    from curation.config import load_config
    from curation.layout import DataLayout
    from curation.manifest import read_manifest
    from curation.synth import MIN_N, make_raw_pool
    from orchestration.definitions import build_definitions
    from orchestration.resources import AestheticModels, CurationSettings, ObjectStoreResource

    store_res = ObjectStoreResource(local_root=str(tmp_path / "store"), raw_prefix="raw")
    store = store_res.get_store()
    gen = tmp_path / "generated"
    make_raw_pool(gen, MIN_N, 0, load_config("test"))
    (shard,) = sorted(p.name for p in gen.iterdir() if p.is_dir())
    upload_shard(store, gen / shard, "raw")
    shutil.rmtree(gen)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [shard])

    def defs_at(worker: Path):
        settings = CurationSettings(data_root=str(worker / "data"), raw_root=str(worker / "raw"), profile="test")
        return build_definitions({"settings": settings, "aesthetics": AestheticModels(), "store": store_res})

    def run(defs, job: str, partition: str | None = None) -> None:
        assert defs.resolve_job_def(job).execute_in_process(partition_key=partition, instance=instance).success

    def sync(asset: str) -> dict:
        md = instance.get_latest_materialization_event(AssetKey(asset)).asset_materialization.metadata
        assert md["store"].value == store_res.describe() == {"kind": "local", "root": str(store.root),
                                                             "raw_prefix": "raw"}
        return md["store_sync"].value

    a, b = tmp_path / "worker-a", tmp_path / "worker-b"
    layout_a, layout_b = DataLayout.at(a / "data"), DataLayout.at(b / "data")
    run(defs_at(a), "shard_ingest", shard)
    run(defs_at(a), "shard_scores", shard)
    got = sync("raw_pool")
    assert got["raw_downloaded"] == got["raw_files"] > 0 and (a / "raw" / shard).is_dir()  # raw from the store
    assert got["blobs_uploaded"] > 0 and got["published_keys"] == 1
    assert sync("image_scores")["published_keys"] == 1
    for stage in ("raw_pool", "image_scores"):
        assert store.get_bytes(manifest_key(stage, shard)) == layout_a.manifest(stage, shard).read_bytes()
    passed = [r for r in read_manifest(layout_a.manifest("raw_pool", shard)).to_pylist() if r["passed"]]
    assert passed and all(store.exists(blob_key(r["sha256"])) for r in passed)
    shutil.rmtree(a)  # worker A is gone: its data root and its raw files

    defs_b = defs_at(b)
    assert not b.exists()
    run(defs_b, "purification_thresholds_job")
    assert sync("purification_thresholds")["fetched_manifests"] == 1
    assert layout_b.manifest("image_scores", shard).exists()
    assert store.get_bytes("manifests/purification_thresholds/latest.json") == \
        (layout_b.thresholds_dir() / "latest.json").read_bytes()
    run(defs_b, "candidate_selection", shard)
    assert sync("candidate_pool")["fetched_manifests"] == 1
    run(defs_b, "corpus_100mp_job", shard)
    got = sync("corpus_100mp")
    cand = [r for r in read_manifest(layout_b.manifest("candidate_pool", shard)).to_pylist() if r["passed"]]
    assert got["fetched_manifests"] == 2 and got["sources_restored"] == len(cand) > 0  # sources from blobs
    for stage in ("candidate_pool", "corpus_100mp"):
        assert store.get_bytes(manifest_key(stage, shard)) == layout_b.manifest(stage, shard).read_bytes()
    assert not (b / "raw").exists()  # worker B never needed the raw shard
    instance.dispose()


def test_asset_publish_holds_back_a_manifest_whose_blocking_check_failed(tmp_path):
    from types import SimpleNamespace

    from dagster import AssetCheckResult, AssetCheckSpec, MetadataValue

    from assets._store import publish, store_metadata
    from curation.layout import DataLayout
    from orchestration.resources import CurationSettings, ObjectStoreResource

    logged: list[str] = []
    specs = [AssetCheckSpec("rows_conserved", asset="candidate_pool", blocking=True),
             AssetCheckSpec("score_ranges", asset="candidate_pool")]
    ctx = SimpleNamespace(assets_def=SimpleNamespace(check_specs=specs),
                          log=SimpleNamespace(info=logged.append, warning=logged.append))
    settings = CurationSettings(data_root=str(tmp_path / "data"), profile="test")
    path = DataLayout.at(tmp_path / "data").manifest("candidate_pool", "shard-00000")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"manifest bytes")
    res = ObjectStoreResource(local_root=str(tmp_path / "store"))

    def result(name, ok):
        return AssetCheckResult(check_name=name, asset_key="candidate_pool", passed=ok)

    out = publish(ctx, res, settings, "candidate_pool", "shard-00000", [result("rows_conserved", False)])
    assert out["not_published"] == ["rows_conserved"] and res.get_store().list("manifests/") == []
    assert "blocking" in logged[-1]
    assert store_metadata(res, {}, out)["store_sync"].value == {"published_keys": 0, "not_published": ["rows_conserved"]}
    out = publish(ctx, res, settings, "candidate_pool", "shard-00000",
                  [result("rows_conserved", True), result("score_ranges", False)])  # not blocking
    assert res.get_store().get_bytes(manifest_key("candidate_pool", "shard-00000")) == b"manifest bytes"
    off = ObjectStoreResource()  # no store: nothing to do, and the metadata says so
    assert publish(ctx, off, settings, "candidate_pool", "shard-00000") == {}
    off_md = store_metadata(off, {}, {})
    assert set(off_md) == {"store"} and off_md["store"].value == {"kind": "none"}  # no store_sync entry
    assert off_md["store"] == MetadataValue.json({"kind": "none"})


def test_release_entry_recorded_in_sql_once_and_names_stay_immutable(tmp_path):
    import sqlalchemy as sa

    from curation.release import SQL_TABLE, ReleaseError, record_release_sql

    url = f"sqlite:///{tmp_path / 'releases.db'}"
    entry = {"name": "v1", "created_at": "2026-01-01T00:00:00+00:00", "n_images": 3, "manifest_sha256": "a" * 64,
             "dvc": {"md5": "b" * 32 + ".dir", "remote_url": "s3://x/dvc"}, "git": {"tag": "release/v1", "commit": "c" * 40}}
    assert record_release_sql(url, entry) and record_release_sql(url, dict(entry, existing=True))
    with pytest.raises(ReleaseError, match="v1"):
        record_release_sql(url, dict(entry, manifest_sha256="d" * 64))
    eng = sa.create_engine(url)
    with eng.connect() as c:
        rows = c.execute(sa.text(f"select name, n_images, dvc_md5, git_tag, entry from {SQL_TABLE}")).all()
    eng.dispose()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("v1", 3, "b" * 32 + ".dir", "release/v1")]
    assert json.loads(rows[0][4])["manifest_sha256"] == "a" * 64


def test_release_digest_ignores_worker_local_fields_only():
    from curation.release import rows_digest

    row = {"image_id": "ab" * 10, "sha256": "c" * 64, "licence": "CC0-1.0", "source_path": "/worker-a/raw/x.jpg",
           "file_bytes": 123}
    moved = dict(row, source_path="/worker-b/raw/x.jpg", file_bytes=None)
    assert rows_digest([row]) == rows_digest([moved])
    for k, v in (("sha256", "d" * 64), ("licence", "CC-BY-4.0"), ("image_id", "cd" * 10)):
        assert rows_digest([dict(row, **{k: v})]) != rows_digest([row]), k
