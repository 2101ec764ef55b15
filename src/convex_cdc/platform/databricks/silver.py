"""``apply-silver``: build ``silver/<table-dir>`` current-state tables from bronze, locally.

One source of a warehouse at a time (``<warehouse>/<source>/``, see :mod:`.warehouse`).
For every table of the spec log, bronze rows of the current snapshot walk
(``_batch >= walk_first_batch`` from the control table) that silver has not seen yet are
read in windows of whole batches and merged with AUTO CDC SCD1 semantics
(:mod:`.silver_merge`). While a table is loaded from empty (a rebuild, or the rows after a
truncate), the keys it does not hold yet are appended instead of merged
(:mod:`.silver_first_build`): a MERGE would read the whole table built so far, every
window. Progress (the bronze version and last ``_batch`` applied, the
walk, and the columns silver was built with) is an append-only log,
``_convex_cdc/silver_progress``; it is not a transaction on the MERGE because a MERGE
that changes nothing writes no commit.

A truncate row in bronze (the table entered a Data Sync: cold start, newly selected,
replaced by an import) empties the table's silver and tombstones, and the rows of its
batch and later ones are applied after it (:func:`.silver_merge.after_last_truncate`).
A drop row (the table left the source) is applied the same way: silver is left empty.

A table is rebuilt (truncated, then reloaded from bronze) when the snapshot walk changed
(``--resnapshot`` is a truncate-and-reload), when a column's type widened to ``json``
(the Lakeflow pipeline then needs a full refresh too), or when silver is missing. New
fields only add columns. A rebuild that stops half-way records no progress, so the next
run rebuilds again from an emptied table, and what the first one appended is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.schema import Field, PrimitiveType

from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.platform.databricks.append_log import AppendOnlyLog
from convex_cdc.platform.databricks.control_table import read_control_state
from convex_cdc.platform.databricks.delta_errors import delta_errors
from convex_cdc.platform.databricks.delta_read import open_table, query, read_table
from convex_cdc.platform.databricks.silver_first_build import LoadedKeys, load_window
from convex_cdc.platform.databricks.silver_merge import (
    TOMBSTONE_SCHEMA,
    WINDOW_COLUMNS,
    SpecNotCovered,
    after_last_truncate,
    merge_window,
)
from convex_cdc.platform.databricks.table_spec import (
    TableSpec,
    TableSpecStore,
    columns_json,
    spec_from_json,
)
from convex_cdc.platform.databricks.warehouse import Warehouse

log = logging.getLogger(__name__)

DEFAULT_WINDOW_ROWS: Final = 200_000
"""Bronze rows merged per MERGE (whole batches; a single larger batch is one window)."""

LOAD_WINDOW_ROWS: Final = 100_000
"""Bronze rows per window while a table is loaded from empty (at most ``window_rows``);
each window's new keys become one silver file of about this many rows."""

PROGRESS_SCHEMA: Final = pa.schema(
    [
        pa.field("component", pa.string(), nullable=False),
        pa.field("table", pa.string(), nullable=False),
        pa.field("bronze_version", pa.int64(), nullable=False),
        pa.field("last_batch", pa.int64(), nullable=False),
        pa.field("walk_first_batch", pa.int64(), nullable=False),
        pa.field("columns", pa.string(), nullable=False),
        pa.field("rebuilt", pa.bool_(), nullable=False),
        pa.field("rows_read", pa.int64(), nullable=False),
        pa.field("applied_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

_FORGOTTEN: Final = -1
"""``walk_first_batch`` of a progress row that says "no progress" (walks start at 0)."""

_DELTA_TYPES: Final = {
    ColumnType.STRING: "string",
    ColumnType.JSON: "string",
    ColumnType.INT64: "long",
    ColumnType.FLOAT64: "double",
    ColumnType.BOOL: "boolean",
    ColumnType.BINARY: "binary",
}


@dataclass(frozen=True, slots=True)
class Progress:
    """The last recorded apply of one table."""

    bronze_version: int
    last_batch: int
    walk_first_batch: int
    spec: TableSpec


@dataclass(slots=True)
class TableApply:
    """What ``apply-silver`` did to one table."""

    key: TableKey
    location: str
    rebuilt: bool = False
    skipped: bool = False
    rows_read: int = 0
    upserts: int = 0
    deletes: int = 0
    stale: int = 0
    truncates: int = 0
    """Windows whose truncate emptied the table (it entered a Data Sync)."""
    columns_added: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SilverReport:
    """What one ``apply-silver`` run did."""

    tables: list[TableApply] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    snapshot_complete: bool = True

    @property
    def rows_read(self) -> int:
        """Bronze rows read over all tables."""
        return sum(t.rows_read for t in self.tables)


class _SpecWidened(Exception):
    """Bronze held a value the spec did not cover; the spec was widened, start over."""

    def __init__(self, *, rebuilding: bool) -> None:
        super().__init__("the table spec was widened")
        self.rebuilding = rebuilding


def apply_silver(
    warehouse: Warehouse,
    *,
    window_rows: int = DEFAULT_WINDOW_ROWS,
    on_table: Callable[[TableApply], None] | None = None,
) -> SilverReport:
    """Bring every silver table of ``warehouse``'s source up to date with its bronze.

    ``window_rows`` bounds the bronze rows applied at a time (whole batches; a table
    loaded from empty uses at most :data:`LOAD_WINDOW_ROWS`).

    Raises:
        StateError: the control table, the spec log or the progress log is damaged.
        TargetError: a bronze or silver table cannot be read or written (see
            :mod:`.delta_errors`).
    """
    with delta_errors(f"apply silver in {warehouse}"):
        started = time.monotonic()
        report = SilverReport()
        control = read_control_state(warehouse)
        first = control.walk_first_batch if control is not None else 0
        report.snapshot_complete = (
            control is None or control.checkpoint.consistent_as_of is not None
        )
        specs = TableSpecStore(warehouse)
        progress = _ProgressLog(warehouse)
        recorded = progress.latest()
        try:
            for key, stored in specs.load().items():
                spec, previous = stored, recorded.get(key)
                for _ in range(3):
                    try:
                        result = _apply_table(
                            warehouse,
                            spec,
                            previous,
                            first=first,
                            window_rows=window_rows,
                            progress=progress,
                        )
                        break
                    except _SpecWidened as exc:
                        spec = specs.load()[key]
                        if exc.rebuilding:  # silver is half loaded: load it all again
                            previous = None
                else:  # pragma: no cover - the spec only widens, so this cannot loop forever
                    raise RuntimeError(f"the spec of {key.qualified} kept changing")
                report.tables.append(result)
                if on_table is not None:
                    on_table(result)
        finally:
            # One commit for all tables; a table whose progress is lost is merely re-applied.
            progress.flush()
        report.elapsed_seconds = time.monotonic() - started
        return report


def read_silver(warehouse: Warehouse, key: TableKey) -> pa.Table | None:
    """The current rows of ``key``'s silver table, by ``_id`` (``None`` if not built).

    Raises:
        TargetError: the silver table cannot be read.
    """
    with delta_errors(f"read silver {key.qualified} in {warehouse}"):
        table = open_table(warehouse.silver(key), warehouse)
        return None if table is None else read_table(table, order_by=["_id"])


def _apply_table(
    warehouse: Warehouse,
    spec: TableSpec,
    previous: Progress | None,
    *,
    first: int,
    window_rows: int,
    progress: _ProgressLog,
) -> TableApply:
    key = spec.key
    result = TableApply(key, warehouse.silver(key))
    bronze = open_table(warehouse.bronze(key), warehouse)
    bronze_version = bronze.version() if bronze is not None else -1
    silver = open_table(warehouse.silver(key), warehouse)
    if (
        previous is not None
        and silver is not None
        and previous.walk_first_batch == first
        and previous.bronze_version == bronze_version
        and previous.spec.columns == spec.columns
    ):
        result.skipped = True
        return result
    tombstones = open_table(warehouse.tombstones(key), warehouse)
    retyped = spec.retyped_columns(previous.spec) if previous is not None else []
    if (
        previous is None
        or previous.walk_first_batch != first
        or retyped
        or silver is None
        or tombstones is None
    ):
        if retyped:
            log.warning("silver %s: %s widened to json; rebuilding", key, ", ".join(retyped))
        if previous is not None and (silver is None or tombstones is None):
            # Once the tables exist, nothing else would tell the next run that this
            # rebuild did not finish: it would resume from the recorded batch.
            progress.forget(spec)
        silver = _truncate(silver, warehouse.silver(key), spec.silver_schema(), warehouse)
        tombstones = _truncate(tombstones, warehouse.tombstones(key), TOMBSTONE_SCHEMA, warehouse)
        result.rebuilt = True
        after = first - 1
    else:
        result.columns_added = _add_columns(silver, spec, previous.spec)
        after = max(previous.last_batch, first - 1)
    last = after
    if bronze is not None:
        # Loading from empty appends a window's new keys as one file: smaller windows
        # bound the memory of a build without making the files small.
        size = min(window_rows, LOAD_WINDOW_ROWS) if result.rebuilt else window_rows
        windows = _windows(bronze, after, size)
        unread = sum(n for _, _, n in windows)
        loaded = LoadedKeys(unread) if result.rebuilt else None
        for low, high, expected in windows:
            rows = read_table(
                bronze,
                columns=list(WINDOW_COLUMNS),
                where=f'"_batch" > {low} AND "_batch" <= {high}',
            )
            rows_read = rows.num_rows
            window = after_last_truncate(rows)
            del rows
            if window.truncated_at is not None:
                silver = _truncate(silver, warehouse.silver(key), spec.silver_schema(), warehouse)
                tombstones = _truncate(
                    tombstones, warehouse.tombstones(key), TOMBSTONE_SCHEMA, warehouse
                )
                result.truncates += 1
                # Both tables are empty again: what this run loaded before is gone.
                loaded = LoadedKeys(unread)
            unread -= expected
            try:
                if loaded is None:
                    counts = merge_window(silver, tombstones, window.changes, spec)
                else:
                    counts = load_window(silver, tombstones, window.changes, spec, loaded)
            except SpecNotCovered as exc:
                # Bronze written before the spec knew these types (or by another tool).
                TableSpecStore(warehouse).widen({key: exc.observed})
                raise _SpecWidened(rebuilding=result.rebuilt) from exc
            del window
            result.rows_read += rows_read
            result.upserts += counts.upserts
            result.deletes += counts.deletes
            result.stale += counts.stale
            last = high
    progress.stage(spec, bronze_version=bronze_version, last_batch=last, first=first, result=result)
    return result


def _windows(bronze: DeltaTable, after: int, window_rows: int) -> list[tuple[int, int, int]]:
    """``(low, high]`` ranges of whole batches above ``after``, about ``window_rows`` each,
    with their number of rows."""
    counts = query(
        f'SELECT "_batch", count(*) AS n FROM t WHERE "_batch" > {int(after)} '  # noqa: S608
        'GROUP BY "_batch" ORDER BY "_batch"',
        {"t": bronze},
    )
    windows: list[tuple[int, int, int]] = []
    low, rows = after, 0
    batches = counts.column("_batch").to_pylist()
    sizes = counts.column("n").to_pylist()
    for batch, size in zip(batches, sizes, strict=True):
        rows += size
        if rows >= window_rows:
            windows.append((low, batch, rows))
            low, rows = batch, 0
    if batches and low != batches[-1]:
        windows.append((low, batches[-1], rows))
    return windows


def _truncate(
    table: DeltaTable | None, location: str, schema: pa.Schema, warehouse: Warehouse
) -> DeltaTable:
    """An empty table with ``schema`` at ``location`` (a new version if it existed)."""
    if table is None:
        return DeltaTable.create(location, schema, storage_options=warehouse.options())
    write_deltalake(table, schema.empty_table(), mode="overwrite", schema_mode="overwrite")
    return table


def _add_columns(silver: DeltaTable, spec: TableSpec, before: TableSpec) -> list[str]:
    existing = {f.name for f in silver.schema().fields}
    added = [
        (name, kind)
        for name, kind in spec.typed_columns.items()
        if name not in existing and name not in before.typed_columns
    ]
    if added:
        silver.alter.add_columns(
            [Field(name, PrimitiveType(_DELTA_TYPES[kind]), nullable=True) for name, kind in added]
        )
    return [name for name, _ in added]


class _ProgressLog:
    def __init__(self, warehouse: Warehouse) -> None:
        self._log = AppendOnlyLog(
            warehouse,
            warehouse.silver_progress,
            PROGRESS_SCHEMA,
            description="convex-cdc silver apply progress (latest row per table wins)",
        )
        self._staged: list[dict[str, object]] = []

    def latest(self) -> dict[TableKey, Progress]:
        result: dict[TableKey, Progress] = {}
        rows = self._log.read().sort_by("applied_at")
        for row in rows.to_pylist():  # later rows win
            key = TableKey(row["component"], row["table"])
            if row["walk_first_batch"] == _FORGOTTEN:
                result.pop(key, None)
                continue
            result[key] = Progress(
                bronze_version=row["bronze_version"],
                last_batch=row["last_batch"],
                walk_first_batch=row["walk_first_batch"],
                spec=spec_from_json(key, row["columns"]),
            )
        return result

    def stage(
        self,
        spec: TableSpec,
        *,
        bronze_version: int,
        last_batch: int,
        first: int,
        result: TableApply,
    ) -> None:
        key = spec.key
        self._staged.append(
            {
                "component": key.component,
                "table": key.table,
                "bronze_version": bronze_version,
                "last_batch": last_batch,
                "walk_first_batch": first,
                "columns": columns_json(spec),
                "rebuilt": result.rebuilt,
                "rows_read": result.rows_read,
                "applied_at": datetime.now(UTC),
            }
        )

    def forget(self, spec: TableSpec) -> None:
        """Record at once that ``spec``'s table has no progress (it is being rebuilt)."""
        key = spec.key
        row = {
            "component": key.component,
            "table": key.table,
            "bronze_version": _FORGOTTEN,
            "last_batch": _FORGOTTEN,
            "walk_first_batch": _FORGOTTEN,
            "columns": columns_json(spec),
            "rebuilt": True,
            "rows_read": 0,
            "applied_at": datetime.now(UTC),
        }
        self._log.append(pa.Table.from_pylist([row], schema=PROGRESS_SCHEMA))

    def flush(self) -> None:
        if self._staged:
            self._log.append(pa.Table.from_pylist(self._staged, schema=PROGRESS_SCHEMA))
            self._staged = []
