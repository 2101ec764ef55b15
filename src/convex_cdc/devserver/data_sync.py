"""The Data Sync iterator: one page of a sync, as the server computes it.

docs/convex-export-api.md §13 describes the API; this is the server's algorithm.

A cursor *captures* a document when its tablet has been walked completely, or it is in the
tablet being walked at or before the last id walked. Each page does one of two things:

* a **by-id page** reads the next documents of the table being walked, at the fixed
  ``synced_ts``, and emits each at its latest revision then. When the table ends, the next
  selected table not yet walked (in tablet-id order) starts. Chosen only while ``synced_ts``
  is within the freshness window of the latest timestamp.
* a **ts page** walks the log after ``synced_ts``, emits the new revisions (and tombstones)
  of captured documents only, and moves ``synced_ts`` to the last transaction it read
  completely (the latest timestamp when the log runs out). A transaction is never split.

Before either, the cursor is reconciled with the tables selected now: walked tablets that
are no longer selected, or no longer exist (dropped, or replaced by an import, which makes a
new tablet), are forgotten, and a cancelled in-progress table gives way to the next one. A
table *enters* the sync when its walk is set up: on a cold start, once it is selected, or
once an import replaced it. Its truncate is sent on that page (which may be the page that
finishes the previous table), before any of its documents. A table that leaves gets nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from convex_cdc.devserver.api_errors import data_sync_cursor_expired, invalid_data_sync_cursor
from convex_cdc.devserver.selection import RequestSelection
from convex_cdc.devserver.settings import DevServerSettings
from convex_cdc.devserver.store import DocumentStore
from convex_cdc.devserver.sync_cursor import DataSyncCursor, TableInProgress
from convex_cdc.devserver.tables import Revision, Table

_NS_PER_SECOND = 1_000_000_000

StatusKind = Literal["snapshotting", "stale", "upToDate"]


def window_ns(seconds: float) -> int:
    """A window in seconds as nanoseconds; an infinite one (an emulator with a manual
    clock, or retention switched off) as the largest timestamp."""
    return 2**63 - 1 if math.isinf(seconds) else round(seconds * _NS_PER_SECOND)


@dataclass(frozen=True, slots=True)
class SyncLimits:
    """How much one page may do."""

    page_size: int
    """Entries per page (soft on ts pages: a transaction is never split)."""
    page_bytes: int
    """Bytes of emitted documents per page (soft: the crossing document is included)."""
    rows_read: int
    """Log rows a ts page reads (a first transaction larger than this is read whole)."""
    by_id_freshness_ns: int
    """A by-id page runs only while ``latest - synced_ts`` is below this."""

    @classmethod
    def from_settings(cls, settings: DevServerSettings) -> SyncLimits:
        """The limits the devserver's settings ask for."""
        return cls(
            page_size=settings.data_sync_page_size,
            page_bytes=settings.data_sync_page_bytes,
            rows_read=settings.data_sync_rows_read_limit,
            by_id_freshness_ns=window_ns(settings.data_sync_by_id_freshness_seconds),
        )


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """``snapshotting`` (not yet consistent), or consistent at ``snapshot_ts`` and either
    ``stale`` (newer commits exist) or ``upToDate``."""

    kind: StatusKind
    snapshot_ts: int | None


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """What ``list_active_syncs`` reports for a sync after a page."""

    status: SyncStatus
    synced_ts: int
    tables_synced: int
    total_tables: int
    current_table: Table | None
    documents_in_current_table: int
    total_documents_in_current_table: int
    documents_synced: int
    total_documents: int


@dataclass(frozen=True, slots=True)
class SyncPage:
    """One page: truncates apply before the entries; the cursor resumes after it."""

    truncates: tuple[Table, ...]
    entries: tuple[Revision, ...]
    cursor: DataSyncCursor
    progress: SyncProgress


def check_resumable(store: DocumentStore, synced_ts: int, min_retained_ts: int) -> None:
    """Refuse a cursor timestamp the server cannot read from.

    Raises:
        ApiError: 400 ``InvalidDataSyncCursor`` (negative, or ahead of the latest
            timestamp), 400 ``DataSyncCursorExpired`` (older than the retention window).
    """
    if synced_ts < 0:
        raise invalid_data_sync_cursor("the cursor's timestamp is negative")
    if synced_ts > store.latest_ts:
        raise invalid_data_sync_cursor("the cursor is ahead of the deployment's latest timestamp")
    if synced_ts < min_retained_ts:
        raise data_sync_cursor_expired()


class _Walk:
    """The cursor being advanced by one page."""

    def __init__(self, cursor: DataSyncCursor, targets: list[Table]) -> None:
        self.cursor = cursor
        self.targets = targets
        self.entering: list[Table] = []

    def start_next_table(self) -> None:
        """Walk the first selected table not walked yet; it enters the sync."""
        walked = self.cursor.synced_tablets
        following = next((table for table in self.targets if table.tablet_id not in walked), None)
        self.cursor = replace(
            self.cursor,
            in_progress=None if following is None else TableInProgress(following.tablet_id, None),
            current_table_documents=0,
        )
        if following is not None:
            self.entering.append(following)

    def reconcile(self) -> None:
        """Forget tablets that left the selection; start a table if none is in progress."""
        selected = {table.tablet_id for table in self.targets}
        current = self.cursor.in_progress
        self.cursor = replace(self.cursor, synced_tablets=self.cursor.synced_tablets & selected)
        if current is None or current.tablet_id not in selected:
            self.start_next_table()


def _by_id_page(
    store: DocumentStore, walk: _Walk, current: TableInProgress, limits: SyncLimits
) -> list[Revision]:
    cursor = walk.cursor
    table = next(table for table in walk.targets if table.tablet_id == current.tablet_id)
    found = store.documents_after(table, current.last_id, cursor.synced_ts, limits.page_size)
    entries: list[Revision] = []
    page_bytes = 0
    bytes_limited = False
    for revision in found:
        entries.append(revision)
        page_bytes += len(revision.export or b"")
        if page_bytes >= limits.page_bytes:
            bytes_limited = True
            break
    count_limited = not bytes_limited and len(entries) >= limits.page_size
    cursor = replace(
        cursor,
        documents_synced=cursor.documents_synced + len(entries),
        current_table_documents=cursor.current_table_documents + len(entries),
    )
    if count_limited or bytes_limited:
        walk.cursor = replace(cursor, in_progress=TableInProgress(table.tablet_id, entries[-1].id))
    else:
        walk.cursor = replace(cursor, synced_tablets=cursor.synced_tablets | {table.tablet_id})
        walk.start_next_table()
    return entries


def _ts_page(store: DocumentStore, walk: _Walk, latest: int, limits: SyncLimits) -> list[Revision]:
    cursor = walk.cursor
    entries: list[Revision] = []
    batch: list[Revision] = []  # the captured rows of the transaction being read
    batch_ts: int | None = None
    batch_bytes = page_bytes = 0
    synced_ts = cursor.synced_ts
    committed_any = stopped = False
    for rows_before, row in enumerate(store.revisions_between(cursor.synced_ts, latest)):
        if row.ts != batch_ts:
            if batch_ts is not None:  # the previous transaction was read completely
                entries.extend(batch)
                page_bytes += batch_bytes
                batch, batch_bytes = [], 0
                synced_ts = batch_ts
                committed_any = True
                if (
                    rows_before >= limits.rows_read
                    or len(entries) >= limits.page_size
                    or page_bytes >= limits.page_bytes
                ):
                    stopped = True
                    break
            batch_ts = row.ts
        if cursor.captures(row.table.tablet_id, row.id):
            batch.append(row)
            batch_bytes += len(row.export or b"")
        # Past the row budget mid-transaction: drop it (read again next page), unless it is
        # the page's first, which must go through whole for the sync to progress.
        if rows_before + 1 >= limits.rows_read and committed_any:
            stopped = True
            break
    if not stopped:  # the log ran out: every transaction up to `latest` was read
        entries.extend(batch)
        synced_ts = latest
    walk.cursor = replace(
        cursor, synced_ts=synced_ts, documents_synced=cursor.documents_synced + len(entries)
    )
    return entries


def _progress(walk: _Walk, latest: int) -> SyncProgress:
    cursor = walk.cursor
    current = cursor.in_progress
    current_table = None
    if current is None:
        kind: StatusKind = "stale" if cursor.synced_ts < latest else "upToDate"
        status = SyncStatus(kind, cursor.synced_ts)
    else:
        status = SyncStatus("snapshotting", None)
        current_table = next(
            table for table in walk.targets if table.tablet_id == current.tablet_id
        )
    return SyncProgress(
        status=status,
        synced_ts=cursor.synced_ts,
        tables_synced=len(cursor.synced_tablets),
        total_tables=len(walk.targets),
        current_table=current_table,
        documents_in_current_table=cursor.current_table_documents,
        total_documents_in_current_table=0
        if current_table is None
        else current_table.shape.objects,
        documents_synced=cursor.documents_synced,
        total_documents=sum(table.shape.objects for table in walk.targets),
    )


def next_page(
    store: DocumentStore,
    cursor: DataSyncCursor | None,
    selection: RequestSelection,
    limits: SyncLimits,
    *,
    sync_id: str,
    min_retained_ts: int,
) -> SyncPage:
    """The page after ``cursor`` (None: a cold start, under ``sync_id``).

    Raises:
        ApiError: the cursor is ahead of the server or outside retention
            (:func:`check_resumable`).
    """
    latest = store.latest_ts
    if cursor is not None:
        check_resumable(store, cursor.synced_ts, min_retained_ts)
    # Tables that exist at `latest` cannot change under this page: commits come after it.
    targets = [
        table
        for table in store.user_tables_at(latest)
        if selection.includes(table.component, table.name)
    ]
    if cursor is None:
        walk = _Walk(DataSyncCursor(sync_id, latest, frozenset(), None), targets)
        walk.start_next_table()
    else:
        walk = _Walk(cursor, targets)
        walk.reconcile()
    current = walk.cursor.in_progress
    if current is not None and latest - walk.cursor.synced_ts < limits.by_id_freshness_ns:
        entries = _by_id_page(store, walk, current, limits)
    else:
        entries = _ts_page(store, walk, latest, limits)
    return SyncPage(tuple(walk.entering), tuple(entries), walk.cursor, _progress(walk, latest))
