"""``convex-cdc publish``: copy staging to an object store and write the manifest last."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import click

from convex_cdc.commands.options import dest_option, publish_options
from convex_cdc.target_s3.atomic_file import atomic_write_bytes
from convex_cdc.target_s3.io_errors import io_errors
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.publish.publisher import (
    DEFAULT_DELTA_RETENTION,
    PublishEvent,
    PublishReport,
)
from convex_cdc.target_s3.publish.publisher import publish as publish_staging

log = logging.getLogger(__name__)


def publish_step(
    *,
    layout: DestinationLayout,
    to: str,
    endpoint_url: str | None = None,
    keep: int = 10,
    include_raw: bool = False,
    delta: bool = True,
    delta_retention: timedelta = DEFAULT_DELTA_RETENTION,
) -> PublishReport:
    """Publish ``layout``'s staging to ``to`` and print what happened (shared with ``run``).

    Raises:
        ConvexCdcError: as :func:`~convex_cdc.target_s3.publish.publisher.publish` raises,
            and ``TargetError`` when ``last_publish.json`` cannot be written.
    """

    def progress(event: PublishEvent) -> None:
        if event.stage in ("upload", "delta", "delete"):
            log.info("publish: %s %s (%d/%d)", event.stage, event.path, event.done, event.total)

    report = publish_staging(
        layout,
        to,
        endpoint_url=endpoint_url,
        keep=keep,
        include_raw=include_raw,
        progress=progress,
        delta=delta,
        delta_retention=delta_retention,
    )
    click.echo(f"publish: {report.summary()}")
    if report.manifest_url is not None:
        click.echo(f"publish: manifest → {report.manifest_url}")
    record = {
        "to": report.target,
        "sequence": report.current_sequence,
        "published": report.sequence is not None,
        "files_uploaded": report.files_uploaded,
        "bytes_uploaded": report.bytes_uploaded,
        "delta_commits": report.delta_commits,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with io_errors(f"record the publish in {layout.last_publish}", then="publish again"):
        atomic_write_bytes(layout.last_publish, (json.dumps(record, indent=2) + "\n").encode())
    return report


@click.command()
@dest_option
@click.option(
    "--to",
    required=True,
    metavar="URL",
    help="s3://bucket/prefix, file:///abs/dir or a local directory.",
)
@publish_options
@click.option(
    "--delta/--no-delta",
    default=True,
    show_default=True,
    help="Also keep every published table a Delta Lake table (staging/<table>/_delta_log).",
)
@click.option(
    "--delta-retention-hours",
    type=click.IntRange(min=0),
    default=int(DEFAULT_DELTA_RETENTION.total_seconds() // 3600),
    show_default=True,
    help="Hours a file stays after it left a table's current Delta version.",
)
def publish(  # noqa: PLR0917 - click passes every option by name
    dest: str,
    to: str,
    endpoint_url: str | None,
    keep: int,
    include_raw: bool,
    delta: bool,
    delta_retention_hours: int,
) -> None:
    """Publish DIR's staging tables to an object store, manifest last.

    Files are immutable and content-named, so only changed files are uploaded. Then each
    changed table gets one Delta commit (staging/<table>/ is a Delta table whose files are
    exactly the manifest's), then the numbered manifest is written create-only and
    manifest.json points at it. A reader that follows manifest.json, or reads a table as
    Delta, always sees a complete, consistent set of files. Refused while the initial
    snapshot is incomplete. A prefix belongs to the destination that first published to
    it (owner.json); another destination is refused (exit 2). S3 credentials come from
    the standard AWS environment variables.
    """
    publish_step(
        layout=DestinationLayout.at(dest),
        to=to,
        endpoint_url=endpoint_url,
        keep=keep,
        include_raw=include_raw,
        delta=delta,
        delta_retention=timedelta(hours=delta_retention_hours),
    )
