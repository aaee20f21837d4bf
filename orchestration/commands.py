"""``uhr`` commands that drive Dagster: ``demo`` and ``materialize``."""

from __future__ import annotations

import click


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
def materialize_cmd(data_root: str, raw_root: str, profile: str) -> None:
    """Register every shard folder of RAW_ROOT and materialise the curation assets."""
    import importlib

    from dagster import DagsterInstance

    from orchestration.pipeline import materialize_all, set_env

    set_env(data_root, profile, raw_root)
    import orchestration.definitions as definitions

    definitions = importlib.reload(definitions)
    materialize_all(definitions.defs, DagsterInstance.get(), raw_root, log=click.echo)


COMMANDS = [demo_cmd, materialize_cmd]
