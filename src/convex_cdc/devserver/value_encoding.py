"""Convex values on the wire: the five ``format`` names and their three encodings.

The encodings are summarised in docs/convex-export-api.md §10.

``json``/``convex_clean_json`` is the lossy clean JSON, ``convex_encoded_json``/``convex_json``
the ``$``-tagged lossless form, ``export_json`` the mostly-plain lossless form. Documents are
stored once as ``export_json`` bytes; the other encodings are derived from the parsed export
tree (:func:`export_to`) without going back to Python values.

Numbers are printed by orjson, which writes floats in shortest round-trip form with a ``.``
or an exponent (``3.0``, ``1e+21``) and Int64 as plain integers, as the server does. Object
keys are sorted (``OPT_SORT_KEYS``), at every level.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import orjson

from convex_cdc.devserver.writes import ConvexValue

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_NESTING = 64


class ValueFormat(Enum):
    """The three encodings behind the five accepted ``format`` names."""

    CLEAN = "clean"
    ENCODED = "encoded"
    EXPORT = "export"


FORMAT_NAMES: Mapping[str, ValueFormat] = {
    "json": ValueFormat.CLEAN,
    "convex_clean_json": ValueFormat.CLEAN,
    "convex_encoded_json": ValueFormat.ENCODED,
    "convex_json": ValueFormat.ENCODED,
    "export_json": ValueFormat.EXPORT,
}


class UnknownFormat(ValueError):
    """A ``format`` parameter that is none of the five names (case-sensitive)."""


def parse_format(name: str | None) -> ValueFormat:
    """The encoding for a ``format`` parameter; missing means ``json``.

    Raises:
        UnknownFormat: ``name`` is not one of the five accepted names.
    """
    if name is None:
        return ValueFormat.CLEAN
    try:
        return FORMAT_NAMES[name]
    except KeyError:
        raise UnknownFormat(name) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _float_tag(value: float) -> dict[str, str]:
    return {"$float": _b64(struct.pack("<d", value))}


def _is_special(value: float) -> bool:
    """NaN, ±inf or -0.0: the floats that plain JSON numbers cannot carry losslessly."""
    if value - value == 0.0:  # finite (NaN and ±inf give NaN)
        return value == 0.0 and math.copysign(1.0, value) < 0
    return True


_AS_IS = frozenset({str, bool, type(None)})


class _ExportEncoder:
    """One walk over a Python value: validates it and builds its export_json tree."""

    __slots__ = ("neutral",)

    def __init__(self) -> None:
        # Stays true while the value holds nothing that encodes differently per format
        # (Int64, Bytes, NaN/±inf/-0.0); such documents share one cached body.
        self.neutral = True

    def encode(self, value: ConvexValue, depth: int) -> Any:
        kind = type(value)
        if kind is str or value is None or kind is bool:
            return value
        if kind is int:
            if not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
                raise ValueError(f"integer {value!r} does not fit in Int64")
            self.neutral = False
            return value
        if kind is float:
            if _is_special(value):  # type: ignore[arg-type]
                self.neutral = False
                if value == 0.0:
                    return value
                return _float_tag(value)  # type: ignore[arg-type]
            return value
        if kind is bytes:
            self.neutral = False
            return {"$bytes": _b64(value)}  # type: ignore[arg-type]
        if depth >= MAX_NESTING:
            raise ValueError(f"value is nested more than {MAX_NESTING} levels deep")
        # Strings, nulls and booleans are their own tree: kept without a call (the hot path
        # when a million documents are written).
        if kind is list:
            return [
                item if type(item) in _AS_IS else self.encode(item, depth + 1)
                for item in value  # type: ignore[union-attr]
            ]
        if kind is dict:
            out = {}
            for key, item in value.items():  # type: ignore[union-attr]
                if type(key) is not str or not key or key[0] == "$":
                    raise ValueError(f"invalid field name {key!r}")
                item_kind = type(item)
                if item_kind in _AS_IS or (
                    item_kind is float and item != 0.0 and item - item == 0.0  # type: ignore[operator]
                ):
                    out[key] = item  # a finite non-zero float is plain too
                elif item_kind is int and INT64_MIN <= item <= INT64_MAX:  # type: ignore[operator]
                    out[key] = item
                    self.neutral = False
                else:
                    out[key] = self.encode(item, depth + 1)
            return out
        raise ValueError(f"unsupported value type {kind.__name__!s}")


def to_export_tree(value: ConvexValue) -> tuple[Any, bool]:
    """The export_json tree of ``value`` and whether all formats encode it identically.

    Raises:
        ValueError: the value is not a valid Convex value (Int64 overflow, ``$`` field
            names, unsupported Python type, too deep).
    """
    encoder = _ExportEncoder()
    tree = encoder.encode(value, 0)
    return tree, encoder.neutral


def _to_clean(node: Any) -> Any:
    kind = type(node)
    if kind is int:
        return str(node)
    if kind is list:
        return [_to_clean(item) for item in node]
    if kind is dict:
        if len(node) == 1:
            key = next(iter(node))
            if key == "$float":
                number = struct.unpack("<d", base64.b64decode(node[key]))[0]
                if math.isnan(number):
                    return "NaN"
                if math.isinf(number):
                    return "Infinity" if number > 0 else "-Infinity"
                return number
            if key == "$bytes":
                return node[key]
        return {key: _to_clean(item) for key, item in node.items()}
    return node


def _to_encoded(node: Any) -> Any:
    kind = type(node)
    if kind is int:
        return {"$integer": _b64(struct.pack("<q", node))}
    if kind is float:
        if node == 0.0 and math.copysign(1.0, node) < 0:
            return _float_tag(node)
        return node
    if kind is list:
        return [_to_encoded(item) for item in node]
    if kind is dict:
        if len(node) == 1 and next(iter(node)).startswith("$"):
            return node  # $float (NaN/±inf) and $bytes are spelled alike in both formats
        return {key: _to_encoded(item) for key, item in node.items()}
    return node


def export_to(tree: Any, fmt: ValueFormat) -> Any:
    """Convert a parsed export_json tree to the JSON tree of another format."""
    if fmt is ValueFormat.EXPORT:
        return tree
    if fmt is ValueFormat.ENCODED:
        return _to_encoded(tree)
    return _to_clean(tree)


def dumps_sorted(tree: Any) -> bytes:
    """Compact JSON with keys sorted at every level."""
    return orjson.dumps(tree, option=orjson.OPT_SORT_KEYS)


def dumps_body(tree: Mapping[str, Any]) -> bytes:
    """A document object's members without the braces, ready to follow metadata keys."""
    return dumps_sorted(tree)[1:-1]


def convert_body(export_body: bytes, fmt: ValueFormat) -> bytes:
    """Re-encode a document body stored as export_json into ``fmt``."""
    if fmt is ValueFormat.EXPORT:
        return export_body
    return dumps_body(export_to(orjson.loads(b"{" + export_body + b"}"), fmt))


class InvalidExportValue(ValueError):
    """A value in a write request that is not valid export_json."""


def _decode_tag(key: str, payload: Any) -> ConvexValue:
    if type(payload) is not str:
        raise InvalidExportValue(f"{key} payload must be a base64 string")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidExportValue(f"{key} payload is not standard base64") from exc
    if key == "$bytes":
        return raw
    if len(raw) != 8:
        raise InvalidExportValue(f"{key} payload must encode 8 bytes")
    if key == "$integer":
        return int(struct.unpack("<q", raw)[0])
    if key == "$float":
        return float(struct.unpack("<d", raw)[0])
    raise InvalidExportValue(f"unknown tagged value {key}")


def from_export_tree(node: Any, depth: int = 0) -> ConvexValue:
    """Decode parsed export_json into Python values (JSON int → Int64, float → Float64).

    ``$integer`` is accepted too, so encoded-JSON Int64 values can be written.

    Raises:
        InvalidExportValue: unknown ``$`` tags, bad base64, or non-JSON values.
    """
    kind = type(node)
    if kind is bool or node is None or kind is str or kind is float:
        return node  # type: ignore[no-any-return]
    if kind is int:
        if not INT64_MIN <= node <= INT64_MAX:
            raise InvalidExportValue(f"integer {node} does not fit in Int64")
        return node  # type: ignore[no-any-return]
    if depth >= MAX_NESTING:
        raise InvalidExportValue(f"value is nested more than {MAX_NESTING} levels deep")
    if kind is list:
        return [from_export_tree(item, depth + 1) for item in node]
    if kind is dict:
        if node and next(iter(node)).startswith("$"):
            if len(node) != 1:
                raise InvalidExportValue("a tagged value has exactly one key")
            key, payload = next(iter(node.items()))
            return _decode_tag(key, payload)
        return {key: from_export_tree(item, depth + 1) for key, item in node.items()}
    raise InvalidExportValue(f"unsupported JSON value {node!r}")


def strip_columns(body: bytes, keep: Callable[[str], bool]) -> bytes:
    """A cached body with the top-level columns that ``keep`` rejects removed."""
    tree = orjson.loads(b"{" + body + b"}")
    return dumps_body({key: value for key, value in tree.items() if keep(key)})
