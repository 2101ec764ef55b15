"""``convex-cdc sync``: extract changes from Convex into the raw change log.

SIGTERM stops a sync after the batch being written is durable and checkpointed: it exits
0 if it had just caught up with the source (how ``--follow`` normally ends), else with
:class:`~convex_cdc.core.errors.Stopped` (143) naming where it stopped.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import assert_never

import click

from convex_cdc.commands.connection import connect, source_options
from convex_cdc.commands.options import (
    api_option,
    batch_rows_option,
    dest_option,
    selection_options,
)
from convex_cdc.commands.progress import SyncProgress
from convex_cdc.core.api_choice import ApiChoice
from convex_cdc.core.checkpoint import (
    DEFAULT_BATCH_ROWS,
    Checkpoint,
    DataSync,
    DeltaTail,
    InitialSnapshot,
)
from convex_cdc.core.errors import ConvexCdcError, StateError, Stopped
from convex_cdc.core.events import DEFAULT_MAX_DOCUMENT_BYTES
from convex_cdc.core.orchestrator import SyncOptions, SyncReport, run_sync
from convex_cdc.core.selection import Selection
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.io_errors import io_errors
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.locks import DestinationLock
from convex_cdc.target_s3.raw.change_log import (
    RawChangeLog,
    RawChangeLogSink,
    remove_interrupted_writes,
)
from convex_cdc.target_s3.raw.history import checkpoint_from_newest_batch, ensure_checkpoint_covers

log = logging.getLogger(__name__)


def sync_step(
    *,
    layout: DestinationLayout,
    url: str | None,
    deploy_key_env: str,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    follow: bool = False,
    resnapshot: bool = False,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    restore_checkpoint: bool = False,
    api: ApiChoice = "auto",
    stop: threading.Event | None = None,
) -> SyncReport:
    """Run the extraction into ``layout`` and print what happened (shared with ``run``).

    ``stop`` (set by SIGTERM while this runs) ends the run after the batch being written;
    ``run`` passes its own to see afterwards whether a stop was asked for.

    Raises:
        ConvexCdcError: as :func:`~convex_cdc.core.orchestrator.run_sync` raises, and
            ``TargetError`` when the destination directory cannot be created.
        StateError: the raw change log holds batches beyond the checkpoint.
        Stopped: SIGTERM ended the run before it caught up.
    """
    selection = Selection.from_patterns(include=include, exclude=exclude)
    options = SyncOptions(
        selection=None if selection.is_everything else selection,
        api=api,
        resnapshot=resnapshot,
        follow=follow,
        max_document_bytes=max_document_bytes,
        batch_rows=batch_rows,
    )
    stop = stop if stop is not None else threading.Event()
    with io_errors(f"create the destination {layout.root}", then="run sync again"):
        layout.root.mkdir(parents=True, exist_ok=True)
    store = FileCheckpointStore(layout)
    with StopOnSigterm(stop), DestinationLock(layout, "sync"):
        prepare_destination(layout, store, restore_checkpoint=restore_checkpoint)
        with connect(url, deploy_key_env) as client, SyncProgress("sync") as progress:
            try:
                report = run_sync(
                    client,
                    RawChangeLogSink(layout),
                    store,
                    options,
                    observer=progress,
                    should_stop=stop.is_set,
                    sleep=lambda seconds: _wait(stop, seconds),
                )
            except Stopped as stopped:
                raise _where_stopped(stopped, store) from None
    pages = report.snapshot_pages + report.delta_pages + report.data_sync_pages
    if report.tables_dropped:
        click.echo(
            "sync: dropped at the source, removed from the destination: "
            + ", ".join(report.tables_dropped)
        )
    if report.converted_to_data_sync:
        click.echo("sync: switched this destination to Data Sync (nothing was read again)")
    click.echo(
        f"sync: {report.api or 'no'} API: {report.events:,} change events "
        f"({report.deletes:,} deletes) in {report.batches:,} batches from {pages:,} pages, "
        f"{report.response_bytes / 1e6:,.1f} MB in {report.elapsed_seconds:.1f}s "
        f"→ {layout.raw_change_log}"
    )
    if report.checkpoint is not None:
        click.echo(
            f"sync: checkpoint caught up, {describe_position(report.checkpoint)} → "
            f"{layout.checkpoint}"
        )
    return report


def prepare_destination(
    layout: DestinationLayout, store: FileCheckpointStore, *, restore_checkpoint: bool
) -> None:
    """Before a sync (holding its lock): clean up after a killed one, rebuild the checkpoint
    if asked to, and refuse a checkpoint the raw change log has moved past.

    Raises:
        StateError: the raw change log holds batches beyond the checkpoint.
        TargetError: the destination cannot be read or cleaned up.
    """
    removed = remove_interrupted_writes(layout)
    if removed:
        log.info("removed %d temporary files left by an interrupted sync", removed)
    raw = RawChangeLog(layout)
    if restore_checkpoint:
        rebuilt = checkpoint_from_newest_batch(raw)
        try:
            saved = store.load()
        except StateError:
            saved = None  # unreadable: replaced by the rebuilt one
        if saved is None or saved.batch_seq < rebuilt.batch_seq:
            store.save(rebuilt)
            click.echo(
                f"sync: checkpoint rebuilt from raw batch {rebuilt.batch_seq}: "
                f"{describe_position(rebuilt)} → {layout.checkpoint}"
            )
    ensure_checkpoint_covers(raw, store.load())


def _where_stopped(stopped: Stopped, store: FileCheckpointStore) -> Stopped:
    """``stopped`` with the saved checkpoint's position spelled out."""
    try:
        checkpoint = store.load()
    except ConvexCdcError:
        return stopped
    if checkpoint is None:
        return stopped
    return Stopped(
        f"sync (SIGTERM) {stopped.message}: {describe_position(checkpoint)}", hint=stopped.hint
    )


def _wait(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


def describe_position(checkpoint: Checkpoint) -> str:
    """Human description of where a checkpoint stands."""
    match checkpoint.position:
        case InitialSnapshot(snapshot=snapshot, cursor=cursor):
            state = "not started" if cursor is None else "in progress"
            return f"snapshot walk at {format_ts(snapshot)} {state} (batch {checkpoint.batch_seq})"
        case DeltaTail(cursor=cursor):
            return f"delta cursor at {format_ts(cursor)} (batch {checkpoint.batch_seq})"
        case DataSync(status=status, snapshot_ts=ts):
            where = "first walk in progress" if ts is None else f"consistent at {format_ts(ts)}"
            return f"data sync {status}, {where} (batch {checkpoint.batch_seq})"
        case _:
            assert_never(checkpoint.position)


def format_ts(ts: int) -> str:
    """A Convex timestamp (ns) as ISO-8601 UTC, with the raw value."""
    when = datetime.fromtimestamp(ts / 1e9, tz=UTC).isoformat(timespec="seconds")
    return f"{when} (ts {ts})"


class StopOnSigterm:
    """Turn SIGTERM into a graceful stop after the batch being written (for --follow)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: object = None

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()


@click.command()
@dest_option
@source_options
@selection_options
@click.option(
    "--follow",
    is_flag=True,
    help="Keep polling after catching up (backs off while idle; SIGTERM stops cleanly).",
)
@click.option(
    "--resnapshot",
    is_flag=True,
    help="Start a new snapshot walk (after an expired cursor); staging is reloaded from it.",
)
@click.option(
    "--restore-checkpoint",
    is_flag=True,
    help="Rebuild a lost or rolled-back checkpoint.json from the newest batch of the raw "
    "change log (each batch index records the checkpoint it advances to), then sync on.",
)
@click.option(
    "--max-document-bytes",
    type=click.IntRange(min=1024),
    default=DEFAULT_MAX_DOCUMENT_BYTES,
    show_default=True,
    help="Refuse documents larger than this (Convex caps documents at 1 MiB).",
)
@batch_rows_option
@api_option
def sync(
    *,
    dest: str,
    url: str | None,
    deploy_key_env: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    follow: bool,
    resnapshot: bool,
    max_document_bytes: int,
    batch_rows: int,
    restore_checkpoint: bool,
    api: ApiChoice,
) -> None:
    """Extract changes from Convex into DIR/raw_change_log until caught up.

    The first run walks a consistent snapshot; later runs read the change log from
    the saved checkpoint. The checkpoint advances only after each batch is durable,
    so an interrupted sync resumes without losing or duplicating anything.
    """
    sync_step(
        layout=DestinationLayout.at(dest),
        url=url,
        deploy_key_env=deploy_key_env,
        include=include,
        exclude=exclude,
        follow=follow,
        resnapshot=resnapshot,
        max_document_bytes=max_document_bytes,
        batch_rows=batch_rows,
        restore_checkpoint=restore_checkpoint,
        api=api,
    )
