"""The per-source checkpoint: a closed sum type, pure transitions, strict JSON.

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
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, NewType, assert_never

from convex_cdc.core.errors import CheckpointError

SnapshotTs = NewType("SnapshotTs", int)
"""A list_snapshot timestamp (ns)."""
SnapshotCursor = NewType("SnapshotCursor", str)
"""The opaque list_snapshot cursor, stored exactly as received."""
DeltaCursor = NewType("DeltaCursor", int)
"""The exclusive document_deltas cursor (ns)."""

CHECKPOINT_FORMAT: Final = "convex-cdc.checkpoint"
CHECKPOINT_VERSION: Final = 2
"""Version 2 added ``batch_limits``; version 1 checkpoints load with :data:`ONE_PAGE_BATCHES`
(the batches that version wrote)."""

DEFAULT_BATCH_ROWS: Final = 16_384
"""Change events a batch collects before it ends (16 full snapshot pages, 128 delta pages):
enough to spread a sink's fixed cost per batch (files, fsyncs, a Delta commit), little
enough to keep two batches in memory."""
DEFAULT_BATCH_DOCUMENT_BYTES: Final = 64 * 1024 * 1024
"""Document text a batch collects before it ends, whatever its row count (bounded memory)."""
DEFAULT_BATCH_PAGES: Final = 512
"""Pages a batch spans at most, empty ones included: bounds what a crash makes the next
run fetch again, and how long a stretch of empty pages goes without a checkpoint."""


@dataclass(frozen=True, slots=True, order=True)
class TableKey:
    """A Convex table: table names are unique only within a component."""

    component: str
    table: str

    @property
    def qualified(self) -> str:
        """``table`` for the root component, ``component/table`` otherwise."""
        return f"{self.component}/{self.table}" if self.component else self.table

    @classmethod
    def parse(cls, qualified: str) -> TableKey:
        """Inverse of :attr:`qualified` (table names never contain ``/``)."""
        component, _, table = qualified.rpartition("/")
        return cls(component, table)

    def __str__(self) -> str:
        return self.qualified


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


# --- serialisation ----------------------------------------------------------------------

_TOP_LEVEL_KEYS: Final = frozenset(
    {
        "format",
        "version",
        "source",
        "position",
        "batch_seq",
        "schema_fingerprints",
        "tables_seen",
        "snapshot_started_at",
        "pending",
        "batch_limits",
    }
)


def checkpoint_to_json(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint as a JSON-ready dict (see design.md section 2)."""
    position: dict[str, Any]
    match checkpoint.position:
        case InitialSnapshot(snapshot=snapshot, cursor=cursor):
            position = {"InitialSnapshot": {"snapshot": int(snapshot), "cursor": cursor}}
        case DeltaTail(cursor=delta_cursor):
            position = {"DeltaTail": {"cursor": int(delta_cursor)}}
        case _:
            assert_never(checkpoint.position)
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "source": {"deployment_url": checkpoint.source.deployment_url},
        "position": position,
        "batch_seq": checkpoint.batch_seq,
        "schema_fingerprints": dict(sorted(checkpoint.schema_fingerprints.items())),
        "tables_seen": sorted(checkpoint.tables_seen),
        "snapshot_started_at": checkpoint.snapshot_started_at,
        "pending": (
            {
                "batch_seq": checkpoint.pending.batch_seq,
                "end_cursor": int(checkpoint.pending.end_cursor),
            }
            if checkpoint.pending is not None
            else None
        ),
        "batch_limits": {
            "rows": checkpoint.batch_limits.rows,
            "document_bytes": checkpoint.batch_limits.document_bytes,
            "pages": checkpoint.batch_limits.pages,
        },
    }


def dumps_checkpoint(checkpoint: Checkpoint) -> bytes:
    """Canonical JSON bytes of a checkpoint (sorted, stable across runs)."""
    return (json.dumps(checkpoint_to_json(checkpoint), indent=2, sort_keys=True) + "\n").encode()


def checkpoint_from_json(data: object, *, where: str = "checkpoint") -> Checkpoint:
    """Decode a checkpoint strictly: unknown fields, types or versions are refused."""

    def fail(why: str) -> CheckpointError:
        return CheckpointError(
            f"{where} is not a usable convex-cdc checkpoint: {why}",
            hint="restore it from a backup, or move it aside and run `sync --resnapshot` "
            "to start a new snapshot (nothing already landed is lost)",
        )

    if not isinstance(data, dict):
        raise fail("expected a JSON object")
    if data.get("format") != CHECKPOINT_FORMAT:
        raise fail(f"format is {data.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise fail("missing integer version")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{where} was written by a newer convex-cdc (checkpoint version {version}, "
            f"this one understands {CHECKPOINT_VERSION})",
            hint="upgrade convex-cdc",
        )
    if version < 1:
        raise fail(f"unknown version {version}")
    unknown = set(data) - (_TOP_LEVEL_KEYS if version >= 2 else _TOP_LEVEL_KEYS - {"batch_limits"})
    if unknown:
        raise fail(f"unknown fields {sorted(unknown)}")
    try:
        source = data["source"]
        if not isinstance(source, dict) or set(source) != {"deployment_url"}:
            raise fail("source must be {deployment_url}")
        url = source["deployment_url"]
        if not isinstance(url, str) or not url:
            raise fail("source.deployment_url must be a non-empty string")
        position = _position_from_json(data["position"], fail)
        batch_seq = data["batch_seq"]
        if not _is_int(batch_seq) or batch_seq < 0:
            raise fail("batch_seq must be a non-negative integer")
        fingerprints = data.get("schema_fingerprints", {})
        if not isinstance(fingerprints, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in fingerprints.items()
        ):
            raise fail("schema_fingerprints must map table names to strings")
        seen = data.get("tables_seen", [])
        if not isinstance(seen, list) or not all(isinstance(t, str) for t in seen):
            raise fail("tables_seen must be a list of table names")
        started = data.get("snapshot_started_at")
        if started is not None and not _is_int(started):
            raise fail("snapshot_started_at must be an integer or null")
        pending = _pending_from_json(data.get("pending"), fail)
        limits = (
            _batch_limits_from_json(data["batch_limits"], fail)
            if version >= 2
            else ONE_PAGE_BATCHES
        )
    except KeyError as missing:
        raise fail(f"missing field {missing}") from None
    return Checkpoint(
        source=SourceIdentity(url),
        position=position,
        batch_seq=batch_seq,
        schema_fingerprints=dict(fingerprints),
        tables_seen=frozenset(seen),
        snapshot_started_at=started,
        pending=pending,
        batch_limits=limits,
    )


def loads_checkpoint(raw: bytes, *, where: str = "checkpoint") -> Checkpoint:
    """Parse checkpoint bytes; corrupt JSON is a :class:`CheckpointError`, never a reset."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"{where} is corrupt (not JSON: {exc.__class__.__name__})",
            hint="restore it from a backup, or move it aside and run `sync --resnapshot`",
        ) from None
    return checkpoint_from_json(data, where=where)


def ensure_same_source(checkpoint: Checkpoint, source: SourceIdentity, *, where: str) -> None:
    """Refuse to resume a checkpoint that belongs to another deployment."""
    if checkpoint.source != source:
        raise CheckpointError(
            f"{where} belongs to {checkpoint.source.deployment_url}, not {source.deployment_url}",
            hint="use a separate --dest per deployment",
        )


def _position_from_json(value: object, fail: Any) -> Position:
    if not isinstance(value, dict) or len(value) != 1:
        raise fail("position must be {InitialSnapshot: ...} or {DeltaTail: ...}")
    ((kind, body),) = value.items()
    if kind == "InitialSnapshot":
        if not isinstance(body, dict) or set(body) != {"snapshot", "cursor"}:
            raise fail("InitialSnapshot must be {snapshot, cursor}")
        snapshot, cursor = body["snapshot"], body["cursor"]
        if not _is_int(snapshot) or (cursor is not None and not isinstance(cursor, str)):
            raise fail("InitialSnapshot.snapshot must be an integer and cursor a string or null")
        return InitialSnapshot(
            SnapshotTs(snapshot), SnapshotCursor(cursor) if cursor is not None else None
        )
    if kind == "DeltaTail":
        if not isinstance(body, dict) or set(body) != {"cursor"} or not _is_int(body["cursor"]):
            raise fail("DeltaTail must be {cursor: integer}")
        return DeltaTail(DeltaCursor(body["cursor"]))
    raise fail(f"unknown position {kind!r}")


def _pending_from_json(value: object, fail: Any) -> PendingDelta | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"batch_seq", "end_cursor"}
        or not _is_int(value["batch_seq"])
        or not _is_int(value["end_cursor"])
    ):
        raise fail("pending must be null or {batch_seq, end_cursor}")
    return PendingDelta(value["batch_seq"], DeltaCursor(value["end_cursor"]))


def _batch_limits_from_json(value: object, fail: Any) -> BatchLimits:
    names = ("rows", "document_bytes", "pages")
    if (
        not isinstance(value, dict)
        or set(value) != set(names)
        or not all(_is_int(value[name]) and value[name] >= 1 for name in names)
    ):
        raise fail("batch_limits must be {rows, document_bytes, pages}, positive integers")
    return BatchLimits(value["rows"], value["document_bytes"], value["pages"])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
