"""apply-silver MERGEs one range of ``_id`` at a time: same result, fewer files rewritten."""

from __future__ import annotations

import random
from typing import Any

import pytest
from deltalake import DeltaTable

from convex_cdc.platform.databricks import silver_merge
from convex_cdc.platform.databricks.silver import apply_silver
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.platform.databricks.change_batches import batch, doc
from tests.platform.databricks.test_silver_first_build import (
    MESSAGES,
    land,
    oracle,
    silver_state,
)

KEYS = [f"k{i:02d}" for i in range(20)]


@pytest.fixture
def one_file_per_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every silver file is its own range (the real bound is tens of MB)."""
    monkeypatch.setattr(silver_merge, "MERGE_GROUP_BYTES", 1)


def snapshot_in_id_order(warehouse: Warehouse) -> list[list[dict[str, Any]]]:
    """A snapshot walk (by ``_id``, as Convex walks) built into silver as four files."""
    snapshot = [doc("messages", k, 1_000 + i, n=i) for i, k in enumerate(KEYS)]
    pages = [snapshot[start : start + 5] for start in range(0, len(snapshot), 5)]
    land(warehouse, [batch(seq, page, kind="snapshot") for seq, page in enumerate(pages, 1)])
    apply_silver(warehouse, window_rows=5)
    assert len(DeltaTable(warehouse.silver(MESSAGES)).file_uris()) == 4
    return pages


@pytest.mark.usefixtures("one_file_per_merge")
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_incremental_applies_merged_range_by_range_equal_the_oracle(
    warehouse: Warehouse, seed: int
) -> None:
    values = snapshot_in_id_order(warehouse)
    rnd = random.Random(seed)
    event = 0
    for seq in range(5, 15):
        changes = []
        for _ in range(4):
            event += 1
            ts = (2_000 + 10 * event + rnd.randrange(-30, 5)) * 1_000 + event
            key = rnd.choice([*KEYS, "a-new", "k05x", "zz-new"])  # before, inside, after
            changes.append(doc("messages", key, ts, deleted=rnd.random() < 0.3, n=event))
        values.append(changes)
        land(warehouse, [batch(seq, changes)])

        apply_silver(warehouse)

        assert silver_state(warehouse) == oracle(values), f"after batch {seq}"


@pytest.mark.usefixtures("one_file_per_merge")
def test_a_change_to_one_key_rewrites_only_the_file_of_its_range(warehouse: Warehouse) -> None:
    snapshot_in_id_order(warehouse)
    before = set(DeltaTable(warehouse.silver(MESSAGES)).file_uris())
    land(warehouse, [batch(5, [doc("messages", "k07", 5_000, n=99)])])

    apply_silver(warehouse)

    after = set(DeltaTable(warehouse.silver(MESSAGES)).file_uris())
    assert len(before - after) == 1 and len(after - before) == 1  # k05..k09's file only
    live, _ = silver_state(warehouse)
    assert live["k07"] == (5_000, 99) and live["k08"] == (1_008, 8)


def test_ranges_start_at_a_files_smallest_id_and_hold_about_the_bound(
    warehouse: Warehouse,
) -> None:
    snapshot_in_id_order(warehouse)
    table = DeltaTable(warehouse.silver(MESSAGES))

    assert silver_merge._id_ranges(table, 1 << 40) == [(None, None)]  # all in one
    # Four files of one range each: cut at the smallest _id of the 2nd, 3rd and 4th.
    assert silver_merge._id_ranges(table, 1) == [
        (None, "k05"),
        ("k05", "k10"),
        ("k10", "k15"),
        ("k15", None),
    ]
