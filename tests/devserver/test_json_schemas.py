"""json_schemas and get_table_column_names from the current data (docs/convex-export-api.md §9)."""

from __future__ import annotations

from typing import Any

from tests.devserver.export_calls import call, delete, insert, parse, replace
from tests.fixtures.devserver import RunningDevServer

DRAFT = "http://json-schema.org/draft-07/schema#"
INT64_CLEAN = {"$description": "int64 represented as base10 string", "type": "string"}
INT64_ENCODED = {
    "$description": "int64",
    "type": "object",
    "properties": {
        "$integer": {"$description": "int64 -> little-endian -> base64", "type": "string"}
    },
}
FLOAT_SPECIAL_CLEAN = {
    "$description": "float64",
    "anyOf": [{"type": "number"}, {"type": "string", "$description": "-inf, inf, or NaN"}],
}


def _schemas(server: RunningDevServer, **params: str) -> dict[str, Any]:
    result: dict[str, Any] = parse(call(server, "GET", "/api/json_schemas", params=params))
    return result


def test_schemas_describe_the_current_data(devserver: RunningDevServer) -> None:
    channel = devserver.transact([insert("channels", name="general")])["ids"][0]
    devserver.transact(
        [
            insert(
                "messages",
                author="ada",
                channel=channel,
                likes=3,
                score=1.5,
                tags=["a"],
                empty=[],
                blob={"$bytes": "AAE="},
                meta={"n": 1, "k": "x"},
            ),
            insert(
                "messages",
                author="bob",
                channel=channel,
                likes=-1,
                score={"$float": "AAAAAAAA+H8="},
                tags=[],
                empty=[],
                blob={"$bytes": ""},
                meta={"n": 2},
                editedAt=None,
            ),
            insert(
                "messages",
                author="cy",
                channel=channel,
                likes=0,
                score=2.0,
                tags=[],
                empty=[],
                blob={"$bytes": ""},
                meta={"n": 3},
                editedAt=12.5,
            ),
        ]
    )
    schema = _schemas(devserver)["messages"]
    assert list(schema) == ["type", "properties", "additionalProperties", "required", "$schema"]
    assert schema["$schema"] == DRAFT
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    properties = schema["properties"]
    assert list(properties) == sorted(properties)
    assert properties["_id"] == {"$description": "Id(messages)", "type": "string"}
    assert properties["_creationTime"] == {"type": "number"}
    assert properties["channel"] == {"$description": "Id(channels)", "type": "string"}
    assert properties["author"] == {"type": "string"}
    assert properties["likes"] == INT64_CLEAN
    assert properties["score"] == FLOAT_SPECIAL_CLEAN
    assert properties["tags"] == {"type": "array", "items": {"type": "string"}}
    assert properties["empty"] == {"type": "array", "items": False}
    assert properties["blob"] == {"$description": "base64 bytes", "type": "string"}
    assert properties["editedAt"] == {"anyOf": [{"type": "null"}, {"type": "number"}]}
    assert properties["meta"] == {
        "type": "object",
        "properties": {"k": {"type": "string"}, "n": INT64_CLEAN},
        "additionalProperties": False,
        "required": ["n"],
    }
    assert schema["required"] == sorted(
        [
            "_creationTime",
            "_id",
            "author",
            "blob",
            "channel",
            "empty",
            "likes",
            "meta",
            "score",
            "tags",
        ]
    )


def test_other_formats_change_the_int64_float_and_bytes_shapes(devserver: RunningDevServer) -> None:
    devserver.transact([insert("t", n=1, f={"$float": "AAAAAAAAAIA="}, b={"$bytes": "AA=="})])
    for name in ("convex_encoded_json", "convex_json"):
        properties = _schemas(devserver, format=name)["t"]["properties"]
        assert properties["n"] == INT64_ENCODED
        assert properties["f"]["anyOf"][1]["$description"] == "-0, -inf, inf, or NaN"
        assert properties["f"]["anyOf"][1]["properties"] == {
            "$float": {"$description": "float64 -> little-endian -> base64", "type": "string"}
        }
        assert properties["b"] == {
            "type": "object",
            "$description": "base64 bytes",
            "properties": {"$bytes": {"type": "string"}},
        }
    export = _schemas(devserver, format="export_json")["t"]["properties"]
    assert export["n"] == {"$description": "int64", "type": "number"}
    assert export["f"]["anyOf"][1]["$description"] == "-inf, inf, or NaN"
    assert _schemas(devserver, format="convex_clean_json") == _schemas(devserver)


def test_delta_schema_adds_four_unrequired_fields_last(devserver: RunningDevServer) -> None:
    devserver.transact([insert("t", a="x")])
    plain = _schemas(devserver)["t"]
    delta = _schemas(devserver, deltaSchema="true")["t"]
    assert list(delta["properties"])[-4:] == ["_table", "_component", "_ts", "_deleted"]
    assert delta["properties"]["_ts"] == {"type": "integer"}
    assert delta["properties"]["_deleted"] == {"type": "boolean"}
    assert delta["properties"]["_table"] == delta["properties"]["_component"] == {"type": "string"}
    assert delta["required"] == plain["required"] == ["_creationTime", "_id", "a"]


def test_empty_tables_and_shrinking_shapes(devserver: RunningDevServer) -> None:
    created = devserver.transact([insert("t", a=1, b="x"), insert("t", a=2)])
    first, second = created["ids"]
    assert _schemas(devserver)["t"]["required"] == ["_creationTime", "_id", "a"]
    devserver.transact([replace("t", first, a=3)])
    assert "b" not in _schemas(devserver)["t"]["properties"]
    assert _schemas(devserver)["t"]["required"] == ["_creationTime", "_id", "a"]
    devserver.transact([delete("t", first), delete("t", second)])
    empty = _schemas(devserver)["t"]
    assert empty == {
        "type": "object",
        "properties": {
            "_creationTime": {"type": "number"},
            "_id": {"$description": "Id(t)", "type": "string"},
        },
        "additionalProperties": False,
        "required": ["_creationTime", "_id"],
        "$schema": DRAFT,
    }
    columns = parse(call(devserver, "GET", "/api/get_table_column_names"))
    assert columns == {"byComponent": {"": [{"name": "t", "columns": ["_creationTime", "_id"]}]}}


def test_by_component_nests_schemas_and_flat_mode_merges_them(devserver: RunningDevServer) -> None:
    empty = parse(call(devserver, "GET", "/api/json_schemas", params={"byComponent": "true"}))
    assert empty == {"": {}}
    devserver.transact([insert("users", "waitlist", email="x"), insert("users", name="y")])
    nested = _schemas(devserver, byComponent="true")
    assert set(nested) == {"", "waitlist"}
    assert set(nested[""]["users"]["properties"]) == {"_creationTime", "_id", "name"}
    assert set(nested["waitlist"]["users"]["properties"]) == {"_creationTime", "_id", "email"}
    flat = _schemas(devserver)
    assert set(flat) == {"users"}
    # A component is listed even when it has no user tables.
    devserver.transact([insert("_storage", "files", blob=1)])
    assert _schemas(devserver, byComponent="true")["files"] == {}


def test_column_names_are_sorted_per_table_and_component(devserver: RunningDevServer) -> None:
    devserver.transact(
        [
            insert("messages", body="hi", Author="ada"),
            insert("messages", body="yo", edited=True),
            insert("entries", "waitlist", email="x"),
        ]
    )
    columns = parse(call(devserver, "GET", "/api/get_table_column_names"))
    assert columns == {
        "byComponent": {
            "": [
                {
                    "name": "messages",
                    "columns": ["Author", "_creationTime", "_id", "body", "edited"],
                }
            ],
            "waitlist": [{"name": "entries", "columns": ["_creationTime", "_id", "email"]}],
        }
    }


def test_ids_of_unknown_tables_stay_strings(devserver: RunningDevServer) -> None:
    ids = devserver.transact([insert("a", x=1)])["ids"]
    devserver.transact(
        [insert("b", ref=ids[0], mixed=ids[0]), insert("b", ref=ids[0], mixed="plain")]
    )
    devserver.transact([insert("c", ghost="0400000000000000000000000000248")])
    schemas = _schemas(devserver)
    assert schemas["b"]["properties"]["ref"] == {"$description": "Id(a)", "type": "string"}
    assert schemas["b"]["properties"]["mixed"] == {"type": "string"}
    assert schemas["c"]["properties"]["ghost"] == {"type": "string"}
