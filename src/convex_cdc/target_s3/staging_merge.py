"""Apply one table's new change events to its staging buckets.

The steps, all column work except parsing the *new* documents:

1. Keep the last event per ``_id`` among the new ones (stable sort by ``(_id, _ts)``,
   then the last row of each run; group_by "last" would skip nulls).
2. Per touched bucket, read only ``_id``/``_ts`` of the existing file and decide who
   wins each id: the highest ``_ts``, a new event on a tie (a replay carries the same
   version). New events older than what staging holds lose.
3. Parse the winning upserts, evolve the columns, build their typed rows.
4. Rewrite the buckets that changed (all of them if the columns changed): existing rows
   minus the ids the new events won (``is_in``), plus the new rows, sorted by ``_id``.

Staging keeps no tombstones, so an upsert older than a delete applied in an *earlier*
materialize would bring the row back. Convex delivers deltas in timestamp order, so this
only guards against disorder inside the batches of one run, where it is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.checkpoint import TableKey
from convex_cdc.core.errors import SinkError
from convex_cdc.core.type_mapping import infer_column_types, system_columns, typed_columns
from convex_cdc.target_s3.staging_buckets import (
    ROWS_PER_BUCKET,
    buckets_for,
    needs_growth,
    positions_by_bucket,
    read_bucket_file,
    write_bucket_file,
)
from convex_cdc.target_s3.staging_columns import (
    UserColumns,
    arrow_schema,
    column_specs,
    conform,
    evolve_columns,
    user_columns,
)
from convex_cdc.target_s3.staging_state import StagingFile, StagingTable, Widening

EVENT_COLUMNS = ["_id", "_ts", "_deleted", "document"]
"""The raw change log columns the materializer reads."""


@dataclass(slots=True)
class TableUpdate:
    """The outcome of applying events to one table."""

    table: StagingTable
    written: list[StagingFile] = field(default_factory=list)
    obsolete: list[str] = field(default_factory=list)
    """Paths (relative to the destination) no longer listed once the new state is saved."""
    upserted: int = 0
    deleted: int = 0
    widenings: list[Widening] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether any file of the table changed."""
        return bool(self.written or self.obsolete)


def empty_table(key: TableKey, table_dir: str, *, buckets: int) -> StagingTable:
    """A table with no rows and only the system columns."""
    return StagingTable(
        key=key,
        dir=table_dir,
        row_count=0,
        last_batch=0,
        columns=column_specs({}),
        buckets=buckets,
        files=(),
    )


def apply_table_events(
    root: Path,
    table_dir: Path,
    current: StagingTable,
    events: pa.Table,
    *,
    batch: int,
    schema_fingerprint: str | None,
    rows_per_bucket: int = ROWS_PER_BUCKET,
) -> TableUpdate:
    """Apply ``events`` (raw change log rows of one table, in order) to ``current``.

    New files are durable when this returns; nothing is deleted (the caller removes
    ``obsolete`` after saving the state that no longer lists them).

    Raises:
        SinkError: a document cannot be typed (not valid export_json).
        CheckpointError: a listed staging file is missing or damaged.
    """
    # 1. The last new event per id, grouped by bucket.
    latest = _last_per_id(events.select(EVENT_COLUMNS))
    old_columns = user_columns(current.columns)
    old_schema = arrow_schema(current.columns)
    files = {f.bucket: f for f in current.files}
    groups = positions_by_bucket(latest.column("_id").to_pylist(), current.buckets)

    # 2. Who wins each id, per touched bucket.
    won: dict[int, pa.Table] = {}
    for bucket, positions in sorted(groups.items()):
        candidates = latest.take(pa.array(positions, pa.int64()))
        existing = files.get(bucket)
        if existing is not None:
            keys = read_bucket_file(root, existing, schema=old_schema, columns=["_id", "_ts"])
            candidates = candidates.filter(_newer_than(candidates, keys))
        if candidates.num_rows:
            won[bucket] = candidates

    # 3. Type the winning upserts.
    upserts = {b: t.filter(pc.invert(t.column("_deleted"))) for b, t in won.items()}
    documents = {b: _parse(t, current.key) for b, t in upserts.items()}
    seen = infer_column_types(doc for docs in documents.values() for doc in docs)
    new_columns, widenings = evolve_columns(old_columns, seen, batch=batch)
    specs = column_specs(new_columns)
    schema = arrow_schema(specs)

    # 4. Rewrite what changed.
    rewrite = set(won) | (set(files) if new_columns != old_columns else set())
    update = TableUpdate(table=current, widenings=widenings)
    final: dict[int, StagingFile] = {b: f for b, f in files.items() if b not in rewrite}
    for bucket in sorted(rewrite):
        parts: list[pa.Table] = []
        old_file = files.get(bucket)
        if old_file is not None:
            rows = read_bucket_file(root, old_file, schema=old_schema)
            rows = conform(rows, old_columns, new_columns)
            if bucket in won:
                ids = won[bucket].column("_id").combine_chunks()
                gone = pc.is_in(rows.column("_id"), value_set=ids)
                deletes = won[bucket].filter(won[bucket].column("_deleted")).column("_id")
                deleted = pc.is_in(rows.column("_id"), value_set=deletes.combine_chunks())
                update.deleted += _count(deleted)
                rows = rows.filter(pc.invert(gone))
            parts.append(rows)
        if bucket in upserts:
            parts.append(_typed_rows(upserts[bucket], documents[bucket], new_columns, schema))
            update.upserted += upserts[bucket].num_rows
        new_file = _write_sorted(root, table_dir, bucket, pa.concat_tables(parts))
        if new_file is not None:
            final[bucket] = new_file
            if new_file != old_file:
                update.written.append(new_file)

    update.table = replace(
        current,
        row_count=sum(f.rows for f in final.values()),
        last_batch=batch,
        columns=specs,
        files=tuple(final[b] for b in sorted(final)),
        schema_fingerprint=schema_fingerprint or current.schema_fingerprint,
        widenings=current.widenings + tuple(widenings),
    )
    if needs_growth(update.table.row_count, update.table.buckets, rows_per_bucket):
        _grow(root, table_dir, update, rows_per_bucket)
    listed = {f.path for f in update.table.files}
    candidates = [f.path for f in current.files] + [f.path for f in update.written]
    update.obsolete = sorted({path for path in candidates if path not in listed})
    return update


def _last_per_id(events: pa.Table) -> pa.Table:
    """The last event per ``_id`` by ``(_id, _ts)``, ties broken by arrival order."""
    order = pc.sort_indices(events, sort_keys=[("_id", "ascending"), ("_ts", "ascending")])
    ordered = events.take(order)
    return ordered.filter(_last_of_runs(ordered.column("_id")))


def _last_of_runs(sorted_ids: pa.ChunkedArray | pa.Array) -> pa.Array:
    """True at the last row of each run of equal ids (ids sorted)."""
    ids = sorted_ids.combine_chunks() if isinstance(sorted_ids, pa.ChunkedArray) else sorted_ids
    n = len(ids)
    if n == 0:
        return pa.array([], pa.bool_())
    differs = pc.not_equal(ids.slice(0, n - 1), ids.slice(1))
    return pa.concat_arrays([differs, pa.array([True])])


def _newer_than(candidates: pa.Table, existing: pa.Table) -> pa.Array:
    """Mask over ``candidates`` (one row per id): wins against the existing ``_id``/``_ts``."""
    n = candidates.num_rows
    positions = pa.array(range(n), pa.int64())
    combined = pa.concat_tables(
        [_keyed(existing, 0, pa.repeat(-1, existing.num_rows)), _keyed(candidates, 1, positions)]
    )
    order = pc.sort_indices(
        combined, sort_keys=[("_id", "ascending"), ("_ts", "ascending"), ("src", "ascending")]
    )
    ordered = combined.take(order)
    winners = ordered.filter(_last_of_runs(ordered.column("_id")))
    won_positions = winners.filter(pc.equal(winners.column("src"), 1)).column("pos")
    return pc.is_in(positions, value_set=won_positions.combine_chunks())


def _keyed(rows: pa.Table, source: int, positions: pa.Array) -> pa.Table:
    """``_id``, ``_ts``, which side the row comes from, and its position on that side."""
    return pa.table(
        {
            "_id": rows.column("_id"),
            "_ts": rows.column("_ts"),
            "src": pa.repeat(source, rows.num_rows).cast(pa.int8()),
            "pos": positions.cast(pa.int64()),
        }
    )


def _parse(upserts: pa.Table, key: TableKey) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for doc_id, text in zip(
        upserts.column("_id").to_pylist(), upserts.column("document").to_pylist(), strict=True
    ):
        try:
            document = orjson.loads(text) if text is not None else None
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            raise SinkError(
                f"raw change log holds an unreadable document {doc_id} in table {key}",
                hint="restore raw_change_log from a backup, or run `sync --resnapshot`",
            )
        documents.append(document)
    return documents


def _typed_rows(
    upserts: pa.Table, documents: Sequence[dict[str, Any]], columns: UserColumns, schema: pa.Schema
) -> pa.Table:
    try:
        arrays = system_columns(
            upserts.column("_id").to_pylist(), documents, upserts.column("_ts").to_pylist()
        )
        arrays.update(typed_columns(documents, columns))
    except (TypeError, ValueError, OverflowError, KeyError, pa.ArrowException) as exc:
        raise SinkError(
            f"cannot type a document of this batch: {exc}",
            hint="the raw change log holds a value convex-cdc cannot map; report it",
        ) from exc
    return pa.Table.from_arrays([arrays[name] for name in schema.names], schema=schema)


def _write_sorted(root: Path, table_dir: Path, bucket: int, rows: pa.Table) -> StagingFile | None:
    if rows.num_rows == 0:
        return None
    order = pc.sort_indices(rows, sort_keys=[("_id", "ascending")])
    return write_bucket_file(root, table_dir, bucket, rows.take(order))


def _grow(root: Path, table_dir: Path, update: TableUpdate, rows_per_bucket: int) -> None:
    """Redistribute the whole table over more buckets (rare; see staging_buckets)."""
    table = update.table
    schema = arrow_schema(table.columns)
    rows = pa.concat_tables(
        [read_bucket_file(root, f, schema=schema) for f in table.files]
    ).combine_chunks()
    buckets = buckets_for(table.row_count, rows_per_bucket)
    groups = positions_by_bucket(rows.column("_id").to_pylist(), buckets)
    before = {f.path for f in table.files}
    new_files: list[StagingFile] = []
    for bucket, positions in sorted(groups.items()):
        new_file = _write_sorted(
            root, table_dir, bucket, rows.take(pa.array(positions, pa.int64()))
        )
        assert new_file is not None  # every group has rows
        new_files.append(new_file)
        if new_file.path not in before:
            update.written.append(new_file)
    update.table = replace(table, buckets=buckets, files=tuple(new_files))


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)
