"""Convex value types → column types (design.md section 4) and exact value conversion."""

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
    SYSTEM_COLUMN_TYPES,
    ColumnType,
    ConvexKind,
    column_type_for,
    decode_float,
    decode_int,
    infer_column_types,
    json_text,
    json_text_column,
    kind_of,
    system_columns,
    to_column_value,
    typed_columns,
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
    assert dict(SYSTEM_COLUMN_TYPES) == {
        "_id": pa.string(),
        "_creationTime": pa.float64(),
        "_ts": pa.int64(),
    }


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


def test_inference_skips_system_fields_treats_missing_fields_as_nullable_and_widens() -> None:
    docs = [
        {"_id": "a", "_creationTime": 1.0, "n": 1, "s": "x", "mixed": 1},
        None,  # a delete
        {"_id": "b", "n": None, "mixed": 2.5, "tags": ["a"]},
        {"_id": "c", "s": "y"},
    ]
    assert infer_column_types(docs) == {
        "n": ColumnType.INT64,
        "s": ColumnType.STRING,
        "mixed": ColumnType.JSON,
        "tags": ColumnType.JSON,
    }


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
    array = typed_columns([{"z": -0.0}], {"z": ColumnType.FLOAT64})["z"]
    assert math.copysign(1.0, array[0].as_py()) == -1.0


@pytest.mark.parametrize("number", [-(2**63), 2**63 - 1, 2**53 + 1, 0, -1])
def test_int64_extremes_convert_exactly_from_both_encodings(number: int) -> None:
    assert to_column_value(number, ColumnType.INT64) == number
    assert decode_int({"$integer": base64.b64encode(struct.pack("<q", number)).decode()}) == number
    assert typed_columns([{"n": number}], {"n": ColumnType.INT64})["n"].to_pylist() == [number]


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


def test_typed_columns_give_nulls_for_deletes_and_missing_fields() -> None:
    docs = [{"n": 1, "s": "x", "b": {"$bytes": "AA=="}}, None, {"s": "y"}]
    arrays = typed_columns(
        docs, {"n": ColumnType.INT64, "s": ColumnType.STRING, "b": ColumnType.BINARY}
    )
    assert arrays["n"].to_pylist() == [1, None, None]
    assert arrays["s"].to_pylist() == ["x", None, "y"]
    assert arrays["b"].type == pa.binary() and arrays["b"].to_pylist() == [b"\x00", None, None]


def test_system_columns_keep_creation_time_in_ms_and_ts_in_ns() -> None:
    docs = [{"_creationTime": 1755820789999.4512}, None, {}]
    arrays = system_columns(["a", "b", "c"], docs, [2**62, 2**62 + 1, 2**62 + 2])
    assert arrays["_creationTime"].to_pylist() == [1755820789999.4512, None, None]
    assert arrays["_ts"].to_pylist() == [2**62, 2**62 + 1, 2**62 + 2]
    assert arrays["_id"].type == pa.string()


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
    typed = typed_columns([{"f": w} for w in wire], {"f": column})["f"]
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
            typed_columns([{"f": v} for v in values], {"f": column})
        return
    built = typed_columns([{"f": v} for v in values], {"f": column})["f"]
    assert built.type == expected.type
    assert _comparable(built) == _comparable(expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.none() | st.dictionaries(st.sampled_from("abc_"), export_values), max_size=8))
def test_inferred_types_are_the_join_of_every_value_kind(
    documents: list[dict[str, Any] | None],
) -> None:
    kinds: dict[str, list[ConvexKind]] = {}
    for document in documents:
        for name, value in (document or {}).items():
            if not name.startswith("_"):
                kinds.setdefault(name, []).append(kind_of(value))
    expected = {name: column_type_for(seen) for name, seen in kinds.items()}
    assert infer_column_types(documents) == expected
