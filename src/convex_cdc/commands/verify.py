"""``convex-cdc verify``: compare staging with a fresh snapshot of the source."""

from __future__ import annotations

import click

from convex_cdc.commands.connection import connect, source_options
from convex_cdc.commands.options import dest_option, selection_options
from convex_cdc.commands.sync import format_ts
from convex_cdc.core.selection import Selection
from convex_cdc.target_s3.io_errors import io_errors
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.state import load_staging_state
from convex_cdc.target_s3.staging.verify import verify as verify_staging


@click.command()
@dest_option
@source_options
@selection_options
@click.option(
    "--now",
    "at_now",
    is_flag=True,
    help="Walk the source as of now instead of at staging's timestamp "
    "(then writes since the last sync count as differences).",
)
def verify(
    *,
    dest: str,
    url: str | None,
    deploy_key_env: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    at_now: bool,
) -> None:
    """Compare DIR's staging with a fresh list_snapshot walk of the source.

    Counts and a per-row hash of every document. By default the source is walked at the
    timestamp staging is consistent as of, so only real differences show. Exits 1 and
    names each differing table with its count of differing rows.
    """
    layout = DestinationLayout.at(dest)
    selection = Selection.from_patterns(include=include, exclude=exclude)
    with io_errors(f"read the staging state {layout.staging_state}", then="run verify again"):
        staging = load_staging_state(layout.staging_state)
    at_ts = None if at_now or staging is None else staging.consistent_as_of_ts
    with connect(url, deploy_key_env) as client:
        report = verify_staging(
            layout,
            client,
            selection=None if selection.is_everything else selection,
            at_ts=at_ts,
        )
    for table in report.tables:
        click.echo(f"verify: {table.describe()}")
    when = format_ts(report.source_snapshot_ts)
    if report.ok:
        click.echo(f"verify: ok — {len(report.tables)} tables match the source at {when}")
        return
    bad = report.differing_tables
    raise click.ClickException(
        f"{len(bad)} of {len(report.tables)} tables differ from the source at {when}: "
        + ", ".join(f"{t.key} ({t.differing_rows} differing rows)" for t in bad)
    )
