"""apply-silver: AUTO CDC SCD type 1 semantics, locally, from bronze."""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from convex_cdc.core.errors import StateError
from convex_cdc.core.events import ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.platform.databricks.bronze import BronzeSink
from convex_cdc.platform.databricks.control_table import DeltaCheckpointStore
from convex_cdc.platform.databricks.delta_read import read_table
from convex_cdc.platform.databricks.silver import apply_silver, read_silver
from convex_cdc.platform.databricks.silver_merge import merge_window
from convex_cdc.platform.databricks.table_spec import TableSpecStore, spec_from_json
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.platform.databricks.change_batches import (
    SOURCE,
    batch,
    checkpoint,
    data_sync_batch,
    doc,
    silver_as_dicts,
)

MESSAGES = TableKey("", "messages")


def land(warehouse: Warehouse, *batches: ChangeBatch) -> None:
    sink = BronzeSink(warehouse, SOURCE)
    for b in batches:
        sink.write(b)


def silver(warehouse: Warehouse, key: TableKey = MESSAGES) -> dict[str, dict[str, Any]]:
    table = read_silver(warehouse, key)
    assert table is not None
    return silver_as_dicts(table)


def live(rows: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {doc_id: row["_ts"] for doc_id, row in rows.items()}


def test_silver_holds_the_latest_version_of_every_live_document(warehouse: Warehouse) -> None:
    land(
        warehouse,
        batch(1, [doc("messages", "a", 10, text="a1"), doc("messages", "b", 11, text="b1")]),
        batch(2, [doc("messages", "a", 20, text="a2"), doc("messages", "b", 21, deleted=True)]),
        batch(3, [doc("messages", "c", 30, text="c1")]),
    )

    apply_silver(warehouse)

    rows = silver(warehouse)
    assert live(rows) == {"a": 20, "c": 30}
    assert rows["a"]["text"] == "a2"
    assert rows["a"]["_creationTime"] == (1_700_000_000_000.5, 1.0)


def test_silver_columns_are_typed_from_the_spec(warehouse: Warehouse) -> None:
    nan = {"$float": "AAAAAAAA+H8="}
    inf = {"$float": "AAAAAAAA8H8="}
    odd_nan = {"$float": base64.b64encode(struct.pack("<Q", 0x7FF0000000000001)).decode()}
    land(
        warehouse,
        batch(
            1,
            [
                doc(
                    "messages",
                    "a",
                    10,
                    big=2**62 + 1,
                    score=-0.0,
                    flag=True,
                    blob={"$bytes": "AAEC"},
                    tags=["x", 1],
                    text="hi",
                ),
                doc("messages", "b", 11, big=-(2**63), score=nan, flag=False, text=None),
                doc("messages", "c", 12, score=inf, blob={"$bytes": ""}),
                doc("messages", "d", 13, score=odd_nan),
            ],
        ),
    )

    apply_silver(warehouse)

    table = read_silver(warehouse, MESSAGES)
    assert table is not None
    assert table.schema.names == [
        "_id",
        "_creationTime",
        "_ts",
        "big",
        "blob",
        "flag",
        "score",
        "tags",
        "text",
    ]
    assert [table.schema.field(n).type for n in ("big", "blob", "flag", "score", "tags")] == [
        pa.int64(),
        pa.binary(),
        pa.bool_(),
        pa.float64(),
        pa.string(),
    ]
    rows = silver_as_dicts(table)
    assert rows["a"]["big"] == 2**62 + 1 and rows["b"]["big"] == -(2**63)
    assert rows["a"]["score"] == (-0.0, -1.0)
    assert rows["b"]["score"] == "NaN" and rows["d"]["score"] == "NaN"
    assert rows["c"]["score"] == (float("inf"), 1.0)
    assert rows["a"]["blob"] == b"\x00\x01\x02" and rows["c"]["blob"] == b""
    assert rows["a"]["tags"] == '["x",1]'
    assert "text" not in rows["b"]  # null and missing read the same


def test_an_event_older_than_silver_is_ignored(warehouse: Warehouse) -> None:
    land(
        warehouse,
        batch(1, [doc("messages", "a", 50, text="new")]),
        batch(2, [doc("messages", "a", 40, text="old"), doc("messages", "b", 7, text="b")]),
    )

    apply_silver(warehouse, window_rows=1)  # one batch per MERGE

    rows = silver(warehouse)
    assert rows["a"]["text"] == "new" and rows["a"]["_ts"] == 50


def test_out_of_order_events_within_a_batch_resolve_by_sequence(warehouse: Warehouse) -> None:
    land(
        warehouse,
        batch(
            1,
            [
                doc("messages", "a", 30, text="third"),
                doc("messages", "a", 10, text="first"),
                doc("messages", "b", 20, deleted=True),
                doc("messages", "b", 15, text="resurrect?"),
            ],
        ),
    )

    apply_silver(warehouse)

    assert live(silver(warehouse)) == {"a": 30}


def test_a_late_older_upsert_cannot_resurrect_a_deleted_row(warehouse: Warehouse) -> None:
    land(
        warehouse,
        batch(1, [doc("messages", "a", 10, text="v1")]),
        batch(2, [doc("messages", "a", 30, deleted=True)]),
    )
    apply_silver(warehouse)
    land(warehouse, batch(3, [doc("messages", "a", 20, text="late")]))

    apply_silver(warehouse)

    assert live(silver(warehouse)) == {}
    tombstones = DeltaTable(warehouse.tombstones(MESSAGES), storage_options=warehouse.options())
    assert read_table(tombstones).to_pylist() == [{"_id": "a", "_ts": 30}]


def test_a_newer_upsert_after_a_delete_brings_the_row_back(warehouse: Warehouse) -> None:
    land(
        warehouse,
        batch(1, [doc("messages", "a", 10, text="v1")]),
        batch(2, [doc("messages", "a", 30, deleted=True)]),
        batch(3, [doc("messages", "a", 40, text="v2")]),
    )

    apply_silver(warehouse, window_rows=1)

    assert silver(warehouse)["a"]["text"] == "v2"


def test_applying_again_changes_nothing_and_reads_nothing(warehouse: Warehouse) -> None:
    land(warehouse, batch(1, [doc("messages", "a", 10, text="v1")]))
    apply_silver(warehouse)
    version = DeltaTable(warehouse.silver(MESSAGES)).version()

    report = apply_silver(warehouse)

    assert [t.skipped for t in report.tables] == [True]
    assert DeltaTable(warehouse.silver(MESSAGES)).version() == version


def test_replaying_bronze_windows_in_any_order_is_harmless(warehouse: Warehouse) -> None:
    batches = [
        batch(1, [doc("messages", "a", 10, text="v1"), doc("messages", "b", 11, text="b")]),
        batch(2, [doc("messages", "a", 20, deleted=True), doc("messages", "b", 21, text="b2")]),
        batch(3, [doc("messages", "c", 30, text="c")]),
    ]
    land(warehouse, *batches)
    apply_silver(warehouse)
    expected = silver(warehouse)
    spec = TableSpecStore(warehouse).load()[MESSAGES]
    silver_table = DeltaTable(warehouse.silver(MESSAGES))
    tombstones = DeltaTable(warehouse.tombstones(MESSAGES))
    bronze = DeltaTable(warehouse.bronze(MESSAGES))
    # A crash before progress was recorded re-applies windows; late windows arrive older.
    for seq in (3, 1, 2, 1):
        window = read_table(bronze, where=f'"_batch" = {seq}')
        merge_window(silver_table, tombstones, window, spec)

    assert silver(warehouse) == expected
    assert live(expected) == {"b": 21, "c": 30}


def test_incremental_apply_only_reads_new_batches(warehouse: Warehouse) -> None:
    land(warehouse, batch(1, [doc("messages", "a", 10, text="v1")]))
    apply_silver(warehouse)
    land(warehouse, batch(2, [doc("messages", "b", 20, text="b")]))

    report = apply_silver(warehouse)

    assert [(t.rows_read, t.rebuilt) for t in report.tables] == [(1, False)]
    assert live(silver(warehouse)) == {"a": 10, "b": 20}


def test_a_new_field_adds_a_column_without_a_rebuild(warehouse: Warehouse) -> None:
    land(warehouse, batch(1, [doc("messages", "a", 10, text="v1")]))
    apply_silver(warehouse)
    land(warehouse, batch(2, [doc("messages", "b", 20, text="b", likes=3)]))

    report = apply_silver(warehouse)

    assert [(t.rebuilt, t.columns_added) for t in report.tables] == [(False, ["likes"])]
    rows = silver(warehouse)
    assert rows["b"]["likes"] == 3 and "likes" not in rows["a"]


def test_a_field_that_widens_to_json_rebuilds_silver(warehouse: Warehouse) -> None:
    land(warehouse, batch(1, [doc("messages", "a", 10, n=5)]))
    apply_silver(warehouse)
    land(warehouse, batch(2, [doc("messages", "b", 20, n="five")]))

    report = apply_silver(warehouse)

    assert [t.rebuilt for t in report.tables] == [True]
    table = read_silver(warehouse, MESSAGES)
    assert table is not None and table.schema.field("n").type == pa.string()
    rows = silver_as_dicts(table)
    assert (rows["a"]["n"], rows["b"]["n"]) == ("5", '"five"')
    assert TableSpecStore(warehouse).load()[MESSAGES].columns["n"] is ColumnType.JSON


def test_a_new_snapshot_walk_truncates_and_reloads_silver(warehouse: Warehouse) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(0, walk=100, snapshot=True))
    first_walk = batch(
        1,
        [doc("messages", "a", 50, text="a"), doc("messages", "gone", 60, text="x")],
        kind="snapshot",
        walk=100,
    )
    land(warehouse, first_walk)
    store.save(first_walk.checkpoint)
    apply_silver(warehouse)
    # --resnapshot: "gone" was deleted while retention expired; the new walk lacks it.
    store.save(checkpoint(1, walk=900, snapshot=True))
    second_walk = batch(2, [doc("messages", "a", 50, text="a")], kind="snapshot", walk=900)
    land(warehouse, second_walk)
    store.save(second_walk.checkpoint)

    report = apply_silver(warehouse)

    assert [t.rebuilt for t in report.tables] == [True]
    assert live(silver(warehouse)) == {"a": 50}


@pytest.mark.parametrize("window_rows", [1, 2, 1000])
def test_the_window_size_does_not_change_the_result(warehouse: Warehouse, window_rows: int) -> None:
    values: Sequence[dict[str, Any]] = [
        doc("messages", f"d{i % 4}", 10 + i, deleted=i % 5 == 4, n=i) for i in range(20)
    ]
    land(warehouse, *(batch(seq + 1, values[seq * 3 : seq * 3 + 3]) for seq in range(7)))

    apply_silver(warehouse, window_rows=window_rows)

    final: dict[str, int] = {}
    for v in values:
        if v["_deleted"]:
            final.pop(v["_id"], None)
        else:
            final[v["_id"]] = v["_ts"]
    assert live(silver(warehouse)) == final


class _SpecsThatNeverWiden(TableSpecStore):
    def widen(self, observed: Any) -> Any:
        return {}


def test_bronze_the_spec_does_not_cover_widens_the_spec_before_merging(
    warehouse: Warehouse,
) -> None:
    land(warehouse, batch(1, [doc("messages", "a", 10, n=1)]))
    # Bronze written by something that did not keep the spec up to date.
    sink = BronzeSink(warehouse, SOURCE, specs=_SpecsThatNeverWiden(warehouse))
    sink.write(batch(2, [doc("messages", "b", 20, n="two", extra=True)]))

    apply_silver(warehouse)

    spec = TableSpecStore(warehouse).load()[MESSAGES]
    assert {k: v.value for k, v in spec.columns.items()} == {"extra": "bool", "n": "json"}
    rows = silver(warehouse)
    assert (rows["a"]["n"], rows["b"]["n"], rows["b"]["extra"]) == ("1", '"two"', True)


@pytest.mark.parametrize("stored", ['{"n": "float128"}', "[1, 2]", "{truncated"])
def test_an_unreadable_stored_spec_is_a_state_error_naming_the_table(stored: str) -> None:
    with pytest.raises(StateError, match="column spec of waitlist/entries is not readable"):
        spec_from_json(TableKey("waitlist", "entries"), stored)


def test_changes_after_a_recorded_delete_still_reach_keys_that_were_never_deleted(
    warehouse: Warehouse,
) -> None:
    """Once a delete left a tombstone, later applies must still take every other key's
    changes (a key without a tombstone is always fresh, whatever its timestamp)."""
    land(
        warehouse,
        batch(1, [doc("messages", "a", 10, text="a1"), doc("messages", "b", 11, text="b1")]),
        batch(2, [doc("messages", "b", 21, deleted=True)]),
    )
    apply_silver(warehouse)
    land(warehouse, batch(3, [doc("messages", "a", 30, text="a2"), doc("messages", "c", 31)]))

    apply_silver(warehouse)

    rows = silver(warehouse)
    assert live(rows) == {"a": 30, "c": 31}
    assert rows["a"]["text"] == "a2"


# --- Data Sync truncates ------------------------------------------------------------------


def replaced_table_batches() -> list[ChangeBatch]:
    """messages is walked, changed, then replaced by an import (a truncate, walked again)."""
    return [
        data_sync_batch(
            1,
            [doc("messages", "a", 50, text="a1"), doc("messages", "b", 51, text="b1")],
            truncates=["messages"],
        ),
        data_sync_batch(2, [doc("messages", "b", 60, deleted=True)], snapshot_ts=60),
        # The import keeps "a" at an older _ts than held and brings "b" back older than
        # its tombstone; "c" is new. Only the import's documents may remain.
        data_sync_batch(
            3,
            [doc("messages", "a", 40, text="a0"), doc("messages", "b", 45, text="b0")],
            truncates=["messages"],
        ),
        data_sync_batch(4, [doc("messages", "c", 70, text="c1")], snapshot_ts=70),
    ]


@pytest.mark.parametrize("window_rows", [1, 3, 1000])
def test_a_truncate_empties_silver_and_the_rows_after_it_apply(
    warehouse: Warehouse, window_rows: int
) -> None:
    land(warehouse, *replaced_table_batches())

    report = apply_silver(warehouse, window_rows=window_rows)

    rows = silver(warehouse)
    assert live(rows) == {"a": 40, "b": 45, "c": 70}
    assert rows["a"]["text"] == "a0"
    assert report.tables[0].truncates >= 1
    assert report.snapshot_complete


def test_a_truncate_applied_incrementally_empties_what_silver_held(warehouse: Warehouse) -> None:
    first, second, third, fourth = replaced_table_batches()
    land(warehouse, first, second)
    apply_silver(warehouse)
    assert live(silver(warehouse)) == {"a": 50}

    land(warehouse, third, fourth)
    apply_silver(warehouse)

    assert live(silver(warehouse)) == {"a": 40, "b": 45, "c": 70}
    apply_silver(warehouse)  # again: nothing changes
    assert live(silver(warehouse)) == {"a": 40, "b": 45, "c": 70}


def test_a_truncate_of_one_table_leaves_the_others_alone(warehouse: Warehouse) -> None:
    land(
        warehouse,
        data_sync_batch(
            1,
            [doc("messages", "a", 10, text="x"), doc("users", "u", 11, name="n")],
            truncates=["messages", "users"],
        ),
        data_sync_batch(2, [doc("messages", "b", 20, text="y")], truncates=["messages"]),
    )

    apply_silver(warehouse)

    assert live(silver(warehouse)) == {"b": 20}
    assert live(silver(warehouse, TableKey("", "users"))) == {"u": 11}


def test_a_truncate_row_never_becomes_a_silver_row(warehouse: Warehouse) -> None:
    only_truncate = data_sync_batch(1, [], truncates=["messages"])
    land(warehouse, only_truncate)
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(only_truncate.checkpoint)

    report = apply_silver(warehouse)

    assert silver(warehouse) == {}
    assert not report.snapshot_complete  # snapshotting: not a consistent state yet
