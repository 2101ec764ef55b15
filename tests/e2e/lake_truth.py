"""Compare current-state tables with the devserver's ``/_devserver/truth``, value for value.

Floats are compared by their bits (NaN payloads, -0.0 vs 0.0), Int64 exactly, bytes as
bytes, nested values as parsed lossless JSON. A field missing from a document and an
explicit null are the same thing in a current-state table.
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa

from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType, decode_float, to_column_value

TruthRows = dict[TableKey, dict[str, dict[str, Any]]]


def truth_by_table(truth: list[dict[str, Any]]) -> TruthRows:
    """``/_devserver/truth`` lines grouped as table → ``_id`` → line."""
    grouped: TruthRows = defaultdict(dict)
    for line in truth:
        grouped[TableKey(line["component"], line["table"])][line["_id"]] = line
    return dict(grouped)


def column_type_of(arrow_type: pa.DataType, declared: ColumnType | None) -> ColumnType:
    """The column type of a staged column, preferring the declared (manifest) one."""
    if declared is not None:
        return declared
    for candidate in ColumnType:
        if candidate is not ColumnType.JSON and candidate.arrow.equals(arrow_type):
            return candidate
    raise AssertionError(f"unexpected column type {arrow_type}")


def assert_tables_equal_truth(
    tables: Mapping[TableKey, pa.Table],
    truth: list[dict[str, Any]],
    *,
    declared: Mapping[TableKey, Mapping[str, ColumnType]] | None = None,
) -> int:
    """Assert every table holds exactly the truth's documents; returns rows compared."""
    expected = truth_by_table(truth)
    non_empty = {key for key, table in tables.items() if table.num_rows}
    assert non_empty == set(expected), (
        f"tables differ: only in lake {sorted(non_empty - set(expected))}, "
        f"only in truth {sorted(set(expected) - non_empty)}"
    )
    compared = 0
    for key, docs in expected.items():
        table = tables[key]
        types = (declared or {}).get(key, {})
        rows = table.to_pylist()
        assert len(rows) == len(docs), f"{key}: {len(rows)} rows, truth has {len(docs)}"
        assert len({r["_id"] for r in rows}) == len(rows), f"{key}: duplicate _id"
        for row in rows:
            doc = docs.get(row["_id"])
            assert doc is not None, f"{key}: {row['_id']} is not in the truth"
            assert row["_ts"] == doc["_ts"], f"{key}/{row['_id']}: _ts"
            assert _same_float(row["_creationTime"], decode_float(doc["_creationTime"]))
            fields = doc["fields"]
            extra = {f for f, v in fields.items() if v is not None} - set(table.column_names)
            assert not extra, f"{key}: fields {sorted(extra)} have no column"
            for name in table.column_names:
                if name in ("_id", "_ts", "_creationTime"):
                    continue
                column = column_type_of(table.schema.field(name).type, types.get(name))
                want = to_column_value(fields.get(name), column)
                got = row[name]
                assert _same(got, want, column), (
                    f"{key}/{row['_id']}.{name}: lake has {got!r}, truth has {want!r}"
                )
            compared += 1
    return compared


def _same(got: Any, want: Any, column: ColumnType) -> bool:
    if got is None or want is None:
        return got is None and want is None
    if column is ColumnType.FLOAT64:
        return _same_float(got, want)
    if column is ColumnType.JSON:
        return bool(orjson.loads(got) == orjson.loads(want)) and _float_bits_match(got, want)
    return bool(got == want)


def _same_float(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    if math.isnan(got) or math.isnan(want):
        return math.isnan(got) and math.isnan(want)
    return struct.pack("<d", got) == struct.pack("<d", want)


def _float_bits_match(got: str, want: str) -> bool:
    # orjson equality treats -0.0 == 0.0; the texts must agree on signs of zero too.
    return ("-0.0" in got) == ("-0.0" in want)
