"""A source followed with Data Sync: the walk and the changes in one stream, truncates
first in their batch, batches adopted (never replayed) after a crash, and a legacy
destination switched over without reading anything again.

The deployment is the devserver's own store and Data Sync endpoints, in process
(:mod:`tests.core.in_process_convex`); the oracle reads the store directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from convex_cdc.core.checkpoint import Checkpoint, DataSync, DeltaTail
from convex_cdc.core.errors import ConfigError
from convex_cdc.core.orchestrator import SyncOptions, SyncReport, run_sync
from convex_cdc.core.selection import Selection
from convex_cdc.devserver.writes import Delete, Insert, Replace, Write
from tests.core.crash_harness import (
    CrashInjector,
    CrashPoint,
    DurableSink,
    MemoryCheckpointStore,
    SimulatedCrash,
)
from tests.core.in_process_convex import InProcessConvex

DATA_SYNC = SyncOptions(api="data-sync", batch_rows=3)


@dataclass
class Scenario:
    deployment: InProcessConvex
    messages: list[str]
    users: list[str]


def build_scenario(*, with_import: bool = True) -> Scenario:
    """Two tables and a component table, 2-document pages, writes landing mid-sync and a
    table replaced by an import (a truncate) while the walk runs."""
    deployment = InProcessConvex(data_sync_page_size=2, seed=11)
    messages = [deployment.insert("messages", {"body": f"m{i}", "n": i}) for i in range(5)]
    users = [deployment.insert("users", {"name": n}) for n in ("ada", "bob", "cy")]
    deployment.insert("entries", {"email": "e@x.io"}, "waitlist")
    deployment.schedule(
        [
            [Replace("messages", messages[0], {"body": "edited", "n": 2**60})],
            [Delete("messages", messages[1]), Insert("users", {"name": "dee"})],
            lambda d: _import_users(d) if with_import else [],
            [Insert("created_later", {"x": 1})],
            [Delete("messages", messages[2])],
        ]
    )
    return Scenario(deployment, messages, users)


def _import_users(deployment: InProcessConvex) -> list[Write]:
    deployment.replace_table("users", [{"name": "imported"}])
    return []  # the import is its own transaction


def fresh(
    target: CrashPoint | None = None,
) -> tuple[CrashInjector, DurableSink, MemoryCheckpointStore]:
    injector = CrashInjector(target)
    return injector, DurableSink(injector), MemoryCheckpointStore(injector)


def assert_consistent(deployment: InProcessConvex, sink: DurableSink, report: SyncReport) -> int:
    """The sink holds exactly the deployment's state at the checkpoint's snapshot."""
    checkpoint = report.checkpoint
    assert checkpoint is not None and isinstance(checkpoint.position, DataSync)
    assert checkpoint.position.status == "upToDate"
    as_of = checkpoint.consistent_as_of
    assert as_of is not None
    assert sink.state() == deployment.state_at(as_of)
    sink.assert_exactly_once()
    return as_of


def test_a_data_sync_lands_the_deployment_and_follows_its_changes() -> None:
    s = build_scenario()
    _, sink, store = fresh()

    report = run_sync(s.deployment, sink, store, DATA_SYNC)

    assert report.api == "data-sync" and report.started_new_snapshot
    assert "list_snapshot" not in s.deployment.calls
    assert_consistent(s.deployment, sink, report)
    s.deployment.transact([Delete("messages", s.messages[3]), Insert("later", {"y": 2})])
    report = run_sync(s.deployment, sink, store, DATA_SYNC)
    assert assert_consistent(s.deployment, sink, report) == s.deployment.latest_ts
    assert sink.state() == s.deployment.truth()


def test_truncates_open_their_batch_and_replace_what_earlier_batches_hold() -> None:
    s = build_scenario()
    _, sink, store = fresh()
    run_sync(s.deployment, sink, store, DATA_SYNC)

    rows = sink.rows()
    truncated = [(r["_batch"], r["_table"]) for r in rows if r["_op"] == "truncate"]
    # A cold start truncates each table once, and the import truncates users again.
    assert sorted(t for _, t in truncated).count("users") == 2
    for batch, table in truncated:
        ops = [r["_op"] for r in rows if (r["_batch"], r["_table"]) == (batch, table)]
        assert ops[0] == "truncate" and "truncate" not in ops[1:]
    users = {doc for (_, table, _), doc in sink.state().items() if table == "users"}
    assert users == {d for (_, t, _), d in s.deployment.truth().items() if t == "users"}
    assert len(users) == 1  # only the imported document


def _crash_points() -> list[CrashPoint]:
    s = build_scenario()
    injector, sink, store = fresh()
    run_sync(s.deployment, sink, store, DATA_SYNC)
    return injector.points()


CRASH_POINTS = _crash_points()


def test_the_crash_points_cover_multi_table_batches() -> None:
    assert len(CRASH_POINTS) > 12
    assert any(point.phase.startswith("inside") for point in CRASH_POINTS)


@pytest.mark.parametrize("point", CRASH_POINTS, ids=lambda p: f"op{p.op:02d}-{p.phase}")
def test_a_crash_anywhere_then_a_restart_yields_the_source_state(point: CrashPoint) -> None:
    """A batch that landed whole is adopted; one that did not is fetched anew (other
    pages, same number); nothing lands twice and nothing is lost."""
    s = build_scenario()
    injector, sink, store = fresh(point)
    with pytest.raises(SimulatedCrash):
        run_sync(s.deployment, sink, store, DATA_SYNC)
    s.deployment.transact([Replace("messages", s.messages[4], {"body": "while down"})])
    injector.target = None

    report = run_sync(s.deployment, sink, store, SyncOptions(api="auto", batch_rows=5))

    assert report.api == "data-sync"
    crashed = injector.ops[point.op]
    if crashed.kind == "write" and point.phase == "after":
        assert report.adopted_batches == 1  # landed whole: adopted, not fetched again
    assert assert_consistent(s.deployment, sink, report) == s.deployment.latest_ts
    assert sink.state() == s.deployment.truth()
    saved = store.load()
    assert saved is not None and saved.batch_seq == max(seq for seq, _ in sink.files)


def test_a_legacy_destination_switches_to_data_sync_without_reading_anything_again() -> None:
    s = build_scenario(with_import=False)  # the legacy API cannot see an import
    _, sink, store = fresh()
    legacy = run_sync(s.deployment, sink, store, SyncOptions(api="streaming-export"))
    assert legacy.api == "streaming-export"
    assert isinstance(store.load().position, DeltaTail)  # type: ignore[union-attr]
    s.deployment.transact([Delete("messages", s.messages[3])])
    calls_before = len(s.deployment.calls)

    report = run_sync(s.deployment, sink, store, SyncOptions(api="auto"))

    calls = s.deployment.calls[calls_before:]
    assert report.converted_to_data_sync and "data_sync_cursor_from_deltas" in calls
    assert "list_snapshot" not in calls
    assert report.events == 1 and report.deletes == 1  # only the change since
    assert not [r for r in sink.rows() if r["_op"] == "truncate"]
    assert sink.state() == s.deployment.truth()


def test_auto_keeps_the_legacy_api_where_data_sync_is_not_offered() -> None:
    deployment = InProcessConvex(data_sync=False)
    deployment.insert("messages", {"body": "hi"})
    _, sink, store = fresh()

    report = run_sync(deployment, sink, store, SyncOptions(api="auto"))

    assert report.api == "streaming-export"
    assert sink.state() == deployment.truth()


def test_a_data_sync_destination_refuses_the_legacy_api_unless_it_starts_over() -> None:
    deployment = InProcessConvex()
    deployment.insert("messages", {"body": "hi"})
    _, sink, store = fresh()
    run_sync(deployment, sink, store, DATA_SYNC)

    with pytest.raises(ConfigError, match="follows a data sync"):
        run_sync(deployment, sink, store, SyncOptions(api="streaming-export"))
    report = run_sync(deployment, sink, store, SyncOptions(api="streaming-export", resnapshot=True))
    assert report.api == "streaming-export" and sink.state() == deployment.truth()


def test_an_empty_batch_still_moves_the_cursor() -> None:
    """A quiet deployment must not strand its cursor outside the server's retention."""
    deployment = InProcessConvex()
    deployment.insert("messages", {"body": "hi"})
    _, sink, store = fresh()
    run_sync(deployment, sink, store, DATA_SYNC)
    before = store.load()
    deployment.transact([Insert("_scheduled_functions", {"name": "cron"})])  # not exported

    run_sync(deployment, sink, store, DATA_SYNC)

    after = store.load()
    assert isinstance(before, Checkpoint) and isinstance(after, Checkpoint)
    assert after.batch_seq == before.batch_seq
    assert after.position != before.position
    assert after.consistent_as_of == deployment.latest_ts


def test_a_newly_selected_table_is_walked_by_the_data_sync_itself() -> None:
    deployment = InProcessConvex(data_sync_page_size=2)
    for i in range(3):
        deployment.insert("messages", {"n": i})
        deployment.insert("users", {"n": i})
    _, sink, store = fresh()
    only_messages = Selection.from_patterns(include=("messages",), exclude=())
    run_sync(deployment, sink, store, SyncOptions(api="data-sync", selection=only_messages))
    assert {t for (_, t, _) in sink.state()} == {"messages"}

    run_sync(deployment, sink, store, SyncOptions(api="data-sync"))

    assert sink.state() == deployment.truth()


def test_following_sleeps_only_once_caught_up() -> None:
    deployment = InProcessConvex(data_sync_page_size=2)
    for i in range(5):
        deployment.insert("messages", {"n": i})
    _, sink, store = fresh()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            deployment.insert("messages", {"n": 99})

    run_sync(
        deployment,
        sink,
        store,
        SyncOptions(api="data-sync", follow=True, batch_rows=2),
        should_stop=lambda: len(sleeps) >= 3,
        sleep=sleep,
    )

    assert len(sleeps) == 3
    assert sink.state() == deployment.truth()


def _pending_points() -> list[CrashPoint]:
    s = build_scenario(with_import=False)
    injector, sink, store = fresh()
    run_sync(s.deployment, sink, store, SyncOptions(api="streaming-export"))
    s.deployment.transact([Replace("messages", s.messages[3], {"body": "pending"})])
    first = len(injector.ops)
    run_sync(s.deployment, sink, store, SyncOptions(api="streaming-export"))
    return [CrashPoint(p.op - first, p.phase) for p in injector.points() if p.op >= first]


@pytest.mark.parametrize("point", _pending_points(), ids=lambda p: f"op{p.op:02d}-{p.phase}")
def test_a_legacy_run_crashed_anywhere_then_switched_to_data_sync_loses_nothing(
    point: CrashPoint,
) -> None:
    """Including a crash with an exhausting delta batch recorded as pending: landed whole
    it is adopted, otherwise its changes come again through the data sync."""
    s = build_scenario(with_import=False)
    injector, sink, store = fresh()
    run_sync(s.deployment, sink, store, SyncOptions(api="streaming-export"))
    s.deployment.transact([Replace("messages", s.messages[3], {"body": "pending"})])
    injector.target = CrashPoint(len(injector.ops) + point.op, point.phase)
    with pytest.raises(SimulatedCrash):
        run_sync(s.deployment, sink, store, SyncOptions(api="streaming-export"))
    injector.target = None

    report = run_sync(s.deployment, sink, store, SyncOptions(api="auto"))

    assert report.api == "data-sync"
    assert sink.state() == s.deployment.truth()
