"""What a dropped table means for staging: the table is gone, files and state entry.

A drop batch (the table left the source, see :mod:`convex_cdc.core.table_drops`) holds
only drop rows. When a table's last batch in a step is one, staging forgets the table
entirely: its state entry goes, so the next manifest no longer lists it, and its files are
deleted once the state no longer lists them. Rows of the table in a later batch (it was
created again) start a new table, exactly as after a truncate (:mod:`.truncates`).
"""

from __future__ import annotations

from collections.abc import Sequence

from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.raw.batch_index import BatchIndex


def ends_dropped(indexes: Sequence[BatchIndex], key: TableKey) -> bool:
    """Whether the last batch of ``indexes`` with rows of ``key`` drops it."""
    last = next((index for index in reversed(indexes) if index.entry(key) is not None), None)
    return last is not None and last.drops(key)
