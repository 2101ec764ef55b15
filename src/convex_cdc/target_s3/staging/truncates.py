"""What a data sync's truncates mean for staging: a clean break in one table's history.

A data-sync batch truncates a table when the table enters the sync (a cold start, newly
selected, replaced by an import); the truncate rows open the table's rows of that batch.
Staging then forgets everything it held for the table from earlier batches (rows,
columns, widenings, segments) and builds it again from the rows after the truncate, as if
the table were new. So a table comes out the same whether its batches were applied over
many runs or in one rebuild. A table truncated with no rows after it is an empty table:
still listed, with no files and only the system columns.

A drop (the table left the source) is a break too: a table created again after its drop
starts from the rows after the drop row (a table that stays dropped leaves staging, see
:mod:`.drops`).

Truncate and drop rows never become staging rows. Only the raw batch index is needed to
know where a table starts again (it counts each table's truncates and drops), so the files
of earlier batches of a step are not even read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.events import TABLE_OPS
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.raw.batch_index import BatchIndex

_BREAKS: Final = pa.array(TABLE_OPS, pa.string())


def last_truncating(indexes: Sequence[BatchIndex], key: TableKey) -> int | None:
    """Position in ``indexes`` of the last batch that truncates or drops ``key``, if any."""
    for position in range(len(indexes) - 1, -1, -1):
        if indexes[position].truncates(key) or indexes[position].drops(key):
            return position
    return None


def rows_after_truncate(events: pa.Table) -> pa.Table:
    """The rows of ``events`` (one table's, in order, with ``_op``) after its last truncate
    or drop.

    Truncates come first in their batch, so these are the truncating batch's other rows
    and everything after it; cutting at the last truncate row keeps that exact even if a
    batch ever held a value before its truncate.
    """
    truncate_positions = pc.indices_nonzero(pc.is_in(events.column("_op"), _BREAKS))
    if len(truncate_positions) == 0:
        return events
    return events.slice(truncate_positions[-1].as_py() + 1)
