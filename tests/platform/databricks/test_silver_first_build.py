"""apply-silver loading a table from empty: appends for new keys, the same result as MERGE."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

import convex_cdc.platform.databricks.silver as silver_module
import convex_cdc.platform.databricks.silver_first_build as first_build
from convex_cdc.core.events import ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.bronze import BronzeSink
from convex_cdc.platform.databricks.delta_read import read_table
from convex_cdc.platform.databricks.silver import apply_silver, read_silver
from convex_cdc.platform.databricks.silver_first_build import LoadedKeys, key_hashes
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.platform.databricks.change_batches import SOURCE, batch, data_sync_batch, doc

MESSAGES = TableKey("", "messages")


def land(warehouse: Warehouse, batches: Sequence[ChangeBatch]) -> None:
    sink = BronzeSink(warehouse, SOURCE)
    for b in batches:
        sink.write(b)


def history(seed: int, *, batches: int = 10, per_batch: int = 7) -> list[list[dict[str, Any]]]:
    """A snapshot of every key, then upserts and deletes of the same keys, some arriving
    late (older than what an earlier batch brought). Every ``_ts`` is distinct."""
    rnd = random.Random(seed)
    keys = [f"k{i:02d}" for i in range(12)]
    result = [[doc("messages", k, 1_000_000 + i, n=i) for i, k in enumerate(keys)]]
    event = 0
    for _ in range(batches):
        values = []
        for _ in range(per_batch):
            event += 1
            ts = (2_000 + 10 * event + rnd.randrange(-60, 20)) * 1_000 + event
            key = rnd.choice([*keys, "new1", "new2"])
            values.append(doc("messages", key, ts, deleted=rnd.random() < 0.3, n=event))
        result.append(values)
    return result


def as_batches(values: list[list[dict[str, Any]]]) -> list[ChangeBatch]:
    first, *rest = values
    return [
        batch(1, first, kind="snapshot"),
        *(batch(seq, v) for seq, v in enumerate(rest, start=2)),
    ]


def oracle(
    values: Sequence[Sequence[dict[str, Any]]],
) -> tuple[dict[str, tuple[int, Any]], dict[str, int]]:
    """Live rows (``_id`` → ``(_ts, n)``) and tombstones (``_id`` → ``_ts``): per key, the
    event with the highest ``_ts`` decides."""
    newest: dict[str, dict[str, Any]] = {}
    for v in (v for b in values for v in b):
        if v["_id"] not in newest or v["_ts"] > newest[v["_id"]]["_ts"]:
            newest[v["_id"]] = v
    live = {k: (v["_ts"], v["n"]) for k, v in newest.items() if not v["_deleted"]}
    dead = {k: v["_ts"] for k, v in newest.items() if v["_deleted"]}
    return live, dead


def silver_state(warehouse: Warehouse) -> tuple[dict[str, tuple[int, Any]], dict[str, int]]:
    """Silver and tombstones as the oracle gives them; no key may appear twice."""
    table = read_silver(warehouse, MESSAGES)
    assert table is not None
    rows = table.select(["_id", "_ts", "n"]).to_pylist()
    ids = [r["_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a key is in silver twice"
    tombstones = read_table(DeltaTable(warehouse.tombstones(MESSAGES))).to_pylist()
    dead = [r["_id"] for r in tombstones]
    assert len(dead) == len(set(dead)), "a key has two tombstones"
    return {r["_id"]: (r["_ts"], r["n"]) for r in rows}, {r["_id"]: r["_ts"] for r in tombstones}


def operations(warehouse: Warehouse) -> list[str]:
    """The operations of silver's commits, oldest first."""
    table = DeltaTable(warehouse.silver(MESSAGES))
    return [str(h["operation"]) for h in reversed(table.history())]


@pytest.mark.parametrize("window_rows", [1, 5, 12, 1000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_first_build_equals_the_latest_event_of_every_key(
    warehouse: Warehouse, window_rows: int, seed: int
) -> None:
    values = history(seed)
    land(warehouse, as_batches(values))

    report = apply_silver(warehouse, window_rows=window_rows)

    assert silver_state(warehouse) == oracle(values)
    [table] = report.tables
    assert table.rebuilt and table.rows_read == sum(map(len, values))


def test_a_first_build_of_new_keys_only_appends(warehouse: Warehouse) -> None:
    values = [
        [doc("messages", f"b{seq}d{i}", 100 * seq + i, n=i) for i in range(5)] for seq in range(6)
    ]
    land(warehouse, [batch(seq + 1, v) for seq, v in enumerate(values)])

    apply_silver(warehouse, window_rows=10)

    assert silver_state(warehouse) == oracle(values)
    # Create, then one append per window of two batches (a MERGE would read all of silver).
    assert operations(warehouse) == ["CREATE TABLE"] + ["WRITE"] * 3
    assert len(DeltaTable(warehouse.silver(MESSAGES)).file_uris()) == 3


def test_keys_seen_earlier_in_the_build_are_merged(warehouse: Warehouse) -> None:
    land(
        warehouse,
        [
            batch(1, [doc("messages", "a", 10, n=1), doc("messages", "b", 11, n=1)]),
            batch(2, [doc("messages", "a", 20, n=2), doc("messages", "c", 21, n=2)]),
        ],
    )

    apply_silver(warehouse, window_rows=1)

    assert silver_state(warehouse) == ({"a": (20, 2), "b": (11, 1), "c": (21, 2)}, {})
    assert operations(warehouse) == ["CREATE TABLE", "WRITE", "MERGE", "WRITE"]


def test_a_delete_then_a_late_older_upsert_in_a_first_build_stays_deleted(
    warehouse: Warehouse,
) -> None:
    values = [
        [doc("messages", "a", 30, deleted=True)],  # appended as a tombstone
        [doc("messages", "a", 20, n=1), doc("messages", "b", 5, n=1)],  # late: ignored
        [doc("messages", "b", 6, deleted=True), doc("messages", "b", 40, n=2)],
    ]
    land(warehouse, [batch(seq + 1, v) for seq, v in enumerate(values)])

    report = apply_silver(warehouse, window_rows=1)

    assert silver_state(warehouse) == ({"b": (40, 2)}, {"a": 30})
    assert report.tables[0].stale == 1


def test_hash_collisions_only_send_keys_to_the_merge(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = history(4)
    land(warehouse, as_batches(values))
    # Every key shares one hash: after the first window, every key looks loaded.
    monkeypatch.setattr(first_build, "key_hashes", lambda ids: np.zeros(len(ids), np.int64))

    apply_silver(warehouse, window_rows=5)

    assert silver_state(warehouse) == oracle(values)
    assert "MERGE" in operations(warehouse)


@pytest.mark.parametrize("window_rows", [1, 3, 1000])
def test_a_truncate_inside_a_first_build_starts_the_load_again(
    warehouse: Warehouse, window_rows: int
) -> None:
    before = [
        [doc("messages", "a", 50, n=1), doc("messages", "b", 51, n=1)],
        [doc("messages", "b", 60, deleted=True), doc("messages", "c", 61, n=1)],
    ]
    # The import brings "a" back older than held and "b" older than its tombstone.
    after = [
        [doc("messages", "a", 40, n=2), doc("messages", "b", 45, n=2)],
        [doc("messages", "a", 70, n=3), doc("messages", "d", 71, n=3)],
    ]
    land(
        warehouse,
        [
            data_sync_batch(1, before[0], truncates=["messages"]),
            data_sync_batch(2, before[1], snapshot_ts=61),
            data_sync_batch(3, after[0], truncates=["messages"]),
            data_sync_batch(4, after[1], snapshot_ts=71),
        ],
    )

    report = apply_silver(warehouse, window_rows=window_rows)

    assert silver_state(warehouse) == oracle(after)
    assert report.tables[0].truncates >= 1


def crash_on_call(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, call: int
) -> Callable[[], None]:
    """Make ``module.name`` raise on its ``call``-th call; returns the undo."""
    original = getattr(module, name)
    calls = 0

    def crashing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == call:
            raise RuntimeError("crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, crashing)
    return lambda: monkeypatch.setattr(module, name, original)


@pytest.mark.parametrize(
    ("module", "name", "call"),
    [
        (silver_module, "load_window", 2),  # between windows
        (silver_module, "load_window", 5),
        # Two appends per window (silver, then tombstones): crash after silver's.
        (first_build, "write_deltalake", 4),
        (first_build, "write_deltalake", 8),
    ],
)
def test_a_first_build_that_crashed_is_built_again_without_duplicates(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, module: Any, name: str, call: int
) -> None:
    # Every batch: new keys (one deleted at once) and a change of the previous batch's key.
    values = [
        [
            doc("messages", f"s{seq}a", 100 * seq, n=seq),
            doc("messages", f"s{seq}b", 100 * seq + 1, deleted=True),
            doc("messages", f"s{seq - 1}a", 100 * seq + 2, n=-seq),
        ]
        for seq in range(1, 7)
    ]
    land(warehouse, [batch(seq, v) for seq, v in enumerate(values, start=1)])
    undo = crash_on_call(monkeypatch, module, name, call)
    with pytest.raises(RuntimeError, match="crash"):
        apply_silver(warehouse, window_rows=3)
    undo()
    written = read_silver(warehouse, MESSAGES)
    assert written is not None and written.num_rows > 0  # appends reached silver

    report = apply_silver(warehouse, window_rows=3)

    assert report.tables[0].rebuilt
    assert silver_state(warehouse) == oracle(values)
    assert [t.skipped for t in apply_silver(warehouse).tables] == [True]


def test_a_rebuild_of_a_missing_silver_that_crashed_is_built_again(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = history(7)
    land(warehouse, as_batches(values))
    apply_silver(warehouse)
    shutil.rmtree(warehouse.silver(MESSAGES))  # progress says applied; silver is gone
    undo = crash_on_call(monkeypatch, silver_module, "load_window", 3)
    with pytest.raises(RuntimeError, match="crash"):
        apply_silver(warehouse, window_rows=5)
    undo()

    report = apply_silver(warehouse, window_rows=5)

    assert report.tables[0].rebuilt
    assert silver_state(warehouse) == oracle(values)


def test_an_incremental_apply_merges(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    values = history(6)
    land(warehouse, as_batches(values))
    apply_silver(warehouse, window_rows=5)
    later = [
        [doc("messages", "k00", 9_000_000, n=-1), doc("messages", "k01", 9_000_001, deleted=True)],
        [doc("messages", "fresh", 9_000_002, n=-2), doc("messages", "k02", 10, n=-3)],
    ]
    land(warehouse, [batch(seq, v) for seq, v in enumerate(later, start=len(values) + 1)])
    monkeypatch.setattr(silver_module, "load_window", _never)
    versions = len(operations(warehouse))

    report = apply_silver(warehouse, window_rows=2)

    assert not report.tables[0].rebuilt
    assert silver_state(warehouse) == oracle([*values, *later])
    assert operations(warehouse)[versions:] == ["MERGE", "MERGE"]


def _never(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("an incremental apply must not append")


def test_loaded_keys_never_miss_a_recorded_key() -> None:
    ids = pa.array([f"id{i}" for i in range(120_000)])
    hashes = key_hashes(ids)
    loaded = LoadedKeys(capacity=10)  # grows past its first buffer
    for start in range(0, 100_000, 30_000):
        loaded.record(hashes[start : min(start + 30_000, 100_000)])

    assert len(loaded) == 100_000
    assert loaded.recorded(hashes[:100_000]).all()
    # 64-bit hashes of 20,000 other keys: a false positive is (practically) impossible.
    assert not loaded.recorded(hashes[100_000:]).any()
    assert not LoadedKeys().recorded(hashes).any()
