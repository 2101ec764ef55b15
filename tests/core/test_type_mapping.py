"""Convex value types → column types and exact value conversion, value by value and in bulk."""

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
    ConvexKind,
    column_type_for,
    decode_float,
    decode_int,
    json_text,
    json_text_column,
    kind_of,
    to_column_value,
    typed_array,
    widen,
)


def float_tag(value: float) -> dict[str, str]:
    return {"$float": base64.b64encode(struct.pack("<d", value)).decode()}


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


@pytest.mark.parametrize(
    ("wire", "kind", "column"),
    [
        (None, ConvexKind.NULL, ColumnType.NULL),
        (True, ConvexKind.BOOLEAN, ColumnType.BOOL),
        (7, ConvexKind.INT64, ColumnType.INT64),
        (1.5, ConvexKind.FLOAT64, ColumnType.FLOAT64),
        (-0.0, ConvexKind.FLOAT64, ColumnType.FLOAT64),
        (float_tag(math.nan), ConvexKind.FLOAT64, ColumnType.FLOAT64),
        ({"$integer": "KgAAAAAAAAA="}, ConvexKind.INT64, ColumnType.INT64),
        ("j5755wh6cpk0r4pjh4c5v58ex17p4zhw", ConvexKind.STRING, ColumnType.STRING),
        ({"$bytes": "ABCD"}, ConvexKind.BYTES, ColumnType.BINARY),
        ([1, 2], ConvexKind.ARRAY, ColumnType.JSON),
        ({"a": 1}, ConvexKind.OBJECT, ColumnType.JSON),
        ({"$float": "AAAAAAAA+H8=", "x": 1}, ConvexKind.OBJECT, ColumnType.JSON),
    ],
)
def test_each_convex_type_maps_to_its_section_4_column(
    wire: Any, kind: ConvexKind, column: ColumnType
) -> None:
    assert kind_of(wire) is kind
    assert column_type_for([kind]) is column


def test_column_types_store_in_the_documented_arrow_types() -> None:
    assert ColumnType.STRING.arrow == pa.string() and ColumnType.JSON.arrow == pa.string()
    assert ColumnType.FLOAT64.arrow == pa.float64() and ColumnType.INT64.arrow == pa.int64()
    assert ColumnType.BOOL.arrow == pa.bool_() and ColumnType.BINARY.arrow == pa.binary()


def test_a_non_export_json_value_is_rejected() -> None:
    with pytest.raises(TypeError):
        kind_of(object())


def test_the_widening_lattice() -> None:
    assert widen(ColumnType.NULL, ColumnType.INT64) is ColumnType.INT64  # null adopts
    assert widen(ColumnType.INT64, ColumnType.NULL) is ColumnType.INT64  # nullable T
    assert widen(ColumnType.INT64, ColumnType.INT64) is ColumnType.INT64
    assert widen(ColumnType.INT64, ColumnType.FLOAT64) is ColumnType.JSON  # never lossy
    assert widen(ColumnType.STRING, ColumnType.BINARY) is ColumnType.JSON
    assert widen(ColumnType.JSON, ColumnType.STRING) is ColumnType.JSON  # never back
    assert column_type_for([]) is ColumnType.NULL
    assert (
        column_type_for([ConvexKind.NULL, ConvexKind.STRING, ConvexKind.NULL]) is ColumnType.STRING
    )


column_types = st.sampled_from(list(ColumnType))


@given(column_types, column_types, column_types)
def test_widening_is_a_join_commutative_associative_idempotent_and_monotone(
    a: ColumnType, b: ColumnType, c: ColumnType
) -> None:
    assert widen(a, b) is widen(b, a)
    assert widen(widen(a, b), c) is widen(a, widen(b, c))
    assert widen(a, a) is a
    assert widen(a, widen(a, b)) is widen(a, b)  # once widened, a type stays at least as wide
    assert widen(a, ColumnType.JSON) is ColumnType.JSON


@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
def test_special_floats_convert_bit_exactly(special: float) -> None:
    converted = to_column_value(float_tag(special), ColumnType.FLOAT64)
    assert bits(converted) == bits(special)


def test_a_non_canonical_nan_payload_is_kept() -> None:
    payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0001))[0]
    tag = {"$float": base64.b64encode(bits(payload)).decode()}
    assert bits(decode_float(tag)) == bits(payload)


def test_negative_zero_keeps_its_sign() -> None:
    converted = to_column_value(-0.0, ColumnType.FLOAT64)
    assert math.copysign(1.0, converted) == -1.0
    array = typed_array([-0.0], ColumnType.FLOAT64)
    assert math.copysign(1.0, array[0].as_py()) == -1.0


@pytest.mark.parametrize("number", [-(2**63), 2**63 - 1, 2**53 + 1, 0, -1])
def test_int64_extremes_convert_exactly_from_both_encodings(number: int) -> None:
    assert to_column_value(number, ColumnType.INT64) == number
    assert decode_int({"$integer": base64.b64encode(struct.pack("<q", number)).decode()}) == number
    assert typed_array([number], ColumnType.INT64).to_pylist() == [number]


def test_bytes_convert_to_binary() -> None:
    assert to_column_value({"$bytes": "ABCD"}, ColumnType.BINARY) == b"\x00\x10\x83"


def test_json_columns_hold_lossless_sorted_text() -> None:
    nested = {"b": [2**62 + 1, -0.0, float_tag(math.nan)], "a": {"$bytes": "AA=="}}
    text = to_column_value(nested, ColumnType.JSON)
    assert (
        text == '{"a":{"$bytes":"AA=="},"b":[4611686018427387905,-0.0,{"$float":"AAAAAAAA+H8="}]}'
    )
    assert json_text(orjson.loads(text)) == text
    assert to_column_value("plain", ColumnType.JSON) == '"plain"'


def test_a_value_that_does_not_fit_its_column_is_an_error() -> None:
    with pytest.raises(TypeError):
        to_column_value(1.5, ColumnType.INT64)
    with pytest.raises(TypeError):
        to_column_value(True, ColumnType.INT64)
    with pytest.raises(TypeError):
        to_column_value(1, ColumnType.NULL)
    assert to_column_value(None, ColumnType.INT64) is None


typed_values = {
    ColumnType.INT64: st.integers(-(2**63), 2**63 - 1),
    ColumnType.FLOAT64: st.floats() | st.just(-0.0),
    ColumnType.BOOL: st.booleans(),
    ColumnType.STRING: st.text(max_size=10),
    ColumnType.BINARY: st.binary(max_size=10),
}


def _as_export_json(value: Any, column: ColumnType) -> Any:
    if column is ColumnType.FLOAT64 and not math.isfinite(value):
        return float_tag(value)
    if column is ColumnType.BINARY:
        return {"$bytes": base64.b64encode(value).decode()}
    return value


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(list(typed_values)).flatmap(
        lambda c: st.tuples(st.just(c), st.lists(st.none() | typed_values[c], max_size=6))
    )
)
def test_widening_a_typed_column_to_json_gives_the_text_of_the_original_values(
    case: tuple[ColumnType, list[Any]],
) -> None:
    column, values = case
    wire = [None if v is None else _as_export_json(v, column) for v in values]
    typed = typed_array(wire, column)
    widened = json_text_column(typed, column).to_pylist()
    assert widened == [None if w is None else json_text(w) for w in wire]


export_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)  # includes newlines, quotes and non-ASCII
    | st.floats().map(float_tag)
    | st.binary(max_size=6).map(lambda b: {"$bytes": base64.b64encode(b).decode()})
)
export_values = st.recursive(
    export_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


def _comparable(array: pa.Array) -> list[Any]:
    """Values with floats as their bits, so NaN payloads and -0.0 compare exactly."""
    if array.type == pa.float64():
        return [None if v is None else bits(v) for v in array.to_pylist()]
    return list(array.to_pylist())


@settings(max_examples=300, deadline=None)
@given(st.lists(export_values, max_size=12), st.sampled_from(list(ColumnType)))
def test_bulk_columns_equal_converting_value_by_value(
    values: list[Any], column: ColumnType
) -> None:
    try:
        expected = pa.array([to_column_value(v, column) for v in values], column.arrow)
    except TypeError:
        with pytest.raises(TypeError):
            typed_array(values, column)
        return
    built = typed_array(values, column)
    assert built.type == expected.type
    assert _comparable(built) == _comparable(expected)
