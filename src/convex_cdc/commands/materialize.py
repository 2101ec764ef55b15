"""``convex-cdc materialize``: apply committed raw batches to the staging tables."""

from __future__ import annotations

import logging

import click

from convex_cdc.commands.options import dest_option
from convex_cdc.commands.sync import format_ts
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.materializer import (
    MaterializeProgress,
    MaterializeReport,
    StagingMaterializer,
)

log = logging.getLogger(__name__)


def materialize_step(*, layout: DestinationLayout, rebuild: bool = False) -> MaterializeReport:
    """Run the materializer on ``layout`` and print what happened (shared with ``run``).

    Raises:
        ConvexCdcError: as :meth:`StagingMaterializer.materialize` raises.
    """

    def progress(event: MaterializeProgress) -> None:
        log.info(
            "materialize: %s (%d/%d batches)",
            event.table,
            event.batches_applied,
            event.batches_total,
        )

    report = StagingMaterializer(layout, progress=progress, rebuild=rebuild).materialize()
    if report.damaged_files:
        shown = ", ".join(report.damaged_files[:3])
        more = f" and {len(report.damaged_files) - 3} more" if len(report.damaged_files) > 3 else ""
        click.echo(
            f"materialize: staging file {shown}{more} was missing or damaged; staging was "
            "rebuilt from the raw change log"
        )
    if report.batches_applied == 0:
        click.echo(f"materialize: staging already up to date → {layout.staging}")
    else:
        kind = "full rebuild" if report.full_rebuild else "incremental"
        click.echo(
            f"materialize ({kind}): {report.batches_applied} batches, "
            f"{report.rows_upserted:,} rows upserted, {report.rows_deleted:,} deleted, "
            f"{len(report.tables_changed)} tables changed, {report.files_written} files "
            f"written, {report.files_removed} removed in {report.elapsed_seconds:.1f}s "
            f"→ {layout.staging}"
        )
    if report.tables_truncated:
        click.echo(
            "materialize: the data sync truncated "
            + ", ".join(report.tables_truncated)
            + " (emptied, then built again from the rows after the truncate)"
        )
    if report.tables_dropped:
        click.echo(
            "materialize: removed tables dropped at the source: " + ", ".join(report.tables_dropped)
        )
    for table, widening in report.widenings:
        click.echo(
            f"materialize: {table}.{widening.column} widened from {widening.from_type} to "
            f"{widening.to_type} (batch {widening.batch})"
        )
    if report.consistent_as_of_ts is not None:
        click.echo(
            f"materialize: staging is consistent as of {format_ts(report.consistent_as_of_ts)}"
        )
    elif report.api == "data-sync":
        click.echo(
            "materialize: the data sync is still snapshotting; run sync until it reports a "
            "consistent state"
        )
    else:
        click.echo("materialize: the initial snapshot is still incomplete; run sync to finish it")
    return report


@click.command()
@dest_option
@click.option(
    "--rebuild",
    is_flag=True,
    help="Build staging again from the raw change log (after staging files were damaged; "
    "a missing or shortened file is found and rebuilt without it).",
)
def materialize(dest: str, rebuild: bool) -> None:
    """Apply committed raw batches in DIR to the current-state staging tables.

    Incremental: only batches not yet applied are read, and only the staging files
    their rows fall into are rewritten. Deletes are applied; the highest _ts wins.
    """
    materialize_step(layout=DestinationLayout.at(dest), rebuild=rebuild)
