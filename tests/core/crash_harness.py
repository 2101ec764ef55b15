"""What a real run has to survive, made deterministic: lost answers, crashes, restarts.

``UnreliableSource`` loses a seeded share of a source's calls or answers.
``DurableSink`` and ``MemoryCheckpointStore`` keep what a real target would keep across
a process crash; a :class:`CrashInjector` makes either die before, inside or after any
write or save. ``DurableSink`` also checks, on every write, that a batch number it has
seen before arrives with exactly the same events.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
import pyarrow as pa

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.checkpoint_json import dumps_checkpoint, loads_checkpoint
from convex_cdc.core.errors import SourceUnavailable
from convex_cdc.core.events import ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.core.selection import Selection
from convex_cdc.core.source import DeltaPage, SnapshotPage, Source

DocKey = tuple[str, str, str]
"""(component, table, _id)"""


def document_text(document: Mapping[str, Any]) -> str:
    """The text a change event carries for a document: its export_json fields, ``_id`` and
    ``_creationTime`` included, as JSON with sorted keys (what :meth:`DurableSink.state`
    holds per document)."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()


class UnreliableSource:
    """Wraps a source; a seeded share of calls fails, before or after the server acted."""

    def __init__(self, inner: Source, *, fail_rate: float, seed: int) -> None:
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
    staging does: batches in order, deletes applied, truncates and drops empty their
    table, and a snapshot batch of a walk not seen before truncates everything
    (``--resnapshot`` is a truncate-and-reload).
    """

    crash: CrashInjector = field(default_factory=CrashInjector)
    files: dict[tuple[int, TableKey], list[dict[str, Any]]] = field(default_factory=dict)
    received: dict[int, tuple[str, int | None, list[dict[str, Any]]]] = field(default_factory=dict)
    writes: int = 0
    replays: int = 0
    committed: dict[int, Checkpoint] = field(default_factory=dict)
    """Batches written whole (what a raw change log's index, written last, records)."""

    def committed_checkpoint(self, seq: int) -> Checkpoint | None:
        return self.committed.get(seq)

    def write(self, batch: ChangeBatch) -> None:
        tables = batch.tables()
        op = self.crash.begin(OpRecord("write", len(tables), f"batch {batch.seq}"))
        self.crash.checkpoint(op, "before")
        content = (batch.kind, batch.snapshot_ts, _comparable(batch.events))
        seen = self.received.get(batch.seq)
        if batch.kind == "data-sync":
            # Fetched anew, not replayed: a batch that never landed whole may come back
            # with other events, but one that did must have been adopted, never rewritten.
            assert batch.seq not in self.committed, f"batch {batch.seq} written twice"
            for stale in [key for key in self.files if key[0] == batch.seq]:
                del self.files[stale]
        elif seen is not None:
            assert seen == content, f"batch {batch.seq} replayed with different events"
            self.replays += 1
        self.received[batch.seq] = content
        self.writes += 1
        for k, table in enumerate(tables):
            if k:
                self.crash.checkpoint(op, f"inside:{k}")
            rows = batch.events_for(table).drop_columns(["_extracted_at"]).to_pylist()
            self.files[(batch.seq, table)] = rows
        self.committed[batch.seq] = batch.checkpoint
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
            table = (row["_component"], row["_table"])
            if row["_op"] in ("truncate", "drop"):  # walked again, or gone from the source
                state = {key: doc for key, doc in state.items() if key[:2] != table}
                continue
            key = (*table, row["_id"])
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
            if row["_op"] in ("truncate", "drop"):
                table = (row["_component"], row["_table"])
                seen = {version for version in seen if version[:2] != table}
                continue
            version = (row["_component"], row["_table"], row["_id"], row["_ts"])
            assert version not in seen, f"{version} landed twice"
            seen.add(version)

    def current_walk_rows(self) -> list[dict[str, Any]]:
        """The rows since the last truncate-and-reload (the latest snapshot walk on)."""
        rows = self.rows()
        starts = [
            i
            for i, row in enumerate(rows)
            # A --resnapshot walk opens with truncates that carry its timestamp.
            if row["_op"] in ("snapshot", "truncate")
            and row["_snapshot_ts"] is not None
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
