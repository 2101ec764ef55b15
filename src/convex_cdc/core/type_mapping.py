"""Convex values → typed Arrow columns.

Documents arrive as ``export_json`` (see :data:`convex_cdc.core.source.WIRE_FORMAT`),
parsed with orjson: ints are Int64, floats are Float64, ``{"$float": b64}`` is a special
float (NaN, ±inf), ``{"$bytes": b64}`` is bytes, other objects and arrays are nested
values. Each top-level field gets one column type:

=====================================  ============================================
Convex type(s) seen for the field      column type
=====================================  ============================================
Id, string                             ``string``
float64 (NaN/±inf/-0 preserved)        ``float64``
int64                                  ``int64``
boolean                                ``bool``
bytes                                  ``binary``
only null so far                       ``null`` (becomes the next type seen)
T and null / field missing             T, nullable
array, object, any other union         ``json``: string holding lossless JSON text
=====================================  ============================================

A type change that is not "null → T" widens the column to ``json`` (never back), so a
column's type only moves up this lattice: ``null`` → scalar → ``json``.

The per-value functions (:func:`kind_of`, :func:`to_column_value`) define the mapping;
the column functions (:func:`values_column_type`, :func:`typed_array`) give the same
results for a whole list of values without a Python call per value where the values need
no conversion (plain strings, ints, bools, floats; ``json`` text via one ``orjson`` call).
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from itertools import chain, repeat
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc


class ConvexKind(StrEnum):
    """The Convex value types, as far as column typing is concerned."""

    NULL = "null"
    INT64 = "int64"
    FLOAT64 = "float64"
    BOOLEAN = "boolean"
    STRING = "string"
    BYTES = "bytes"
    ARRAY = "array"
    OBJECT = "object"


class ColumnType(StrEnum):
    """The type of a typed column, as named in staging state and manifests."""

    NULL = "null"
    STRING = "string"
    INT64 = "int64"
    FLOAT64 = "float64"
    BOOL = "bool"
    BINARY = "binary"
    JSON = "json"

    @property
    def arrow(self) -> pa.DataType:
        """The Arrow type that stores this column."""
        return _ARROW_TYPES[self]


_ARROW_TYPES: Final[Mapping[ColumnType, pa.DataType]] = {
    ColumnType.NULL: pa.null(),
    ColumnType.STRING: pa.string(),
    ColumnType.INT64: pa.int64(),
    ColumnType.FLOAT64: pa.float64(),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.BINARY: pa.binary(),
    ColumnType.JSON: pa.string(),
}

_SCALAR_COLUMN: Final[Mapping[ConvexKind, ColumnType]] = {
    ConvexKind.NULL: ColumnType.NULL,
    ConvexKind.INT64: ColumnType.INT64,
    ConvexKind.FLOAT64: ColumnType.FLOAT64,
    ConvexKind.BOOLEAN: ColumnType.BOOL,
    ConvexKind.STRING: ColumnType.STRING,
    ConvexKind.BYTES: ColumnType.BINARY,
    ConvexKind.ARRAY: ColumnType.JSON,
    ConvexKind.OBJECT: ColumnType.JSON,
}


def kind_of(value: Any) -> ConvexKind:
    """The Convex type of one ``export_json`` value (as parsed by orjson)."""
    if value is None:
        return ConvexKind.NULL
    if isinstance(value, bool):
        return ConvexKind.BOOLEAN
    if isinstance(value, int):
        return ConvexKind.INT64
    if isinstance(value, float):
        return ConvexKind.FLOAT64
    if isinstance(value, str):
        return ConvexKind.STRING
    if isinstance(value, list):
        return ConvexKind.ARRAY
    if isinstance(value, dict):
        if len(value) == 1:
            (key,) = value
            if key == "$float":
                return ConvexKind.FLOAT64
            if key == "$bytes":
                return ConvexKind.BYTES
            if key == "$integer":
                return ConvexKind.INT64
        return ConvexKind.OBJECT
    raise TypeError(f"not an export_json value: {type(value).__name__}")


def column_type_for(kinds: Iterable[ConvexKind]) -> ColumnType:
    """The column type for a field that has held values of ``kinds``."""
    result = ColumnType.NULL
    for kind in kinds:
        result = widen(result, _SCALAR_COLUMN[kind])
    return result


def widen(current: ColumnType, seen: ColumnType) -> ColumnType:
    """Join two column types: null adopts the other, equal types stay, anything else → json."""
    if current is ColumnType.NULL:
        return seen
    if seen is ColumnType.NULL or seen is current:
        return current
    return ColumnType.JSON


def values_column_type(values: Iterable[Any]) -> ColumnType:
    """The column type for a field that has held ``values`` (the join of their types).

    Works on the set of Python types seen; only tagged/nested objects are looked at one
    by one, and not once the result is already ``json``.

    Raises:
        TypeError: a value is not an ``export_json`` value.
    """
    values = values if isinstance(values, list) else list(values)
    result = ColumnType.NULL
    inspect: list[type] = []
    for python_type in set(map(type, values)):
        column = _PLAIN_COLUMN.get(python_type)
        if column is None:
            inspect.append(python_type)
        else:
            result = widen(result, column)
    for python_type in inspect:
        for value in values:
            if type(value) is python_type:
                result = widen(result, _SCALAR_COLUMN[kind_of(value)])
                if result is ColumnType.JSON and python_type is dict:
                    break  # every dict is a valid value; nothing can narrow json
    return result


def decode_float(value: Any) -> float:
    """A float64 from a plain number or a ``{"$float": base64(LE8)}`` tag."""
    if isinstance(value, dict):
        return float(struct.unpack("<d", base64.b64decode(value["$float"]))[0])
    return float(value)


def decode_int(value: Any) -> int:
    """An int64 from a JSON integer or a ``{"$integer": base64(LE8)}`` tag."""
    if isinstance(value, dict):
        return int(struct.unpack("<q", base64.b64decode(value["$integer"]))[0])
    return int(value)


def json_text(value: Any) -> str:
    """Lossless JSON text of an ``export_json`` value (keys sorted)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def to_column_value(value: Any, column: ColumnType) -> Any:
    """Convert one field value to what a column of type ``column`` stores.

    Raises:
        TypeError: the value does not fit the column (the caller should have widened).
    """
    if value is None or column is ColumnType.NULL:
        if value is not None:
            raise TypeError("a null column cannot hold a value")
        return None
    kind = kind_of(value)
    if column is ColumnType.JSON:
        return json_text(value)
    if _SCALAR_COLUMN[kind] is not column:
        raise TypeError(f"a {kind.value} value does not fit a {column.value} column")
    if column is ColumnType.FLOAT64:
        return decode_float(value)
    if column is ColumnType.INT64:
        return decode_int(value)
    if column is ColumnType.BINARY:
        return base64.b64decode(value["$bytes"])
    return value


def typed_array(values: Sequence[Any], column: ColumnType) -> pa.Array:
    """One column's Arrow array: :func:`to_column_value` of every value, without calling it
    per value when the values need no conversion (the common case).

    Raises:
        TypeError: a value does not fit the column.
    """
    types = set(map(type, values))
    if types <= _NO_CONVERSION[column]:
        return pa.array(values, column.arrow)
    if column is ColumnType.JSON and types <= _JSON_TOP_LEVEL:
        return _json_texts(values, nulls=_NONE in types)
    tag = _TAGS.get(column)
    if tag is not None and types <= _NO_CONVERSION[column] | {dict}:
        decode = _TAG_DECODERS[column]
        converted = [
            decode(v[tag]) if type(v) is dict and len(v) == 1 and tag in v else v for v in values
        ]
        if all(type(v) is not dict for v in converted):
            return pa.array(converted, column.arrow)
    return pa.array([to_column_value(value, column) for value in values], column.arrow)


def _json_texts(values: Sequence[Any], *, nulls: bool) -> pa.Array:
    """:func:`json_text` of every value (``None`` → null) with one ``orjson.dumps`` call.

    The values are serialized as one array with a raw newline between them; compact
    JSON never contains a raw newline (strings escape it), so splitting on it recovers
    each value's text exactly, without a Python call or object per value.

    Raises:
        TypeError: a value cannot be serialized (``orjson.JSONEncodeError``).
    """
    if not values:
        return pa.array([], pa.string())
    separated = list(chain.from_iterable(zip(values, repeat(_SEPARATOR))))
    try:
        text = orjson.dumps(separated, option=orjson.OPT_SORT_KEYS)  # "[v1,\n,v2,\n]"
    except orjson.JSONEncodeError:
        # One value at orjson's nesting limit fails only inside the extra array; a value
        # that cannot be serialized at all raises here too.
        return pa.array([None if v is None else json_text(v) for v in values], pa.string())
    parts = pc.split_pattern(pa.array([text[1:-3]], pa.large_binary()), b",\n,")
    # orjson writes valid UTF-8, so binary → string only re-labels the buffers.
    texts = parts.flatten().cast(pa.large_string()).cast(pa.string())
    if nulls:  # None was written as null, and only None is (other values are not JSON null)
        texts = pc.if_else(pc.equal(texts, "null"), pa.scalar(None, pa.string()), texts)
    return texts


def creation_time_array(values: Sequence[Any]) -> pa.Array:
    """The ``_creationTime`` column (float64 ms) from the documents' ``_creationTime`` values."""
    if set(map(type, values)) <= {float, _NONE}:
        return pa.array(values, pa.float64())
    return pa.array([None if v is None else decode_float(v) for v in values], pa.float64())


def json_text_column(array: pa.Array | pa.ChunkedArray, column: ColumnType) -> pa.Array:
    """Turn a typed column back into lossless JSON text, for widening it to ``json``.

    The text is exactly what :func:`json_text` gives for the original ``export_json``
    value, so old (converted) and new (parsed) rows of a widened column agree: int64
    ``5`` → ``5``, float ``-0.0`` → ``-0.0``, NaN/±inf → ``{"$float":"<base64 LE8>"}``
    (bit-exact), bytes → ``{"$bytes":"<base64>"}``, string → a JSON string, bool →
    ``true``/``false``. Nulls stay null.

    Raises:
        TypeError: ``array`` does not hold a ``column`` column.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not array.type.equals(column.arrow):
        raise TypeError(f"a {array.type} array is not a {column.value} column")
    if column is ColumnType.JSON:
        return array
    if column is ColumnType.NULL:
        return pa.nulls(len(array), pa.string())
    if column in (ColumnType.INT64, ColumnType.BOOL):
        # Arrow prints these exactly as JSON does ("-7", "true").
        return array.cast(pa.string())
    encode = _JSON_ENCODERS[column]
    return pa.array(
        [None if value is None else encode(value) for value in array.to_pylist()], pa.string()
    )


def _float_json(value: float) -> str:
    if math.isfinite(value):
        return orjson.dumps(value).decode()
    return json_text({"$float": base64.b64encode(struct.pack("<d", value)).decode()})


def _bytes_json(value: bytes) -> str:
    return json_text({"$bytes": base64.b64encode(value).decode()})


def _string_json(value: str) -> str:
    return orjson.dumps(value).decode()


_NONE: Final = type(None)
_NO_CONVERSION: Final[Mapping[ColumnType, frozenset[type]]] = {
    ColumnType.NULL: frozenset({_NONE}),
    ColumnType.STRING: frozenset({_NONE, str}),
    ColumnType.INT64: frozenset({_NONE, int}),
    ColumnType.FLOAT64: frozenset({_NONE, float}),
    ColumnType.BOOL: frozenset({_NONE, bool}),
    ColumnType.BINARY: frozenset({_NONE}),
    ColumnType.JSON: frozenset({_NONE}),
}
"""Python types (exact, as orjson produces them) a column stores as they are."""

_PLAIN_COLUMN: Final[Mapping[type, ColumnType]] = {
    _NONE: ColumnType.NULL,
    bool: ColumnType.BOOL,
    int: ColumnType.INT64,
    float: ColumnType.FLOAT64,
    str: ColumnType.STRING,
    list: ColumnType.JSON,
}
"""Column type by exact Python type, for every type whose values all map alike."""

_JSON_TOP_LEVEL: Final = frozenset({_NONE, bool, int, float, str, list, dict})
_SEPARATOR: Final = orjson.Fragment(b"\n")
_TAGS: Final[Mapping[ColumnType, str]] = {
    ColumnType.FLOAT64: "$float",
    ColumnType.INT64: "$integer",
    ColumnType.BINARY: "$bytes",
}
_TAG_DECODERS: Final[Mapping[ColumnType, Callable[[Any], Any]]] = {
    ColumnType.FLOAT64: lambda payload: decode_float({"$float": payload}),
    ColumnType.INT64: lambda payload: decode_int({"$integer": payload}),
    ColumnType.BINARY: base64.b64decode,
}

_JSON_ENCODERS: Final[Mapping[ColumnType, Callable[[Any], str]]] = {
    ColumnType.FLOAT64: _float_json,
    ColumnType.BINARY: _bytes_json,
    ColumnType.STRING: _string_json,
}
