"""The control table: checkpoints as an append-only Delta log, reconciled with bronze."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable, write_deltalake

from convex_cdc.core.checkpoint import SourceIdentity
from convex_cdc.core.errors import DestinationBusy, StateError
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks import bronze as bronze_module
from convex_cdc.platform.databricks.bronze import BronzeSink
from convex_cdc.platform.databricks.control_table import (
    DeltaCheckpointStore,
    read_control_state,
)
from convex_cdc.platform.databricks.delta_read import read_table
from convex_cdc.platform.databricks.source_name import SourceName
from convex_cdc.platform.databricks.table_spec import TableSpec, TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.platform.databricks.change_batches import (
    SOURCE,
    SOURCE_NAME,
    URL,
    batch,
    checkpoint,
    data_sync_checkpoint,
    doc,
)

MESSAGES = TableKey("", "messages")
USERS = TableKey("", "users")


def control_rows(warehouse: Warehouse) -> list[dict[str, Any]]:
    table = DeltaTable(warehouse.checkpoints, storage_options=warehouse.options())
    rows: list[dict[str, Any]] = read_table(table, order_by=["save_seq"]).to_pylist()
    return rows


def test_an_empty_warehouse_has_no_checkpoint(warehouse: Warehouse) -> None:
    assert DeltaCheckpointStore(warehouse, SOURCE).load() is None


def test_the_latest_save_wins_and_every_save_is_kept(warehouse: Warehouse) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(0, walk=100, snapshot=True))
    store.save(checkpoint(3, cursor=500, walk=100))

    assert DeltaCheckpointStore(warehouse, SOURCE).load() == checkpoint(3, cursor=500, walk=100)
    rows = control_rows(warehouse)
    assert [(r["save_seq"], r["phase"], r["batch_seq"]) for r in rows] == [
        (1, "snapshot", 0),
        (2, "delta", 3),
    ]
    assert rows[0]["snapshot_ts"] == 100 and rows[0]["snapshot_cursor"] == "c0"
    assert rows[1]["delta_cursor"] == 500 and rows[1]["consistent_as_of"] == 500
    assert {(r["source"], r["deployment_url"]) for r in rows} == {(SOURCE_NAME, URL)}
    assert {r["walk_first_batch"] for r in rows} == {1}


def test_a_new_snapshot_walk_records_where_it_starts(warehouse: Warehouse) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(0, walk=100, snapshot=True))
    store.save(checkpoint(7, cursor=900, walk=100))
    store.save(checkpoint(7, walk=2000, snapshot=True))  # --resnapshot pins a new walk
    store.save(checkpoint(9, cursor=2100, walk=2000))

    state = read_control_state(warehouse)
    assert state is not None
    assert state.walk_first_batch == 8
    assert [r["walk_first_batch"] for r in control_rows(warehouse)] == [1, 1, 8, 8]


def test_a_batch_committed_to_bronze_but_not_checkpointed_is_adopted(
    warehouse: Warehouse,
) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(1, cursor=10))
    second = batch(2, [doc("messages", "m1", 20, text="a"), doc("users", "u1", 21, name="b")])
    BronzeSink(warehouse, SOURCE).write(second)  # ...and the process died before the save

    restarted = DeltaCheckpointStore(warehouse, SOURCE)
    assert restarted.load() == second.checkpoint
    assert restarted.reconciled
    assert control_rows(warehouse)[-1]["reason"] == "reconciled"
    assert DeltaCheckpointStore(warehouse, SOURCE).load() == second.checkpoint


def test_a_batch_committed_to_only_some_of_its_tables_is_replayed(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(1, cursor=10))
    second = batch(2, [doc("messages", "m1", 20, text="a"), doc("users", "u1", 21, name="b")])
    real_write = write_deltalake
    calls: list[int] = []

    def die_on_second_table(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is killed between the two table commits
        real_write(*args, **kwargs)

    monkeypatch.setattr(bronze_module, "write_deltalake", die_on_second_table)
    with pytest.raises(KeyboardInterrupt):
        BronzeSink(warehouse, SOURCE).write(second)
    monkeypatch.undo()

    restarted = DeltaCheckpointStore(warehouse, SOURCE)
    assert restarted.load() == checkpoint(1, cursor=10)
    assert not restarted.reconciled
    replay = BronzeSink(warehouse, SOURCE)
    replay.write(second)  # the orchestrator replays the batch
    assert (replay.commits, replay.skipped) == (1, 1)
    for key in (MESSAGES, USERS):
        table = DeltaTable(warehouse.bronze(key), storage_options=warehouse.options())
        assert read_table(table).num_rows == 1


def test_bronze_far_ahead_of_the_control_table_is_an_error(warehouse: Warehouse) -> None:
    sink = BronzeSink(warehouse, SOURCE)
    sink.write(batch(1, [doc("messages", "m1", 10, text="a")]))
    sink.write(batch(2, [doc("messages", "m2", 20, text="b")]))

    with pytest.raises(StateError, match="bronze already holds batch 2"):
        DeltaCheckpointStore(warehouse, SOURCE).load()


def test_an_extractor_that_moves_on_while_another_starts_makes_it_busy_not_lost_rows(
    warehouse: Warehouse,
) -> None:
    """The second extractor reads the control table, then bronze: if the first saved two
    more batches in between, bronze is ahead by two, which is a race, not lost rows."""
    first = DeltaCheckpointStore(warehouse, SOURCE)
    first.load()
    first_sink = BronzeSink(warehouse, SOURCE)
    landed = batch(1, [doc("messages", "m1", 10, text="a")])
    first_sink.write(landed)
    first.save(landed.checkpoint)

    class FirstMovesOn(TableSpecStore):
        """The spec log, read by reconciliation just before bronze: the race window."""

        moved = False

        def load(self) -> dict[TableKey, TableSpec]:
            if not self.moved:
                self.moved = True
                for seq in (2, 3):
                    later = batch(seq, [doc("messages", f"m{seq}", 10 * seq, text="b")])
                    first_sink.write(later)
                    first.save(later.checkpoint)
            return super().load()

    second = DeltaCheckpointStore(warehouse, SOURCE, specs=FirstMovesOn(warehouse))

    with pytest.raises(DestinationBusy, match=r"\(save 3\) since this one read it \(save 1\)"):
        second.load()


def test_two_extractors_on_one_warehouse_cannot_interleave_checkpoints(
    warehouse: Warehouse,
) -> None:
    first = DeltaCheckpointStore(warehouse, SOURCE)
    second = DeltaCheckpointStore(warehouse, SOURCE)
    first.load()
    second.load()
    first.save(checkpoint(1, cursor=10))

    with pytest.raises(DestinationBusy, match="another process saved a checkpoint"):
        second.save(checkpoint(5, cursor=50))
    assert [r["batch_seq"] for r in control_rows(warehouse)] == [1]


def test_an_extractor_that_already_saved_still_notices_another_ones_save(
    warehouse: Warehouse,
) -> None:
    first = DeltaCheckpointStore(warehouse, SOURCE)
    first.load()
    first.save(checkpoint(1, cursor=10))  # first now holds the table open
    second = DeltaCheckpointStore(warehouse, SOURCE)
    second.load()
    second.save(checkpoint(2, cursor=20))

    with pytest.raises(DestinationBusy, match="another process saved a checkpoint"):
        first.save(checkpoint(2, cursor=25))
    assert [r["batch_seq"] for r in control_rows(warehouse)] == [1, 2]
    assert [r["delta_cursor"] for r in control_rows(warehouse)] == [10, 20]


def test_a_source_name_already_bound_to_another_deployment_is_refused_naming_both(
    warehouse: Warehouse,
) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(1, cursor=10))
    other = "https://other-animal-9.convex.cloud"

    with pytest.raises(StateError) as refused:
        DeltaCheckpointStore(warehouse, SourceIdentity(other)).load()

    assert refused.value.message == (
        f"source 'test_animal_123' of {warehouse.root} replicates {URL}, not {other}"
    )
    assert "--source NAME" in (refused.value.hint or "")
    assert [r["batch_seq"] for r in control_rows(warehouse)] == [1]


def test_sources_of_one_warehouse_keep_separate_checkpoints_and_never_contend(
    warehouse: Warehouse,
) -> None:
    """Two extractors of different sources interleave their saves; neither is refused."""
    other_source = SourceIdentity("https://other-animal-9.convex.cloud")
    other = replace(warehouse, source_name=SourceName("other_app"))
    mine, theirs = (
        DeltaCheckpointStore(warehouse, SOURCE),
        DeltaCheckpointStore(other, other_source),
    )
    mine.load()
    theirs.load()
    for seq in (1, 2, 3):
        mine.save(checkpoint(seq, cursor=10 * seq))
        theirs.save(replace(checkpoint(seq, cursor=100 * seq), source=other_source))

    assert DeltaCheckpointStore(warehouse, SOURCE).load() == checkpoint(3, cursor=30)
    loaded = DeltaCheckpointStore(other, other_source).load()
    assert loaded is not None and loaded.source == other_source
    assert {r["source"] for r in control_rows(other)} == {"other_app"}
    assert [r["save_seq"] for r in control_rows(warehouse)] == [1, 2, 3]


def test_a_control_table_moved_under_another_source_name_is_refused(
    warehouse: Warehouse,
) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(1, cursor=10))
    moved = replace(warehouse, source_name=SourceName("renamed"))
    shutil.copytree(warehouse.location, moved.location)

    with pytest.raises(StateError, match="holds checkpoints of source 'test_animal_123'"):
        read_control_state(moved)


def test_a_warehouse_written_before_sources_is_refused_not_started_again(
    warehouse: Warehouse,
) -> None:
    """Its deployment lived at the warehouse root; a new copy beside it would re-read
    everything and orphan the old one's bronze."""
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(1, cursor=10))
    root = Path(warehouse.root)
    for part in ("_convex_cdc", "bronze"):
        if (Path(warehouse.location) / part).exists():
            shutil.move(Path(warehouse.location) / part, root / part)

    with pytest.raises(StateError, match="from before a warehouse held sources") as refused:
        DeltaCheckpointStore(warehouse, SOURCE).load()
    assert str(Path(warehouse.location)) in (refused.value.hint or "")


def test_a_data_sync_checkpoint_shows_its_api_status_and_sync_id(warehouse: Warehouse) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(3, cursor=500, walk=100))
    store.save(data_sync_checkpoint(4))
    store.save(data_sync_checkpoint(6, snapshot_ts=900))

    rows = control_rows(warehouse)
    assert [(r["api"], r["phase"], r["sync_status"], r["sync_id"]) for r in rows] == [
        ("streaming-export", "delta", None, None),
        ("data-sync", "data-sync", "snapshotting", "sync-1"),
        ("data-sync", "data-sync", "upToDate", "sync-1"),
    ]
    assert [r["consistent_as_of"] for r in rows] == [500, None, 900]
    assert rows[2]["sync_cursor"] == "0006"
    state = read_control_state(warehouse)
    assert state is not None
    assert (state.api, state.sync_status, state.sync_id) == ("data-sync", "upToDate", "sync-1")
    # A Data Sync applies its own truncates: the walk's first batch stays where it was.
    assert [r["walk_first_batch"] for r in rows] == [4, 4, 4]


def test_a_data_sync_started_from_nothing_keeps_every_batch_in_silver(
    warehouse: Warehouse,
) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(data_sync_checkpoint(1))  # the first save follows the first batch

    assert control_rows(warehouse)[0]["walk_first_batch"] == 0


def test_a_control_table_from_before_data_sync_reads_and_gains_the_new_columns(
    warehouse: Warehouse,
) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(1, cursor=10))
    old = read_table(DeltaTable(warehouse.checkpoints)).drop_columns(
        ["api", "sync_status", "sync_id", "sync_cursor"]
    )
    shutil.rmtree(warehouse.checkpoints)
    write_deltalake(warehouse.checkpoints, old, configuration={"delta.appendOnly": "true"})

    restarted = DeltaCheckpointStore(warehouse, SOURCE)
    assert restarted.load() == checkpoint(1, cursor=10)
    state = read_control_state(warehouse)
    assert state is not None and state.api == "streaming-export"
    restarted.save(data_sync_checkpoint(2))

    rows = control_rows(warehouse)
    assert [(r["save_seq"], r["api"], r["sync_status"]) for r in rows] == [
        (1, None, None),
        (2, "data-sync", "snapshotting"),
    ]
