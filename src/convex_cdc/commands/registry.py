"""Every subcommand of ``convex-cdc``, in the order ``--help`` lists them."""

from __future__ import annotations

import click


def commands() -> list[click.Command]:
    """The top-level subcommands. Heavy dependencies are imported inside each command."""
    from convex_cdc.commands.databricks import databricks
    from convex_cdc.commands.demo import demo
    from convex_cdc.commands.devserver import devserver
    from convex_cdc.commands.materialize import materialize
    from convex_cdc.commands.publish import publish
    from convex_cdc.commands.run import run
    from convex_cdc.commands.status import status
    from convex_cdc.commands.sync import sync
    from convex_cdc.commands.verify import verify

    return [sync, materialize, publish, run, status, verify, databricks, demo, devserver]
