"""Apply one table's new change events to its staging segments.

Rows are built by the target-agnostic builder of :mod:`convex_cdc.core.current_state`
(the same one silver uses); this module decides which of them win against the segment
files staging already holds (:mod:`.segments`), and rewrites those files. Two phases:

1. **Type**: the events are read one raw batch at a time and typed in chunks of
   :data:`CHUNK_ROWS` (``parse_fields``, ``observed_column_types``, ``typed_rows``; the
   parsed documents are dropped right after each chunk). The typed upserts are spilled to
   disk in creation order and the deletes kept aside (:mod:`.incoming`), so memory holds
   one chunk of parsed documents whatever the step's size. The columns evolve as chunks
   come; the table's final columns are known when this phase ends.
2. **Lay out**: a segment is rewritten when new rows fall in its creation-time range, when
   it holds an id the step deletes (found from its ``_id`` column alone), or when the
   columns changed (every file gets the final columns, ``conform``: the same values a
   single pass would give). Each rewrite (:mod:`.segment_merge`) is Arrow work without
   the GIL, run in a small thread pool. A segment that would hold more than
   ``SPLIT_FACTOR`` times the target is cut at creation times chosen up front, and each
   part is merged on its own, so a bulk load (the first snapshot of a large table) is
   laid out one target-sized segment at a time.

Staging keeps no tombstones, so an upsert older than a delete applied in an *earlier*
materialize would bring the row back. Convex delivers deltas in timestamp order, so this
only guards against disorder inside the batches of one run, where it is exact.

Every version of a document carries the same ``_creationTime`` (Convex never changes it),
which is what lets an update find the segment holding the previous version.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import numpy as np
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
    observed_column_types,
    parse_fields,
    single_chunk,
    typed_rows,
)
from convex_cdc.core.document_columns import paused_gc
from convex_cdc.core.errors import TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.staging.incoming import ORDER_COLUMN, IncomingRows
from convex_cdc.target_s3.staging.segment_merge import MergedSegment, SegmentMerge
from convex_cdc.target_s3.staging.segments import (
    ROWS_PER_SEGMENT,
    SPLIT_FACTOR,
    creation_times,
    read_segment_file,
    segment_starts,
)
from convex_cdc.target_s3.staging.state import StagingFile, StagingTable

EVENT_COLUMNS = ["_id", "_ts", "_deleted", "document"]
"""The raw change log columns the materializer reads."""

CHUNK_ROWS: Final = 65_536
"""Events parsed at once (memory: their parsed documents)."""
REWRITE_THREADS: Final = 2
"""Segments read, merged and written at once (pyarrow releases the GIL for that work)."""
WORK_DIR_PREFIX: Final = ".incoming-"
"""Temporary spill directories under ``staging/`` (a crashed run's are removed)."""


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


def empty_table(key: TableKey, table_dir: str) -> StagingTable:
    """A table with no rows and only the system columns."""
    return StagingTable(
        key=key,
        dir=table_dir,
        row_count=0,
        last_batch=0,
        columns=column_specs({}),
        files=(),
    )


@dataclass(frozen=True, slots=True)
class _Range:
    """A segment's creation-time range ``[low, high)`` and the file holding it now."""

    number: int
    low: float
    high: float
    file: StagingFile | None


@paused_gc()  # parsed documents are many small objects the collector would scan again
def apply_table_events(
    root: Path,
    table_dir: Path,
    current: StagingTable,
    batches: Iterable[pa.Table],
    *,
    batch: int,
    schema_fingerprint: str | None,
    rows_per_segment: int = ROWS_PER_SEGMENT,
) -> TableUpdate:
    """Apply ``batches`` (raw change log rows of one table, batch by batch, in order) to
    ``current``.

    New files are durable when this returns; nothing is deleted (the caller removes
    ``obsolete`` after saving the state that no longer lists them).

    Raises:
        TargetError: a document cannot be typed (not valid export_json).
        StateError: a listed staging file is missing or damaged.
    """
    table_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX, dir=table_dir.parent))
    try:
        incoming = IncomingRows(work)
        old_columns = user_columns(current.columns)
        seen = _type_events(incoming, batches, old_columns, batch=batch, key=current.key)
        new_columns, widenings = evolve_columns(old_columns, seen, batch=batch)
        merged = _lay_out(
            root, table_dir, current, incoming, old_columns, new_columns, rows_per_segment
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    update = TableUpdate(table=current, widenings=widenings)
    files: list[StagingFile] = []
    for segment in merged:
        if isinstance(segment, StagingFile):
            files.append(segment)
            continue
        update.upserted += segment.upserted
        update.deleted += segment.deleted
        files.extend(segment.files)
    before = {f.path for f in current.files}
    update.written = [f for f in files if f.path not in before]
    listed = {f.path for f in files}
    update.obsolete = sorted(path for path in before if path not in listed)
    update.table = replace(
        current,
        row_count=sum(f.rows for f in files),
        last_batch=batch,
        columns=column_specs(new_columns),
        files=tuple(files),
        schema_fingerprint=schema_fingerprint or current.schema_fingerprint,
        widenings=current.widenings + tuple(widenings),
    )
    return update


def _type_events(
    incoming: IncomingRows,
    batches: Iterable[pa.Table],
    columns: dict[str, ColumnType],
    *,
    batch: int,
    key: TableKey,
) -> dict[str, ColumnType]:
    """Phase 1: spill every event of ``batches``; → the user column types seen."""
    columns = dict(columns)
    seen: dict[str, ColumnType] = {}
    arrived = 0
    for batch_events in batches:
        events = single_chunk(batch_events.select(EVENT_COLUMNS))
        for start in range(0, events.num_rows, CHUNK_ROWS):
            chunk = events.slice(start, CHUNK_ROWS)
            order = pa.array(np.arange(arrived, arrived + chunk.num_rows, dtype=np.int64))
            arrived += chunk.num_rows
            deleted = chunk.column("_deleted")
            if pc.any(deleted).as_py():
                incoming.add_deletes(
                    chunk.select(["_id", "_ts"]).append_column(ORDER_COLUMN, order).filter(deleted)
                )
                upserting = pc.invert(deleted)
                chunk, order = chunk.filter(upserting), order.filter(upserting)
            if not chunk.num_rows:
                continue
            fields = _parse(chunk, key)
            chunk_types = _column_types(fields, key)
            seen = join_column_types(seen, chunk_types)
            columns, _ = evolve_columns(columns, chunk_types, batch=batch)
            rows = _typed_rows(chunk, fields, column_specs(columns), key)
            del fields  # the parsed documents; only the typed rows are kept
            incoming.add_upserts(rows.append_column(ORDER_COLUMN, order), columns)
    return seen


def _lay_out(  # noqa: PLR0917 - private, called once, every argument different
    root: Path,
    table_dir: Path,
    current: StagingTable,
    incoming: IncomingRows,
    old_columns: dict[str, ColumnType],
    new_columns: dict[str, ColumnType],
    rows_per_segment: int,
) -> list[StagingFile | MergedSegment]:
    """Phase 2: every segment's file in creation order, the touched ones rewritten."""
    old_schema = arrow_schema(current.columns)
    deletes = incoming.deletes()
    columns_changed = new_columns != old_columns
    out: list[StagingFile | MergedSegment | list[Future[MergedSegment]]] = []
    with ThreadPoolExecutor(REWRITE_THREADS, thread_name_prefix="staging") as pool:
        for segment in _ranges(current.files):
            count = incoming.count(segment.low, segment.high)
            old = segment.file
            touched = (
                count > 0
                or columns_changed
                or (old is not None and _holds_any(root, old, old_schema, deletes))
            )
            if not touched:
                if old is not None:  # (an empty table's one range has no file)
                    out.append(old)
                continue
            held = 0 if old is None else old.rows
            parts = [(segment.low, segment.high)]
            if held + count > SPLIT_FACTOR * rows_per_segment:
                parts = _cut(root, segment, old_schema, incoming, rows_per_segment)
            out.append(
                [
                    pool.submit(
                        SegmentMerge(
                            root=root,
                            table_dir=table_dir,
                            number=segment.number,
                            old_file=old,
                            old_schema=old_schema,
                            old_columns=old_columns,
                            columns=new_columns,
                            incoming=incoming,
                            deletes=deletes,
                            low=low,
                            high=high,
                            rows_per_segment=rows_per_segment,
                            split_old_file=len(parts) > 1,
                        ).run
                    )
                    for low, high in parts
                ]
            )
        return [
            result
            for entry in out
            for result in (
                [future.result() for future in entry] if isinstance(entry, list) else [entry]
            )
        ]


def _ranges(files: tuple[StagingFile, ...]) -> Iterator[_Range]:
    """Each segment's range; a table without files is one empty range over everything."""
    if not files:
        yield _Range(0, -np.inf, np.inf, None)
        return
    starts = segment_starts(files)
    bounds = [-np.inf, *starts.tolist(), np.inf]
    for number, file in enumerate(files):
        yield _Range(number, bounds[number], bounds[number + 1], file)


def _holds_any(root: Path, file: StagingFile, schema: pa.Schema, deletes: pa.Table) -> bool:
    """Whether ``file`` holds one of the deleted ids (reads its ``_id`` column only)."""
    if not len(deletes):
        return False
    ids = read_segment_file(root, file, schema=schema, columns=["_id"]).column("_id")
    return bool(pc.any(pc.is_in(ids, value_set=deletes.column("_id"))).as_py())


def _cut(
    root: Path,
    segment: _Range,
    schema: pa.Schema,
    incoming: IncomingRows,
    rows_per_segment: int,
) -> list[tuple[float, float]]:
    """``segment``'s range cut into parts of about ``rows_per_segment`` rows, counting
    what it holds and the new rows (only creation times are read)."""
    times = [incoming.times(segment.low, segment.high)]
    if segment.file is not None:
        held = read_segment_file(root, segment.file, schema=schema, columns=["_creationTime"])
        times.append(creation_times(held.column("_creationTime")))
    every = np.concatenate(times)
    every.sort()  # in place: the range's times are the table's on a bulk load (8 B a row)
    cuts = np.unique(every[rows_per_segment::rows_per_segment])
    inner = [float(c) for c in cuts if segment.low < c < segment.high]
    bounds = [segment.low, *inner, segment.high]
    return list(itertools.pairwise(bounds))


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
