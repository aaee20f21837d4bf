"""Exponential moving average of the trained parameters (not in the paper: ``training.ema``).

:class:`EMACallback` keeps a float32 shadow copy of every trainable parameter and, after each
optimizer step, moves it towards the live weights: ``shadow <- d shadow + (1 - d) param`` with
``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the usual warm-up, so early shadows
are not stuck at the initial weights). Its state (shadow tensors, update count) is part of every
Lightning checkpoint (``state_dict`` / ``load_state_dict``), so a resumed run continues the same
average. :meth:`EMACallback.swapped` temporarily loads the shadow into the module (export,
bench), then restores the live weights.

Only the trainable parameters are averaged (LoRA: the adapter only). Under DeepSpeed ZeRO-3 the
parameters are partitioned across ranks and a per-rank shadow would average fragments: the
trainer refuses that combination.
"""

from __future__ import annotations

from contextlib import contextmanager

import lightning as L
import torch


class EMACallback(L.Callback):
    def __init__(self, decay: float):
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow: dict[str, torch.Tensor] | None = None
        self.updates = 0
        self._prev_step: int | None = None

    @staticmethod
    def _params(module) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in module.named_parameters() if p.requires_grad}

    def on_train_start(self, trainer, pl_module) -> None:
        if self.shadow is None:  # fresh run; a resumed one got its shadow from load_state_dict
            self.shadow = {n: p.detach().float().clone() for n, p in self._params(pl_module).items()}
        self.shadow = {n: t.to(pl_module.device) for n, t in self.shadow.items()}
        self._prev_step = trainer.global_step

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._prev_step:  # mid-accumulation: no optimizer step yet
            return
        self._prev_step = trainer.global_step
        d = self.current_decay()
        for n, p in self._params(pl_module).items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates,
                "shadow": {n: t.detach().cpu() for n, t in (self.shadow or {}).items()}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state.get("updates", 0))
        shadow = state.get("shadow") or {}
        self.shadow = {n: t.float() for n, t in shadow.items()} or None

    @contextmanager
    def swapped(self, module):
        """The module with the shadow weights inside the block, its live weights after it."""
        params = self._params(module)
        live = {n: p.detach().clone() for n, p in params.items()}
        try:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(self.shadow[n].to(p.device, p.dtype))
            yield module
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(live[n])
