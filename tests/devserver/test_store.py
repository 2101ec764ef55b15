"""Invariants of the MVCC store, checked against simple models (no HTTP)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.devserver.export_api import json_schemas
from convex_cdc.devserver.ids import decode_document_id
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
    times = [table.document(doc_id).creation_time for doc_id in result.ids]  # type: ignore[union-attr]
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


# --- dropping tables ----------------------------------------------------------------------


def _walk(store: DocumentStore, snapshot: int) -> list[tuple[str, str]]:
    """(table, id) of every document a whole snapshot walk at ``snapshot`` returns."""
    seen: list[tuple[str, str]] = []
    cursor = None
    for _ in range(1000):
        page = store.snapshot_page(snapshot, cursor, EVERYTHING, 2)
        seen += [(row.table.name, row.id) for row in page.revisions]
        if page.cursor is None:
            return seen
        cursor = page.cursor
    raise AssertionError("the walk never finished")


def _dropped_store() -> tuple[DocumentStore, list[str], str, int, int]:
    """Tables t (3 documents, one replaced) and u (1); t dropped after a last write to u.

    Returns the store, t's ids, u's id, a timestamp before the drop and the drop's.
    """
    store = DocumentStore(seed=4)
    t_ids = store.commit([Insert("t", {"n": n}) for n in range(3)]).ids
    u_id = store.commit([Insert("u", {"n": 9}), Replace("t", t_ids[0], {"n": 10})]).ids[0]
    before = store.latest_ts
    return store, t_ids, u_id, before, store.drop_table("", "t")


def test_a_dropped_table_is_gone_from_snapshots_truth_and_schemas_from_the_drop_on() -> None:
    store, t_ids, u_id, before, dropped_at = _dropped_store()

    assert dropped_at > before and store.latest_ts == dropped_at
    assert _walk(store, dropped_at) == [("u", u_id)]
    assert [(row.table.name, row.id) for row in store.live_documents()] == [("u", u_id)]
    assert orjson.loads(json_schemas(store, {"byComponent": True})) == {
        "": {"u": orjson.loads(json_schemas(store, {}))["u"]}
    }
    # A walk pinned before the drop still reads the table as it was then.
    assert sorted(_walk(store, before)) == sorted([*(("t", i) for i in t_ids), ("u", u_id)])
    assert {row.id for row in store.live_documents(before)} == {*t_ids, u_id}


def test_a_dropped_table_sends_no_tombstones_and_none_of_its_changes() -> None:
    """Convex exports no deletes for a drop, and no longer exports the table's earlier
    changes either: a delta reader only learns of the drop by taking a new snapshot."""
    store, _, u_id, _, dropped_at = _dropped_store()
    page = store.deltas_page(0, EVERYTHING, 100)
    assert [(row.table.name, row.id, row.deleted) for row in page.revisions] == [("u", u_id, False)]
    assert page.cursor == dropped_at and not page.has_more
    # Its rows are still read, and count toward the page's row limit.
    assert store.deltas_page(0, EVERYTHING, 2).revisions == []


def test_a_table_created_again_after_a_drop_is_a_new_table() -> None:
    store, t_ids, _, _, _ = _dropped_store()
    old = next(row.table for row in store.revisions_between(0, store.latest_ts))

    new_id = store.commit([Insert("t", {"n": 1})]).ids[0]

    new = next(row.table for row in store.live_documents() if row.id == new_id)
    assert old.name == new.name == "t"
    assert new is not old and new.tablet_id != old.tablet_id
    assert decode_document_id(new_id).table_number != decode_document_id(t_ids[0]).table_number
    assert [row.id for row in store.live_documents() if row.table.name == "t"] == [new_id]
    with pytest.raises(KeyError):
        store.commit([Replace("t", t_ids[1], {"n": 2})])  # an id of the dropped table


def test_dropping_a_missing_or_system_table_is_refused_and_changes_nothing() -> None:
    store = DocumentStore(seed=0)
    store.commit([Insert("t", {}), Insert("_scheduled_functions", {})])
    before = store.latest_ts
    with pytest.raises(KeyError):
        store.drop_table("", "missing")
    with pytest.raises(KeyError):
        store.drop_table("elsewhere", "t")
    with pytest.raises(ValueError, match="system table"):
        store.drop_table("", "_scheduled_functions")
    assert store.latest_ts == before
    assert [row.table.name for row in store.live_documents()] == ["t"]


def test_revisions_between_are_the_log_rows_of_that_window() -> None:
    store = DocumentStore(seed=0)
    first = store.commit([Insert("t", {}), Insert("_system", {})]).ts
    second = store.commit([Insert("u", {})]).ts
    assert [row.ts for row in store.revisions_between(0, first)] == [first, first]
    assert [row.table.name for row in store.revisions_between(first, second)] == ["u"]
    assert store.revisions_between(second, second + 10) == []


def test_other_formats_are_cached_within_the_budget_and_converted_beyond_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from convex_cdc.devserver import tables
    from convex_cdc.devserver.value_encoding import ValueFormat, convert_body

    store = DocumentStore(seed=0)
    ids = store.commit([Insert("t", {"n": i, "b": b"\x01"}) for i in range(3)]).ids
    table = store._components[""].tables["t"]
    first, second, third = (table.document(doc_id) for doc_id in ids)
    assert first is not None and second is not None and third is not None
    neutral = store.commit([Insert("t", {"s": "plain"})]).ids[0]
    plain = table.document(neutral)
    assert plain is not None and plain.body(ValueFormat.CLEAN) is plain.export

    budget = tables._AltCache(len(first.body(ValueFormat.CLEAN)) + 60)  # room for one
    monkeypatch.setattr(tables, "ALT_CACHE", budget)
    cached = second.body(ValueFormat.CLEAN)
    assert second.body(ValueFormat.CLEAN) is cached  # admitted: the same bytes again
    for fmt in (ValueFormat.CLEAN, ValueFormat.ENCODED):
        converted = third.body(fmt)
        assert converted == convert_body(third.export or b"", fmt)
        assert third.body(fmt) is not converted  # over budget: converted each time
    assert budget.used <= budget.budget


def test_document_fields_give_back_what_was_written() -> None:
    store = DocumentStore(seed=0)
    fields: dict[str, Any] = {
        "big": 2**63 - 1,
        "raw": b"\x00\xff",
        "nan": float("nan"),
        "neg_zero": -0.0,
        "nested": {"flag": True, "list": [1, 2.5, None, "x"]},
    }
    doc_id = store.commit([Insert("t", fields, component="c")]).ids[0]
    back = store.document_fields("c", "t", doc_id)
    assert back is not None
    assert repr(back) == repr(dict(sorted(fields.items())))  # repr: NaN and -0.0 exactly
    store.commit([Delete("t", doc_id, component="c")])
    assert store.document_fields("c", "t", doc_id) is None
    assert store.document_fields("c", "missing", doc_id) is None
    assert store.document_fields("other", "t", doc_id) is None


def test_the_workload_writes_the_same_with_or_without_reading_documents_back() -> None:
    from convex_cdc.devserver.workload import Workload

    logs = []
    for reads_back in (False, True):
        store = DocumentStore(seed=5, clock=itertools.count(10**18, 10**6).__next__)
        workload = Workload(store, seed=5, reader=store if reads_back else None)
        workload.populate(1_500)
        workload.step(400)
        logs.append([(row.table.name, row.id, row.export) for row in store._log])
        kept = [workload._pools[key].fields(doc_id) for key in workload._pools
                for doc_id in workload._pools[key].ids]  # fmt: skip
        assert all(fields is None for fields in kept) == reads_back
    assert logs[0] == logs[1]
