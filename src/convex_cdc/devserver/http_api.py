"""Routing and the order of checks, independent of the HTTP server.

The server's order is summarised in docs/convex-export-api.md §4, its errors in §5.

Order, as on the server: ``Convex-Client`` (global, every route) → routing (405 with an empty
body for a wrong method, 404 for an unknown path, and for the Data Sync routes while the
``data_sync_enabled`` setting is off, as on a deployment without them) → fault injection
(``/api/*`` only) →

* GET: query parse (``BadQueryArgs``) → identity → streaming-export switch → permission
  → the endpoint's own validation;
* POST: identity → body parse (``BadJsonBody``, including a Data Sync body's selection)
  → switch → permission → validation.

Any exception that is not an :class:`ApiError` becomes 500 ``InternalServerError``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from convex_cdc.devserver import devserver_api, export_api
from convex_cdc.devserver.api_errors import (
    ApiError,
    bad_deploy_key,
    internal_server_error,
    streaming_export_not_enabled,
)
from convex_cdc.devserver.auth import Identity, KeyChecker, check_client_version
from convex_cdc.devserver.data_sync_api import (
    DATA_SYNC_PATHS,
    DataSyncApi,
    check_body,
    check_conversion_body,
)
from convex_cdc.devserver.faults import Fault, FaultInjector, fault_error
from convex_cdc.devserver.request_args import (
    FieldSpec,
    parse_json_body,
    parse_query,
    query_pairs,
)
from convex_cdc.devserver.settings import DevServerSettings, SettingsBox
from convex_cdc.devserver.store import DocumentStore
from convex_cdc.devserver.sync_cursor import CursorSealer

logger = logging.getLogger(__name__)

_SNAPSHOT_ARGS: FieldSpec = {"snapshot": "i64", "cursor": "str", "format": "str"}
_DELTAS_ARGS: FieldSpec = {"cursor": "i64", "format": "str"}
_SCHEMA_ARGS: FieldSpec = {"deltaSchema": "bool", "byComponent": "bool", "format": "str"}
_ACTIVE_SYNCS_ARGS: FieldSpec = {"limit": "usize", "cursor": "str"}
_DATA_SYNC_ARGS: FieldSpec = {"cursor": "str"}
_DROP_TABLE_ARGS: FieldSpec = {"component": "str", "table": "str"}
_CURSOR_CONVERSION_ARGS: FieldSpec = {"cursor": "i64"}
_NO_ARGS: FieldSpec = {}


@dataclass(frozen=True)
class Request:
    """What the handler needs from an HTTP request (header names lower-case)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass
class Response:
    """An answer; ``truncate_at`` asks the server to drop the connection mid-body."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    truncate_at: int | None = None


def _json(body: bytes, status: int = 200) -> Response:
    return Response(status, body)


Handler = Callable[[Request, Mapping[str, Any]], bytes]
BodyCheck = Callable[[Mapping[str, Any]], None]
"""What deserializing a POST body refuses beyond field types (runs before permissions)."""


@dataclass(frozen=True)
class _Route:
    kind: str  # "export" (streaming-export switch applies) or "devserver"
    spec: FieldSpec
    handler: Handler
    check: BodyCheck | None = None


class HttpApi:
    """Answers :class:`Request` objects for the export API and the devserver endpoints."""

    def __init__(
        self,
        store: DocumentStore,
        settings: SettingsBox,
        keys: KeyChecker,
        faults: FaultInjector,
        workload: devserver_api.WorkloadRunner,
        *,
        cursor_sealer: CursorSealer | None = None,
    ) -> None:
        """``cursor_sealer`` seals Data Sync cursors (default: a random key per server)."""
        self.store = store
        self.settings = settings
        self._keys = keys
        self._faults = faults
        self._workload = workload
        self.data_sync = DataSyncApi(store, cursor_sealer or CursorSealer())
        self._routes: dict[str, dict[str, _Route]] = self._build_routes()

    def _build_routes(self) -> dict[str, dict[str, _Route]]:
        store = self.store

        def settings_now() -> DevServerSettings:
            return self.settings.current

        def snapshot(_: Request, args: Mapping[str, Any]) -> bytes:
            return export_api.list_snapshot(store, settings_now(), args)

        def deltas(_: Request, args: Mapping[str, Any]) -> bytes:
            return export_api.document_deltas(store, settings_now(), args)

        def data_sync(request: Request, args: Mapping[str, Any]) -> bytes:
            client = request.headers.get("convex-client")
            return self.data_sync.sync(settings_now(), args, client)

        def cursor_from_deltas(request: Request, args: Mapping[str, Any]) -> bytes:
            client = request.headers.get("convex-client")
            return self.data_sync.cursor_from_deltas(settings_now(), args, client)

        def active_syncs(_: Request, args: Mapping[str, Any]) -> bytes:
            return self.data_sync.list_active_syncs(args)

        def workload(_: Request, args: Mapping[str, Any]) -> bytes:
            count = args.get("transactions")
            return devserver_api.workload(self._workload, store, 1 if count is None else count)

        def truth(_: Request, args: Mapping[str, Any]) -> bytes:
            return devserver_api.truth(store, args.get("ts"))

        export: dict[str, dict[str, tuple[FieldSpec, Handler]]] = {
            "/api/test_streaming_export_connection": {"GET": (_NO_ARGS, lambda _r, _a: b"null")},
            "/api/json_schemas": {
                "GET": (_SCHEMA_ARGS, lambda _r, args: export_api.json_schemas(store, args))
            },
            "/api/get_table_column_names": {
                "GET": (_NO_ARGS, lambda _r, _a: export_api.get_table_column_names(store))
            },
            "/api/list_snapshot": {
                "GET": (_SNAPSHOT_ARGS, snapshot),
                "POST": (_SNAPSHOT_ARGS, snapshot),
            },
            "/api/document_deltas": {"GET": (_DELTAS_ARGS, deltas), "POST": (_DELTAS_ARGS, deltas)},
            "/api/data_sync_cursor_from_deltas": {
                "POST": (_CURSOR_CONVERSION_ARGS, cursor_from_deltas)
            },
            "/api/v1/data/sync": {"POST": (_DATA_SYNC_ARGS, data_sync)},
            "/api/v1/data/list_active_syncs": {"GET": (_ACTIVE_SYNCS_ARGS, active_syncs)},
        }
        devserver: dict[str, dict[str, tuple[FieldSpec, Handler]]] = {
            "/_devserver/transaction": {
                "POST": (
                    _NO_ARGS,
                    lambda request, _a: devserver_api.transaction(store, request.body),
                )
            },
            "/_devserver/drop_table": {
                "POST": (
                    _NO_ARGS,
                    lambda request, _a: devserver_api.drop_table(
                        store, request.body, self._workload
                    ),
                )
            },
            "/_devserver/replace_table": {
                "POST": (
                    _NO_ARGS,
                    lambda request, _a: devserver_api.replace_table(
                        store, request.body, self._workload
                    ),
                )
            },
            "/_devserver/truth": {"GET": ({"ts": "i64"}, truth)},
            "/_devserver/workload": {"POST": ({"transactions": "i64"}, workload)},
            "/_devserver/settings": {
                "GET": (_NO_ARGS, lambda _r, _a: devserver_api.settings(self.settings, None)),
                "POST": (
                    _NO_ARGS,
                    lambda request, _a: devserver_api.settings(self.settings, request.body),
                ),
            },
        }
        checks: dict[str, BodyCheck] = {
            "/api/v1/data/sync": check_body,
            "/api/data_sync_cursor_from_deltas": check_conversion_body,
        }
        routes: dict[str, dict[str, _Route]] = {}
        for kind, table in (("export", export), ("devserver", devserver)):
            for path, methods in table.items():
                routes[path] = {
                    method: _Route(kind, spec, handler, checks.get(path))
                    for method, (spec, handler) in methods.items()
                }
        return routes

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises."""
        try:
            return self._handle(request)
        except ApiError as exc:
            return Response(exc.status, exc.body())
        except Exception:
            logger.exception("devserver: unexpected failure on %s %s", request.method, request.path)
            error = internal_server_error()
            return Response(error.status, error.body())

    def _handle(self, request: Request) -> Response:
        check_client_version(request.headers.get("convex-client"))
        methods = self._routes.get(request.path)
        if methods is None or (
            request.path in DATA_SYNC_PATHS and not self.settings.current.data_sync_enabled
        ):
            return Response(404, b"", content_type=None)
        route = methods.get(request.method)
        if route is None:
            return Response(405, b"", content_type=None, headers=[("Allow", ", ".join(methods))])
        fault = None
        if route.kind == "export":
            settings = self.settings.current
            fault = self._faults.draw(settings.fail_rate, settings.fault_kinds)
            if fault is not None:
                error = fault_error(fault)
                if error is not None:
                    return Response(error.status, error.body())
                if fault is Fault.STALL:
                    time.sleep(settings.stall_seconds)
        if request.method == "GET":
            args = parse_query(request.query, route.spec)
            identity = self._identity(request)
        else:
            identity = self._identity(request)
            if route.kind == "devserver":
                args = parse_query(request.query, route.spec)
            else:
                args = parse_json_body(
                    request.headers.get("content-type"), request.body, route.spec
                )
                if route.check is not None:
                    route.check(args)
        if route.kind == "export" and not self.settings.current.streaming_export_enabled:
            raise streaming_export_not_enabled()
        if identity is not Identity.ADMIN:
            raise bad_deploy_key()
        body = route.handler(request, args)
        response = _json(body)
        if request.path == "/_devserver/truth":
            response.content_type = "application/x-ndjson"
        if fault is Fault.DROP:
            response.truncate_at = len(body) // 2
        return response

    def _identity(self, request: Request) -> Identity:
        admin_key = None
        if "authorization" not in request.headers:
            for name, value in query_pairs(request.query):
                if name == "adminKey":
                    admin_key = value
        return self._keys.resolve(request.headers.get("authorization"), admin_key)
