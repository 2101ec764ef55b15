"""The column layout of a staging table and how it evolves.

Every staging table has ``_id`` (string), ``_creationTime`` (float64, ms), ``_ts`` (int64,
ns of the last change), then one typed column per top-level user field, sorted by name
(code-point order). Types follow :mod:`convex_cdc.core.type_mapping` and only move up its
lattice: a field seen only as null is a ``null`` column; the first non-null type adopts
it; an incompatible type widens it to ``json`` text, which is recorded as a
:class:`~.staging_state.Widening` and never narrowed back. Columns are never dropped, even
when every row that had the field is deleted.

A missing field and an explicit ``null`` are both null in staging: Convex documents do
not distinguish them in any way a column can hold, and the raw change log keeps the
exact documents for anyone who needs the difference.

Every file of a table has exactly the table's columns, so a reader (or a consumer of the
published files) never has to reconcile per-file schemas. The price is that a column
change rewrites every file of the table; it happens once per new field or widening.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import pyarrow as pa

from convex_cdc.core.type_mapping import ColumnType, json_text_column, widen
from convex_cdc.target_s3.staging.state import ColumnSpec, Widening

SYSTEM_COLUMN_SPECS: Final = (
    ColumnSpec("_id", ColumnType.STRING, nullable=False),
    # Always present in Convex documents; nullable only so a malformed one cannot break
    # a whole bucket rewrite.
    ColumnSpec("_creationTime", ColumnType.FLOAT64, nullable=True),
    ColumnSpec("_ts", ColumnType.INT64, nullable=False),
)
SYSTEM_COLUMN_NAMES: Final = frozenset(spec.name for spec in SYSTEM_COLUMN_SPECS)

UserColumns = Mapping[str, ColumnType]
"""User field name → column type."""


def column_specs(user: UserColumns) -> tuple[ColumnSpec, ...]:
    """All columns of a table, in staging order, for the given user columns."""
    return SYSTEM_COLUMN_SPECS + tuple(ColumnSpec(name, user[name]) for name in sorted(user))


def user_columns(specs: tuple[ColumnSpec, ...]) -> dict[str, ColumnType]:
    """The user columns of a table's column specs."""
    return {spec.name: spec.type for spec in specs if spec.name not in SYSTEM_COLUMN_NAMES}


def arrow_schema(specs: tuple[ColumnSpec, ...]) -> pa.Schema:
    """The Arrow schema of every file of a table with these columns."""
    return pa.schema([pa.field(s.name, s.type.arrow, nullable=s.nullable) for s in specs])


def evolve_columns(
    current: UserColumns, seen: UserColumns, *, batch: int
) -> tuple[dict[str, ColumnType], list[Widening]]:
    """Join the current user columns with the types seen in new rows.

    Returns:
        The new user columns and the widenings (a non-null type turned into ``json``).
    """
    evolved = dict(current)
    widenings: list[Widening] = []
    for name in sorted(seen):
        before = evolved.get(name)
        after = seen[name] if before is None else widen(before, seen[name])
        if before is not None and before is not ColumnType.NULL and after is not before:
            widenings.append(Widening(name, before, after, batch))
        evolved[name] = after
    return evolved, widenings


def conform(table: pa.Table, old: UserColumns, new: UserColumns) -> pa.Table:
    """Bring rows written with the ``old`` user columns to the ``new`` ones.

    New columns are all-null, a ``null`` column adopts its new type, a widened column is
    converted to lossless JSON text. Column work only; no per-row Python.

    Raises:
        ValueError: ``new`` would narrow a column (a bug: columns only widen).
    """
    arrays: list[pa.Array | pa.ChunkedArray] = [table.column(s.name) for s in SYSTEM_COLUMN_SPECS]
    for name in sorted(new):
        target = new[name]
        before = old.get(name)
        if before is None or before is ColumnType.NULL:
            arrays.append(pa.nulls(table.num_rows, target.arrow))
        elif before is target:
            arrays.append(table.column(name))
        elif target is ColumnType.JSON:
            arrays.append(json_text_column(table.column(name), before))
        else:
            raise ValueError(f"column {name!r} cannot change from {before.value} to {target}")
    return pa.Table.from_arrays(arrays, schema=arrow_schema(column_specs(new)))
