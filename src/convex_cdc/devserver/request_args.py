"""Request arguments: query strings for GET, JSON bodies for POST.

How the server parses them is summarised in docs/convex-export-api.md §4.

Each endpoint declares its typed fields; parsing mimics serde: a GET value that does not
parse (``deltaSchema=1``, ``cursor=abc``) → 400 ``BadQueryArgs``; a POST without a JSON
content type, with bad JSON or with a wrongly typed field (``"cursor": "123"``) → 400
``BadJsonBody``. Unknown parameters are ignored and kept, because the selection forms
(``selection``, ``tableName``, ``component``) are read from the same map afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson

from convex_cdc.devserver.api_errors import ApiError, bad_json_body, bad_query_args

FieldKind = Literal["i64", "str", "bool", "usize"]
FieldSpec = Mapping[str, FieldKind]

_INTEGER = re.compile(r"[+-]?[0-9]+")
_I64 = (-(2**63), 2**63 - 1)
_USIZE = (0, 2**64 - 1)


def query_pairs(query: str) -> list[tuple[str, str]]:
    """Decode a query string (``+`` is a space, percent-escapes must be UTF-8).

    Raises:
        ApiError: 400 ``BadQueryArgs`` for undecodable escapes.
    """
    try:
        return parse_qsl(query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_query_args(str(exc)) from None


def _from_query(name: str, kind: FieldKind, raw: str) -> Any:
    if kind == "str":
        return raw
    if kind == "bool":
        if raw in ("true", "false"):
            return raw == "true"
        raise bad_query_args(f"invalid value for {name}: expected `true` or `false`")
    bounds = _I64 if kind == "i64" else _USIZE
    if not _INTEGER.fullmatch(raw) or not bounds[0] <= int(raw) <= bounds[1]:
        raise bad_query_args(f"invalid digit found in {name}")
    return int(raw)


def parse_query(query: str, spec: FieldSpec) -> dict[str, Any]:
    """The query parameters, typed per ``spec`` (other parameters stay strings).

    Raises:
        ApiError: 400 ``BadQueryArgs``.
    """
    out: dict[str, Any] = {}
    for name, raw in query_pairs(query):
        if name in out and name in spec:
            raise bad_query_args(f"duplicate field `{name}`")
        kind = spec.get(name)
        out[name] = raw if kind is None else _from_query(name, kind, raw)
    return out


def is_json_content_type(value: str | None) -> bool:
    """``application/json`` or any ``+json`` subtype, parameters ignored."""
    if value is None:
        return False
    mime = value.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


def _check_json_field(name: str, kind: FieldKind, value: Any) -> None:
    if value is None:
        return
    if kind == "str":
        ok = isinstance(value, str)
    elif kind == "bool":
        ok = isinstance(value, bool)
    else:
        low, high = _I64 if kind == "i64" else _USIZE
        ok = type(value) is int and low <= value <= high
    if not ok:
        raise bad_json_body(f"invalid type for `{name}`: expected {kind}")


def parse_json_body(content_type: str | None, body: bytes, spec: FieldSpec) -> dict[str, Any]:
    """The JSON body's fields, type-checked per ``spec``; ``null`` means absent.

    Raises:
        ApiError: 400 ``BadJsonBody``.
    """
    if not is_json_content_type(content_type):
        raise ApiError(400, "BadJsonBody", "Expected request with `Content-Type: application/json`")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_json_body(str(exc)) from None
    if not isinstance(parsed, dict):
        raise bad_json_body("expected a JSON object")
    for name, kind in spec.items():
        _check_json_field(name, kind, parsed.get(name))
    return parsed
