"""The checkpoint's JSON form: versioned, canonical, and decoded strictly.

A checkpoint file (or control-table row) that is corrupt, foreign or from a newer version
is refused with :class:`~convex_cdc.core.errors.StateError`, never silently reset.
"""

from __future__ import annotations

import json
from typing import Any, Final, assert_never

from convex_cdc.core.checkpoint import (
    ONE_PAGE_BATCHES,
    BatchLimits,
    Checkpoint,
    DataSync,
    DataSyncCursor,
    DeltaCursor,
    DeltaTail,
    InitialSnapshot,
    PendingDelta,
    Position,
    SnapshotCursor,
    SnapshotTs,
    SourceIdentity,
)
from convex_cdc.core.errors import StateError

CHECKPOINT_FORMAT: Final = "convex-cdc.checkpoint"
CHECKPOINT_VERSION: Final = 3
"""Version 2 added ``batch_limits``; version 1 checkpoints load with :data:`ONE_PAGE_BATCHES`
(the batches that version wrote). Version 3 added the ``DataSync`` position and
``selection_fingerprint``."""
_STATUSES: Final = frozenset({"snapshotting", "stale", "upToDate"})

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
        "selection_fingerprint",
    }
)
_ADDED_IN: Final = {"batch_limits": 2, "selection_fingerprint": 3}


def checkpoint_to_json(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint as a JSON-ready dict.

    ``format`` and ``version``; ``source`` (the deployment URL, never the key);
    ``position``, ``{"InitialSnapshot": {"snapshot", "cursor"}}`` while the walk runs or
    ``{"DeltaTail": {"cursor"}}`` after it, or ``{"DataSync": {"cursor", "status",
    "snapshot_ts", "sync_id"}}`` for a source followed with Data Sync; ``batch_seq``, the
    number of durable batches; and what the next run needs to resume exactly (schema
    fingerprints, tables seen, the walk's start, a pending delta batch, the batch limits,
    the selection).
    """
    position: dict[str, Any]
    match checkpoint.position:
        case InitialSnapshot(snapshot=snapshot, cursor=cursor):
            position = {"InitialSnapshot": {"snapshot": int(snapshot), "cursor": cursor}}
        case DeltaTail(cursor=delta_cursor):
            position = {"DeltaTail": {"cursor": int(delta_cursor)}}
        case DataSync(cursor=sync_cursor, status=status, snapshot_ts=ts, sync_id=sync_id):
            position = {
                "DataSync": {
                    "cursor": sync_cursor,
                    "status": status,
                    "snapshot_ts": ts,
                    "sync_id": sync_id,
                }
            }
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
        "selection_fingerprint": checkpoint.selection_fingerprint,
    }


def dumps_checkpoint(checkpoint: Checkpoint) -> bytes:
    """Canonical JSON bytes of a checkpoint (sorted, stable across runs)."""
    return (json.dumps(checkpoint_to_json(checkpoint), indent=2, sort_keys=True) + "\n").encode()


def checkpoint_from_json(data: object, *, where: str = "checkpoint") -> Checkpoint:
    """Decode a checkpoint strictly: unknown fields, types or versions are refused."""

    def fail(why: str) -> StateError:
        return StateError(
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
        raise StateError(
            f"{where} was written by a newer convex-cdc (checkpoint version {version}, "
            f"this one understands {CHECKPOINT_VERSION})",
            hint="upgrade convex-cdc",
        )
    if version < 1:
        raise fail(f"unknown version {version}")
    unknown = set(data) - {key for key in _TOP_LEVEL_KEYS if _ADDED_IN.get(key, 1) <= version}
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
        selection = data.get("selection_fingerprint")
        if selection is not None and not isinstance(selection, str):
            raise fail("selection_fingerprint must be a string or null")
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
        selection_fingerprint=selection,
    )


def loads_checkpoint(raw: bytes, *, where: str = "checkpoint") -> Checkpoint:
    """Parse checkpoint bytes; corrupt JSON is a :class:`StateError`, never a reset."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise StateError(
            f"{where} is corrupt (not JSON: {exc.__class__.__name__})",
            hint="restore it from a backup, or move it aside and run `sync --resnapshot`",
        ) from None
    return checkpoint_from_json(data, where=where)


def _position_from_json(value: object, fail: Any) -> Position:
    if not isinstance(value, dict) or len(value) != 1:
        raise fail("position must be {InitialSnapshot: ...}, {DeltaTail: ...} or {DataSync: ...}")
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
    if kind == "DataSync":
        return _data_sync_from_json(body, fail)
    raise fail(f"unknown position {kind!r}")


def _data_sync_from_json(body: object, fail: Any) -> DataSync:
    if not isinstance(body, dict) or set(body) != {"cursor", "status", "snapshot_ts", "sync_id"}:
        raise fail("DataSync must be {cursor, status, snapshot_ts, sync_id}")
    cursor, status, ts, sync_id = (body[k] for k in ("cursor", "status", "snapshot_ts", "sync_id"))
    if cursor is not None and not isinstance(cursor, str):
        raise fail("DataSync.cursor must be a string or null")
    if status not in _STATUSES:
        raise fail("DataSync.status must be snapshotting, stale or upToDate")
    if (status == "snapshotting") != (ts is None) or (ts is not None and not _is_int(ts)):
        raise fail(
            "DataSync.snapshot_ts must be an integer exactly when the status is not snapshotting"
        )
    if sync_id is not None and not isinstance(sync_id, str):
        raise fail("DataSync.sync_id must be a string or null")
    return DataSync(DataSyncCursor(cursor) if cursor is not None else None, status, ts, sync_id)


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
