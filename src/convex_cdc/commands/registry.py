"""Every subcommand of ``convex-cdc``, in the order ``--help`` lists them."""

from __future__ import annotations

import click


def commands() -> list[click.Command]:
    """The top-level subcommands. Heavy dependencies are imported inside each command."""
    from convex_cdc.commands.devserver import devserver

    return [devserver]
