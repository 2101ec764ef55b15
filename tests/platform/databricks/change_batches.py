"""Hand-made change batches and silver comparisons for the Databricks/delta tests."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import orjson
import pyarrow as pa

from convex_cdc.core.checkpoint import (
    Checkpoint,
    DataSync,
    DataSyncCursor,
    DeltaCursor,
    DeltaTail,
    InitialSnapshot,
    SnapshotCursor,
    SnapshotTs,
    SourceIdentity,
)
from convex_cdc.core.events import ChangeBatch, events_from_values, truncate_events
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType, to_column_value
from convex_cdc.platform.databricks.source_name import SourceName

URL = "https://test-animal-123.convex.cloud"
SOURCE = SourceIdentity(URL)
SOURCE_NAME = SourceName("test_animal_123")
"""The source name ``SOURCE`` is stored under (the one derived from ``URL``)."""


def doc(
    table: str,
    doc_id: str,
    ts: int,
    *,
    component: str = "",
    deleted: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """One export_json value as document_deltas would send it."""
    value: dict[str, Any] = {
        "_component": component,
        "_table": table,
        "_id": doc_id,
        "_ts": ts,
        "_deleted": deleted,
    }
    if not deleted:
        value["_creationTime"] = 1_700_000_000_000.5
        value.update(fields)
    return value


def checkpoint(
    batch_seq: int,
    *,
    cursor: int = 0,
    walk: int = 1,
    snapshot: bool = False,
) -> Checkpoint:
    """A checkpoint after ``batch_seq`` batches of the walk started at ``walk``."""
    position = (
        InitialSnapshot(SnapshotTs(walk), SnapshotCursor(f"c{batch_seq}"))
        if snapshot
        else DeltaTail(DeltaCursor(cursor))
    )
    return Checkpoint(
        source=SOURCE, position=position, batch_seq=batch_seq, snapshot_started_at=walk
    )


def batch(
    seq: int,
    values: Sequence[Mapping[str, Any]],
    *,
    kind: Literal["snapshot", "delta"] = "delta",
    walk: int = 1,
) -> ChangeBatch:
    """A batch carrying ``values``, with the checkpoint it advances to."""
    snapshot_ts = walk if kind == "snapshot" else None
    events = events_from_values(
        [dict(v, _deleted=False) if kind == "snapshot" else dict(v) for v in values],
        kind=kind,
        batch_seq=seq,
        snapshot_ts=snapshot_ts,
        endpoint="test",
    )
    cursor = max((int(v["_ts"]) for v in values), default=walk)
    return ChangeBatch(
        seq=seq,
        kind=kind,
        events=events,
        checkpoint=checkpoint(seq, cursor=cursor, walk=walk, snapshot=kind == "snapshot"),
        snapshot_ts=snapshot_ts,
        wire_format="export_json",
        response_bytes=0,
    )


def data_sync_checkpoint(batch_seq: int, *, snapshot_ts: int | None = None) -> Checkpoint:
    """A Data Sync checkpoint after ``batch_seq`` batches (``snapshotting`` without a ts)."""
    return Checkpoint(
        source=SOURCE,
        position=DataSync(
            cursor=DataSyncCursor(f"{batch_seq:04x}"),
            status="snapshotting" if snapshot_ts is None else "upToDate",
            snapshot_ts=snapshot_ts,
            sync_id="sync-1",
        ),
        batch_seq=batch_seq,
    )


def data_sync_batch(
    seq: int,
    values: Sequence[Mapping[str, Any]],
    *,
    truncates: Sequence[str] = (),
    snapshot_ts: int | None = None,
) -> ChangeBatch:
    """A Data Sync batch: truncates of the ``truncates`` tables first, then ``values``."""
    events = events_from_values(
        [dict(v) for v in values], kind="delta", batch_seq=seq, snapshot_ts=None, endpoint="test"
    )
    if truncates:
        marks = truncate_events([TableKey("", t) for t in truncates], batch_seq=seq)
        events = pa.concat_tables([marks, events])
    return ChangeBatch(
        seq=seq,
        kind="data-sync",
        events=events,
        checkpoint=data_sync_checkpoint(seq, snapshot_ts=snapshot_ts),
        snapshot_ts=None,
        wire_format="export_json",
        response_bytes=0,
    )


def comparable(value: Any) -> Any:
    """Floats compared bit-for-bit in spirit: NaN equals NaN, -0.0 differs from 0.0."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return (value, math.copysign(1.0, value))
    return value


def silver_as_dicts(table: pa.Table) -> dict[str, dict[str, Any]]:
    """Silver rows keyed by ``_id`` with comparable values (null columns dropped)."""
    rows = {}
    for row in table.to_pylist():
        rows[row["_id"]] = {k: comparable(v) for k, v in row.items() if v is not None}
    return rows


def expected_silver(
    documents: Iterable[tuple[str, int, Mapping[str, Any]]],
    columns: Mapping[str, ColumnType],
) -> dict[str, dict[str, Any]]:
    """What silver must hold for ``(id, ts, export_json document)`` of the live documents."""
    rows = {}
    for doc_id, ts, document in documents:
        row: dict[str, Any] = {"_id": doc_id, "_ts": ts}
        if document.get("_creationTime") is not None:
            row["_creationTime"] = comparable(float(document["_creationTime"]))
        for name, kind in columns.items():
            if kind is ColumnType.NULL:
                continue
            value = to_column_value(document.get(name), kind)
            if value is not None:
                row[name] = comparable(value)
        rows[doc_id] = row
    return rows


def parse(text: str) -> dict[str, Any]:
    """A document's export_json text as a dict."""
    parsed: dict[str, Any] = orjson.loads(text)
    return parsed
