"""Snapshot and delta orchestration: the one place that orders writes and checkpoints.

Consecutive pages of one phase are collected into a batch (where a batch ends is decided
by :mod:`convex_cdc.core.batch_assembler`). For every batch: normalise its pages →
``sink.write(batch)`` (durable) → ``store.save(checkpoint)``, the checkpoint being the
position after the batch's last page. Never the other order, and never a checkpoint for
a page inside a batch. A crash before the save replays the batch from its first page;
because walks are pinned, exhausting delta batches are recorded as pending first, and
each checkpoint records how the batch after it is cut (see
:mod:`convex_cdc.core.checkpoint`), the replay carries exactly the same events, and sinks
make a repeated batch harmless. A run that stops (a failed fetch, a malformed page,
``should_stop``) inside a batch writes nothing of that batch: its pages are fetched again.

``should_stop`` is asked between pages, in the snapshot walk as in the delta phase. A stop
lets the batch being written land and get its checkpoint, drops the batch being collected
(cutting it short would give its number other contents than a replay would) and ends the
run with :class:`~convex_cdc.core.errors.Stopped`, unless the run had just caught up with
the log: then it ends normally, because that is where a finished run ends too.

The steps are pipelined over three threads. A fetch thread walks ahead (see
:mod:`convex_cdc.core.page_stream`: each page names the request for the next one, the
pinned snapshot and its cursor, or the returned delta cursor), the caller's thread
normalises the pages of batch n+1, and a writer thread makes batch n durable and then
saves its checkpoint (:mod:`convex_cdc.core.batch_writer`). The writer handles one batch
at a time, in page order, so the order above holds for every batch; and a failure
anywhere surfaces only once the batch before it is settled, so a run stops right after
its last durable batch, as it would unpipelined. Memory holds at most the batch being
written, the one being collected and the pages fetched ahead.

A source followed with Data Sync (:mod:`convex_cdc.core.api_choice`) goes through the same
pipeline as one stream of pages: each page's truncates become change events ahead of its
values, and a page with truncates starts a new batch, so a truncate always means "what
earlier batches hold". Its pages cannot be fetched again identically, so a batch that is
durable but whose checkpoint was lost is adopted from the sink
(:meth:`~convex_cdc.core.sink.Sink.committed_checkpoint`), never replayed. A batch ends
with a page whose status is ``upToDate``; ``follow`` then sleeps before asking again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from typing import Final, Literal

import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.api_choice import Api, choose_api
from convex_cdc.core.batch_assembler import BatchAssembler
from convex_cdc.core.batch_writer import BatchCommit, BatchWriter
from convex_cdc.core.checkpoint import (
    Checkpoint,
    DataSync,
    DeltaTail,
    InitialSnapshot,
    SourceIdentity,
    after_data_sync_page,
    after_delta_page,
    after_drop_batch,
    after_snapshot_page,
    begin_data_sync,
    begin_snapshot,
    data_sync_from_delta_tail,
    ensure_same_source,
    with_pending_delta,
    with_schema_fingerprints,
    with_selection_fingerprint,
)
from convex_cdc.core.errors import MalformedResponse, Stopped
from convex_cdc.core.events import (
    BatchKind,
    drop_events,
    events_from_values,
    tables_in,
    truncate_events,
)
from convex_cdc.core.names import TableKey
from convex_cdc.core.page_stream import PageStream
from convex_cdc.core.schema import fetch_schema_fingerprints
from convex_cdc.core.selection_fingerprint import selection_change, selection_fingerprint
from convex_cdc.core.sink import CheckpointStore, Sink
from convex_cdc.core.source import DataSyncPage, DataSyncSource, DeltaPage, SnapshotPage, Source
from convex_cdc.core.sync_options import SyncObserver, SyncOptions, SyncReport
from convex_cdc.core.table_drops import dropped_tables

__all__ = ["SyncObserver", "SyncOptions", "SyncReport", "run_sync"]

log = logging.getLogger(__name__)


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
    observer is called from the caller's thread. Pages are written in batches (see
    :class:`SyncOptions` and :mod:`convex_cdc.core.batch_assembler`); the first batch of
    a run is cut as the saved checkpoint records, in case it is the replay of a batch a
    crash left without its checkpoint.

    Raises:
        ConvexCdcError: source errors as raised by the client (authentication, retention,
            malformed responses...), :class:`StepFailed` wrapping a sink failure,
            :class:`ConfigError` for batch limits below 1 or a legacy destination
            given another selection.
        Stopped: ``should_stop`` ended the run before it caught up (everything before
            the batch it was collecting is durable and checkpointed).
    """
    options = options or SyncOptions()
    limits = options.batch_limits  # refuses a limit below 1 before anything happens
    started = time.monotonic()
    identity = SourceIdentity.from_url(source.deployment_url)
    report = SyncReport()
    checkpoint = store.load()
    if checkpoint is not None:
        ensure_same_source(checkpoint, identity, where="the saved checkpoint")
    api = choose_api(options.api, checkpoint, source, resnapshot=options.resnapshot)
    report.api = api
    log.info("following %s with the %s API", identity.deployment_url, api)
    selection = _selection_to_record(checkpoint, options, api)  # a legacy change: exit 2
    fingerprints = fetch_schema_fingerprints(source)

    first_page: SnapshotPage | None = None
    saved = checkpoint
    if api == "data-sync" and (checkpoint is None or options.resnapshot):
        checkpoint = begin_data_sync(checkpoint, source=identity, batch_limits=limits)
        report.started_new_snapshot = True
        log.info("starting a new data sync")
    elif checkpoint is None or options.resnapshot:
        first_page = source.list_snapshot(snapshot=None, cursor=None, selection=options.selection)
        checkpoint = begin_snapshot(
            checkpoint, source=identity, snapshot=first_page.snapshot, batch_limits=limits
        )
        report.started_new_snapshot = True
        log.info("starting a snapshot walk at ts=%d", first_page.snapshot)
    if fingerprints is not None:
        checkpoint = with_schema_fingerprints(checkpoint, fingerprints)
    checkpoint = with_selection_fingerprint(checkpoint, selection)
    if first_page is None and checkpoint != saved:
        store.save(checkpoint)  # fresh fingerprints only; a new walk is pinned with its page

    with _few_young_collections(), BatchWriter(sink, store) as writer:
        run = _Run(source=source, options=options, observer=observer, report=report, writer=writer)
        try:
            # Tables dropped at the source go before anything this run reads, so a table
            # created again under the same name arrives as a new one. A data sync first
            # adopts a batch a crash left without its checkpoint.
            drops_after_start = isinstance(checkpoint.position, DataSync)
            if not drops_after_start:
                checkpoint = run.drop_batch(checkpoint, fingerprints, pin=first_page is not None)
            checkpoint, caught_up = _walk(run, checkpoint, first_page, should_stop), False
            if api == "data-sync" and not isinstance(checkpoint.position, InitialSnapshot):
                checkpoint = _data_sync_start(run, checkpoint, store)
                if drops_after_start:
                    checkpoint = run.drop_batch(checkpoint, fingerprints, pin=False)
                checkpoint, caught_up = _data_sync(run, checkpoint, should_stop, sleep)
            elif isinstance(checkpoint.position, DeltaTail):
                checkpoint, caught_up = _tail(run, checkpoint, should_stop, sleep)
            run.settle()
        except BaseException:
            # A batch still being written came before whatever failed here: let it land
            # (or fail, and then its error is the one that counts).
            run.settle()
            raise

    report.checkpoint = checkpoint
    report.elapsed_seconds = time.monotonic() - started
    if not caught_up:
        raise stopped_behind(checkpoint)
    return report


def _selection_to_record(checkpoint: Checkpoint | None, options: SyncOptions, api: Api) -> str:
    """The fingerprint of this run's selection, once it is known to fit the destination.

    Raises:
        ConfigError: a legacy destination built with another selection.
    """
    fingerprint = selection_fingerprint(options.selection)
    switching = api == "data-sync" and checkpoint is not None and checkpoint.api != api
    change = selection_change(
        checkpoint, fingerprint, resnapshot=options.resnapshot, switching_to_data_sync=switching
    )
    if change == "adopted":
        log.info("recording this run's selection for a checkpoint that predates it")
    elif change == "changed":
        # Never silent: say what the server does with it, and what it does not.
        log.warning(
            "the selection changed: the data sync walks newly selected tables by itself, "
            "deselected tables keep their rows, and a changed column selection applies to "
            "changes from now on (--resnapshot reads everything again)"
        )
    return fingerprint


def stopped_behind(checkpoint: Checkpoint) -> Stopped:
    """The error of a run ``should_stop`` ended at ``checkpoint`` before it caught up."""
    position = checkpoint.position
    if isinstance(position, InitialSnapshot):
        where = "during the snapshot walk"
    elif isinstance(position, DataSync):
        where = f"during the data sync ({position.status})"
    else:
        where = "in the delta phase, behind the server"
    return Stopped(
        f"stopped on request {where}; batches up to {checkpoint.batch_seq} are durable and "
        "checkpointed",
        hint="run sync again to resume from there",
    )


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


def _walk(
    run: _Run,
    checkpoint: Checkpoint,
    first_page: SnapshotPage | None,
    should_stop: Callable[[], bool],
) -> Checkpoint:
    """The rest of the snapshot walk (all of it when ``first_page`` starts a new one).

    Returns the checkpoint after the last batch handed to the writer: a ``DeltaTail`` once
    the walk is complete, an ``InitialSnapshot`` when ``should_stop`` ended it early.
    """
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
        while isinstance(checkpoint.position, InitialSnapshot) and not should_stop():
            following = run.snapshot_batch(checkpoint, pages, should_stop, pin=pin)
            if following is None:
                break
            checkpoint, pin = following, False
    return checkpoint


def _tail(
    run: _Run,
    checkpoint: Checkpoint,
    should_stop: Callable[[], bool],
    sleep: Callable[[float], None],
) -> tuple[Checkpoint, bool]:
    """document_deltas until caught up, or (``follow``) until ``should_stop``.

    Returns the checkpoint after the last batch and whether the run was caught up with the
    log when it ended (``False``: ``should_stop`` ended it while the log had more).
    """
    options = run.options
    idle = options.idle_initial_seconds
    caught_up = False
    while not should_stop():
        checkpoint, delivered, caught_up = _catch_up(run, checkpoint, should_stop)
        if not caught_up:
            break
        run.settle()  # caught up: everything durable and checkpointed before idling
        if not options.follow:
            break
        idle = _pause(run, checkpoint, idle, delivered=delivered, sleep=sleep)
    return checkpoint, caught_up


def _pause(
    run: _Run,
    checkpoint: Checkpoint,
    idle: float,
    *,
    delivered: bool,
    sleep: Callable[[float], None],
) -> float:
    """Caught up while following: wait before asking again, longer while nothing comes
    (reset by a catch-up that delivered). Returns the wait."""
    options = run.options
    idle = options.idle_initial_seconds if delivered else min(idle * 2, options.idle_max_seconds)
    if run.observer is not None:
        run.observer.on_idle(seconds=idle, checkpoint=checkpoint)
    sleep(idle)
    return idle


def _catch_up(
    run: _Run, checkpoint: Checkpoint, should_stop: Callable[[], bool]
) -> tuple[Checkpoint, bool, bool]:
    """Batches of document_deltas pages until the log is exhausted (or ``should_stop``).

    Returns the checkpoint after the last batch, whether that batch delivered events and
    whether it exhausted the log (``False``: ``should_stop`` ended the catch-up first).
    """
    source, selection = run.source, run.options.selection

    def fetch(cursor: int) -> Callable[[], DeltaPage]:
        return lambda: source.document_deltas(cursor=cursor, selection=selection)

    def after(page: DeltaPage) -> Callable[[], DeltaPage] | None:
        return fetch(page.cursor) if page.has_more else None

    position = checkpoint.position
    assert isinstance(position, DeltaTail)
    delivered = False
    if checkpoint.pending is not None:
        # A replay is cut at the recorded end, so the walk goes on from there, not from
        # the cursor its last page returned: the pages up to the end are a walk of their own.
        end = int(checkpoint.pending.end_cursor)

        def up_to_end(page: DeltaPage) -> Callable[[], DeltaPage] | None:
            return after(page) if page.cursor < end else None

        with PageStream(fetch(position.cursor), up_to_end, name="convex-cdc-replay") as pages:
            batch = run.delta_batch(checkpoint, pages, should_stop, replay_end=end)
        if batch is None:
            return checkpoint, delivered, False
        checkpoint, has_more, delivered = batch
        if not has_more or should_stop():
            return checkpoint, delivered, not has_more
        position = checkpoint.position
        assert isinstance(position, DeltaTail)
    with PageStream(fetch(position.cursor), after, name="convex-cdc-deltas") as pages:
        while True:
            batch = run.delta_batch(checkpoint, pages, should_stop)
            if batch is None:
                return checkpoint, delivered, False
            checkpoint, has_more, delivered = batch
            if not has_more or should_stop():
                return checkpoint, delivered, not has_more


def _data_sync_start(run: _Run, checkpoint: Checkpoint, store: CheckpointStore) -> Checkpoint:
    """The data sync checkpoint to go on from: a batch left durable without its checkpoint
    adopted, or a legacy position switched over by the server's cursor conversion."""
    run.settle()  # a legacy walk that just finished is checkpointed first
    if isinstance(checkpoint.position, DeltaTail) and checkpoint.pending is not None:
        # The pending legacy batch is adopted if it landed whole; otherwise its events
        # come again through the data sync, under a new number (see the conversion).
        checkpoint = run.adopt(checkpoint, checkpoint.pending.batch_seq)
    if isinstance(checkpoint.position, DeltaTail):
        source = run.source
        assert isinstance(source, DataSyncSource)  # choose_api picked data sync for it
        cursor = source.data_sync_cursor_from_deltas(
            cursor=int(checkpoint.position.cursor), selection=run.options.selection
        )
        checkpoint = data_sync_from_delta_tail(checkpoint, cursor=cursor)
        store.save(checkpoint)
        run.report.converted_to_data_sync = True
        log.info("switched to a data sync at the legacy cursor (nothing is read again)")
        return checkpoint
    return run.adopt(checkpoint, checkpoint.batch_seq + 1)


def _data_sync(
    run: _Run,
    checkpoint: Checkpoint,
    should_stop: Callable[[], bool],
    sleep: Callable[[float], None],
) -> tuple[Checkpoint, bool]:
    """Data Sync pages until ``upToDate`` (or, following, until ``should_stop``).

    Returns the checkpoint after the last batch and whether the run had caught up when it
    ended (``False``: ``should_stop`` ended it first).
    """
    options = run.options
    source = run.source
    assert isinstance(source, DataSyncSource)
    selection = options.selection

    def fetch(cursor: str | None) -> Callable[[], DataSyncPage]:
        return lambda: source.data_sync(cursor=cursor, selection=selection)

    def after(page: DataSyncPage) -> Callable[[], DataSyncPage] | None:
        # Caught up: stop fetching ahead; following asks again after a pause.
        return None if page.status == "upToDate" else fetch(page.cursor)

    idle = options.idle_initial_seconds
    while not should_stop():
        position = checkpoint.position
        assert isinstance(position, DataSync)
        delivered = False
        carried: DataSyncPage | None = None
        with PageStream(fetch(position.cursor), after, name="convex-cdc-data-sync") as pages:
            while True:
                batch = run.data_sync_batch(checkpoint, pages, should_stop, carried)
                if batch is None:
                    return checkpoint, False
                checkpoint, up_to_date, rows, carried = batch
                delivered = delivered or rows
                if up_to_date:
                    break
                if should_stop():
                    return checkpoint, False
        run.settle()  # caught up: everything durable and checkpointed before idling
        if not options.follow:
            return checkpoint, True
        idle = _pause(run, checkpoint, idle, delivered=delivered, sleep=sleep)
    return checkpoint, True


class _Run:
    """The per-batch steps of one run, sharing its collaborators and the pipeline."""

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
        self.limits = options.batch_limits
        self.observer = observer
        self.report = report
        self.writer = writer

    def snapshot_batch(
        self,
        start: Checkpoint,
        pages: PageStream[SnapshotPage],
        should_stop: Callable[[], bool],
        *,
        pin: bool = False,
    ) -> Checkpoint | None:
        """The next batch of pages of the pinned walk, handed to the writer.

        ``pin``: the walk's checkpoint (``start``) is not saved yet. Returns the checkpoint
        the batch leads to; ``None`` when ``should_stop`` ended the run inside the batch
        (nothing of it is written).
        """
        position = start.position
        assert isinstance(position, InitialSnapshot)
        batch = BatchAssembler(start.batch_limits)
        while True:
            page = pages.next()
            if page.snapshot != position.snapshot:
                raise MalformedResponse(
                    f"list_snapshot answered snapshot {page.snapshot} for a walk pinned at "
                    f"{position.snapshot}",
                    endpoint="list_snapshot",
                )
            events = self._normalise(
                page.values, "snapshot", start.batch_seq + 1, position.snapshot, "list_snapshot"
            )
            if position.cursor is None and not batch.pages and start.tables_seen:
                # A --resnapshot walk opens with one truncate per table the destination
                # holds, so every target learns of the new walk even when it finds no
                # document at all. Derived from the pinned checkpoint alone, so a replay of
                # this batch carries the same rows.
                tables = sorted(TableKey.parse(name) for name in start.tables_seen)
                opening = truncate_events(
                    tables, batch_seq=start.batch_seq + 1, snapshot_ts=int(position.snapshot)
                )
                events = pa.concat_tables([opening, events]) if events.num_rows else opening
            self.report.snapshot_pages += 1
            cursor, has_more, response_bytes = page.cursor, page.has_more, page.response_bytes
            del page  # its values are normalised; let them go while the batch fills
            last = not (has_more and cursor is not None)  # as the stream's ``after`` decides
            if batch.add(events, response_bytes=response_bytes, last=last):
                break
            if should_stop():
                return None
        following = after_snapshot_page(
            start, cursor=cursor, has_more=has_more, tables=batch.tables(), batch_limits=self.limits
        )
        # The pin is saved only now that the pages of the first batch are known to be
        # well-formed, and before they are written: a replay after a crash must walk the
        # same snapshot.
        pin_first = start if pin and batch.rows else None
        self._write(
            BatchCommit(start, following, batch.events(), "snapshot", tuple(batch.pages), pin_first)
        )
        return following

    def delta_batch(
        self,
        start: Checkpoint,
        pages: PageStream[DeltaPage],
        should_stop: Callable[[], bool],
        *,
        replay_end: int | None = None,
    ) -> tuple[Checkpoint, bool, bool] | None:
        """The next batch of document_deltas pages, handed to the writer.

        ``replay_end``: the batch is the replay of a pending one, which ends exactly at this
        cursor. Returns the checkpoint the batch leads to, whether the log has more, and
        whether the batch delivered any events; ``None`` when ``should_stop`` ended the
        run inside the batch (nothing of it is written).
        """
        batch = BatchAssembler(start.batch_limits if replay_end is None else None)
        while True:
            page = pages.next()
            events = self._normalise(
                page.values, "delta", start.batch_seq + 1, None, "document_deltas"
            )
            end, has_more, response_bytes = page.cursor, page.has_more, page.response_bytes
            del page
            if events.num_rows and _max_ts(events) > end:
                raise MalformedResponse(
                    f"document_deltas returned a value with _ts above its cursor {end}",
                    endpoint="document_deltas",
                )
            self.report.delta_pages += 1
            last = not has_more
            if replay_end is not None and (last or end >= replay_end):
                # Replaying a batch the sink may already hold: cut it at the recorded end
                # so it carries exactly the same events as the first attempt.
                kept = events.filter(pc.less_equal(events.column("_ts"), replay_end))
                has_more = has_more or kept.num_rows < events.num_rows
                events, end, last = kept, replay_end, True
            if batch.add(events, response_bytes=response_bytes, last=last):
                break
            if should_stop():
                return None
        following = after_delta_page(
            start, cursor=end, tables=batch.tables(), batch_limits=self.limits
        )
        pending_first = None
        if batch.rows and not has_more and replay_end is None:
            # This batch ends at the server's "now"; asked again it could return more.
            pending_first = with_pending_delta(start, batch_seq=following.batch_seq, end_cursor=end)
        self._write(
            BatchCommit(
                start, following, batch.events(), "delta", tuple(batch.pages), pending_first
            )
        )
        return following, has_more, batch.rows > 0

    def data_sync_batch(
        self,
        start: Checkpoint,
        pages: PageStream[DataSyncPage],
        should_stop: Callable[[], bool],
        carried: DataSyncPage | None,
    ) -> tuple[Checkpoint, bool, bool, DataSyncPage | None] | None:
        """The next batch of Data Sync pages, handed to the writer.

        ``carried``: a page fetched by the batch before but not taken into it (it had
        truncates). Returns the checkpoint the batch leads to, whether it ended caught up
        (``upToDate``), whether it delivered events, and a page to carry into the next
        batch; ``None`` when ``should_stop`` ended the run inside the batch.
        """
        batch = BatchAssembler(start.batch_limits)
        page = carried if carried is not None else pages.next()
        carry: DataSyncPage | None = None
        last_page: DataSyncPage | None = None
        while True:
            if page.truncates and batch.rows:
                # Truncates open a batch, so a truncate only ever concerns earlier batches.
                carry = page
                break
            seq = start.batch_seq + 1
            events = self._normalise(page.values, "delta", seq, None, "v1/data/sync")
            if page.truncates:
                truncates = truncate_events(page.truncates, batch_seq=seq)
                events = pa.concat_tables([truncates, events]) if events.num_rows else truncates
            self.report.data_sync_pages += 1
            last_page = page
            up_to_date = page.status == "upToDate"
            if batch.add(events, response_bytes=page.response_bytes, last=up_to_date):
                break
            if should_stop():
                return None
            page = pages.next()
        assert last_page is not None  # a fresh batch always takes its first page
        following = after_data_sync_page(
            start,
            cursor=last_page.cursor,
            status=last_page.status,
            snapshot_ts=last_page.snapshot_ts,
            sync_id=last_page.sync_id,
            tables=batch.tables(),
            batch_limits=self.limits,
        )
        self._write(BatchCommit(start, following, batch.events(), "data-sync", tuple(batch.pages)))
        return following, last_page.status == "upToDate" and carry is None, batch.rows > 0, carry

    def drop_batch(
        self, start: Checkpoint, source_tables: Collection[str] | None, *, pin: bool
    ) -> Checkpoint:
        """A batch of drop events for the tables the source no longer has, handed to the
        writer (:mod:`convex_cdc.core.table_drops`); returns the checkpoint after it.

        ``source_tables``: the qualified names ``json_schemas`` listed (``None``: it could
        not say, so nothing is dropped). ``pin``: ``start`` is a new snapshot walk not saved
        yet; it is saved before the batch is written, as a walk's first batch does.

        The batch after ``start`` may be durable already (a crash before its checkpoint
        save): it is adopted first, since a drop batch must not take its number. A pending
        delta batch that is not durable is replayed first; its drops wait for the next run.
        """
        if source_tables is None:
            return start
        selection = self.options.selection
        if not dropped_tables(start, source_tables, selection):
            return start
        if not pin:
            start = self.adopt(start, start.batch_seq + 1)
        drops = dropped_tables(start, source_tables, selection)
        if not drops:
            return start
        if start.pending is not None:
            log.info("a pending batch is replayed first; dropped tables are recorded next run")
            return start
        log.warning("tables dropped at the source: %s", ", ".join(key.qualified for key in drops))
        self.report.tables_dropped.extend(key.qualified for key in drops)
        following = after_drop_batch(start, tables=drops)
        events = drop_events(drops, batch_seq=following.batch_seq)
        kind: BatchKind = (
            "snapshot"
            if isinstance(start.position, InitialSnapshot)
            else "delta"
            if isinstance(start.position, DeltaTail)
            else "data-sync"
        )
        self._write(BatchCommit(start, following, events, kind, (), start if pin else None))
        return following

    def adopt(self, start: Checkpoint, seq: int) -> Checkpoint:
        """``start``, or the checkpoint of batch ``seq`` saved and returned if the sink holds
        that whole batch durably (a crash came between its write and its checkpoint save).

        Raises:
            ConvexCdcError: the sink or the store failed.
        """
        adopted = self.writer.sink.committed_checkpoint(seq)
        if adopted is None or adopted.batch_seq != seq:
            return start
        log.warning("batch %d is durable but its checkpoint was not saved; adopting it", seq)
        self.writer.store.save(adopted)
        self.report.adopted_batches += 1
        return adopted

    def settle(self) -> None:
        """Wait for the batch being written, then report it.

        Raises:
            StepFailed, ConvexCdcError: the write or a checkpoint save failed.
        """
        self._report(self.writer.settle())

    def _write(self, commit: BatchCommit) -> None:
        """Hand ``commit`` to the writer once the batch before it is settled."""
        self._report(self.writer.submit(commit))

    def _report(self, commit: BatchCommit | None) -> None:
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
            for page in commit.pages:
                self.observer.on_page(
                    kind=commit.kind,
                    events=page.events,
                    response_bytes=page.response_bytes,
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
        # The page's values are the run's own and never looked at again: no need to copy.
        return events_from_values(
            values,
            kind=kind,
            batch_seq=batch_seq,
            snapshot_ts=snapshot_ts,
            extracted_at=datetime.now(UTC),
            endpoint=endpoint,
            max_document_bytes=self.options.max_document_bytes,
            consume_values=True,
        )


def _max_ts(events: pa.Table) -> int:
    value = pc.max(events.column("_ts")).as_py()
    return int(value) if value is not None else 0
