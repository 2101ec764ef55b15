"""Inferred table shapes, kept incrementally, rendered as ``json_schemas``.

What the server answers is summarised in docs/convex-export-api.md §9.

Each table keeps a :class:`ShapeCounts` of its live documents' user fields: how many values
of each kind sit at each position. A write adds the new document and subtracts the old one,
so the shape always describes the *current* data (columns appear and disappear with it) and
rendering costs the size of the shape, not of the table.

Counting walks export_json trees (what the store keeps), so removing an old revision needs
no decoding beyond ``orjson.loads``.

Reproduced from the server: optional fields (missing from some objects) are left out of
``required``; a string position whose values all decode as ids of existing tables becomes
``Id(T)``; floats that ever held NaN/±inf/-0.0 get the ``anyOf`` form; never-populated
array elements give ``items: false``; union members come in the server's type ranking
(Id, null, int64, float64, boolean, string, bytes, object, array).

Not reproduced: the server's shape inference gives up on very heterogeneous data (it then
falls back to the declared schema, with ``NoSchemaForExport`` & co.) and infers records;
this emulator never gives up, so those errors and ``{}`` shapes do not occur.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from convex_cdc.devserver.ids import InvalidId, decode_document_id
from convex_cdc.devserver.value_encoding import ValueFormat

JSON_SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"
SYSTEM_COLUMNS = ("_creationTime", "_id")

TableNameOf = Callable[[int], str | None]
"""Resolves a table number (in the document's component) to a table name, if it exists."""


class ShapeCounts:
    """Counts of the values seen at one position, by kind, recursively."""

    __slots__ = (
        "array_items",
        "arrays",
        "bools",
        "bytes",
        "fields",
        "floats",
        "id_strings",
        "ints",
        "nulls",
        "objects",
        "special_floats",
        "strings",
    )

    def __init__(self) -> None:
        self.nulls = 0
        self.bools = 0
        self.ints = 0
        self.floats = 0
        self.special_floats = 0
        self.strings = 0
        self.id_strings: dict[int, int] = {}
        self.bytes = 0
        self.arrays = 0
        self.array_items: ShapeCounts | None = None
        self.objects = 0
        self.fields: dict[str, ShapeCounts] = {}

    @property
    def total(self) -> int:
        """How many values are counted here (for a field: how many objects have it)."""
        return (
            self.nulls
            + self.bools
            + self.ints
            + self.floats
            + self.strings
            + self.bytes
            + self.arrays
            + self.objects
        )

    def add(self, node: Any, sign: int) -> None:
        """Count (``sign=1``) or uncount (``sign=-1``) one export_json value."""
        kind = type(node)
        if kind is str:
            self.strings += sign
            if 31 <= len(node) <= 37:
                number = _table_number_of(node)
                if number is None:
                    return
                count = self.id_strings.get(number, 0) + sign
                if count:
                    self.id_strings[number] = count
                else:
                    del self.id_strings[number]
        elif node is None:
            self.nulls += sign
        elif kind is bool:
            self.bools += sign
        elif kind is int:
            self.ints += sign
        elif kind is float:
            self.floats += sign
            if node == 0.0 and math.copysign(1.0, node) < 0:
                self.special_floats += sign
        elif kind is list:
            self.arrays += sign
            if node:
                items = self.array_items
                if items is None:
                    items = self.array_items = ShapeCounts()
                for item in node:
                    items.add(item, sign)
                if sign < 0 and items.total == 0:
                    self.array_items = None
        elif kind is dict:
            if len(node) == 1:
                key = next(iter(node))
                if key == "$float":
                    self.floats += sign
                    self.special_floats += sign
                    return
                if key == "$bytes":
                    self.bytes += sign
                    return
            self.add_object(node, sign)

    def add_object(self, node: dict[str, Any], sign: int) -> None:
        """Count one object's fields (used for documents, whose system fields are skipped)."""
        self.objects += sign
        fields = self.fields
        for key, value in node.items():
            field = fields.get(key)
            if field is None:
                field = fields[key] = ShapeCounts()
            # The commonest leaves are counted here, without a call (a million documents
            # go through this loop when the devserver is seeded).
            kind = type(value)
            if kind is bool:
                field.bools += sign
            elif kind is float and value != 0.0:
                field.floats += sign
            elif kind is str and not 31 <= len(value) <= 37:
                field.strings += sign
            elif kind is int:
                field.ints += sign
            elif value is None:
                field.nulls += sign
            else:
                field.add(value, sign)
            if sign < 0 and field.total == 0:
                del fields[key]


@functools.lru_cache(maxsize=1 << 16)
def _table_number_of(text: str) -> int | None:
    """The table number if ``text`` is a document id; documents reference the same ids
    (users, channels...) over and over, hence the cache."""
    try:
        return decode_document_id(text).table_number
    except InvalidId:
        return None


def _id_schema(table: str) -> dict[str, Any]:
    return {"$description": f"Id({table})", "type": "string"}


def _int64_schema(fmt: ValueFormat) -> dict[str, Any]:
    if fmt is ValueFormat.CLEAN:
        return {"$description": "int64 represented as base10 string", "type": "string"}
    if fmt is ValueFormat.ENCODED:
        return {
            "$description": "int64",
            "type": "object",
            "properties": {
                "$integer": {"$description": "int64 -> little-endian -> base64", "type": "string"}
            },
        }
    return {"$description": "int64", "type": "number"}


def float64_schema(has_special_values: bool, fmt: ValueFormat) -> dict[str, Any]:
    """A float64 position; the ``anyOf`` form when NaN/±inf/-0.0 may occur."""
    if not has_special_values:
        return {"type": "number"}
    if fmt is ValueFormat.CLEAN:
        special: dict[str, Any] = {"type": "string", "$description": "-inf, inf, or NaN"}
    else:
        special = {
            "type": "object",
            "$description": (
                "-0, -inf, inf, or NaN" if fmt is ValueFormat.ENCODED else "-inf, inf, or NaN"
            ),
            "properties": {
                "$float": {"$description": "float64 -> little-endian -> base64", "type": "string"}
            },
        }
    return {"$description": "float64", "anyOf": [{"type": "number"}, special]}


def _bytes_schema(fmt: ValueFormat) -> dict[str, Any]:
    if fmt is ValueFormat.CLEAN:
        return {"$description": "base64 bytes", "type": "string"}
    return {
        "type": "object",
        "$description": "base64 bytes",
        "properties": {"$bytes": {"type": "string"}},
    }


def object_schema(properties: dict[str, tuple[Any, bool]]) -> dict[str, Any]:
    """An object schema from ``{name: (schema, optional)}``; properties and required sorted."""
    names = sorted(properties)
    return {
        "type": "object",
        "properties": {name: properties[name][0] for name in names},
        "additionalProperties": False,
        "required": [name for name in names if not properties[name][1]],
    }


def shape_schema(shape: ShapeCounts, fmt: ValueFormat, table_name_of: TableNameOf) -> Any:
    """The JSON schema of one position; ``False`` when nothing was ever seen there."""
    variants: list[Any] = []
    plain_strings = shape.strings > 0
    if plain_strings and sum(shape.id_strings.values()) == shape.strings:
        id_tables = [table_name_of(number) for number in sorted(shape.id_strings)]
        if all(name is not None for name in id_tables):
            variants.extend(_id_schema(name) for name in id_tables if name is not None)
            plain_strings = False
    if shape.nulls:
        variants.append({"type": "null"})
    if shape.ints:
        variants.append(_int64_schema(fmt))
    if shape.floats:
        variants.append(float64_schema(shape.special_floats > 0, fmt))
    if shape.bools:
        variants.append({"type": "boolean"})
    if plain_strings:
        variants.append({"type": "string"})
    if shape.bytes:
        variants.append(_bytes_schema(fmt))
    if shape.objects:
        variants.append(
            object_schema(
                {
                    name: (
                        shape_schema(field, fmt, table_name_of),
                        field.total < shape.objects,
                    )
                    for name, field in shape.fields.items()
                }
            )
        )
    if shape.arrays:
        items = shape.array_items
        item_schema = shape_schema(items, fmt, table_name_of) if items is not None else False
        variants.append({"type": "array", "items": item_schema})
    if not variants:
        return False
    if len(variants) == 1:
        return variants[0]
    return {"anyOf": variants}


def table_schema(
    table: str,
    documents: ShapeCounts,
    fmt: ValueFormat,
    table_name_of: TableNameOf,
    *,
    delta_schema: bool,
) -> dict[str, Any]:
    """The ``json_schemas`` entry of one table (``documents`` counts its user fields)."""
    properties: dict[str, tuple[Any, bool]] = {
        "_creationTime": (float64_schema(False, fmt), False),
        "_id": (_id_schema(table), False),
    }
    for name, field in documents.fields.items():
        properties[name] = (
            shape_schema(field, fmt, table_name_of),
            field.total < documents.objects,
        )
    schema = object_schema(properties)
    if delta_schema:
        schema["properties"].update(
            {
                "_table": {"type": "string"},
                "_component": {"type": "string"},
                "_ts": {"type": "integer"},
                "_deleted": {"type": "boolean"},
            }
        )
    schema["$schema"] = JSON_SCHEMA_DRAFT
    return schema


def column_names(documents: ShapeCounts) -> list[str]:
    """Top-level column names of a table's current shape, sorted (``get_table_column_names``)."""
    return sorted([*SYSTEM_COLUMNS, *documents.fields])
