"""Data Sync (``POST /api/v1/data/sync``): pages, truncates, statuses, cursors and errors.

The contract is docs/convex-export-api.md §13.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.devserver.export_calls import (
    SyncReplica,
    call,
    delete,
    error,
    insert,
    parse,
    replace,
    snapshot_pages,
    sync,
    truth_rows,
)
from tests.fixtures.devserver import RunningDevServer

Factory = Callable[..., RunningDevServer]
_HEX = re.compile(r"[0-9a-f]+")


def _ids(page: dict[str, Any]) -> list[str]:
    return [value["value"]["_id"] for value in page["values"]]


def _seed(server: RunningDevServer) -> dict[str, list[str]]:
    """Tables a (5 documents), b (3) and c in component ``comp`` (2), one write each."""
    return {
        "a": server.transact([insert("a", n=i, big=2**60 + i) for i in range(5)])["ids"],
        "b": server.transact([insert("b", n=i, f=float(i)) for i in range(3)])["ids"],
        "c": server.transact([insert("c", "comp", n=i) for i in range(2)])["ids"],
    }


def test_a_full_walk_equals_the_truth_in_export_json(devserver: RunningDevServer) -> None:
    _seed(devserver)
    devserver.transact([insert("a", raw={"$bytes": "AQI="}, nan={"$float": "AAAAAAAA+H8="})])
    replica = SyncReplica()
    replica.until_up_to_date(devserver)
    assert replica.rows == truth_rows(devserver)
    value = replica.pages[0]["values"][0]
    assert list(value) == ["component", "table", "ts", "deleted", "value"]
    big = [row["big"] for row in replica.rows.values() if "big" in row]
    assert sorted(big) == [2**60 + i for i in range(5)]  # int64 stays a JSON integer


def test_every_page_has_more_and_an_opaque_lowercase_hex_cursor(
    devserver: RunningDevServer,
) -> None:
    _seed(devserver)
    devserver.settings(data_sync_page_size=2)
    replica = SyncReplica()
    replica.until_up_to_date(devserver)
    replica.step(devserver)  # still more after catching up: the stream never ends
    for page in replica.pages:
        assert set(page) == {"status", "truncates", "values", "syncId", "pagination"}
        assert page["pagination"]["hasMore"] is True
        assert _HEX.fullmatch(page["pagination"]["nextCursor"])
        assert b"synced" not in bytes.fromhex(page["pagination"]["nextCursor"])


def test_statuses_go_from_snapshotting_to_up_to_date_and_stale_while_behind(
    devserver: RunningDevServer,
) -> None:
    _seed(devserver)
    devserver.settings(data_sync_page_size=2)
    replica = SyncReplica()
    pages = replica.until_up_to_date(devserver)
    kinds = [page["status"]["type"] for page in pages]
    assert kinds[-1] == "upToDate" and set(kinds[:-1]) == {"snapshotting"}
    assert all(page["status"] == {"type": "snapshotting"} for page in pages[:-1])
    assert pages[-1]["status"]["snapshotTs"] == max(row["_ts"] for row in devserver.truth())
    first = devserver.transact([insert("a", n=10), insert("a", n=11), insert("a", n=12)])["ts"]
    second = devserver.transact([insert("b", n=20)])["ts"]
    behind = replica.step(devserver)
    # A transaction is never split, even past the page size; the page stops after it.
    assert [value["ts"] for value in behind["values"]] == [first] * 3
    assert behind["status"] == {"type": "stale", "snapshotTs": first}
    caught_up = replica.step(devserver)
    assert caught_up["status"] == {"type": "upToDate", "snapshotTs": second}
    assert replica.rows == truth_rows(devserver)


def test_by_id_pages_respect_the_page_size_and_byte_limits(devserver: RunningDevServer) -> None:
    ids = _seed(devserver)
    devserver.settings(data_sync_page_size=2)
    pages = SyncReplica().until_up_to_date(devserver)
    assert max(len(page["values"]) for page in pages) == 2
    # Within a table, documents come in ascending id order.
    walked_a = [v["value"]["_id"] for p in pages for v in p["values"] if v["table"] == "a"]
    assert walked_a == sorted(ids["a"])
    devserver.settings(data_sync_page_bytes=1)
    one_by_one = SyncReplica().until_up_to_date(devserver)
    # The document that crosses the byte limit is still sent, so each page holds one.
    assert [len(page["values"]) for page in one_by_one if page["values"]] == [1] * 10


def test_a_cold_start_truncates_each_table_on_the_page_where_its_walk_begins(
    devserver: RunningDevServer,
) -> None:
    _seed(devserver)
    devserver.settings(data_sync_page_size=2)
    pages = SyncReplica().until_up_to_date(devserver)
    truncated = [(t["component"], t["table"]) for page in pages for t in page["truncates"]]
    assert sorted(truncated) == [("", "a"), ("", "b"), ("comp", "c")]
    seen: set[tuple[str, str]] = set()
    for page in pages:
        entering = {(t["component"], t["table"]) for t in page["truncates"]}
        # A table's truncate comes before (or with) its first documents, never after.
        for value in page["values"]:
            where = (value["component"], value["table"])
            assert where in seen or where in entering
        seen |= entering
        # The previous table's last documents may share the page with the next truncate.
        assert len({(v["component"], v["table"]) for v in page["values"]} - entering) <= 1


def test_a_ts_page_reads_a_bounded_number_of_log_rows_but_a_whole_first_transaction(
    devserver: RunningDevServer,
) -> None:
    devserver.transact([insert("t", n=0), insert("other", n=0)])
    only_t = {"_other": "excl", "": {"_other": "excl", "t": {"_other": "incl"}}}
    replica = SyncReplica()
    replica.until_up_to_date(devserver, selection=only_t)
    devserver.settings(data_sync_page_size=3, data_sync_rows_read_limit=3)
    # Rows of unselected tables count too: two rows per transaction.
    small = [devserver.transact([insert("t", n=i), insert("other", n=i)])["ts"] for i in (1, 2)]
    big = devserver.transact([insert("t", n=10 + i) for i in range(5)])["ts"]
    pages = [replica.step(devserver, selection=only_t) for _ in range(3)]
    assert [[value["ts"] for value in page["values"]] for page in pages] == [
        [small[0]],
        [small[1]],
        [big] * 5,
    ]
    assert [page["status"]["type"] for page in pages] == ["stale", "stale", "upToDate"]
    assert replica.rows == {k: v for k, v in truth_rows(devserver).items() if k[1] == "t"}


def test_an_empty_deployment_is_up_to_date_at_once(devserver: RunningDevServer) -> None:
    page = sync(devserver)
    assert page["values"] == [] and page["truncates"] == []
    assert page["status"]["type"] == "upToDate"
    assert isinstance(page["status"]["snapshotTs"], int)


def test_changes_while_snapshotting_reach_only_captured_documents_in_ts_order(
    devserver: RunningDevServer,
) -> None:
    """Past the freshness window the sync catches up along the log before walking on."""
    ids = sorted(devserver.transact([insert("t", n=i) for i in range(4)])["ids"])
    devserver.settings(data_sync_page_size=2, data_sync_by_id_freshness_seconds=1e-9)
    replica = SyncReplica()
    first = replica.step(devserver)
    assert _ids(first) == ids[:2] and first["status"]["type"] == "snapshotting"
    changed = devserver.transact([replace("t", ids[0], n=100), replace("t", ids[3], n=103)])
    created = devserver.transact([insert("t", n=4)])["ids"][0]
    along_log = replica.step(devserver)
    # Only revisions of documents at or before the walk's position (the new id is random,
    # so it may sort there); the others are read by id later.
    captured_new = created < ids[1]
    assert _ids(along_log) == [ids[0]] + ([created] if captured_new else [])
    assert along_log["values"][0]["ts"] == changed["ts"]
    assert along_log["status"]["type"] == "snapshotting"
    rest = replica.until_up_to_date(devserver)
    walked = [value["value"]["_id"] for page in rest for value in page["values"]]
    assert walked == sorted([ids[2], ids[3]] + ([] if captured_new else [created]))
    assert replica.rows == truth_rows(devserver)
    emitted: dict[str, list[int]] = {}
    for page in replica.pages:
        for value in page["values"]:
            emitted.setdefault(value["value"]["_id"], []).append(value["ts"])
    assert all(ts == sorted(set(ts)) for ts in emitted.values())


def test_deletes_are_tombstones_with_only_the_id(devserver: RunningDevServer) -> None:
    ids = devserver.transact([insert("t", n=1), insert("t", n=2)])["ids"]
    replica = SyncReplica()
    replica.until_up_to_date(devserver)
    gone = devserver.transact([delete("t", ids[0])])["ts"]
    page = replica.step(devserver)
    assert page["values"] == [
        {"component": "", "table": "t", "ts": gone, "deleted": True, "value": {"_id": ids[0]}}
    ]
    assert replica.rows == truth_rows(devserver)


def test_the_sync_id_is_fixed_for_a_sync_and_prefixed_by_the_client(
    devserver: RunningDevServer,
) -> None:
    _seed(devserver)
    devserver.settings(data_sync_page_size=2)
    first = sync(devserver, client="fivetran-export-2.0.2")
    later = sync(devserver, first["pagination"]["nextCursor"], client="other-1.0.0")
    assert first["syncId"].startswith("fivetran-") and later["syncId"] == first["syncId"]
    assert sync(devserver, client="airbyte-export-0.4.0")["syncId"].startswith("airbyte-")
    plain = sync(devserver, client="convex-cdc-1.0.0")["syncId"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", plain)
    assert plain != sync(devserver)["syncId"]


# --- selection ----------------------------------------------------------------------------------


def test_short_and_canonical_selection_words_select_the_same(devserver: RunningDevServer) -> None:
    _seed(devserver)
    short = {
        "_other": "excl",
        "": {"_other": "excl", "a": {"_other": "incl", "big": "excl"}, "b": "excl"},
        "comp": "excl",
    }
    canonical = {
        "_other": "excluded",
        "": {"_other": "excluded", "a": {"_other": "included", "big": "excluded"}, "b": "excluded"},
        "comp": "excluded",
    }
    results = []
    for selection in (short, canonical):
        replica = SyncReplica()
        replica.until_up_to_date(devserver, selection=selection)
        results.append(replica.rows)
    assert results[0] == results[1]
    assert {key[1] for key in results[0]} == {"a"}
    assert all("big" not in row and "n" in row for row in results[0].values())


def test_bad_selections_are_400s(devserver: RunningDevServer) -> None:
    no_id = {
        "_other": "included",
        "": {"_other": "included", "a": {"_other": "incl", "_id": "excl"}},
    }
    response = devserver.client.post("/api/v1/data/sync", json={"selection": no_id})
    assert error(response) == (400, "InvalidDataSyncSelection")
    for malformed in ({"": {"_other": "incl"}}, {"_other": "maybe"}, None):
        response = devserver.client.post("/api/v1/data/sync", json={"selection": malformed})
        assert error(response) == (400, "BadJsonBody")
    # Deserializing the body comes before the permission check.
    anonymous = call(devserver, "POST", "/api/v1/data/sync", key=None, json={"selection": {}})
    assert error(anonymous) == (400, "BadJsonBody")


# --- cursors and errors ---------------------------------------------------------------------------


def test_garbled_or_foreign_cursors_are_invalid(devserver_factory: Factory) -> None:
    server = devserver_factory()
    server.transact([insert("t", n=1)])
    cursor = sync(server)["pagination"]["nextCursor"]
    flipped = cursor[:-1] + ("0" if cursor[-1] != "0" else "1")
    stranger = devserver_factory()  # another deployment: another key
    for bad in ("zz", "", "00", flipped, sync(stranger)["pagination"]["nextCursor"]):
        response = server.client.post("/api/v1/data/sync", json={"cursor": bad})
        assert error(response) == (400, "InvalidDataSyncCursor"), bad
    assert error(server.client.post("/api/v1/data/sync", json={"cursor": 5})) == (
        400,
        "BadJsonBody",
    )


def test_a_cursor_ahead_of_the_server_is_invalid(devserver_factory: Factory) -> None:
    behind = devserver_factory(key="dev:same|secret")  # same deployment key, older clock
    ahead = devserver_factory(key="dev:same|secret")
    ahead.transact([insert("t", n=1)])
    cursor = sync(ahead)["pagination"]["nextCursor"]
    assert sync(ahead, cursor)["status"]["type"] == "upToDate"  # it opens under this key
    response = behind.client.post("/api/v1/data/sync", json={"cursor": cursor})
    assert error(response) == (400, "InvalidDataSyncCursor")


def test_a_cursor_outside_retention_has_expired(devserver: RunningDevServer) -> None:
    devserver.transact([insert("t", n=1)])
    cursor = sync(devserver)["pagination"]["nextCursor"]
    devserver.settings(retention_seconds=0)
    response = devserver.client.post("/api/v1/data/sync", json={"cursor": cursor})
    assert error(response) == (400, "DataSyncCursorExpired")
    assert sync(devserver)["values"]  # restarting without a cursor works


def test_auth_and_the_streaming_export_switch_apply(devserver: RunningDevServer) -> None:
    path = "/api/v1/data/sync"
    assert error(call(devserver, "POST", path, key=None, json={})) == (403, "BadDeployKey")
    assert error(call(devserver, "POST", path, key="wrong", json={})) == (401, "BadAdminKey")
    not_json = call(devserver, "POST", path, content=b"{}", headers={"Content-Type": "text/plain"})
    assert error(not_json) == (400, "BadJsonBody")
    devserver.settings(streaming_export_enabled=False)
    assert error(devserver.client.post(path, json={})) == (403, "StreamingExportNotEnabled")


@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("503", 503), ("429", 429)])
def test_faults_apply_to_data_sync(devserver_factory: Factory, kind: str, status: int) -> None:
    server = devserver_factory(fail_rate=1.0)
    server.settings(fault_kinds=[kind])
    assert server.client.post("/api/v1/data/sync", json={}).status_code == status
    conversion = server.client.post("/api/data_sync_cursor_from_deltas", json={"cursor": 1})
    assert conversion.status_code == status


# --- deployments without Data Sync ----------------------------------------------------------------


def test_a_deployment_without_data_sync_answers_404(devserver: RunningDevServer) -> None:
    devserver.transact([insert("t", n=1)])
    devserver.settings(data_sync_enabled=False)
    for method, path in [
        ("POST", "/api/v1/data/sync"),
        ("POST", "/api/data_sync_cursor_from_deltas"),
        ("GET", "/api/v1/data/list_active_syncs"),
    ]:
        for key in ("", None):
            response = call(devserver, method, path, key=key, json={})
            assert (response.status_code, response.content) == (404, b""), (path, key)
    assert snapshot_pages(devserver)[0]["values"]  # the legacy pair still answers
    devserver.settings(data_sync_enabled=True)
    assert sync(devserver)["values"]


# --- list_active_syncs ----------------------------------------------------------------------------


def test_active_syncs_are_listed_most_recent_first_with_their_progress(
    devserver: RunningDevServer,
) -> None:
    _seed(devserver)
    devserver.settings(data_sync_page_size=2)
    done = SyncReplica()
    done.until_up_to_date(devserver)
    walking = sync(devserver)
    listed = parse(devserver.client.get("/api/v1/data/list_active_syncs"))
    assert listed["pagination"] == {"hasMore": False}
    newest, older = listed["syncs"]
    if newest["lastUpdated"] == older["lastUpdated"]:  # same millisecond: either order
        newest, older = sorted(listed["syncs"], key=lambda e: e["syncId"] != walking["syncId"])
    assert newest["lastUpdated"] >= older["lastUpdated"]
    assert [newest["syncId"], older["syncId"]] == [walking["syncId"], done.pages[0]["syncId"]]
    snapshotting, up_to_date = newest["status"], older["status"]
    assert snapshotting == {
        "type": "snapshotting",
        "numTablesSynced": 0,
        "totalTables": 3,
        "currentComponent": snapshotting["currentComponent"],
        "currentTable": snapshotting["currentTable"],
        "numDocumentsInCurrentTable": 2,
        "totalDocumentsInCurrentTable": snapshotting["totalDocumentsInCurrentTable"],
        "numDocumentsSynced": 2,
        "totalDocuments": 10,
    }
    sizes = {"a": 5, "b": 3, "c": 2}
    assert snapshotting["totalDocumentsInCurrentTable"] == sizes[snapshotting["currentTable"]]
    assert snapshotting["currentComponent"] == (
        "comp" if snapshotting["currentTable"] == "c" else ""
    )
    assert up_to_date == {
        "type": "upToDate",
        "totalTables": 3,
        "numDocumentsSynced": 10,
        "syncedTs": done.pages[-1]["status"]["snapshotTs"],
    }
    assert all(isinstance(entry["lastUpdated"], int) for entry in listed["syncs"])
    first = parse(devserver.client.get("/api/v1/data/list_active_syncs", params={"limit": 1}))
    assert first["pagination"]["hasMore"] is True
    rest = parse(
        devserver.client.get(
            "/api/v1/data/list_active_syncs",
            params={"limit": 1, "cursor": first["pagination"]["nextCursor"]},
        )
    )
    assert first["syncs"] + rest["syncs"] == listed["syncs"]
    assert rest["pagination"] == {"hasMore": False}
    for limit in (0, 101):
        response = devserver.client.get("/api/v1/data/list_active_syncs", params={"limit": limit})
        assert error(response) == (400, "LimitOutOfRange")


# --- switching from document_deltas -----------------------------------------------------------


def _convert(server: RunningDevServer, **body: Any) -> str:
    response = server.client.post("/api/data_sync_cursor_from_deltas", json=body)
    cursor: str = parse(response)["cursor"]
    return cursor


def test_a_converted_delta_cursor_continues_without_reading_anything_again(
    devserver: RunningDevServer,
) -> None:
    ids = _seed(devserver)
    walk = snapshot_pages(devserver, format="export_json")
    legacy = walk[-1]["snapshot"]
    updated = devserver.transact([replace("a", ids["a"][0], n=50)])["ts"]
    removed = devserver.transact([delete("b", ids["b"][1])])["ts"]
    replica = SyncReplica()
    replica.cursor = _convert(devserver, cursor=legacy)
    assert _HEX.fullmatch(replica.cursor)
    created = devserver.transact([insert("d", n=1)])
    pages = replica.until_up_to_date(devserver)
    # Only what changed after the legacy cursor; tables that existed at the conversion count
    # as walked (no truncate), a table created since enters the sync with one.
    assert [(v["table"], v["ts"], v["deleted"]) for p in pages for v in p["values"]] == [
        ("a", updated, False),
        ("b", removed, True),
        ("d", created["ts"], False),
    ]
    assert [t["table"] for p in pages for t in p["truncates"]] == ["d"]
    assert pages[-1]["status"] == {"type": "upToDate", "snapshotTs": created["ts"]}
    # Applied on top of the legacy walk, the result is the truth.
    for page in walk:
        for value in page["values"]:
            key = (value["_component"], value["_table"], value["_id"])
            document = {k: v for k, v in value.items() if k not in ("_component", "_table")}
            replica.rows.setdefault(key, document)
    replica.rows.pop(("", "b", ids["b"][1]), None)
    assert replica.rows == truth_rows(devserver)


def test_a_converted_cursor_follows_the_selection_it_was_made_with(
    devserver: RunningDevServer,
) -> None:
    _seed(devserver)
    legacy = devserver.transact([insert("a", n=99)])["ts"]
    only_a = {"_other": "excl", "": {"_other": "excl", "a": {"_other": "incl"}}}
    replica = SyncReplica()
    replica.cursor = _convert(devserver, cursor=legacy, selection=only_a)
    # Sent with a wider selection, the tables it did not hold enter the sync (walked afresh).
    pages = replica.until_up_to_date(devserver)
    assert sorted(t["table"] for p in pages for t in p["truncates"]) == ["b", "c"]
    assert {v["table"] for p in pages for v in p["values"]} == {"b", "c"}


def test_cursor_conversion_refuses_what_it_cannot_continue(devserver: RunningDevServer) -> None:
    now = devserver.transact([insert("t", n=1)])["ts"]
    path = "/api/data_sync_cursor_from_deltas"
    for cursor in (-1, now + 10**12):
        assert error(devserver.client.post(path, json={"cursor": cursor})) == (
            400,
            "InvalidDataSyncCursor",
        )
    for body in ({}, {"cursor": None}, {"cursor": "123"}, {"cursor": now, "selection": None}):
        assert error(devserver.client.post(path, json=body)) == (400, "BadJsonBody")
    no_id = {"_other": "incl", "": {"_other": "incl", "t": {"_other": "incl", "_id": "excl"}}}
    response = devserver.client.post(path, json={"cursor": now, "selection": no_id})
    assert error(response) == (400, "InvalidDataSyncSelection")
    devserver.settings(retention_seconds=0)
    assert error(devserver.client.post(path, json={"cursor": now})) == (
        400,
        "DataSyncCursorExpired",
    )
