"""Tables dropped at the source, with both APIs: a drop batch of their own before anything
the run reads, crash-safe, and a table created again later is a new table.

The deployment is the devserver's store in process (:mod:`tests.core.in_process_convex`);
the oracle reads the store directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from convex_cdc.core.orchestrator import SyncOptions, SyncReport, run_sync
from convex_cdc.devserver.writes import Delete, Replace
from tests.core.crash_harness import (
    CrashInjector,
    CrashPoint,
    DurableSink,
    MemoryCheckpointStore,
    SimulatedCrash,
)
from tests.core.in_process_convex import InProcessConvex

LEGACY = SyncOptions(api="streaming-export", batch_rows=3)
DATA_SYNC = SyncOptions(api="data-sync", batch_rows=3)
APIS = pytest.mark.parametrize("options", [LEGACY, DATA_SYNC], ids=["legacy", "data-sync"])


@dataclass
class Scenario:
    deployment: InProcessConvex
    messages: list[str]


def build_scenario() -> Scenario:
    """Three root tables and a component table, small pages."""
    deployment = InProcessConvex(snapshot_page_size=2, delta_row_limit=2, data_sync_page_size=2)
    messages = [deployment.insert("messages", {"body": f"m{i}"}) for i in range(4)]
    for name in ("ada", "bob", "cy"):
        deployment.insert("users", {"name": name})
    deployment.insert("audit", {"what": "x"})
    deployment.insert("entries", {"email": "e@x.io"}, "waitlist")
    return Scenario(deployment, messages)


def fresh(
    target: CrashPoint | None = None,
) -> tuple[CrashInjector, DurableSink, MemoryCheckpointStore]:
    injector = CrashInjector(target)
    return injector, DurableSink(injector), MemoryCheckpointStore(injector)


def drop_some(s: Scenario) -> None:
    """Drop a root table and a component table, and change another table after."""
    s.deployment.drop_table("users")
    s.deployment.drop_table("entries", "waitlist")
    s.deployment.transact([Replace("messages", s.messages[0], {"body": "edited"})])
    s.deployment.transact([Delete("messages", s.messages[1])])


def assert_synced(s: Scenario, sink: DurableSink, report: SyncReport) -> None:
    assert report.checkpoint is not None
    assert report.checkpoint.consistent_as_of == s.deployment.latest_ts
    assert sink.state() == s.deployment.truth()
    sink.assert_exactly_once()


@APIS
def test_a_dropped_table_leaves_the_sink_in_a_drop_batch_of_its_own(options: SyncOptions) -> None:
    s = build_scenario()
    _, sink, store = fresh()
    run_sync(s.deployment, sink, store, options)
    drop_some(s)

    report = run_sync(s.deployment, sink, store, options)

    assert_synced(s, sink, report)
    drops = [row for row in sink.rows() if row["_op"] == "drop"]
    assert sorted((r["_component"], r["_table"]) for r in drops) == [
        ("", "users"),
        ("waitlist", "entries"),
    ]
    (seq,) = {row["_batch"] for row in drops}
    assert {row["_op"] for row in sink.rows() if row["_batch"] == seq} == {"drop"}
    checkpoint = store.load()
    assert checkpoint is not None
    assert checkpoint.tables_seen == {"messages", "audit"}

    again = run_sync(s.deployment, sink, store, options)  # nothing left to drop
    assert again.batches == 0 and sum(r["_op"] == "drop" for r in sink.rows()) == 2


@APIS
def test_a_table_created_again_after_its_drop_is_a_new_table(options: SyncOptions) -> None:
    s = build_scenario()
    _, sink, store = fresh()
    run_sync(s.deployment, sink, store, options)
    s.deployment.drop_table("users")
    run_sync(s.deployment, sink, store, options)
    s.deployment.insert("users", {"name": "new"})

    report = run_sync(s.deployment, sink, store, options)

    assert_synced(s, sink, report)
    users = [doc for (_, table, _), doc in sink.state().items() if table == "users"]
    assert len(users) == 1 and '"new"' in users[0]
    checkpoint = store.load()
    assert checkpoint is not None and "users" in checkpoint.tables_seen


def test_a_data_sync_sees_a_table_dropped_and_created_again_between_runs_as_new() -> None:
    s = build_scenario()
    _, sink, store = fresh()
    run_sync(s.deployment, sink, store, DATA_SYNC)
    s.deployment.drop_table("users")
    s.deployment.insert("users", {"name": "new"})

    report = run_sync(s.deployment, sink, store, DATA_SYNC)

    assert_synced(s, sink, report)  # a truncate and a walk: the old rows go
    assert not any(row["_op"] == "drop" for row in sink.rows())


@APIS
def test_a_resnapshot_of_a_deployment_whose_tables_were_all_dropped_empties_it(
    options: SyncOptions,
) -> None:
    s = build_scenario()
    _, sink, store = fresh()
    run_sync(s.deployment, sink, store, options)
    for table in ("messages", "users", "audit"):
        s.deployment.drop_table(table)
    s.deployment.drop_table("entries", "waitlist")

    report = run_sync(
        s.deployment, sink, store, SyncOptions(api=options.api, resnapshot=True, batch_rows=3)
    )

    assert report.started_new_snapshot
    assert sink.state() == s.deployment.truth() == {}
    checkpoint = store.load()
    assert checkpoint is not None and checkpoint.tables_seen == frozenset()


@APIS
def test_a_table_dropped_during_a_resnapshot_goes_before_the_new_walk(
    options: SyncOptions,
) -> None:
    s = build_scenario()
    _, sink, store = fresh()
    run_sync(s.deployment, sink, store, options)
    s.deployment.drop_table("users")

    report = run_sync(
        s.deployment, sink, store, SyncOptions(api=options.api, resnapshot=True, batch_rows=3)
    )

    assert_synced(s, sink, report)
    rows = sink.rows()
    first_drop = next(i for i, row in enumerate(rows) if row["_op"] == "drop")
    assert all(row["_op"] == "drop" or row["_batch"] > rows[first_drop]["_batch"]
               for row in rows[first_drop:])  # fmt: skip


def _crash_points(options: SyncOptions) -> list[CrashPoint]:
    s = build_scenario()
    injector, sink, store = fresh()
    run_sync(s.deployment, sink, store, options)
    first = len(injector.ops)
    drop_some(s)
    run_sync(s.deployment, sink, store, options)
    return [point for point in injector.points() if point.op >= first]


POINTS = [
    (name, options, point)
    for name, options in (("legacy", LEGACY), ("data-sync", DATA_SYNC))
    for point in _crash_points(options)
]
CRASH_POINTS = [
    pytest.param(options, point, id=f"{name}-op{point.op:02d}-{point.phase}")
    for name, options, point in POINTS
]


def test_the_crash_points_cover_the_drop_batch() -> None:
    assert any(point.phase == "inside:1" for _, _, point in POINTS)


@pytest.mark.parametrize(("options", "point"), CRASH_POINTS)
def test_a_crash_anywhere_around_a_drop_then_a_restart_yields_the_source_state(
    options: SyncOptions, point: CrashPoint
) -> None:
    s = build_scenario()
    injector, sink, store = fresh()
    run_sync(s.deployment, sink, store, options)
    drop_some(s)
    injector.target = point
    with pytest.raises(SimulatedCrash):
        run_sync(s.deployment, sink, store, options)
    injector.target = None

    report = run_sync(s.deployment, sink, store, options)

    assert_synced(s, sink, report)
    assert sum(row["_op"] == "drop" for row in sink.rows()) == 2
    saved = store.load()
    assert saved is not None and saved.tables_seen == {"messages", "audit"}
