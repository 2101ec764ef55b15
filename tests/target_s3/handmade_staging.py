"""Build a staging directory by hand (typed parquet files + ``_state.json``) for tests.

Documents are given as parsed ``export_json`` values, the way Convex sends them, typed
with the production row builder (``core.current_state``) and laid out like the
materializer's (system columns, then user columns sorted; rows in creation-time order,
cut into ``segments`` files of equal size; content-named files), but without going
through the raw change log. An unchanged segment produces the same file name again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from convex_cdc.core.checkpoint import Checkpoint, DeltaCursor, DeltaTail, SourceIdentity
from convex_cdc.core.checkpoint_json import dumps_checkpoint
from convex_cdc.core.columns import column_specs
from convex_cdc.core.current_state import observed_column_types, parse_fields, typed_rows
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.segments import in_creation_order, write_segment_file
from convex_cdc.target_s3.staging.state import (
    StagingState,
    StagingTable,
    save_staging_state,
)
from convex_cdc.target_s3.table_paths import table_dir_name

DEPLOYMENT = "https://happy-animal-123.convex.cloud"

Documents = Sequence[Mapping[str, Any]]


def write_staging(
    dest: Path,
    tables: Mapping[str, Documents],
    *,
    consistent_as_of_ts: int | None = 1_000,
    deployment_url: str = DEPLOYMENT,
    segments: int = 2,
    last_batch: int = 1,
) -> StagingState:
    """Write staging files for ``tables`` and the state naming them; return the state.

    ``tables`` maps qualified table names to documents (each with ``_id``, optionally
    ``_creationTime`` and ``_ts``). Files the new state no longer names are removed, as
    the materializer does.
    """
    layout = DestinationLayout.at(dest)
    staged = tuple(
        _write_table(layout, TableKey.parse(name), docs, segments, last_batch)
        for name, docs in sorted(tables.items())
    )
    state = StagingState(
        deployment_url=deployment_url,
        last_applied_batch=last_batch,
        snapshot_ts=500,
        consistent_as_of_ts=consistent_as_of_ts,
        updated_at="2026-11-26T10:00:00Z",
        tables=staged,
    )
    named = {layout.root / f.path for t in staged for f in t.files}
    for old in layout.staging.glob("*/*.parquet"):
        if old not in named:
            old.unlink()
    save_staging_state(layout.staging_state, state)
    return state


def write_checkpoint(dest: Path, *, batch_seq: int, cursor: int = 1_000) -> Checkpoint:
    """A delta-phase checkpoint, stored as the file checkpoint store stores it."""
    checkpoint = Checkpoint(
        source=SourceIdentity(DEPLOYMENT),
        position=DeltaTail(DeltaCursor(cursor)),
        batch_seq=batch_seq,
        schema_fingerprints={"messages": "sha256:" + "ab" * 32},
    )
    layout = DestinationLayout.at(dest)
    layout.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    layout.checkpoint.write_bytes(dumps_checkpoint(checkpoint))
    return checkpoint


def _write_table(
    layout: DestinationLayout, key: TableKey, docs: Documents, segments: int, last_batch: int
) -> StagingTable:
    directory = table_dir_name(key)
    events = pa.table(
        {
            "_id": pa.array([d["_id"] for d in docs], pa.string()),
            "_ts": pa.array([int(d.get("_ts", 1)) for d in docs], pa.int64()),
            "_deleted": pa.array([False] * len(docs)),
            "document": [
                orjson.dumps({k: v for k, v in d.items() if k != "_ts"}).decode() for d in docs
            ],
        }
    )
    fields = parse_fields(events)
    specs = column_specs(observed_column_types(fields))
    rows = typed_rows(events, fields, specs)
    files = []
    rows = in_creation_order(rows)
    size = -(-rows.num_rows // segments) if rows.num_rows else 0
    for number in range(segments if rows.num_rows else 0):
        part = rows.slice(number * size, size)
        if part.num_rows:
            target = layout.staging / directory
            files.append(write_segment_file(layout.root, target, number, part))
    return StagingTable(
        key=key,
        dir=directory,
        row_count=rows.num_rows,
        last_batch=last_batch,
        columns=specs,
        files=tuple(files),
    )
