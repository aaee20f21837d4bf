"""What MSFI and ICS need from a judge, and how a stand-in judge is kept apart.

A judge is any object with the interface of :class:`curation.vlm.VLMClient`:

* ``backend`` (``"vllm"`` for an OpenAI-compatible model endpoint, ``"heuristic"`` for the
  offline statistics judge, or another registered backend) and ``model`` (the served name);
* ``run(requests: list[curation.vlm.VLMRequest]) -> list[JudgeResult]`` (one result per
  request, in order, each with ``ok``, ``answer``, ``reason``, ``prompt_hash``);
* ``prompt_for(task)`` -> an object with ``sha256`` (the prompt file's hash).

Only a model endpoint produces the published metric: results of any other backend are
reported under ``<metric>_<backend>`` (``msfi_heuristic``, ``ics_heuristic``), never under
``msfi`` / ``ics``, and every row carries ``judge_backend``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: backends whose answers come from a vision-language model (the published protocol)
MODEL_BACKENDS = frozenset({"vllm"})


def judge_backend(judge: Any) -> str | None:
    return None if judge is None else str(getattr(judge, "backend", "") or "unknown")


def is_model_judge(judge: Any) -> bool:
    return judge is not None and judge_backend(judge) in MODEL_BACKENDS


def metric_name_for(base: str, judge: Any) -> str:
    """``base`` for a model judge (or none), ``f"{base}_{backend}"`` for a stand-in judge."""
    if judge is None or is_model_judge(judge):
        return base
    return f"{base}_{judge_backend(judge)}"


def judge_info(judge: Any, tasks: tuple[str, ...]) -> dict[str, Any]:
    """Backend, model and prompt hashes of a judge for the given tasks (for run params)."""
    if judge is None:
        return {"backend": None, "model": None, "prompt_hashes": {}}
    hashes: dict[str, str] = {}
    for t in tasks:
        try:
            hashes[t] = judge.prompt_for(t).sha256
        except Exception as exc:  # a missing prompt file is reported, not fatal here
            hashes[t] = f"unavailable ({type(exc).__name__})"
    return {"backend": judge_backend(judge), "model": getattr(judge, "model", None), "prompt_hashes": hashes}


def save_view(data: bytes, views_dir: str | None, name: str) -> str | None:
    """Write the exact bytes a judge was sent under ``views_dir`` (None: keep nothing)."""
    if not views_dir:
        return None
    p = Path(views_dir) / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return os.fspath(p)


def no_judge_reason(metric: str) -> str:
    return (f"no judge client: {metric} needs a VLM judge (curation.vlm.create_vlm_client with an endpoint "
            f"and model); none was given to the runner")
