"""Tables entering and leaving: drops and replace-imports through the write API, and what the
legacy pair and Data Sync show of them (docs/convex-export-api.md §1 and §13).

A table enters a Data Sync on a cold start, when it becomes selected, or when an import
replaces it, and gets a truncate on the page where its walk begins. A table that leaves
(deselected or dropped) gets nothing: no truncate, no tombstones.
"""

from __future__ import annotations

from typing import Any

from convex_cdc.devserver.ids import decode_document_id
from tests.devserver.export_calls import (
    SyncReplica,
    delta_pages,
    drop_table,
    error,
    insert,
    parse,
    replace,
    replace_table,
    snapshot_pages,
    truth_rows,
)
from tests.fixtures.devserver import RunningDevServer


def _truncated(pages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(t["component"], t["table"]) for page in pages for t in page["truncates"]]


def _tables_in(pages: list[dict[str, Any]]) -> set[str]:
    return {value["table"] for page in pages for value in page["values"]}


def _schema_tables(server: RunningDevServer) -> dict[str, set[str]]:
    schemas = parse(server.client.get("/api/json_schemas", params={"byComponent": "true"}))
    return {path: set(tables) for path, tables in schemas.items()}


def _synced(server: RunningDevServer, **body: Any) -> SyncReplica:
    replica = SyncReplica()
    replica.until_up_to_date(server, **body)
    return replica


# --- drop_table -------------------------------------------------------------------------------


def test_a_dropped_table_leaves_schemas_snapshots_and_truth(devserver: RunningDevServer) -> None:
    kept = devserver.transact([insert("kept", n=1)])["ids"][0]
    devserver.transact([insert("gone", n=i) for i in range(3)] + [insert("gone", "comp", n=9)])
    dropped_at = drop_table(devserver, "gone")
    assert devserver.transact([insert("kept", n=2)])["ts"] > dropped_at
    assert _schema_tables(devserver) == {"": {"kept"}, "comp": {"gone"}}
    walked = [value["_id"] for page in snapshot_pages(devserver) for value in page["values"]]
    assert len(walked) == 3 and kept in walked
    assert {(doc["component"], doc["table"]) for doc in devserver.truth()} == {
        ("", "kept"),
        ("comp", "gone"),
    }


def test_a_dropped_table_sends_no_tombstones_through_document_deltas(
    devserver: RunningDevServer,
) -> None:
    before = devserver.transact([insert("kept", n=1)])["ts"]
    devserver.transact([insert("gone", n=1)])
    drop_table(devserver, "gone")
    values = [value for page in delta_pages(devserver, before) for value in page["values"]]
    assert values == []  # neither its insert nor any delete: the legacy API cannot tell


def test_dropping_an_unknown_or_system_table_is_refused(devserver: RunningDevServer) -> None:
    devserver.transact([insert("_system", n=1)])
    missing = devserver.client.post("/_devserver/drop_table", json={"table": "missing"})
    assert error(missing) == (400, "TableNotFound")
    system = devserver.client.post("/_devserver/drop_table", json={"table": "_system"})
    assert error(system) == (400, "InvalidWrite")
    garbled = devserver.client.post("/_devserver/drop_table", json={"table": 3})
    assert garbled.status_code == 400


def test_a_dropped_table_gets_nothing_from_data_sync(devserver: RunningDevServer) -> None:
    devserver.transact([insert("kept", n=1), insert("gone", n=2)])
    replica = _synced(devserver)
    drop_table(devserver, "gone")
    devserver.transact([insert("kept", n=3)])
    pages = replica.until_up_to_date(devserver)
    assert _truncated(pages) == []
    assert _tables_in(pages) == {"kept"}
    # The consumer still holds the dropped table's rows: it must notice the drop itself.
    assert {key[1] for key in replica.rows} == {"kept", "gone"}


def test_a_table_created_again_after_a_drop_enters_the_sync(devserver: RunningDevServer) -> None:
    devserver.transact([insert("t", n=1)])
    replica = _synced(devserver)
    drop_table(devserver, "t")
    devserver.transact([insert("t", n=2)])
    pages = replica.until_up_to_date(devserver)
    assert _truncated(pages) == [("", "t")]
    assert replica.rows == truth_rows(devserver)


# --- replace_table ------------------------------------------------------------------------------


def test_a_replace_import_swaps_the_documents_in_truth_and_schemas(
    devserver: RunningDevServer,
) -> None:
    old = devserver.transact([insert("t", old=i) for i in range(3)] + [insert("u", n=1)])["ids"]
    result = replace_table(devserver, "t", [{"new": 1}, {"new": 2, "big": 2**62}])
    assert len(result["ids"]) == 2 and not set(result["ids"]) & set(old)
    # The table number is kept (ids of the new documents are ids of the same table).
    numbers = {decode_document_id(doc_id).table_number for doc_id in result["ids"]}
    assert numbers == {decode_document_id(old[0]).table_number}
    rows = [doc for doc in devserver.truth() if doc["table"] == "t"]
    assert sorted(doc["fields"]["new"] for doc in rows) == [1, 2]
    assert {doc["_ts"] for doc in rows} == {result["ts"]}
    schema = parse(devserver.client.get("/api/json_schemas"))["t"]
    assert set(schema["properties"]) == {"_creationTime", "_id", "new", "big"}
    writes = {"writes": [replace("t", old[0], n=1)]}
    stale = devserver.client.post("/_devserver/transaction", json=writes)
    assert error(stale) == (400, "DocumentNotFound")


def test_document_deltas_shows_a_replace_as_inserts_without_tombstones(
    devserver: RunningDevServer,
) -> None:
    before = devserver.transact([insert("t", old=i) for i in range(3)])["ts"]
    result = replace_table(devserver, "t", [{"new": 1}])
    values = [value for page in delta_pages(devserver, before) for value in page["values"]]
    assert [(value["_id"], value["_deleted"], value["_ts"]) for value in values] == [
        (result["ids"][0], False, result["ts"])
    ]
    # A walk pinned before the import still reads the old documents.
    pinned = parse(devserver.client.post("/api/list_snapshot", json={"snapshot": before}))
    assert sorted(value["old"] for value in pinned["values"]) == ["0", "1", "2"]


def test_an_empty_import_or_one_into_a_new_table_works(devserver: RunningDevServer) -> None:
    devserver.transact([insert("t", n=1)])
    replace_table(devserver, "t", [])
    replace_table(devserver, "fresh", [{"n": 1}], component="comp")
    assert _schema_tables(devserver) == {"": {"t"}, "comp": {"fresh"}}
    assert [(doc["component"], doc["table"]) for doc in devserver.truth()] == [("comp", "fresh")]
    system = {"table": "_sys", "documents": []}
    bad = devserver.client.post("/_devserver/replace_table", json=system)
    assert error(bad) == (400, "InvalidWrite")
    bad_fields = {"table": "t", "documents": [{"_id": "x"}]}
    assert error(devserver.client.post("/_devserver/replace_table", json=bad_fields)) == (
        400,
        "InvalidWrite",
    )
    assert [(doc["component"], doc["table"]) for doc in devserver.truth()] == [("comp", "fresh")]


def test_a_replaced_table_is_truncated_then_sent_again_by_data_sync(
    devserver: RunningDevServer,
) -> None:
    devserver.transact([insert("t", old=i) for i in range(3)] + [insert("u", n=1)])
    replica = _synced(devserver)
    replace_table(devserver, "t", [{"new": 1}, {"new": 2}])
    pages = replica.until_up_to_date(devserver)
    assert _truncated(pages) == [("", "t")]
    assert _tables_in(pages) == {"t"}
    first_t = next(
        i for i, page in enumerate(pages) if any(v["table"] == "t" for v in page["values"])
    )
    assert next(i for i, page in enumerate(pages) if page["truncates"]) <= first_t
    assert replica.rows == truth_rows(devserver)


# --- selection changes --------------------------------------------------------------------------

ONLY_A = {"_other": "excluded", "": {"_other": "excluded", "a": {"_other": "included"}}}
BOTH = {"_other": "excl", "": {"_other": "excl", "a": {"_other": "incl"}, "b": {"_other": "incl"}}}


def test_a_newly_selected_table_enters_with_a_truncate(devserver: RunningDevServer) -> None:
    devserver.transact([insert("a", n=1), insert("b", n=2)])
    replica = _synced(devserver, selection=ONLY_A)
    assert _truncated(replica.pages) == [("", "a")]
    pages = replica.until_up_to_date(devserver, selection=BOTH)
    assert _truncated(pages) == [("", "b")]  # nothing for a, which was already synced
    assert _tables_in(pages) == {"b"}
    assert replica.rows == truth_rows(devserver)


def test_a_deselected_table_gets_nothing_and_reenters_when_selected_again(
    devserver: RunningDevServer,
) -> None:
    devserver.transact([insert("a", n=1), insert("b", n=2)])
    replica = _synced(devserver, selection=BOTH)
    devserver.transact([insert("a", n=3), insert("b", n=4)])
    pages = replica.until_up_to_date(devserver, selection=ONLY_A)
    assert _truncated(pages) == []
    assert _tables_in(pages) == {"a"}
    back = replica.until_up_to_date(devserver, selection=BOTH)
    assert _truncated(back) == [("", "b")]
    assert replica.rows == truth_rows(devserver)


def test_the_workload_goes_on_after_its_tables_are_dropped_or_replaced(
    devserver_factory: Any,
) -> None:
    """It never names a document of a dropped or replaced table again (that was a 500)."""
    server = devserver_factory(seed="demo", docs=300)
    server.workload(5)
    server.client.post("/_devserver/drop_table", json={"table": "messages"}).raise_for_status()
    server.client.post(
        "/_devserver/replace_table", json={"table": "users", "documents": [{"name": "imported"}]}
    ).raise_for_status()

    server.workload(200)

    truth = server.truth()
    assert "imported" in {row["fields"].get("name") for row in truth if row["table"] == "users"}
    assert len({(row["table"], row["_id"]) for row in truth}) == len(truth)
