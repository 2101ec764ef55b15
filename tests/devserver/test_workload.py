"""The workload generator: what the devserver, the demo and the end-to-end tests rely on."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.devserver.app_documents import (
    ATTACHMENTS,
    CHANNELS,
    MESSAGES,
    SCHEDULED,
    STORAGE,
    TASKS,
    USER_TABLES,
    USERS,
    WAITLIST_INVITES,
    WAITLIST_USERS,
    Key,
)
from convex_cdc.devserver.workload import BULK_IMPORT_AT, POPULATE_BATCH, Workload
from convex_cdc.devserver.writes import (
    CommitResult,
    ConvexValue,
    Delete,
    Fields,
    Insert,
    Replace,
    Write,
)

_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _check_value(value: ConvexValue, depth: int = 0) -> None:
    if depth > 64:
        raise ValueError("nested too deep")
    if isinstance(value, bool | str | bytes | float) or value is None:
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{value} is not an int64")
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not key or key.startswith("$"):
                raise ValueError(f"invalid nested field name {key!r}")
            _check_value(item, depth + 1)
    else:
        raise ValueError(f"{type(value).__name__} is not a Convex value")


class FakeCommitter:
    """An in-memory store: sequential ids, strictly increasing ts, a store's validation."""

    def __init__(self) -> None:
        self.tables: dict[Key, dict[str, Fields]] = {}
        self.removed: dict[str, Fields] = {}
        self.transactions: list[list[Write]] = []
        self.ids: list[list[str]] = []
        self.ts = 1_755_820_789_000_000_000
        self._next_id = 0

    def commit(self, writes: Sequence[Write]) -> CommitResult:
        if not 1 <= len(writes) <= 16_000:
            raise ValueError(f"a transaction of {len(writes)} writes")
        ids = []
        for write in writes:
            table = self.tables.setdefault((write.component, write.table), {})
            if isinstance(write, Insert):
                self._next_id += 1
                doc_id = f"{write.table[:2]}{self._next_id:030d}"  # prefixes collide across tables
                table[doc_id] = self._checked(write.fields)
            elif isinstance(write, Replace):
                if write.id not in table:
                    raise KeyError(write.id)
                table[write.id] = self._checked(write.fields)
                doc_id = write.id
            else:
                self.removed[write.id] = table.pop(write.id)  # KeyError if not live
                doc_id = write.id
            ids.append(doc_id)
        self.ts += 1_000
        self.transactions.append(list(writes))
        self.ids.append(ids)
        return CommitResult(ts=self.ts, ids=ids)

    @staticmethod
    def _checked(fields: Fields) -> Fields:
        for name, value in fields.items():
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"invalid field name {name!r}")
            _check_value(value)
        return fields

    def live(self, key: Key) -> dict[str, Fields]:
        return self.tables.get(key, {})


@dataclass
class Run:
    store: FakeCommitter
    workload: Workload
    populate_transactions: int

    @property
    def populate(self) -> list[list[Write]]:
        return self.store.transactions[: self.populate_transactions]

    @property
    def step(self) -> list[list[Write]]:
        return self.store.transactions[self.populate_transactions :]

    def written_fields(self, key: Key) -> Iterator[Fields]:
        for transaction in self.store.transactions:
            for write in transaction:
                if (write.component, write.table) == key and not isinstance(write, Delete):
                    yield write.fields


def _run(seed: int, documents: int, steps: int) -> Run:
    store = FakeCommitter()
    workload = Workload(store, seed=seed)
    workload.populate(documents)
    populated = len(store.transactions)
    workload.step(steps)
    return Run(store, workload, populated)


@pytest.fixture(scope="module")
def run() -> Run:
    return _run(seed=11, documents=3_000, steps=2_000)


def _walk(value: ConvexValue) -> Iterator[ConvexValue]:
    yield value
    if isinstance(value, list):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)


def test_same_seed_and_calls_give_the_same_transactions() -> None:
    first, again, other = (_run(seed, 400, 150) for seed in (5, 5, 6))
    assert repr(first.store.transactions) == repr(again.store.transactions)
    assert repr(first.store.transactions) != repr(other.store.transactions)


def test_every_convex_value_type_appears(run: Run) -> None:
    values = [
        value
        for key in USER_TABLES
        for fields in run.written_fields(key)
        for top in fields.values()
        for value in _walk(top)
    ]
    floats = [v for v in values if type(v) is float]
    ints = [v for v in values if type(v) is int]
    assert any(math.isnan(v) for v in floats)
    assert math.inf in floats and -math.inf in floats
    assert any(v == 0.0 and math.copysign(1.0, v) < 0 for v in floats)
    assert any(abs(v) > 0 and v != int(v) for v in floats if math.isfinite(v))
    assert any(v > 2**53 for v in ints) and any(v < 0 for v in ints)
    assert 2**63 - 1 in ints and -(2**63) in ints
    assert True in values and False in values
    assert b"" in values and any(type(v) is bytes and v for v in values)
    assert "" in values and any(type(v) is str and not v.isascii() for v in values)
    assert None in values
    assert [] in values
    assert any(type(v) is dict and any(type(x) is dict for x in v.values()) for v in values)
    assert any(type(v) is list and v and all(type(x) is dict for x in v) for v in values)


def test_optional_fields_are_present_in_some_documents_and_absent_in_others(run: Run) -> None:
    for key, field in [
        (USERS, "bio"),
        (USERS, "location"),
        (MESSAGES, "parentId"),
        (TASKS, "description"),
        (WAITLIST_USERS, "referredBy"),
    ]:
        presence = Counter(field in fields for fields in run.written_fields(key))
        assert presence[True] > 0 and presence[False] > 0, (key, field)


def test_id_fields_reference_documents_of_the_right_table_and_component(run: Run) -> None:
    inserted: dict[Key, set[str]] = {key: set() for key in USER_TABLES}
    for transaction, ids in zip(run.store.transactions, run.store.ids, strict=True):
        for write in transaction:
            if isinstance(write, Insert):
                fields = write.fields
                if (write.component, write.table) == MESSAGES:
                    assert fields["channelId"] in inserted[CHANNELS]
                    assert fields["authorId"] in inserted[USERS]
                elif (write.component, write.table) == WAITLIST_INVITES:
                    assert fields["userId"] in inserted[WAITLIST_USERS]
                    assert fields["userId"] not in inserted[USERS]
        for write, doc_id in zip(transaction, ids, strict=True):  # ids are known after commit
            if isinstance(write, Insert) and write.table[0] != "_":
                inserted[(write.component, write.table)].add(doc_id)
    assert inserted[WAITLIST_USERS] and inserted[USERS]


def test_root_and_component_tables_share_a_name(run: Run) -> None:
    assert USERS[1] == WAITLIST_USERS[1] and USERS[0] != WAITLIST_USERS[0]
    assert run.store.live(USERS) and run.store.live(WAITLIST_USERS)


def test_task_estimate_changes_from_int64_to_string_during_step(run: Run) -> None:
    def estimate_types(transactions: list[list[Write]]) -> set[type]:
        return {
            type(write.fields["estimate"])
            for transaction in transactions
            for write in transaction
            if write.table == "tasks" and not isinstance(write, Delete)
        }

    assert estimate_types(run.populate) == {int}
    assert estimate_types(run.step[:40]) == {int}
    assert estimate_types(run.step[40:]) == {str}
    assert estimate_types(run.step[40:41]) == {str}, "the first string estimate is step #40"


def test_attachments_table_first_appears_during_step(run: Run) -> None:
    def writes_attachments(transaction: list[Write]) -> bool:
        return any((w.component, w.table) == ATTACHMENTS for w in transaction)

    assert not any(writes_attachments(t) for t in run.populate)
    first = next(i for i, t in enumerate(run.step) if writes_attachments(t))
    assert first == 10
    assert len(run.store.live(ATTACHMENTS)) > 1


def test_system_tables_are_written_only_during_step(run: Run) -> None:
    def system_writes(transactions: list[list[Write]]) -> Counter[tuple[str, str]]:
        return Counter(
            (w.table, type(w).__name__) for t in transactions for w in t if w.table[0] == "_"
        )

    assert not system_writes(run.populate)
    written = system_writes(run.step)
    for kind in ("Insert", "Replace", "Delete"):
        assert written[(SCHEDULED[1], kind)] > 0
    assert written[(STORAGE[1], "Insert")] > 0
    mixed = [t for t in run.step if {w.table[0] == "_" for w in t} == {True, False}]
    assert mixed, "system writes ride along with application writes"
    stored = set(run.store.live(STORAGE)) | set(run.store.removed)
    assert any(f.get("storageId") in stored for f in run.written_fields(ATTACHMENTS))


def test_transaction_sizes_range_from_one_to_hundreds(run: Run) -> None:
    sizes = [len(t) for t in run.step]
    assert min(sizes) == 1
    assert max(sizes) >= 200
    assert max(len(t) for t in run.store.transactions) <= 16_000
    assert Counter(sizes)[1] > len(sizes) / 2
    assert 200 <= len(run.step[BULK_IMPORT_AT]) <= 501


def test_step_mixes_inserts_updates_and_deletes(run: Run) -> None:
    kinds = Counter(type(w).__name__ for t in run.step for w in t if w.table[0] != "_")
    total = sum(kinds.values())
    assert kinds["Insert"] / total == pytest.approx(0.55, abs=0.07)
    assert kinds["Replace"] / total == pytest.approx(0.30, abs=0.07)
    assert kinds["Delete"] / total == pytest.approx(0.15, abs=0.07)


def test_updates_replace_the_whole_document_and_keep_its_references(run: Run) -> None:
    replaced = [
        w
        for t in run.step
        for w in t
        if isinstance(w, Replace) and (w.component, w.table) == MESSAGES
    ]
    assert replaced
    for write in replaced:
        assert {"channelId", "authorId", "body", "sentAt", "editCount"} <= set(write.fields)
    assert max(int(str(w.fields["editCount"])) for w in replaced) >= 1


def test_some_transactions_write_one_document_twice(run: Run) -> None:
    repeated = [t for t in run.step if max(Counter(getattr(w, "id", "") for w in t).values()) > 1]
    assert any("" not in {getattr(w, "id", "") for w in t} for t in repeated)


def test_archiving_a_channel_deletes_it_with_its_messages(run: Run) -> None:
    archives = [t for t in run.step if isinstance(t[-1], Delete) and t[-1].table == "channels"]
    assert archives
    for transaction in archives:
        channel = transaction[-1].id  # type: ignore[union-attr]
        messages = [w for w in transaction[:-1] if isinstance(w, Delete)]
        assert all(run.store.removed[w.id]["channelId"] == channel for w in messages)
        assert all(f["channelId"] != channel for f in run.store.live(MESSAGES).values())


def test_workload_tracks_the_same_live_documents_as_the_store(run: Run) -> None:
    for key, count in run.workload.live_counts().items():
        assert count == len(run.store.live(key)), key
    assert sorted(run.workload.live_ids("users", component="waitlist")) == sorted(
        run.store.live(WAITLIST_USERS)
    )


@pytest.mark.parametrize("documents", [0, 7, 20, 999, 12_345])
def test_populate_yields_about_the_requested_number_of_documents(documents: int) -> None:
    store = FakeCommitter()
    Workload(store, seed=3).populate(documents)
    live = {key: len(store.live(key)) for key in USER_TABLES}
    assert sum(live.values()) == pytest.approx(documents, rel=0.03)
    assert not store.live(ATTACHMENTS) and not store.live(SCHEDULED)
    assert all(len(t) <= POPULATE_BATCH for t in store.transactions)
    if documents >= 1_000:
        assert all(live[key] > 0 for key in USER_TABLES if key != ATTACHMENTS)
        assert live[MESSAGES] > live[USERS] > live[CHANNELS]


def test_step_returns_the_last_commit() -> None:
    store = FakeCommitter()
    workload = Workload(store, seed=1)
    assert workload.step(0) is None
    result = workload.step(3)
    assert result is not None and result.ts == store.ts
    assert workload.step_transactions == 3
    with pytest.raises(ValueError, match="transactions"):
        workload.step(-1)
    with pytest.raises(ValueError, match="documents"):
        workload.populate(-1)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    documents=st.integers(0, 400),
    steps=st.integers(0, 120),
    more=st.integers(0, 60),
)
def test_any_call_sequence_only_replaces_and_deletes_live_documents(
    seed: int, documents: int, steps: int, more: int
) -> None:
    # The fake raises KeyError on a replace or delete of a document that is not live.
    store = FakeCommitter()
    workload = Workload(store, seed=seed, attachments_from=3, estimate_string_from=5)
    workload.step(steps)
    workload.populate(documents)
    workload.step(more)
    for key, count in workload.live_counts().items():
        assert count == len(store.live(key))


def test_populate_and_step_run_against_the_devserver_store() -> None:
    from convex_cdc.devserver.store import DocumentStore

    store = DocumentStore(seed=2)
    workload = Workload(store, seed=2)
    workload.populate(2_000)
    workload.step(150)
    live = store.live_documents()
    exported = Counter((revision.table.component, revision.table.name) for revision in live)
    expected = {key: n for key, n in workload.live_counts().items() if key[1][0] != "_" and n}
    assert exported == expected
    tables = dict(store.read_tables(lambda component, table: table.name))
    assert "attachments" in tables[""] and "_storage" not in tables[""]
    root, waitlist = workload.live_ids("users"), workload.live_ids("users", component="waitlist")
    assert root[0][:2] == waitlist[0][:2], "same table number in both components"
    exports = b"\n".join(revision.export or b"" for revision in live)
    assert b"9223372036854775807" in exports and b'"$float"' in exports
