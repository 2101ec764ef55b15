"""Snapshot and delta orchestration: the one place that orders writes and checkpoints.

For every page: normalise → ``sink.write(batch)`` (durable) → ``store.save(checkpoint)``.
Never the other order. A crash between the two replays the page; because walks are
pinned and exhausting delta pages are recorded as pending first (see
:mod:`convex_cdc.core.checkpoint`), the replay carries exactly the same events, and sinks
make a repeated batch harmless.

The steps are pipelined over three threads. A fetch thread walks ahead (see
:mod:`convex_cdc.core.page_stream`: each page names the request for the next one, the
pinned snapshot and its cursor, or the returned delta cursor), the caller's thread
normalises page n+1, and a writer thread makes batch n durable and then saves its
checkpoint (:mod:`convex_cdc.core.batch_writer`). The writer handles one batch at a time,
in page order, so the order above holds for every batch; and a failure anywhere surfaces
only once the batch before it is settled, so a run stops right after its last durable
batch, as it would unpipelined.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.batch_writer import BatchWriter, PageCommit
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
from convex_cdc.core.errors import MalformedResponse
from convex_cdc.core.events import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    events_from_values,
    tables_in,
)
from convex_cdc.core.page_stream import PageStream
from convex_cdc.core.schema import fetch_schema_fingerprints
from convex_cdc.core.sink import CheckpointStore, Sink
from convex_cdc.core.source import DeltaPage, Selection, SnapshotPage, Source

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
    completed one reads document_deltas after the saved cursor. ``sink.write`` and
    ``store.save`` are called from a writer thread, one at a time and in order; the
    observer is called from the caller's thread.

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

    with _few_young_collections(), BatchWriter(sink, store) as writer:
        run = _Run(source=source, options=options, observer=observer, report=report, writer=writer)
        try:
            checkpoint = _walk(run, checkpoint, first_page)
            checkpoint = _tail(run, checkpoint, should_stop, sleep)
            run.settle()
        except BaseException:
            # A batch still being written came before whatever failed here: let it land
            # (or fail, and then its error is the one that counts).
            run.settle()
            raise

    report.checkpoint = checkpoint
    report.elapsed_seconds = time.monotonic() - started
    return report


@contextlib.contextmanager
def _few_young_collections() -> Iterator[None]:
    """Run the garbage collector's youngest generation rarely while pages stream through.

    A parsed page is tens of thousands of short-lived dicts and lists, all freed by
    reference counting; collecting them every 700 allocations (the default) only traverses
    them while they are alive and costs a tenth of the run. Restored afterwards.
    """
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, _GC_YOUNG_THRESHOLD), *older)
    try:
        yield
    finally:
        gc.set_threshold(young, *older)


_GC_YOUNG_THRESHOLD: Final = 50_000


def _walk(run: _Run, checkpoint: Checkpoint, first_page: SnapshotPage | None) -> Checkpoint:
    """The rest of the snapshot walk (all of it when ``first_page`` starts a new one)."""
    position = checkpoint.position
    if not isinstance(position, InitialSnapshot):
        return checkpoint
    source, selection, snapshot = run.source, run.options.selection, position.snapshot

    def fetch(cursor: str | None) -> Callable[[], SnapshotPage]:
        return lambda: source.list_snapshot(snapshot=snapshot, cursor=cursor, selection=selection)

    def after(page: SnapshotPage) -> Callable[[], SnapshotPage] | None:
        return fetch(page.cursor) if page.has_more and page.cursor is not None else None

    first = fetch(position.cursor) if first_page is None else lambda: first_page
    pin = first_page is not None
    with PageStream(first, after, name="convex-cdc-snapshot") as pages:
        while isinstance(checkpoint.position, InitialSnapshot):
            checkpoint = run.snapshot_page(checkpoint, pages.next(), pin=pin)
            pin = False
    return checkpoint


def _tail(
    run: _Run,
    checkpoint: Checkpoint,
    should_stop: Callable[[], bool],
    sleep: Callable[[float], None],
) -> Checkpoint:
    """document_deltas until caught up, or (``follow``) until ``should_stop``."""
    options, observer = run.options, run.observer
    idle = options.idle_initial_seconds
    while not should_stop():
        checkpoint, delivered = _catch_up(run, checkpoint, should_stop)
        run.settle()  # caught up: everything durable and checkpointed before idling
        if not options.follow:
            break
        idle = (
            options.idle_initial_seconds if delivered else min(idle * 2, options.idle_max_seconds)
        )
        if observer is not None:
            observer.on_idle(seconds=idle, checkpoint=checkpoint)
        sleep(idle)
    return checkpoint


def _catch_up(
    run: _Run, checkpoint: Checkpoint, should_stop: Callable[[], bool]
) -> tuple[Checkpoint, bool]:
    """document_deltas pages until the log is exhausted (or ``should_stop``).

    Returns the checkpoint after the last page and whether that page delivered events.
    """
    source, selection = run.source, run.options.selection

    def fetch(cursor: int) -> Callable[[], DeltaPage]:
        return lambda: source.document_deltas(cursor=cursor, selection=selection)

    def after(page: DeltaPage) -> Callable[[], DeltaPage] | None:
        return fetch(page.cursor) if page.has_more else None

    position = checkpoint.position
    assert isinstance(position, DeltaTail)
    if checkpoint.pending is not None:
        # A replay is cut to the recorded end, so the walk goes on from there, not from
        # the cursor the page returned: fetch this one page on its own.
        checkpoint, has_more, delivered = run.delta_page(checkpoint, fetch(position.cursor)())
        if not has_more or should_stop():
            return checkpoint, delivered
        position = checkpoint.position
        assert isinstance(position, DeltaTail)
    with PageStream(fetch(position.cursor), after, name="convex-cdc-deltas") as pages:
        while True:
            checkpoint, has_more, delivered = run.delta_page(checkpoint, pages.next())
            if not has_more or should_stop():
                return checkpoint, delivered


class _Run:
    """The per-page steps of one run, sharing its collaborators and the pipeline."""

    def __init__(
        self,
        *,
        source: Source,
        options: SyncOptions,
        observer: SyncObserver | None,
        report: SyncReport,
        writer: BatchWriter,
    ) -> None:
        self.source = source
        self.options = options
        self.observer = observer
        self.report = report
        self.writer = writer

    def snapshot_page(
        self, checkpoint: Checkpoint, page: SnapshotPage, *, pin: bool = False
    ) -> Checkpoint:
        """One page of the pinned walk, handed to the writer; ``pin``: the walk's
        checkpoint is not saved yet. Returns the checkpoint the page leads to."""
        position = checkpoint.position
        assert isinstance(position, InitialSnapshot)
        if page.snapshot != position.snapshot:
            raise MalformedResponse(
                f"list_snapshot answered snapshot {page.snapshot} for a walk pinned at "
                f"{position.snapshot}",
                endpoint="list_snapshot",
            )
        events = self._normalise(
            page.values, "snapshot", checkpoint.batch_seq + 1, position.snapshot, "list_snapshot"
        )
        following = after_snapshot_page(
            checkpoint, cursor=page.cursor, has_more=page.has_more, tables=tables_in(events)
        )
        self.report.snapshot_pages += 1
        # The pin is saved only now that the first page is known to be well-formed, and
        # before it is written: a replay after a crash must walk the same snapshot.
        pin_first = checkpoint if pin and events.num_rows else None
        self._write(
            PageCommit(checkpoint, following, events, "snapshot", page.response_bytes, pin_first)
        )
        return following

    def delta_page(self, checkpoint: Checkpoint, page: DeltaPage) -> tuple[Checkpoint, bool, bool]:
        """One document_deltas page, handed to the writer.

        Returns the checkpoint the page leads to, whether the log has more, and whether
        the page delivered any events.
        """
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
        following = after_delta_page(checkpoint, cursor=end, tables=tables_in(events))
        pending_first = None
        if events.num_rows and not has_more and pending is None:
            # This page ended at the server's "now"; asked again it could return more.
            pending_first = with_pending_delta(
                checkpoint, batch_seq=following.batch_seq, end_cursor=end
            )
        self.report.delta_pages += 1
        self._write(
            PageCommit(checkpoint, following, events, "delta", page.response_bytes, pending_first)
        )
        return following, has_more, events.num_rows > 0

    def settle(self) -> None:
        """Wait for the batch being written, then report it.

        Raises:
            StepFailed, ConvexCdcError: the write or a checkpoint save failed.
        """
        self._report(self.writer.settle())

    def _write(self, commit: PageCommit) -> None:
        """Hand ``commit`` to the writer once the batch before it is settled."""
        self._report(self.writer.submit(commit))

    def _report(self, commit: PageCommit | None) -> None:
        if commit is None:
            return
        report = self.report
        report.response_bytes += commit.response_bytes
        events = commit.events
        if events.num_rows:
            report.batches += 1
            report.events += events.num_rows
            report.deletes += pc.sum(events.column("_deleted").cast(pa.int64())).as_py() or 0
            report.tables.update(key.qualified for key in tables_in(events))
        if self.observer is not None:
            self.observer.on_page(
                kind=commit.kind,
                events=events.num_rows,
                response_bytes=commit.response_bytes,
                checkpoint=commit.following,
            )

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


def _max_ts(events: pa.Table) -> int:
    value = pc.max(events.column("_ts")).as_py()
    return int(value) if value is not None else 0
