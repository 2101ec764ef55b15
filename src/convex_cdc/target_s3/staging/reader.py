"""Read a staging table as one Arrow table, through the staging state only.

Publish and verify use this instead of listing directories: the state names exactly the
files of the last completed materialize, all with the table's columns.
"""

from __future__ import annotations

import pyarrow as pa

from convex_cdc.core.columns import SYSTEM_COLUMN_SPECS, arrow_schema
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.io_errors import io_errors
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.segments import read_segment_file
from convex_cdc.target_s3.staging.state import StagingState, StagingTable, load_staging_state


def staging_table_schema(table: StagingTable | None) -> pa.Schema:
    """The Arrow schema of a staging table (system columns only if it does not exist)."""
    return arrow_schema(table.columns if table is not None else SYSTEM_COLUMN_SPECS)


def read_staging_table(
    layout: DestinationLayout, key: TableKey, *, state: StagingState | None = None
) -> pa.Table:
    """Every current row of one table (files concatenated in creation-time order).

    Pass ``state`` to read a state already loaded (so several tables come from the same
    materialize); otherwise the state file is read. A table staging does not have (or no
    staging at all) is an empty table with the system columns.

    Raises:
        StateError: the state is unusable, or a listed file is missing or damaged.
        TargetError: the state file cannot be read (permissions, a file where a directory
            belongs).
    """
    with io_errors(f"read staging table {key} in {layout.staging}", then="read it again"):
        if state is None:
            state = load_staging_state(layout.staging_state)
        table = state.table(key) if state is not None else None
        schema = staging_table_schema(table)
        if table is None or not table.files:
            return schema.empty_table()
        parts = [read_segment_file(layout.root, f, schema=schema) for f in table.files]
        return pa.concat_tables(parts)
