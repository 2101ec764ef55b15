"""The one way this package reads Delta tables: delta-rs's ``QueryBuilder``.

``DeltaTable.to_pyarrow_table()`` / ``to_pyarrow_dataset()`` with deltalake's own Python
filesystem handler abort the interpreter at exit in a large share of runs
(``terminate called without an active exception``, delta-rs #2184; see
docs/delta-lake-notes.md §3). ``QueryBuilder`` runs the scan inside
delta-rs (DataFusion) and hands back Arrow batches, which never touches that handler.
Every read in code and tests goes through :func:`query` or :func:`read_table`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder
from deltalake.exceptions import TableNotFoundError

from convex_cdc.platform.databricks.delta_errors import delta_errors
from convex_cdc.platform.databricks.warehouse import Warehouse

_VIEW_TYPES = {
    pa.string_view(): pa.string(),
    pa.binary_view(): pa.binary(),
    pa.large_string(): pa.string(),
    pa.large_binary(): pa.binary(),
}


def open_table(
    location: str, warehouse: Warehouse, *, version: int | None = None
) -> DeltaTable | None:
    """The Delta table at ``location``, or ``None`` if there is none yet.

    Raises:
        TargetError: the table cannot be reached, or a bronze/silver table's log is damaged.
        StateError: the log of one of convex-cdc's own tables (under ``_convex_cdc/``) is
            damaged.
    """
    with delta_errors(f"open the Delta table {location}", state=warehouse.holds_state(location)):
        try:
            return DeltaTable(location, version=version, storage_options=warehouse.options())
        except TableNotFoundError:
            return None


def sql_ident(name: str) -> str:
    """``name`` as a quoted DataFusion identifier (keeps case: ``_creationTime``)."""
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """``value`` as a DataFusion string literal."""
    return "'" + value.replace("'", "''") + "'"


def query(sql: str, tables: Mapping[str, DeltaTable], *, state: bool = False) -> pa.Table:
    """Run ``sql`` over the registered ``tables`` (name → table) and collect the result.

    View types (``string_view``...) that DataFusion produces are cast to their plain
    counterparts, so results compare equal to tables built with ``pa.table``.

    Args:
        sql: the query.
        tables: the tables it names.
        state: the tables are convex-cdc's own state (a failed read is a ``StateError``).

    Raises:
        TargetError: a data file is missing or unreadable, or the store cannot be reached.
        StateError: with ``state``, a file of one of convex-cdc's own tables is damaged.
    """
    names = ", ".join(table.table_uri.rstrip("/") for table in tables.values())
    with delta_errors(f"read the Delta table {names}", state=state):
        builder = QueryBuilder()
        for name, table in tables.items():
            builder = builder.register(name, table)
        reader = pa.RecordBatchReader.from_stream(builder.execute(sql))
        return _plain_types(reader.read_all())


def read_table(
    table: DeltaTable,
    *,
    columns: Sequence[str] | None = None,
    where: str | None = None,
    order_by: Sequence[str] | None = None,
    state: bool = False,
) -> pa.Table:
    """Rows of ``table`` (optionally some ``columns``, filtered by a SQL ``where``).

    Raises:
        TargetError, StateError: as :func:`query` raises.
    """
    select = ", ".join(sql_ident(c) for c in columns) if columns else "*"
    sql = f"SELECT {select} FROM t"  # noqa: S608 -- identifiers are quoted; local tables only
    if where:
        sql += f" WHERE {where}"
    if order_by:
        sql += " ORDER BY " + ", ".join(sql_ident(c) for c in order_by)
    return query(sql, {"t": table}, state=state)


def _plain_types(table: pa.Table) -> pa.Table:
    fields = [
        pa.field(f.name, _VIEW_TYPES.get(f.type, f.type), f.nullable, f.metadata)
        for f in table.schema
    ]
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table if schema.equals(table.schema) else table.cast(schema)
