"""A trained checkpoint on PixVerve-Bench: generate the bench split's prompts, score, tag.

:func:`bench_checkpoint` (the ``checkpoint_bench`` asset's body):

1. reads the stage's current checkpoint report (:func:`training.run.current`) and builds its
   generator (:func:`training.generate.load_generator`: the exported safetensors weights);
2. generates one image per bench-split prompt (``manifests/bench_split/benchmark.jsonl``, the
   configured caption field) at the tier's side (the profile's scale: 256 px for the demo's
   4K) into the bench root's model folder ``<bench root>/ckpt-<scheme>-<tier>-<fingerprint>``,
   the same folder ``bench_scores`` scores;
3. scores it with :func:`evaluation.runner.run_bench` against the split's reference images
   (FID evaluation size = the tier side), every registered metric or the configured subset;
4. tags the bench run in MLflow: ``uhrforge.checkpoint_run`` (the training run's id, which the
   ``checkpoints`` lineage provider follows), ``uhrforge.scheme``, ``uhrforge.tier``,
   ``uhrforge.backbone``; logs the generation latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def model_name(report: dict) -> str:
    return f"ckpt-{report['scheme_label']}-{report['tier']}-{report['fingerprint'][:8]}"


def bench_checkpoint(layout, cfg, partition: str, bench, vlm, tracking_uri: str | None = None,
                     log: Callable[[str], None] = print) -> dict:
    from evaluation.generation import generate_bench
    from evaluation.runner import load_prompts, run_bench
    from training import curriculum
    from training.generate import load_generator
    from training.run import current, parse_partition

    scheme, tier = parse_partition(partition)
    report = current(layout, scheme, tier)
    if report is None:
        raise RuntimeError(f"checkpoint {partition} has not been trained (materialise checkpoint[{partition}] first)")
    split = layout.root / "manifests" / "bench_split"
    prompts = split / "benchmark.jsonl"
    if not prompts.exists():
        raise FileNotFoundError(f"no bench split prompts at {prompts} (materialise bench_split first)")
    reference = split / "reference"
    side = next(s.tier.side for s in curriculum.ladder(cfg, scheme) if s.tier.name == tier)
    backbone = "tiny" if str(report.get("backbone", "")).startswith("tiny") else report["backbone"]
    gen = load_generator(cfg, scheme, tier, layout.root / report["weights"], backbone=backbone,
                         name=model_name(report))
    name = model_name(report)
    folder = bench.model_dir(name)
    field = curriculum._training(cfg).get("buckets", {}).get("caption_field", "long_caption")
    rows = load_prompts(prompts)
    log(f"[{name}] generating {len(rows)} bench image(s) at {side}x{side} from {report['weights']}")
    gen_rep = generate_bench(gen, rows, folder, side, side, 0, field, log=log)
    cfg_b = bench.bench_config(vlm, eval_size=side, width=side, height=side, prompt_field=field,
                               **({"tracking_uri": tracking_uri} if tracking_uri and not bench.mlflow_tracking_uri else {}))
    result = run_bench(folder, prompts, reference=reference if reference.is_dir() else None,
                       out_dir=bench.out_dir(name), config=cfg_b, name=name, log=log)
    ckpt_run = (report.get("mlflow") or {}).get("run_id")
    if result.mlflow:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(result.mlflow["tracking_uri"])
        rid = result.mlflow["run_id"]
        for k, v in {"uhrforge.checkpoint_run": ckpt_run, "uhrforge.scheme": scheme, "uhrforge.tier": tier,
                     "uhrforge.backbone": report.get("backbone"), "uhrforge.checkpoint_fingerprint": report["fingerprint"],
                     "uhrforge.trained_on_release": report.get("release")}.items():
            if v:
                client.set_tag(rid, k, str(v))
        summary = gen_rep.summary()
        if summary.get("latency_mean_s") is not None:
            client.log_metric(rid, "generation_latency_mean_s", float(summary["latency_mean_s"]))
    return {"model": name, "result": result, "generator": gen.describe() if hasattr(gen, "describe") else {"name": name},
            "checkpoint_run": ckpt_run, "bench_run": (result.mlflow or {}).get("run_id"), "folder": str(folder),
            "generation": gen_rep.summary()}
