"""The bench's resource, configured from the environment (embedded defaults under the data root).

* ``UHR_BENCH_ROOT``       folder holding one sub-folder of generated images per model
                           (default ``<data root>/bench_models``); each sub-folder is a
                           ``bench_models`` partition
* ``UHR_BENCH_PROMPTS``    the bench prompts file, JSONL ``file_name, short_caption, long_caption``
                           (default ``<bench root>/benchmark.jsonl``)
* ``UHR_BENCH_REFERENCE``  folder of the real bench images for the FID family (default
                           ``<bench root>/../bench_reference`` when it exists, else none)
* ``UHR_BENCH_EVAL_SIZE``  FID evaluation size S (default 4096; 8192 / 10240 for 8K / 10K)
* ``UHR_BENCH_METRICS``    comma-separated metric names to run (default: all registered)
* ``MLFLOW_TRACKING_URI``  MLflow store (default ``sqlite:///<data root>/mlflow/mlflow.db``);
                           ``UHR_BENCH_MLFLOW=0`` logs no run
* ``UHR_JUDGE_BACKEND``    ``auto`` (default: ``vllm`` when an endpoint is set, else the offline
                           ``heuristic`` judge, reported as ``msfi_heuristic`` / ``ics_heuristic``),
                           ``vllm``, ``heuristic`` or ``none`` (MSFI / ICS not available)
* ``UHR_JUDGE_ENDPOINT`` / ``UHR_JUDGE_MODEL`` / ``UHR_JUDGE_API_KEY_ENV``  the judge endpoint
                           (OpenAI-compatible), its served model name (default the paper's
                           ``Qwen3.5-35B-A3B``) and the name of the env variable with its API key
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource

from evaluation.runner import PAPER_JUDGE_MODEL, make_judge  # noqa: F401  (re-exported)


class BenchSettings(ConfigurableResource):
    """Where the bench lives and how it is scored (see the module docstring)."""

    data_root: str
    bench_root: str
    prompts_file: str
    reference_dir: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow: bool = True
    eval_size: int = 4096
    metrics: list[str] | None = None
    judge_backend: str = "auto"
    judge_endpoint: str | None = None
    judge_model: str | None = None
    judge_api_key_env: str | None = None

    def model_dir(self, model: str) -> Path:
        return Path(self.bench_root) / model

    def out_dir(self, model: str) -> Path:
        return Path(self.data_root) / "bench" / model

    def report_dir(self) -> Path:
        return Path(self.data_root) / "reports" / "bench" / "all"

    def judge(self) -> Any:
        """The VLM judge client for MSFI / ICS (None with backend ``none``)."""
        return make_judge(self.judge_backend, self.judge_endpoint, self.judge_model, self.judge_api_key_env,
                          Path(self.data_root) / "cache" / "vlm")

    def bench_config(self, **overrides: Any):
        from evaluation.runner import BenchConfig

        kw = dict(eval_size=self.eval_size, metrics=self.metrics, judge=self.judge(), data_root=self.data_root,
                  tracking_uri=self.mlflow_tracking_uri, mlflow=self.mlflow)
        kw.update(overrides)
        return BenchConfig(**kw)


def bench_settings_from_env(data_root: str | None = None) -> BenchSettings:
    env = os.environ
    root = data_root or env.get("UHR_DATA_ROOT") or str(Path("data") / "demo")
    bench_root = env.get("UHR_BENCH_ROOT") or str(Path(root) / "bench_models")
    reference = env.get("UHR_BENCH_REFERENCE")
    if not reference:
        guess = Path(bench_root).parent / "bench_reference"
        reference = str(guess) if guess.is_dir() else None
    metrics = [m.strip() for m in env.get("UHR_BENCH_METRICS", "").split(",") if m.strip()] or None
    return BenchSettings(
        data_root=root,
        bench_root=bench_root,
        prompts_file=env.get("UHR_BENCH_PROMPTS") or str(Path(bench_root) / "benchmark.jsonl"),
        reference_dir=reference,
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
        mlflow=env.get("UHR_BENCH_MLFLOW", "1").strip().lower() not in ("0", "false", "no", "off"),
        eval_size=int(env.get("UHR_BENCH_EVAL_SIZE") or 4096),
        metrics=metrics,
        judge_backend=env.get("UHR_JUDGE_BACKEND") or "auto",
        judge_endpoint=env.get("UHR_JUDGE_ENDPOINT") or None,
        judge_model=env.get("UHR_JUDGE_MODEL") or None,
        judge_api_key_env=env.get("UHR_JUDGE_API_KEY_ENV") or None,
    )
