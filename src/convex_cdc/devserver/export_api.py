"""The streaming-export endpoints' own work, after parsing and authorization.

The endpoints are those of docs/convex-export-api.md §2, answering as §7 to §9 there say.

Each function takes parsed arguments and returns the JSON body as bytes. Pages are
assembled from each revision's cached body bytes (``b",".join``); a document is only
re-serialised when a selection removes some of its columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from convex_cdc.devserver.api_errors import ApiError, bad_format, internal_server_error
from convex_cdc.devserver.ids import (
    InvalidId,
    decode_document_id,
    decode_tablet_id,
    encode_tablet_id,
)
from convex_cdc.devserver.schema_inference import column_names, table_schema
from convex_cdc.devserver.selection import ColumnFilter, InvalidSelection, RequestSelection
from convex_cdc.devserver.selection import selection_from_args as _selection_from_args
from convex_cdc.devserver.settings import DevServerSettings
from convex_cdc.devserver.store import DocumentStore, SnapshotCursor
from convex_cdc.devserver.tables import Component, Revision, Table
from convex_cdc.devserver.value_encoding import (
    UnknownFormat,
    ValueFormat,
    parse_format,
    strip_columns,
)

_NS_PER_SECOND = 1_000_000_000


def _format(name: Any) -> ValueFormat:
    try:
        return parse_format(name)
    except UnknownFormat:
        raise bad_format(str(name)) from None


def _selection(args: Mapping[str, Any]) -> RequestSelection:
    try:
        return _selection_from_args(args)
    except InvalidSelection:
        # The legacy endpoints do not map selection errors to 400 (docs/convex-export-api.md §5).
        raise internal_server_error() from None


def _body(revision: Revision, fmt: ValueFormat, filters: dict[int, ColumnFilter | None]) -> bytes:
    body = revision.body(fmt)
    column_filter = filters.get(id(revision.table))
    if column_filter is None:
        return body
    return strip_columns(body, column_filter.includes)


def _column_filters(
    selection: RequestSelection, tables: set[Table]
) -> dict[int, ColumnFilter | None]:
    """Per table: ``None`` when every column is kept (the cached fast path)."""
    out: dict[int, ColumnFilter | None] = {}
    for table in tables:
        column_filter = selection.column_filter(table.component, table.name)
        keep_all = column_filter is None or column_filter.keeps_everything
        out[id(table)] = None if keep_all else column_filter
    return out


def _snapshot_values(revisions: list[Revision], fmt: ValueFormat) -> bytes:
    """The common case: one table, no column filter, bodies straight from the cache.

    A snapshot page never spans two tables, so the metadata prefix is spelled once per
    page and put between the values by ``join``.
    """
    if not revisions:
        return b""
    prefix = revisions[0].table.value_prefix
    if fmt is ValueFormat.EXPORT:
        values = [b"%d,%s}" % (revision.ts, revision.export) for revision in revisions]
    else:
        values = [b"%d,%s}" % (revision.ts, revision.body(fmt)) for revision in revisions]
    return prefix + (b"," + prefix).join(values)


def parse_snapshot_cursor(raw: str) -> SnapshotCursor:
    """Decode a list_snapshot cursor string (JSON ``{"tablet", "id"}``).

    Raises:
        ApiError: 400 ``InvalidListSnapshotCursor``.
    """
    try:
        parsed = orjson.loads(raw)
        tablet, doc_id = parsed["tablet"], parsed["id"]
        if not isinstance(tablet, str) or not isinstance(doc_id, str):
            raise TypeError("cursor fields are strings")
        return SnapshotCursor(decode_tablet_id(tablet), decode_document_id(doc_id).internal_id)
    except (orjson.JSONDecodeError, TypeError, KeyError, InvalidId):
        raise ApiError(
            400, "InvalidListSnapshotCursor", f"Invalid list_snapshot cursor: {raw!r}"
        ) from None


def list_snapshot(
    store: DocumentStore, settings: DevServerSettings, args: Mapping[str, Any]
) -> bytes:
    """``list_snapshot``: one page of a consistent snapshot walk."""
    snapshot = args.get("snapshot")
    if snapshot is not None and snapshot < 0:
        raise internal_server_error()
    raw_cursor = args.get("cursor")
    cursor = parse_snapshot_cursor(raw_cursor) if raw_cursor is not None else None
    selection = _selection(args)
    latest = store.latest_ts
    if snapshot is None:
        snapshot = latest
    elif snapshot > latest:
        raise ApiError(400, "SnapshotTooNew", f"Snapshot value {snapshot} is in the future.")
    elif snapshot < store.now() - settings.snapshot_max_age_seconds * _NS_PER_SECOND:
        raise ApiError(
            400,
            "SnapshotTooOld",
            f"Snapshot value {snapshot} is too old. Restart the snapshot without a `snapshot`.",
        )
    fmt = _format(args.get("format"))
    page = store.snapshot_page(snapshot, cursor, selection, settings.snapshot_page_size)
    tables = {revision.table for revision in page.revisions}
    filters = _column_filters(selection, tables)
    if len(tables) == 1 and not any(filters.values()):
        values = _snapshot_values(page.revisions, fmt)
    else:
        values = b",".join(
            [
                b"%s%d,%s}"
                % (revision.table.value_prefix, revision.ts, _body(revision, fmt, filters))
                for revision in page.revisions
            ]
        )
    if page.cursor is None:
        cursor_json = b"null"
        has_more = b"false"
    else:
        cursor_text = orjson.dumps(
            {"tablet": encode_tablet_id(page.cursor.tablet_id), "id": page.cursor_id}
        )
        cursor_json = orjson.dumps(cursor_text.decode())
        has_more = b"true"
    return b'{"values":[%s],"snapshot":%d,"cursor":%s,"hasMore":%s}' % (
        values,
        page.snapshot,
        cursor_json,
        has_more,
    )


def document_deltas(
    store: DocumentStore, settings: DevServerSettings, args: Mapping[str, Any]
) -> bytes:
    """``document_deltas``: log entries after ``cursor``, pages cut by the page-end rule.

    The rule is described in docs/convex-export-api.md §8.
    """
    cursor = args.get("cursor")
    if cursor is None:
        raise ApiError(
            400, "DocumentDeltasCursorRequired", "/api/document_deltas requires a cursor"
        )
    if cursor < 0:
        raise internal_server_error()
    selection = _selection(args)
    if cursor < store.now() - settings.retention_seconds * _NS_PER_SECOND:
        raise ApiError(
            400,
            "InvalidWindowToReadDocuments",
            f"Timestamp {cursor + 1} is too old: it is outside the document retention window. "
            "Restart the export with a full snapshot (list_snapshot).",
        )
    page = store.deltas_page(cursor, selection, settings.deltas_row_limit)
    fmt = _format(args.get("format"))
    filters = _column_filters(selection, {revision.table for revision in page.revisions})
    values = []
    for revision in page.revisions:
        prefix = revision.table.value_prefix
        if revision.export is None:
            values.append(
                b'%s%d,"_deleted":true,"_id":%s}' % (prefix, revision.ts, orjson.dumps(revision.id))
            )
        else:
            body = _body(revision, fmt, filters)
            values.append(b'%s%d,"_deleted":false,%s}' % (prefix, revision.ts, body))
    return b'{"values":[%s],"cursor":%d,"hasMore":%s}' % (
        b",".join(values),
        page.cursor,
        b"true" if page.has_more else b"false",
    )


def json_schemas(store: DocumentStore, args: Mapping[str, Any]) -> bytes:
    """``json_schemas``: one JSON Schema per user table, from the current data.

    The schemas' form is described in docs/convex-export-api.md §9.
    """
    fmt = _format(args.get("format"))
    delta_schema = bool(args.get("deltaSchema"))

    def render(component: Component, table: Table) -> tuple[str, dict[str, Any]]:
        schema = table_schema(
            table.name, table.shape, fmt, component.table_name_of, delta_schema=delta_schema
        )
        return table.name, schema

    grouped = store.read_tables(render)
    if args.get("byComponent"):
        nested = {path: dict(tables) for path, tables in grouped}
        return orjson.dumps(nested)
    flat: dict[str, Any] = {}
    for _, tables in grouped:
        flat.update(tables)  # same-named tables of later components win, as on the server
    return orjson.dumps(flat)


def get_table_column_names(store: DocumentStore) -> bytes:
    """``get_table_column_names``: sorted top-level columns per table, by component."""

    def render(_: Component, table: Table) -> dict[str, Any]:
        return {"name": table.name, "columns": column_names(table.shape)}

    grouped = store.read_tables(render)
    return orjson.dumps({"byComponent": {path: tables for path, tables in grouped if tables}})
