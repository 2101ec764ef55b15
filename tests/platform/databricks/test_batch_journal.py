"""Data Sync batches in bronze: truncate rows, and the write-ahead journal that completes a
batch a crash left in some tables only (such a batch cannot be fetched again identically)."""

from __future__ import annotations

from typing import Any

import pytest
from deltalake import DeltaTable, write_deltalake

from convex_cdc.core.errors import StateError
from convex_cdc.core.events import ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks import bronze as bronze_module
from convex_cdc.platform.databricks.batch_journal import BatchJournal
from convex_cdc.platform.databricks.bronze import BronzeSink, bronze_app_id
from convex_cdc.platform.databricks.control_table import DeltaCheckpointStore
from convex_cdc.platform.databricks.delta_read import query, read_table
from convex_cdc.platform.databricks.table_spec import TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.platform.databricks.change_batches import (
    SOURCE,
    batch,
    data_sync_batch,
    data_sync_checkpoint,
    doc,
)

MESSAGES = TableKey("", "messages")
USERS = TableKey("", "users")


def two_table_batch(seq: int) -> ChangeBatch:
    return data_sync_batch(
        seq,
        [doc("messages", f"m{seq}", 10 * seq, text="a"), doc("users", f"u{seq}", 10 * seq + 1)],
        truncates=["messages", "users"] if seq == 1 else [],
    )


def bronze_rows(warehouse: Warehouse, key: TableKey) -> list[dict[str, Any]]:
    table = DeltaTable(warehouse.bronze(key), storage_options=warehouse.options())
    rows: list[dict[str, Any]] = read_table(
        table, columns=["_batch", "_op", "_id", "_ts"], order_by=["_batch", "_ts"]
    ).to_pylist()
    return rows


def journal_batches(warehouse: Warehouse) -> list[int]:
    table = DeltaTable(BatchJournal(warehouse, SOURCE).location, storage_options={})
    rows = query('SELECT DISTINCT "_batch" FROM t ORDER BY "_batch"', {"t": table})
    return [int(b) for b in rows.column("_batch").to_pylist()]


def crash_after_first_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies between the first and the second bronze table append."""
    real_write = write_deltalake
    calls: list[int] = []

    def die_on_second_table(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(*args, **kwargs)

    monkeypatch.setattr(bronze_module, "write_deltalake", die_on_second_table)


def test_truncate_rows_land_in_bronze_first_as_markers(warehouse: Warehouse) -> None:
    BronzeSink(warehouse, SOURCE).write(two_table_batch(1))

    assert bronze_rows(warehouse, MESSAGES) == [
        {"_batch": 1, "_op": "truncate", "_id": "", "_ts": 0},
        {"_batch": 1, "_op": "upsert", "_id": "m1", "_ts": 10},
    ]


def test_a_table_with_only_a_truncate_gets_a_spec_without_columns(warehouse: Warehouse) -> None:
    only_truncate = data_sync_batch(1, [doc("users", "u1", 5, name="x")], truncates=["messages"])
    BronzeSink(warehouse, SOURCE).write(only_truncate)

    specs = TableSpecStore(warehouse).load()
    assert dict(specs[MESSAGES].columns) == {}
    assert set(specs[USERS].columns) == {"name"}
    assert bronze_rows(warehouse, MESSAGES) == [
        {"_batch": 1, "_op": "truncate", "_id": "", "_ts": 0}
    ]


def test_a_data_sync_batch_is_journaled_whole_and_earlier_entries_are_dropped(
    warehouse: Warehouse,
) -> None:
    sink = BronzeSink(warehouse, SOURCE)
    sink.write(two_table_batch(1))
    journaled = sink.journal.entry(1)
    assert journaled is not None
    assert journaled.batch.checkpoint == two_table_batch(1).checkpoint
    assert journaled.batch.tables() == [MESSAGES, USERS]
    assert journaled.batch.events.column("_op").to_pylist() == [
        "truncate",
        "truncate",
        "upsert",
        "upsert",
    ]

    sink.write(two_table_batch(2))
    assert journal_batches(warehouse) == [2]
    assert sink.journal.entry(1) is None


def test_legacy_batches_are_not_journaled(warehouse: Warehouse) -> None:
    BronzeSink(warehouse, SOURCE).write(batch(1, [doc("messages", "m1", 10, text="a")]))

    assert BatchJournal(warehouse, SOURCE).entry(1) is None


def test_a_crash_between_table_appends_is_completed_from_the_journal_at_load(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    sink = BronzeSink(warehouse, SOURCE)
    sink.write(two_table_batch(1))
    store.save(two_table_batch(1).checkpoint)
    crash_after_first_table(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        BronzeSink(warehouse, SOURCE).write(two_table_batch(2))
    monkeypatch.undo()
    assert [r["_batch"] for r in bronze_rows(warehouse, USERS)] == [1, 1]  # users misses 2

    restarted = DeltaCheckpointStore(warehouse, SOURCE)
    assert restarted.load() == data_sync_checkpoint(2)
    assert restarted.reconciled
    for key, name in ((MESSAGES, "m"), (USERS, "u")):
        assert [(r["_batch"], r["_id"]) for r in bronze_rows(warehouse, key)] == [
            (1, ""),
            (1, f"{name}1"),
            (2, f"{name}2"),
        ]


def test_the_sink_completes_a_half_written_batch_when_asked_for_its_checkpoint(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_after_first_table(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        BronzeSink(warehouse, SOURCE).write(two_table_batch(1))
    monkeypatch.undo()

    sink = BronzeSink(warehouse, SOURCE)
    assert sink.committed_checkpoint(1) == data_sync_checkpoint(1)
    assert (sink.commits, sink.skipped) == (1, 1)
    assert sink.committed_checkpoint(1) == data_sync_checkpoint(1)  # idempotent
    assert sink.commits == 1
    for key in (MESSAGES, USERS):
        assert [r["_batch"] for r in bronze_rows(warehouse, key)] == [1, 1]
    assert sink.committed_checkpoint(2) is None


def test_a_batch_journaled_before_any_table_append_is_adopted(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    def die(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bronze_module, "write_deltalake", die)
    with pytest.raises(KeyboardInterrupt):
        BronzeSink(warehouse, SOURCE).write(two_table_batch(1))
    monkeypatch.undo()

    store = DeltaCheckpointStore(warehouse, SOURCE)
    assert store.load() == data_sync_checkpoint(1)
    assert store.reconciled
    for key in (MESSAGES, USERS):
        table = DeltaTable(warehouse.bronze(key), storage_options=warehouse.options())
        assert table.transaction_version(bronze_app_id(SOURCE, key)) == 1


def test_other_events_under_a_journaled_batch_number_are_refused(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_after_first_table(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        BronzeSink(warehouse, SOURCE).write(two_table_batch(1))
    monkeypatch.undo()
    fetched_anew = data_sync_batch(1, [doc("users", "u9", 99)], snapshot_ts=99)

    with pytest.raises(StateError, match="journaled with other events"):
        BronzeSink(warehouse, SOURCE).write(fetched_anew)
    assert [r["_id"] for r in bronze_rows(warehouse, USERS)] == ["", "u1"]  # the journaled one


def test_a_half_written_data_sync_batch_without_its_journal_is_an_error(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_after_first_table(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        BronzeSink(warehouse, SOURCE).write(two_table_batch(1))
    monkeypatch.undo()
    journal = BatchJournal(warehouse, SOURCE)
    DeltaTable(journal.location).delete()  # lost (say, removed by hand)

    with pytest.raises(StateError, match="cannot be completed"):
        DeltaCheckpointStore(warehouse, SOURCE).load()
