"""DeepSpeed ZeRO configs for GPU training (not in the paper: the paper names H20 GPUs and
GPU-hours, not the parallelism). ``zero2.json``: optimizer states and gradients sharded;
``zero3.json``: parameters too (the 4B backbone at 8K/10K). No optimizer section: the scheme's
torch AdamW (with its lr from configs/paper.yaml) is passed to ``deepspeed.initialize`` /
Lightning, so one optimizer definition serves CPU and GPU runs.

:func:`load_ds_config` returns a config dict with the run's micro batch, accumulation and
precision filled in (``bf16`` off for ``32-true``, e.g. the CPU tests with ``DS_ACCELERATOR=cpu``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = {2: HERE / "zero2.json", 3: HERE / "zero3.json"}


def load_ds_config(stage: int, micro_batch: int = 1, grad_accum: int = 1, precision: str = "bf16-mixed",
                   world_size: int = 1) -> dict:
    if stage not in FILES:
        raise ValueError(f"ZeRO stage {stage} has no config (2 or 3)")
    cfg = copy.deepcopy(json.loads(FILES[stage].read_text()))
    cfg["train_micro_batch_size_per_gpu"] = int(micro_batch)
    cfg["gradient_accumulation_steps"] = int(grad_accum)
    cfg["train_batch_size"] = int(micro_batch) * int(grad_accum) * int(world_size)
    cfg["bf16"] = {"enabled": str(precision).startswith("bf16")}
    if str(precision).startswith("16"):
        cfg["fp16"] = {"enabled": True}
    return cfg
