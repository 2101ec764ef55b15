"""Selections, components and system tables (docs/convex-export-api.md §6, §11)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.devserver.export_calls import call, delta_pages, error, insert, parse, snapshot_pages
from tests.fixtures.devserver import RunningDevServer


@pytest.fixture
def app(devserver: RunningDevServer) -> tuple[RunningDevServer, int]:
    """Root users/posts, waitlist/users (same name), a system table; returns the start ts."""
    start = devserver.transact([insert("_scheduled_functions", job=0)])["ts"] - 1
    devserver.transact(
        [
            insert("users", name="ada", ssn="1", age=36),
            insert("posts", title="hi"),
            insert("users", "waitlist", email="a@x"),
            insert("entries", "waitlist", email="b@x"),
            insert("_storage", blob=1),
        ]
    )
    return devserver, start


def _tables(values: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(value["_component"], value["_table"]) for value in values}


def _walk(server: RunningDevServer, start: int, **body: Any) -> tuple[list[Any], list[Any]]:
    snapshot = [v for page in snapshot_pages(server, **body) for v in page["values"]]
    deltas = [v for page in delta_pages(server, start, **body) for v in page["values"]]
    return snapshot, deltas


EVERYTHING = {("", "users"), ("", "posts"), ("waitlist", "users"), ("waitlist", "entries")}


def test_nothing_selects_every_user_table_and_never_system_tables(
    app: tuple[RunningDevServer, int],
) -> None:
    server, start = app
    for values in _walk(server, start):
        assert _tables(values) == EVERYTHING


def test_table_name_with_and_without_component(app: tuple[RunningDevServer, int]) -> None:
    server, start = app
    for key in ("tableName", "table_name"):
        for values in _walk(server, start, **{key: "users"}):
            assert _tables(values) == {("", "users")}
        for values in _walk(server, start, **{key: "users", "component": "waitlist"}):
            assert _tables(values) == {("waitlist", "users")}
    query = {"tableName": "users", "component": "waitlist"}
    page = parse(call(server, "GET", "/api/list_snapshot", params=query))
    assert _tables(page["values"]) == {("waitlist", "users")}


def test_component_alone_selects_its_tables(app: tuple[RunningDevServer, int]) -> None:
    server, start = app
    for values in _walk(server, start, component="waitlist"):
        assert _tables(values) == {("waitlist", "users"), ("waitlist", "entries")}
    for values in _walk(server, start, component=""):
        assert _tables(values) == {("", "users"), ("", "posts")}


def test_the_full_selection_object_with_columns_and_aliases(
    app: tuple[RunningDevServer, int],
) -> None:
    server, start = app
    selection = {
        "_other": "excl",
        "": {
            "_other": "excluded",
            "users": {"_other": "incl", "ssn": "excluded", "_creationTime": "excl"},
            "posts": "excluded",
        },
        "waitlist": {"_other": "included", "entries": "excl"},
    }
    for values in _walk(server, start, selection=selection):
        assert _tables(values) == {("", "users"), ("waitlist", "users")}
        root_user = next(value for value in values if value["_component"] == "")
        assert "ssn" not in root_user
        assert "_creationTime" not in root_user
        assert root_user["name"] == "ada"
        assert root_user["age"] == "36"
        assert list(root_user)[:3] == ["_component", "_table", "_ts"]
        waitlist_user = next(value for value in values if value["_component"] == "waitlist")
        assert "_creationTime" in waitlist_user


def test_only_listed_columns_with_other_excluded(app: tuple[RunningDevServer, int]) -> None:
    server, start = app
    selection = {
        "_other": "excluded",
        "": {
            "_other": "excluded",
            "users": {"_other": "excluded", "_id": "included", "name": "included"},
        },
    }
    for values in _walk(server, start, selection=selection):
        assert len(values) == 1
        assert set(values[0]) - {"_deleted"} == {"_component", "_table", "_ts", "_id", "name"}


def test_excluding_id_is_an_internal_server_error(app: tuple[RunningDevServer, int]) -> None:
    server, start = app
    for columns in (
        {"_other": "included", "_id": "excluded"},
        {"_other": "excluded", "name": "included"},
    ):
        selection = {"_other": "excluded", "": {"_other": "excluded", "users": columns}}
        for path, body in [
            ("/api/list_snapshot", {"selection": selection}),
            ("/api/document_deltas", {"selection": selection, "cursor": start}),
        ]:
            response = call(server, "POST", path, json=body)
            assert error(response) == (500, "InternalServerError")


def test_invalid_names_in_a_selection_are_internal_server_errors(
    app: tuple[RunningDevServer, int],
) -> None:
    server, _ = app
    for params in ({"tableName": "bad-name"}, {"component": "bad component"}):
        response = call(server, "GET", "/api/list_snapshot", params=params)
        assert error(response) == (500, "InternalServerError")


@pytest.mark.parametrize(
    "malformed",
    [
        {"": {"_other": "excluded"}},  # no top-level _other
        {"_other": "excluded", "": {"users": {"_other": "included"}}},  # no component _other
        {"_other": "excluded", "": {"_other": "excluded", "users": {"name": "included"}}},
        {"_other": "maybe"},
        {"_other": "excluded", "": "included"},  # a component can only be excluded by string
        "everything",
        ["users"],
    ],
)
def test_a_malformed_selection_silently_exports_everything(
    app: tuple[RunningDevServer, int], malformed: Any
) -> None:
    server, start = app
    for values in _walk(server, start, selection=malformed):
        assert _tables(values) == EVERYTHING


def test_a_malformed_selection_falls_back_to_table_name_first(
    app: tuple[RunningDevServer, int],
) -> None:
    server, start = app
    for values in _walk(server, start, selection={"bad": True}, tableName="posts"):
        assert _tables(values) == {("", "posts")}
    # A wrongly typed tableName falls through to the component form.
    for values in _walk(server, start, tableName=5, component="waitlist"):
        assert _tables(values) == {("waitlist", "users"), ("waitlist", "entries")}


def test_missing_tables_are_not_an_error(app: tuple[RunningDevServer, int]) -> None:
    server, start = app
    for values in _walk(server, start, tableName="nope"):
        assert values == []
    selection = {"_other": "excluded", "ghost": {"_other": "included"}}
    for values in _walk(server, start, selection=selection):
        assert values == []


def test_system_tables_are_never_exported_even_when_selected(
    app: tuple[RunningDevServer, int],
) -> None:
    server, start = app
    for values in _walk(server, start, tableName="_storage"):
        assert values == []
    schemas = parse(call(server, "GET", "/api/json_schemas", params={"byComponent": "true"}))
    assert set(schemas[""]) == {"users", "posts"}
    columns = parse(call(server, "GET", "/api/get_table_column_names"))["byComponent"]
    assert {table["name"] for table in columns[""]} == {"users", "posts"}
    assert all(doc["table"][0] != "_" for doc in server.truth())


def test_component_tables_share_names_and_id_prefixes(app: tuple[RunningDevServer, int]) -> None:
    server, _ = app
    snapshot = [v for page in snapshot_pages(server) for v in page["values"]]
    root = next(v for v in snapshot if v["_component"] == "" and v["_table"] == "users")
    other = next(v for v in snapshot if v["_component"] == "waitlist" and v["_table"] == "users")
    # Both are the first user table of their component: table number 10001, same id prefix.
    assert root["_id"][:3] == other["_id"][:3]
    assert root["_id"] != other["_id"]
    assert all("_component" in value for value in snapshot)
