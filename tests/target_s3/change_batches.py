"""Hand-made change batches written through the real raw sink and checkpoint store.

``ScriptedSync`` plays the orchestrator's part for target tests: it builds events with
``core.events.events_from_values`` from export_json-shaped values, moves the checkpoint
with the pure ``core.checkpoint`` transitions, writes each batch with
``RawChangeLogSink`` and then (unless told not to) saves the checkpoint.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from convex_cdc.core.checkpoint import (
    Checkpoint,
    SourceIdentity,
    after_delta_page,
    after_snapshot_page,
    begin_snapshot,
    with_schema_fingerprints,
)
from convex_cdc.core.events import ChangeBatch, events_from_values, tables_in
from convex_cdc.core.names import TableKey
from convex_cdc.core.source import WIRE_FORMAT
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.raw.change_log import RawChangeLogSink

DEPLOYMENT_URL = "https://happy-animal-123.convex.cloud"
EXTRACTED_AT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def creation_time_of(doc_id: str) -> float:
    """The ``_creationTime`` :func:`doc` gives ``doc_id``: the same for every version of a
    document, as in Convex (ms, with a fraction, like Convex's)."""
    return 1_700_000_000_000.0 + zlib.crc32(doc_id.encode()) % 1_000_000_000 + 0.5


def doc(table: str, doc_id: str, ts: int, component: str = "", **fields: Any) -> dict[str, Any]:
    """An export_json document value (``_creationTime`` from the id unless given, so
    every version of a document has the same one)."""
    return {
        "_component": component,
        "_table": table,
        "_id": doc_id,
        "_ts": ts,
        "_deleted": False,
        "_creationTime": creation_time_of(doc_id),
        **fields,
    }


def tombstone(table: str, doc_id: str, ts: int, component: str = "") -> dict[str, Any]:
    """An export_json delete value."""
    return {"_component": component, "_table": table, "_id": doc_id, "_ts": ts, "_deleted": True}


class ScriptedSync:
    """Writes batches into ``dest`` the way the orchestrator would."""

    def __init__(self, dest: Path, *, fingerprints: dict[str, str] | None = None) -> None:
        self.dest = dest
        self.sink = RawChangeLogSink(DestinationLayout.at(dest))
        self.store = FileCheckpointStore(DestinationLayout.at(dest))
        self.checkpoint: Checkpoint | None = self.store.load()
        self.fingerprints = fingerprints or {}

    def snapshot(self, pages: list[list[dict[str, Any]]], *, snapshot_ts: int) -> list[ChangeBatch]:
        """A complete snapshot walk at ``snapshot_ts`` (one batch per non-empty page)."""
        checkpoint = begin_snapshot(
            self.checkpoint, source=SourceIdentity(DEPLOYMENT_URL), snapshot=snapshot_ts
        )
        checkpoint = with_schema_fingerprints(checkpoint, self.fingerprints)
        self.store.save(checkpoint)
        self.checkpoint = checkpoint
        batches = []
        for number, values in enumerate(pages):
            last = number == len(pages) - 1
            events = self._events(values, "snapshot", checkpoint.batch_seq + 1, snapshot_ts)
            following = after_snapshot_page(
                checkpoint,
                cursor=None if last else f"cursor-{number}",
                has_more=not last,
                tables=tables_in(events),
            )
            batches.extend(self._commit(checkpoint, following, events, "snapshot", snapshot_ts))
            checkpoint = following
        return batches

    def delta(
        self, values: list[dict[str, Any]], *, cursor: int | None = None, commit: bool = True
    ) -> ChangeBatch | None:
        """One document_deltas page; ``commit=False`` writes it but never saves the checkpoint."""
        assert self.checkpoint is not None
        events = self._events(values, "delta", self.checkpoint.batch_seq + 1, None)
        end = cursor if cursor is not None else max((v["_ts"] for v in values), default=0)
        following = after_delta_page(self.checkpoint, cursor=end, tables=tables_in(events))
        batches = self._commit(self.checkpoint, following, events, "delta", None, save=commit)
        return batches[0] if batches else None

    def _events(
        self,
        values: list[dict[str, Any]],
        kind: Literal["snapshot", "delta"],
        seq: int,
        snapshot_ts: int | None,
    ) -> Any:
        return events_from_values(
            values,
            kind=kind,
            batch_seq=seq,
            snapshot_ts=snapshot_ts,
            extracted_at=EXTRACTED_AT,
            endpoint="test",
        )

    def _commit(
        self,
        previous: Checkpoint,
        following: Checkpoint,
        events: Any,
        kind: Literal["snapshot", "delta"],
        snapshot_ts: int | None,
        *,
        save: bool = True,
    ) -> list[ChangeBatch]:
        batches = []
        if events.num_rows:
            batch = ChangeBatch(
                seq=following.batch_seq,
                kind=kind,
                events=events,
                checkpoint=following,
                snapshot_ts=snapshot_ts,
                wire_format=WIRE_FORMAT,
                response_bytes=0,
            )
            self.sink.write(batch)
            batches.append(batch)
        if save:
            self.store.save(following)
            self.checkpoint = following
        return batches


def key(table: str, component: str = "") -> TableKey:
    """Shorthand for a table key."""
    return TableKey(component, table)
