"""A Convex deployment inside the test process: the devserver without its sockets.

:class:`InProcessConvex` is a :class:`convex_cdc.core.source.Source` over a real
:class:`~convex_cdc.devserver.store.DocumentStore`. Each call goes the way an HTTP request
to the devserver goes, minus the network: the request body is built as ``ConvexClient``
builds it (the selection as ``validate_selection(selection.to_wire())``), encoded to JSON,
parsed by the devserver's own argument parser, answered by its socket-free endpoint
functions (:mod:`convex_cdc.devserver.export_api`), and the answer's bytes are checked by
core's own response parsers. So paging, tablet order, delta row limits and the selection
are the devserver's, and a core selection that reaches the server wrong exports the wrong
documents here too.

The oracle (:meth:`InProcessConvex.state_at`, :meth:`~InProcessConvex.truth`,
:meth:`~InProcessConvex.deletes_between`) reads the store directly and filters with the
devserver's parse of a selection object the test writes by hand, never with core's
:class:`~convex_cdc.core.selection.Selection`.

Timestamps are deterministic: the store's clock is a :class:`ManualClock` that each write
moves on by a seeded step. The devserver's retention windows are measured against the wall
clock, so they are switched off; :attr:`InProcessConvex.min_retained_ts` plays the document
retention window instead. Transactions queued with :meth:`InProcessConvex.schedule` land one
per API call, i.e. between the calls of a running sync.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlencode

import orjson

from convex_cdc.core.client import classify_api_error
from convex_cdc.core.data_sync_response import parse_converted_cursor, parse_data_sync_page
from convex_cdc.core.errors import (
    ConvexCdcError,
    SourceUnavailable,
)
from convex_cdc.core.responses import parse_delta_page, parse_json_schemas, parse_snapshot_page
from convex_cdc.core.retry import is_transient_status
from convex_cdc.core.selection import Selection, validate_selection
from convex_cdc.core.source import WIRE_FORMAT, DataSyncPage, DeltaPage, SnapshotPage
from convex_cdc.devserver import export_api
from convex_cdc.devserver.api_errors import ApiError
from convex_cdc.devserver.data_sync_api import DataSyncApi, check_body, check_conversion_body
from convex_cdc.devserver.request_args import FieldSpec, parse_json_body, parse_query
from convex_cdc.devserver.selection import EVERYTHING, RequestSelection, selection_from_args
from convex_cdc.devserver.settings import DevServerSettings
from convex_cdc.devserver.store import DocumentStore
from convex_cdc.devserver.sync_cursor import CursorSealer
from convex_cdc.devserver.writes import Delete, Insert, Write
from tests.core.crash_harness import DocKey, document_text

START_NS: Final = 1_750_000_000_000_000_000
"""Where the clock of every in-process deployment starts (June 2025, in ns)."""

# The argument types the devserver's HTTP layer declares for these endpoints.
_SNAPSHOT_ARGS: Final[FieldSpec] = {"snapshot": "i64", "cursor": "str", "format": "str"}
_DELTAS_ARGS: Final[FieldSpec] = {"cursor": "i64", "format": "str"}
_SCHEMA_ARGS: Final[FieldSpec] = {"deltaSchema": "bool", "byComponent": "bool", "format": "str"}
_DATA_SYNC_ARGS: Final[FieldSpec] = {"cursor": "str"}
_CONVERSION_ARGS: Final[FieldSpec] = {"cursor": "i64"}

Planned = Callable[["InProcessConvex"], Sequence[Write]]
"""A transaction decided when it lands, from the deployment as it is then."""


class ManualClock:
    """A nanosecond clock that only moves when told to."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, nanoseconds: int) -> None:
        """Move the clock on."""
        self.now += nanoseconds


class InProcessConvex:
    """A deployment served by the devserver's store and endpoints (see the module docstring).

    Args:
        snapshot_page_size: documents per list_snapshot page.
        delta_row_limit: log rows per document_deltas page.
        seed: seeds document ids, tablet ids and the clock's steps.
        url: the deployment URL the source reports.
    """

    def __init__(
        self,
        *,
        snapshot_page_size: int = 1024,
        delta_row_limit: int = 128,
        seed: int = 0,
        url: str = "https://in-process-animal-123.convex.cloud",
        data_sync_page_size: int = 16384,
        data_sync: bool = True,
    ) -> None:
        self.url = url
        self.clock = ManualClock(START_NS)
        self.store = DocumentStore(seed=seed, clock=self.clock)
        self.settings = DevServerSettings(
            snapshot_page_size=snapshot_page_size,
            deltas_row_limit=delta_row_limit,
            retention_seconds=math.inf,
            snapshot_max_age_seconds=math.inf,
            data_sync_enabled=data_sync,
            data_sync_page_size=data_sync_page_size,
            data_sync_rows_read_limit=max(32768, data_sync_page_size),
            # The manual clock never lets a walk fall behind "now", so by-id pages are
            # always chosen while a table is walked, as on a fresh, fast deployment.
            data_sync_by_id_freshness_seconds=math.inf,
        ).validate()
        self._data_sync = DataSyncApi(self.store, CursorSealer(b"in-process"))
        self.min_retained_ts = 0
        """Delta cursors below this are outside the retention window (400
        ``InvalidWindowToReadDocuments``, as the devserver answers)."""
        self.calls: list[str] = []
        """Every API call made, by endpoint name, in order."""
        self._steps = random.Random(seed)
        self._scheduled: deque[Sequence[Write] | Planned] = deque()

    # --- writing ------------------------------------------------------------------

    @property
    def latest_ts(self) -> int:
        """The timestamp of the last write (or drop): what "now" reads."""
        return self.store.latest_ts

    def transact(self, writes: Sequence[Write]) -> int:
        """Apply ``writes`` as one transaction; returns its timestamp."""
        self._tick()
        return self.store.commit(writes).ts

    def insert(self, table: str, fields: Mapping[str, Any], component: str = "") -> str:
        """Insert one document in its own transaction; returns its id."""
        self._tick()
        return self.store.commit([Insert(table, dict(fields), component)]).ids[0]

    def create_table(self, table: str, component: str = "") -> None:
        """Create an empty table (a document inserted, then deleted)."""
        doc_id = self.insert(table, {}, component)
        self.transact([Delete(table, doc_id, component)])

    def drop_table(self, table: str, component: str = "") -> int:
        """Drop a table; returns the drop's timestamp. Like Convex, this sends no tombstones."""
        self._tick()
        return self.store.drop_table(component, table)

    def replace_table(
        self, table: str, documents: Sequence[Mapping[str, Any]], component: str = ""
    ) -> int:
        """Replace a table's documents as an import does; returns its timestamp. The legacy
        log shows the new documents as inserts and nothing of the old ones."""
        self._tick()
        return self.store.replace_table(component, table, [dict(d) for d in documents]).ts

    def schedule(self, transactions: Iterable[Sequence[Write] | Planned]) -> None:
        """Queue transactions; one lands before each later API call.

        A transaction may be a function of the deployment, resolved when it lands (so a
        random workload can pick among the documents that exist by then).
        """
        self._scheduled.extend(transactions)

    def land_scheduled(self) -> None:
        """Apply the next queued transaction, if any (what happens before each API call)."""
        if self._scheduled:
            planned = self._scheduled.popleft()
            self.transact(planned(self) if callable(planned) else planned)

    def live_ids(self, table: str, component: str = "") -> list[str]:
        """Ids of the current documents of a table, sorted."""
        return [
            row.id
            for row in self.store.live_documents()
            if (row.table.component, row.table.name) == (component, table)
        ]

    def _tick(self) -> None:
        self.clock.advance(self._steps.randint(1, 1000))

    # --- the oracle -----------------------------------------------------------------

    def state_at(self, ts: int, selection: Mapping[str, Any] | None = None) -> dict[DocKey, str]:
        """Every exported document at ``ts`` as change-event text, keyed (component, table, id).

        ``selection`` is a Convex selection object written by the test; the devserver's
        parser decides what it selects, not core's :class:`Selection`.
        """
        chosen = _server_selection(selection)
        state: dict[DocKey, str] = {}
        for revision in self.store.live_documents(ts):
            table = revision.table
            columns = chosen.column_filter(table.component, table.name)
            if columns is None or revision.export is None:
                continue
            fields = orjson.loads(b"{" + revision.export + b"}")
            kept = {name: value for name, value in fields.items() if columns.includes(name)}
            state[(table.component, table.name, revision.id)] = document_text(kept)
        return state

    def truth(self, selection: Mapping[str, Any] | None = None) -> dict[DocKey, str]:
        """The current state, as :meth:`state_at` the latest timestamp."""
        return self.state_at(self.latest_ts, selection)

    def deletes_between(self, after: int, upto: int) -> set[tuple[str, str, str, int]]:
        """(component, table, id, ts) of every exported delete with ``after < ts <= upto``
        (deletes in system tables and in tables dropped by ``upto`` are never exported)."""
        return {
            (row.table.component, row.table.name, row.id, row.ts)
            for row in self.store.revisions_between(after, upto)
            if row.deleted and not row.table.system and row.table.live_at(upto)
        }

    # --- Source ---------------------------------------------------------------------

    @property
    def deployment_url(self) -> str:
        return self.url

    def test_connection(self) -> None:
        self._call("test_connection")

    def json_schemas(self) -> dict[str, dict[str, Any]]:
        self._call("json_schemas")
        query = urlencode({"deltaSchema": "true", "byComponent": "true", "format": WIRE_FORMAT})
        body = self._answer(
            "json_schemas",
            lambda: export_api.json_schemas(self.store, parse_query(query, _SCHEMA_ARGS)),
        )
        return parse_json_schemas(orjson.loads(body))

    def list_snapshot(
        self, *, snapshot: int | None, cursor: str | None, selection: Selection | None
    ) -> SnapshotPage:
        self._call("list_snapshot")
        request = {"snapshot": snapshot, "cursor": cursor, "format": WIRE_FORMAT}
        body = self._answer(
            "list_snapshot",
            lambda: export_api.list_snapshot(
                self.store, self.settings, _post_args(request, selection, _SNAPSHOT_ARGS)
            ),
        )
        return parse_snapshot_page(orjson.loads(body), len(body))

    def document_deltas(self, *, cursor: int, selection: Selection | None) -> DeltaPage:
        self._call("document_deltas")

        def answer() -> bytes:
            if cursor < self.min_retained_ts:
                raise ApiError(
                    400,
                    "InvalidWindowToReadDocuments",
                    f"Timestamp {cursor + 1} is too old: it is outside the document "
                    "retention window. Restart the export with a full snapshot (list_snapshot).",
                )
            request = {"cursor": cursor, "format": WIRE_FORMAT}
            args = _post_args(request, selection, _DELTAS_ARGS)
            return export_api.document_deltas(self.store, self.settings, args)

        body = self._answer("document_deltas", answer)
        return parse_delta_page(orjson.loads(body), len(body))

    def data_sync_available(self) -> bool:
        self._call("list_active_syncs")
        return self.settings.data_sync_enabled

    def data_sync(self, *, cursor: str | None, selection: Selection | None) -> DataSyncPage:
        self._call("data_sync")
        request: dict[str, Any] = {} if cursor is None else {"cursor": cursor}

        def answer() -> bytes:
            self._require_data_sync("v1/data/sync")
            args = _post_args(request, selection, _DATA_SYNC_ARGS)
            check_body(args)
            return self._data_sync.sync(self.settings, args, None)

        body = self._answer("v1/data/sync", answer)
        return parse_data_sync_page(orjson.loads(body), len(body))

    def data_sync_cursor_from_deltas(self, *, cursor: int, selection: Selection | None) -> str:
        self._call("data_sync_cursor_from_deltas")

        def answer() -> bytes:
            self._require_data_sync("data_sync_cursor_from_deltas")
            args = _post_args({"cursor": cursor}, selection, _CONVERSION_ARGS)
            check_conversion_body(args)
            return self._data_sync.cursor_from_deltas(self.settings, args, None)

        body = self._answer("data_sync_cursor_from_deltas", answer)
        return parse_converted_cursor(orjson.loads(body))

    def _require_data_sync(self, endpoint: str) -> None:
        if not self.settings.data_sync_enabled:
            raise ApiError(404, "NotFound", f"{endpoint} is not served by this deployment")

    def _answer(self, endpoint: str, respond: Callable[[], bytes]) -> bytes:
        """``respond()``, with a devserver error answer raised as the client would raise it.

        Anything else a devserver function raises is a bug in it and propagates as is.
        """
        try:
            return respond()
        except ApiError as error:
            raise core_error(endpoint, error, url=self.deployment_url) from None

    def _call(self, endpoint: str) -> None:
        self.calls.append(endpoint)
        self.land_scheduled()


def _post_args(
    request: dict[str, Any], selection: Selection | None, spec: FieldSpec
) -> dict[str, Any]:
    """The arguments the devserver's HTTP layer hands an endpoint for this POST body."""
    if selection is not None:
        request["selection"] = validate_selection(selection.to_wire())
    return parse_json_body("application/json", orjson.dumps(request), spec)


def core_error(endpoint: str, error: ApiError, *, url: str) -> ConvexCdcError:
    """The error ``ConvexClient`` ends with for this answer (a transient one: once its
    retries are spent, since in-process the same request gets the same answer); the
    class and fix come from the client's own classifier."""
    if is_transient_status(error.status):
        return SourceUnavailable(
            f"{endpoint}: HTTP {error.status} {error.code}", hint="the devserver failed"
        )
    kind, hint = classify_api_error(error.status, error.code, url=url, key_env=None)
    return kind(
        endpoint=endpoint,
        status=error.status,
        code=error.code,
        server_message=error.message,
        hint=hint,
    )


def _server_selection(wire: Mapping[str, Any] | None) -> RequestSelection:
    """The devserver's reading of a selection object.

    Raises:
        ValueError: the object does not parse, so the server would export everything.
    """
    if wire is None:
        return EVERYTHING
    parsed = selection_from_args({"selection": wire})
    if parsed is EVERYTHING:  # the fallback for an object that does not parse
        raise ValueError(f"the devserver cannot parse the selection {wire!r}")
    return parsed
