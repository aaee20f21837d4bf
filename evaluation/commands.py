"""``uhr metric NAME PATH... [--json]``: score image files with one registered bench metric.

Only ``click`` is imported at module level (``uhr --help`` stays fast); the metric registry is
imported when the command runs.
"""

from __future__ import annotations

import click


def _list_callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from evaluation.metrics import create_metric, describe_metrics

    for info in describe_metrics():
        ok, why = create_metric(info["name"]).availability()
        state = "available" if ok else f"not available: {why}"
        click.echo(f"{info['name']:<18} {info['kind']:<9} {state}")
    ctx.exit(0)


@click.command("metric")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image: path, metric, value (or null and reason).")
@click.option("--list", "list_", is_flag=True, is_eager=True, expose_value=False, callback=_list_callback,
              help="List the registered metrics and whether each can run here, then exit.")
def metric_cmd(name: str, paths: tuple[str, ...], as_json: bool) -> None:
    """Score each image PATH with the per-image metric NAME (e.g. glcm, glcm_entropy,
    compression_ratio). A value that cannot be computed faithfully is null with a reason."""
    import json
    import math

    from evaluation.metrics import PER_IMAGE, create_metric, list_metrics

    if name not in list_metrics():
        raise click.BadParameter(f"unknown metric {name!r}; known: {', '.join(list_metrics())}", param_hint="NAME")
    metric = create_metric(name)
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


COMMANDS = [metric_cmd]
