"""``uhr``: the click group and the console-script entry point (``pyproject.toml``: ``cli.main:main``).

Errors: every command runs inside :class:`UhrGroup`, which turns an exception into ONE line on
stderr and exit status 1 -- ``Error: <message>`` for the project's own error types and OSError
and for a ValueError / RuntimeError our own code raised (bad input the message explains: a bad
release name, a config value out of range, an unknown profile, a missing file, an empty raw
root), ``Error: <Type>: <message> (uhr --debug ... shows the traceback)`` for
anything else. ``uhr --debug COMMAND ...`` lets the exception through with its traceback.
Click's own usage errors keep click's format; ``sys.exit`` codes pass unchanged.
"""

from __future__ import annotations

import re

import click

from cli import bench, captions, corpus, curation, pipeline, release, training

#: the command modules, in ``uhr --help`` order of their domains
DOMAINS = (curation, corpus, pipeline, release, captions, training, bench)
#: packages whose exception types are "known": raised on purpose, with a message for the user
PROJECT_PACKAGES = ("curation", "orchestration", "evaluation", "training", "assets", "cli")
#: at most this many characters of a message on the error line
MAX_MESSAGE = 2000


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line: line breaks (and the blanks around them) become `` | ``, at most
    ``limit`` characters (the end is kept when cut: a subprocess's last lines say why it failed)."""
    s = re.sub(r"\s*[\r\n]+\s*", " | ", str(text).strip())
    s = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in s)
    return s if len(s) <= limit else "..." + s[-(limit - 3):]


def _raised_by_project(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc``'s traceback is in one of the project's packages
    (a ``raise`` of ours, not an error deep inside a library)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    mod = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return mod.split(".")[0] in PROJECT_PACKAGES


def is_known(exc: BaseException) -> bool:
    """True for an OSError, for exception types defined in the project's packages, and for a
    ValueError / RuntimeError with a message that the project's own code raised (bad input it
    explains: "no shard folders under ...")."""
    mod = type(exc).__module__ or ""
    if isinstance(exc, OSError) or mod.split(".")[0] in PROJECT_PACKAGES:
        return True
    return type(exc) in (ValueError, RuntimeError) and bool(str(exc)) and _raised_by_project(exc)


def error_line(exc: BaseException) -> str:
    """The one line ``uhr`` prints (after ``Error: ``) for ``exc``."""
    msg = str(exc)
    if is_known(exc):
        if isinstance(exc, KeyError) and len(exc.args) == 1:
            msg = str(exc.args[0])  # KeyError's str() quotes its message
        return one_line(msg or type(exc).__name__)
    return one_line(f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__) + \
        " (unexpected error; `uhr --debug ...` shows the traceback)"


class UhrGroup(click.Group):
    """The ``uhr`` group: runs a command and turns what it raises into one line (module docstring)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError:
            raise  # click's usage message (usage line, hint, error)
        except click.ClickException as exc:
            exc.message = one_line(exc.message)
            raise
        except (click.exceptions.Exit, click.exceptions.Abort, SystemExit, KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place every command's errors end
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(error_line(exc)) from exc


@click.group(cls=UhrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback of an error (default: one line on stderr).")
def cli(debug: bool) -> None:
    """uhrforge: curate 100 MP text-to-image corpora as Dagster assets."""


for _domain in DOMAINS:
    for _command in _domain.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
