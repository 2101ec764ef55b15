"""Strict checks of Convex Data Sync answers (``POST /api/v1/data/sync``).

A Data Sync page is one object::

    {"status": {"type": "snapshotting"} | {"type": "stale"|"upToDate", "snapshotTs": N},
     "truncates": [{"component": "", "table": "messages"}],
     "values": [{"component": "", "table": "messages", "ts": N, "deleted": false,
                 "value": {"_id": "…", "_creationTime": 1.5, …}}],
     "syncId": "…",
     "pagination": {"hasMore": true, "nextCursor": "<lowercase hex>"}}

Truncates apply before the values of the same page. Values come flattened into the shape
``document_deltas`` values have (``_component``, ``_table``, ``_ts``, ``_deleted`` beside
the document's own fields), so one event builder serves both APIs. A violation is a
:class:`MalformedResponse` naming the problem, never quoting the offending value.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, cast, get_args

from convex_cdc.core.errors import MalformedResponse
from convex_cdc.core.names import TableKey
from convex_cdc.core.source import ConvexValue, DataSyncPage

ENDPOINT: Final = "v1/data/sync"
CONVERSION_ENDPOINT: Final = "data_sync_cursor_from_deltas"

SyncStatus = Literal["snapshotting", "stale", "upToDate"]
"""Where a data sync stands: mid-walk (not a consistent state), consistent but behind, or
consistent and caught up."""

_STATUSES: Final = frozenset(get_args(SyncStatus))
_HEX_CURSOR: Final = re.compile(r"[0-9a-f]+")
_INT64_MAX: Final = 2**63 - 1
_VALUE_KEYS: Final = frozenset({"component", "table", "ts", "deleted", "value"})


def parse_data_sync_page(data: Any, size: int) -> DataSyncPage:
    """Check a parsed Data Sync body and wrap it, values flattened.

    Raises:
        MalformedResponse: naming what is wrong.
    """
    obj = _object(data, "the body")
    status, snapshot_ts = _status(obj.get("status"))
    pagination = _object(obj.get("pagination"), "pagination")
    if pagination.get("hasMore") is not True:
        # The stream never ends; a false here is not an API this client knows.
        raise _malformed("pagination.hasMore must be true (a data sync never ends)")
    sync_id = obj.get("syncId")
    if not isinstance(sync_id, str) or not sync_id:
        raise _malformed("syncId must be a non-empty string")
    return DataSyncPage(
        status=status,
        snapshot_ts=snapshot_ts,
        truncates=_truncates(obj.get("truncates")),
        values=_values(obj.get("values")),
        sync_id=sync_id,
        cursor=parse_cursor(pagination.get("nextCursor"), "pagination.nextCursor"),
        response_bytes=size,
    )


def parse_converted_cursor(data: Any) -> str:
    """The Data Sync cursor in a ``data_sync_cursor_from_deltas`` answer.

    Raises:
        MalformedResponse: the answer is not ``{"cursor": "<hex>"}``.
    """
    cursor = data.get("cursor") if isinstance(data, dict) else None
    if not isinstance(cursor, str) or not _HEX_CURSOR.fullmatch(cursor):
        raise MalformedResponse(
            "expected {cursor: <lowercase hex string>}", endpoint=CONVERSION_ENDPOINT
        )
    return cursor


def parse_cursor(value: Any, name: str) -> str:
    """A Data Sync cursor: opaque, but always non-empty lowercase hex.

    Raises:
        MalformedResponse: ``value`` is anything else.
    """
    if not isinstance(value, str) or not _HEX_CURSOR.fullmatch(value):
        raise _malformed(f"{name} must be a lowercase hex string")
    return value


def _status(value: Any) -> tuple[SyncStatus, int | None]:
    status = _object(value, "status")
    kind = status.get("type")
    if kind not in _STATUSES:
        raise _malformed("status.type must be snapshotting, stale or upToDate")
    if kind == "snapshotting":
        return "snapshotting", None
    snapshot_ts: Any = status.get("snapshotTs")
    if not _is_int64(snapshot_ts):
        raise _malformed(f"status {kind} must carry snapshotTs, a JSON integer timestamp")
    return cast(SyncStatus, kind), int(snapshot_ts)


def _truncates(value: Any) -> tuple[TableKey, ...]:
    if not isinstance(value, list):
        raise _malformed("truncates must be a list")
    keys = []
    for position, entry in enumerate(value):
        if (
            not isinstance(entry, dict)
            or set(entry) != {"component", "table"}
            or not isinstance(entry["component"], str)
            or not isinstance(entry["table"], str)
        ):
            raise _malformed(f"truncate #{position} must be {{component, table}} strings")
        keys.append(TableKey(entry["component"], entry["table"]))
    return tuple(keys)


def _values(value: Any) -> list[ConvexValue]:
    if not isinstance(value, list):
        raise _malformed("values must be a list")
    flat: list[ConvexValue] = []
    for position, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) != _VALUE_KEYS:
            raise _malformed(f"value #{position} must be {{component, table, ts, deleted, value}}")
        component, table, ts = entry["component"], entry["table"], entry["ts"]
        deleted, document = entry["deleted"], entry["value"]
        if not isinstance(component, str) or not isinstance(table, str):
            raise _malformed(f"value #{position} has a component or table that is not a string")
        if not _is_int64(ts):
            raise _malformed(f"value #{position} has ts that is not a JSON integer timestamp")
        if not isinstance(deleted, bool) or not isinstance(document, dict):
            raise _malformed(f"value #{position} needs a boolean deleted and an object value")
        if "_component" in document or "_table" in document or "_ts" in document:
            # These are the flattened metadata keys: a document carrying them would be
            # silently overwritten.
            raise _malformed(f"value #{position} has a document with export metadata keys")
        row = dict(document)
        row["_component"] = component
        row["_table"] = table
        row["_ts"] = ts
        row["_deleted"] = deleted
        flat.append(row)
    return flat


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{name} must be a JSON object")
    return value


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT64_MAX


def _malformed(problem: str) -> MalformedResponse:
    return MalformedResponse(problem, endpoint=ENDPOINT)
