"""Answers checked against the request and the walk so far; the export format and field
names checked where pages become events; the limits on one request."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from convex_cdc.core.client import ConvexClient
from convex_cdc.core.errors import MalformedResponse, SourceError, SourceUnavailable
from convex_cdc.core.events import events_from_values
from convex_cdc.core.field_names import check_schema_field_names, field_name_problem
from convex_cdc.core.names import TableKey
from convex_cdc.core.responses import parse_delta_page, parse_snapshot_page
from convex_cdc.core.retry import RetryPolicy
from convex_cdc.core.selection import Selection
from convex_cdc.core.walk_progress import ServerClock, SnapshotCursors

S = 1_755_820_800_123_456_789
URL = "https://happy-animal-123.convex.cloud"
KEY = "prod:happy-animal-123|" + "0123456789abcdef" * 3
ONCE = RetryPolicy(max_attempts=1, max_seconds=0)


def value(doc_id: str = "a", ts: int = S - 1, **fields: Any) -> dict[str, Any]:
    return {"_component": "", "_table": "t", "_ts": ts, "_id": doc_id, **fields}


def snapshot_body(values: list[Any], cursor: str | None = None, snapshot: int = S) -> Any:
    return {"values": values, "snapshot": snapshot, "cursor": cursor, "hasMore": cursor is not None}


# --- one answer against its request ----------------------------------------------------------


def test_a_snapshot_page_repeating_the_requested_cursor_with_has_more_is_refused() -> None:
    with pytest.raises(MalformedResponse, match="repeat this page forever"):
        parse_snapshot_page(snapshot_body([], "c1"), 10, request_snapshot=S, request_cursor="c1")
    # The last page may come back with the same (null) cursor: it ends the walk.
    parse_snapshot_page(snapshot_body([]), 10, request_snapshot=S, request_cursor=None)


def test_a_snapshot_page_of_another_snapshot_or_with_a_later_value_is_refused() -> None:
    with pytest.raises(MalformedResponse, match="pinned at"):
        parse_snapshot_page(snapshot_body([], snapshot=S + 1), 10, request_snapshot=S)
    with pytest.raises(MalformedResponse, match="after the snapshot"):
        parse_snapshot_page(snapshot_body([value(ts=S + 1)]), 10)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"values": [], "cursor": S - 1, "hasMore": False}, "the cursor went back"),
        ({"values": [], "cursor": S, "hasMore": True}, "polling would never move on"),
        (
            {"values": [value(ts=S) | {"_deleted": False}], "cursor": S + 5, "hasMore": False},
            "not after the requested cursor",
        ),
        (
            {"values": [value(ts=S + 9) | {"_deleted": False}], "cursor": S + 5, "hasMore": False},
            "after the page's own cursor",
        ),
    ],
)
def test_a_delta_page_that_does_not_move_forward_is_refused(body: Any, problem: str) -> None:
    with pytest.raises(MalformedResponse, match=problem):
        parse_delta_page(body, 10, request_cursor=S)


def test_an_idle_delta_page_may_repeat_the_cursor() -> None:
    page = parse_delta_page({"values": [], "cursor": S, "hasMore": False}, 10, request_cursor=S)
    assert page.cursor == S and not page.has_more


# --- the walk so far -----------------------------------------------------------------------


def test_a_snapshot_walk_that_comes_back_to_a_cursor_is_refused() -> None:
    cursors = SnapshotCursors()
    cursors.follow(
        request_snapshot=None, request_cursor=None, snapshot=S, cursor="a", has_more=True
    )
    cursors.follow(request_snapshot=S, request_cursor="a", snapshot=S, cursor="b", has_more=True)
    with pytest.raises(MalformedResponse, match="round in circles"):
        cursors.follow(
            request_snapshot=S, request_cursor="b", snapshot=S, cursor="a", has_more=True
        )


def test_a_walk_started_again_from_an_earlier_cursor_is_a_new_history() -> None:
    cursors = SnapshotCursors()
    cursors.follow(request_snapshot=S, request_cursor="a", snapshot=S, cursor="b", has_more=True)
    cursors.follow(request_snapshot=S, request_cursor="b", snapshot=S, cursor="c", has_more=True)
    # A resumed run (or a replay) asks for "a" again: not a loop.
    cursors.follow(request_snapshot=S, request_cursor="a", snapshot=S, cursor="b", has_more=True)


def test_the_clock_is_asked_only_when_a_cursor_passes_what_it_said() -> None:
    asked: list[int] = []

    def read_now() -> int:
        asked.append(1)
        return S + 100

    clock = ServerClock(read_now)
    clock.check_cursor(S + 10, endpoint="document_deltas")
    clock.check_cursor(S + 100, endpoint="document_deltas")
    assert len(asked) == 1
    with pytest.raises(MalformedResponse, match="ahead of the deployment's own latest"):
        clock.check_cursor(S + 101, endpoint="document_deltas")
    assert len(asked) == 2


# --- export format and field names, where pages become events -------------------------------


def events(values: list[Any], kind: Any = "snapshot") -> Any:
    return events_from_values(
        values, kind=kind, batch_seq=1, snapshot_ts=S, endpoint="list_snapshot"
    )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"_creationTime": "yesterday"}, "_creationTime a string, not a number"),
        ({"_creationTime": True}, "_creationTime a boolean"),
        ({"b": {"$bytes": "AAE"}}, "the document.b is a $bytes tag whose payload is not base64"),
        ({"b": {"$bytes": 5}}, "payload is not a string"),
        ({"f": {"$float": "AAAA"}}, "$float tag of 3 bytes, not 8"),
        ({"i": {"$integer": "AAAAAAAAAAAAAAAA"}}, "$integer tag of 12 bytes, not 8"),
        ({"o": {"$bytes": "AA==", "x": 1}}, "next to other keys"),
        ({"o": [{"$set": []}]}, "the document.o[0] holds '$set'"),
        ({"$bytes": "AA=="}, "starts with $"),
        ({"": 1}, "is empty"),
        ({"a\x00": 1}, "control character"),
        ({"a/b": 1}, "holds /"),
        ({"..": 1}, "holds .."),
        ({"Name": 1, "name": 2}, "differs from"),
    ],
)
def test_values_sync_could_not_materialize_are_refused(fields: Any, problem: str) -> None:
    with pytest.raises(MalformedResponse, match=None) as caught:
        events([value(**fields)])
    assert problem in str(caught.value)
    assert "list_snapshot: malformed response" in str(caught.value)


def test_well_formed_tags_and_look_alikes_pass() -> None:
    fine = value(
        _creationTime=1_755_820_789_999.25,
        b={"$bytes": "AAEC"},
        e={"$bytes": ""},
        f={"$float": "AAAAAAAA+H8="},
        i={"$integer": "KgAAAAAAAAA="},
        s='he said "$5"',
        l=["x", "$y", {"$bytes": "AA=="}],
        o={"price": "$5", "n": {"$float": "AAAAAAAAAIA="}},
    )
    table = events([fine, value("b", _creationTime=3)])
    assert table.num_rows == 2


def test_field_names_may_differ_in_case_across_tables_of_one_page() -> None:
    other = value("b", Name=1) | {"_table": "u", "_deleted": False}
    table = events([value(name=1) | {"_deleted": False}, other], kind="delta")
    assert table.num_rows == 2


def test_a_duplicate_id_in_a_snapshot_page_is_refused_but_not_in_a_delta_page() -> None:
    with pytest.raises(MalformedResponse, match="value a appears twice in one page"):
        events([value("a"), value("b"), value("a")])
    changes = [
        value("a", ts=S + 1) | {"_deleted": False},
        value("a", ts=S + 2) | {"_deleted": True},
    ]
    assert events(changes, kind="delta").num_rows == 2


def test_field_name_rules() -> None:
    assert field_name_problem("body") is None
    assert field_name_problem("with space.and-dash") is None
    assert field_name_problem("a..b") == "holds .."


def test_schema_fields_are_checked_for_what_the_selection_keeps() -> None:
    schemas: dict[str, dict[str, Any]] = {
        "": {"users": {"properties": {"_id": {}, "Name": {}, "name": {}}}}
    }
    with pytest.raises(MalformedResponse, match=r"'Name'|'name'"):
        check_schema_field_names(schemas, None)
    check_schema_field_names(schemas, Selection.from_patterns(exclude=["users.Name"]))
    check_schema_field_names(schemas, Selection.from_patterns(include=["other"]))
    assert TableKey("", "users").qualified == "users"


# --- the client: probes, limits -------------------------------------------------------------


def client_for(handler: Any, **kwargs: Any) -> ConvexClient:
    return ConvexClient(URL, KEY, transport=httpx.MockTransport(handler), retry=ONCE, **kwargs)


def test_the_client_asks_the_servers_clock_once_per_cursor_beyond_it() -> None:
    probes: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        if body.get("selection") == {"_other": "excluded"}:
            probes.append(body)
            return httpx.Response(200, content=orjson.dumps(snapshot_body([], snapshot=S + 50)))
        return httpx.Response(
            200,
            content=orjson.dumps({"values": [], "cursor": body["cursor"] + 10, "hasMore": False}),
        )

    with client_for(handler) as client:
        assert client.document_deltas(cursor=S, selection=None).cursor == S + 10
        assert client.document_deltas(cursor=S + 10, selection=None).cursor == S + 20
        assert len(probes) == 1
        assert probes[0]["snapshot"] is None and probes[0]["format"] == "export_json"
        with pytest.raises(MalformedResponse, match="ahead of the deployment"):
            client.document_deltas(cursor=S + 50, selection=None)


@pytest.mark.parametrize("announced", [True, False])
def test_an_answer_over_the_size_limit_is_refused(announced: bool) -> None:
    content = orjson.dumps(snapshot_body([value(body="x" * 5000)]))

    def handler(request: httpx.Request) -> httpx.Response:
        if announced:
            return httpx.Response(200, content=content)
        return httpx.Response(200, content=iter([content[:3000], content[3000:]]))

    with (
        client_for(handler, max_response_bytes=4000) as client,
        pytest.raises(SourceError) as caught,
    ):
        client.list_snapshot(snapshot=None, cursor=None, selection=None)
    assert "the answer is larger than" in str(caught.value)
    assert "--max-response-mb" in str(caught.value)
    assert not isinstance(caught.value, SourceUnavailable)


def test_limits_must_be_positive() -> None:
    with pytest.raises(Exception, match="must be positive"):
        ConvexClient(URL, KEY, request_timeout=0)


def test_raw_answers_are_the_servers_bytes() -> None:
    content = b'{"values": [], "snapshot": 1, "cursor": null, "hasMore": false}'
    with client_for(lambda request: httpx.Response(200, content=content)) as client:
        assert client.raw_list_snapshot(snapshot=None, cursor=None, selection=None) == content
        assert client.raw_json_schemas() == content
