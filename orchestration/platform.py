"""Platform glue: the executor chosen by the environment, the curation MLflow run, the service contract.

* :func:`executor_from_env` -- ``UHR_EXECUTOR``: ``multiprocess`` (default), ``in_process``, or
  ``k8s``; ``UHR_MAX_CONCURRENT`` caps the steps at once of either executor (k8s default 16) (``dagster_k8s.k8s_job_executor``: one pod per step, GPU steps get
  ``nvidia.com/gpu`` limits from :func:`gpu_k8s_config`, i.e. ``UHR_GPU_K8S_CONFIG``, which
  ``infra/k8s/values.yaml`` sets on the code location).
* :func:`log_curation_run` -- one MLflow run per materialisation round: the data-flow counts per
  stage (like the paper's Table 1), the step timings, the config hash and code versions, the
  store it published to (never credentials), and the counts / thresholds as artifacts.
* :data:`COMPOSE_SERVICES` / :data:`CODE_LOCATION_ENV` -- what ``docker-compose.yml`` must provide.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from orchestration.automation import GPU_ASSETS
from orchestration.resources import env_setting

#: services the code talks to (and the Dagster processes themselves); docker-compose.yml names them
COMPOSE_SERVICES = ("postgres", "minio", "mlflow", "vllm", "code", "webserver", "daemon")
#: environment the code location reads in production (values come from the shell / secrets)
CODE_LOCATION_ENV = (
    "UHR_DATA_ROOT", "UHR_PROFILE",
    "UHR_S3_ENDPOINT", "UHR_S3_BUCKET", "UHR_S3_ACCESS_KEY", "UHR_S3_SECRET_KEY",
    "MLFLOW_TRACKING_URI", "UHR_VLM_ENDPOINT", "UHR_VLM_API_KEY_ENV",
    "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB",
)
#: variables that hold secrets: only ever referenced, never written inline
SECRET_ENV = ("UHR_S3_ACCESS_KEY", "UHR_S3_SECRET_KEY", "DAGSTER_PG_PASSWORD", "VLLM_API_KEY", "HF_TOKEN")

DEFAULT_GPU_K8S_CONFIG: dict = {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}},
    "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
}
DEFAULT_STEP_K8S_CONFIG: dict = {
    "container_config": {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}},
}


def gpu_k8s_config(env: Mapping[str, str] | None = None) -> dict:
    """The ``dagster-k8s/config`` of a GPU step: ``UHR_GPU_K8S_CONFIG`` (JSON) or one ``nvidia.com/gpu``."""
    raw = env_setting("UHR_GPU_K8S_CONFIG", env)
    if not raw:
        return json.loads(json.dumps(DEFAULT_GPU_K8S_CONFIG))
    cfg = json.loads(raw)
    if not isinstance(cfg, dict):
        raise ValueError("UHR_GPU_K8S_CONFIG must be a JSON object (a dagster-k8s/config)")
    return cfg


#: op tags for a GPU asset (``@asset(op_tags=GPU_OP_TAGS, pool="gpu")``): the run launcher / k8s
#: executor read ``dagster-k8s/config``
GPU_OP_TAGS = {"dagster-k8s/config": gpu_k8s_config({})}


def k8s_executor_config(env: Mapping[str, str] | None = None) -> dict:
    gpu = gpu_k8s_config(env)
    step = env_setting("UHR_STEP_K8S_CONFIG", env)
    cfg: dict[str, Any] = {
        "max_concurrent": int(env_setting("UHR_MAX_CONCURRENT", env) or 16),
        "step_k8s_config": json.loads(step) if step else json.loads(json.dumps(DEFAULT_STEP_K8S_CONFIG)),
        "per_step_k8s_config": {step: gpu for step in GPU_ASSETS},
        "retries": {"enabled": {}},
    }
    secret = env_setting("UHR_K8S_ENV_SECRET", env, default="uhrforge-secrets")
    if secret:
        cfg["env_secrets"] = [secret]
    return cfg


def executor_from_env(env: Mapping[str, str] | None = None):
    """The Definitions' executor: local multiprocess by default, the k8s job executor in a cluster."""
    from dagster import in_process_executor, multiprocess_executor

    kind = (env_setting("UHR_EXECUTOR", env) or "multiprocess").lower()
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_executor_config(env), name="k8s_job_executor")
    if kind == "in_process":
        return in_process_executor
    if kind != "multiprocess":
        raise ValueError(f"UHR_EXECUTOR={kind!r}: expected multiprocess, in_process or k8s")
    n = env_setting("UHR_MAX_CONCURRENT", env)
    if n:
        return multiprocess_executor.configured({"max_concurrent": int(n)}, name="multiprocess_executor")
    return multiprocess_executor


# -- the curation MLflow run ----------------------------------------------------------------------

_METRIC_NAME = re.compile(r"[^0-9A-Za-z_\-. /]")


def curation_counts(layout, shards: list[str] | None = None) -> dict[str, float]:
    """Data-flow counts over the committed manifests (optionally only ``shards``)."""
    from curation import reasons
    from curation.manifest import read_manifest

    def rows(stage: str) -> list[dict]:
        out = []
        for p in layout.manifests(stage):
            if shards is None or p.stem in shards:
                out.extend(read_manifest(p).to_pylist())
        return out

    c: dict[str, float] = {}
    raw = rows("raw_pool")
    c["shards"] = len({r["shard"] for r in raw})
    c["raw.files"] = len(raw)
    c["raw.unique"] = sum(1 for r in raw if r["reject_reason"] != reasons.DUPLICATE)
    c["raw_pool.passed"] = sum(1 for r in raw if r["passed"])
    scores = rows("image_scores")
    c["image_scores.rows"] = len(scores)
    c["image_scores.passed"] = sum(1 for r in scores if r["passed"])
    cand = rows("candidate_pool")
    c["candidate_pool.rows"] = len(cand)
    c["candidate_pool.passed"] = sum(1 for r in cand if r["passed"])
    for crit in ("exposure", "sharpness", "flatness", "richness", "aesthetics"):
        vals = [r.get(f"pass_{crit}") for r in cand if r.get(f"pass_{crit}") is not None]
        if vals:
            c[f"candidate_pool.pass_{crit}"] = sum(vals)
    corpus = rows("corpus_100mp")
    if corpus:
        c["corpus_100mp.rows"] = len(corpus)
        c["corpus_100mp.passed"] = sum(1 for r in corpus if r["passed"])
    return c


def log_curation_run(layout, cfg, tracking_uri: str, *, shards: list[str] | None = None,
                     timings: Mapping[str, float] | None = None, experiment: str = "uhrforge-curation",
                     run_name: str | None = None, store: Mapping[str, Any] | None = None,
                     tags: Mapping[str, str] | None = None) -> dict:
    """One MLflow run for a materialisation round; returns ``{tracking_uri, experiment_id, run_id, artifact_uri}``.

    ``store`` is the object store's ``describe()`` (never credentials); ``cfg`` the profile's Config.
    """
    from mlflow.entities import Metric, Param, RunTag

    from curation.stages import STAGES, fingerprints
    from curation.tracking import open_experiment

    client, exp_id = open_experiment(tracking_uri, experiment)
    counts = curation_counts(layout, shards)
    run = client.create_run(exp_id, run_name=run_name or f"curation {cfg.name} {time.strftime('%Y-%m-%d %H:%M')}",
                            tags={"uhrforge.component": "curation", "profile": cfg.name, **dict(tags or {})})
    rid = run.info.run_id
    params = {"profile": cfg.name, "config_hash": cfg.hash, "data_root": str(layout.root),
              "shards": ",".join(shards) if shards else "all"}
    params.update({f"code_version.{s.name}": s.code_version for s in STAGES})
    params.update({f"fingerprint.{k}": v for k, v in fingerprints(cfg).items()})
    if store:
        params.update({f"store.{k}": str(v) for k, v in store.items()})
    latest = layout.thresholds_dir() / "latest.json"
    if latest.exists():
        params["threshold_version"] = json.loads(latest.read_text()).get("version")
    ts = int(time.time() * 1000)
    metrics = dict(counts)
    for k, v in (timings or {}).items():
        metrics[f"seconds.{_METRIC_NAME.sub('_', k)}"] = float(v)
    client.log_batch(rid, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()],
                     params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                     tags=[RunTag("uhrforge.stages", ",".join(sorted({k.split('.')[0] for k in counts})))])
    with tempfile.TemporaryDirectory(prefix="uhr-mlflow-") as tmp:
        flow = Path(tmp) / "data_flow.json"
        flow.write_text(json.dumps({"counts": counts, "timings": dict(timings or {}), "params": params},
                                   indent=2, sort_keys=True, default=str))
        md = Path(tmp) / "data_flow.md"
        md.write_text("| count | value |\n|---|---|\n" + "".join(f"| {k} | {v:g} |\n" for k, v in counts.items()))
        client.log_artifact(rid, str(flow), artifact_path="curation")
        client.log_artifact(rid, str(md), artifact_path="curation")
        if latest.exists():
            client.log_artifact(rid, str(latest), artifact_path="curation")
    client.set_terminated(rid)
    return {"tracking_uri": tracking_uri, "experiment": experiment, "experiment_id": exp_id, "run_id": rid,
            "artifact_uri": client.get_run(rid).info.artifact_uri, "counts": counts}
