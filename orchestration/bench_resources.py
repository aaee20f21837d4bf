"""The bench's resource, configured from the environment (embedded defaults under the data root).

Read through :func:`orchestration.resources.env_setting`, like every other setting.

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
* ``UHR_LAION_CLIP``       CLIP ViT-L/14 (hub id or folder) of the ``aesthetics`` metric -- the same
                           model as the LAION aesthetic scorer of the curation (default the hub id)
* ``UHR_AESTHETIC_MLP``    the ``aesthetics`` metric's MLP head (``sac+logos+ava1-l14-linearMSE.pth``)
* ``UHR_CLIPSCORE_CLIP``   CLIP ViT-B/16 of ``clipscore``; ``UHR_FGCLIP2_MODEL`` FG-CLIP2 of ``fgclip2``
* ``UHR_PROFILE``          the profile whose ``judges.bench`` section configures the MSFI / ICS
                           judge (model, prompts, request settings; default ``paper``)
* ``UHR_BENCH_REFERENCE_PROMPTS``  the local copy of PixVerve-95K's ``eval/util/build_prompts.py``
                           (or a folder holding it) that ``msfi`` / ``ics`` read the reference's
                           judge prompts from (default ``judges.bench.reference_prompts``; none:
                           those two are "not available", ``msfi_strict`` / ``ics_strict`` run)

The judge's endpoint and API-key variable name come from the ``vlm`` resource
(``UHR_VLM_ENDPOINT`` / ``UHR_VLM_API_KEY_ENV``, :class:`orchestration.resources.VLMEndpoint`),
like every VLM use; no endpoint: the offline ``heuristic`` judge, reported as ``<metric>_heuristic``
(``msfi_strict_heuristic``, ...). ``uhr bench --judge / --judge-endpoint / --judge-model /
--reference-prompts`` are explicit overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from dagster import ConfigurableResource

from evaluation.runner import make_judge  # noqa: F401  (re-exported)
from orchestration.resources import VLMEndpoint, default_data_root, env_flag, env_setting, vlm_endpoint_from_env


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
    #: the profile whose ``judges.bench`` configures the judge
    profile: str = "paper"
    #: explicit judge overrides (``uhr bench`` options): ``auto`` / ``vllm`` / ``heuristic`` / ``none``,
    #: an endpoint winning over the ``vlm`` resource's, a model over ``judges.bench.model``
    judge_backend: str = "auto"
    judge_endpoint: str | None = None
    judge_model: str | None = None
    #: the reference's prompts file of ``msfi`` / ``ics`` (None: ``judges.bench.reference_prompts``)
    reference_prompts: str | None = None
    #: model locations of the weight-based metrics (None: each metric's default hub id)
    laion_clip: str | None = None
    aesthetic_mlp: str | None = None
    clipscore_clip: str | None = None
    fgclip2_model: str | None = None

    def metric_options(self) -> dict[str, dict[str, str]]:
        """``{metric: {option: value}}`` for the configured model locations (``create_metric`` kwargs)."""
        opts = {"aesthetics": {"clip_model": self.laion_clip, "mlp_path": self.aesthetic_mlp},
                "clipscore": {"clip_model": self.clipscore_clip},
                "fgclip2": {"model": self.fgclip2_model}}
        return {m: {k: v for k, v in o.items() if v} for m, o in opts.items() if any(o.values())}

    def model_dir(self, model: str) -> Path:
        return Path(self.bench_root) / model

    def out_dir(self, model: str) -> Path:
        return Path(self.data_root) / "bench" / model

    def report_dir(self) -> Path:
        return Path(self.data_root) / "reports" / "bench" / "all"

    def judge(self, vlm: VLMEndpoint | None = None) -> Any:
        """The VLM judge client for MSFI / ICS (None with backend ``none``): ``judges.bench`` of the
        profile, the endpoint and API-key variable name of ``vlm`` (the Dagster resource; outside
        Dagster, the one :func:`~orchestration.resources.vlm_endpoint_from_env` builds)."""
        from curation.config import load_config
        from curation.vlm import use_config

        vlm = vlm if vlm is not None else vlm_endpoint_from_env()
        section = use_config(load_config(self.profile), "bench", endpoint=self.judge_endpoint or vlm.endpoint,
                             api_key_env=vlm.api_key_env)
        if self.judge_model:
            section["model"] = self.judge_model
        return make_judge(self.judge_backend, section, base_dir=self.data_root)

    def reference_prompts_path(self) -> str | None:
        """The reference prompts file of ``msfi`` / ``ics``: this setting (``uhr bench
        --reference-prompts``, ``UHR_BENCH_REFERENCE_PROMPTS``), else the profile's
        ``judges.bench.reference_prompts``; None when neither names one."""
        if self.reference_prompts:
            return self.reference_prompts
        from curation.config import load_config

        return load_config(self.profile).get("judges.bench.reference_prompts") or None

    def bench_config(self, vlm: VLMEndpoint | None = None, **overrides: Any):
        from evaluation.runner import BenchConfig

        kw = dict(eval_size=self.eval_size, metrics=self.metrics, judge=self.judge(vlm), data_root=self.data_root,
                  tracking_uri=self.mlflow_tracking_uri, mlflow=self.mlflow, metric_options=self.metric_options(),
                  reference_prompts=self.reference_prompts_path())
        kw.update(overrides)
        return BenchConfig(**kw)


def bench_settings_from_env(data_root: str | None = None, env: Mapping[str, str] | None = None,
                            **overrides: Any) -> BenchSettings:
    """The bench settings from the environment (see the module docstring); ``overrides`` (fields of
    :class:`BenchSettings`, e.g. the ``uhr bench`` options) win over it, None values ignored."""
    root = data_root or default_data_root(env)
    bench_root = overrides.get("bench_root") or env_setting("UHR_BENCH_ROOT", env) or str(Path(root) / "bench_models")
    reference = env_setting("UHR_BENCH_REFERENCE", env)
    if not reference:
        guess = Path(bench_root).parent / "bench_reference"
        reference = str(guess) if guess.is_dir() else None
    metrics = [m.strip() for m in (env_setting("UHR_BENCH_METRICS", env) or "").split(",") if m.strip()] or None
    kw = dict(
        data_root=root,
        bench_root=bench_root,
        prompts_file=env_setting("UHR_BENCH_PROMPTS", env) or str(Path(bench_root) / "benchmark.jsonl"),
        reference_dir=reference,
        mlflow_tracking_uri=env_setting("MLFLOW_TRACKING_URI", env),
        mlflow=env_flag("UHR_BENCH_MLFLOW", env, default=True),
        eval_size=int(env_setting("UHR_BENCH_EVAL_SIZE", env) or 4096),
        metrics=metrics,
        laion_clip=env_setting("UHR_LAION_CLIP", env),
        aesthetic_mlp=env_setting("UHR_AESTHETIC_MLP", env),
        clipscore_clip=env_setting("UHR_CLIPSCORE_CLIP", env),
        fgclip2_model=env_setting("UHR_FGCLIP2_MODEL", env),
        profile=env_setting("UHR_PROFILE", env) or "paper",
        reference_prompts=env_setting("UHR_BENCH_REFERENCE_PROMPTS", env),
    )
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return BenchSettings(**kw)
