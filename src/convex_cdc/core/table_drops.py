"""Which tables were dropped at the source: held by the destination, gone from Convex.

Convex sends nothing when a table is dropped: no tombstones in ``document_deltas``, no
truncate in a Data Sync. So each run compares the tables ``json_schemas`` lists (every
active user table, empty ones included, by component) with the tables the destination
holds (:attr:`~convex_cdc.core.checkpoint.Checkpoint.tables_seen`). A held table the
source no longer lists is dropped, as of that schema fetch.

Only tables inside the run's selection are compared: a table the selection no longer
includes keeps its rows, as Convex keeps a deselected table's rows in a sync, whether or
not it still exists. A table dropped and created again between two runs is listed both
times and so is not a drop (with Data Sync it arrives as a truncate and a walk; with the
legacy API its new rows arrive as inserts next to the old ones, which ``verify`` finds).
"""

from __future__ import annotations

from collections.abc import Collection

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.names import TableKey
from convex_cdc.core.selection import Selection


def dropped_tables(
    checkpoint: Checkpoint, source_tables: Collection[str], selection: Selection | None
) -> list[TableKey]:
    """The tables ``checkpoint`` holds that the source no longer has, sorted.

    Args:
        checkpoint: what the destination holds (its ``tables_seen``).
        source_tables: ``TableKey.qualified`` of every table the source's
            ``json_schemas`` listed this run.
        selection: the run's selection (``None``: everything); held tables outside it are
            never dropped.
    """
    gone = (TableKey.parse(qualified) for qualified in checkpoint.tables_seen - set(source_tables))
    return sorted(key for key in gone if selection is None or selection.includes(key))
