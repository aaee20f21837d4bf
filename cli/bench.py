"""``uhr metric`` and ``uhr bench``: one bench metric on image files, a model folder on the bench.

The bench settings (model locations of the weight-based metrics, judge, MLflow) come from
:func:`orchestration.bench_resources.bench_settings_from_env`, the options given here winning.
"""

from __future__ import annotations

import json

import click

from cli.types import POSITIVE_INT


def _metric(name: str):
    """The registered metric ``name`` with the configured model locations."""
    from evaluation.metrics import create_metric
    from orchestration.bench_resources import bench_settings_from_env

    return create_metric(name, **bench_settings_from_env().metric_options().get(name, {}))


def _list_callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from evaluation.metrics import describe_metrics

    for info in describe_metrics():
        ok, why = _metric(info["name"]).availability()
        state = "available" if ok else f"not available: {why}"
        click.echo(f"{info['name']:<18} {info['kind']:<9} {state}")
    ctx.exit(0)


@click.command("metric")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path())  # a directory or FIFO gets its own row (not_a_regular_file)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image: path, metric, value (or null and reason).")
@click.option("--list", "list_", is_flag=True, is_eager=True, expose_value=False, callback=_list_callback,
              help="List the registered metrics and whether each can run here, then exit.")
def metric_cmd(name: str, paths: tuple[str, ...], as_json: bool) -> None:
    """Score each image PATH with the per-image metric NAME (e.g. glcm, glcm_entropy,
    compression_ratio). A value that cannot be computed faithfully is null with a reason."""
    import math

    from evaluation.metrics import PER_IMAGE, list_metrics

    if name not in list_metrics():
        raise click.BadParameter(f"unknown metric {name!r}; known: {', '.join(list_metrics())}", param_hint="NAME")
    metric = _metric(name)
    if metric.kind != PER_IMAGE:
        raise click.BadParameter(f"{name} is a per-set metric; score a set with `uhr bench`", param_hint="NAME")
    for path in paths:
        r = metric.score_path(path)
        if as_json:
            row = {"path": path, "metric": r.metric, "value": r.value}
            if r.value is None:
                row["reason"] = r.reason
            if r.extra:
                row["extra"] = {k: v for k, v in r.extra.items()
                                if isinstance(v, (str, int, bool)) or (isinstance(v, float) and math.isfinite(v))}
            click.echo(json.dumps(row, sort_keys=False))
        else:
            shown = f"{r.value:.6f}" if r.value is not None else f"null ({r.reason})"
            click.echo(f"{path}\t{r.metric}\t{shown}")


def _summary(result) -> dict:
    """The ``--json`` object of a bench result."""
    from evaluation.runner import _jsonable

    return _jsonable({
        "model": result.model,
        "n_prompts": result.n_prompts,
        "n_images": result.n_images,
        "missing": result.missing,
        "extra_files": result.extra_files,
        "metrics": {k: {"value": v["value"], **({"reason": v["reason"]} if v["value"] is None else {}),
                        "kind": v["kind"], "protocol_version": v["protocol_version"]}
                    for k, v in result.metrics.items()},
        "judge": result.judge,
        "timings": result.timings,
        "files": result.files,
        "mlflow": result.mlflow,
    })


@click.command("bench")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--prompts", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Bench prompts file (JSONL: file_name, short_caption, long_caption per line).")
@click.option("--reference", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of the real bench images (FID family), matched by file stem.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder for this model (default <data root>/bench/<name>).")
@click.option("--name", default=None, help="Model name in reports and MLflow (default: the folder's name).")
@click.option("--metric", "metrics", multiple=True, help="Run only these metrics (repeatable; default all).")
@click.option("--eval-size", type=POSITIVE_INT, default=4096, show_default=True,
              help="FID evaluation size S (4096 / 8192 / 10240 for the 4K / 8K / 10K tiers).")
@click.option("--data-root", default=None, help="Data root for default outputs and the MLflow store "
              "(default $UHR_DATA_ROOT or data/demo).")
@click.option("--judge", "judge_backend", type=click.Choice(["auto", "vllm", "heuristic", "none"]), default=None,
              help="MSFI / ICS judge backend (default auto: vllm when an endpoint is configured, "
                   "else the offline heuristic judge, reported as <metric>_heuristic, e.g. msfi_strict_heuristic).")
@click.option("--judge-endpoint", default=None, help="OpenAI-compatible judge endpoint (default $UHR_VLM_ENDPOINT, else judges.bench.endpoint).")
@click.option("--judge-model", default=None, help="Served judge model name (default judges.bench.model of the profile).")
@click.option("--reference-prompts", type=click.Path(exists=True), default=None,
              help="Local copy of PixVerve-95K's eval/util/build_prompts.py (or a folder holding it): msfi / ics "
                   "read the reference's judge prompts from it (default $UHR_BENCH_REFERENCE_PROMPTS, else "
                   "judges.bench.reference_prompts; none: msfi / ics not available, msfi_strict / ics_strict run).")
@click.option("--no-mlflow", is_flag=True, help="Do not log an MLflow run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: model, metrics (value or null and "
              "reason), images, missing, files, MLflow run.")
def bench_cmd(model_dir: str, prompts: str, reference: str | None, out_dir: str | None, name: str | None,
              metrics: tuple[str, ...], eval_size: int, data_root: str | None, judge_backend: str | None,
              judge_endpoint: str | None, judge_model: str | None, reference_prompts: str | None, no_mlflow: bool,
              as_json: bool) -> None:
    """Score the images in MODEL_DIR on the bench (every registered metric; unavailable ones say
    why), write per-image CSV / HTML and scores.json, and log an MLflow run
    ($MLFLOW_TRACKING_URI, default a sqlite store under the data root)."""
    from evaluation.reports import display_name, table3_markdown
    from evaluation.runner import run_bench
    from orchestration.bench_resources import bench_settings_from_env

    settings = bench_settings_from_env(data_root, judge_backend=judge_backend, judge_endpoint=judge_endpoint,
                                       judge_model=judge_model, reference_prompts=reference_prompts)
    cfg = settings.bench_config(metrics=list(metrics) or None, eval_size=eval_size, mlflow=not no_mlflow)
    log = (lambda _m: None) if as_json else (lambda m: click.echo(m, err=True))
    try:
        result = run_bench(model_dir, prompts, reference=reference, out_dir=out_dir, config=cfg, name=name, log=log)
    except (KeyError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(_summary(result)))
    else:
        click.echo(table3_markdown([result]))
        click.echo(f"per-image page: {result.files.get('html')}")
        for k, v in result.metrics.items():
            if v["value"] is None:
                click.echo(f"  {display_name(k)}: {v['reason']}", err=True)
    if result.n_images == 0:
        raise SystemExit(1)


COMMANDS = [metric_cmd, bench_cmd]
