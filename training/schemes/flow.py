"""The flow-matching (rectified flow) objective shared by every scheme.

``x_t = (1 - t) x_0 + t eps`` with ``t`` in [0, 1] (diffusers' FlowMatchEulerDiscreteScheduler
convention, ``t = sigma``), the network predicts the velocity ``v = eps - x_0``, loss = MSE.

The timestep distribution is not in the paper: logit-normal(0, 1) (as in SD3 / FLUX training
recipes) by default, ``uniform`` on request.

Determinism for resume: the noise and timesteps of a batch come from a generator seeded by
``(seed, index of the batch's first sample)``, and the data order is a function of the sample
index too (training/data/buckets.py), so a run resumed from a checkpoint sees exactly the noise
and data the uninterrupted run saw, whatever RNG state was or was not restored.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F


def batch_generator(seed: int, first_index: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + int(first_index)) % (2**63 - 1))


def sample_timesteps(n: int, gen: torch.Generator, kind: str = "logit_normal") -> torch.Tensor:
    if kind == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=gen))
    if kind == "uniform":
        return torch.rand(n, generator=gen)
    raise ValueError(f"unknown timestep sampling {kind!r}")


def flow_pair(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, v_target)`` for clean ``x0`` (batch first), noise and per-sample ``t``."""
    tt = t.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return (1 - tt) * x0 + tt * noise, noise - x0


class FlowMatchingModule(L.LightningModule):
    """Base LightningModule: subclasses give ``prepare(batch) -> (x0, cond)`` and
    ``predict(x_t, t, cond) -> v``, and choose their trainable parameters."""

    scheme = "base"

    def __init__(self, lr: float, seed: int = 0, weight_decay: float = 0.0, betas=(0.9, 0.999),
                 timestep_sampling: str = "logit_normal"):
        super().__init__()
        self.lr = float(lr)
        self.seed = int(seed)
        self.weight_decay = float(weight_decay)
        self.betas = tuple(float(b) for b in betas)
        self.timestep_sampling = timestep_sampling
        self.loss_history: list[tuple[int, float]] = []  # (global_step, loss) of this process

    # -- to implement -------------------------------------------------------------------------
    def prepare(self, batch) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def flow_loss(self, batch) -> torch.Tensor:
        x0, cond = self.prepare(batch)
        first = int(batch["index"][0]) if "index" in batch else int(self.global_step)
        gen = batch_generator(self.seed, first)
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float32).to(x0.device, x0.dtype)
        t = sample_timesteps(x0.shape[0], gen, self.timestep_sampling).to(x0.device)
        x_t, target = flow_pair(x0, noise, t)
        v = self.predict(x_t, t, cond)
        return F.mse_loss(v.float(), target.float())

    def training_step(self, batch, batch_idx):
        loss = self.flow_loss(batch)
        self.log("train/loss", loss, on_step=True, prog_bar=False, batch_size=len(batch["index"]))
        self.loss_history.append((int(self.global_step), float(loss.detach())))
        return loss

    def configure_optimizers(self):
        # AdamW: the optimiser is not in the paper
        return torch.optim.AdamW(self.trainable_parameters(), lr=self.lr, betas=self.betas,
                                 weight_decay=self.weight_decay)
