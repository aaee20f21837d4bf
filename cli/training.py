"""``uhr train`` (materialise a scheme's ladder: training sets, checkpoints, checkpoint bench) and
``uhr gpu-hours`` (the GPU-hour ledger laid out like Table A1, the paper's figures beside ours)."""

from __future__ import annotations

import json

import click

SCHEMES = ("I-Full", "I-LoRA", "II", "III")


@click.command("train")
@click.argument("scheme", type=click.Choice(SCHEMES))
@click.option("--data-root", required=True, help="Data root holding final_corpus and bench_split.")
@click.option("--profile", default="paper", show_default=True)
@click.option("--tiers", default=None, help="Comma-separated subset of the ladder, e.g. 4K,8K (default: the whole ladder).")
@click.option("--backbone", default="tiny", show_default=True,
              help="tiny (random-init tiny models, CPU) or a local path / HF-cache id of the production backbone.")
@click.option("--release", default=None, help="Train on this release (default: the release equal to the current "
                                               "final corpus minus the bench split, else the unreleased corpus).")
@click.option("--no-bench", is_flag=True, help="Do not bench the checkpoints (checkpoint_bench).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {\"stages\": [report, ...]} on stdout.")
def train_cmd(scheme: str, data_root: str, profile: str, tiers: str | None, backbone: str, release: str | None,
              no_bench: bool, as_json: bool) -> None:
    """Train SCHEME up its Table A1 ladder on the data root's final corpus (minus the bench split):
    one Dagster materialisation per tier (training_set, checkpoint through Pipes, checkpoint_bench),
    in ladder order; prints where each checkpoint (safetensors) and its MLflow run are."""
    from orchestration.runs import definitions_for, instance_for, run_training_ladder

    if release is not None:
        from curation.release import check_name

        check_name(release)  # before any run starts
    tier_list = [t.strip() for t in tiers.split(",") if t.strip()] if tiers else None
    defs = definitions_for(data_root, profile=profile)
    log = (lambda m: click.echo(m, err=True))
    try:
        stages = run_training_ladder(defs, instance_for(data_root), scheme, tier_list, backbone=backbone,
                                     release=release, bench=not no_bench, log=log)
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc))
    if as_json:
        click.echo(json.dumps({"stages": stages}, default=str))
        return
    for r in stages:
        ml = r.get("mlflow") or {}
        rm = r.get("registered_model") or {}
        hours = (f"{r['gpu_hours']:.4f} GPU h" if r.get("gpu_hours") is not None
                 else f"{(r.get('cpu_hours') or 0):.4f} CPU h (not GPU hours)")
        click.echo(f"{r['scheme_label']} {r['tier']}: {r['steps']} steps, loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}, "
                   f"{r['wall_clock_s']:.1f} s, {hours}{' (reused)' if r.get('reused') else ''}")
        click.echo(f"  weights      {r['weights']} ({r['weights_format']}, safetensors)")
        click.echo(f"  checkpoints  {', '.join(f'{k}: {v}' for k, v in sorted(r['checkpoints'].items()))}")
        if ml:
            click.echo(f"  MLflow run   {ml.get('run_id')} ({ml.get('tracking_uri')}), model {rm.get('name')} v{rm.get('version')}")
        click.echo(f"  trained on   release {r['release']} (training set {r['training_set']['version']}, "
                   f"{r['training_set']['images']} images), backbone {r['backbone']}")
        if r.get("bench_scores"):
            click.echo(f"  bench        {r.get('bench_model')}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in sorted(r["bench_scores"].items())))


@click.command("gpu-hours")
@click.option("--data-root", required=True, help="Data root whose ledger/ to read.")
@click.option("--profile", default="paper", show_default=True, help="Profile whose Table A1 figures to print.")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object {"rows": [{scheme, tier, epochs, device, device_count, wall_s, gpu_hours, '
                   'cpu_hours, paper_epochs, paper_gpu_hours}, ...]} (plus "forecast" with --forecast).')
@click.option("--forecast", is_flag=True,
              help="Project a paper-scale run (the paper's images x epochs) from our measured seconds per sample.")
def gpu_hours_cmd(data_root: str, profile: str, as_json: bool, forecast: bool) -> None:
    """The ledger: one row per scheme x tier of Table A1 (ours empty where not run) and one per
    curation stage that ran in the GPU pool. Device hours are devices x wall clock (appendix E.1);
    CPU runs count CPU hours, never GPU hours."""
    from curation.config import load_config
    from curation.layout import DataLayout
    from training import ledger
    from training.run import ledger_path

    try:
        cfg = load_config(profile)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc))
    layout = DataLayout.at(data_root)
    rows = ledger.read(ledger_path(layout))
    stages = ledger.read_stages(layout.root)
    out = {"rows": ledger.gpu_hours_rows(cfg, rows, stages)}
    if forecast:
        sps: dict = {}
        for r in rows:
            sps.setdefault((r.scheme, r.tier), []).append(r.device_seconds_per_sample)
        measured = {k: sum(v) / len(v) for k, v in sps.items()}
        dev = sorted({r.device_type for r in rows})
        out["forecast"] = ledger.forecast(cfg, measured, device_type=dev[0] if len(dev) == 1 else None)
        out["forecast_note"] = ("device-seconds per sample measured on our runs (their device and model size), "
                                "times the paper's images x epochs; a CPU / tiny-model measurement does not predict "
                                "H20 hours of the 4B model" if rows else "no training run in the ledger yet")
    if as_json:
        click.echo(json.dumps(out, default=str))
        return
    click.echo(ledger.table_markdown(out["rows"]))
    if forecast:
        click.echo("\nForecast at paper scale (" + out["forecast_note"] + "):\n")
        click.echo("| scheme | tier | images | epochs | device-s/sample | device hours | unit | paper GPU h |")
        click.echo("|---|---|---|---|---|---|---|---|")
        for f in out["forecast"]:
            click.echo(f"| {f['scheme']} | {f['tier']} | {f['images']:,} | {f['epochs']:g} | "
                       f"{f['device_s_per_sample']:.3f} | {f['device_hours']:,.1f} | {f['unit'] or 'mixed'} | "
                       f"{f['paper_gpu_hours'] or ''} |")


COMMANDS = (train_cmd, gpu_hours_cmd)
