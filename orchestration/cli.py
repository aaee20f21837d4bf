"""The ``uhr`` command line. Commands live next to the code they drive and are added here.

Each command module imports only ``click`` at module level, so ``uhr --help`` stays fast;
heavy imports (Dagster, torch) happen inside the commands that need them.
"""

from __future__ import annotations

import importlib

import click

# (module, attribute) of every command or command group added to ``uhr``.
COMMAND_MODULES: list[tuple[str, str]] = [
    ("curation.commands", "COMMANDS"),
    ("curation.upscale.commands", "COMMANDS"),
    ("orchestration.commands", "COMMANDS"),
    ("orchestration.release_commands", "COMMANDS"),
    ("evaluation.commands", "COMMANDS"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """uhrforge: curate 100 MP text-to-image corpora as Dagster assets."""


def _register() -> None:
    for module_name, attr in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that room has no commands yet
            raise
        for command in getattr(module, attr, []):
            cli.add_command(command)


_register()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
