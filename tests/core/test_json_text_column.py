"""A typed column turned back into JSON text reads exactly like the original export_json value."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.core.type_mapping import (
    ColumnType,
    json_text,
    json_text_column,
    kind_of,
    to_column_value,
)


def _float_tag(bits: int) -> dict[str, str]:
    return {"$float": base64.b64encode(struct.pack("<Q", bits)).decode()}


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        (ColumnType.INT64, [5, -7, 2**63 - 1, -(2**63), None],
         ["5", "-7", "9223372036854775807", "-9223372036854775808", None]),
        (ColumnType.FLOAT64, [1.5, 3.0, -0.0, 1e21, 5e-324, math.nan, math.inf, -math.inf, None],
         ["1.5", "3.0", "-0.0", "1e+21", "5e-324", '{"$float":"AAAAAAAA+H8="}',
          '{"$float":"AAAAAAAA8H8="}', '{"$float":"AAAAAAAA8P8="}', None]),
        (ColumnType.BOOL, [True, False, None], ["true", "false", None]),
        (ColumnType.STRING, ["abc", 'a"b\\c\n', "é😀", "", None],
         ['"abc"', '"a\\"b\\\\c\\n"', '"é😀"', '""', None]),
        (ColumnType.BINARY, [b"", b"\x00\x01\xff", None],
         ['{"$bytes":""}', '{"$bytes":"AAH/"}', None]),
        (ColumnType.NULL, [None, None], [None, None]),
        (ColumnType.JSON, ['{"a":1}', None], ['{"a":1}', None]),
    ],
    ids=lambda v: v.value if isinstance(v, ColumnType) else None,
)  # fmt: skip
def test_each_column_type_becomes_export_json_text(
    column: ColumnType, values: list[Any], expected: list[str | None]
) -> None:
    converted = json_text_column(pa.array(values, column.arrow), column)
    assert converted.type == pa.string()
    assert converted.to_pylist() == expected


def test_a_nan_payload_survives_bit_exact() -> None:
    bits = 0x7FF8000000000001
    value = struct.unpack("<d", struct.pack("<Q", bits))[0]
    (text,) = json_text_column(pa.array([value], pa.float64()), ColumnType.FLOAT64).to_pylist()
    assert text == json_text(_float_tag(bits))


def test_chunked_columns_are_accepted() -> None:
    chunked = pa.chunked_array([[1, 2], [3]], pa.int64())
    assert json_text_column(chunked, ColumnType.INT64).to_pylist() == ["1", "2", "3"]


def test_a_column_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="not a float64 column"):
        json_text_column(pa.array([1], pa.int64()), ColumnType.FLOAT64)


export_json_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(width=64).map(
        lambda f: (
            f if math.isfinite(f) else _float_tag(struct.unpack("<Q", struct.pack("<d", f))[0])
        )
    ),
    st.booleans(),
    st.text(),
    st.binary().map(lambda b: {"$bytes": base64.b64encode(b).decode()}),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(export_json_scalars, min_size=1, max_size=5).filter(
    lambda vs: len({kind_of(v) for v in vs}) == 1
))  # fmt: skip
def test_typed_then_widened_equals_json_text_of_the_wire_value(values: list[Any]) -> None:
    # Values as the raw change log holds them: parsed back from orjson-encoded documents.
    parsed = [orjson.loads(orjson.dumps(v)) for v in values]
    column = {
        "int64": ColumnType.INT64, "float64": ColumnType.FLOAT64, "boolean": ColumnType.BOOL,
        "string": ColumnType.STRING, "bytes": ColumnType.BINARY,
    }[kind_of(parsed[0]).value]  # fmt: skip
    typed = pa.array([to_column_value(v, column) for v in parsed], column.arrow)
    assert json_text_column(typed, column).to_pylist() == [json_text(v) for v in parsed]
