"""One segment's rewrite: its rows in a creation-time range, merged with the new events.

The rows a segment holds in ``[low, high)`` are in creation order and unique. The step's
upserts in that range, the deletes whose ids are among those rows or upserts, and the held
rows those events are about (the contested ones) are sorted together by
``(_creationTime, _id, _ts, _order)``. Every version of a document has the same creation
time, so its versions end up next to each other and the last of each run wins: the
highest ``_ts``, the later arrival on a tie (what staging held counts as the earliest
arrival, so a replayed event, which carries the same ``_ts``, wins and changes nothing).
A winning delete removes the document. Held rows that lost are dropped, and the new
winners are interleaved with the rest by sorting only their keys, then gathering the
segment's rows with one ``take`` (the one copy of the segment a rewrite makes).

Pure Arrow and numpy work (read, sort, take, encode), which releases the GIL, so the
materializer runs several of these in a thread pool.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.columns import UserColumns, conform
from convex_cdc.core.current_state import last_of_runs
from convex_cdc.target_s3.staging.incoming import ORDER_COLUMN, IncomingRows
from convex_cdc.target_s3.staging.segments import (
    CREATION_ORDER,
    SPLIT_FACTOR,
    creation_times,
    read_segment_file,
    write_segment_file,
)
from convex_cdc.target_s3.staging.state import StagingFile

_MERGE_ORDER = [
    ("_creationTime", "ascending", "at_start"),
    ("_id", "ascending"),
    ("_ts", "ascending"),
    (ORDER_COLUMN, "ascending"),
]
_HELD: int = -1
"""The ``_order`` of a row staging already holds: earlier than every new event."""


@dataclass(slots=True)
class MergedSegment:
    """What :meth:`SegmentMerge.run` wrote."""

    files: list[StagingFile] = field(default_factory=list)
    """In creation order; empty when no row is left in the range."""
    upserted: int = 0
    """New versions that won."""
    deleted: int = 0
    """Rows staging held that a winning delete removed."""


@dataclass(frozen=True, slots=True)
class SegmentMerge:
    """Rewrite the rows of ``old_file`` in ``[low, high)`` with the step's events."""

    root: Path
    table_dir: Path
    number: int
    """The segment's position, for the file name."""
    old_file: StagingFile | None
    old_schema: pa.Schema
    old_columns: UserColumns
    columns: UserColumns
    """The table's columns after the step."""
    incoming: IncomingRows
    deletes: pa.Table
    """Every delete of the step (``_id``, ``_ts``, ``_order``); only those of ids in the
    range apply."""
    low: float
    high: float
    rows_per_segment: int
    split_old_file: bool = False
    """``old_file`` spans more than ``[low, high)`` (the segment is being cut up)."""

    def run(self) -> MergedSegment:
        """Write the range's new files."""
        result = MergedSegment()
        rows = self._merged(self._held_rows(), result)
        if rows is None or not rows.num_rows:
            return result  # nothing (left) in the range: no file
        for piece in _pieces(rows, self.rows_per_segment):
            result.files.append(write_segment_file(self.root, self.table_dir, self.number, piece))
        return result

    def _held_rows(self) -> pa.Table | None:
        """What the segment holds in the range, with the table's final columns."""
        if self.old_file is None:
            return None
        rows = read_segment_file(self.root, self.old_file, schema=self.old_schema)
        if self.split_old_file:
            times = creation_times(rows.column("_creationTime"))
            start = int(np.searchsorted(times, self.low, side="left"))
            stop = int(np.searchsorted(times, self.high, side="left"))
            rows = rows.slice(start, stop - start)
        return conform(rows, self.old_columns, self.columns)

    def _merged(self, held: pa.Table | None, result: MergedSegment) -> pa.Table | None:
        """``held`` with the range's events applied, in creation order; counts what won
        into ``result``. Only the contested documents are sorted against each other (the
        held rows are in order and unique already)."""
        new = self.incoming.rows(self.low, self.high, self.columns)
        if new is None and held is None:
            return None
        held_keys = _keys(held, _HELD, 0)
        new_keys = _keys(new, None, held_keys.num_rows)
        both = pa.concat_tables([held_keys, new_keys])
        found = pc.index_in(self.deletes.column("_id"), value_set=both.column("_id"))
        relevant = pc.is_valid(found)
        deletes = self.deletes.filter(relevant)
        delete_keys = pa.table(
            {
                "_creationTime": both.column("_creationTime").take(found.filter(relevant)),
                "_id": deletes.column("_id"),
                "_ts": deletes.column("_ts"),
                ORDER_COLUMN: deletes.column(ORDER_COLUMN),
                "position": pa.repeat(pa.scalar(-1, pa.int64()), len(deletes)),
            }
        )
        n_held = held_keys.num_rows
        if new is None and not len(deletes):
            return held  # only the columns changed
        # The held rows some event is about; every new row and delete takes part.
        events = pa.concat_arrays(
            [new_keys.column("_id").combine_chunks(), deletes.column("_id").combine_chunks()]
        )
        contested = held_keys.filter(pc.is_in(held_keys.column("_id"), value_set=events))
        keys = pa.concat_tables([contested, new_keys, delete_keys])
        ordered = keys.take(pc.sort_indices(keys, sort_keys=_MERGE_ORDER))
        last = np.asarray(last_of_runs(ordered.column("_id")).to_numpy(zero_copy_only=False))
        positions = np.asarray(ordered.column("position").to_numpy())
        arrival = np.asarray(ordered.column(ORDER_COLUMN).to_numpy())
        is_held = arrival == _HELD
        if len(deletes):
            runs = np.flatnonzero(np.concatenate([[True], last[:-1]]))
            had_held = np.logical_or.reduceat(is_held, runs)
            result.deleted = int(np.count_nonzero(had_held & (positions[last] < 0)))
        # Held rows that lost to an event; new rows that won (in creation order).
        lost = positions[is_held & ~last]
        won = positions[last & ~is_held & (positions >= 0)] - n_held
        result.upserted = len(won)
        added = None
        if len(won):
            assert new is not None  # a new row won
            added = new.drop_columns([ORDER_COLUMN]).take(pa.array(won, pa.int64()))
        if held is None:
            return added
        kept = np.ones(n_held, dtype=bool)
        kept[lost] = False
        if added is None:
            return held.filter(pa.array(kept)) if len(lost) else held
        return _interleaved(held, np.flatnonzero(kept), added)


def _interleaved(held: pa.Table, kept: npt.NDArray[np.int64], added: pa.Table) -> pa.Table:
    """The ``kept`` rows of ``held`` and every row of ``added`` (both in creation order)
    in creation order, gathered in one ``take``: only the keys are sorted, and the
    segment's rows are copied once."""
    at = pa.array(kept, pa.int64())
    keys = pa.table(
        {
            "_creationTime": pa.concat_arrays(
                [
                    held.column("_creationTime").take(at).combine_chunks(),
                    added.column("_creationTime").combine_chunks(),
                ]
            ),
            "_id": pa.concat_arrays(
                [
                    held.column("_id").take(at).combine_chunks(),
                    added.column("_id").combine_chunks(),
                ]
            ),
        }
    )
    order = pc.sort_indices(keys, sort_keys=CREATION_ORDER).to_numpy()
    positions = np.concatenate([kept, held.num_rows + np.arange(added.num_rows)])[order]
    return pa.concat_tables([held, added]).take(pa.array(positions, pa.int64()))


def _keys(rows: pa.Table | None, arrival: int | None, offset: int) -> pa.Table:
    """The merge keys of ``rows``: creation time, id, ``_ts``, arrival (``arrival``, or
    the rows' ``_order``) and position (from ``offset`` on)."""
    if rows is None:
        return pa.table(
            {
                "_creationTime": pa.array([], pa.float64()),
                "_id": pa.array([], pa.string()),
                "_ts": pa.array([], pa.int64()),
                ORDER_COLUMN: pa.array([], pa.int64()),
                "position": pa.array([], pa.int64()),
            }
        )
    n = rows.num_rows
    order = (
        pa.repeat(pa.scalar(arrival, pa.int64()), n)
        if arrival is not None
        else rows.column(ORDER_COLUMN)
    )
    return pa.table(
        {
            "_creationTime": rows.column("_creationTime"),
            "_id": rows.column("_id"),
            "_ts": rows.column("_ts"),
            ORDER_COLUMN: order,
            "position": pa.array(np.arange(offset, offset + n, dtype=np.int64)),
        }
    )


def _pieces(rows: pa.Table, target: int) -> list[pa.Table]:
    """``rows`` cut into pieces of about ``target`` rows once they hold more than
    :data:`SPLIT_FACTOR` times that, never between two equal creation times (a document's
    next version must find the segment that holds it)."""
    n = rows.num_rows
    if n <= SPLIT_FACTOR * target:
        return [rows]
    times = creation_times(rows.column("_creationTime"))
    count = math.ceil(n / target)
    cuts = sorted(
        {int(np.searchsorted(times, times[n * k // count], side="left")) for k in range(1, count)}
    )
    bounds = [0, *[c for c in cuts if 0 < c < n], n]
    return [rows.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]
