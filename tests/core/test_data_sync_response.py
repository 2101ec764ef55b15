"""Data Sync answers: real devserver pages parse into flat values; broken ones are refused
with one line that names the problem and never quotes the value."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from convex_cdc.core.data_sync_response import parse_converted_cursor, parse_data_sync_page
from convex_cdc.core.errors import MalformedResponse
from convex_cdc.core.names import TableKey
from tests.devserver.export_calls import call, delete, insert, parse, sync
from tests.fixtures.devserver import RunningDevServer

SECRET = "sekrit-value-never-echoed"


def test_a_devserver_page_parses_into_truncates_and_flat_values(
    devserver: RunningDevServer,
) -> None:
    ids = devserver.transact([insert("messages", text="hi", n=2**60), insert("b", "comp", x=1)])
    first = sync(devserver)
    page = parse_data_sync_page(first, 1234)

    assert page.status == "snapshotting" or page.snapshot_ts is not None
    assert TableKey("", "messages") in page.truncates
    assert page.cursor == first["pagination"]["nextCursor"]
    assert page.sync_id == first["syncId"]
    assert page.response_bytes == 1234
    messages = [v for v in page.values if v["_table"] == "messages"]
    assert messages == [
        {
            **next(v["value"] for v in first["values"] if v["table"] == "messages"),
            "_component": "",
            "_table": "messages",
            "_ts": messages[0]["_ts"],
            "_deleted": False,
        }
    ]
    assert messages[0]["n"] == 2**60 and messages[0]["_id"] in ids["ids"]


def test_a_tombstone_keeps_only_its_id(devserver: RunningDevServer) -> None:
    (doc_id,) = devserver.transact([insert("messages", text="hi")])["ids"]
    cursor = None
    for _ in range(50):
        page = parse_data_sync_page(sync(devserver, cursor), 1)
        cursor = page.cursor
        if page.status == "upToDate":
            break
    devserver.transact([delete("messages", doc_id)])
    page = parse_data_sync_page(sync(devserver, cursor), 1)

    (tombstone,) = page.values
    assert tombstone == {
        "_id": doc_id,
        "_component": "",
        "_table": "messages",
        "_ts": tombstone["_ts"],
        "_deleted": True,
    }


def test_a_converted_cursor_parses(devserver: RunningDevServer) -> None:
    ts = devserver.transact([insert("messages", text="hi")])["ts"]
    request = {"cursor": ts}
    answer = parse(call(devserver, "POST", "/api/data_sync_cursor_from_deltas", json=request))
    assert parse_converted_cursor(answer) == answer["cursor"]


GOOD: dict[str, Any] = {
    "status": {"type": "stale", "snapshotTs": 5},
    "truncates": [{"component": "", "table": "t"}],
    "values": [
        {"component": "", "table": "t", "ts": 5, "deleted": False, "value": {"_id": "a", "x": 1}}
    ],
    "syncId": "s-1",
    "pagination": {"hasMore": True, "nextCursor": "0a1b"},
}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value

    return change


BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "status missing": (_set("status", KeyError), "status must be a JSON object"),
    "unknown status": (_set("status.type", SECRET), "status.type must be"),
    "stale without snapshotTs": (_set("status.snapshotTs", KeyError), "must carry snapshotTs"),
    "float snapshotTs": (_set("status.snapshotTs", 1.5), "must carry snapshotTs"),
    "hasMore false": (_set("pagination.hasMore", False), "hasMore must be true"),
    "cursor not hex": (_set("pagination.nextCursor", SECRET), "lowercase hex"),
    "uppercase cursor": (_set("pagination.nextCursor", "0A1B"), "lowercase hex"),
    "no syncId": (_set("syncId", KeyError), "syncId"),
    "truncates not a list": (_set("truncates", SECRET), "truncates must be a list"),
    "truncate extra key": (_set("truncates.0.extra", SECRET), "truncate #0"),
    "values not a list": (_set("values", {}), "values must be a list"),
    "value extra key": (_set("values.0.extra", SECRET), "value #0 must be"),
    "ts as string": (_set("values.0.ts", "5"), "value #0 has ts"),
    "negative ts": (_set("values.0.ts", -1), "value #0 has ts"),
    "deleted not bool": (_set("values.0.deleted", "no"), "boolean deleted"),
    "value not an object": (_set("values.0.value", SECRET), "object value"),
    "table not a string": (_set("values.0.table", 3), "not a string"),
    "document with metadata": (_set("values.0.value._ts", 1), "export metadata keys"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_page_is_refused_naming_the_problem(case: str) -> None:
    body = copy.deepcopy(GOOD)
    change, expected = BROKEN[case]
    change(body)

    with pytest.raises(MalformedResponse) as refused:
        parse_data_sync_page(body, 10)

    assert expected in str(refused.value)
    assert str(refused.value).startswith("v1/data/sync: malformed response")
    assert SECRET not in str(refused.value)


def test_the_good_body_parses() -> None:
    page = parse_data_sync_page(copy.deepcopy(GOOD), 10)
    assert (page.status, page.snapshot_ts, page.truncates) == ("stale", 5, (TableKey("", "t"),))


@pytest.mark.parametrize("answer", [None, [], {"cursor": 7}, {"cursor": "XYZ"}, {"cursor": ""}])
def test_a_broken_converted_cursor_is_refused(answer: Any) -> None:
    with pytest.raises(MalformedResponse, match="data_sync_cursor_from_deltas"):
        parse_converted_cursor(answer)
