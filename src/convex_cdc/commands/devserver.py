"""``convex-cdc devserver`` (placeholder until the devserver lands)."""

from __future__ import annotations

import click


@click.command()
def devserver() -> None:
    """Serve a local Convex streaming-export API (not implemented yet)."""
    raise click.ClickException("devserver is not implemented yet")
