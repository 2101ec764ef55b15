"""list_snapshot: pinned snapshots, paging, ordering and cursors (docs/convex-export-api.md §7)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from itertools import pairwise

from convex_cdc.devserver.ids import MIN_DOCUMENT_ID, decode_tablet_id
from tests.devserver.export_calls import call, delete, error, insert, parse, replace, snapshot_pages
from tests.fixtures.devserver import RunningDevServer

Factory = Callable[..., RunningDevServer]


def _fill(server: RunningDevServer, table: str, count: int, component: str = "") -> list[str]:
    result = server.transact([insert(table, component, n=i) for i in range(count)])
    ids: list[str] = result["ids"]
    return ids


def test_a_walk_pins_its_snapshot_and_hides_later_writes(devserver_factory: Factory) -> None:
    server = devserver_factory(snapshot_page_size=3)
    ids = _fill(server, "items", 7)
    first = parse(call(server, "POST", "/api/list_snapshot", json={}))
    snapshot = first["snapshot"]
    assert isinstance(snapshot, int)
    # Writes after the snapshot: an insert, an update and a delete.
    server.transact(
        [insert("items", n=100), replace("items", ids[0], n=-1), delete("items", ids[1])]
    )
    pages = [first]
    while pages[-1]["hasMore"]:
        body = {"snapshot": snapshot, "cursor": pages[-1]["cursor"]}
        pages.append(parse(call(server, "POST", "/api/list_snapshot", json=body)))
    assert {page["snapshot"] for page in pages} == {snapshot}
    values = [value for page in pages for value in page["values"]]
    assert sorted(value["_id"] for value in values) == sorted(ids)
    by_id = {value["_id"]: value for value in values}
    assert by_id[ids[0]]["n"] == "0"
    for value in values:
        assert value["_ts"] <= snapshot
        assert "_deleted" not in value
        assert list(value)[:3] == ["_component", "_table", "_ts"]


def test_without_a_snapshot_the_current_timestamp_is_used(devserver: RunningDevServer) -> None:
    ts = devserver.transact([insert("t", a=1)])["ts"]
    assert parse(call(devserver, "GET", "/api/list_snapshot"))["snapshot"] == ts
    later = devserver.transact([insert("t", a=2)])["ts"]
    page = parse(call(devserver, "GET", "/api/list_snapshot", params={"snapshot": ts}))
    assert page["snapshot"] == ts
    assert [value["a"] for value in page["values"]] == ["1"]
    assert parse(call(devserver, "GET", "/api/list_snapshot"))["snapshot"] == later


def test_values_carry_the_ts_of_their_last_write_not_the_snapshot(
    devserver: RunningDevServer,
) -> None:
    first = devserver.transact([insert("t", a=1), insert("t", a=2)])
    second = devserver.transact([replace("t", first["ids"][1], a=3)])
    devserver.transact([insert("u", b=1)])
    page = parse(call(devserver, "GET", "/api/list_snapshot", params={"tableName": "t"}))
    ts_by_id = {value["_id"]: value["_ts"] for value in page["values"]}
    assert ts_by_id == {first["ids"][0]: first["ts"], first["ids"][1]: second["ts"]}


def test_snapshots_in_the_future_or_too_old_are_rejected(devserver_factory: Factory) -> None:
    server = devserver_factory()
    ts = server.transact([insert("t", a=1)])["ts"]
    future = call(server, "GET", "/api/list_snapshot", params={"snapshot": ts + 1})
    assert error(future) == (400, "SnapshotTooNew")
    old = time.time_ns() - 6 * 86_400 * 10**9
    assert error(call(server, "GET", "/api/list_snapshot", params={"snapshot": old})) == (
        400,
        "SnapshotTooOld",
    )
    server.settings(snapshot_max_age_seconds=0.05)
    time.sleep(0.1)
    stale = call(server, "POST", "/api/list_snapshot", json={"snapshot": ts})
    assert error(stale) == (400, "SnapshotTooOld")


def test_pages_hold_one_table_at_most_page_size_values_in_id_order(
    devserver_factory: Factory,
) -> None:
    server = devserver_factory(snapshot_page_size=4)
    created = {name: set(_fill(server, name, count)) for name, count in [("b", 9), ("a", 5)]}
    created["c"] = set(_fill(server, "c", 4))
    pages = snapshot_pages(server)
    seen: dict[str, list[str]] = {}
    order: list[str] = []
    for page in pages:
        tables = {value["_table"] for value in page["values"]}
        assert len(page["values"]) <= 4
        assert len(tables) <= 1
        for value in page["values"]:
            seen.setdefault(value["_table"], []).append(value["_id"])
            if not order or order[-1] != value["_table"]:
                order.append(value["_table"])
    assert {table: set(ids) for table, ids in seen.items()} == created
    for ids in seen.values():
        assert ids == sorted(ids)
    assert len(order) == 3
    assert order != sorted(order), "tables must come in tablet order, not alphabetically"


def test_tables_come_in_tablet_id_order(devserver: RunningDevServer) -> None:
    for name in ("alpha", "beta", "gamma", "delta"):
        _fill(devserver, name, 1)
    pages = snapshot_pages(devserver)
    tablets = []
    for page in pages:
        if page["cursor"] is not None:
            tablets.append(decode_tablet_id(json.loads(page["cursor"])["tablet"]))
    assert tablets == sorted(tablets)


def test_a_finished_table_moves_the_cursor_to_the_next_tablet_with_the_min_id(
    devserver_factory: Factory,
) -> None:
    server = devserver_factory(snapshot_page_size=10)
    _fill(server, "first", 2)
    _fill(server, "second", 2)
    pages = snapshot_pages(server)
    assert len(pages) == 2
    cursor = json.loads(pages[0]["cursor"])
    assert set(cursor) == {"tablet", "id"}
    assert cursor["id"] == MIN_DOCUMENT_ID == "0400000000000000000000000000248"
    assert len(cursor["tablet"]) == 22
    assert pages[0]["hasMore"] is True
    assert pages[1] == {
        "values": pages[1]["values"],
        "snapshot": pages[0]["snapshot"],
        "cursor": None,
        "hasMore": False,
    }


def test_a_table_ending_exactly_on_a_page_gives_an_empty_page_with_has_more(
    devserver_factory: Factory,
) -> None:
    server = devserver_factory(snapshot_page_size=3)
    ids = _fill(server, "only", 3)
    pages = snapshot_pages(server)
    assert [len(page["values"]) for page in pages] == [3, 0]
    assert json.loads(pages[0]["cursor"])["id"] == max(ids)
    assert pages[0]["hasMore"] is True
    assert pages[1]["hasMore"] is False
    assert pages[1]["cursor"] is None


def test_an_empty_table_gives_an_empty_page_with_has_more(devserver: RunningDevServer) -> None:
    for name in ("emptied1", "emptied2", "emptied3"):
        ids = _fill(devserver, name, 2)
        devserver.transact([delete(name, doc_id) for doc_id in ids])
    _fill(devserver, "full", 1)
    pages = snapshot_pages(devserver)
    # One page per table (every table is shorter than a page); at least two of the three
    # empty tables are not last, so their empty pages must say hasMore with a cursor.
    assert len(pages) == 4
    assert [len(page["values"]) for page in pages].count(0) == 3
    assert [page["hasMore"] for page in pages] == [True, True, True, False]
    for page in pages[:-1]:
        assert json.loads(page["cursor"])["id"] == MIN_DOCUMENT_ID


def test_resuming_from_a_cursor_continues_right_after_it(devserver_factory: Factory) -> None:
    server = devserver_factory(snapshot_page_size=2)
    ids = sorted(_fill(server, "t", 5))
    first = parse(call(server, "GET", "/api/list_snapshot"))
    again = parse(
        call(
            server,
            "GET",
            "/api/list_snapshot",
            params={"snapshot": first["snapshot"], "cursor": first["cursor"]},
        )
    )
    assert [value["_id"] for value in first["values"]] == ids[:2]
    assert [value["_id"] for value in again["values"]] == ids[2:4]
    # A cursor without a snapshot is accepted (it just uses "now").
    now = parse(call(server, "GET", "/api/list_snapshot", params={"cursor": first["cursor"]}))
    assert [value["_id"] for value in now["values"]] == ids[2:4]


def test_garbage_cursors_are_rejected(devserver: RunningDevServer) -> None:
    _fill(devserver, "t", 1)
    good = json.loads(parse(call(devserver, "GET", "/api/list_snapshot"))["cursor"] or "null")
    assert good is None
    for cursor in [
        "abc",
        "{}",
        '{"tablet": "short", "id": "0400000000000000000000000000248"}',
        '{"tablet": "AAAAAAAAAAAAAAAAAAAAAA", "id": "not-an-id"}',
        '{"tablet": "AAAAAAAAAAAAAAAAAAAAAA", "id": "0400000000000000000000000000249"}',
        '["AAAAAAAAAAAAAAAAAAAAAA", "0400000000000000000000000000248"]',
    ]:
        response = call(devserver, "POST", "/api/list_snapshot", json={"cursor": cursor})
        assert error(response) == (400, "InvalidListSnapshotCursor"), cursor


def test_nothing_selected_is_one_empty_final_page(devserver: RunningDevServer) -> None:
    ts = devserver.transact([insert("t", a=1)])["ts"]
    page = parse(call(devserver, "GET", "/api/list_snapshot", params={"tableName": "missing"}))
    assert page == {"values": [], "snapshot": ts, "cursor": None, "hasMore": False}


def test_snapshot_walk_sees_each_document_once_while_writes_continue(
    devserver_factory: Factory,
) -> None:
    server = devserver_factory(snapshot_page_size=5)
    ids = _fill(server, "t", 23)
    pages = []
    snapshot = cursor = None
    for step in range(100):
        page = parse(
            call(
                server, "POST", "/api/list_snapshot", json={"snapshot": snapshot, "cursor": cursor}
            )
        )
        pages.append(page)
        if not page["hasMore"]:
            break
        snapshot, cursor = page["snapshot"], page["cursor"]
        server.transact([insert("t", n=1000 + step), delete("t", ids[step])])
    walked = [value["_id"] for page in pages for value in page["values"]]
    assert walked == sorted(ids)
    assert all(a < b for a, b in pairwise(walked))


def test_the_default_page_holds_1024_documents(devserver: RunningDevServer) -> None:
    _fill(devserver, "t", 1030)
    pages = snapshot_pages(devserver)
    assert [len(page["values"]) for page in pages] == [1024, 6]


def test_deleted_documents_leave_no_short_pages_before_the_end_of_a_table(
    devserver_factory: Factory,
) -> None:
    server = devserver_factory(snapshot_page_size=4)
    ids = sorted(_fill(server, "t", 13))
    gone = [ids[1], ids[2], ids[5], ids[9]]
    server.transact([delete("t", doc_id) for doc_id in gone])
    live = [doc_id for doc_id in ids if doc_id not in gone]
    first = parse(call(server, "POST", "/api/list_snapshot", json={}))
    later = ids[12]
    server.transact([delete("t", later)])  # after the snapshot: still in the walk
    pages = [first]
    while pages[-1]["hasMore"]:
        body = {"snapshot": first["snapshot"], "cursor": pages[-1]["cursor"]}
        pages.append(parse(call(server, "POST", "/api/list_snapshot", json=body)))
    assert [len(page["values"]) for page in pages][:2] == [4, 4]
    assert [value["_id"] for page in pages for value in page["values"]] == live
