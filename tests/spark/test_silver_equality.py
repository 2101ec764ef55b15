"""The silver comparison the Spark tests rely on is exact where it matters, and says where.

No Spark here: these run in the normal suite, so a weakened comparison fails fast.
"""

from __future__ import annotations

import struct
from typing import Any

import pyarrow as pa
import pytest

from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.platform.databricks.table_spec import TableSpec
from tests.spark.silver_equality import (
    SilverMismatch,
    assert_silver_equal,
    exact,
    exact_json,
    table_rows,
    truth_rows,
)

KEY = TableKey("", "t")
SPEC = TableSpec(KEY, {"f": ColumnType.FLOAT64, "j": ColumnType.JSON, "n": ColumnType.INT64})


def silver(**columns: list[Any]) -> pa.Table:
    values = {"_id": ["a"], "_creationTime": [1.0], "_ts": [1], "f": [0.5], "j": ["[]"], "n": [1]}
    values.update(columns)
    types = {c.name: c.type.arrow for c in SPEC.column_specs()}
    return pa.table({name: pa.array(v, types[name]) for name, v in values.items()})


def compare(got: pa.Table, want: pa.Table) -> int:
    return assert_silver_equal(
        {KEY: got}, {KEY: table_rows(want)}, {KEY: SPEC}, got_name="spark", want_name="truth"
    )


def nan(payload: str) -> float:
    value: float = struct.unpack("<d", bytes.fromhex(payload))[0]
    return value


def test_equal_tables_compare_equal_row_by_row() -> None:
    assert compare(silver(), silver()) == 1


@pytest.mark.parametrize(
    ("got", "want"),
    [
        (-0.0, 0.0),
        (nan("000000000000f87f"), nan("010000000000f87f")),
        (5e-324, 0.0),
        (None, 0.0),
    ],
    ids=["negative zero", "nan payload", "subnormal", "null"],
)
def test_floats_differ_by_any_bit(got: float | None, want: float) -> None:
    with pytest.raises(SilverMismatch, match=r"t\.f: 1 of 1 values differ"):
        compare(silver(f=[got]), silver(f=[want]))


def test_the_same_nan_is_equal() -> None:
    assert compare(silver(f=[nan("000000000000f87f")]), silver(f=[float("nan")])) == 1


def test_int64_above_2_53_is_compared_exactly() -> None:
    with pytest.raises(SilverMismatch, match=r"t\.n: 1 of 1"):
        compare(silver(n=[2**53]), silver(n=[2**53 + 1]))


@pytest.mark.parametrize(
    ("got", "want"),
    [
        ("[5]", "[5.0]"),
        ("[0]", "[-0.0]"),
        ("[1]", "[true]"),
        ('{"a":null}', "{}"),
        ("[9007199254740992.0]", "[9007199254740993]"),
        ('"5"', "5"),
    ],
)
def test_json_text_differs_when_the_value_does(got: str, want: str) -> None:
    assert exact_json(got) != exact_json(want)


@pytest.mark.parametrize(
    ("got", "want"),
    [
        ('{"b":2,"a":[1,{"$bytes":"AQI="}]}', '{"a": [1, {"$bytes": "AQI="}], "b": 2}'),
        ("[4.9E-324]", "[5e-324]"),
        ("[1.0E10]", "[10000000000.0]"),
    ],
)
def test_json_text_is_equal_when_only_the_spelling_differs(got: str, want: str) -> None:
    assert exact_json(got) == exact_json(want)


def test_a_column_of_nulls_is_reported_as_such() -> None:
    with pytest.raises(SilverMismatch) as mismatch:
        compare(silver(n=[None], j=[None]), silver())

    assert "t.n: 1 of 1 values differ (1 of them NULL in spark)" in str(mismatch.value)
    assert "t.j: 1 of 1 values differ (1 of them NULL in spark)" in str(mismatch.value)


def test_columns_are_matched_by_name_not_position() -> None:
    reordered = silver().select(["n", "_ts", "_creationTime", "f", "j", "_id"])

    assert compare(reordered, silver()) == 1


def test_missing_rows_and_columns_are_reported() -> None:
    with pytest.raises(SilverMismatch, match=r"only in truth \['n'\]"):
        compare(silver().drop_columns(["n"]), silver())
    with pytest.raises(SilverMismatch, match=r"1 only in truth, e\.g\. \['a'\]"):
        compare(silver().slice(0, 0), silver())


def test_the_truth_is_typed_with_the_spec() -> None:
    line = {
        "component": "",
        "table": "t",
        "_id": "a",
        "_ts": 7,
        "_creationTime": 1.5,
        "fields": {"f": {"$float": "AAAAAAAA8H8="}, "j": [1, -0.0], "n": 2**63 - 1},
    }

    (row,) = truth_rows([line], {KEY: SPEC})[KEY].values()

    assert exact(row["f"], ColumnType.FLOAT64) == exact(float("inf"), ColumnType.FLOAT64)
    assert exact(row["j"], ColumnType.JSON) == exact("[1,-0.0]", ColumnType.JSON)
    assert row["n"] == 2**63 - 1
