"""The per-source checkpoint: a closed sum type, pure transitions, strict JSON.

A source is in one of two positions:

* ``InitialSnapshot(snapshot, cursor)`` while the consistent ``list_snapshot`` walk at
  timestamp ``snapshot`` is incomplete; ``cursor`` is the opaque list_snapshot cursor to
  resume from.
* ``DeltaTail(cursor)`` afterwards; ``cursor`` is the exclusive ``document_deltas``
  cursor. The first one is the final snapshot timestamp, which makes the hand-off exact.

No checkpoint at all means "start a new snapshot". Transitions here do no I/O; the
orchestrator applies them and saves the result only after the sink made the batch durable.

Replays are exact. A walk is pinned (``begin_snapshot``) before its first page is written,
so every snapshot page can be fetched again identically; a delta page that exhausted the
log is recorded as ``pending`` before it is written, so its replay can be cut to the same
end. A sink that sees batch ``n`` twice therefore sees the same events twice.
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
CHECKPOINT_VERSION: Final = 1


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
    previous: Checkpoint | None, *, source: SourceIdentity, snapshot: int
) -> Checkpoint:
    """Pin a new snapshot walk at ``snapshot`` before its first page is written.

    Saving this makes every later page of the walk reproducible (``list_snapshot`` with a
    pinned ``snapshot`` and ``cursor`` always answers the same page), so a crash between a
    sink write and the checkpoint save replays exactly the same batch. ``batch_seq`` keeps
    counting across re-snapshots so batch numbers never repeat.
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
    )


def after_snapshot_page(
    previous: Checkpoint,
    *,
    cursor: str | None,
    has_more: bool,
    tables: Iterable[TableKey] = (),
) -> Checkpoint:
    """The checkpoint that is true once a list_snapshot page of the pinned walk is durable.

    More pages → ``InitialSnapshot(snapshot, cursor)``; the last page hands off to
    ``DeltaTail(snapshot)``: deltas are exclusive of the cursor and the snapshot holds
    everything up to and including it, so there is neither gap nor overlap. ``batch_seq``
    advances only when the page carried events (``tables`` non-empty).
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
    return _advance(previous, position, tables)


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
) -> Checkpoint:
    """The checkpoint that is true once a document_deltas page is durable.

    The server's cursor is stored as returned, even when it moves backwards (a cursor
    from the future is answered with the server's current timestamp). ``batch_seq``
    advances only when the page carried events. Any pending marker is cleared.
    """
    if not isinstance(previous.position, DeltaTail):
        raise ValueError("document_deltas pages only follow a completed snapshot")
    return _advance(previous, DeltaTail(DeltaCursor(cursor)), tables)


def with_schema_fingerprints(checkpoint: Checkpoint, fingerprints: Mapping[str, str]) -> Checkpoint:
    """Record a fresh schema fetch without moving the position."""
    return replace(checkpoint, schema_fingerprints=dict(fingerprints))


def _advance(previous: Checkpoint, position: Position, tables: Iterable[TableKey]) -> Checkpoint:
    delivered = {t.qualified for t in tables}
    return replace(
        previous,
        position=position,
        batch_seq=previous.batch_seq + (1 if delivered else 0),
        tables_seen=previous.tables_seen | delivered,
        pending=None,
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
    unknown = set(data) - _TOP_LEVEL_KEYS
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
