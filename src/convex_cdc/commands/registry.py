"""Every subcommand of ``convex-cdc``, in the order ``--help`` lists them, imported lazily.

A command's module is only imported when the command runs (or ``--help`` lists it), so
``convex-cdc sync`` neither pays for nor needs what ``publish`` or ``databricks`` import.
The local loop (``sync``, ``materialize``, ``status``, ``verify``, ``inspect``, ``demo``,
``devserver``) runs on a plain ``pip install convex-cdc``; a command that needs an extra
says which one, in one line, with exit code 2.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Final

import click

from convex_cdc.core.errors import ConfigError

OPTIONAL_MODULES: Final = {"obstore": "s3", "deltalake": "databricks"}
"""Top-level module of each optional dependency → the extra that installs it."""


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """Where a subcommand lives, and what to say about it before it is imported."""

    name: str
    module: str
    attribute: str
    summary: str
    """The one-line help ``--help`` shows if the module cannot be imported."""
    extra: str | None = None
    """The extra that installs what the command needs beyond a plain install."""


COMMANDS: Final = (
    LazyCommand("sync", "sync", "sync", "Extract changes from Convex into DIR/raw_change_log."),
    LazyCommand("materialize", "materialize", "materialize", "Apply new raw batches to staging."),
    LazyCommand("publish", "publish", "publish", "Publish staging with a manifest.", "s3"),
    LazyCommand("run", "run", "run", "Sync, materialize and publish.", "s3"),
    LazyCommand("status", "status", "status", "Where the checkpoint, staging and source stand."),
    LazyCommand("verify", "verify", "verify", "Compare staging with a fresh snapshot."),
    LazyCommand("inspect", "inspect", "inspect", "Print what the deployment answers."),
    LazyCommand(
        "databricks", "databricks", "databricks", "Bronze/silver Delta tables.", "databricks"
    ),
    LazyCommand("demo", "demo", "demo", "Run the whole loop against an embedded devserver."),
    LazyCommand("devserver", "devserver", "devserver", "Run a local Convex-compatible server."),
)


def command_names() -> list[str]:
    """The subcommands' names, in ``--help`` order."""
    return [command.name for command in COMMANDS]


def load_command(name: str) -> click.Command | None:
    """Import one subcommand; a stand-in that names the extra if it needs a missing one.

    Returns ``None`` for an unknown name.
    """
    entry = next((c for c in COMMANDS if c.name == name), None)
    if entry is None:
        return None
    try:
        module = importlib.import_module(f"convex_cdc.commands.{entry.module}")
    except ModuleNotFoundError as exc:
        error = missing_extra_error(exc, command=name)
        if error is None:
            raise
        return _needs_extra(entry, error)
    command = getattr(module, entry.attribute)
    assert isinstance(command, click.Command)
    return command


def missing_extra_error(exc: ModuleNotFoundError, *, command: str | None) -> ConfigError | None:
    """The one-line error for a missing optional dependency, ``None`` for any other module.

    ``command``: the words of the subcommand (``databricks extract``); the extra it
    declares is the one named, else the extra of the missing module.
    """
    top = (exc.name or "").partition(".")[0]
    if top not in OPTIONAL_MODULES:
        return None
    first = (command or "").partition(" ")[0]
    declared = next((c.extra for c in COMMANDS if c.name == first), None)
    extra = declared or OPTIONAL_MODULES[top]
    what = f"`convex-cdc {command}`" if command else "this command"
    return ConfigError(
        f"{what} needs the optional {extra} dependencies ({top} is not installed)",
        hint=f"pip install 'convex-cdc[{extra}]'",
    )


def _needs_extra(entry: LazyCommand, error: ConfigError) -> click.Command:
    """A command that takes any arguments and fails with ``error``."""

    def fail(**_: Any) -> None:
        raise error

    return click.Command(
        entry.name,
        callback=fail,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        help=f"{entry.summary} (needs: {error.hint})",
        short_help=f"Needs {error.hint}",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
