"""MLflow for training: one run per scheme x tier, the checkpoint registered as a model version.

:func:`log_training_run` records a finished :class:`~training.trainer.TrainResult`:

* params: scheme, tier, learning rate, epochs, steps, batch size, backbone, ``init_from`` and the
  parent checkpoint, the training-set version, the stage fingerprint, the profile;
* metrics: ``train/loss`` per step (the loss log), wall clock, samples/s, device hours (GPU or
  CPU hours, never mixed), latent-cache hits;
* tags: ``uhrforge.component=training``, ``uhrforge.scheme``, ``uhrforge.tier``,
  ``uhrforge.fingerprint``, ``uhrforge.parent_checkpoint_run`` (the run of the checkpoint this
  tier started from), ``uhrforge.backbone`` (``tiny (random init)`` for the offline models: such
  a checkpoint says so wherever it appears) and the release it trained on
  (:func:`curation.release.release_tags`: ``uhrforge.release`` ... which the ``checkpoints``
  lineage provider searches), or ``uhrforge.release=unreleased``;
* artifacts: the exported weights folder (safetensors + config) under ``weights/``, the run's
  ``result.json`` and ``losses.jsonl``.

The weights are then registered (:func:`register_checkpoint`) as a version of the registered
model ``uhrforge-<scheme>`` through ``MlflowClient.create_model_version(source=<artifact uri of
weights/>)`` (``mlflow.register_model`` wants a logged MLflow model; a folder of safetensors is
not one), with the same tags plus ``uhrforge.checkpoint_run``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

TINY_LABEL = "tiny (random init)"


def registered_model_name(scheme: str) -> str:
    return f"uhrforge-{scheme}"


def _param(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str, sort_keys=True)
    return s[:6000]


def log_training_run(tracking_uri: str, experiment: str, result, *, out_dir: str | Path, params: Mapping[str, Any],
                     tags: Mapping[str, str], device_hours: Mapping[str, float | None]) -> dict:
    """One MLflow run for a trained stage; returns ``{tracking_uri, experiment_id, run_id, artifact_uri}``."""
    from mlflow.entities import Metric, Param, RunTag

    from curation.tracking import open_experiment

    client, exp_id = open_experiment(tracking_uri, experiment)
    run = client.create_run(exp_id, run_name=f"{result.scheme} {result.tier}",
                            tags={"uhrforge.component": "training", **dict(tags)})
    rid = run.info.run_id
    ts = int(time.time() * 1000)
    metrics = [Metric("train/loss", float(loss), ts, int(step)) for step, loss in result.losses]
    scalars = {"wall_clock_s": result.wall_clock_s, "samples": result.samples, "steps": result.steps,
               "epochs": result.epochs, "samples_per_s": result.extra.get("samples_per_s")}
    scalars.update({k: v for k, v in device_hours.items() if v is not None})
    for k in ("latent_cache_hits", "latent_cache_misses", "latent_precompute_s", "region_reads"):
        if result.extra.get(k) is not None:
            scalars[k] = result.extra[k]
    metrics += [Metric(k, float(v), ts, 0) for k, v in scalars.items() if v is not None]
    all_params = {**dict(params), "steps": result.steps, "batch_size": result.extra.get("batch_size"),
                  "lr": result.extra.get("lr"), "device_type": result.device_type,
                  "device_count": result.device_count, "resumed_from_step": result.resumed_from_step}
    for i in range(0, len(metrics), 900):  # MLflow's batch limit is 1000 entries
        client.log_batch(rid, metrics=metrics[i:i + 900],
                         params=[Param(k, _param(v)) for k, v in all_params.items()] if i == 0 else [],
                         tags=[RunTag("mlflow.note.content", _note(result, tags))] if i == 0 else [])
    out = Path(out_dir)
    if result.weights and Path(result.weights["folder"]).is_dir():
        client.log_artifacts(rid, result.weights["folder"], artifact_path="weights")
    for name in ("result.json", "losses.jsonl"):
        if (out / name).exists():
            client.log_artifact(rid, str(out / name), artifact_path="run")
    client.set_terminated(rid)
    return {"tracking_uri": tracking_uri, "experiment": experiment, "experiment_id": exp_id, "run_id": rid,
            "artifact_uri": client.get_run(rid).info.artifact_uri}


def _note(result, tags: Mapping[str, str]) -> str:
    return (f"{result.scheme} {result.tier}: {result.steps} steps, {result.samples} samples, "
            f"{result.wall_clock_s:.1f} s on {result.device_count}x {result.device_type}; backbone "
            f"{tags.get('uhrforge.backbone', '?')}; release {tags.get('uhrforge.release', '?')}")


def register_checkpoint(tracking_uri: str, run: Mapping[str, Any], scheme: str, tags: Mapping[str, str],
                        description: str = "") -> dict:
    """Register the run's ``weights/`` artifact folder as a new version of ``uhrforge-<scheme>``."""
    from mlflow.exceptions import MlflowException

    from curation.tracking import open_experiment

    client, _ = open_experiment(tracking_uri, run["experiment"])
    name = registered_model_name(scheme)
    try:
        client.create_registered_model(name, description=f"uhrforge scheme {scheme} checkpoints (one version per tier run)")
    except MlflowException:
        pass  # exists
    vtags = {**dict(tags), "uhrforge.checkpoint_run": run["run_id"]}
    mv = client.create_model_version(name, source=f"{run['artifact_uri']}/weights", run_id=run["run_id"],
                                     tags=vtags, description=description)
    tier = tags.get("uhrforge.tier")
    if tier:  # the newest checkpoint of each tier under an alias, e.g. uhrforge-III@tier-8K
        client.set_registered_model_alias(name, f"tier-{tier}", mv.version)
    return {"name": name, "version": str(mv.version), "source": mv.source}
