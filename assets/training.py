"""Training assets (paper 3.2 / 4.1 / appendix E): training sets, checkpoints, checkpoint bench.

* ``training_set`` (partition = tier 4K / 8K / 10K): the final corpus minus the bench split with
  captions as prompts and aspect buckets at the tier's budget, recording the release (DVC
  version) it belongs to (:func:`training.data.sets.build_training_set`).
* ``checkpoint`` (partition = scheme x tier, e.g. ``III_8K``, one per stage of the Table A1
  ladders): trains the stage in a subprocess launched through Dagster Pipes
  (``python -m orchestration.pipes_train``; ``PipesK8sClient`` + torchrun in production), which streams
  its log and reports the materialisation (checkpoint folder, MLflow run and registered model
  version, device hours) with the checkpoint's fingerprint as data version. A stage that starts
  from an earlier tier (``init_from``) needs that tier's checkpoint first (``uhr train``
  materialises a ladder in order).
* ``checkpoint_bench`` (same partitions): the checkpoint as an image generator
  (:func:`training.generate.load_generator`) on the bench split's prompts and references at
  the tier's resolution, scored by the bench runner like any model (``bench_scores``' code
  path); its MLflow run carries ``uhrforge.checkpoint_run``, and the generated folder is
  registered as a ``bench_models`` partition so the Table-3 report lists it.
"""


from pathlib import Path

from dagster import (AllPartitionMapping, AssetDep, AssetExecutionContext, Config, MaterializeResult, MetadataValue,
                     StaticPartitionMapping, StaticPartitionsDefinition, asset)

from orchestration.automation import GPU_POOL
from orchestration.bench_resources import BenchSettings
from orchestration.resources import CurationSettings, MLflowSettings, VLMEndpoint
from orchestration.training_launch import TrainingLauncher

TIERS = ("4K", "8K", "10K")
TRAINING_EXPERIMENT = "uhrforge-training"


def _checkpoint_keys() -> list[str]:
    from curation.config import load_config
    from training.run import partition_keys

    return partition_keys(load_config("paper"))


tier_partitions = StaticPartitionsDefinition(list(TIERS))
checkpoint_partitions = StaticPartitionsDefinition(_checkpoint_keys())
_TIER_OF = {k: k.rpartition("_")[2] for k in checkpoint_partitions.get_partition_keys()}
tier_to_checkpoints = StaticPartitionMapping({t: [k for k, v in _TIER_OF.items() if v == t] for t in TIERS})


class TrainingSetConfig(Config):
    """``release``: train on this release's images (default: the release equal to the current
    final corpus minus the bench split, else the unreleased corpus, recorded as such)."""

    release: str | None = None


class CheckpointConfig(Config):
    """``backbone``: ``tiny`` (random-init tiny models, CPU) or a local path / HF-cache id of the
    production backbone (FLUX.2-klein-base-4B for I and II)."""

    backbone: str = "tiny"


def _cfg(settings: CurationSettings):
    return settings.config()


@asset(
    partitions_def=tier_partitions,
    deps=[AssetDep("final_corpus", partition_mapping=AllPartitionMapping()), "bench_split"],
    group_name="training",
    kinds={"parquet"},
    code_version="training-set-1",
    description="Per tier: the final corpus minus the bench split, captions as prompts, aspect buckets at the "
                "tier's pixel budget, and the release (DVC version) it came from.",
)
def training_set(context: AssetExecutionContext, config: TrainingSetConfig, settings: CurationSettings) -> MaterializeResult:
    from dagster import DataVersion

    from training.data.sets import build_training_set

    info = build_training_set(settings.layout(), _cfg(settings), context.partition_key, release=config.release)
    rel = info.get("release") or {}
    context.log.info(f"training set {context.partition_key}: {info['n_images']} images, version {info['version']}, "
                     f"release {rel.get('name') or 'unreleased'}{' (reused)' if info['reused'] else ''}")
    return MaterializeResult(
        data_version=DataVersion(info["version"]),
        metadata={"dagster/row_count": info["n_images"], "version": info["version"],
                  "release": rel.get("name") or "unreleased", "release_dvc_md5": str(rel.get("dvc_md5")),
                  "release_git_tag": str(rel.get("git_tag")), "bench_held_out": info["bench_split"]["n_held_out"],
                  "buckets": MetadataValue.json(info["buckets"]),
                  "region_readable": MetadataValue.json(info["region_readable"]),
                  "manifest": MetadataValue.path(str(settings.layout().root / info["manifest"])),
                  "reused": info["reused"]},
    )


@asset(
    partitions_def=checkpoint_partitions,
    deps=[AssetDep("training_set", partition_mapping=tier_to_checkpoints)],
    group_name="training",
    kinds={"pytorch", "mlflow", "safetensors"},
    code_version="checkpoint-1",
    pool=GPU_POOL,
    description="One stage of a scheme's Table A1 ladder (scheme x tier), trained in a Dagster Pipes subprocess: "
                "safetensors checkpoints (resumable), exported weights, MLflow run + registered model version, "
                "GPU-hour ledger row.",
)
def checkpoint(context: AssetExecutionContext, config: CheckpointConfig, settings: CurationSettings,
               mlflow: MLflowSettings, training_launcher: TrainingLauncher):
    from training.run import check_ready, parse_partition

    scheme, tier = parse_partition(context.partition_key)
    check_ready(settings.layout(), _cfg(settings), scheme, tier)  # fail here, with the reason, not in the subprocess
    args = ["--data-root", str(settings.layout().root), "--scheme", scheme, "--tier", tier, "--profile",
            settings.profile, "--backbone", config.backbone, "--tracking-uri", mlflow.uri(settings.data_root),
            "--experiment", TRAINING_EXPERIMENT]
    if settings.config_dir:
        args += ["--config-dir", settings.config_dir]
    return training_launcher.launch(context, args).get_materialize_result()


@asset(
    partitions_def=checkpoint_partitions,
    deps=["checkpoint", "bench_split"],
    group_name="training",
    kinds={"python", "mlflow"},
    code_version="checkpoint-bench-1",
    description="The checkpoint as an image generator on the bench split's prompts and references at its tier's "
                "resolution, scored by the bench runner; MLflow run tagged uhrforge.checkpoint_run.",
)
def checkpoint_bench(context: AssetExecutionContext, settings: CurationSettings, bench: BenchSettings,
                     vlm: VLMEndpoint, mlflow: MLflowSettings) -> MaterializeResult:
    from assets.bench import bench_model_partitions, materialised_results
    from evaluation.reports import write_table3
    from orchestration.training_bench import bench_checkpoint

    layout = settings.layout()
    out = bench_checkpoint(layout, _cfg(settings), context.partition_key, bench, vlm,
                           tracking_uri=mlflow.uri(settings.data_root), log=context.log.info)
    model = out["model"]
    known = set(context.instance.get_dynamic_partitions(bench_model_partitions.name))
    if model not in known:
        context.instance.add_dynamic_partitions(bench_model_partitions.name, [model])
    keys = list(context.instance.get_dynamic_partitions(bench_model_partitions.name))
    files = write_table3(materialised_results(bench, keys), bench.report_dir())
    result = out["result"]
    meta: dict = {"model": model, "images": result.n_images, "generator": MetadataValue.json(out["generator"]),
                  "checkpoint_run": str(out["checkpoint_run"]), "bench_run": str(out["bench_run"]),
                  "table": MetadataValue.md(Path(files["md"]).read_text()),
                  "unavailable": MetadataValue.json({k: v["reason"] for k, v in result.metrics.items()
                                                     if v["value"] is None})}
    for k, v in result.metrics.items():
        if v["value"] is not None:
            meta[f"score/{k}"] = MetadataValue.float(float(v["value"]))
    return MaterializeResult(metadata=meta)
