"""In-memory stand-ins for a Convex deployment, a durable sink and a checkpoint store.

``FakeConvex`` implements :class:`convex_cdc.core.source.Source` with the paging rules of
the streaming-export contract (section 2.11-2.12): a snapshot walk pinned at a
timestamp, ``snapshot_page_size`` documents per page, pages that never span two tables,
tables in tablet order (not alphabetical), empty pages with ``hasMore``; a change log read
``delta_row_limit`` rows at a time with system and unselected rows counted, the page
finished at a transaction boundary, the cursor set to "now" when the log is exhausted,
minimal delete entries. Transactions queued with :meth:`FakeConvex.schedule` land one per
API call, i.e. between the calls of a running sync.

``DurableSink`` and ``MemoryCheckpointStore`` keep what a real target would keep across
a process crash; a :class:`CrashInjector` makes either die before, inside or after any
write or save. ``DurableSink`` also checks, on every write, that a batch number it has
seen before arrives with exactly the same events.
"""

from __future__ import annotations

import base64
import math
import random
import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
import pyarrow as pa

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.checkpoint_json import dumps_checkpoint, loads_checkpoint
from convex_cdc.core.errors import ConvexApiError, RetentionExpired, SourceUnavailable
from convex_cdc.core.events import ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.core.selection import Selection
from convex_cdc.core.source import DeltaPage, SnapshotPage
from convex_cdc.devserver.writes import Delete, Insert, Replace, Write

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
DocKey = tuple[str, str, str]
"""(component, table, _id)"""
Planned = Callable[["FakeConvex"], Sequence[Write]]


def export_json(value: Any) -> Any:
    """A Python Convex value in ``export_json`` form (special floats and bytes tagged)."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return {"$float": base64.b64encode(struct.pack("<d", value)).decode()}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return [export_json(v) for v in value]
    if isinstance(value, dict):
        return {k: export_json(v) for k, v in value.items()}
    return value


def document_text(document: Mapping[str, Any]) -> str:
    """The canonical lossless text a change event carries for ``document``."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True)
class LogEntry:
    """One document revision in the log; ``document`` is ``None`` for a delete."""

    ts: int
    tablet: str
    key: TableKey
    id: str
    document: dict[str, Any] | None


@dataclass
class FakeConvex:
    """An in-memory deployment (see the module docstring)."""

    snapshot_page_size: int = 1024
    delta_row_limit: int = 128
    seed: int = 0
    url: str = "https://fake-animal-123.convex.cloud"
    log: list[LogEntry] = field(default_factory=list)
    now: int = 1_750_000_000_000_000_000
    min_retained_ts: int = 0
    """Delta cursors below this get 400 InvalidWindowToReadDocuments."""
    calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._tablets: dict[TableKey, str] = {}
        self._dropped: dict[str, int] = {}  # tablet -> ts of the drop
        self._docs: dict[DocKey, dict[str, Any]] = {}
        self._scheduled: deque[Sequence[Write] | Planned] = deque()

    # --- writing ------------------------------------------------------------------

    @property
    def deployment_url(self) -> str:
        return self.url

    def transact(self, writes: Sequence[Write]) -> int:
        """Apply ``writes`` as one transaction; returns its timestamp."""
        self.now += self._rng.randint(1, 1000)
        ts = self.now
        final: dict[tuple[TableKey, str], dict[str, Any] | None] = {}
        for write in writes:
            key = TableKey(write.component, write.table)
            self._tablet(key)
            doc: dict[str, Any] | None
            match write:
                case Insert(fields=fields):
                    doc_id = self._new_id(key)
                    doc = {"_id": doc_id, "_creationTime": ts / 1e6 - 0.25, **dict(fields)}
                case Replace(id=doc_id, fields=fields):
                    old = final.get(
                        (key, doc_id), self._docs.get((key.component, key.table, doc_id))
                    )
                    if old is None:
                        raise KeyError(doc_id)
                    doc = {"_id": doc_id, "_creationTime": old["_creationTime"], **dict(fields)}
                case Delete(id=doc_id):
                    doc = None
            final[(key, doc_id)] = doc
        for (key, doc_id), doc in sorted(
            final.items(), key=lambda item: (self._tablets[item[0][0]], item[0][1])
        ):
            self.log.append(LogEntry(ts, self._tablets[key], key, doc_id, doc))
            if doc is None:
                self._docs.pop((key.component, key.table, doc_id), None)
            else:
                self._docs[(key.component, key.table, doc_id)] = doc
        return ts

    def insert(self, table: str, fields: Mapping[str, Any], component: str = "") -> str:
        """Insert one document in its own transaction; returns its id."""
        self.transact([Insert(table, dict(fields), component)])
        return self.log[-1].id

    def create_table(self, table: str, component: str = "") -> None:
        """Create an empty table (a write that is immediately deleted)."""
        doc_id = self.insert(table, {}, component)
        self.transact([Delete(table, doc_id, component)])

    def drop_table(self, table: str, component: str = "") -> None:
        """Drop a table. Like Convex, this emits no tombstones."""
        self.now += 1
        key = TableKey(component, table)
        self._dropped[self._tablets.pop(key)] = self.now
        for doc_key in [k for k in self._docs if k[:2] == (component, table)]:
            del self._docs[doc_key]

    def schedule(self, transactions: Iterable[Sequence[Write] | Planned]) -> None:
        """Queue transactions; one lands before each later API call.

        A transaction may be a function of the deployment, resolved when it lands (so a
        random workload can pick among the documents that exist by then).
        """
        self._scheduled.extend(transactions)

    def live_ids(self, table: str, component: str = "") -> list[str]:
        """Ids of the current documents of a table, sorted."""
        return sorted(i for c, t, i in self._docs if (c, t) == (component, table))

    # --- reading the truth ----------------------------------------------------------

    def state_at(self, ts: int, selection: Selection | None = None) -> dict[DocKey, str]:
        """Every exported document at ``ts`` as change-event text, keyed (component, table, id)."""
        state: dict[DocKey, str] = {}
        for entry in self._visible_entries(ts, selection):
            key = (entry.key.component, entry.key.table, entry.id)
            if entry.document is None:
                state.pop(key, None)
            else:
                state[key] = document_text(
                    export_json(self._filter_columns(entry.key, entry.document, selection))
                )
        return state

    def truth(self, selection: Selection | None = None) -> dict[DocKey, str]:
        """The current state, as :meth:`state_at` now."""
        return self.state_at(self.now, selection)

    def deletes_between(self, after: int, upto: int) -> set[tuple[str, str, str, int]]:
        """(component, table, id, ts) of every exported delete with ``after < ts <= upto``."""
        return {
            (e.key.component, e.key.table, e.id, e.ts)
            for e in self._visible_entries(upto, None)
            if e.document is None and e.ts > after
        }

    # --- Source ---------------------------------------------------------------------

    def test_connection(self) -> None:
        self._call("test_connection")

    def json_schemas(self) -> dict[str, dict[str, Any]]:
        self._call("json_schemas")
        schemas: dict[str, dict[str, Any]] = {}
        for key in self._tablets:
            if key.table.startswith("_"):
                continue
            fields = sorted(
                {
                    f
                    for (c, t, _), d in self._docs.items()
                    if (c, t) == (key.component, key.table)
                    for f in d
                }
            )
            schemas.setdefault(key.component, {})[key.table] = {
                "type": "object",
                "properties": {f: {} for f in fields},
            }
        return schemas

    def list_snapshot(
        self, *, snapshot: int | None, cursor: str | None, selection: Selection | None
    ) -> SnapshotPage:
        self._call("list_snapshot")
        chosen = selection
        at = self.now if snapshot is None else snapshot
        if at > self.now:
            raise ConvexApiError(
                endpoint="list_snapshot", status=400, code="SnapshotTooNew", server_message="x"
            )
        tables = sorted(
            (tablet, key)
            for key, tablet in self._tablets_at(at).items()
            if not key.table.startswith("_") and (chosen is None or chosen.includes(key))
        )
        if not tables:
            return self._snapshot_page([], at, None)
        position = 0
        after = ""
        if cursor is not None:
            decoded = orjson.loads(cursor)
            tablets = [t for t, _ in tables]
            if decoded["tablet"] not in tablets:
                raise ConvexApiError(
                    endpoint="list_snapshot",
                    status=400,
                    code="InvalidListSnapshotCursor",
                    server_message="bad cursor",
                )
            position, after = tablets.index(decoded["tablet"]), decoded["id"]
        tablet, key = tables[position]
        state = self._documents_at(at, key)
        ids = sorted(i for i in state if i > after)[: self.snapshot_page_size]
        values = [
            {
                "_component": key.component,
                "_table": key.table,
                "_ts": state[i][0],
                **export_json(self._filter_columns(key, state[i][1], chosen)),
            }
            for i in ids
        ]
        if len(ids) == self.snapshot_page_size:
            next_cursor: str | None = orjson.dumps({"tablet": tablet, "id": ids[-1]}).decode()
        elif position + 1 < len(tables):
            next_cursor = orjson.dumps({"tablet": tables[position + 1][0], "id": ""}).decode()
        else:
            next_cursor = None
        return self._snapshot_page(values, at, next_cursor)

    def document_deltas(self, *, cursor: int, selection: Selection | None) -> DeltaPage:
        self._call("document_deltas")
        if cursor < self.min_retained_ts:
            raise RetentionExpired(
                endpoint="document_deltas",
                status=400,
                code="InvalidWindowToReadDocuments",
                server_message="too old",
                hint="run `convex-cdc sync --resnapshot`",
            )
        chosen = selection
        upper = self.now
        values: list[dict[str, Any]] = []
        rows = 0
        page_end: int | None = None
        has_more = False
        for entry in self.log:
            if not cursor < entry.ts <= upper:
                continue
            if page_end is not None and entry.ts > page_end:
                has_more = True
                break
            rows += 1
            if self._exported(entry, chosen):
                meta = {"_component": entry.key.component, "_table": entry.key.table}
                if entry.document is None:
                    values.append({**meta, "_ts": entry.ts, "_deleted": True, "_id": entry.id})
                else:
                    document = self._filter_columns(entry.key, entry.document, chosen)
                    values.append(
                        {**meta, "_ts": entry.ts, "_deleted": False, **export_json(document)}
                    )
            if page_end is None and (
                rows >= self.delta_row_limit or len(values) >= self.delta_row_limit
            ):
                page_end = entry.ts
        body = orjson.dumps(
            {
                "values": values,
                "cursor": page_end if page_end is not None else upper,
                "hasMore": has_more,
            }
        )
        parsed = orjson.loads(body)
        return DeltaPage(parsed["values"], parsed["cursor"], parsed["hasMore"], len(body))

    # --- internals ------------------------------------------------------------------

    def _call(self, endpoint: str) -> None:
        self.calls.append(endpoint)
        if self._scheduled:
            planned = self._scheduled.popleft()
            self.transact(planned(self) if callable(planned) else planned)

    def _tablet(self, key: TableKey) -> str:
        if key not in self._tablets:
            self._tablets[key] = self._rng.randbytes(16).hex()
        return self._tablets[key]

    def _new_id(self, key: TableKey) -> str:
        prefix = self._tablets[key][:2]
        while True:
            doc_id = prefix + "".join(self._rng.choice(_ALPHABET) for _ in range(30))
            if (key.component, key.table, doc_id) not in self._docs:
                return doc_id

    def _tablets_at(self, ts: int) -> dict[TableKey, str]:
        created: dict[TableKey, str] = {}
        for entry in self.log:
            if entry.ts > ts:
                break
            if entry.tablet not in self._dropped or self._dropped[entry.tablet] > ts:
                created[entry.key] = entry.tablet
        return created

    def _documents_at(self, ts: int, key: TableKey) -> dict[str, tuple[int, dict[str, Any]]]:
        tablet = self._tablets_at(ts).get(key)
        docs: dict[str, tuple[int, dict[str, Any]]] = {}
        for entry in self.log:
            if entry.ts > ts:
                break
            if entry.tablet != tablet:
                continue
            if entry.document is None:
                docs.pop(entry.id, None)
            else:
                docs[entry.id] = (entry.ts, entry.document)
        return docs

    def _exported(self, entry: LogEntry, chosen: Selection | None) -> bool:
        return (
            not entry.key.table.startswith("_")
            and entry.tablet not in self._dropped
            and (chosen is None or chosen.includes(entry.key))
        )

    def _visible_entries(self, ts: int, chosen: Selection | None) -> Iterable[LogEntry]:
        live = self._tablets_at(ts)
        for entry in self.log:
            if entry.ts > ts:
                break
            if (
                live.get(entry.key) == entry.tablet
                and not entry.key.table.startswith("_")
                and (chosen is None or chosen.includes(entry.key))
            ):
                yield entry

    @staticmethod
    def _filter_columns(
        key: TableKey, document: dict[str, Any], chosen: Selection | None
    ) -> dict[str, Any]:
        if chosen is None:
            return document
        return {k: v for k, v in document.items() if chosen.includes_column(key, k)}

    @staticmethod
    def _snapshot_page(values: list[dict[str, Any]], at: int, cursor: str | None) -> SnapshotPage:
        body = orjson.dumps(
            {"values": values, "snapshot": at, "cursor": cursor, "hasMore": cursor is not None}
        )
        parsed = orjson.loads(body)
        return SnapshotPage(
            parsed["values"], parsed["snapshot"], parsed["cursor"], parsed["hasMore"], len(body)
        )


class UnreliableSource:
    """Wraps a source; a seeded share of calls fails, before or after the server acted."""

    def __init__(self, inner: FakeConvex, *, fail_rate: float, seed: int) -> None:
        self.inner = inner
        self.fail_rate = fail_rate
        self._rng = random.Random(seed)

    @property
    def deployment_url(self) -> str:
        return self.inner.deployment_url

    def _maybe_fail(self) -> None:
        if self._rng.random() < self.fail_rate:
            raise SourceUnavailable("injected: connection reset", hint="retry")

    def test_connection(self) -> None:
        self._maybe_fail()
        self.inner.test_connection()

    def json_schemas(self) -> dict[str, dict[str, Any]]:
        self._maybe_fail()
        result = self.inner.json_schemas()
        self._maybe_fail()
        return result

    def list_snapshot(
        self, *, snapshot: int | None, cursor: str | None, selection: Selection | None
    ) -> SnapshotPage:
        self._maybe_fail()
        page = self.inner.list_snapshot(snapshot=snapshot, cursor=cursor, selection=selection)
        self._maybe_fail()  # the answer was lost on the way back
        return page

    def document_deltas(self, *, cursor: int, selection: Selection | None) -> DeltaPage:
        self._maybe_fail()
        page = self.inner.document_deltas(cursor=cursor, selection=selection)
        self._maybe_fail()
        return page


# --- crashes, sink and store ------------------------------------------------------------


class SimulatedCrash(Exception):
    """The process died here."""


class CrashPoint(NamedTuple):
    """Die at the ``op``-th write or save of a run (0-based), at ``phase``.

    Phases: ``before`` (nothing of the operation happened), ``inside:<k>`` (a sink write
    with ``k`` of its tables durable), ``after`` (the operation is durable, the caller
    never learnt it). A checkpoint save is atomic, so it has no ``inside``.
    """

    op: int
    phase: str


@dataclass
class OpRecord:
    """One durable operation of a run, as seen by the injector."""

    kind: str  # "write" or "save"
    tables: int = 0
    detail: str = ""


@dataclass
class CrashInjector:
    """Counts durable operations and raises :class:`SimulatedCrash` at ``target``.

    ``target_pending`` instead crashes at the given phase of the next operation that
    touches a pending delta batch (its pending save, or its write), the rarest spot.
    """

    target: CrashPoint | None = None
    target_pending: tuple[str, str] | None = None
    """(``save`` or ``write``, phase)"""
    ops: list[OpRecord] = field(default_factory=list)

    def begin(self, record: OpRecord) -> int:
        if record.kind == "write" and self.ops and self.ops[-1].detail.endswith("+pending"):
            record.detail += " pending"
        self.ops.append(record)
        return len(self.ops) - 1

    def checkpoint(self, op: int, phase: str) -> None:
        record = self.ops[op]
        if (self.target is not None and self.target == (op, phase)) or (
            self.target_pending == (record.kind, phase) and "pending" in record.detail
        ):
            self.target_pending = None
            raise SimulatedCrash(f"crash at op {op} ({record.kind}) {phase}")

    def points(self) -> list[CrashPoint]:
        """Every crash point of the operations recorded so far."""
        result: list[CrashPoint] = []
        for op, record in enumerate(self.ops):
            result.append(CrashPoint(op, "before"))
            result.extend(CrashPoint(op, f"inside:{k}") for k in range(1, record.tables))
            result.append(CrashPoint(op, "after"))
        return result


def _comparable(events: pa.Table) -> list[dict[str, Any]]:
    """Rows without ``_extracted_at`` (the one column a replay may legitimately change)."""
    rows: list[dict[str, Any]] = events.drop_columns(["_extracted_at"]).to_pylist()
    return rows


@dataclass
class DurableSink:
    """A change-log sink that survives crashes: one durable file per (batch, table).

    A replayed batch overwrites its files. :meth:`state` materialises current state like
    staging does: batches in order, deletes applied, and a snapshot batch of a walk not
    seen before truncates everything (``--resnapshot`` is a truncate-and-reload).
    """

    crash: CrashInjector = field(default_factory=CrashInjector)
    files: dict[tuple[int, TableKey], list[dict[str, Any]]] = field(default_factory=dict)
    received: dict[int, tuple[str, int | None, list[dict[str, Any]]]] = field(default_factory=dict)
    writes: int = 0
    replays: int = 0

    def write(self, batch: ChangeBatch) -> None:
        tables = batch.tables()
        op = self.crash.begin(OpRecord("write", len(tables), f"batch {batch.seq}"))
        self.crash.checkpoint(op, "before")
        content = (batch.kind, batch.snapshot_ts, _comparable(batch.events))
        seen = self.received.get(batch.seq)
        if seen is not None:
            assert seen == content, f"batch {batch.seq} replayed with different events"
            self.replays += 1
        self.received[batch.seq] = content
        self.writes += 1
        for k, table in enumerate(tables):
            if k:
                self.crash.checkpoint(op, f"inside:{k}")
            rows = batch.events_for(table).drop_columns(["_extracted_at"]).to_pylist()
            self.files[(batch.seq, table)] = rows
        self.crash.checkpoint(op, "after")

    def rows(self) -> list[dict[str, Any]]:
        """Every durable row, in batch order."""
        return [row for _, rows in sorted(self.files.items()) for row in rows]

    def state(self) -> dict[DocKey, str]:
        state: dict[DocKey, str] = {}
        walk: int | None = None
        for row in self.rows():
            if row["_op"] == "snapshot" and row["_snapshot_ts"] != walk:
                state.clear()
                walk = row["_snapshot_ts"]
            key = (row["_component"], row["_table"], row["_id"])
            if row["_deleted"]:
                state.pop(key, None)
            else:
                state[key] = row["document"]
        return state

    def assert_exactly_once(self) -> None:
        """Within one snapshot walk and its deltas, no document version lands twice."""
        seen: set[tuple[str, str, str, int]] = set()
        walk: int | None = None
        for row in self.rows():
            if row["_op"] == "snapshot" and row["_snapshot_ts"] != walk:
                seen.clear()
                walk = row["_snapshot_ts"]
            version = (row["_component"], row["_table"], row["_id"], row["_ts"])
            assert version not in seen, f"{version} landed twice"
            seen.add(version)

    def current_walk_rows(self) -> list[dict[str, Any]]:
        """The rows since the last truncate-and-reload (the latest snapshot walk on)."""
        rows = self.rows()
        starts = [
            i
            for i, row in enumerate(rows)
            if row["_op"] == "snapshot"
            and (i == 0 or rows[i - 1]["_snapshot_ts"] != row["_snapshot_ts"])
        ]
        return rows[starts[-1] :] if starts else rows

    def delete_events(self) -> set[tuple[str, str, str, int]]:
        """Deletes received since the last truncate-and-reload; each must be a bare tombstone."""
        deletes = set()
        for row in self.current_walk_rows():
            if row["_deleted"]:
                assert row["_op"] == "delete" and row["document"] is None, row
                deletes.add((row["_component"], row["_table"], row["_id"], row["_ts"]))
        return deletes


@dataclass
class MemoryCheckpointStore:
    """A checkpoint store that keeps the serialised bytes, as a file would."""

    crash: CrashInjector = field(default_factory=CrashInjector)
    raw: bytes | None = None
    saves: int = 0

    def load(self) -> Checkpoint | None:
        return loads_checkpoint(self.raw) if self.raw is not None else None

    def save(self, checkpoint: Checkpoint) -> None:
        detail = checkpoint.phase + ("+pending" if checkpoint.pending is not None else "")
        op = self.crash.begin(OpRecord("save", detail=detail))
        self.crash.checkpoint(op, "before")
        self.raw = dumps_checkpoint(checkpoint)
        self.saves += 1
        self.crash.checkpoint(op, "after")
