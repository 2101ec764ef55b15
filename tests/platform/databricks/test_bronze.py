"""Bronze: one append-only CDC table per Convex table, idempotent per batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from convex_cdc.core.checkpoint import SourceIdentity
from convex_cdc.core.errors import TargetError
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA, ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks import bronze as bronze_module
from convex_cdc.platform.databricks.bronze import BRONZE_SCHEMA, BronzeSink, bronze_app_id
from convex_cdc.platform.databricks.bronze_commit import find_batch_commit
from convex_cdc.platform.databricks.delta_read import read_table
from convex_cdc.platform.databricks.table_spec import TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.platform.databricks.change_batches import SOURCE, batch, doc

MESSAGES = TableKey("", "messages")
LIMITS = TableKey("waitlist/ratelimiter", "limits")


def two_table_batch(seq: int = 1) -> ChangeBatch:
    return batch(
        seq,
        [
            doc("messages", "m1", 10, text="hi", likes=1),
            doc("limits", "l1", 11, component="waitlist/ratelimiter", count=3),
            doc("messages", "m2", 12, deleted=True),
        ],
    )


def bronze_table(warehouse: Warehouse, key: TableKey) -> DeltaTable:
    return DeltaTable(warehouse.bronze(key), storage_options=warehouse.options())


def test_each_table_gets_its_own_bronze_table_with_the_envelope(warehouse: Warehouse) -> None:
    BronzeSink(warehouse, SOURCE).write(two_table_batch())

    messages = read_table(bronze_table(warehouse, MESSAGES), order_by=["_id"])
    assert messages.schema.names == BRONZE_SCHEMA.names
    assert messages.column("_id").to_pylist() == ["m1", "m2"]
    assert messages.column("_deleted").to_pylist() == [False, True]
    assert messages.column("_op").to_pylist() == ["upsert", "delete"]
    assert messages.column("_batch").to_pylist() == [1, 1]
    assert json.loads(messages.column("document")[0].as_py())["text"] == "hi"
    assert messages.column("document")[1].as_py() is None
    limits = read_table(bronze_table(warehouse, LIMITS))
    assert limits.column("_component").to_pylist() == ["waitlist/ratelimiter"]
    assert warehouse.bronze(LIMITS).endswith("/bronze/waitlist.ratelimiter.limits")


def test_bronze_columns_are_the_raw_change_log_columns_under_the_same_names() -> None:
    assert BRONZE_SCHEMA.names == RAW_CHANGE_LOG_SCHEMA.names
    assert BRONZE_SCHEMA.names[8] == "_extracted_at"
    assert BRONZE_SCHEMA.field("_ts").type == pa.int64()
    assert BRONZE_SCHEMA.field("document").type == pa.string()


def test_bronze_tables_are_append_only_and_use_no_feature_delta_rs_cannot_write(
    warehouse: Warehouse,
) -> None:
    BronzeSink(warehouse, SOURCE).write(two_table_batch())

    table = bronze_table(warehouse, MESSAGES)
    assert table.metadata().configuration == {"delta.appendOnly": "true"}
    protocol = table.protocol()
    assert not (protocol.writer_features or [])
    assert protocol.min_writer_version <= 2


def test_each_append_records_the_batch_as_an_application_transaction(
    warehouse: Warehouse,
) -> None:
    sink = BronzeSink(warehouse, SOURCE)
    sink.write(two_table_batch(1))
    sink.write(batch(2, [doc("messages", "m3", 20, text="later")]))

    table = bronze_table(warehouse, MESSAGES)
    assert table.transaction_version(bronze_app_id(SOURCE, MESSAGES)) == 2
    assert bronze_table(warehouse, LIMITS).transaction_version(bronze_app_id(SOURCE, LIMITS)) == 1
    commit = find_batch_commit(table, 1)
    assert commit is not None
    assert set(commit.tables) == {MESSAGES, LIMITS}
    assert commit.checkpoint == two_table_batch(1).checkpoint


def test_replaying_a_batch_writes_no_new_commit(warehouse: Warehouse) -> None:
    BronzeSink(warehouse, SOURCE).write(two_table_batch())
    before = {key: bronze_table(warehouse, key).version() for key in (MESSAGES, LIMITS)}

    replayer = BronzeSink(warehouse, SOURCE)  # a restarted process
    replayer.write(two_table_batch())

    after = {key: bronze_table(warehouse, key).version() for key in (MESSAGES, LIMITS)}
    assert after == before
    assert (replayer.commits, replayer.skipped) == (0, 2)
    assert read_table(bronze_table(warehouse, MESSAGES)).num_rows == 2


def test_a_writer_that_loses_the_race_skips_instead_of_duplicating(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = BronzeSink(warehouse, SOURCE)
    loser = BronzeSink(warehouse, SOURCE)
    loser.write(batch(1, [doc("messages", "m0", 5, text="first")]))  # loser has the table open
    the_batch = batch(2, [doc("messages", "m1", 10, text="hi")])
    real_write = write_deltalake
    raced: list[bool] = []

    def write_after_the_winner(*args: Any, **kwargs: Any) -> None:
        if not raced:
            raced.append(True)
            winner.write(the_batch)  # commits between the loser's check and its write
        real_write(*args, **kwargs)

    monkeypatch.setattr(bronze_module, "write_deltalake", write_after_the_winner)
    loser.write(the_batch)

    rows = read_table(bronze_table(warehouse, MESSAGES), order_by=["_id"])
    assert rows.column("_id").to_pylist() == ["m0", "m1"]
    assert loser.skipped == 1


def test_a_writer_whose_open_table_is_stale_skips_instead_of_duplicating(
    warehouse: Warehouse,
) -> None:
    first = BronzeSink(warehouse, SOURCE)
    second = BronzeSink(warehouse, SOURCE)
    first.write(batch(1, [doc("messages", "m0", 5, text="first")]))  # first keeps it open
    the_batch = batch(2, [doc("messages", "m1", 10, text="hi")])
    second.write(the_batch)  # committed behind the first sink's back

    first.write(the_batch)  # a replay through a table object opened before that commit

    rows = read_table(bronze_table(warehouse, MESSAGES), order_by=["_id"])
    assert rows.column("_id").to_pylist() == ["m0", "m1"]
    assert first.skipped == 1 and first.committed_batch(MESSAGES) == 2


def test_many_appends_through_one_sink_keep_every_batch_exactly_once(
    warehouse: Warehouse,
) -> None:
    sink = BronzeSink(warehouse, SOURCE)
    for seq in range(1, 121):  # more than one sink keeps a table object open for
        sink.write(batch(seq, [doc("messages", f"m{seq:03d}", seq, n=seq)]))
    sink.write(batch(120, [doc("messages", "m120", 120, n=120)]))  # a replay

    rows = read_table(bronze_table(warehouse, MESSAGES), order_by=["_id"])
    assert rows.column("_id").to_pylist() == [f"m{seq:03d}" for seq in range(1, 121)]
    assert (sink.commits, sink.skipped) == (120, 1)
    assert sink.committed_batch(MESSAGES) == 120


def test_the_spec_log_covers_every_table_before_its_first_append(warehouse: Warehouse) -> None:
    BronzeSink(warehouse, SOURCE).write(two_table_batch())

    specs = TableSpecStore(warehouse).load()
    assert set(specs) == {MESSAGES, LIMITS}
    assert {k: v.value for k, v in specs[MESSAGES].columns.items()} == {
        "likes": "int64",
        "text": "string",
    }


def test_a_hostile_table_name_is_refused_before_anything_is_written(
    warehouse: Warehouse,
) -> None:
    good = two_table_batch()
    events = good.events.set_column(
        1, "_table", pa.array(["../../etc"] * good.events.num_rows, pa.string())
    )
    hostile = ChangeBatch(
        seq=1,
        kind="delta",
        events=events,
        checkpoint=good.checkpoint,
        snapshot_ts=None,
        wire_format="export_json",
        response_bytes=0,
    )
    with pytest.raises(TargetError, match="not a Convex table name"):
        BronzeSink(warehouse, SOURCE).write(hostile)
    assert not Path(warehouse.root).exists()


def test_a_batch_from_another_deployment_is_refused(warehouse: Warehouse) -> None:
    sink = BronzeSink(warehouse, SourceIdentity("https://other-animal-9.convex.cloud"))
    with pytest.raises(TargetError, match="its own source name"):
        sink.write(two_table_batch())
