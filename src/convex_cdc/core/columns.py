"""The column layout of a current-state table, for every target.

A current-state table (staging parquet, silver Delta) has three system columns, then one
typed column per top-level user field, sorted by name (code-point order):

=================  =========  ==============================================================
column             type       meaning
=================  =========  ==============================================================
``_id``            string     the document id (the key); never null
``_creationTime``  float64    the document's creation time, ms since the epoch
``_ts``            int64      Convex commit timestamp of the last change, ns; never null
user fields        see below  :mod:`convex_cdc.core.type_mapping`
=================  =========  ==============================================================

Column types only move up the lattice of :mod:`~convex_cdc.core.type_mapping`: a field
seen only as null is a ``null`` column; the first non-null type adopts it; an
incompatible type widens it to ``json`` text, which is recorded as a :class:`Widening`
and never narrowed back. Columns are never dropped.

A missing field and an explicit ``null`` are both null: a column cannot hold the
difference, and the raw change log and bronze keep the exact documents for anyone who
needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa

from convex_cdc.core.type_mapping import ColumnType, json_text_column, widen


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column of a current-state table."""

    name: str
    type: ColumnType
    nullable: bool = True

    @property
    def arrow_field(self) -> pa.Field:
        """The Arrow field that stores this column."""
        return pa.field(self.name, self.type.arrow, nullable=self.nullable)

    def to_json(self) -> dict[str, Any]:
        """``{"name", "type", "nullable"}``, as staging state and manifests write it."""
        return {"name": self.name, "type": self.type.value, "nullable": self.nullable}


@dataclass(frozen=True, slots=True)
class Widening:
    """A column whose type changed incompatibly and was widened (to ``json``)."""

    column: str
    from_type: ColumnType
    to_type: ColumnType
    batch: int

    def to_json(self) -> dict[str, Any]:
        """``{"column", "from", "to", "batch"}``, as staging state and manifests write it."""
        return {
            "column": self.column,
            "from": self.from_type.value,
            "to": self.to_type.value,
            "batch": self.batch,
        }


SYSTEM_COLUMN_SPECS: Final = (
    ColumnSpec("_id", ColumnType.STRING, nullable=False),
    # Always present in Convex documents; nullable only so that one malformed document
    # cannot fail a whole rewrite.
    ColumnSpec("_creationTime", ColumnType.FLOAT64, nullable=True),
    ColumnSpec("_ts", ColumnType.INT64, nullable=False),
)
"""The leading columns of every current-state table, in order."""

SYSTEM_COLUMN_NAMES: Final = frozenset(spec.name for spec in SYSTEM_COLUMN_SPECS)

UserColumns = Mapping[str, ColumnType]
"""User field name → column type."""


def column_specs(user: UserColumns) -> tuple[ColumnSpec, ...]:
    """All columns of a table, in order: the system columns, then ``user`` sorted by name."""
    return SYSTEM_COLUMN_SPECS + tuple(ColumnSpec(name, user[name]) for name in sorted(user))


def user_columns(specs: Sequence[ColumnSpec]) -> dict[str, ColumnType]:
    """The user columns among ``specs``."""
    return {spec.name: spec.type for spec in specs if spec.name not in SYSTEM_COLUMN_NAMES}


def arrow_schema(specs: Sequence[ColumnSpec]) -> pa.Schema:
    """The Arrow schema of a table with these columns."""
    return pa.schema([spec.arrow_field for spec in specs])


def join_column_types(current: UserColumns, more: UserColumns) -> dict[str, ColumnType]:
    """``current`` with each of ``more``'s types joined in (:func:`widen`), new names added."""
    joined = dict(current)
    for name, kind in more.items():
        joined[name] = widen(joined.get(name, ColumnType.NULL), kind)
    return joined


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
    """Bring rows built with the ``old`` user columns to the ``new`` ones.

    New columns are all-null, a ``null`` column adopts its new type, a widened column is
    converted to lossless JSON text (exactly the text a row typed as ``json`` from the
    start holds). Column work only; no per-row Python.

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
