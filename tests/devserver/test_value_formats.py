"""The five ``format`` names and their exact encodings (docs/convex-export-api.md §10)."""

from __future__ import annotations

import math
import re
import struct
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.devserver.value_encoding import (
    ValueFormat,
    dumps_sorted,
    export_to,
    from_export_tree,
    to_export_tree,
)
from tests.devserver.export_calls import call, error, insert, parse
from tests.fixtures.devserver import RunningDevServer

NAN = {"$float": "AAAAAAAA+H8="}
INF = {"$float": "AAAAAAAA8H8="}
NEG_INF = {"$float": "AAAAAAAA8P8="}
NEG_ZERO = {"$float": "AAAAAAAAAIA="}

# Field values as written (export_json), then their expected clean / encoded / export forms.
CASES: dict[str, tuple[Any, Any, Any, Any]] = {
    "a_int": (42, "42", {"$integer": "KgAAAAAAAAA="}, 42),
    "b_neg": (-7, "-7", {"$integer": "+f////////8="}, -7),
    "c_big": (2**53 + 1, "9007199254740993", {"$integer": "AQAAAAAAIAA="}, 2**53 + 1),
    "d_min": (-(2**63), str(-(2**63)), {"$integer": "AAAAAAAAAIA="}, -(2**63)),
    "e_float": (1.5, 1.5, 1.5, 1.5),
    "f_whole": (3.0, 3.0, 3.0, 3.0),
    "g_negzero": (NEG_ZERO, -0.0, NEG_ZERO, -0.0),
    "h_nan": (NAN, "NaN", NAN, NAN),
    "i_inf": (INF, "Infinity", INF, INF),
    "j_neginf": (NEG_INF, "-Infinity", NEG_INF, NEG_INF),
    "k_bytes": ({"$bytes": "ABCD"}, "ABCD", {"$bytes": "ABCD"}, {"$bytes": "ABCD"}),
    "l_null": (None, None, None, None),
    "m_bool": (True, True, True, True),
    "n_str": ("héllo", "héllo", "héllo", "héllo"),
    "o_array": ([1, 2.5], ["1", 2.5], [{"$integer": "AQAAAAAAAAA="}, 2.5], [1, 2.5]),
    "p_object": (
        {"z": 1, "a": None},
        {"a": None, "z": "1"},
        {"a": None, "z": {"$integer": "AQAAAAAAAAA="}},
        {"a": None, "z": 1},
    ),
    "q_huge": (1e21, 1e21, 1e21, 1e21),
    "r_tiny": (1.2345e-7, 1.2345e-7, 1.2345e-7, 1.2345e-7),
}
FORMATS = {
    "json": 1,
    "convex_clean_json": 1,
    "convex_encoded_json": 2,
    "convex_json": 2,
    "export_json": 3,
}


def _written(server: RunningDevServer) -> None:
    server.transact([insert("v", **{name: case[0] for name, case in CASES.items()})])


def _same(actual: Any, expected: Any) -> bool:
    """Equality that also tells -0.0 from 0.0 and compares nested values exactly."""
    if isinstance(expected, float):
        return isinstance(actual, float) and (
            (math.isnan(actual) and math.isnan(expected))
            or (actual == expected and math.copysign(1, actual) == math.copysign(1, expected))
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(_same(actual[key], value) for key, value in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_same(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return type(actual) is type(expected) and actual == expected


def test_every_format_name_encodes_values_exactly(devserver: RunningDevServer) -> None:
    start = devserver.transact([insert("other", x=1)])["ts"]
    _written(devserver)
    for name, column in FORMATS.items():
        snapshot = parse(
            call(devserver, "GET", "/api/list_snapshot", params={"format": name, "tableName": "v"})
        )
        deltas = parse(
            call(
                devserver,
                "POST",
                "/api/document_deltas",
                json={"cursor": start, "format": name, "tableName": "v"},
            )
        )
        for value in (snapshot["values"][0], deltas["values"][0]):
            for field, case in CASES.items():
                assert _same(value[field], case[column]), (name, field, value[field])


def test_a_missing_format_means_json(devserver: RunningDevServer) -> None:
    _written(devserver)
    plain = call(devserver, "GET", "/api/list_snapshot").content
    explicit = call(devserver, "GET", "/api/list_snapshot", params={"format": "json"}).content
    assert plain == explicit
    assert orjson.loads(plain)["values"][0]["a_int"] == "42"


def test_unknown_formats_are_rejected(devserver: RunningDevServer) -> None:
    ts = devserver.transact([insert("t", a=1)])["ts"]
    for bad in ("JSON", "csv", "", "convex_encoded"):
        for path, params in [
            ("/api/list_snapshot", {}),
            ("/api/document_deltas", {"cursor": ts}),
            ("/api/json_schemas", {}),
        ]:
            response = call(devserver, "GET", path, params={**params, "format": bad})
            assert error(response) == (400, "BadFormat"), (bad, path)


def test_floats_always_print_with_a_point_or_exponent(devserver: RunningDevServer) -> None:
    devserver.transact([insert("t", a=3.0, b=1e21, c=-0.0, d=100.0, e=1, f=5e-324)])
    for name in ("json", "convex_encoded_json", "export_json"):
        raw = call(devserver, "GET", "/api/list_snapshot", params={"format": name}).content
        numbers = re.findall(rb'"([a-f])":(-?[0-9][0-9.eE+-]*)', raw)
        for field, text in numbers:
            if field == b"e":
                assert text == b"1" and name == "export_json"
            else:
                assert b"." in text or b"e" in text, (name, field, text)
        ts_text = re.search(rb'"_ts":([^,]+),', raw)
        assert ts_text is not None and ts_text.group(1).isdigit()
        creation = re.search(rb'"_creationTime":([^,]+),', raw)
        assert creation is not None and b"." in creation.group(1)


def test_snapshot_and_cursor_timestamps_are_json_integers(devserver: RunningDevServer) -> None:
    ts = devserver.transact([insert("t", a=1)])["ts"]
    assert ts > 2**53
    snapshot_raw = call(devserver, "GET", "/api/list_snapshot").content
    assert re.search(rb'"snapshot":[0-9]+,', snapshot_raw)
    deltas_raw = call(devserver, "GET", "/api/document_deltas", params={"cursor": ts - 1}).content
    assert re.search(rb'"cursor":[0-9]+,', deltas_raw)
    assert orjson.loads(deltas_raw)["cursor"] == ts


def test_write_api_rejects_values_that_are_not_export_json(devserver: RunningDevServer) -> None:
    for bad in ({"$weird": "x"}, {"$float": "AAAA"}, {"$bytes": "!!"}, 2**63, {"$float": 1}):
        response = call(
            devserver, "POST", "/_devserver/transaction", json={"writes": [insert("t", a=bad)]}
        )
        assert response.status_code == 400, bad
    assert devserver.truth() == []


convex_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), children, max_size=3
        )
    ),
    max_leaves=10,
)


def _canonical(value: Any) -> Any:
    """Floats as their bit patterns, so NaN == NaN and -0.0 != 0.0."""
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    return value


@settings(max_examples=150, deadline=None)
@given(convex_values)
def test_export_json_round_trips_every_value(value: Any) -> None:
    tree, neutral = to_export_tree(value)
    wire = orjson.loads(dumps_sorted(tree))
    assert _canonical(from_export_tree(wire)) == _canonical(value)
    if neutral:
        for fmt in ValueFormat:
            assert dumps_sorted(export_to(wire, fmt)) == dumps_sorted(tree)
    encoded = orjson.loads(dumps_sorted(export_to(wire, ValueFormat.ENCODED)))
    assert _canonical(from_export_tree(encoded)) == _canonical(value)
