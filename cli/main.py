"""``uhr``: the click group and the console-script entry point (``pyproject.toml``: ``cli.main:main``)."""

from __future__ import annotations

import click

from cli import bench, captions, corpus, curation, pipeline, release, training

#: the command modules, in ``uhr --help`` order of their domains
DOMAINS = (curation, corpus, pipeline, release, captions, training, bench)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """uhrforge: curate 100 MP text-to-image corpora as Dagster assets."""


for _domain in DOMAINS:
    for _command in _domain.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
