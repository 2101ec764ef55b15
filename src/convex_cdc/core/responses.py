"""Strict checks of streaming-export answers, before anything downstream sees them.

Convex's answers are checked against the API as docs/convex-export-api.md §7 to §9
describe it: the right JSON types at the top level, timestamps as JSON integers that fit
an int64 (``export_json`` never sends them as floats or strings), a list_snapshot cursor
exactly when ``hasMore``. A violation is a :class:`MalformedResponse` naming the endpoint
and the problem, and never quoting the offending value (it could be anything).
"""

from __future__ import annotations

from itertools import repeat
from typing import Any, Final

from convex_cdc.core.errors import MalformedResponse
from convex_cdc.core.source import DeltaPage, SnapshotPage

_INT64_MAX: Final = 2**63 - 1


def parse_snapshot_page(data: Any, size: int) -> SnapshotPage:
    """Check a parsed ``list_snapshot`` body and wrap it.

    Raises:
        MalformedResponse: naming what is wrong.
    """
    endpoint = "list_snapshot"
    obj = _object(data, endpoint)
    values = _values(obj, endpoint)
    has_more = _has_more(obj, endpoint)
    snapshot_ts = _timestamp(obj.get("snapshot"), "snapshot", endpoint)
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
    return SnapshotPage(
        values=values,
        snapshot=snapshot_ts,
        cursor=next_cursor,
        has_more=has_more,
        response_bytes=size,
    )


def parse_delta_page(data: Any, size: int) -> DeltaPage:
    """Check a parsed ``document_deltas`` body and wrap it.

    Raises:
        MalformedResponse: naming what is wrong.
    """
    endpoint = "document_deltas"
    obj = _object(data, endpoint)
    values = _values(obj, endpoint)
    return DeltaPage(
        values=values,
        cursor=_timestamp(obj.get("cursor"), "cursor", endpoint),
        has_more=_has_more(obj, endpoint),
        response_bytes=size,
    )


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


def _values(obj: dict[str, Any], endpoint: str) -> list[dict[str, Any]]:
    values = obj.get("values")
    if not isinstance(values, list):
        raise MalformedResponse(f"values must be a list, got {_kind(values)}", endpoint=endpoint)
    if _well_formed(values):
        return values
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
    return values


def _well_formed(values: list[Any]) -> bool:
    """Whether every value is an object with an int64 ``_ts``, checked a column at a time
    in C (``map``, ``set``, ``min``/``max``) rather than value by value."""
    if not values:
        return True
    if set(map(type, values)) != {dict}:
        return False
    tss: list[Any] = list(map(dict.get, values, repeat("_ts")))
    return set(map(type, tss)) == {int} and min(tss) >= 0 and max(tss) <= _INT64_MAX


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
