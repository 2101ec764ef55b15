"""The per-source checkpoint: a closed sum type and its pure transitions.

A source is in one of two positions:

* ``InitialSnapshot(snapshot, cursor)`` while the consistent ``list_snapshot`` walk at
  timestamp ``snapshot`` is incomplete; ``cursor`` is the opaque list_snapshot cursor to
  resume from.
* ``DeltaTail(cursor)`` afterwards; ``cursor`` is the exclusive ``document_deltas``
  cursor. The first one is the final snapshot timestamp, which makes the hand-off exact.

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

The JSON form (strict, versioned) lives in :mod:`convex_cdc.core.checkpoint_json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, NewType, assert_never

from convex_cdc.core.errors import StateError
from convex_cdc.core.names import TableKey

SnapshotTs = NewType("SnapshotTs", int)
"""A list_snapshot timestamp (ns)."""
SnapshotCursor = NewType("SnapshotCursor", str)
"""The opaque list_snapshot cursor, stored exactly as received."""
DeltaCursor = NewType("DeltaCursor", int)
"""The exclusive document_deltas cursor (ns)."""

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


Position = InitialSnapshot | DeltaTail


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

    @property
    def phase(self) -> str:
        """``snapshot`` or ``delta``, for status displays."""
        match self.position:
            case InitialSnapshot():
                return "snapshot"
            case DeltaTail():
                return "delta"
            case _:
                assert_never(self.position)

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
    batch_seq = 0
    if previous is not None:
        # A batch number always names one content. The batch after the last saved one may
        # be (half-)written already: a crash between a sink write and its checkpoint save
        # leaves it durable, pending or not. The new walk skips its number.
        pending = previous.pending.batch_seq if previous.pending is not None else 0
        batch_seq = max(previous.batch_seq + 1, pending)
    return Checkpoint(
        source=source,
        position=InitialSnapshot(SnapshotTs(snapshot), None),
        batch_seq=batch_seq,
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


def with_schema_fingerprints(checkpoint: Checkpoint, fingerprints: Mapping[str, str]) -> Checkpoint:
    """Record a fresh schema fetch without moving the position."""
    return replace(checkpoint, schema_fingerprints=dict(fingerprints))


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
