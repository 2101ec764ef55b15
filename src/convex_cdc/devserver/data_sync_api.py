"""The Data Sync endpoints' own work, after parsing and authorization.

docs/convex-export-api.md §13 describes them:

* ``POST /api/v1/data/sync`` — ``{"cursor"?, "selection"?}`` → one page
  (:func:`convex_cdc.devserver.data_sync.next_page`) with ``status``, ``truncates``,
  ``values`` (export_json documents nested under ``value``), ``syncId`` and
  ``pagination`` (``hasMore`` always true, ``nextCursor`` always present);
* ``POST /api/data_sync_cursor_from_deltas`` — ``{"cursor": <document_deltas cursor>,
  "selection"?}`` → ``{"cursor": <data sync cursor>}`` that counts every selected table as
  walked up to that timestamp, so a client switches APIs without reading anything again;
* ``GET /api/v1/data/list_active_syncs?limit=&cursor=`` — progress of recent syncs.

Unlike the legacy endpoints, a malformed selection is 400 ``BadJsonBody`` (``null`` too) and
an invalid one is 400 ``InvalidDataSyncSelection``, never "everything" or a 500.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from convex_cdc.devserver.api_errors import (
    ApiError,
    bad_json_body,
    invalid_data_sync_cursor,
    invalid_data_sync_selection,
)
from convex_cdc.devserver.data_sync import (
    SyncLimits,
    SyncPage,
    check_resumable,
    next_page,
    window_ns,
)
from convex_cdc.devserver.selection import (
    EVERYTHING,
    InvalidSelection,
    MalformedSelection,
    RequestSelection,
    parse_selection_object,
)
from convex_cdc.devserver.settings import DevServerSettings
from convex_cdc.devserver.store import DocumentStore
from convex_cdc.devserver.sync_cursor import CursorSealer, DataSyncCursor, InvalidSyncCursor
from convex_cdc.devserver.sync_progress import ActiveSyncs, InvalidListCursor
from convex_cdc.devserver.tables import Revision, Table
from convex_cdc.devserver.value_encoding import strip_columns

DATA_SYNC_PATHS = frozenset(
    {"/api/v1/data/sync", "/api/data_sync_cursor_from_deltas", "/api/v1/data/list_active_syncs"}
)
"""The routes a deployment without Data Sync does not have."""

_NS_PER_SECOND = 1_000_000_000
_CLIENT_PREFIXES = (("fivetran-export-", "fivetran-"), ("airbyte-export-", "airbyte-"))


def check_body(args: Mapping[str, Any]) -> None:
    """What deserializing the JSON body refuses, before any permission check.

    Raises:
        ApiError: 400 ``BadJsonBody`` for a ``null`` or malformed ``selection``.
    """
    if "selection" not in args:
        return
    raw = args["selection"]
    if raw is None:
        raise bad_json_body("invalid type: null, expected a selection object")
    try:
        parse_selection_object(raw)
    except MalformedSelection:
        raise bad_json_body("the selection is not a valid selection object") from None
    except InvalidSelection:
        pass  # reported later, as InvalidDataSyncSelection


def check_conversion_body(args: Mapping[str, Any]) -> None:
    """:func:`check_body`, and the legacy cursor is required.

    Raises:
        ApiError: 400 ``BadJsonBody``.
    """
    if args.get("cursor") is None:
        raise bad_json_body("missing field `cursor`")
    check_body(args)


def _selection(args: Mapping[str, Any]) -> RequestSelection:
    if "selection" not in args:
        return EVERYTHING
    try:
        return parse_selection_object(args["selection"])
    except InvalidSelection as exc:
        raise invalid_data_sync_selection(str(exc)) from None


def new_sync_id(client: str | None) -> str:
    """A fresh sync id: a UUIDv4, prefixed after the Fivetran and Airbyte connectors."""
    prefix = next(
        (short for name, short in _CLIENT_PREFIXES if client and client.startswith(name)), ""
    )
    return prefix + str(uuid.uuid4())


def _values(page: SyncPage, selection: RequestSelection) -> bytes:
    prefixes: dict[int, bytes] = {}
    bodies: list[bytes] = []
    for revision in page.entries:
        table = revision.table
        prefix = prefixes.get(id(table))
        if prefix is None:
            prefix = prefixes[id(table)] = b'{"component":%s,"table":%s,"ts":' % (
                orjson.dumps(table.component),
                orjson.dumps(table.name),
            )
        bodies.append(prefix + _entry(revision, selection))
    return b",".join(bodies)


def _entry(revision: Revision, selection: RequestSelection) -> bytes:
    if revision.export is None:
        return b'%d,"deleted":true,"value":{"_id":%s}}' % (revision.ts, orjson.dumps(revision.id))
    body = revision.export
    columns = selection.column_filter(revision.table.component, revision.table.name)
    if columns is not None and not columns.keeps_everything:
        body = strip_columns(body, columns.includes)
    return b'%d,"deleted":false,"value":{%s}}' % (revision.ts, body)


def _truncate(table: Table) -> dict[str, str]:
    return {"component": table.component, "table": table.name}


class DataSyncApi:
    """Answers the Data Sync endpoints for one deployment."""

    def __init__(self, store: DocumentStore, sealer: CursorSealer) -> None:
        self._store = store
        self._sealer = sealer
        self.active = ActiveSyncs(lambda: store.now() // 1_000_000)

    def _min_retained_ts(self, settings: DevServerSettings) -> int:
        # The same window document_deltas checks its cursors against.
        return max(0, self._store.now() - window_ns(settings.retention_seconds))

    def _open(self, token: str) -> DataSyncCursor:
        try:
            return self._sealer.open(token)
        except InvalidSyncCursor as exc:
            raise invalid_data_sync_cursor(str(exc)) from None

    def sync(
        self, settings: DevServerSettings, args: Mapping[str, Any], client: str | None
    ) -> bytes:
        """``POST /api/v1/data/sync``: the next page of a sync (a new sync without a cursor)."""
        token = args.get("cursor")
        cursor = None if token is None else self._open(token)
        selection = _selection(args)
        page = next_page(
            self._store,
            cursor,
            selection,
            SyncLimits.from_settings(settings),
            sync_id=new_sync_id(client) if cursor is None else cursor.sync_id,
            min_retained_ts=self._min_retained_ts(settings),
        )
        self.active.record(page.cursor.sync_id, page.progress)
        status = page.progress.status
        status_json: dict[str, Any] = {"type": status.kind}
        if status.snapshot_ts is not None:
            status_json["snapshotTs"] = status.snapshot_ts
        return b'{"status":%s,"truncates":%s,"values":[%s],"syncId":%s,"pagination":%s}' % (
            orjson.dumps(status_json),
            orjson.dumps([_truncate(table) for table in page.truncates]),
            _values(page, selection),
            orjson.dumps(page.cursor.sync_id),
            orjson.dumps({"hasMore": True, "nextCursor": self._sealer.seal(page.cursor)}),
        )

    def cursor_from_deltas(
        self, settings: DevServerSettings, args: Mapping[str, Any], client: str | None
    ) -> bytes:
        """``POST /api/data_sync_cursor_from_deltas``: a legacy delta cursor as a data sync
        cursor that has walked every table selected now, up to that timestamp."""
        legacy: int = args["cursor"]
        selection = _selection(args)
        store = self._store
        check_resumable(store, legacy, self._min_retained_ts(settings))
        walked = frozenset(
            table.tablet_id
            for table in store.user_tables_at(store.latest_ts)
            if selection.includes(table.component, table.name)
        )
        cursor = DataSyncCursor(new_sync_id(client), legacy, walked, None)
        return orjson.dumps({"cursor": self._sealer.seal(cursor)})

    def list_active_syncs(self, args: Mapping[str, Any]) -> bytes:
        """``GET /api/v1/data/list_active_syncs``: syncs active in the last 3 days."""
        limit = args.get("limit")
        if limit is None:
            limit = 50
        elif not 1 <= limit <= 100:
            raise ApiError(400, "LimitOutOfRange", "limit must be between 1 and 100")
        try:
            syncs, next_cursor = self.active.page(limit, args.get("cursor"))
        except InvalidListCursor as exc:
            raise ApiError(400, "InvalidCursor", str(exc)) from None
        pagination: dict[str, Any] = {"hasMore": next_cursor is not None}
        if next_cursor is not None:
            pagination["nextCursor"] = next_cursor
        return orjson.dumps({"syncs": [sync.to_json() for sync in syncs], "pagination": pagination})
