"""Strict checks of streaming-export answers, before anything downstream sees them.

Convex's answers are checked against the API as docs/convex-export-api.md §7 to §9
describe it: the right JSON types at the top level, timestamps as JSON integers that fit
an int64 (``export_json`` never sends them as floats or strings), a list_snapshot cursor
exactly when ``hasMore``. A violation is a :class:`MalformedResponse` naming the endpoint
and the problem, and never quoting the offending value (it could be anything).

An answer is also checked against the request it answers, so a broken or hostile server
cannot send a walk in circles or backwards: a snapshot page must not repeat the cursor it
was asked for while ``hasMore`` and holds no value newer than its snapshot; a delta
page's cursor never moves back, moves forward whenever ``hasMore``, and every value's
``_ts`` lies after the requested cursor (it is exclusive) and at or before the returned
one.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any, Final, NamedTuple

from convex_cdc.core.errors import MalformedResponse
from convex_cdc.core.source import DeltaPage, SnapshotPage

_INT64_MAX: Final = 2**63 - 1


def parse_snapshot_page(
    data: Any,
    size: int,
    *,
    request_snapshot: int | None = None,
    request_cursor: str | None = None,
) -> SnapshotPage:
    """Check a parsed ``list_snapshot`` body, and that it answers the request, and wrap it.

    Args:
        data: the parsed body.
        size: its size in bytes.
        request_snapshot: the pinned snapshot sent (``None``: the walk's first page).
        request_cursor: the cursor sent.

    Raises:
        MalformedResponse: naming what is wrong.
    """
    endpoint = "list_snapshot"
    obj = _object(data, endpoint)
    values, ts_range = _values(obj, endpoint)
    has_more = _has_more(obj, endpoint)
    snapshot_ts = _timestamp(obj.get("snapshot"), "snapshot", endpoint)
    if request_snapshot is not None and snapshot_ts != request_snapshot:
        raise MalformedResponse(
            f"answered snapshot {snapshot_ts} for a walk pinned at {request_snapshot}",
            endpoint=endpoint,
        )
    if ts_range is not None and ts_range.newest > snapshot_ts:
        raise MalformedResponse(
            f"a value has _ts {ts_range.newest}, after the snapshot {snapshot_ts} it belongs to",
            endpoint=endpoint,
        )
    next_cursor = obj.get("cursor")
    if next_cursor is not None and not isinstance(next_cursor, str):
        raise MalformedResponse(
            f"cursor must be a string or null, got {_kind(next_cursor)}", endpoint=endpoint
        )
    if (next_cursor is not None) != has_more:
        raise MalformedResponse(
            f"cursor is {'null' if next_cursor is None else 'set'} but hasMore is "
            f"{str(has_more).lower()} (a cursor comes exactly with hasMore)",
            endpoint=endpoint,
        )
    if has_more and next_cursor == request_cursor:
        raise MalformedResponse(
            "returned the cursor it was asked for with hasMore true, so the walk would "
            "repeat this page forever",
            endpoint=endpoint,
        )
    return SnapshotPage(
        values=values,
        snapshot=snapshot_ts,
        cursor=next_cursor,
        has_more=has_more,
        response_bytes=size,
    )


def parse_delta_page(data: Any, size: int, *, request_cursor: int | None = None) -> DeltaPage:
    """Check a parsed ``document_deltas`` body, and that it answers the request, and wrap it.

    Args:
        data: the parsed body.
        size: its size in bytes.
        request_cursor: the cursor sent (exclusive); ``None`` skips the checks against it.

    Raises:
        MalformedResponse: naming what is wrong.
    """
    endpoint = "document_deltas"
    obj = _object(data, endpoint)
    values, ts_range = _values(obj, endpoint)
    cursor = _timestamp(obj.get("cursor"), "cursor", endpoint)
    has_more = _has_more(obj, endpoint)
    if request_cursor is not None:
        if cursor < request_cursor:
            raise MalformedResponse(
                f"the cursor went back from {request_cursor} to {cursor}",
                endpoint=endpoint,
                hint="nothing was written and the checkpoint did not move; if the deployment "
                "was restored from a backup, or an earlier answer carried a cursor ahead of "
                "its clock, start again with `convex-cdc sync --resnapshot`",
            )
        if has_more and cursor == request_cursor:
            raise MalformedResponse(
                f"returned the cursor it was asked for ({cursor}) with hasMore true, so "
                "polling would never move on",
                endpoint=endpoint,
            )
    if ts_range is not None:
        if request_cursor is not None and ts_range.oldest <= request_cursor:
            raise MalformedResponse(
                f"a value has _ts {ts_range.oldest}, not after the requested cursor "
                f"{request_cursor} (it is exclusive; an older version could bring back a "
                "deleted document)",
                endpoint=endpoint,
            )
        if ts_range.newest > cursor:
            raise MalformedResponse(
                f"a value has _ts {ts_range.newest}, after the page's own cursor {cursor}",
                endpoint=endpoint,
            )
    return DeltaPage(values=values, cursor=cursor, has_more=has_more, response_bytes=size)


def parse_json_schemas(data: Any) -> dict[str, dict[str, Any]]:
    """Check a ``byComponent=true`` json_schemas body: components → tables → schema objects.

    Raises:
        MalformedResponse: naming what is wrong.
    """
    endpoint = "json_schemas"
    obj = _object(data, endpoint)
    for component, tables in obj.items():
        if not isinstance(tables, dict):
            raise MalformedResponse(
                f"component {component!r} maps to {_kind(tables)}, not an object",
                endpoint=endpoint,
            )
        for table, schema in tables.items():
            if not isinstance(schema, dict):
                raise MalformedResponse(
                    f"table {table!r} of component {component!r} is {_kind(schema)}, "
                    "not a JSON schema object",
                    endpoint=endpoint,
                )
    return obj


def parse_table_column_names(data: Any) -> dict[str, dict[str, list[str]]]:
    """``{"byComponent": {path: [{name, columns}]}}`` → ``{path: {table: columns}}``.

    Raises:
        MalformedResponse: naming what is wrong.
    """
    endpoint = "get_table_column_names"
    by_component = data.get("byComponent") if isinstance(data, dict) else None
    if not isinstance(by_component, dict):
        raise MalformedResponse("expected an object with byComponent", endpoint=endpoint)
    result: dict[str, dict[str, list[str]]] = {}
    for component, tables in by_component.items():
        if not isinstance(tables, list):
            raise MalformedResponse(
                f"component {component!r} does not map to a list", endpoint=endpoint
            )
        columns_by_table: dict[str, list[str]] = {}
        for entry in tables:
            name = entry.get("name") if isinstance(entry, dict) else None
            columns = entry.get("columns") if isinstance(entry, dict) else None
            if (
                not isinstance(name, str)
                or not isinstance(columns, list)
                or not all(isinstance(c, str) for c in columns)
            ):
                raise MalformedResponse(
                    f"component {component!r} has an entry that is not "
                    "{name: str, columns: [str]}",
                    endpoint=endpoint,
                )
            columns_by_table[name] = columns
        result[component] = columns_by_table
    return result


def _object(data: Any, endpoint: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MalformedResponse(f"expected a JSON object, got {_kind(data)}", endpoint=endpoint)
    return data


class _TsRange(NamedTuple):
    oldest: int
    newest: int


def _values(obj: dict[str, Any], endpoint: str) -> tuple[list[dict[str, Any]], _TsRange | None]:
    """The page's values (objects with an int64 ``_ts``) and their range of ``_ts``
    (``None`` for no values)."""
    values = obj.get("values")
    if not isinstance(values, list):
        raise MalformedResponse(f"values must be a list, got {_kind(values)}", endpoint=endpoint)
    if not values:
        return values, None
    ts_range = _ts_range(values)
    if ts_range is not None:
        return values, ts_range
    # Walked value by value only to name the first offender.
    for position, value in enumerate(values):
        if not isinstance(value, dict):
            raise MalformedResponse(
                f"value #{position} is {_kind(value)}, not an object", endpoint=endpoint
            )
        ts = value.get("_ts")
        if not _is_int64(ts):
            raise MalformedResponse(
                f"value #{position} has _ts {_kind(ts)}, expected a JSON integer",
                endpoint=endpoint,
            )
    raise AssertionError("unreachable: some value broke the contract")


def _ts_range(values: list[Any]) -> _TsRange | None:
    """The oldest and newest ``_ts`` if every value is an object with an int64 ``_ts``
    (else ``None``), checked a column at a time in C (``map``, ``set``, ``min``/``max``)
    rather than value by value."""
    if set(map(type, values)) != {dict}:
        return None
    tss: list[Any] = list(map(dict.get, values, repeat("_ts")))
    if set(map(type, tss)) != {int}:
        return None
    oldest, newest = min(tss), max(tss)
    return _TsRange(oldest, newest) if oldest >= 0 and newest <= _INT64_MAX else None


def _has_more(obj: dict[str, Any], endpoint: str) -> bool:
    has_more = obj.get("hasMore")
    if not isinstance(has_more, bool):
        raise MalformedResponse(
            f"hasMore must be a boolean, got {_kind(has_more)}", endpoint=endpoint
        )
    return has_more


def _timestamp(value: Any, name: str, endpoint: str) -> int:
    if not _is_int64(value):
        raise MalformedResponse(
            f"{name} must be a JSON integer timestamp, got {_kind(value)}", endpoint=endpoint
        )
    return int(value)


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT64_MAX


def _kind(value: Any) -> str:
    """A short description of a JSON value for messages (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer out of range" if not 0 <= value <= _INT64_MAX else "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__
