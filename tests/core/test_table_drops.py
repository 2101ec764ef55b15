"""Dropped tables, without I/O: which tables are dropped, the checkpoint after a drop batch,
and the drop rows themselves."""

from __future__ import annotations

from dataclasses import replace

import pytest

from convex_cdc.core.checkpoint import (
    Checkpoint,
    DeltaCursor,
    DeltaTail,
    PendingDelta,
    SourceIdentity,
    after_drop_batch,
)
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA, TABLE_OPS, Op, drop_events
from convex_cdc.core.names import TableKey
from convex_cdc.core.selection import Selection
from convex_cdc.core.table_drops import dropped_tables

SOURCE = SourceIdentity.from_url("https://happy-animal-123.convex.cloud")
HELD = Checkpoint(
    source=SOURCE,
    position=DeltaTail(DeltaCursor(1_000)),
    batch_seq=7,
    tables_seen=frozenset({"messages", "users", "waitlist/entries", "waitlist/users"}),
)


def test_a_held_table_the_source_no_longer_lists_is_dropped() -> None:
    source = {"messages", "waitlist/users", "created_later"}
    assert dropped_tables(HELD, source, None) == [
        TableKey("", "users"),
        TableKey("waitlist", "entries"),
    ]


def test_nothing_is_dropped_while_the_source_lists_every_held_table() -> None:
    assert dropped_tables(HELD, set(HELD.tables_seen) | {"new"}, None) == []


def test_tables_are_keyed_by_component() -> None:
    # "users" of the root is gone; "waitlist/users" is not, and does not hide it.
    source = {"messages", "waitlist/entries", "waitlist/users"}
    assert dropped_tables(HELD, source, None) == [TableKey("", "users")]


def test_a_whole_component_gone_drops_each_of_its_tables() -> None:
    source = {"messages", "users"}
    assert dropped_tables(HELD, source, None) == [
        TableKey("waitlist", "entries"),
        TableKey("waitlist", "users"),
    ]


def test_a_table_outside_the_selection_keeps_its_rows_even_when_gone() -> None:
    selection = Selection.from_patterns(include=["messages", "users"])
    assert dropped_tables(HELD, set(), selection) == [
        TableKey("", "messages"),
        TableKey("", "users"),
    ]
    excluding = Selection.from_patterns(exclude=["waitlist/*"])
    assert dropped_tables(HELD, {"messages"}, excluding) == [TableKey("", "users")]


def test_a_destination_that_holds_nothing_drops_nothing() -> None:
    assert dropped_tables(replace(HELD, tables_seen=frozenset()), set(), None) == []


def test_a_drop_batch_counts_and_forgets_the_tables_without_moving_the_position() -> None:
    following = after_drop_batch(HELD, tables=[TableKey("", "users")])
    assert following.position == HELD.position
    assert following.batch_seq == HELD.batch_seq + 1
    assert following.tables_seen == HELD.tables_seen - {"users"}
    assert dropped_tables(following, {"messages", "waitlist/entries", "waitlist/users"}, None) == []


def test_a_drop_batch_needs_a_table_and_no_pending_delta_batch() -> None:
    with pytest.raises(ValueError, match="at least one"):
        after_drop_batch(HELD, tables=[])
    pending = replace(HELD, pending=PendingDelta(8, DeltaCursor(2_000)))
    with pytest.raises(ValueError, match="pending"):
        after_drop_batch(pending, tables=[TableKey("", "users")])


def test_drop_rows_have_the_shape_of_truncates() -> None:
    keys = [TableKey("", "users"), TableKey("waitlist", "entries")]
    rows = drop_events(keys, batch_seq=8)
    assert rows.schema == RAW_CHANGE_LOG_SCHEMA
    assert [(r["_component"], r["_table"]) for r in rows.to_pylist()] == [
        ("", "users"),
        ("waitlist", "entries"),
    ]
    for row in rows.to_pylist():
        assert (row["_id"], row["_ts"], row["_deleted"], row["_op"], row["_batch"]) == (
            "",
            0,
            False,
            "drop",
            8,
        )
        assert row["document"] is None and row["_snapshot_ts"] is None
    assert Op.DROP.value in TABLE_OPS and Op.TRUNCATE.value in TABLE_OPS
