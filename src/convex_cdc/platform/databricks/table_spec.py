"""The per-table spec: which typed columns a silver table has.

Bronze is a fixed envelope (the document stays lossless JSON text), so it never needs
schema evolution. Silver is a current-state table with the column layout of
:mod:`convex_cdc.core.columns`: the system columns, then one typed column per top-level
document field. The spec is derived from the data the extractor lands and stored in the
warehouse as an append-only log (``_convex_cdc/table_specs``); the same spec's
:meth:`TableSpec.column_specs` drive the local ``apply-silver`` (through the row builder
staging uses too) and the rendered Lakeflow SQL/Python, so all three produce the same
columns.

Each log row holds a table's whole column map at the time it was written; the effective
spec is the join (:func:`~convex_cdc.core.type_mapping.widen`) over every row, so two
writers widening concurrently can never lose each other's types. A spec row is written
before the bronze append that needs it, so the spec always covers bronze.

Only fields whose names are plain identifiers become columns, and of names that differ
only in case (Spark column names are case-insensitive) the first one seen wins; other
fields stay available in bronze's ``document``. A field seen only as ``null`` gets no
column until it has a type (missing and null read the same).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.columns import ColumnSpec, arrow_schema, column_specs
from convex_cdc.core.current_state import observed_column_types, parse_fields
from convex_cdc.core.document_columns import paused_gc
from convex_cdc.core.errors import StateError
from convex_cdc.core.events import TABLE_OPS, tables_in
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType, widen
from convex_cdc.platform.databricks.append_log import AppendOnlyLog
from convex_cdc.platform.databricks.warehouse import Warehouse, table_dir

log = logging.getLogger(__name__)

_COLUMN_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_warned: set[tuple[TableKey, str]] = set()

SPEC_LOG_SCHEMA: Final = pa.schema(
    [
        pa.field("component", pa.string(), nullable=False),
        pa.field("table", pa.string(), nullable=False),
        pa.field("columns", pa.string(), nullable=False),
        pa.field("saved_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
"""One row per spec change: ``columns`` is JSON ``{field: column type}``."""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One Convex table's silver shape."""

    key: TableKey
    columns: Mapping[str, ColumnType] = field(default_factory=dict)
    """User field → column type (``null`` while only nulls were seen; such fields get no
    column yet)."""
    keep_document: bool = False
    """Types unknown (rendered from a bare table list): silver keeps ``document`` JSON."""

    @property
    def dir(self) -> str:
        """The table's directory name under ``bronze/`` and ``silver/``."""
        return table_dir(self.key)

    @property
    def typed_columns(self) -> dict[str, ColumnType]:
        """The columns silver has, sorted by name (null-only fields left out)."""
        return {
            name: kind for name, kind in sorted(self.columns.items()) if kind is not ColumnType.NULL
        }

    def column_specs(self) -> tuple[ColumnSpec, ...]:
        """The current-state columns silver has: the system columns, then the typed ones
        (the same layout, types and values as staging's for these fields)."""
        return column_specs(self.typed_columns)

    def silver_schema(self) -> pa.Schema:
        """:meth:`column_specs` as Arrow, plus ``document`` when types are unknown."""
        schema = arrow_schema(self.column_specs())
        if self.keep_document:
            schema = schema.append(pa.field("document", pa.string()))
        return schema

    def widened(self, observed: Mapping[str, ColumnType]) -> TableSpec:
        """This spec joined with ``observed`` field types (names filtered, see module doc)."""
        columns = dict(self.columns)
        lower = {name.lower(): name for name in columns}
        for name, kind in sorted(observed.items()):
            if name in columns:
                columns[name] = widen(columns[name], kind)
            elif _COLUMN_NAME.fullmatch(name) and name.lower() not in lower:
                columns[name] = kind
                lower[name.lower()] = name
            elif (self.key, name) not in _warned:
                _warned.add((self.key, name))
                log.warning(
                    "field %r of %s gets no silver column (not an identifier, or it differs "
                    "from another field only in case); it stays in bronze's document",
                    name[:80],
                    self.key.qualified,
                )
        return TableSpec(self.key, dict(sorted(columns.items())), self.keep_document)

    def retyped_columns(self, older: TableSpec) -> list[str]:
        """Columns of ``older`` whose silver type differs here (need a rebuild)."""
        mine = self.typed_columns
        return sorted(
            name for name, kind in older.typed_columns.items() if mine.get(name, kind) is not kind
        )


def observed_types(events: pa.Table) -> dict[TableKey, dict[str, ColumnType]]:
    """Column types of every table's documents in a batch of change events (the types
    :func:`convex_cdc.core.current_state.observed_column_types` gives staging too).

    Truncate and drop rows carry no document; a table with nothing else still gets an
    entry (so the silver table of a dropped table exists, empty).
    """
    result: dict[TableKey, dict[str, ColumnType]] = {}
    keys = tables_in(events)
    documents = events
    if "_op" in events.column_names:
        documents = events.filter(
            pc.invert(pc.is_in(events.column("_op"), pa.array(TABLE_OPS, pa.string())))
        )
    for key in keys:
        rows = documents
        if len(keys) > 1:
            rows = documents.filter(
                pc.and_(
                    pc.equal(documents.column("_component"), key.component),
                    pc.equal(documents.column("_table"), key.table),
                )
            )
        with paused_gc():  # the documents die before the collector would scan them
            result[key] = observed_column_types(parse_fields(rows))
    return result


def spec_from_json(key: TableKey, text: str) -> TableSpec:
    """Decode one ``columns`` JSON value of the spec log (or of silver progress).

    Raises:
        StateError: the value is not a ``{field: column type}`` object this version knows.
    """
    try:
        raw = orjson.loads(text)
        return TableSpec(key, {str(name): ColumnType(kind) for name, kind in raw.items()})
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise StateError(
            f"the stored column spec of {key.qualified} is not readable: {text[:80]!r}",
            hint="the _convex_cdc tables were changed by hand or by a newer convex-cdc; "
            "restore them with Delta time travel, or extract into a fresh warehouse",
        ) from None


def columns_json(spec: TableSpec) -> str:
    """The ``columns`` JSON of ``spec`` (sorted, stable)."""
    return orjson.dumps({name: kind.value for name, kind in sorted(spec.columns.items())}).decode()


class TableSpecStore:
    """The spec log of one source of a warehouse, with an in-memory copy of what it holds."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._log = AppendOnlyLog(
            warehouse,
            warehouse.table_specs,
            SPEC_LOG_SCHEMA,
            description="convex-cdc typed-column specs (join of all rows per table)",
        )
        self._specs: dict[TableKey, TableSpec] | None = None

    def load(self) -> dict[TableKey, TableSpec]:
        """The effective spec of every table the warehouse has seen, sorted by table."""
        rows = self._log.read()
        specs: dict[TableKey, TableSpec] = {}
        for component, table, text in zip(
            rows.column("component").to_pylist(),
            rows.column("table").to_pylist(),
            rows.column("columns").to_pylist(),
            strict=True,
        ):
            key = TableKey(component, table)
            row = spec_from_json(key, text)
            current = specs.get(key)
            specs[key] = row if current is None else current.widened(row.columns)
        self._specs = dict(sorted(specs.items()))
        return dict(self._specs)

    def widen(
        self, observed: Mapping[TableKey, Mapping[str, ColumnType]]
    ) -> dict[TableKey, TableSpec]:
        """Make the stored specs cover ``observed`` types; write one commit if anything changed.

        Returns the specs of the ``observed`` tables after widening.
        """
        known = self._specs if self._specs is not None else self.load()
        updated: dict[TableKey, TableSpec] = {}
        changed: list[TableSpec] = []
        for key, types in observed.items():
            before = known.get(key)
            after = (before or TableSpec(key)).widened(types)
            updated[key] = after
            if before is None or after.columns != before.columns:
                changed.append(after)
        if changed:
            self._append(changed)
            for spec in changed:
                known[spec.key] = spec
        return updated

    def _append(self, specs: Iterable[TableSpec]) -> None:
        chosen = list(specs)
        now = datetime.now(UTC)
        self._log.append(
            pa.table(
                {
                    "component": [s.key.component for s in chosen],
                    "table": [s.key.table for s in chosen],
                    "columns": [columns_json(s) for s in chosen],
                    "saved_at": [now] * len(chosen),
                },
                schema=SPEC_LOG_SCHEMA,
            )
        )
