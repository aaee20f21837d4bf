"""One checkpoint of the curriculum (scheme x tier) from a data root: what the Dagster
``checkpoint`` asset runs (in a Pipes subprocess) and what ``uhr train`` materialises.

:func:`run_checkpoint`:

1. reads the tier's training set (:mod:`training.data.sets`: final corpus minus the bench split,
   with the release it belongs to);
2. resolves where the stage starts (``init_from`` of the ladder): ``base``, or the checkpoint of
   an earlier tier of the same scheme, read from that tier's ``current.json`` (its folder, its
   fingerprint and its MLflow run);
3. computes the checkpoint's **fingerprint**: the stage's parameters (scheme, tier, lr, epochs,
   batch size, seed, steps cap, backbone), the training set's version, the parent's
   fingerprint and :data:`CODE_VERSION`. The run lives in
   ``<data root>/checkpoints/<scheme>/<tier>/<fingerprint>/``: the same inputs reuse the finished
   run (nothing trains), a killed run resumes from its last step checkpoint, other inputs train
   in a new folder;
4. trains with :func:`training.trainer.train_stage` (latents precomputed into
   ``cache/latents/<tier>/`` for Schemes I and II), exports the weights (safetensors);
5. appends the run to the GPU-hour ledger (``<data root>/ledger/training.jsonl``), logs the MLflow
   run and registers the weights as a model version (:mod:`training.tracking`);
6. writes ``report.json`` in the run folder and points ``current.json`` at it (last, atomically).

Scheme names: the CLI's ``I-Full``, ``I-LoRA``, ``II``, ``III`` are the config's ``I_full``,
``I_lora``, ``II``, ``III`` (:data:`SCHEME_NAMES`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

CODE_VERSION = "checkpoint-1"
SCHEME_NAMES = {"I-Full": "I_full", "I-LoRA": "I_lora", "II": "II", "III": "III"}
CLI_NAMES = {v: k for k, v in SCHEME_NAMES.items()}
LEDGER_FILE = "training.jsonl"


def scheme_key(name: str) -> str:
    """``I-LoRA`` / ``I_lora`` -> ``I_lora`` (ValueError for an unknown scheme)."""
    if name in SCHEME_NAMES:
        return SCHEME_NAMES[name]
    if name in CLI_NAMES:
        return name
    raise ValueError(f"unknown scheme {name!r}: one of {', '.join(SCHEME_NAMES)}")


def partition_key(scheme: str, tier: str) -> str:
    """The ``checkpoint`` asset's partition of a stage, e.g. ``I-LoRA_8K``."""
    return f"{CLI_NAMES[scheme_key(scheme)]}_{tier}"


def parse_partition(key: str) -> tuple[str, str]:
    name, _, tier = key.rpartition("_")
    return scheme_key(name), tier


def partition_keys(cfg) -> list[str]:
    """Every stage of every ladder, in ladder order (scheme by scheme)."""
    from training import curriculum

    t = curriculum._training(cfg)
    return [partition_key(s, st["tier"]) for s in t["schemes"] for st in t["schemes"][s]["ladder"]]


def ledger_path(layout) -> Path:
    return layout.root / "ledger" / LEDGER_FILE


def stage_dir(layout, scheme: str, tier: str) -> Path:
    return layout.root / "checkpoints" / scheme_key(scheme) / tier


def current(layout, scheme: str, tier: str) -> dict | None:
    """The finished run a stage currently points at (``current.json``), or None."""
    from curation.atomic import read_json

    cur = read_json(stage_dir(layout, scheme, tier) / "current.json")
    if not cur:
        return None
    rep = read_json(layout.root / cur["report"])
    return rep


def _stage(cfg, scheme: str, tier: str, scale: float | None = None):
    from training import curriculum

    for st in curriculum.ladder(cfg, scheme, scale):
        if st.tier.name == tier:
            return st
    raise ValueError(f"{CLI_NAMES[scheme]} has no {tier} stage (ladder: "
                     f"{[s.tier.name for s in curriculum.ladder(cfg, scheme, scale)]})")


def _parent(layout, stage) -> tuple[dict | None, Path | None]:
    """The parent's report and the checkpoint folder this stage starts from (``init_from``)."""
    if stage.init_from.kind == "base":
        return None, None
    rep = current(layout, stage.scheme, stage.init_from.tier)
    if rep is None:
        raise RuntimeError(f"{partition_key(stage.scheme, stage.tier.name)} starts from "
                           f"{partition_key(stage.scheme, stage.init_from.tier)}, which has not been trained: "
                           "materialise it first (uhr train materialises a ladder in order)")
    from training import curriculum

    key = curriculum.checkpoint_key(stage.scheme, stage.init_from.tier, stage.init_from.epoch)
    folder = rep["checkpoints"].get(key)
    if folder is None:
        raise RuntimeError(f"{partition_key(stage.scheme, stage.init_from.tier)} left no checkpoint {key} "
                           f"(it has {sorted(rep['checkpoints'])})")
    return rep, layout.root / folder


def check_ready(layout, cfg, scheme: str, tier: str) -> None:
    """Raise the reason a stage cannot start now (unknown stage, or its ``init_from`` tier not
    trained): the checkpoint asset calls it before it launches a training process."""
    _parent(layout, _stage(cfg, scheme_key(scheme), tier))


def distributed_env(env=None) -> dict:
    """``RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE`` as ``torchrun`` sets them (1 process without it):
    ``{"rank", "world", "devices" (processes per node), "nodes"}``."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    local = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    if world % local:
        raise RuntimeError(f"WORLD_SIZE {world} is not a multiple of LOCAL_WORLD_SIZE {local}")
    return {"rank": int(env.get("RANK", "0")), "world": world, "devices": local, "nodes": world // local}


def fingerprint(cfg, stage, set_info: dict, parent: dict | None, backbone: str, max_steps: int | None,
                world: int = 1) -> str:
    from training import curriculum

    t = curriculum._training(cfg)
    payload = {
        "code": CODE_VERSION, "scheme": stage.scheme, "tier": stage.tier.name, "side": stage.tier.side,
        "token_px": stage.tier.token_px, "epochs": stage.epochs, "lr": stage.lr,
        "init_from": str(stage.init_from), "factors": stage.partition_factors, "extra": stage.extra,
        "batch_size": t.get("batch_size"), "grad_accumulation": t.get("grad_accumulation"), "seed": t.get("seed"),
        "optim": [t.get("optimizer"), t.get("betas"), t.get("weight_decay"), t.get("timestep_sampling")],
        "buckets": t.get("buckets"), "backbone": backbone, "max_steps": max_steps,
        "training_set": set_info["version"], "parent": parent["fingerprint"] if parent else None,
    }
    if t.get("ema"):  # the exported weights are the average
        payload["ema"] = t.get("ema")
    if world != 1:  # the global batch (and so the run) depends on the number of data-parallel processes
        payload["world"] = int(world)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_checkpoint(data_root: str | os.PathLike, scheme: str, tier: str, *, profile: str = "paper",
                   config_dir: str | os.PathLike | None = None, tracking_uri: str | None = None,
                   experiment: str = "uhrforge-training", backbone: str = "tiny", callbacks: list | None = None,
                   log: Callable[[str], None] = print) -> dict:
    """Train (or reuse) one stage; returns its report (also ``report.json`` in the run folder).
    Under ``torchrun`` every rank trains (data parallel) and only global rank 0 exports, logs to
    MLflow, writes the ledger row and the report; other ranks return ``{"rank": r, ...}``."""
    from curation.atomic import read_json, write_text
    from curation.config import load_config
    from curation.layout import DataLayout
    from training import curriculum, ledger
    from training.data.sets import load_training_set
    from training.trainer import stage_checkpoints, train_stage

    layout = DataLayout.at(data_root)
    cfg = load_config(profile, config_dir)
    scheme = scheme_key(scheme)
    t = curriculum._training(cfg)
    stage = _stage(cfg, scheme, tier)
    rows, set_info = load_training_set(layout, tier)
    parent, init_folder = _parent(layout, stage)
    cap = t.get("max_steps_per_stage")
    cap = int(cap) if cap else None
    dist = distributed_env()
    fp = fingerprint(cfg, stage, set_info, parent, backbone, cap, dist["world"])
    out = stage_dir(layout, scheme, tier) / fp
    key = partition_key(scheme, tier)
    done = read_json(out / "report.json")
    if done and done.get("fingerprint") == fp:
        log(f"{key}: reusing the finished run {layout.rel(out)} (fingerprint {fp})")
        write_text(stage_dir(layout, scheme, tier) / "current.json",
                   json.dumps({"fingerprint": fp, "report": layout.rel(out / "report.json")}))
        return {**done, "reused": True}

    log(f"{key}: training {len(rows)} images at {stage.tier.side}px ({stage.epochs:g} epochs"
        f"{f', at most {cap} steps' if cap else ''}) from {stage.init_from} into {layout.rel(out)}")
    res = train_stage(cfg, scheme, tier, rows, out, max_steps=cap, backbone=backbone,
                      checkpoint_every=int(t.get("checkpoint_every") or 0),
                      resume=True, init_checkpoint=init_folder,
                      latent_cache_dir=(layout.root / "cache" / "latents" / tier) if scheme != "III" else None,
                      precompute_latents=scheme != "III", callbacks=callbacks, devices=dist["devices"],
                      num_nodes=dist["nodes"])
    if dist["rank"] != 0:
        return {"rank": dist["rank"], "fingerprint": fp, "steps": res.steps, "run_dir": layout.rel(out)}
    backbone_label = ledger_backbone = ("tiny (random init)" if backbone == "tiny" else backbone)
    row = ledger.LedgerRow.from_result(res, profile=cfg.name, run_id=None)
    row.extra.update(fingerprint=fp, backbone=ledger_backbone)
    device_hours = {"gpu_hours": row.gpu_hours, "cpu_hours": row.cpu_hours}

    release = set_info.get("release") or {}
    tags = {"uhrforge.scheme": scheme, "uhrforge.scheme_label": CLI_NAMES[scheme], "uhrforge.tier": tier,
            "uhrforge.fingerprint": fp, "uhrforge.backbone": backbone_label, "uhrforge.profile": cfg.name,
            "uhrforge.training_set": set_info["version"],
            **(release.get("tags") or {"uhrforge.release": "unreleased"})}
    if parent and parent.get("mlflow"):
        tags["uhrforge.parent_checkpoint_run"] = parent["mlflow"]["run_id"]
    mlflow_run = registered = None
    if tracking_uri:
        from training.tracking import log_training_run, register_checkpoint

        params = {"scheme": scheme, "tier": tier, "profile": cfg.name, "tier_side": stage.tier.side,
                  "paper_side": stage.tier.paper_side, "epochs_planned": stage.epochs, "init_from": str(stage.init_from),
                  "parent_fingerprint": parent["fingerprint"] if parent else None,
                  "parent_checkpoint": layout.rel(init_folder) if init_folder else None,
                  "training_set_version": set_info["version"], "training_set_images": len(rows),
                  "release": release.get("name") or "unreleased", "release_dvc_md5": release.get("dvc_md5"),
                  "fingerprint": fp, "backbone": backbone_label, "max_steps_per_stage": cap,
                  "partition_factors": stage.partition_factors, "patch": stage.patch}
        mlflow_run = log_training_run(tracking_uri, experiment, res, out_dir=out, params=params, tags=tags,
                                      device_hours=device_hours)
        registered = register_checkpoint(tracking_uri, mlflow_run, scheme, tags,
                                         description=f"{CLI_NAMES[scheme]} {tier}, fingerprint {fp}, backbone {backbone_label}")
        row.run_id = mlflow_run["run_id"]
    ledger.append(ledger_path(layout), row)
    cks = {k: layout.rel(v) for k, v in stage_checkpoints(out, scheme, tier).items()}
    report = {
        "partition": key, "scheme": scheme, "scheme_label": CLI_NAMES[scheme], "tier": tier, "fingerprint": fp,
        "run_dir": layout.rel(out), "weights": layout.rel(res.weights["folder"]) if res.weights else None,
        "weights_format": (res.weights or {}).get("format"), "checkpoints": cks,
        "steps": res.steps, "samples": res.samples, "epochs": res.epochs, "epochs_planned": stage.epochs,
        "wall_clock_s": res.wall_clock_s, "device_type": res.device_type, "device_count": res.device_count,
        "world_size": dist["world"],
        "gpu_hours": row.gpu_hours, "cpu_hours": row.cpu_hours, "samples_per_s": row.samples_per_s,
        "device_seconds_per_sample": row.device_seconds_per_sample, "resumed_from_step": res.resumed_from_step,
        "first_loss": res.losses[0][1] if res.losses else None, "last_loss": res.losses[-1][1] if res.losses else None,
        "training_set": {"version": set_info["version"], "images": len(rows), "manifest": set_info.get("manifest")},
        "release": release.get("name") or "unreleased", "release_dvc_md5": release.get("dvc_md5"),
        "init_from": str(stage.init_from), "parent_fingerprint": parent["fingerprint"] if parent else None,
        "backbone": backbone_label, "profile": cfg.name, "mlflow": mlflow_run, "registered_model": registered,
        "latents": {k: res.extra.get(k) for k in ("latent_precompute_s", "latents_encoded", "latents_already_cached",
                                                  "latent_cache_hits", "latent_cache_misses") if k in res.extra},
        "reused": False,
    }
    write_text(out / "report.json", json.dumps(report, indent=1, default=str))
    write_text(stage_dir(layout, scheme, tier) / "current.json",
               json.dumps({"fingerprint": fp, "report": layout.rel(out / "report.json")}))
    return report
