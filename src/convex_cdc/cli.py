"""The ``convex-cdc`` command: one entry point, one subcommand per job.

Each subcommand lives in :mod:`convex_cdc.commands` and is imported only when it runs
(:mod:`convex_cdc.commands.registry`), so a plain install without extras runs the local
loop. This module turns every :class:`~convex_cdc.core.errors.ConvexCdcError` into one
line on stderr and a distinct exit code (a missing optional dependency into one line
naming the extra, exit code 2; any other exception into one ``error: unexpected …`` line
and exit code 1). It also holds the console-script entry points, ``convex-cdc`` and the
Databricks job's ``convex-cdc-databricks-extract``.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import click

from convex_cdc import __version__
from convex_cdc.commands.config_file import command_defaults, load_config
from convex_cdc.commands.registry import command_names, load_command, missing_extra_error
from convex_cdc.core.errors import ConvexCdcError
from convex_cdc.logs import configure_logging, redact_secrets

log = logging.getLogger(__name__)

_MESSAGE_LIMIT = 300
"""Characters of an unexpected exception's text on the error line (the log has it all)."""


class _LazyCommands(dict[str, click.Command]):
    """The subcommands, each imported the first time it is looked up."""

    def __missing__(self, name: str) -> click.Command:
        command = load_command(name)
        if command is None:
            raise KeyError(name)
        self[name] = command
        return command


class _LazyGroup(click.Group):
    """A group whose subcommands come from the registry, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = command_names()
        return names + sorted(set(self.commands) - set(names))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        try:
            return self.commands[cmd_name]
        except KeyError:
            return None


@click.group(
    cls=_LazyGroup,
    commands=_LazyCommands(),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="convex-cdc")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CONVEX_CDC_CONFIG",
    metavar="FILE",
    help="TOML file with defaults for every flag except secrets [env: CONVEX_CDC_CONFIG].",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, config_path: Path | None) -> None:
    """Replicate a Convex deployment into a lakehouse.

    The deployment URL comes from --url or CONVEX_URL, the deploy key from the
    CONVEX_DEPLOY_KEY environment variable (or the variable named by --deploy-key-env);
    the key is never accepted as a flag value. Typical loop: `sync` (Convex → raw
    change log), `materialize` (→ staging), `publish` (→ S3 with a manifest), or `run`
    for all three.
    """
    configure_logging(verbose)
    if config_path is not None:
        ctx.default_map = command_defaults(load_config(config_path))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point ``convex-cdc``.

    Every failure ends as one ``error: …`` line on stderr and the exit code of its class
    (see :mod:`convex_cdc.core.errors`); a traceback is only ever logged (``-v`` for an
    unexpected error, ``-vv`` for the cause of an expected one), never printed.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Raises:
        SystemExit: on every failure, with the exit code of its error class (1 for an
            unexpected exception, 130 when interrupted).
    """
    try:
        cli.main(
            args=None if argv is None else list(argv),
            prog_name="convex-cdc",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConvexCdcError as exc:
        if exc.__cause__ is not None:
            log.debug("%s", _traceback(exc))
        click.echo(f"error: {redact_secrets(exc.one_line())}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except ModuleNotFoundError as exc:
        # An optional dependency a command imports only when it needs it.
        needs = missing_extra_error(exc, command=_subcommand(argv))
        if needs is None:
            _unexpected(exc)
        else:
            click.echo(f"error: {needs.one_line()}", err=True)
            sys.exit(needs.exit_code)
    except Exception as exc:
        _unexpected(exc)


def _unexpected(exc: Exception) -> None:
    """A bug: say so in one line; the traceback is for -v, never printed by default.

    Raises:
        SystemExit: with exit code 1.
    """
    log.info("%s", _traceback(exc))
    text = redact_secrets(" ".join(str(exc).split())) or "(no message)"
    if len(text) > _MESSAGE_LIMIT:
        text = text[:_MESSAGE_LIMIT] + "…"
    click.echo(
        f"error: unexpected {type(exc).__name__}: {text} — this is a bug; run with -v "
        "for the traceback and report it",
        err=True,
    )
    sys.exit(1)


def _subcommand(argv: Sequence[str] | None) -> str | None:
    """The subcommand words of the command line (``databricks extract``), for messages."""
    args = sys.argv[1:] if argv is None else list(argv)
    names = set(command_names())
    for position, arg in enumerate(args):
        if arg in names:
            following = args[position + 1 : position + 2]
            if arg == "databricks" and following and not following[0].startswith("-"):
                return f"{arg} {following[0]}"
            return arg
    return None


def databricks_extract(argv: Sequence[str] | None = None) -> None:
    """Wheel entry point ``convex-cdc-databricks-extract ARGS`` (a ``python_wheel_task``).

    The same as ``convex-cdc databricks extract ARGS``, with the same error handling.

    Args:
        argv: the arguments of ``databricks extract`` (default: ``sys.argv[1:]``).

    Raises:
        SystemExit: as :func:`main`.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    main(["databricks", "extract", *args])


def _traceback(exc: BaseException) -> str:
    """The traceback (with its causes) of ``exc``, with every registered secret removed:
    the log filter only redacts messages, and this text is the message."""
    return redact_secrets("".join(traceback.format_exception(exc)).rstrip())
