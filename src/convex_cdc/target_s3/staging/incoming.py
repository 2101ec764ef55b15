"""The new rows of one table in one materialize step, spilled to disk in creation order.

The materializer first reads a table's new change events batch by batch and types the
upserts in chunks (:mod:`.merge`); each chunk's typed rows go to a temporary Arrow IPC
file here, sorted by ``(_creationTime, _id)``, and only their creation times stay in
memory (8 bytes a row). Deletes carry no document, hence no creation time: their
``_id``/``_ts`` stay in memory until the segments holding those ids are found.

Every event keeps its arrival position (``_order``), so the segment merge can pick the
last version of each document across chunks and against what staging holds: highest
``_ts`` wins, the later arrival on a tie.

Memory is thus bounded by one chunk of parsed documents plus one segment being rewritten,
whatever the step's size: a 10M-document snapshot is typed in chunks and laid out segment
by segment, never held whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa

from convex_cdc.core.columns import UserColumns, conform
from convex_cdc.target_s3.staging.segments import Floats, creation_times, in_creation_order

ORDER_COLUMN: Final = "_order"
"""Arrival position of an event within the step (not a staging column)."""
SPILL_BATCH_ROWS: Final = 1024
"""Rows per record batch of a spill file: a range read decodes at most two batches more
than it needs from each chunk."""

DELETE_SCHEMA: Final = pa.schema(
    [
        pa.field("_id", pa.string(), nullable=False),
        pa.field("_ts", pa.int64(), nullable=False),
        pa.field(ORDER_COLUMN, pa.int64(), nullable=False),
    ]
)


@dataclass(frozen=True, slots=True)
class IncomingChunk:
    """One spilled chunk: typed rows in creation order, with their arrival positions."""

    path: Path
    columns: UserColumns
    """The user columns the rows were typed with (later chunks may have widened them)."""
    times: Floats
    """The rows' creation times, ascending, nulls as ``-inf``."""

    def bounds(self, low: float, high: float) -> tuple[int, int]:
        """Row positions ``[start, stop)`` of the creation times in ``[low, high)``."""
        start = int(np.searchsorted(self.times, low, side="left"))
        stop = int(np.searchsorted(self.times, high, side="left"))
        return start, stop

    def read(self, start: int, stop: int) -> pa.Table:
        """Rows ``[start, stop)`` in their own buffers, reading only the (small) record
        batches that hold them.

        A segment of a bulk load takes a small slice of every chunk, so the batches are
        small: decoding whole large batches, or memory-mapping the files (the kernel maps
        pages around each touched one, for every column), held several times the segment.
        A slice keeps the batches it was cut from alive, and a segment takes a slice of
        every chunk, whose number grows with the step: a 2.5M-row table in 16k-row raw
        batches spills 150 chunks, and a segment's ~650 rows of each kept 1-2 batches of
        1024 (three times the segment). So a slice that is less than half of what was
        decoded is copied out, and the batches dropped: what a read keeps is at most
        twice the rows it returns, however many chunks there are.
        """
        first, last = start // SPILL_BATCH_ROWS, (stop - 1) // SPILL_BATCH_ROWS
        with pa.OSFile(str(self.path), "rb") as source:
            reader = pa.ipc.open_file(source)
            batches = [reader.get_batch(i) for i in range(first, last + 1)]
            rows = pa.Table.from_batches(batches, schema=reader.schema)
        rows = rows.slice(start - first * SPILL_BATCH_ROWS, stop - start)
        if 2 * rows.num_rows >= (last + 1 - first) * SPILL_BATCH_ROWS:
            return rows
        # ChunkedArray.combine_chunks copies even a lone chunk (Table.combine_chunks
        # would keep it as the view it is).
        return pa.table([column.combine_chunks() for column in rows.columns], schema=rows.schema)


@dataclass(slots=True)
class IncomingRows:
    """The step's new rows of one table: upserts spilled in chunks, deletes in memory."""

    directory: Path
    chunks: list[IncomingChunk] = field(default_factory=list)
    _deletes: list[pa.Table] = field(default_factory=list)

    def add_upserts(self, rows: pa.Table, columns: UserColumns) -> None:
        """Spill typed rows (staging columns plus ``_order``) typed with ``columns``."""
        if not rows.num_rows:
            return
        rows = in_creation_order(rows)
        path = self.directory / f"chunk-{len(self.chunks):06d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
            writer.write_table(rows, max_chunksize=SPILL_BATCH_ROWS)
        times = creation_times(rows.column("_creationTime"))
        self.chunks.append(IncomingChunk(path, dict(columns), times))

    def add_deletes(self, deletes: pa.Table) -> None:
        """Keep deletes (``_id``, ``_ts``, ``_order``) until their segments are found."""
        if deletes.num_rows:
            self._deletes.append(deletes.select(DELETE_SCHEMA.names).cast(DELETE_SCHEMA))

    def deletes(self) -> pa.Table:
        """Every delete of the step, in arrival order."""
        if not self._deletes:
            return DELETE_SCHEMA.empty_table()
        return pa.concat_tables(self._deletes).combine_chunks()

    def count(self, low: float, high: float) -> int:
        """Upserts with a creation time in ``[low, high)``."""
        return sum(stop - start for start, stop in (c.bounds(low, high) for c in self.chunks))

    def times(self, low: float, high: float) -> Floats:
        """Creation times of the upserts in ``[low, high)`` (not sorted across chunks)."""
        parts = [c.times[slice(*c.bounds(low, high))] for c in self.chunks]
        return np.concatenate(parts) if parts else np.empty(0, np.float64)

    def rows(self, low: float, high: float, columns: UserColumns) -> pa.Table | None:
        """Upserts with a creation time in ``[low, high)``, brought to ``columns``, with
        ``_order``; ``None`` if there are none."""
        parts = []
        for chunk in self.chunks:
            start, stop = chunk.bounds(low, high)
            if start == stop:
                continue
            rows = chunk.read(start, stop)
            order = rows.column(ORDER_COLUMN)
            rows = conform(rows, chunk.columns, columns)
            parts.append(rows.append_column(ORDER_COLUMN, order))
        if not parts:
            return None
        # One copy of just these rows (and the spill files' pages can go): taking from
        # one chunk is far cheaper than from one per spilled chunk.
        return pa.concat_tables(parts).combine_chunks()
