"""Hand-made Data Sync batches written through the real raw sink and checkpoint store.

``ScriptedDataSync`` plays the orchestrator's part for a source followed with Data Sync:
each page becomes one ``data-sync`` batch whose truncate rows (``core.events``) come
before its values, the checkpoint moves with the pure ``core.checkpoint`` transitions, the
batch is written with ``RawChangeLogSink`` and then (unless told not to) the checkpoint
is saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from convex_cdc.core.checkpoint import (
    Checkpoint,
    SourceIdentity,
    SyncStatus,
    after_data_sync_page,
    begin_data_sync,
    data_sync_from_delta_tail,
)
from convex_cdc.core.events import ChangeBatch, events_from_values, tables_in, truncate_events
from convex_cdc.core.names import TableKey
from convex_cdc.core.source import WIRE_FORMAT
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.raw.change_log import RawChangeLogSink
from tests.target_s3.change_batches import DEPLOYMENT_URL, EXTRACTED_AT


class ScriptedDataSync:
    """Writes Data Sync batches into ``dest`` the way the orchestrator would."""

    def __init__(self, dest: Path) -> None:
        self.layout = DestinationLayout.at(dest)
        self.sink = RawChangeLogSink(self.layout)
        self.store = FileCheckpointStore(self.layout)
        self.checkpoint: Checkpoint | None = self.store.load()
        self.sync_id = "sync-0"
        self._cursor = 0

    def cold_start(self) -> None:
        """Begin a new data sync (every table is walked again, under a new sync id)."""
        self.checkpoint = begin_data_sync(self.checkpoint, source=SourceIdentity(DEPLOYMENT_URL))
        self.store.save(self.checkpoint)
        self.sync_id = f"sync-{int(self.sync_id.split('-')[1]) + 1}"

    def convert(self) -> None:
        """Switch a settled legacy delta tail to Data Sync (no data read again)."""
        assert self.checkpoint is not None
        self.checkpoint = data_sync_from_delta_tail(self.checkpoint, cursor=self._next_cursor())
        self.store.save(self.checkpoint)
        self.sync_id = "sync-converted"

    def page(
        self,
        values: Sequence[dict[str, Any]] = (),
        *,
        truncates: Sequence[TableKey] = (),
        status: SyncStatus = "snapshotting",
        snapshot_ts: int | None = None,
        commit: bool = True,
    ) -> ChangeBatch | None:
        """One page: ``truncates`` first, then ``values`` (export_json, ``_deleted`` set).

        ``snapshot_ts`` defaults to the newest ``_ts`` so far for a consistent status.
        """
        assert self.checkpoint is not None
        seq = self.checkpoint.batch_seq + 1
        parts = [
            truncate_events(truncates, batch_seq=seq, extracted_at=EXTRACTED_AT),
            events_from_values(
                values,
                kind="delta",
                batch_seq=seq,
                snapshot_ts=None,
                extracted_at=EXTRACTED_AT,
                endpoint="test",
            ),
        ]
        events = pa.concat_tables(parts)
        if status != "snapshotting" and snapshot_ts is None:
            snapshot_ts = max((v["_ts"] for v in values), default=1)
        following = after_data_sync_page(
            self.checkpoint,
            cursor=self._next_cursor(),
            status=status,
            snapshot_ts=None if status == "snapshotting" else snapshot_ts,
            sync_id=self.sync_id,
            tables=tables_in(events),
        )
        batch = None
        if events.num_rows:
            batch = ChangeBatch(
                seq=following.batch_seq,
                kind="data-sync",
                events=events,
                checkpoint=following,
                snapshot_ts=None,
                wire_format=WIRE_FORMAT,
                response_bytes=0,
            )
            self.sink.write(batch)
        if commit:
            self.store.save(following)
            self.checkpoint = following
        return batch

    def _next_cursor(self) -> str:
        self._cursor += 1
        return f"{self._cursor:08x}"
