"""Snapshot and delta orchestration: the one place that orders writes and checkpoints.

For every page: normalise → ``sink.write(batch)`` (durable) → ``store.save(checkpoint)``.
Never the other order. A crash between the two replays the page; because walks are
pinned and exhausting delta pages are recorded as pending first (see
:mod:`convex_cdc.core.checkpoint`), the replay carries exactly the same events, and sinks
make a repeated batch harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.checkpoint import (
    Checkpoint,
    DeltaTail,
    InitialSnapshot,
    SourceIdentity,
    after_delta_page,
    after_snapshot_page,
    begin_snapshot,
    ensure_same_source,
    with_pending_delta,
    with_schema_fingerprints,
)
from convex_cdc.core.errors import ConvexCdcError, MalformedResponse, SinkError, StepFailed
from convex_cdc.core.events import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    ChangeBatch,
    events_from_values,
    tables_in,
)
from convex_cdc.core.schema import fetch_schema_fingerprints
from convex_cdc.core.sink import CheckpointStore, Sink
from convex_cdc.core.source import WIRE_FORMAT, DeltaPage, Selection, SnapshotPage, Source

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How one ``sync`` run behaves."""

    selection: Selection | None = None
    resnapshot: bool = False
    """Start a new snapshot walk even if a checkpoint exists (truncate-and-reload)."""
    follow: bool = False
    """Keep polling document_deltas after catching up, backing off while idle."""
    idle_initial_seconds: float = 1.0
    idle_max_seconds: float = 30.0
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES


class SyncObserver(Protocol):
    """Receives progress; the CLI renders it as a progress display or log lines."""

    def on_page(
        self,
        *,
        kind: Literal["snapshot", "delta"],
        events: int,
        response_bytes: int,
        checkpoint: Checkpoint,
    ) -> None:
        """A page was made durable (or was empty) and its checkpoint saved."""
        ...

    def on_idle(self, *, seconds: float, checkpoint: Checkpoint) -> None:
        """Caught up in follow mode; sleeping ``seconds`` before polling again."""
        ...


@dataclass(slots=True)
class SyncReport:
    """What one run did."""

    snapshot_pages: int = 0
    delta_pages: int = 0
    batches: int = 0
    events: int = 0
    deletes: int = 0
    response_bytes: int = 0
    started_new_snapshot: bool = False
    checkpoint: Checkpoint | None = None
    elapsed_seconds: float = 0.0
    tables: set[str] = field(default_factory=set)


def run_sync(
    source: Source,
    sink: Sink,
    store: CheckpointStore,
    options: SyncOptions | None = None,
    *,
    observer: SyncObserver | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncReport:
    """Extract from ``source`` into ``sink`` until caught up (or, with ``follow``, forever).

    Resumes from ``store``: an incomplete snapshot walk continues after its cursor; a
    completed one reads document_deltas after the saved cursor.

    Raises:
        ConvexCdcError: source errors as raised by the client (authentication, retention,
            malformed responses...), :class:`StepFailed` wrapping a sink failure.
    """
    options = options or SyncOptions()
    started = time.monotonic()
    identity = SourceIdentity.from_url(source.deployment_url)
    report = SyncReport()
    checkpoint = store.load()
    if checkpoint is not None:
        ensure_same_source(checkpoint, identity, where="the saved checkpoint")
    fingerprints = fetch_schema_fingerprints(source)
    run = _Run(
        source=source, sink=sink, store=store, options=options, observer=observer, report=report
    )

    first_page: SnapshotPage | None = None
    saved = checkpoint
    if checkpoint is None or options.resnapshot:
        first_page = source.list_snapshot(snapshot=None, cursor=None, selection=options.selection)
        checkpoint = begin_snapshot(checkpoint, source=identity, snapshot=first_page.snapshot)
        report.started_new_snapshot = True
        log.info("starting a snapshot walk at ts=%d", first_page.snapshot)
    if fingerprints is not None:
        checkpoint = with_schema_fingerprints(checkpoint, fingerprints)
    if first_page is None and checkpoint != saved:
        store.save(checkpoint)  # fresh fingerprints only; a new walk is pinned with its page

    while isinstance(checkpoint.position, InitialSnapshot):
        checkpoint = run.snapshot_page(checkpoint, first_page, pin=first_page is not None)
        first_page = None

    idle = options.idle_initial_seconds
    while not should_stop():
        checkpoint, has_more, delivered = run.delta_page(checkpoint)
        if has_more:
            continue
        if not options.follow:
            break
        idle = (
            options.idle_initial_seconds if delivered else min(idle * 2, options.idle_max_seconds)
        )
        if observer is not None:
            observer.on_idle(seconds=idle, checkpoint=checkpoint)
        sleep(idle)

    report.checkpoint = checkpoint
    report.elapsed_seconds = time.monotonic() - started
    return report


class _Run:
    """The per-page steps of one run, sharing its collaborators."""

    def __init__(
        self,
        *,
        source: Source,
        sink: Sink,
        store: CheckpointStore,
        options: SyncOptions,
        observer: SyncObserver | None,
        report: SyncReport,
    ) -> None:
        self.source = source
        self.sink = sink
        self.store = store
        self.options = options
        self.observer = observer
        self.report = report

    def snapshot_page(
        self, checkpoint: Checkpoint, prefetched: SnapshotPage | None, *, pin: bool = False
    ) -> Checkpoint:
        """One page of the pinned walk; ``pin``: the walk's checkpoint is not saved yet."""
        position = checkpoint.position
        assert isinstance(position, InitialSnapshot)
        page = prefetched or self.source.list_snapshot(
            snapshot=position.snapshot, cursor=position.cursor, selection=self.options.selection
        )
        if page.snapshot != position.snapshot:
            raise MalformedResponse(
                f"list_snapshot answered snapshot {page.snapshot} for a walk pinned at "
                f"{position.snapshot}",
                endpoint="list_snapshot",
            )
        events = self._normalise(
            page.values, "snapshot", checkpoint.batch_seq + 1, position.snapshot, "list_snapshot"
        )
        tables = tables_in(events)
        following = after_snapshot_page(
            checkpoint, cursor=page.cursor, has_more=page.has_more, tables=tables
        )
        if pin and events.num_rows:
            # Saved only now that the first page is known to be well-formed, and before it
            # is written: a replay after a crash must walk the same snapshot.
            self.store.save(checkpoint)
        self.report.snapshot_pages += 1
        self._commit(checkpoint, following, events, "snapshot", page.response_bytes)
        return following

    def delta_page(self, checkpoint: Checkpoint) -> tuple[Checkpoint, bool, bool]:
        position = checkpoint.position
        assert isinstance(position, DeltaTail)
        page: DeltaPage = self.source.document_deltas(
            cursor=position.cursor, selection=self.options.selection
        )
        events = self._normalise(
            page.values, "delta", checkpoint.batch_seq + 1, None, "document_deltas"
        )
        end, has_more = page.cursor, page.has_more
        if events.num_rows and _max_ts(events) > end:
            raise MalformedResponse(
                f"document_deltas returned a value with _ts above its cursor {end}",
                endpoint="document_deltas",
            )
        pending = checkpoint.pending
        if pending is not None:
            # Replaying a batch the sink may already hold: cut it to the recorded end so it
            # carries exactly the same events as the first attempt.
            end = int(pending.end_cursor)
            kept = events.filter(pc.less_equal(events.column("_ts"), end))
            has_more = has_more or kept.num_rows < events.num_rows
            events = kept
        tables = tables_in(events)
        following = after_delta_page(checkpoint, cursor=end, tables=tables)
        if events.num_rows and not has_more and pending is None:
            # This page ended at the server's "now"; asked again it could return more.
            self.store.save(
                with_pending_delta(checkpoint, batch_seq=following.batch_seq, end_cursor=end)
            )
        self.report.delta_pages += 1
        self._commit(checkpoint, following, events, "delta", page.response_bytes)
        return following, has_more, events.num_rows > 0

    def _normalise(
        self,
        values: list[dict[str, object]],
        kind: Literal["snapshot", "delta"],
        batch_seq: int,
        snapshot_ts: int | None,
        endpoint: str,
    ) -> pa.Table:
        return events_from_values(
            values,
            kind=kind,
            batch_seq=batch_seq,
            snapshot_ts=snapshot_ts,
            extracted_at=datetime.now(UTC),
            endpoint=endpoint,
            max_document_bytes=self.options.max_document_bytes,
        )

    def _commit(
        self,
        previous: Checkpoint,
        following: Checkpoint,
        events: pa.Table,
        kind: Literal["snapshot", "delta"],
        response_bytes: int,
    ) -> None:
        """Write the batch (if any), then — and only then — save its checkpoint."""
        report = self.report
        report.response_bytes += response_bytes
        if events.num_rows:
            batch = ChangeBatch(
                seq=following.batch_seq,
                kind=kind,
                events=events,
                checkpoint=following,
                snapshot_ts=(
                    int(previous.position.snapshot)
                    if isinstance(previous.position, InitialSnapshot)
                    else None
                ),
                wire_format=WIRE_FORMAT,
                response_bytes=response_bytes,
            )
            try:
                self.sink.write(batch)
            except ConvexCdcError as exc:
                raise StepFailed(step="write", batch_seq=batch.seq, cause=exc) from exc
            except OSError as exc:
                cause = SinkError(
                    f"could not make batch {batch.seq} durable: {exc.strerror or exc}",
                    hint="free disk space or fix permissions, then run sync again; "
                    "nothing was lost",
                )
                raise StepFailed(step="write", batch_seq=batch.seq, cause=cause) from exc
            report.batches += 1
            report.events += events.num_rows
            report.deletes += pc.sum(events.column("_deleted").cast(pa.int64())).as_py() or 0
            report.tables.update(t.qualified for t in batch.tables())
        if following != previous:  # an idle poll that moved nothing needs no save
            self.store.save(following)
        if self.observer is not None:
            self.observer.on_page(
                kind=kind,
                events=events.num_rows,
                response_bytes=response_bytes,
                checkpoint=following,
            )


def _max_ts(events: pa.Table) -> int:
    value = pc.max(events.column("_ts")).as_py()
    return int(value) if value is not None else 0
