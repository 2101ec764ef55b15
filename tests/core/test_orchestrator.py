"""run_sync against an in-process devserver: crashes anywhere, restarts, exactly the source.

The oracle (after the Fivetran connector's ``assert_in_sync``): whatever happened before,
once a run completes, the sink's current state equals the deployment's state at the
checkpoint's timestamp, no document version landed twice, and every delete arrived as a
delete event. Throughout, the sink checks that a batch number it has seen before comes
back with exactly the same events.

Every scenario runs with batches of one page and with batches of several pages (spanning
tables, and ending with a pending exhausting delta page), and a restart after a crash is
given other batch limits than the run that crashed: the replay must still rebuild the
batch the crashed run may have written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convex_cdc.core.checkpoint import Checkpoint, DeltaTail, SourceIdentity, begin_snapshot
from convex_cdc.core.checkpoint_json import dumps_checkpoint, loads_checkpoint
from convex_cdc.core.errors import (
    MalformedResponse,
    RetentionExpired,
    SourceUnavailable,
    StateError,
    Stopped,
)
from convex_cdc.core.events import BatchKind
from convex_cdc.core.orchestrator import SyncOptions, SyncReport, run_sync
from convex_cdc.core.selection import Selection
from convex_cdc.core.source import SnapshotPage
from convex_cdc.devserver.writes import Delete, Insert, Replace, Write
from tests.core.crash_harness import (
    CrashInjector,
    CrashPoint,
    DocKey,
    DurableSink,
    MemoryCheckpointStore,
    SimulatedCrash,
    UnreliableSource,
)
from tests.core.in_process_convex import InProcessConvex


@dataclass
class Scenario:
    """A small deployment with every shape of page, and writes that land mid-run."""

    deployment: InProcessConvex
    messages: list[str]
    users: list[str]
    entries: list[str]


def build_scenario() -> Scenario:
    deployment = InProcessConvex(snapshot_page_size=2, delta_row_limit=3, seed=7)
    messages = [deployment.insert("messages", {"body": f"m{i}", "n": i}) for i in range(5)]
    users = [deployment.insert("users", {"name": n, "score": 1.5}) for n in ("ada", "bob", "cy")]
    entries = [deployment.insert("entries", {"email": f"e{i}@x.io"}, "waitlist") for i in range(2)]
    deployment.create_table("empty")
    deployment.transact([Insert("_scheduled_functions", {"name": "cron"})])
    # One transaction lands before each API call of the first run.
    deployment.schedule(
        [
            [
                Replace("users", users[0], {"name": "ada2", "score": -0.0}),
                Insert("messages", {"body": "during walk", "n": 2**60}),
                Delete("entries", entries[0], "waitlist"),
            ],
            [Insert("_scheduled_functions", {"name": "job"})],
            [Delete("messages", messages[1])],
            [
                Insert("users", {"name": "dee", "avatar": b"\x00\xff"}),
                Replace("messages", messages[2], {"body": "edited", "n": float("nan")}),
            ],
            [Insert("_scheduled_functions", {}), Insert("_scheduled_functions", {})],
            [Insert("created_later", {"x": 1})],
            [
                Delete("users", users[1]),
                Delete("messages", messages[0]),
                Insert("entries", {"email": "new@x.io"}, "waitlist"),
            ],
        ]
    )
    return Scenario(deployment, messages, users, entries)


def land_writes_after_crash(s: Scenario) -> None:
    """Writes that land while the process is down (touching no scheduled document)."""
    s.deployment.transact(
        [
            Replace("messages", s.messages[3], {"body": "edited while down"}),
            Delete("users", s.users[2]),
            Insert("entries", {"email": "down@x.io"}, "waitlist"),
        ]
    )
    s.deployment.transact([Insert("_scheduled_functions", {})])


def land_writes_later(s: Scenario) -> None:
    s.deployment.transact([Delete("messages", s.messages[4]), Insert("later", {"y": 2})])


def assert_in_sync(
    deployment: InProcessConvex, sink: DurableSink, report: SyncReport
) -> Checkpoint:
    checkpoint = report.checkpoint
    assert checkpoint is not None and isinstance(checkpoint.position, DeltaTail)
    as_of = checkpoint.consistent_as_of
    assert as_of is not None and checkpoint.snapshot_started_at is not None
    assert sink.state() == deployment.state_at(as_of)
    sink.assert_exactly_once()
    assert sink.delete_events() == deployment.deletes_between(checkpoint.snapshot_started_at, as_of)
    assert max((seq for seq, _ in sink.files), default=0) == checkpoint.batch_seq
    return checkpoint


def fresh(
    target: CrashPoint | None = None,
) -> tuple[CrashInjector, DurableSink, MemoryCheckpointStore]:
    injector = CrashInjector(target)
    return injector, DurableSink(injector), MemoryCheckpointStore(injector)


BATCHINGS = {
    # With 2-document snapshot pages and 3-row delta pages:
    "one-page": SyncOptions(batch_rows=1),  # every non-empty page its own batch
    "few-pages": SyncOptions(batch_rows=5, batch_pages=4),  # batches of 2-4 pages
    "whole-walk": SyncOptions(),  # the defaults: one batch per walk and catch-up
}
RESTART = {"one-page": "few-pages", "few-pages": "whole-walk", "whole-walk": "one-page"}
"""The limits a restart is given: never those of the run that crashed."""


@dataclass
class PageLog:
    """A :class:`SyncObserver` that keeps every page it is told about."""

    pages: list[tuple[str, int, Checkpoint]] = field(default_factory=list)

    def on_page(
        self,
        *,
        kind: BatchKind,
        events: int,
        response_bytes: int,
        checkpoint: Checkpoint,
    ) -> None:
        self.pages.append((kind, events, checkpoint))

    def on_idle(self, *, seconds: float, checkpoint: Checkpoint) -> None:
        pass

    def batches(self) -> list[tuple[str, list[int], Checkpoint]]:
        """(kind, events per page, checkpoint) of each batch: its pages share the checkpoint
        saved after it."""
        grouped: list[tuple[str, list[int], Checkpoint]] = []
        for kind, events, checkpoint in self.pages:
            if grouped and grouped[-1][2] is checkpoint:
                grouped[-1][1].append(events)
            else:
                grouped.append((kind, [events], checkpoint))
        return grouped


def _first_run_points(batching: str) -> list[CrashPoint]:
    injector, sink, store = fresh()
    run_sync(build_scenario().deployment, sink, store, BATCHINGS[batching])
    return injector.points()


def _prepare_second_run(
    s: Scenario, sink: DurableSink, store: MemoryCheckpointStore, options: SyncOptions
) -> None:
    run_sync(s.deployment, sink, store, options)
    s.deployment.transact(
        [
            Replace("messages", s.messages[3], {"body": "second run"}),
            Delete("entries", s.entries[1], "waitlist"),
        ]
    )
    s.deployment.transact([Insert("messages", {"body": f"more {i}"}) for i in range(4)])


def _second_run_points(batching: str) -> list[CrashPoint]:
    s = build_scenario()
    injector, sink, store = fresh()
    _prepare_second_run(s, sink, store, BATCHINGS[batching])
    first = len(injector.ops)
    run_sync(s.deployment, sink, store, BATCHINGS[batching])
    return [CrashPoint(p.op - first, p.phase) for p in injector.points() if p.op >= first]


FIRST_RUN_POINTS = [(b, point) for b in BATCHINGS for point in _first_run_points(b)]
SECOND_RUN_POINTS = [(b, point) for b in BATCHINGS for point in _second_run_points(b)]


def _crash_id(case: tuple[str, CrashPoint]) -> str:
    batching, point = case
    return f"{batching}-op{point.op:02d}-{point.phase}"


def test_the_crash_scenarios_cover_every_kind_of_operation() -> None:
    injector, sink, store = fresh()
    log = PageLog()
    run_sync(build_scenario().deployment, sink, store, BATCHINGS["few-pages"], observer=log)
    kinds = {(op.kind, op.detail.split()[0]) for op in injector.ops}
    assert ("save", "snapshot") in kinds and ("save", "delta") in kinds
    assert ("save", "delta+pending") in kinds  # an exhausting delta page was written
    assert any(op.kind == "write" and op.tables > 1 for op in injector.ops)  # multi-table
    batches = {cp.batch_seq: (kind, pages) for kind, pages, cp in log.batches() if sum(pages)}
    # A snapshot batch of several non-empty pages spans tables...
    assert any(
        kind == "snapshot"
        and sum(map(bool, pages)) > 1
        and len([table for n, table in sink.files if n == seq]) > 1
        for seq, (kind, pages) in batches.items()
    )
    # ... and a pending delta batch (written after its pending save) spans several pages.
    pending = [int(op.detail.split()[1]) for op in injector.ops if op.detail.endswith(" pending")]
    assert pending and all(len(batches[seq][1]) > 1 for seq in pending)
    for batching in BATCHINGS:
        first = [point for b, point in FIRST_RUN_POINTS if b == batching]
        second = [point for b, point in SECOND_RUN_POINTS if b == batching]
        assert len(first) > 16 and len(second) > 8, batching


@pytest.mark.parametrize("case", FIRST_RUN_POINTS, ids=_crash_id)
def test_a_crash_anywhere_in_the_first_run_then_a_restart_yields_the_source_state(
    case: tuple[str, CrashPoint],
) -> None:
    batching, point = case
    restart = BATCHINGS[RESTART[batching]]
    s = build_scenario()
    injector, sink, store = fresh(point)
    with pytest.raises(SimulatedCrash):
        run_sync(s.deployment, sink, store, BATCHINGS[batching])
    land_writes_after_crash(s)
    injector.target = None
    assert_in_sync(s.deployment, sink, run_sync(s.deployment, sink, store, restart))
    if injector.ops[point.op].kind == "write" and point.phase != "before":
        assert sink.replays >= 1  # the half-landed batch really was replayed
    land_writes_later(s)
    report = run_sync(s.deployment, sink, store, restart)
    assert assert_in_sync(s.deployment, sink, report).consistent_as_of == s.deployment.latest_ts
    assert sink.state() == s.deployment.truth()


@pytest.mark.parametrize("case", SECOND_RUN_POINTS, ids=_crash_id)
def test_a_crash_anywhere_in_an_incremental_run_then_a_restart_yields_the_source_state(
    case: tuple[str, CrashPoint],
) -> None:
    batching, point = case
    s = build_scenario()
    injector, sink, store = fresh()
    _prepare_second_run(s, sink, store, BATCHINGS[batching])
    injector.target = CrashPoint(len(injector.ops) + point.op, point.phase)
    with pytest.raises(SimulatedCrash):
        run_sync(s.deployment, sink, store, BATCHINGS[batching])
    land_writes_after_crash(s)
    injector.target = None
    assert_in_sync(
        s.deployment, sink, run_sync(s.deployment, sink, store, BATCHINGS[RESTART[batching]])
    )
    assert sink.state() == s.deployment.truth()


# --- random workloads, random crashes ----------------------------------------------------

TABLES = [("", "a"), ("", "b"), ("comp", "a"), ("comp/sub", "t")]


@dataclass(frozen=True)
class Op:
    kind: str  # insert | replace | delete | system
    table: int
    pick: int
    value: int


def _resolve(ops: Sequence[Op]) -> Callable[[InProcessConvex], list[Write]]:
    """Turn abstract ops into writes against whatever documents exist when they land."""

    def writes(deployment: InProcessConvex) -> list[Write]:
        result: list[Write] = []
        touched: set[str] = set()
        for op in ops:
            component, table = TABLES[op.table]
            live = [i for i in deployment.live_ids(table, component) if i not in touched]
            if op.kind == "system":
                result.append(Insert("_scheduled_functions", {"v": op.value}))
            elif op.kind == "insert" or not live:
                result.append(Insert(table, {"v": op.value, "f": op.value / 7}, component))
            else:
                doc_id = live[op.pick % len(live)]
                touched.add(doc_id)
                if op.kind == "replace":
                    result.append(Replace(table, doc_id, {"v": op.value, "s": "x"}, component))
                else:
                    result.append(Delete(table, doc_id, component))
        return result

    return writes


ops_strategy = st.builds(
    Op,
    kind=st.sampled_from(["insert", "insert", "replace", "delete", "system"]),
    table=st.integers(0, len(TABLES) - 1),
    pick=st.integers(0, 50),
    value=st.integers(-(2**63), 2**63 - 1),
)
transactions = st.lists(st.lists(ops_strategy, min_size=1, max_size=4), max_size=8)


@dataclass(frozen=True)
class Case:
    """One random run: data before, during and between attempts, paging, crashes, faults."""

    initial: list[list[Op]]
    during: list[list[Op]]
    between: list[list[Op]]
    page_size: int
    row_limit: int
    crashes: list[tuple[int | str, str]]
    """Per attempt: (n, phase) = the n-th durable operation of that attempt, or
    ("save"|"write", phase) = the next operation touching a pending delta batch."""
    batchings: list[tuple[int, int]]
    """Per attempt (cycling): (batch_rows, batch_pages), so restarts change the limits."""
    fail_rate: float
    seed: int


cases = st.builds(
    Case,
    initial=transactions,
    during=transactions,
    between=transactions,
    page_size=st.integers(1, 4),
    row_limit=st.integers(1, 5),
    crashes=st.lists(
        st.one_of(
            st.tuples(st.integers(0, 10), st.sampled_from(["before", "inside:1", "after"])),
            st.tuples(st.sampled_from(["save", "write"]), st.sampled_from(["before", "after"])),
        ),
        max_size=8,
    ),
    # A failed fetch drops the pages of the open batch, so with 1 call in 4 failing
    # (twice per page) batches of more than 4 pages would rarely land.
    batchings=st.lists(
        st.tuples(st.sampled_from([1, 2, 3, 5, 8, 10**6]), st.integers(1, 4)),
        min_size=1,
        max_size=4,
    ),
    fail_rate=st.sampled_from([0.0, 0.0, 0.1, 0.25]),
    seed=st.integers(0, 2**16),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases)
def test_random_workloads_with_random_crashes_converge_to_the_source(case: Case) -> None:
    deployment = InProcessConvex(
        snapshot_page_size=case.page_size, delta_row_limit=case.row_limit, seed=case.seed
    )
    for ops in case.initial:
        deployment.transact(_resolve(ops)(deployment))
    deployment.schedule(_resolve(ops) for ops in case.during)
    source = UnreliableSource(deployment, fail_rate=case.fail_rate, seed=case.seed)
    injector, sink, store = fresh()
    pending_between = [_resolve(ops) for ops in case.between]
    report: SyncReport | None = None
    for attempt in range(1000):
        injector.target = injector.target_pending = None
        if attempt < len(case.crashes):
            where, phase = case.crashes[attempt]
            if isinstance(where, int):
                injector.target = CrashPoint(len(injector.ops) + where, phase)
            else:
                injector.target_pending = (where, phase)
        rows, pages = case.batchings[attempt % len(case.batchings)]
        try:
            report = run_sync(source, sink, store, SyncOptions(batch_rows=rows, batch_pages=pages))
            break
        except (SimulatedCrash, SourceUnavailable):
            if pending_between:
                deployment.transact(pending_between.pop(0)(deployment))
    assert report is not None, "never converged"
    assert_in_sync(deployment, sink, report)
    injector.target = injector.target_pending = None
    report = run_sync(deployment, sink, store)  # a quiet run catches up with everything
    assert_in_sync(deployment, sink, report)
    assert sink.state() == deployment.truth()


# --- resnapshot, foreign checkpoints, bad pages ------------------------------------------


def test_resnapshot_truncates_and_reloads_so_dropped_tables_disappear() -> None:
    s = build_scenario()
    _, sink, store = fresh()
    run_sync(s.deployment, sink, store)
    s.deployment.drop_table("users")  # the legacy API sends no tombstones for this
    run_sync(s.deployment, sink, store)
    # json_schemas no longer lists it: a drop event, no resnapshot needed.
    assert not any(key[1] == "users" for key in sink.state())
    before = store.load()
    assert before is not None

    report = run_sync(s.deployment, sink, store, SyncOptions(resnapshot=True))

    assert report.started_new_snapshot
    checkpoint = assert_in_sync(s.deployment, sink, report)
    assert checkpoint.snapshot_started_at != before.snapshot_started_at
    assert checkpoint.batch_seq > before.batch_seq  # batch numbers never repeat
    assert sink.state() == s.deployment.truth()
    assert not any(key[1] == "users" for key in sink.state())


def test_a_resnapshot_of_a_deployment_whose_tables_were_all_dropped_empties_the_sink() -> None:
    s = build_scenario()
    _, sink, store = fresh()
    run_sync(s.deployment, sink, store)
    for table in ("messages", "users", "empty", "created_later"):
        s.deployment.drop_table(table)
    s.deployment.drop_table("entries", "waitlist")
    run_sync(s.deployment, sink, store, SyncOptions(resnapshot=True))
    assert sink.state() == s.deployment.truth() == {}


def test_a_resnapshot_of_a_deployment_whose_tables_all_became_empty_empties_the_sink() -> None:
    """The new walk finds no document at all; its first batch still tells the sink."""
    s = build_scenario()
    _, sink, store = fresh()
    run_sync(s.deployment, sink, store)
    deployment = s.deployment
    for component, table in {(k[0], k[1]) for k in deployment.truth()}:
        deployment.transact(
            [Delete(table, doc_id, component) for doc_id in deployment.live_ids(table, component)]
        )
    assert deployment.truth() == {}

    report = run_sync(deployment, sink, store, SyncOptions(resnapshot=True))

    assert sink.state() == {}
    assert report.batches == 1  # the walk's opening truncates, nothing else


def _resnapshot_points() -> list[CrashPoint]:
    s = build_scenario()
    injector, sink, store = fresh()
    run_sync(s.deployment, sink, store)
    first = len(injector.ops)
    run_sync(s.deployment, sink, store, SyncOptions(resnapshot=True))
    return [CrashPoint(p.op - first, p.phase) for p in injector.points() if p.op >= first]


@pytest.mark.parametrize("point", _resnapshot_points(), ids=lambda p: f"op{p.op:02d}-{p.phase}")
def test_a_crash_anywhere_in_a_resnapshot_then_a_restart_yields_the_source_state(
    point: CrashPoint,
) -> None:
    """The walk's opening truncates come from the pinned checkpoint, so a replay of its
    first batch carries the same rows (the sink checks every replay is identical)."""
    s = build_scenario()
    injector, sink, store = fresh()
    run_sync(s.deployment, sink, store)
    injector.target = CrashPoint(len(injector.ops) + point.op, point.phase)
    with pytest.raises(SimulatedCrash):
        run_sync(s.deployment, sink, store, SyncOptions(resnapshot=True))
    injector.target = None

    run_sync(s.deployment, sink, store)

    assert sink.state() == s.deployment.truth()


def test_a_resnapshot_interrupted_by_a_crash_resumes_the_new_walk() -> None:
    s = build_scenario()
    injector, sink, store = fresh()
    run_sync(s.deployment, sink, store)
    s.deployment.drop_table("entries", "waitlist")
    injector.target = CrashPoint(len(injector.ops) + 4, "after")  # mid-walk
    with pytest.raises(SimulatedCrash):
        run_sync(s.deployment, sink, store, SyncOptions(resnapshot=True, batch_rows=3))
    land_writes_later(s)
    injector.target = None
    assert_in_sync(s.deployment, sink, run_sync(s.deployment, sink, store))
    assert sink.state() == s.deployment.truth()


def test_a_resnapshot_never_reuses_the_number_of_a_half_written_delta_batch() -> None:
    s = build_scenario()
    injector, sink, store = fresh()
    run_sync(s.deployment, sink, store)
    s.deployment.transact([Replace("messages", s.messages[3], {"body": "pending"})])
    # The next run writes one exhausting delta batch: save(pending), write, save.
    injector.target = CrashPoint(len(injector.ops) + 2, "after")
    with pytest.raises(SimulatedCrash):
        run_sync(s.deployment, sink, store)
    crashed = store.load()
    assert crashed is not None and crashed.pending is not None
    injector.target = None
    # The sink asserts that a batch number it holds only ever comes back identical.
    report = run_sync(s.deployment, sink, store, SyncOptions(resnapshot=True))
    assert report.checkpoint is not None
    new_walk = report.checkpoint.snapshot_started_at
    new_walk_batches = {
        seq for (seq, _), rows in sink.files.items() if rows[0]["_snapshot_ts"] == new_walk
    }
    assert min(new_walk_batches) == crashed.pending.batch_seq + 1
    assert_in_sync(s.deployment, sink, report)
    assert sink.state() == s.deployment.truth()


def _synced_then_written() -> tuple[Scenario, CrashInjector, DurableSink, MemoryCheckpointStore]:
    s = build_scenario()
    injector, sink, store = fresh()
    run_sync(s.deployment, sink, store)
    s.deployment.transact([Insert("messages", {"body": f"m{i}"}) for i in range(8)])  # > 1 page
    s.deployment.transact([Insert("users", {"name": "zed"})])
    return s, injector, sink, store


@pytest.mark.parametrize("resnapshot_first", [True, False], ids=["mid-resnapshot", "mid-deltas"])
def test_a_resnapshot_after_a_crash_never_reuses_the_number_of_a_written_batch(
    resnapshot_first: bool,
) -> None:
    """A batch written just before a crash (its checkpoint never saved) keeps its number:
    a --resnapshot right after must not give that number to different events."""
    options = SyncOptions(resnapshot=resnapshot_first)
    probe, dry_run, dry_sink, dry_store = _synced_then_written()
    start = len(dry_run.ops)
    run_sync(probe.deployment, dry_sink, dry_store, options)
    first_write = next(i for i in range(start, len(dry_run.ops)) if dry_run.ops[i].kind == "write")

    s, injector, sink, store = _synced_then_written()
    injector.target = CrashPoint(first_write, "after")
    with pytest.raises(SimulatedCrash):
        run_sync(s.deployment, sink, store, options)
    s.deployment.transact([Delete("messages", s.messages[3]), Insert("users", {"name": "amy"})])
    injector.target = None
    # DurableSink asserts that a batch number it holds only ever comes back identical.
    report = run_sync(s.deployment, sink, store, SyncOptions(resnapshot=True))
    assert_in_sync(s.deployment, sink, report)
    assert sink.state() == s.deployment.truth()


def test_a_checkpoint_of_another_deployment_is_refused_and_nothing_is_written() -> None:
    deployment = build_scenario().deployment
    _, sink, store = fresh()
    other = begin_snapshot(
        None, source=SourceIdentity("https://other-animal-9.convex.cloud"), snapshot=5
    )
    store.raw = dumps_checkpoint(other)
    with pytest.raises(StateError, match="other-animal-9"):
        run_sync(deployment, sink, store)
    assert sink.writes == 0 and store.raw == dumps_checkpoint(other)


SELECTED = {
    "_other": "excluded",
    "": {
        "_other": "included",
        "users": {"_other": "included", "score": "excluded"},
        "empty": "excluded",
        "created_later": "excluded",
    },
    "waitlist": {"_other": "included"},
}
"""The selection ``_sync_selected`` asks core for, written out by hand as the Convex
selection object the server must receive."""


def _sync_selected(s: Scenario) -> tuple[dict[DocKey, str], dict[DocKey, str]]:
    """Sync the scenario with a selection built from patterns; returns what landed and
    what the deployment holds under :data:`SELECTED` at the run's consistent timestamp."""
    selection = Selection.from_patterns(
        include=["*", "waitlist/*"], exclude=["users.score", "empty", "created_later"]
    )
    _, sink, store = fresh()
    report = run_sync(s.deployment, sink, store, SyncOptions(selection=selection))
    checkpoint = report.checkpoint
    assert checkpoint is not None and checkpoint.consistent_as_of is not None
    return sink.state(), s.deployment.state_at(checkpoint.consistent_as_of, SELECTED)


def test_a_selection_replicates_only_the_chosen_tables_and_columns() -> None:
    landed, expected = _sync_selected(build_scenario())
    assert landed == expected
    assert {(component, table) for component, table, _ in landed} == {
        ("", "messages"),
        ("", "users"),
        ("waitlist", "entries"),
    }
    assert all('"score"' not in doc for (_, table, _), doc in landed.items() if table == "users")


SELECTION_BUGS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "a-lost-column-exclusion": (lambda wire: wire[""]["users"].pop("score"), "users"),
    "a-lost-table-exclusion": (lambda wire: wire[""].pop("created_later"), "created_later"),
}


@pytest.mark.parametrize("bug", SELECTION_BUGS)
def test_a_selection_that_core_sends_wrong_makes_the_selection_test_fail(
    bug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deployment exports what the server is sent; the oracle, what the test means. So
    a core bug that changes the selection on its way out fails the selection test, where a
    stand-in filtering with core's own Selection would have agreed with the bug."""
    break_wire, table = SELECTION_BUGS[bug]
    right = Selection.to_wire

    def wrong(selection: Selection) -> dict[str, Any]:
        wire = right(selection)
        break_wire(wire)
        return wire

    monkeypatch.setattr(Selection, "to_wire", wrong)
    landed, expected = _sync_selected(build_scenario())
    assert landed != expected
    differing = (landed.keys() ^ expected.keys()) | {
        key for key in landed.keys() & expected.keys() if landed[key] != expected[key]
    }
    assert {name for _, name, _ in differing} == {table}


def test_a_cursor_outside_retention_stops_the_run_and_a_resnapshot_recovers() -> None:
    s = build_scenario()
    _, sink, store = fresh()
    run_sync(s.deployment, sink, store)
    land_writes_later(s)
    s.deployment.min_retained_ts = s.deployment.latest_ts  # the saved cursor is now too old
    saved, writes = store.load(), sink.writes

    with pytest.raises(RetentionExpired) as caught:
        run_sync(s.deployment, sink, store)

    assert (caught.value.status, caught.value.code) == (400, "InvalidWindowToReadDocuments")
    after = store.load()
    assert saved is not None and after is not None and sink.writes == writes
    assert (after.position, after.batch_seq) == (saved.position, saved.batch_seq)
    report = run_sync(s.deployment, sink, store, SyncOptions(resnapshot=True))
    assert_in_sync(s.deployment, sink, report)
    assert sink.state() == s.deployment.truth()


class _HostilePage:
    """A source whose third snapshot page names a table that would escape a directory."""

    def __init__(self, inner: InProcessConvex) -> None:
        self.inner = inner
        self.pages = 0
        self.deployment_url = inner.deployment_url

    def json_schemas(self) -> dict[str, dict[str, object]]:
        return self.inner.json_schemas()

    def test_connection(self) -> None:
        self.inner.test_connection()

    def list_snapshot(self, **kwargs: object) -> SnapshotPage:
        page = self.inner.list_snapshot(**kwargs)  # type: ignore[arg-type]
        self.pages += 1
        if self.pages == 3 and page.values:
            page.values[0]["_table"] = "../../etc"
        return page

    def document_deltas(self, **kwargs: object) -> object:
        return self.inner.document_deltas(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("batch_rows", "durable"), [(1, 2), (4, 0)], ids=["before", "inside"])
def test_a_malformed_page_stops_the_run_before_anything_of_its_batch_is_written(
    batch_rows: int, durable: int
) -> None:
    """The walk's pages hold 2, 1, 2... documents: with one page per batch, the two pages
    before the bad one are batches 1 and 2; with 4 rows per batch, the bad page is in
    batch 1, so nothing at all is written, not even the walk's pin."""
    deployment = build_scenario().deployment
    _, sink, store = fresh()
    source = _HostilePage(deployment)
    with pytest.raises(MalformedResponse, match="not a Convex table name"):
        run_sync(source, sink, store, SyncOptions(batch_rows=batch_rows))  # type: ignore[arg-type]
    saved = store.load()
    assert (saved.batch_seq if saved is not None else 0) == durable
    assert (saved is None) == (durable == 0)
    assert {seq for seq, _ in sink.files} == set(range(1, durable + 1))
    assert all("etc" not in table.table for _, table in sink.files)


class _FailingFetch:
    """A source whose ``failing``-th list_snapshot call fails (it is fetched ahead)."""

    def __init__(self, inner: InProcessConvex, failing: int) -> None:
        self.inner = inner
        self.failing = failing
        self.calls = 0
        self.deployment_url = inner.deployment_url

    def json_schemas(self) -> dict[str, dict[str, object]]:
        return self.inner.json_schemas()

    def test_connection(self) -> None:
        self.inner.test_connection()

    def list_snapshot(self, **kwargs: object) -> SnapshotPage:
        self.calls += 1
        if self.calls == self.failing:
            raise SourceUnavailable("injected: connection reset", hint="retry")
        return self.inner.list_snapshot(**kwargs)  # type: ignore[arg-type]

    def document_deltas(self, **kwargs: object) -> object:
        return self.inner.document_deltas(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("batch_rows", "durable"),
    [(1, 3), (4, 1), (10**6, 0)],
    ids=["one-page", "two-pages", "whole-walk"],
)
def test_a_failed_fetch_stops_the_run_right_after_the_batches_before_it_are_checkpointed(
    batch_rows: int, durable: int
) -> None:
    deployment = InProcessConvex(snapshot_page_size=2, seed=3)
    for i in range(9):
        deployment.insert("messages", {"n": i})
    _, sink, store = fresh()
    source = _FailingFetch(deployment, failing=4)
    with pytest.raises(SourceUnavailable):
        run_sync(source, sink, store, SyncOptions(batch_rows=batch_rows))  # type: ignore[arg-type]
    # Page 4's fetch failed: the batches before the one it belongs to are durable and
    # checkpointed; the pages of its own batch were dropped, not written.
    saved = store.load()
    assert (saved.batch_seq if saved is not None else 0) == durable
    assert {seq for seq, _ in sink.files} == set(range(1, durable + 1))
    report = run_sync(deployment, sink, store)  # the next run resumes after the last batch
    assert_in_sync(deployment, sink, report)
    assert sink.state() == deployment.truth()


# --- batches of several pages -------------------------------------------------------------


def _synced_with_backlog() -> tuple[InProcessConvex, DurableSink, MemoryCheckpointStore]:
    """A completed first run (one page per batch), then 20 transactions = 7 delta pages."""
    deployment = InProcessConvex(snapshot_page_size=2, delta_row_limit=3, seed=5)
    for i in range(5):
        deployment.insert("messages", {"n": i})
    _, sink, store = fresh()
    run_sync(deployment, sink, store, SyncOptions(batch_rows=1))
    for i in range(20):
        deployment.insert("users" if i % 2 else "messages", {"n": i})
    return deployment, sink, store


def test_new_batch_limits_apply_from_the_second_batch_of_a_run() -> None:
    """The first batch may be the replay of one a crash left without its checkpoint, so it
    is cut as the saved checkpoint says; the run's own limits apply after it."""
    deployment, sink, store = _synced_with_backlog()
    log = PageLog()
    report = run_sync(deployment, sink, store, SyncOptions(batch_rows=10**6), observer=log)
    assert [sum(pages) for _, pages, _ in log.batches()] == [3, 17]
    assert report.batches == 2 and report.events == 20
    saved = store.load()
    assert saved is not None and saved.batch_limits.rows == 10**6
    assert_in_sync(deployment, sink, report)


def test_the_observer_hears_of_every_page_once_with_the_checkpoint_of_its_batch() -> None:
    s = build_scenario()
    _, sink, store = fresh()
    log = PageLog()
    report = run_sync(s.deployment, sink, store, BATCHINGS["few-pages"], observer=log)
    assert len(log.pages) == report.snapshot_pages + report.delta_pages
    assert sum(events for _, events, _ in log.pages) == report.events
    batches = log.batches()
    assert sum(1 for _, pages, _ in batches if sum(pages)) == report.batches
    assert [cp.batch_seq for _, pages, cp in batches if sum(pages)] == list(
        range(1, report.batches + 1)
    )
    assert any(len(pages) > 1 for _, pages, _ in batches)
    assert log.pages[-1][2] == store.load() == report.checkpoint
    assert [kind for kind, _, _ in log.pages] == sorted(
        (kind for kind, _, _ in log.pages), key=["snapshot", "delta"].index
    )


def test_a_stop_inside_a_batch_writes_nothing_of_it() -> None:
    deployment, sink, store = _synced_with_backlog()
    before, writes = store.raw, sink.writes
    with pytest.raises(Stopped, match="in the delta phase, behind the server"):
        run_sync(
            deployment,
            sink,
            store,
            SyncOptions(batch_rows=10**6),  # (the first batch: one page, as saved)
            should_stop=lambda: deployment.calls.count("document_deltas") >= 3,
        )
    # The first batch was one page (the saved checkpoint said so); the stop came inside
    # the second, whose pages were dropped.
    assert sink.writes == writes + 1
    saved = store.load()
    assert saved is not None and before is not None
    assert saved.batch_seq == loads_checkpoint(before).batch_seq + 1
    assert_in_sync(deployment, sink, run_sync(deployment, sink, store))
    assert sink.state() == deployment.truth()


def test_a_batch_half_written_by_the_one_page_version_is_replayed_as_one_page() -> None:
    """After an upgrade, a version 1 checkpoint's next batch is one page, as it was."""
    one_page = SyncOptions(batch_rows=1, batch_pages=1)
    deployment, sink, store = _synced_with_backlog()
    injector, start = sink.crash, len(sink.crash.ops)
    run_sync(deployment, sink, store, one_page)
    first_write = next(
        i for i in range(start, len(injector.ops)) if injector.ops[i].kind == "write"
    )

    deployment, sink, store = _synced_with_backlog()
    injector = sink.crash
    injector.target = CrashPoint(first_write, "after")  # written, never checkpointed
    with pytest.raises(SimulatedCrash):
        run_sync(deployment, sink, store, one_page)
    old = json.loads(store.raw or b"")
    del old["batch_limits"], old["selection_fingerprint"]
    old["version"] = 1
    store.raw = json.dumps(old).encode()
    injector.target = None
    replays = sink.replays
    report = run_sync(deployment, sink, store)  # DurableSink: batch n comes back identical
    assert sink.replays == replays + 1
    assert_in_sync(deployment, sink, report)
    assert sink.state() == deployment.truth()


def test_a_stop_during_the_snapshot_walk_ends_it_after_the_batch_in_flight() -> None:
    """A stop is heard between snapshot pages too: the batch being written lands and is
    checkpointed, the one being collected is dropped, and the run says it is behind."""
    deployment = InProcessConvex(snapshot_page_size=2, seed=11)
    for i in range(20):
        deployment.insert("messages", {"n": i})
    _, sink, store = fresh()
    with pytest.raises(Stopped, match="during the snapshot walk; batches up to") as raised:
        run_sync(
            deployment,
            sink,
            store,
            SyncOptions(batch_rows=4),
            should_stop=lambda: sink.writes >= 1,  # pages are fetched ahead: count writes
        )
    assert raised.value.exit_code == 143
    saved = store.load()
    assert saved is not None and saved.phase == "snapshot"
    assert f"batches up to {saved.batch_seq} " in raised.value.message
    assert sink.writes == saved.batch_seq  # nothing beyond the checkpoint was written
    assert_in_sync(deployment, sink, run_sync(deployment, sink, store))
    assert sink.state() == deployment.truth()


def test_a_stop_while_caught_up_ends_the_run_normally() -> None:
    deployment, sink, store = _synced_with_backlog()
    polls = {"n": 0}

    def stop_after_catching_up() -> bool:
        polls["n"] += 1
        return polls["n"] > 50  # long after the 7 backlog pages: idle in follow mode

    report = run_sync(
        deployment,
        sink,
        store,
        SyncOptions(follow=True),
        should_stop=stop_after_catching_up,
        sleep=lambda _: None,
    )
    assert report.checkpoint is not None and report.checkpoint.phase == "delta"
    assert sink.state() == deployment.truth()
