"""Loading a silver table that starts empty: appends for new keys, MERGE for the others.

A MERGE reads and rewrites the silver files its source keys may match; when silver is
being built from empty (a rebuild, or the rows after a truncate), every window's MERGE
would face the whole table built so far, which makes a build quadratic. While a table is
loaded from empty, :class:`LoadedKeys` records every key written so far (to silver or to
the tombstones). A window's keys that are not recorded cannot be in either table, so their
latest event is simply appended (an upsert to silver, a delete to the tombstones), which
is what the MERGE would have done; the recorded keys go through :func:`.merge_window`.

The record holds a 64-bit hash per key, not the key: a collision only sends a new key to
the MERGE (still correct), and a recorded key is never missed. Python's ``hash`` of a str
is stable within one process, and the record never outlives the run that built it.

Appends are not guarded by ``_ts`` like the MERGEs, so they are only safe into tables that
this run emptied: a run that stops half-way records no progress for the table, and the
next run empties it again before loading (see :mod:`.silver`).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from convex_cdc.core.current_state import latest_events
from convex_cdc.platform.databricks.silver_merge import (
    CHANGE_COLUMNS,
    TOMBSTONE_SCHEMA,
    MergeCounts,
    merge_window,
    silver_rows,
)
from convex_cdc.platform.databricks.table_spec import TableSpec

_Hashes = npt.NDArray[np.int64]

_MIN_CAPACITY: Final = 1 << 16


class LoadedKeys:
    """The keys written to a silver table (or its tombstones) since it was emptied.

    8 bytes per key: a sorted array of 64-bit hashes of the ``_id`` strings, kept in a
    buffer of ``capacity`` hashes. Give the number of bronze rows about to be loaded (an
    upper bound on the keys): the buffer is then never copied to grow, and its pages
    become resident only as hashes fill them.
    """

    def __init__(self, capacity: int = 0) -> None:
        self._buffer: _Hashes = np.empty(max(capacity, _MIN_CAPACITY), np.int64)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def recorded(self, hashes: _Hashes) -> npt.NDArray[np.bool_]:
        """True where a hash is recorded (the key, or one sharing its hash, was loaded)."""
        known = self._buffer[: self._count]
        if not len(known):
            return np.zeros(len(hashes), np.bool_)
        at = np.searchsorted(known, hashes)
        at[at == len(known)] = 0
        found: npt.NDArray[np.bool_] = known[at] == hashes
        return found

    def record(self, hashes: _Hashes) -> None:
        """Add ``hashes`` (duplicates are harmless)."""
        count = self._count + len(hashes)
        if count > len(self._buffer):
            grown = np.empty(max(count, 2 * len(self._buffer)), np.int64)
            grown[: self._count] = self._buffer[: self._count]
            self._buffer = grown
        self._buffer[self._count : count] = np.sort(hashes)
        # Two sorted runs: the stable sort (timsort) merges them in place, in linear time
        # and with a scratch buffer the size of the new run only.
        self._buffer[:count].sort(kind="stable")
        self._count = count


def key_hashes(ids: pa.Array | pa.ChunkedArray) -> _Hashes:
    """A 64-bit hash of every ``_id`` (stable within this process only)."""
    return np.fromiter(map(hash, ids.to_pylist()), np.int64, count=len(ids))


def load_window(
    silver: DeltaTable,
    tombstones: DeltaTable,
    changes: pa.Table,
    spec: TableSpec,
    loaded: LoadedKeys,
) -> MergeCounts:
    """Apply one window to a table loaded from empty, recording its keys in ``loaded``.

    Same result as :func:`.merge_window` given that silver and the tombstones hold exactly
    the keys of ``loaded`` (plus collisions): keys not loaded yet are appended (one commit
    per table), the others merged.

    Raises:
        SpecNotCovered: before anything is written, if the spec must be widened first.
    """
    latest = latest_events(changes.select(list(CHANGE_COLUMNS)))
    if latest.num_rows == 0:
        return MergeCounts(0, 0, 0, 0)
    hashes = key_hashes(latest.column("_id"))
    seen = loaded.recorded(hashes)
    new = latest.filter(pa.array(~seen))
    # Typed before anything is written, so a spec that must widen leaves both tables as
    # they were (the MERGE below checks its own rows the same way).
    rows = silver_rows(new, spec) if new.num_rows else None
    merged = MergeCounts(0, 0, 0, 0)
    if seen.any():
        merged = merge_window(silver, tombstones, latest.filter(pa.array(seen)), spec)
    del latest, new
    if rows is None:
        return merged
    deleted = rows.column("_deleted")
    upserts = rows.filter(pc.invert(deleted)).drop_columns(["_deleted"])
    deletes = rows.filter(deleted).select(["_id", "_ts"])
    del rows
    if upserts.num_rows:
        write_deltalake(silver, upserts.cast(spec.silver_schema()), mode="append")
    if deletes.num_rows:
        write_deltalake(tombstones, deletes.cast(TOMBSTONE_SCHEMA), mode="append")
    loaded.record(hashes[~seen])
    return MergeCounts(
        keys=merged.keys + upserts.num_rows + deletes.num_rows,
        upserts=merged.upserts + upserts.num_rows,
        deletes=merged.deletes + deletes.num_rows,
        stale=merged.stale,
    )
