"""Convex values → typed Arrow columns (design.md section 4).

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
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

import orjson
import pyarrow as pa


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

SYSTEM_COLUMNS: Final = ("_id", "_creationTime", "_ts")
"""Leading columns of every current-state table: id, creation time (ms) and last change (ns)."""

SYSTEM_COLUMN_TYPES: Final[Mapping[str, pa.DataType]] = {
    "_id": pa.string(),
    "_creationTime": pa.float64(),
    "_ts": pa.int64(),
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


def infer_column_types(documents: Iterable[Mapping[str, Any] | None]) -> dict[str, ColumnType]:
    """Column type per user field over ``documents`` (``None`` entries are deletes).

    System fields (``_id``, ``_creationTime``) are not included; they have fixed types.
    A field missing from some documents is simply nullable, which every column is.
    """
    types: dict[str, ColumnType] = {}
    for document in documents:
        if document is None:
            continue
        for name, value in document.items():
            if name[:1] == "_":
                continue
            seen = _SCALAR_COLUMN[kind_of(value)]
            current = types.get(name)
            types[name] = seen if current is None else widen(current, seen)
    return types


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


def typed_columns(
    documents: Sequence[Mapping[str, Any] | None],
    columns: Mapping[str, ColumnType],
) -> dict[str, pa.Array]:
    """Build one Arrow array per user field from parsed documents.

    ``documents[i] is None`` (a delete) yields nulls in every column. Fields of a document
    that are not in ``columns`` are ignored; missing fields are null.
    """
    arrays: dict[str, pa.Array] = {}
    for name, column in columns.items():
        converted = [
            None if doc is None else to_column_value(doc.get(name), column) for doc in documents
        ]
        arrays[name] = pa.array(converted, column.arrow)
    return arrays


def system_columns(
    ids: Sequence[str],
    documents: Sequence[Mapping[str, Any] | None],
    tss: Sequence[int],
) -> dict[str, pa.Array]:
    """The leading ``_id``, ``_creationTime`` and ``_ts`` arrays for the same rows."""
    creation = [
        None
        if doc is None or doc.get("_creationTime") is None
        else decode_float(doc["_creationTime"])
        for doc in documents
    ]
    return {
        "_id": pa.array(ids, pa.string()),
        "_creationTime": pa.array(creation, pa.float64()),
        "_ts": pa.array(tss, pa.int64()),
    }


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


_JSON_ENCODERS: Final[Mapping[ColumnType, Callable[[Any], str]]] = {
    ColumnType.FLOAT64: _float_json,
    ColumnType.BINARY: _bytes_json,
    ColumnType.STRING: _string_json,
}
