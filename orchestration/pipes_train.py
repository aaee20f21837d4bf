"""The training process the ``checkpoint`` asset launches through Dagster Pipes.

    python -m orchestration.pipes_train --data-root D --scheme III --tier 8K --profile demo \
        [--backbone tiny] [--tracking-uri URI] [--experiment NAME]

The ``training_launcher`` resource (orchestration/training_launch.py) starts it: a local
subprocess (``PipesSubprocessClient``) or a pod (``PipesK8sClient``), under ``torchrun`` when
the run has several processes; only global rank 0 opens Pipes and reports. Under Pipes it streams a log
line every few steps (step, loss, samples/s) and reports the materialisation (the run's report:
checkpoint folder, MLflow run and model version, ledger figures) with the checkpoint's
fingerprint as the data version. Outside Pipes (a plain shell) it prints the report as JSON.
A progress bar (steps) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _progress_callback(report_every: int, log):
    import lightning as L
    from tqdm import tqdm

    class Progress(L.Callback):
        def __init__(self):
            self.bar = None
            self.t0 = time.perf_counter()

        def on_train_start(self, trainer, pl_module):
            self.bar = tqdm(total=trainer.max_steps, initial=trainer.global_step, desc="train", unit="step",
                            file=sys.stderr, dynamic_ncols=True, leave=False)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            if self.bar is not None:
                self.bar.n = trainer.global_step
                self.bar.set_postfix(loss=f"{loss:.4f}")
                self.bar.refresh()
            if trainer.global_step % report_every == 0 or trainer.global_step >= trainer.max_steps:
                log(f"step {trainer.global_step}/{trainer.max_steps} loss {loss:.5f} "
                    f"({time.perf_counter() - self.t0:.1f} s)")

        def on_train_end(self, trainer, pl_module):
            if self.bar is not None:
                self.bar.close()

    return Progress()


def _metadata(report: dict) -> dict:
    md = {k: report.get(k) for k in ("scheme", "tier", "fingerprint", "run_dir", "weights", "steps", "samples",
                                     "epochs", "epochs_planned", "wall_clock_s", "device_type", "device_count",
                                     "samples_per_s", "first_loss", "last_loss", "release", "backbone",
                                     "init_from", "reused")}
    md["gpu_hours"] = report.get("gpu_hours")
    md["cpu_hours"] = report.get("cpu_hours")
    if report.get("mlflow"):
        md["mlflow_run_id"] = report["mlflow"]["run_id"]
        md["mlflow_tracking_uri"] = report["mlflow"]["tracking_uri"]
    if report.get("registered_model"):
        rm = report["registered_model"]
        md["registered_model"] = f"{rm['name']} v{rm['version']}"
    md["training_set_version"] = (report.get("training_set") or {}).get("version")
    return {k: v for k, v in md.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestration.pipes_train", description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--scheme", required=True)
    ap.add_argument("--tier", required=True)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--config-dir", default=None)
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--experiment", default="uhrforge-training")
    ap.add_argument("--report-every", type=int, default=10)
    args = ap.parse_args(argv)

    import os

    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    from training.run import run_checkpoint

    kw = dict(profile=args.profile, config_dir=args.config_dir, tracking_uri=args.tracking_uri,
              experiment=args.experiment, backbone=args.backbone)
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only global rank 0 talks to Dagster
    if os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR) and rank == 0:  # launched by a Pipes client
        with open_dagster_pipes() as pipes:
            log = pipes.log.info
            try:
                report = run_checkpoint(args.data_root, args.scheme, args.tier, log=log,
                                        callbacks=[_progress_callback(args.report_every, log)], **kw)
            except Exception as exc:  # the reason, for `uhr train` and the run's log (runs.PIPES_FAILURE_PREFIX)
                pipes.log.error(f"training failed: {type(exc).__name__}: {exc}")
                raise
            pipes.report_asset_materialization(metadata=_metadata(report), data_version=report["fingerprint"])
        return 0

    def log(msg: str) -> None:
        print(f"[rank {rank}] {msg}" if rank else msg, file=sys.stderr, flush=True)

    report = run_checkpoint(args.data_root, args.scheme, args.tier, log=log,
                            callbacks=[_progress_callback(args.report_every, log)] if rank == 0 else [], **kw)
    if rank == 0:
        print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
