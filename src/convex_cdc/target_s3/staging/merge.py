"""Apply one table's new change events to its staging buckets.

Rows are built by the target-agnostic builder of :mod:`convex_cdc.core.current_state`
(the same one silver uses); this module decides which of them win against the bucket
files staging already holds, and rewrites those files. The steps, all column work except
parsing the *new* documents:

1. Keep the last event per ``_id`` among the new ones (``latest_positions``).
2. Per touched bucket, read only ``_id``/``_ts`` of the existing file and decide who
   wins each id: the highest ``_ts``, a new event on a tie (a replay carries the same
   version). New events older than what staging holds lose.
3. Parse the bucket's winning upserts, evolve the columns, build their typed rows
   (``parse_fields``, ``observed_column_types``, ``typed_rows``; the parsed documents
   are dropped right away, so memory holds one bucket's documents).
4. Rewrite the bucket: existing rows minus the ids the new events won (``is_in``), plus
   the new rows, sorted by ``_id``. That is Arrow work without the GIL, so it runs in a
   small thread pool while the next bucket is parsed.

A bucket is written with the columns known when it was typed. If a later bucket adds or
widens a column, the earlier ones are rewritten with the final columns (``conform``:
the same values a single pass would give), and every untouched bucket is too.

Staging keeps no tombstones, so an upsert older than a delete applied in an *earlier*
materialize would bring the row back. Convex delivers deltas in timestamp order, so this
only guards against disorder inside the batches of one run, where it is exact.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.columns import (
    ColumnSpec,
    Widening,
    arrow_schema,
    column_specs,
    evolve_columns,
    join_column_types,
    user_columns,
)
from convex_cdc.core.current_state import (
    DocumentError,
    DocumentFields,
    last_of_runs,
    latest_positions,
    observed_column_types,
    parse_fields,
    single_chunk,
    typed_rows,
    upserts_only,
)
from convex_cdc.core.document_columns import paused_gc
from convex_cdc.core.errors import TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.staging.bucket_rewrite import BucketRewrite, RewrittenBucket
from convex_cdc.target_s3.staging.buckets import (
    ROWS_PER_BUCKET,
    bucket_numbers,
    buckets_for,
    needs_growth,
    newest_ts,
    read_bucket_file,
    sorted_by_id,
    write_bucket_file,
)
from convex_cdc.target_s3.staging.state import StagingFile, StagingTable

EVENT_COLUMNS = ["_id", "_ts", "_deleted", "document"]
"""The raw change log columns the materializer reads."""

REWRITE_THREADS: Final = 2
"""Buckets read, merged and written at once (pyarrow releases the GIL for that work)."""


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
    truncated: bool = False
    """A truncate emptied the table before these events (set by the materializer)."""

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


@paused_gc()  # the parsed documents of a whole table are alive until it is written
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
        TargetError: a document cannot be typed (not valid export_json).
        StateError: a listed staging file is missing or damaged.
    """
    events = single_chunk(events.select(EVENT_COLUMNS))
    # 1. The last new event per id, grouped by bucket.
    winners = latest_positions(events)
    numbers = bucket_numbers(events.column("_id").take(winners), current.buckets)
    old_columns = user_columns(current.columns)
    old_schema = arrow_schema(current.columns)
    files = {f.bucket: f for f in current.files}
    update = TableUpdate(table=current)

    with ThreadPoolExecutor(REWRITE_THREADS, thread_name_prefix="staging") as pool:
        # 2.-4. per touched bucket; a bucket is written as soon as it is typed, with the
        # columns known so far (almost always the final ones).
        columns = dict(old_columns)
        seen: dict[str, ColumnType] = {}
        pending: dict[int, tuple[BucketRewrite, Future[RewrittenBucket]]] = {}
        for bucket in sorted(pc.unique(numbers).to_pylist()):
            candidates = events.take(winners.filter(pc.equal(numbers, bucket)))
            existing = files.get(bucket)
            if existing is not None and not _all_newer(root, existing, candidates):
                keys = read_bucket_file(root, existing, schema=old_schema, columns=["_id", "_ts"])
                candidates = candidates.filter(_newer_than(candidates, keys))
            if not candidates.num_rows:
                continue
            new_rows = None
            upserts = upserts_only(candidates)
            if upserts.num_rows:
                fields = _parse(upserts, current.key)
                bucket_types = _column_types(fields, current.key)
                seen = join_column_types(seen, bucket_types)
                columns, _ = evolve_columns(columns, bucket_types, batch=batch)
                new_rows = _typed_rows(upserts, fields, column_specs(columns), current.key)
                update.upserted += new_rows.num_rows
                del fields  # the parsed documents; only the typed rows are kept
            job = BucketRewrite(
                root,
                table_dir,
                bucket,
                existing,
                old_schema,
                old_columns,
                columns,
                candidates.select(["_id", "_deleted"]),
                new_rows,
                columns,
            )
            pending[bucket] = (job, pool.submit(job.run))

        new_columns, widenings = evolve_columns(old_columns, seen, batch=batch)
        update.widenings = widenings
        if new_columns != old_columns:  # every file gets the new columns
            for bucket, existing in files.items():
                if bucket not in pending:
                    job = BucketRewrite(
                        root, table_dir, bucket, existing, old_schema, old_columns, new_columns
                    )
                    pending[bucket] = (job, pool.submit(job.run))
        final: dict[int, StagingFile] = {b: f for b, f in files.items() if b not in pending}
        results = {bucket: future.result() for bucket, (_, future) in pending.items()}
        # A bucket written before a later one changed the columns is redone with them.
        redo = {
            bucket: pool.submit(replace(job, columns=new_columns).run)
            for bucket, (job, _) in pending.items()
            if job.columns != new_columns
        }
        interim: list[str] = []  # the first files of redone buckets: never listed
        for bucket in redo:
            written = results[bucket].file
            if written is not None and written != files.get(bucket):
                interim.append(written.path)
        results.update((bucket, future.result()) for bucket, future in redo.items())
    for bucket, result in sorted(results.items()):
        update.deleted += result.deleted
        if result.file is not None:
            final[bucket] = result.file
            if result.file != files.get(bucket):
                update.written.append(result.file)
    specs = column_specs(new_columns)

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
    candidates = [f.path for f in current.files] + [f.path for f in update.written] + interim
    update.obsolete = sorted({path for path in candidates if path not in listed})
    return update


def _all_newer(root: Path, existing: StagingFile, candidates: pa.Table) -> bool:
    """Whether every candidate is at least as new as everything in ``existing`` (then all
    of them win, and the file's ids need not be read): the usual case for deltas."""
    newest = newest_ts(root, existing)
    oldest = pc.min(candidates.column("_ts")).as_py()
    return newest is not None and oldest is not None and oldest >= newest


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
    winners = ordered.filter(last_of_runs(ordered.column("_id")))
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


def _parse(upserts: pa.Table, key: TableKey) -> DocumentFields:
    """The documents of ``upserts`` as value lists per field."""
    try:
        return parse_fields(upserts)
    except DocumentError as exc:
        raise TargetError(
            f"raw change log holds an unreadable document {exc.doc_id} in table {key}",
            hint="restore raw_change_log from a backup, or run `sync --resnapshot`",
        ) from None


def _column_types(fields: DocumentFields, key: TableKey) -> dict[str, ColumnType]:
    try:
        return observed_column_types(fields)
    except TypeError as exc:
        raise _untypable(exc, key) from exc


def _typed_rows(
    upserts: pa.Table, fields: DocumentFields, columns: tuple[ColumnSpec, ...], key: TableKey
) -> pa.Table:
    try:
        return typed_rows(upserts, fields, columns)
    except DocumentError as exc:
        raise _untypable(exc, key) from exc


def _untypable(exc: Exception, key: TableKey) -> TargetError:
    return TargetError(
        f"cannot type a document of table {key} in this batch: {exc}",
        hint="the raw change log holds a value convex-cdc cannot map; report it",
    )


def _grow(root: Path, table_dir: Path, update: TableUpdate, rows_per_bucket: int) -> None:
    """Redistribute the whole table over more buckets (rare; see staging_buckets)."""
    table = update.table
    schema = arrow_schema(table.columns)
    rows = pa.concat_tables(
        [read_bucket_file(root, f, schema=schema) for f in table.files]
    ).combine_chunks()
    buckets = buckets_for(table.row_count, rows_per_bucket)
    numbers = bucket_numbers(rows.column("_id"), buckets)
    before = {f.path for f in table.files}
    with ThreadPoolExecutor(REWRITE_THREADS, thread_name_prefix="staging") as pool:
        pending = [
            pool.submit(_write_part, root, table_dir, b, rows.filter(pc.equal(numbers, b)))
            for b in sorted(pc.unique(numbers).to_pylist())
        ]
        new_files = [future.result() for future in pending]
    update.written.extend(f for f in new_files if f.path not in before)
    update.table = replace(table, buckets=buckets, files=tuple(new_files))


def _write_part(root: Path, table_dir: Path, bucket: int, rows: pa.Table) -> StagingFile:
    return write_bucket_file(root, table_dir, bucket, sorted_by_id(rows))
