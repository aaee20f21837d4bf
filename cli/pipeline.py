"""``uhr demo``, ``uhr materialize`` and ``uhr dvc-yaml``: the curation graph on a data root."""

from __future__ import annotations

import click


class StageName(click.Choice):
    """A stage-table name, the table read when first needed (``uhr --help`` does not import it)."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self):
        from curation.stages.table import STAGES

        return tuple(STAGES.names())

    @choices.setter
    def choices(self, _value) -> None:
        pass


@click.command("demo")
@click.option("--data-root", default="data/demo", show_default=True, help="Where manifests, reports and Dagster storage go.")
@click.option("--profile", default="demo", show_default=True)
@click.option("--n", "n", type=int, default=None, help="Raw pool size (default: the profile's synth.n).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--raw-root", default=None, help="Existing raw shard folders (default: <data-root>/raw, generated if missing).")
def demo_cmd(data_root: str, profile: str, n: int | None, seed: int, raw_root: str | None) -> None:
    """Generate a labelled raw pool and materialise raw_pool -> candidate_pool on it."""
    from orchestration.demo import run_demo

    run_demo(data_root, profile=profile, n=n, seed=seed, raw_root=raw_root)


@click.command("materialize")
@click.option("--data-root", required=True, help="Data root (manifests, reports, Dagster storage).")
@click.option("--raw-root", required=True, help="Folder of raw shard folders.")
@click.option("--profile", default="paper", show_default=True)
@click.option("--asset", "assets", multiple=True, type=StageName(),
              help="Materialise only this asset (every registered shard); repeatable. Default: the whole graph.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object {"stages": [{"stage", "partitions", "computed", "reused"}, ...]} on '
                   "stdout (progress goes to stderr).")
def materialize_cmd(data_root: str, raw_root: str, profile: str, assets: tuple[str, ...], as_json: bool) -> None:
    """Register every shard folder of RAW_ROOT and materialise the curation assets; end with a
    per-stage table (stage, partitions, images computed, images reused).

    The runs go to the Dagster instance under DATA_ROOT/dagster_home, so the UI shows them --
    DVC-triggered ones (one ``--asset`` per stage) included."""
    from orchestration.pipeline import materialize_all
    from orchestration.runs import definitions_for, instance_for

    defs = definitions_for(data_root, raw_root, profile)
    instance = instance_for(data_root)
    try:
        out = materialize_all(defs, instance, raw_root, log=lambda m: click.echo(m, err=as_json),
                              assets=list(assets) or None)
    finally:
        instance.dispose()
    if as_json:
        import json

        click.echo(json.dumps({"stages": out["stages"]}))
    else:
        from orchestration.pipeline import stages_table

        click.echo("\n" + stages_table(out["stages"]))


@click.command("dvc-yaml")
@click.option("--data-root", required=True, help="Data root, relative to the DVC repository root.")
@click.option("--raw-root", required=True, help="Folder of raw shard folders, relative to the repository root.")
@click.option("--profile", default="paper", show_default=True)
@click.option("--uhr", default=".venv/bin/uhr", show_default=True, help="The uhr executable the stages call.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write here (default: stdout).")
def dvc_yaml_cmd(data_root: str, raw_root: str, profile: str, uhr: str, output: str | None) -> None:
    """Print (or write) dvc.yaml: one DVC stage per curation asset, each running `uhr materialize --asset`."""
    from orchestration.dvc_stages import dvc_yaml_text

    text = dvc_yaml_text(data_root, raw_root, profile, uhr=uhr)
    if output:
        from pathlib import Path

        Path(output).write_text(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


COMMANDS = [demo_cmd, materialize_cmd, dvc_yaml_cmd]
