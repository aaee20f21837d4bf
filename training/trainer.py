"""Train one scheme x tier with Lightning: build, fit, checkpoint (safetensors), resume, export.

:func:`train_stage` is the one entry point (the Dagster asset / Pipes script / ``uhr train``
that come later call it):

* the stage comes from the curriculum (:func:`training.curriculum.ladder`), the data from
  corpus records (:mod:`training.data.datasets`), the module from :func:`build_module`
  (``backbone="tiny"``: the random-weight tiny models, offline; anything else is a
  ``from_pretrained`` path or repo id for the production backbone);
* checkpoints are :mod:`training.checkpoint_io` folders (safetensors + JSON, never pickle):
  ``<out>/checkpoints/step-<n>`` every ``checkpoint_every`` steps and at the end, plus
  ``epoch-<e>`` where a later stage starts (``init_from: {tier, epoch}``), and
  ``latest.json`` (written last, atomically) naming the newest;
* ``resume=True`` continues from ``latest.json`` (Lightning restores step, loops and optimizer
  through the checkpoint plugin; the data stream restarts at the restored step, and noise is a
  function of the sample index, so the loss trajectory is the uninterrupted one);
* ``<out>/losses.jsonl`` gets one line per step (appended, flushed);
* ``training.gradient_checkpointing`` (``true``, ``false`` or ``gpu``: on GPUs only) recomputes
  activations in backward; ``training.ema: {decay: d}`` keeps an EMA of the trainable weights
  (training/ema.py), saved in every checkpoint;
* at the end the trained weights are exported with ``export_weights`` (safetensors) to
  ``<out>/weights`` (with EMA: the average there, the live weights in ``<out>/weights_raw``) and a ledger row (training/ledger.py) describes the run.

On CPU Lightning runs ``strategy="auto"``; on GPUs ``deepspeed_stage`` selects Lightning's
``DeepSpeedStrategy`` with training/deepspeed/zero{2,3}.json (Lightning refuses DeepSpeed on
CPU; DeepSpeed's own sharded checkpoints are torch files, so under DeepSpeed only the exported
weights are safetensors).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from . import curriculum
from .checkpoint_io import SafetensorsCheckpointIO, load_tree
from .ema import EMACallback
from .data.datasets import TierDataset, TierStream, records_from


@dataclass
class TrainResult:
    scheme: str
    tier: str
    steps: int
    samples: int
    epochs: float
    wall_clock_s: float
    device_type: str
    device_count: int
    losses: list[tuple[int, float]]
    checkpoint: str | None
    weights: dict | None
    resumed_from_step: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def _tcfg(cfg) -> dict:
    return cfg.data["training"] if hasattr(cfg, "data") else cfg["training"]


def device_description() -> tuple[str, str, int]:
    """(accelerator, device type, count): a GPU name, or the CPU (counted as one CPU device)."""
    if torch.cuda.is_available():
        return "gpu", torch.cuda.get_device_name(0), torch.cuda.device_count()
    import platform

    return "cpu", f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)", 1


def build_module(stage: curriculum.Stage, cfg, backbone: str = "tiny", seed: int | None = None,
                 latent_cache_dir: str | os.PathLike | None = None):
    """The LightningModule of a stage. ``backbone="tiny"``: tiny random-weight models (DESIGN
    section 8 for Flux2; training/schemes/pixel.py for III) and the hash text encoder."""
    t = _tcfg(cfg)
    seed = int(t.get("seed", 0) if seed is None else seed)
    common = dict(lr=stage.lr, seed=seed, weight_decay=float(t.get("weight_decay", 0.0)),
                  betas=tuple(t.get("betas", (0.9, 0.999))), timestep_sampling=t.get("timestep_sampling", "logit_normal"))
    from .schemes.text import HashTextEncoder

    if stage.scheme == "III":
        from .schemes.pixel import SchemeIII, tiny_pixel_model

        if backbone != "tiny":  # pragma: no cover - no production pixel backbone in this repository
            from .schemes.pixel import TinyPatchDiffusion

            model = TinyPatchDiffusion.from_pretrained(backbone)
        else:
            model = tiny_pixel_model(patch_size=stage.patch, seed=seed)
        return SchemeIII(model, HashTextEncoder(dim=model.config.text_dim, seed=seed), **common)

    from .data.latents import Flux2LatentEncoder, LatentCache, tiny_flux2_vae
    from .schemes.flux2 import SchemeIFull, SchemeII, SchemeILoRA, load_flux2_transformer, tiny_flux2_transformer

    if backbone == "tiny":
        transformer = tiny_flux2_transformer(seed=seed)
        latent = Flux2LatentEncoder(tiny_flux2_vae(seed=seed))
        text = HashTextEncoder(dim=transformer.config.joint_attention_dim, seed=seed)
    else:  # pragma: no cover - needs the FLUX.2-klein weights
        from .schemes.text import Flux2KleinTextEncoder

        b = t["backbones"]["flux2"]
        transformer = load_flux2_transformer(backbone, b.get("transformer_subfolder", "transformer"))
        latent = Flux2LatentEncoder.from_pretrained(backbone, b.get("vae_subfolder", "vae"))
        text = Flux2KleinTextEncoder(backbone)
    cache = LatentCache(latent_cache_dir, latent.fingerprint) if latent_cache_dir else None
    if stage.scheme == "I_full":
        return SchemeIFull(transformer, latent, text, latent_cache=cache, **common)
    if stage.scheme == "I_lora":
        return SchemeILoRA(transformer, latent, text, rank=int(stage.extra.get("rank", 32)),
                           alpha=stage.extra.get("alpha"), latent_cache=cache, **common)
    if stage.scheme == "II":
        return SchemeII(transformer, latent, text, window_schedule=stage.partition_factors, latent_cache=cache,
                        **common)
    raise ValueError(f"unknown scheme {stage.scheme!r}")


def load_init_weights(module, checkpoint_folder: str | os.PathLike) -> None:
    """Start a stage from another stage's checkpoint (``init_from: {tier, epoch}``): its module
    weights only (a new optimizer). Scheme III's patch embedding is resampled when the patch
    size changes between tiers (8K from 4K: 64 -> 128 px)."""
    state = load_tree(checkpoint_folder)["state_dict"]
    if module.scheme == "III":
        from .schemes.pixel import resample_patch_weights

        state = resample_patch_weights(state, module.state_dict())
    module.load_state_dict(state, strict=True)


class _StepCheckpoints(L.Callback):
    """step-<n> folders every ``every`` steps and at the end, epoch-<e> marks, latest.json, loss log."""

    def __init__(self, folder: Path, every: int, epoch_marks: dict[int, float], keep: int = 2,
                 loss_log: Path | None = None):
        self.folder, self.every, self.epoch_marks, self.keep = folder, int(every), epoch_marks, int(keep)
        self.loss_log = loss_log
        self.saved: list[str] = []

    def _save(self, trainer, name: str, latest: bool = True) -> None:
        path = self.folder / name
        trainer.save_checkpoint(path, weights_only=False)  # the strategy writes on global rank 0 only
        if latest and not trainer.is_global_zero:
            self.saved.append(name)
            self.saved = self.saved[-self.keep:]
        elif latest:
            tmp = self.folder / "latest.json.tmp"
            tmp.write_text(json.dumps({"checkpoint": name, "global_step": trainer.global_step}))
            os.replace(tmp, self.folder / "latest.json")
            self.saved.append(name)
            for old in self.saved[:-self.keep]:
                trainer.strategy.checkpoint_io.remove_checkpoint(self.folder / old)
            self.saved = self.saved[-self.keep:]

    def on_train_start(self, trainer, pl_module) -> None:
        self._prev_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.loss_log is not None and pl_module.loss_history and trainer.is_global_zero:
            s, loss = pl_module.loss_history[-1]
            with open(self.loss_log, "a") as fh:
                fh.write(json.dumps({"step": s, "loss": loss}) + "\n")
                fh.flush()
        stepped, self._prev_step = step != self._prev_step, step
        if not stepped:  # mid-accumulation: a checkpoint only right after an optimizer step
            return
        if step in self.epoch_marks:
            self._save(trainer, f"epoch-{curriculum._fmt(self.epoch_marks[step])}", latest=False)
        if self.every and step % self.every == 0:
            self._save(trainer, f"step-{step:08d}")

    def on_train_end(self, trainer, pl_module) -> None:
        name = f"step-{trainer.global_step:08d}"
        if not self.saved or self.saved[-1] != name:
            self._save(trainer, name)


def latest_checkpoint(folder: str | os.PathLike) -> tuple[Path, int] | None:
    p = Path(folder) / "latest.json"
    if not p.exists():
        return None
    info = json.loads(p.read_text())
    return Path(folder) / info["checkpoint"], int(info["global_step"])


def stage_checkpoints(out_dir: str | os.PathLike, scheme: str, tier: str) -> dict[str, Path]:
    """Checkpoints a finished stage offers to later stages, under their curriculum keys:
    ``<scheme>/<tier>/epoch-<e>`` for each epoch mark and ``<scheme>/<tier>/final`` (latest)."""
    folder = Path(out_dir) / "checkpoints"
    out: dict[str, Path] = {}
    for p in sorted(folder.glob("epoch-*")):
        if p.is_dir() and not p.name.endswith((".tmp", ".old")):
            out[curriculum.checkpoint_key(scheme, tier, float(p.name[len("epoch-"):]))] = p
    found = latest_checkpoint(folder)
    if found is not None:
        out[curriculum.checkpoint_key(scheme, tier, None)] = found[0]
    return out


def train_stage(cfg, scheme: str, tier: str, records, out_dir: str | os.PathLike, *, max_steps: int | None = None,
                epochs: float | None = None, batch_size: int | None = None, backbone: str = "tiny",
                checkpoint_every: int = 0, resume: bool = False, init_checkpoint: str | os.PathLike | None = None,
                seed: int | None = None, latent_cache_dir: str | os.PathLike | None = None, scale: float | None = None,
                accelerator: str | None = None, deepspeed_stage: int | None = None, num_workers: int = 0,
                devices: int = 1, num_nodes: int = 1, export: bool = True, precompute_latents: bool = False,
                callbacks: list | None = None) -> TrainResult:
    """Fit one stage. Steps: ``max_steps``, else ``epochs`` (default: the stage's) over the records.
    ``devices`` x ``num_nodes``: data-parallel processes (GPUs, or CPU processes with gloo DDP;
    under ``torchrun`` Lightning takes ranks from its environment); rank ``r`` of ``w`` reads the
    global batches ``r, r + w, ...``; only global rank 0 writes checkpoints, logs and weights.
    ``precompute_latents`` (Schemes I / II with ``latent_cache_dir``): encode every sample the run
    will read into the latent cache before fitting (one VAE pass, batched), so the fit reads
    cached latents only; counts and seconds go to ``extra``. ``callbacks``: more Lightning
    callbacks (progress, Pipes reporting)."""
    t = _tcfg(cfg)
    stage = next(s for s in curriculum.ladder(cfg, scheme, scale) if s.tier.name == tier)
    seed = int(t.get("seed", 0) if seed is None else seed)
    bs = int(batch_size or t.get("batch_size", 1))
    accum = int(t.get("grad_accumulation", 1))
    world = int(devices) * int(num_nodes)
    recs = records_from(records, t.get("buckets", {}).get("caption_field", "long_caption"))
    data = TierDataset(recs, stage.tier.pixels, t["buckets"]["ratios"], stage.tier.token_px, seed=seed,
                       crop_scale_range=t["buckets"].get("crop_scale_range", (1.0, 1.0)),
                       min_grid_side=max(max(f) for f in stage.partition_factors) if stage.partition_factors else 1)
    ep = stage.epochs if epochs is None else float(epochs)
    # an epoch is one pass of the bucketed batch order (a bucket's last batch may be short)
    per_epoch = TierStream(data, bs, seed=seed).order.batches_per_epoch()
    batches_per_step = accum * world

    def steps_for(e: float) -> int:
        return max(1, math.ceil(e * per_epoch / batches_per_step))

    steps = int(max_steps) if max_steps else steps_for(ep)
    # epoch marks a later stage starts from; a run capped below a mark (max_steps) saves it at its last step
    marks = {min(steps_for(e), steps): e
             for e in curriculum.checkpoint_epochs(curriculum.ladder(cfg, scheme, scale)).get(tier, [])}

    out = Path(out_dir)
    ck_dir = out / "checkpoints"
    ck_dir.mkdir(parents=True, exist_ok=True)
    module = build_module(stage, cfg, backbone, seed, latent_cache_dir)
    if init_checkpoint is not None and not resume:
        load_init_weights(module, init_checkpoint)

    ckpt_path, start = None, 0
    if resume:
        found = latest_checkpoint(ck_dir)
        if found is not None:
            ckpt_path, start = found
    stream = TierStream(data, bs, seed=seed, start=start * accum * world)  # global batches already consumed
    pre: dict = {}
    cache = getattr(module, "_encoders", {}).get("cache") if precompute_latents else None
    if cache is not None and int(os.environ.get("RANK", "0")) != 0:
        cache = None  # rank 0 fills the cache; the other ranks wait for it at the process-group barrier of fit
    if cache is not None:
        t_pre = time.perf_counter()
        ahead = TierStream(data, bs, seed=seed, start=start * accum * world,
                           limit=max(0, steps - start) * batches_per_step)
        for batch in ahead:
            cache.encode(module.latent_encoder, batch["pixels"], batch["key"])
        pre = {"latent_precompute_s": time.perf_counter() - t_pre, "latents_encoded": cache.misses,
               "latents_already_cached": cache.hits}
        cache.hits = cache.misses = 0
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers)

    acc, dev_type, dev_count = device_description()
    if accelerator:
        acc = accelerator
    dev_count = world if world > 1 else dev_count  # device-hours count every process of the run
    strategy: Any = "auto" if world == 1 else "ddp"
    gc = t.get("gradient_checkpointing", False)
    if gc is True or (gc == "gpu" and acc == "gpu"):
        module.enable_gradient_checkpointing()
    ema_cfg = t.get("ema")
    ema = EMACallback(float(ema_cfg["decay"] if isinstance(ema_cfg, dict) else ema_cfg)) if ema_cfg else None
    precision = "32-true"
    if acc == "gpu":  # pragma: no cover - GPU path
        precision = t.get("precision", "bf16-mixed")
        zs = deepspeed_stage if deepspeed_stage is not None else t.get("deepspeed_stage")
        if ema is not None and zs == 3:
            raise ValueError("training.ema with ZeRO-3: parameters are partitioned across ranks; use ZeRO-2 or no EMA")
        if zs:
            from lightning.pytorch.strategies import DeepSpeedStrategy

            from .deepspeed import load_ds_config

            strategy = DeepSpeedStrategy(config=load_ds_config(int(zs), micro_batch=bs,
                                                               grad_accum=int(t.get("grad_accumulation", 1)),
                                                               precision=precision))
    cb = _StepCheckpoints(ck_dir, checkpoint_every, marks, loss_log=out / "losses.jsonl")
    plugins = [SafetensorsCheckpointIO()] if strategy in ("auto", "ddp") else []
    trainer = L.Trainer(accelerator=acc, devices=int(devices), num_nodes=int(num_nodes), strategy=strategy,
                        precision=precision, max_steps=steps, max_epochs=-1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        # the EMA update of a step comes before that step's checkpoint saves it
                        callbacks=[*([ema] if ema else []), cb, *(callbacks or [])], plugins=plugins,
                        num_sanity_val_steps=0,
                        accumulate_grad_batches=accum,
                        default_root_dir=str(out))
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=str(ckpt_path) if ckpt_path else None)
    wall = time.perf_counter() - t0
    done = trainer.global_step - start
    consumed = list(zip(range(done * batches_per_step), stream.order.batches(start * batches_per_step)))
    samples = sum(len(ref.items) for _, ref in consumed)
    weights = None
    if export and trainer.is_global_zero and ema is not None:  # weights/ = the average, weights_raw/ = the live ones
        module.export_weights(out / "weights_raw")
        with ema.swapped(module):
            weights = module.export_weights(out / "weights")
        weights["ema"] = {"decay": ema.decay, "updates": ema.updates, "raw_folder": str(out / "weights_raw")}
    elif export and trainer.is_global_zero:
        weights = module.export_weights(out / "weights")
    res = TrainResult(scheme=scheme, tier=tier, steps=trainer.global_step, samples=samples,
                      epochs=trainer.global_step * batches_per_step / per_epoch, wall_clock_s=wall, device_type=dev_type,
                      device_count=dev_count, losses=list(module.loss_history),
                      checkpoint=str(cb.folder / cb.saved[-1]) if cb.saved else None, weights=weights,
                      resumed_from_step=start,
                      extra={"host": socket.gethostname(), "accelerator": acc, "batch_size": bs,
                             "images": len(recs), "tier_side": stage.tier.side, "grid": list(stage.tier.grid),
                             "token_px": stage.tier.token_px, "lr": stage.lr, "trainable": module.n_trainable(),
                             "region_reads": data.region_reads, "init_from": str(stage.init_from),
                             "grad_accumulation": accum, "world_size": world,
                             "batches_per_epoch": per_epoch, "samples_per_s": (samples / wall) if wall > 0 else math.nan,
                             **pre, **({"latent_cache_hits": cache.hits, "latent_cache_misses": cache.misses}
                                       if cache is not None else {})})
    if trainer.is_global_zero:
        (out / "result.json").write_text(json.dumps(res.to_json(), indent=1, default=str))
    res.extra["global_rank"] = trainer.global_rank
    return res
