"""Exact equality of silver tables, value for value, with a report a human can act on.

Values are compared in an exact form per column type:

=========  ==================================================================================
float64    the 8 bytes of the double: NaN payloads, -0.0 vs 0.0 and subnormals all count
int64      the Python int (no float rounding above 2^53)
binary     the bytes
string     the text
bool       the boolean (never equal to the number 1)
json       the parsed value: objects by key (order-free), arrays in order, strings exact,
           integers as integers, other numbers as doubles by their bytes — so ``5`` is not
           ``5.0`` and ``-0.0`` is not ``0``, while ``4.9E-324`` is ``5e-324`` (same double)
null       null, equal only to null (a missing field and ``null`` are both null)
=========  ==================================================================================

The expected side is either ``/_devserver/truth`` (typed with the table spec, as
``apply-silver`` types it) or another set of silver tables. A difference raises
:class:`SilverMismatch` whose message counts differing values per column, with examples,
so "every typed column is NULL" reads as exactly that.
"""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa

from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType, decode_float, to_column_value
from convex_cdc.platform.databricks.table_spec import TableSpec

Rows = dict[str, dict[str, Any]]
"""``_id`` → column → value."""

_EXAMPLES: Final = 2
_REPORT_LINES: Final = 40


class SilverMismatch(AssertionError):
    """Silver differs from what it must equal (the message lists every difference)."""


@dataclass(frozen=True)
class Difference:
    """One value that differs."""

    table: str
    column: str
    row_id: str
    got: Any
    want: Any


def exact(value: Any, column: ColumnType) -> Any:
    """The exact, comparable form of one stored value of a ``column`` column."""
    if value is None:
        return None
    if column is ColumnType.FLOAT64:
        return ("float64", struct.pack("<d", value))
    if column is ColumnType.BOOL:
        return ("bool", bool(value))
    if column is ColumnType.JSON:
        return ("json", exact_json(value))
    if column is ColumnType.BINARY:
        return ("binary", bytes(value))
    return (column.value, value)


def exact_json(text: str) -> Any:
    """JSON text parsed so that equal values, and only those, compare equal."""
    return _tag_literals(
        json.loads(
            text,
            parse_int=lambda digits: ("int", int(digits)),
            parse_float=lambda literal: ("double", struct.pack("<d", float(literal))),
            parse_constant=lambda constant: ("double", struct.pack("<d", float(constant))),
        )
    )


def _tag_literals(value: Any) -> Any:
    # json gives plain True/False; tag them so that true never equals the number 1.
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, list):
        return [_tag_literals(v) for v in value]
    if isinstance(value, dict):
        return {k: _tag_literals(v) for k, v in value.items()}
    return value


def column_types(spec: TableSpec) -> dict[str, ColumnType]:
    """Every silver column of ``spec`` and its type, system columns included."""
    return {column.name: column.type for column in spec.column_specs()}


def truth_rows(
    truth: list[dict[str, Any]], specs: Mapping[TableKey, TableSpec]
) -> dict[TableKey, Rows]:
    """``/_devserver/truth`` as the silver rows it implies: the spec's columns, typed."""
    tables: dict[TableKey, Rows] = {key: {} for key in specs}
    for line in truth:
        key = TableKey(line["component"], line["table"])
        assert key in specs, f"the truth has {key.qualified}, which the table spec lacks"
        fields = line["fields"]
        row: dict[str, Any] = {
            "_id": line["_id"],
            "_ts": line["_ts"],
            "_creationTime": decode_float(line["_creationTime"]),
        }
        for name, column in specs[key].typed_columns.items():
            row[name] = to_column_value(fields.get(name), column)
        tables[key][line["_id"]] = row
    return tables


def table_rows(table: pa.Table) -> Rows:
    """An Arrow table's rows by ``_id`` (of duplicates, the last)."""
    return {row["_id"]: row for row in table.to_pylist()}


def assert_silver_equal(
    got: Mapping[TableKey, pa.Table],
    want: Mapping[TableKey, Rows],
    specs: Mapping[TableKey, TableSpec],
    *,
    got_name: str,
    want_name: str,
) -> int:
    """Assert ``got`` holds exactly ``want``'s rows, value for value; returns rows compared.

    Columns are matched by name; their order is not compared.

    Raises:
        SilverMismatch: listing missing/extra tables, columns and rows, wrong column
            types, and per column how many values differ, with examples.
    """
    problems: list[str] = []
    differences: list[Difference] = []
    if set(got) != set(want):
        problems.append(
            f"tables: only in {got_name} {sorted(k.qualified for k in set(got) - set(want))}, "
            f"only in {want_name} {sorted(k.qualified for k in set(want) - set(got))}"
        )
    compared = 0
    for key in sorted(set(got) & set(want)):
        name = key.qualified
        types = column_types(specs[key])
        table = got[key]
        columns = {f.name for f in table.schema}  # by name: column order is not compared
        if columns != set(types):
            problems.append(
                f"{name}: columns only in {got_name} {sorted(columns - set(types))}, "
                f"only in {want_name} {sorted(set(types) - columns)}"
            )
        for f in table.schema:
            expected = types.get(f.name)
            if expected is not None and not _same_arrow_type(f.type, expected.arrow):
                problems.append(f"{name}.{f.name}: type {f.type}, expected {expected.arrow}")
        rows, expected_rows = table_rows(table), want[key]
        if len(rows) != table.num_rows:
            problems.append(f"{name}: {table.num_rows - len(rows)} duplicate _id rows")
        missing, extra = set(expected_rows) - set(rows), set(rows) - set(expected_rows)
        if missing or extra:
            parts = [
                f"{len(ids)} {what}, e.g. {sorted(ids)[:_EXAMPLES]}"
                for ids, what in ((missing, f"only in {want_name}"), (extra, f"only in {got_name}"))
                if ids
            ]
            problems.append(
                f"{name}: {len(rows)} rows, {want_name} has {len(expected_rows)} "
                f"({'; '.join(parts)})"
            )
        for row_id in sorted(set(rows) & set(expected_rows)):
            row, expected_row = rows[row_id], expected_rows[row_id]
            for column, kind in types.items():
                if column not in row:
                    continue
                if exact(row[column], kind) != exact(expected_row.get(column), kind):
                    differences.append(
                        Difference(name, column, row_id, row[column], expected_row.get(column))
                    )
            compared += 1
    problems += _summarise(differences, got, got_name, want_name)
    if problems:
        shown = problems[:_REPORT_LINES]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more")
        raise SilverMismatch(
            f"{got_name} differs from {want_name} ({compared} rows compared):\n  "
            + "\n  ".join(shown)
        )
    return compared


def _same_arrow_type(got: pa.DataType, want: pa.DataType) -> bool:
    plain = {pa.large_string(): pa.string(), pa.string_view(): pa.string()}
    plain |= {pa.large_binary(): pa.binary(), pa.binary_view(): pa.binary()}
    return bool(plain.get(got, got).equals(want))


def _summarise(
    differences: list[Difference],
    got: Mapping[TableKey, pa.Table],
    got_name: str,
    want_name: str,
) -> list[str]:
    by_column: dict[tuple[str, str], list[Difference]] = defaultdict(list)
    for difference in differences:
        by_column[(difference.table, difference.column)].append(difference)
    rows = {key.qualified: table.num_rows for key, table in got.items()}
    lines = []
    for (table, column), found in sorted(by_column.items()):
        nulls = sum(1 for d in found if d.got is None)
        examples = "; ".join(
            f"{d.row_id}: {got_name} {_show(d.got)}, {want_name} {_show(d.want)}"
            for d in found[:_EXAMPLES]
        )
        null_note = f" ({nulls} of them NULL in {got_name})" if nulls else ""
        lines.append(
            f"{table}.{column}: {len(found)} of {rows[table]} values differ{null_note}, "
            f"e.g. {examples}"
        )
    return lines


def _show(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value!r} (0x{struct.pack('>d', value).hex()})"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
