"""Append-only Delta tables used as logs: the control table, the spec log, progress.

Blind appends never conflict in delta-rs, whereas two MERGEs into one small table do
(docs/delta-lake-notes.md §2). So every piece of state this target keeps
is a log whose latest row (per key) wins, and which Databricks can query as a table.
"""

from __future__ import annotations

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from convex_cdc.core.errors import TargetError
from convex_cdc.platform.databricks.delta_errors import delta_errors, delta_reason
from convex_cdc.platform.databricks.delta_read import read_table
from convex_cdc.platform.databricks.warehouse import Warehouse
from convex_cdc.platform.databricks.writer_table import WriterTable

APPEND_ONLY = {"delta.appendOnly": "true"}
"""Table properties of every log and bronze table: DELETE/UPDATE are refused."""


class AppendOnlyLog:
    """One append-only Delta table at ``location`` with the columns of ``schema``.

    With ``evolving``, ``schema`` may have nullable columns an older table lacks: an append
    adds them (``schema_mode="merge"``) and older rows read them as null.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        location: str,
        schema: pa.Schema,
        *,
        description: str,
        evolving: bool = False,
    ) -> None:
        self.warehouse = warehouse
        self.location = location
        self.schema = schema
        self.description = description
        self.evolving = evolving
        self._state = warehouse.holds_state(location)
        self._writer = WriterTable(location, warehouse, self._create)

    def table(self, *, create: bool = False) -> DeltaTable | None:
        """The log's Delta table, refreshed to its latest version (created if asked).

        Raises:
            TargetError: the table cannot be reached or created.
            StateError: its log is damaged.
        """
        table = self._writer.get(create=create)
        if table is not None:
            with delta_errors(f"read the Delta table {self.location}", state=self._state):
                table.update_incremental()
        return table

    def writable(self) -> DeltaTable:
        """The table to check an application transaction on and append through (created if
        needed). It reflects this process's own appends, not necessarily other writers'
        (see :mod:`.writer_table`); call :meth:`table` to see those."""
        table = self._writer.get(create=True)
        assert table is not None
        return table

    def _create(self) -> DeltaTable:
        return DeltaTable.create(
            self.location,
            self.schema,
            mode="ignore",
            description=self.description,
            configuration=APPEND_ONLY,
            storage_options=self.warehouse.options(),
        )

    def read(self, *, where: str | None = None) -> pa.Table:
        """Every row (matching ``where``), or an empty table if the log does not exist.

        Raises:
            TargetError: the table cannot be reached.
            StateError: the table is damaged or does not have the log's columns.
        """
        table = self.table()
        if table is None:
            return self.schema.empty_table()
        rows = read_table(table, where=where, state=self._state)
        with delta_errors(f"read the Delta table {self.location}", state=self._state):
            if self.evolving:
                for field in self.schema:
                    if field.name not in rows.column_names and field.nullable:
                        rows = rows.append_column(field, pa.nulls(rows.num_rows, field.type))
            return rows.select(self.schema.names).cast(self.schema)

    def append(
        self,
        rows: pa.Table,
        *,
        through: DeltaTable | None = None,
        commit_properties: CommitProperties | None = None,
    ) -> None:
        """Append ``rows`` in one commit.

        Args:
            rows: rows in (or castable to) the log's schema.
            through: the ``DeltaTable`` a caller checked an application transaction on;
                the commit must go through that very object, not a refreshed one.
            commit_properties: application transactions and commit metadata.

        Raises:
            TargetError: the commit failed (e.g. a concurrent writer claimed the same
                application transaction), or the store refused the write.
            StateError: the table is damaged.
        """
        table = through if through is not None else self.writable()
        with delta_errors(f"append to the Delta table {self.location}", state=self._state):
            try:
                write_deltalake(
                    table,
                    rows.select(self.schema.names).cast(self.schema),
                    mode="append",
                    schema_mode="merge" if self.evolving else None,
                    commit_properties=commit_properties,
                )
                self._writer.committed()
            except CommitFailedError as exc:
                self._writer.forget()
                raise TargetError(
                    f"could not append to {self.location}: {delta_reason(exc)}",
                    hint="another convex-cdc process may be writing this source; run one "
                    "extractor per source",
                ) from exc
