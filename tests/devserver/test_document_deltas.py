"""document_deltas: cursors, the 128-row page-end rule, deletes, retention.

The rules are those of docs/convex-export-api.md §8 and §12.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from tests.devserver.export_calls import (
    call,
    delete,
    delta_pages,
    error,
    insert,
    parse,
    replace,
    snapshot_pages,
)
from tests.fixtures.devserver import RunningDevServer

Factory = Callable[..., RunningDevServer]


def _deltas(server: RunningDevServer, **body: object) -> dict[str, Any]:
    result: dict[str, Any] = parse(call(server, "POST", "/api/document_deltas", json=body))
    return result


def test_a_cursor_is_required(devserver: RunningDevServer) -> None:
    assert error(call(devserver, "GET", "/api/document_deltas")) == (
        400,
        "DocumentDeltasCursorRequired",
    )
    for body in ({}, {"cursor": None}):
        response = call(devserver, "POST", "/api/document_deltas", json=body)
        assert error(response) == (400, "DocumentDeltasCursorRequired")


def test_entries_after_the_cursor_come_in_ts_then_tablet_then_id_order(
    devserver: RunningDevServer,
) -> None:
    start = devserver.transact([insert("a", n=0)])["ts"]
    second = devserver.transact([insert("b", n=i) for i in range(4)] + [insert("a", n=9)])
    third = devserver.transact([insert("a", n=10)])
    values = _deltas(devserver, cursor=start)["values"]
    assert [value["_ts"] for value in values] == [second["ts"]] * 5 + [third["ts"]]
    same_ts = values[:5]
    walk = [value["_table"] for page in snapshot_pages(devserver) for value in page["values"]]
    tablet_order = list(dict.fromkeys(walk))  # list_snapshot walks tables in tablet order
    expected = [name for name in tablet_order for _ in range(4 if name == "b" else 1)]
    assert [value["_table"] for value in same_ts] == expected
    b_ids = [value["_id"] for value in same_ts if value["_table"] == "b"]
    assert b_ids == sorted(second["ids"][:4])
    assert all(isinstance(value["_ts"], int) for value in values)


def test_the_page_ends_after_the_transaction_that_reaches_the_row_limit(
    devserver_factory: Factory,
) -> None:
    server = devserver_factory(deltas_row_limit=3)
    cursor = server.transact([insert("t", n=-1)])["ts"]
    t1 = server.transact([insert("t", n=1), insert("t", n=2)])["ts"]
    t2 = server.transact([insert("t", n=3), insert("t", n=4)])["ts"]
    t3 = server.transact([insert("t", n=5)])["ts"]
    first = _deltas(server, cursor=cursor)
    # Rows 1-2 are t1; row 3 (t2) reaches the limit, t2 is finished, t3 stops the page.
    assert [value["_ts"] for value in first["values"]] == [t1, t1, t2, t2]
    assert first["cursor"] == t2
    assert first["hasMore"] is True
    second = _deltas(server, cursor=first["cursor"])
    assert [value["_ts"] for value in second["values"]] == [t3]
    assert second == {"values": second["values"], "cursor": t3, "hasMore": False}


def test_a_transaction_is_never_split_however_big(devserver_factory: Factory) -> None:
    server = devserver_factory(deltas_row_limit=4)
    cursor = server.transact([insert("t", n=0)])["ts"]
    big = server.transact([insert("t", n=i) for i in range(25)])["ts"]
    after = server.transact([insert("t", n=99)])["ts"]
    page = _deltas(server, cursor=cursor)
    assert len(page["values"]) == 25
    assert page["cursor"] == big
    assert page["hasMore"] is True
    assert [value["n"] for value in _deltas(server, cursor=big)["values"]] == ["99"]
    assert _deltas(server, cursor=big)["cursor"] == after


def test_system_and_unselected_rows_count_toward_the_limit(devserver_factory: Factory) -> None:
    server = devserver_factory(deltas_row_limit=3)
    cursor = server.transact([insert("t", n=0)])["ts"]
    system = server.transact([insert("_scheduled_functions", job=i) for i in range(3)])["ts"]
    user = server.transact([insert("t", n=1)])["ts"]
    page = _deltas(server, cursor=cursor)
    assert page == {"values": [], "cursor": system, "hasMore": True}
    assert [value["_ts"] for value in _deltas(server, cursor=system)["values"]] == [user]

    other = server.transact([insert("other", x=i) for i in range(3)])["ts"]
    mine = server.transact([insert("t", n=2)])["ts"]
    filtered = _deltas(server, cursor=user, tableName="t")
    assert filtered == {"values": [], "cursor": other, "hasMore": True}
    rest = _deltas(server, cursor=other, tableName="t")
    assert [value["_ts"] for value in rest["values"]] == [mine]


def test_an_exhausted_log_answers_the_current_ts_even_without_values(
    devserver: RunningDevServer,
) -> None:
    start = devserver.transact([insert("t", n=0)])["ts"]
    latest = devserver.transact([insert("u", n=1)])["ts"]
    page = _deltas(devserver, cursor=start, tableName="t")
    assert page == {"values": [], "cursor": latest, "hasMore": False}
    assert _deltas(devserver, cursor=latest) == {"values": [], "cursor": latest, "hasMore": False}


def test_a_future_cursor_is_answered_with_the_current_ts(devserver: RunningDevServer) -> None:
    latest = devserver.transact([insert("t", n=0)])["ts"]
    page = _deltas(devserver, cursor=latest + 10**12)
    assert page == {"values": [], "cursor": latest, "hasMore": False}


def test_deletes_are_minimal_and_updates_are_full_documents(devserver: RunningDevServer) -> None:
    created = devserver.transact([insert("t", name="ada", n=1), insert("t", name="bob", n=2)])
    keep, gone = created["ids"]
    updated = devserver.transact([replace("t", keep, name="ada", n=3)])["ts"]
    deleted = devserver.transact([delete("t", gone)])["ts"]
    response = call(
        devserver, "POST", "/api/document_deltas", json={"cursor": created["ts"], "format": "json"}
    )
    values = parse(response)["values"]
    creation = {doc["_id"]: doc["_creationTime"] for doc in devserver.truth()}
    assert values[0] == {
        "_component": "",
        "_table": "t",
        "_ts": updated,
        "_deleted": False,
        "_creationTime": creation[keep],
        "_id": keep,
        "n": "3",
        "name": "ada",
    }
    assert list(values[0]) == [
        "_component",
        "_table",
        "_ts",
        "_deleted",
        "_creationTime",
        "_id",
        "n",
        "name",
    ]
    assert values[1] == {
        "_component": "",
        "_table": "t",
        "_ts": deleted,
        "_deleted": True,
        "_id": gone,
    }
    assert list(values[1]) == ["_component", "_table", "_ts", "_deleted", "_id"]
    assert b'"_deleted":true,"_id":' in response.content


def test_several_writes_to_one_document_in_a_transaction_are_one_entry(
    devserver: RunningDevServer,
) -> None:
    created = devserver.transact([insert("t", n=1), insert("t", n=2)])
    first, second = created["ids"]
    ts = devserver.transact(
        [
            replace("t", first, n=10),
            replace("t", first, n=11),
            replace("t", second, n=20),
            delete("t", second),
        ]
    )["ts"]
    values = _deltas(devserver, cursor=created["ts"])["values"]
    assert [(v["_id"], v["_ts"], v["_deleted"]) for v in values] == sorted(
        [(first, ts, False), (second, ts, True)]
    )
    assert next(v for v in values if v["_id"] == first)["n"] == "11"


def test_timestamps_increase_strictly_and_creation_times_are_float_ms(
    devserver: RunningDevServer,
) -> None:
    results = [devserver.transact([insert("t", n=i), insert("t", n=-i)]) for i in range(5)]
    stamps = [result["ts"] for result in results]
    assert stamps == sorted(set(stamps))
    values = _deltas(devserver, cursor=stamps[0] - 1)["values"]
    for value in values:
        assert isinstance(value["_ts"], int)
        assert isinstance(value["_creationTime"], float)
        # _creationTime is the transaction's start in ms: close to, and not after, _ts.
        assert value["_ts"] / 1e6 - 60_000 < value["_creationTime"] <= value["_ts"] / 1e6 + 1
    creation_times = [value["_creationTime"] for value in values]
    assert len(set(creation_times)) == len(creation_times)


def test_cursors_older_than_retention_are_rejected(devserver_factory: Factory) -> None:
    server = devserver_factory()
    start = server.transact([insert("t", n=0)])["ts"]
    assert _deltas(server, cursor=start)["hasMore"] is False
    old = time.time_ns() - 15 * 86_400 * 10**9
    response = call(server, "POST", "/api/document_deltas", json={"cursor": old})
    assert error(response) == (400, "InvalidWindowToReadDocuments")
    server.settings(retention_seconds=0.05)
    time.sleep(0.1)
    expired = call(server, "GET", "/api/document_deltas", params={"cursor": start})
    assert error(expired) == (400, "InvalidWindowToReadDocuments")


def test_walking_all_pages_replays_every_change_once(devserver_factory: Factory) -> None:
    server = devserver_factory(deltas_row_limit=5)
    cursor = server.transact([insert("t", n=0)])["ts"]
    ids: list[str] = []
    for step in range(12):
        ids += server.transact([insert("t", n=step), insert("_storage", blob=step)])["ids"][:1]
        if step % 3 == 2:
            server.transact([delete("t", ids.pop(0))])
    pages = delta_pages(server, cursor)
    stamps = [value["_ts"] for page in pages for value in page["values"]]
    assert stamps == sorted(stamps)
    for page in pages:
        for value in page["values"]:
            assert value["_ts"] <= page["cursor"]
    for earlier, later in pairwise(pages):
        assert {v["_ts"] for v in earlier["values"]}.isdisjoint({v["_ts"] for v in later["values"]})
    state: dict[str, str] = {}
    for page in pages:
        for value in page["values"]:
            if value["_deleted"]:
                state.pop(value["_id"], None)
            else:
                state[value["_id"]] = value["n"]
    truth = {
        doc["_id"]: str(doc["fields"]["n"]) for doc in server.truth() if doc["fields"]["n"] != 0
    }
    assert state == truth


def test_the_default_page_end_comes_after_128_log_rows(devserver: RunningDevServer) -> None:
    cursor = devserver.transact([insert("t", n=-1)])["ts"]
    stamps = [devserver.transact([insert("t", n=i)])["ts"] for i in range(130)]
    page = _deltas(devserver, cursor=cursor)
    assert len(page["values"]) == 128
    assert page["cursor"] == stamps[127]
    assert page["hasMore"] is True
