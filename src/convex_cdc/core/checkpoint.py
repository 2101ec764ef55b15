"""The per-source checkpoint: a closed sum type and its pure transitions.

A source is in one of three positions:

* ``InitialSnapshot(snapshot, cursor)`` while the consistent ``list_snapshot`` walk at
  timestamp ``snapshot`` is incomplete; ``cursor`` is the opaque list_snapshot cursor to
  resume from.
* ``DeltaTail(cursor)`` afterwards; ``cursor`` is the exclusive ``document_deltas``
  cursor. The first one is the final snapshot timestamp, which makes the hand-off exact.
* ``DataSync(cursor, status, snapshot_ts, sync_id)`` when the source is followed with
  Convex's Data Sync API instead of the legacy pair: one opaque cursor for the walk and
  the changes after it, and the server's word on whether the data is consistent yet.

No checkpoint at all means "start a new snapshot". Transitions here do no I/O; the
orchestrator applies them and saves the result only after the sink made the batch durable.

Replays are exact. A batch holds one or more consecutive pages of one phase, and the
checkpoint is the position after its last page. A walk is pinned (``begin_snapshot``)
before its first batch is written, so every snapshot page can be fetched again
identically; a delta batch that ends with a page that exhausted the log is recorded as
``pending`` before it is written, so its replay can be cut to the same end; and every
checkpoint records the :class:`BatchLimits` the batch after it is cut with, so a replay
groups the same pages even when a later run is given other limits. A sink that sees batch
``n`` twice therefore sees the same events twice.

Data Sync pages cannot be fetched again identically (the server decides per request
whether to walk a table or read the log), so a Data Sync batch is never replayed: a batch
that is durable but whose checkpoint was not saved is *adopted* instead (every sink
records the checkpoint a batch leads to with the batch, see
:meth:`~convex_cdc.core.sink.Sink.committed_checkpoint`), and one that is not durable is
fetched anew under the same number.

The JSON form (strict, versioned) lives in :mod:`convex_cdc.core.checkpoint_json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal, NewType, assert_never

from convex_cdc.core.errors import StateError
from convex_cdc.core.names import TableKey

SnapshotTs = NewType("SnapshotTs", int)
"""A list_snapshot timestamp (ns)."""
SnapshotCursor = NewType("SnapshotCursor", str)
"""The opaque list_snapshot cursor, stored exactly as received."""
DeltaCursor = NewType("DeltaCursor", int)
"""The exclusive document_deltas cursor (ns)."""
DataSyncCursor = NewType("DataSyncCursor", str)
"""The opaque Data Sync cursor (lowercase hex), stored exactly as received."""
SyncStatus = Literal["snapshotting", "stale", "upToDate"]
"""The Data Sync status: mid-walk (not a consistent state), consistent but behind, or
consistent and caught up."""

DEFAULT_BATCH_ROWS: Final = 16_384
"""Change events a batch collects before it ends (16 full snapshot pages, 128 delta pages):
enough to spread a sink's fixed cost per batch (files, fsyncs, a Delta commit), little
enough to keep two batches in memory."""
DEFAULT_BATCH_DOCUMENT_BYTES: Final = 64 * 1024 * 1024
"""Document text a batch collects before it ends, whatever its row count (bounded memory)."""
DEFAULT_BATCH_PAGES: Final = 512
"""Pages a batch spans at most, empty ones included: bounds what a crash makes the next
run fetch again, and how long a stretch of empty pages goes without a checkpoint."""


@dataclass(frozen=True, slots=True)
class SourceIdentity:
    """Which deployment a checkpoint belongs to. Never holds the deploy key."""

    deployment_url: str

    @classmethod
    def from_url(cls, url: str) -> SourceIdentity:
        """Normalise a deployment URL (no trailing slash) so comparisons are stable."""
        return cls(url.rstrip("/"))


@dataclass(frozen=True, slots=True)
class InitialSnapshot:
    """The snapshot walk at ``snapshot`` is incomplete; resume after ``cursor``."""

    snapshot: SnapshotTs
    cursor: SnapshotCursor | None


@dataclass(frozen=True, slots=True)
class DeltaTail:
    """The snapshot is complete; read document_deltas after ``cursor``."""

    cursor: DeltaCursor


@dataclass(frozen=True, slots=True)
class DataSync:
    """The source is followed with Data Sync; the next page starts at ``cursor``."""

    cursor: DataSyncCursor | None
    """``None`` before the first page of a new sync (a cold start)."""
    status: SyncStatus
    """The status of the last page: ``snapshotting`` until the first walk is complete."""
    snapshot_ts: int | None
    """What the landed data is consistent at (``None`` while snapshotting)."""
    sync_id: str | None = None
    """The server's name for this sync (for ``list_active_syncs`` and support)."""


Position = InitialSnapshot | DeltaTail | DataSync


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """Where a batch of consecutive pages ends: with the page that brings it to ``rows``
    change events, ``document_bytes`` of document text or ``pages`` pages, whichever comes
    first (or earlier, at the end of a walk or with a page that exhausts the log)."""

    rows: int = DEFAULT_BATCH_ROWS
    document_bytes: int = DEFAULT_BATCH_DOCUMENT_BYTES
    pages: int = DEFAULT_BATCH_PAGES

    def __post_init__(self) -> None:
        if min(self.rows, self.document_bytes, self.pages) < 1:
            raise ValueError(f"batch limits must be positive, got {self}")


ONE_PAGE_BATCHES: Final = BatchLimits(rows=1, document_bytes=1, pages=1)
"""Every page its own batch: how checkpoint version 1 batches were cut."""


@dataclass(frozen=True, slots=True)
class PendingDelta:
    """A delta batch that may be partly written: replay it truncated to ``end_cursor``."""

    batch_seq: int
    end_cursor: DeltaCursor


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Everything needed to resume a source after any crash."""

    source: SourceIdentity
    position: Position
    batch_seq: int
    """How many batches are durable; the next batch gets ``batch_seq + 1``."""
    schema_fingerprints: Mapping[str, str] = field(default_factory=dict)
    """``TableKey.qualified`` → ``sha256:<hex>`` of that table's json_schemas entry."""
    tables_seen: frozenset[str] = frozenset()
    """``TableKey.qualified`` of every table that has delivered at least one event."""
    snapshot_started_at: int | None = None
    """Timestamp of the snapshot walk this history started from (changes on --resnapshot)."""
    pending: PendingDelta | None = None
    """Set between the save before an exhausting delta batch is written and the save after."""
    batch_limits: BatchLimits = BatchLimits()
    """How the batch after this checkpoint is cut. It may be durable already (written, then
    a crash before the save), so its replay must be cut the same way, whatever limits the
    next run is given; those apply from the batch after it on."""
    selection_fingerprint: str | None = None
    """``sha256:<hex>`` of the selection the landed data was extracted with (``None``:
    recorded before this field existed). A run with another selection is not silently
    mixed in."""

    @property
    def phase(self) -> str:
        """``snapshot``, ``delta`` or ``data-sync``, for status displays."""
        match self.position:
            case InitialSnapshot():
                return "snapshot"
            case DeltaTail():
                return "delta"
            case DataSync():
                return "data-sync"
            case _:
                assert_never(self.position)

    @property
    def api(self) -> Literal["streaming-export", "data-sync"]:
        """Which Convex API this checkpoint follows the source with."""
        return "data-sync" if isinstance(self.position, DataSync) else "streaming-export"

    @property
    def consistent_as_of(self) -> int | None:
        """The Convex timestamp the landed data is exactly the source's state at, if any.

        Only true in the delta phase: a half-walked snapshot was never a state of the source.
        """
        match self.position:
            case InitialSnapshot():
                return None
            case DeltaTail(cursor=cursor):
                return int(cursor)
            case DataSync(status=status, snapshot_ts=snapshot_ts):
                return None if status == "snapshotting" else snapshot_ts
            case _:
                assert_never(self.position)


# --- pure transitions -------------------------------------------------------------------


def begin_snapshot(
    previous: Checkpoint | None,
    *,
    source: SourceIdentity,
    snapshot: int,
    batch_limits: BatchLimits = BatchLimits(),
) -> Checkpoint:
    """Pin a new snapshot walk at ``snapshot`` before its first batch is written.

    Saving this makes every later page of the walk reproducible (``list_snapshot`` with a
    pinned ``snapshot`` and ``cursor`` always answers the same page), so a crash between a
    sink write and the checkpoint save replays exactly the same batch. ``batch_seq`` keeps
    counting across re-snapshots so batch numbers never repeat. The walk's first batch is
    cut with ``batch_limits``.
    """
    return Checkpoint(
        source=source,
        position=InitialSnapshot(SnapshotTs(snapshot), None),
        batch_seq=_restart_batch_seq(previous),
        schema_fingerprints=dict(previous.schema_fingerprints) if previous is not None else {},
        tables_seen=previous.tables_seen if previous is not None else frozenset(),
        snapshot_started_at=snapshot,
        batch_limits=batch_limits,
    )


def after_snapshot_page(
    previous: Checkpoint,
    *,
    cursor: str | None,
    has_more: bool,
    tables: Iterable[TableKey] = (),
    batch_limits: BatchLimits | None = None,
) -> Checkpoint:
    """The checkpoint that is true once a batch of list_snapshot pages is durable.

    ``previous`` is the checkpoint the batch started from; ``cursor`` and ``has_more``
    are those of its last page, ``tables`` those of all its pages. More pages →
    ``InitialSnapshot(snapshot, cursor)``; the last page hands off to
    ``DeltaTail(snapshot)``: deltas are exclusive of the cursor and the snapshot holds
    everything up to and including it, so there is neither gap nor overlap. ``batch_seq``
    advances only when the batch carried events (``tables`` non-empty). ``batch_limits``
    (default: unchanged) is how the next batch will be cut.
    """
    if not isinstance(previous.position, InitialSnapshot):
        raise ValueError("list_snapshot pages only follow a pinned snapshot walk")
    if has_more and cursor is None:
        raise ValueError("a list_snapshot page with hasMore must carry a cursor")
    snapshot = previous.position.snapshot
    position: Position = (
        InitialSnapshot(snapshot, SnapshotCursor(cursor) if cursor is not None else None)
        if has_more
        else DeltaTail(DeltaCursor(snapshot))
    )
    return _advance(previous, position, tables, batch_limits)


def with_pending_delta(previous: Checkpoint, *, batch_seq: int, end_cursor: int) -> Checkpoint:
    """Record, before writing it, a delta batch whose replay could otherwise differ.

    A ``document_deltas`` page that exhausted the log ends at the server's current
    timestamp; asked again later, the server may return more rows. Saving the end cursor
    first lets a replay after a crash drop everything past it and so deliver exactly the
    batch the sink may already hold. The position itself does not move.
    """
    if not isinstance(previous.position, DeltaTail):
        raise ValueError("only delta pages can be pending")
    return replace(previous, pending=PendingDelta(batch_seq, DeltaCursor(end_cursor)))


def after_delta_page(
    previous: Checkpoint,
    *,
    cursor: int,
    tables: Iterable[TableKey] = (),
    batch_limits: BatchLimits | None = None,
) -> Checkpoint:
    """The checkpoint that is true once a batch of document_deltas pages is durable.

    ``previous`` is the checkpoint the batch started from, ``cursor`` where its last page
    ended, ``tables`` those of all its pages. The server's cursor is stored as returned,
    even when it moves backwards (a cursor from the future is answered with the server's
    current timestamp). ``batch_seq`` advances only when the batch carried events. Any
    pending marker is cleared. ``batch_limits`` (default: unchanged) is how the next batch
    will be cut.
    """
    if not isinstance(previous.position, DeltaTail):
        raise ValueError("document_deltas pages only follow a completed snapshot")
    return _advance(previous, DeltaTail(DeltaCursor(cursor)), tables, batch_limits)


def begin_data_sync(
    previous: Checkpoint | None,
    *,
    source: SourceIdentity,
    batch_limits: BatchLimits = BatchLimits(),
) -> Checkpoint:
    """Start a new data sync from scratch (a cold start: every table is walked again).

    The server sends a truncate for each table on the page where its walk begins, so the
    targets replace what they hold table by table; nothing is dropped up front. Batch
    numbers keep counting, skipping a number a crash may have left written (as
    :func:`begin_snapshot` does).
    """
    return Checkpoint(
        source=source,
        position=DataSync(cursor=None, status="snapshotting", snapshot_ts=None),
        batch_seq=_restart_batch_seq(previous),
        schema_fingerprints=dict(previous.schema_fingerprints) if previous is not None else {},
        tables_seen=previous.tables_seen if previous is not None else frozenset(),
        snapshot_started_at=None,
        batch_limits=batch_limits,
        selection_fingerprint=previous.selection_fingerprint if previous is not None else None,
    )


def data_sync_from_delta_tail(previous: Checkpoint, *, cursor: str) -> Checkpoint:
    """Switch a completed legacy destination to Data Sync without reading anything again.

    ``cursor`` is what the server's cursor conversion returned for the ``DeltaTail``
    cursor: every selected table counts as synced up to it, so the first page streams only
    later changes. Until then the data stays consistent at the legacy cursor.

    A pending legacy batch that did not land whole (one that did is adopted first) may be
    half-written: its changes come again through the data sync, after the cursor, under
    numbers past it, so its number is never reused for other events.
    """
    position = previous.position
    if not isinstance(position, DeltaTail):
        raise ValueError("only a delta tail converts to a data sync")
    pending = previous.pending.batch_seq if previous.pending is not None else 0
    return replace(
        previous,
        position=DataSync(
            cursor=DataSyncCursor(cursor), status="stale", snapshot_ts=int(position.cursor)
        ),
        batch_seq=max(previous.batch_seq, pending),
        pending=None,
    )


def after_data_sync_page(
    previous: Checkpoint,
    *,
    cursor: str,
    status: SyncStatus,
    snapshot_ts: int | None,
    sync_id: str,
    tables: Iterable[TableKey] = (),
    batch_limits: BatchLimits | None = None,
) -> Checkpoint:
    """The checkpoint that is true once a batch of Data Sync pages is durable.

    ``cursor``, ``status``, ``snapshot_ts`` and ``sync_id`` are those of the batch's last
    page; the cursor is stored even when the batch was empty, so a quiet deployment never
    strands its cursor outside the server's retention. ``tables`` are the tables with
    events (truncates included) in the batch.
    """
    if not isinstance(previous.position, DataSync):
        raise ValueError("data sync pages only follow a data sync position")
    if (status == "snapshotting") != (snapshot_ts is None):
        raise ValueError("a snapshotTs comes exactly with the stale and upToDate statuses")
    position = DataSync(DataSyncCursor(cursor), status, snapshot_ts, sync_id)
    return _advance(previous, position, tables, batch_limits)


def after_drop_batch(previous: Checkpoint, *, tables: Iterable[TableKey]) -> Checkpoint:
    """The checkpoint that is true once a batch of drop events for ``tables`` is durable.

    The position does not move (a drop batch reads nothing from the source); the batch
    counts, and the dropped tables leave ``tables_seen``, so a table of that name that
    appears later is a new table.
    """
    dropped = {t.qualified for t in tables}
    if not dropped:
        raise ValueError("a drop batch drops at least one table")
    if previous.pending is not None:
        raise ValueError("a pending delta batch is replayed before anything else is written")
    return replace(
        previous,
        batch_seq=previous.batch_seq + 1,
        tables_seen=previous.tables_seen - dropped,
    )


def with_selection_fingerprint(checkpoint: Checkpoint, fingerprint: str) -> Checkpoint:
    """Record the selection the landed data is extracted with."""
    return replace(checkpoint, selection_fingerprint=fingerprint)


def with_schema_fingerprints(checkpoint: Checkpoint, fingerprints: Mapping[str, str]) -> Checkpoint:
    """Record a fresh schema fetch without moving the position."""
    return replace(checkpoint, schema_fingerprints=dict(fingerprints))


def _restart_batch_seq(previous: Checkpoint | None) -> int:
    """``batch_seq`` of a new walk or sync: its first batch skips the number after
    ``previous``. A batch number always names one content, and the batch after the last
    saved one may be (half-)written already: a crash between a sink write and its
    checkpoint save leaves it durable, pending or not."""
    if previous is None:
        return 0
    pending = previous.pending.batch_seq if previous.pending is not None else 0
    return max(previous.batch_seq + 1, pending)


def _advance(
    previous: Checkpoint,
    position: Position,
    tables: Iterable[TableKey],
    batch_limits: BatchLimits | None,
) -> Checkpoint:
    delivered = {t.qualified for t in tables}
    return replace(
        previous,
        position=position,
        batch_seq=previous.batch_seq + (1 if delivered else 0),
        tables_seen=previous.tables_seen | delivered,
        pending=None,
        batch_limits=previous.batch_limits if batch_limits is None else batch_limits,
    )


def ensure_same_source(checkpoint: Checkpoint, source: SourceIdentity, *, where: str) -> None:
    """Refuse to resume a checkpoint that belongs to another deployment."""
    if checkpoint.source != source:
        raise StateError(
            f"{where} belongs to {checkpoint.source.deployment_url}, not {source.deployment_url}",
            hint="use a separate --dest per deployment",
        )
