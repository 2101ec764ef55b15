"""Invariants of the MVCC store, checked against simple models (no HTTP)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.devserver.selection import (
    ALL_COLUMNS,
    EVERYTHING,
    ComponentSelection,
    RequestSelection,
)
from convex_cdc.devserver.store import DocumentStore
from convex_cdc.devserver.tables import Revision
from convex_cdc.devserver.writes import Delete, Insert, Replace, Write

TABLES = ["t", "u", "_system"]
# A transaction: per step (table index, action) with action 0 insert, 1 replace, 2 delete.
transactions = st.lists(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=6),
    min_size=1,
    max_size=25,
)


def _play(store: DocumentStore, plan: list[list[tuple[int, int]]]) -> dict[int, dict[str, Any]]:
    """Apply a random plan; returns the model state (table/id → n) after each commit ts."""
    live: dict[str, list[str]] = {name: [] for name in TABLES}
    states: dict[int, dict[str, Any]] = {}
    state: dict[str, Any] = {}
    counter = itertools.count()
    for transaction in plan:
        writes: list[Write] = []
        touched: set[str] = set()
        for table_index, action in transaction:
            table = TABLES[table_index]
            candidates = [doc for doc in live[table] if doc not in touched]
            if action == 0 or not candidates:
                writes.append(Insert(table, {"n": next(counter)}))
            elif action == 1:
                writes.append(Replace(table, candidates[0], {"n": next(counter)}))
                touched.add(candidates[0])
            else:
                writes.append(Delete(table, candidates[-1]))
                touched.add(candidates[-1])
        result = store.commit(writes)
        for write, doc_id in zip(writes, result.ids, strict=True):
            if isinstance(write, Insert):
                live[write.table].append(doc_id)
                state[f"{write.table}/{doc_id}"] = write.fields["n"]
            elif isinstance(write, Replace):
                state[f"{write.table}/{doc_id}"] = write.fields["n"]
            else:
                live[write.table].remove(doc_id)
                del state[f"{write.table}/{doc_id}"]
        states[result.ts] = dict(state)
    return states


def _n(revision: Revision) -> Any:
    assert revision.export is not None
    return orjson.loads(b"{" + revision.export + b"}")["n"]


@settings(max_examples=60, deadline=None)
@given(plan=transactions, limit=st.integers(1, 8), only_t=st.booleans())
def test_delta_pages_follow_the_page_end_rule(
    plan: list[list[tuple[int, int]]], limit: int, only_t: bool
) -> None:
    store = DocumentStore(seed=1)
    start = store.latest_ts
    _play(store, plan)
    only = RequestSelection({"": ComponentSelection({"t": ALL_COLUMNS}, False)}, False)
    selection = only if only_t else EVERYTHING
    log = store._log
    cursor = start
    returned: list[Revision] = []
    for _ in range(1000):
        page = store.deltas_page(cursor, selection, limit)
        assert all(cursor < row.ts <= page.cursor for row in page.revisions)
        if page.has_more:
            end = page.cursor
            before_end = sum(1 for row in log if cursor < row.ts < end)
            through_end = sum(1 for row in log if cursor < row.ts <= end)
            assert before_end < limit <= through_end
        else:
            assert page.cursor == store.latest_ts
        returned += page.revisions
        if not page.has_more:
            break
        assert page.cursor > cursor
        cursor = page.cursor
    expected = [
        row
        for row in log
        if row.ts > start and not row.table.system and (not only_t or row.table.name == "t")
    ]
    assert returned == expected
    keys = [(row.ts, row.table.tablet_id, row.id) for row in log]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


@settings(max_examples=40, deadline=None)
@given(plan=transactions, page_size=st.integers(1, 5))
def test_snapshot_walks_see_exactly_the_state_at_their_snapshot(
    plan: list[list[tuple[int, int]]], page_size: int
) -> None:
    store = DocumentStore(seed=2)
    states = _play(store, plan)
    for ts, state in states.items():
        seen: dict[str, Any] = {}
        cursor = None
        tables: list[str] = []
        for _ in range(1000):
            page = store.snapshot_page(ts, cursor, EVERYTHING, page_size)
            assert len(page.revisions) <= page_size
            assert len({row.table.name for row in page.revisions}) <= 1
            ids = [row.id for row in page.revisions]
            assert ids == sorted(ids)
            for row in page.revisions:
                assert row.ts <= ts
                if not tables or tables[-1] != row.table.name:
                    tables.append(row.table.name)
                seen[f"{row.table.name}/{row.id}"] = _n(row)
            if page.cursor is None:
                break
            cursor = page.cursor
        assert seen == {key: n for key, n in state.items() if not key.startswith("_")}
        assert len(tables) == len(set(tables))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=2, max_size=8, unique=True),
    st.integers(0, 2**16),
)
def test_tablet_order_of_user_tables_is_never_alphabetical(names: list[str], seed: int) -> None:
    store = DocumentStore(seed=seed)
    for name in names:
        store.commit([Insert(name, {})])
        store.commit([Insert("_" + name, {})])
    order = [table.name for table in store._tablets if not table.system]
    assert sorted(order) == sorted(names)
    assert order != sorted(order)


def test_timestamps_increase_even_when_the_clock_goes_back() -> None:
    ticks = iter([1_000, 5_000, 4_000, 4_000, 3_000, 3_000, 10_000, 10_000])
    store = DocumentStore(seed=0, clock=lambda: next(ticks))
    stamps = [store.commit([Insert("t", {"n": i})]).ts for i in range(3)]
    assert stamps == sorted(set(stamps))
    assert stamps[0] == 5_000
    assert stamps[1] == 5_001


def test_creation_times_are_unique_within_a_transaction() -> None:
    store = DocumentStore(seed=0)
    result = store.commit([Insert("t", {"n": i}) for i in range(500)])
    table = store._components[""].tables["t"]
    times = [table.latest[doc_id].creation_time for doc_id in result.ids]
    assert len(set(times)) == 500
    assert times == sorted(times)
    assert all(isinstance(value, float) for value in times)
    assert times[0] <= result.ts / 1e6


@pytest.mark.parametrize(
    "bad",
    [
        [Insert("t", {"_id": "x"})],
        [Insert("t", {"$x": 1})],
        [Insert("t", {"a": {"$nested": 1}})],
        [Insert("t", {"a": 2**63})],
        [Insert("t", {"a": object()})],  # type: ignore[dict-item]
        [Insert("bad name", {})],
        [Insert("t", {}, component="bad/comp-onent")],
        [Insert("t", {"a": "x" * (1 << 20)})],
    ],
)
def test_invalid_writes_raise_value_error_and_change_nothing(bad: list[Write]) -> None:
    store = DocumentStore(seed=0)
    before = store.latest_ts
    with pytest.raises(ValueError):
        store.commit([Insert("keep", {"n": 1}), *bad])
    assert store.latest_ts == before
    assert store.live_documents() == []
    assert store._log == []


def test_missing_documents_raise_key_error() -> None:
    store = DocumentStore(seed=0)
    doc_id = store.commit([Insert("t", {})]).ids[0]
    other = store.commit([Insert("u", {})]).ids[0]
    for write in (
        Replace("t", other, {}),
        Delete("missing", doc_id),
        Delete("t", doc_id, component="elsewhere"),
    ):
        with pytest.raises(KeyError):
            store.commit([write])
    store.commit([Delete("t", doc_id)])
    with pytest.raises(KeyError):
        store.commit([Delete("t", doc_id)])
