"""extract → apply-silver against an in-process devserver, with crashes anywhere.

The oracle: whatever happened before, once an extract completes, bronze holds every
document version of the current walk exactly once and silver equals the deployment.
(The end-to-end tests in tests/e2e do the same over HTTP, with SIGKILL.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from convex_cdc.core.checkpoint import Checkpoint, SourceIdentity
from convex_cdc.core.names import TableKey
from convex_cdc.core.orchestrator import SyncOptions
from convex_cdc.devserver.writes import Delete, Insert, Replace
from convex_cdc.platform.databricks import extractor as extractor_module
from convex_cdc.platform.databricks.bronze import BronzeSink
from convex_cdc.platform.databricks.control_table import DeltaCheckpointStore
from convex_cdc.platform.databricks.delta_read import open_table, read_table
from convex_cdc.platform.databricks.extractor import ExtractResult, extract
from convex_cdc.platform.databricks.silver import apply_silver, read_silver
from convex_cdc.platform.databricks.table_spec import TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.core.in_process_convex import InProcessConvex
from tests.platform.databricks.change_batches import (
    SOURCE_NAME,
    expected_silver,
    parse,
    silver_as_dicts,
)


class Crash(Exception):
    """The process died here."""


def deployment() -> InProcessConvex:
    convex = InProcessConvex(snapshot_page_size=3, delta_row_limit=4, seed=11)
    messages = [convex.insert("messages", {"body": f"m{i}", "n": i}) for i in range(7)]
    users = [convex.insert("users", {"name": n, "score": 1.5}) for n in ("ada", "bob")]
    convex.insert("entries", {"email": "e@x.io", "blob": b"\x00\x01"}, "waitlist")
    convex.schedule(
        [
            [Replace("users", users[0], {"name": "ada2", "score": float("nan")})],
            [Delete("messages", messages[1]), Insert("messages", {"body": "x", "n": 2**60})],
            [Delete("users", users[1]), Insert("entries", {"email": "f@x.io"}, "waitlist")],
        ]
    )
    return convex


def more_writes(convex: InProcessConvex) -> None:
    live = convex.live_ids("messages")
    convex.transact([Delete("messages", live[0]), Replace("messages", live[1], {"body": "y"})])
    convex.transact([Insert("messages", {"body": "new", "n": -1, "tags": ["a"]})])
    convex.transact([Delete("entries", convex.live_ids("entries", "waitlist")[0], "waitlist")])


def assert_silver_equals_truth(warehouse: Warehouse, convex: InProcessConvex) -> None:
    apply_silver(warehouse)
    truth: dict[TableKey, list[tuple[str, int, dict[str, Any]]]] = {}
    for (component, name, doc_id), text in convex.truth().items():
        truth.setdefault(TableKey(component, name), []).append((doc_id, 0, parse(text)))
    specs = TableSpecStore(warehouse).load()
    assert set(truth) <= set(specs)
    for key, spec in specs.items():
        table = read_silver(warehouse, key)
        assert table is not None, key
        rows = silver_as_dicts(table)
        for row in rows.values():
            row.pop("_ts")
        expected = expected_silver(truth.get(key, []), spec.columns)
        for row in expected.values():
            row.pop("_ts")
        assert rows == expected, key


def assert_bronze_exactly_once(warehouse: Warehouse) -> None:
    for key in TableSpecStore(warehouse).load():
        table = open_table(warehouse.bronze(key), warehouse)
        if table is None:
            continue
        rows = read_table(table, columns=["_id", "_ts"])
        ids, tss = rows.column("_id").to_pylist(), rows.column("_ts").to_pylist()
        versions = Counter(zip(ids, tss, strict=True))
        assert [v for v, n in versions.items() if n > 1] == [], key


def test_extract_then_apply_silver_equals_the_deployment(warehouse: Warehouse) -> None:
    convex = deployment()

    first = extract(convex, warehouse)
    assert first.sync.started_new_snapshot and first.bronze_commits > 0
    more_writes(convex)
    second = extract(convex, warehouse)

    assert not second.sync.started_new_snapshot and second.sync.deletes == 2
    assert_bronze_exactly_once(warehouse)
    assert_silver_equals_truth(warehouse, convex)
    specs = TableSpecStore(warehouse).load()
    assert specs[TableKey("", "messages")].columns["tags"].value == "json"
    assert specs[TableKey("waitlist", "entries")].columns["blob"].value == "binary"


def test_a_resnapshot_reloads_silver_without_stale_rows(warehouse: Warehouse) -> None:
    convex = deployment()
    extract(convex, warehouse)
    apply_silver(warehouse)
    more_writes(convex)

    extract(convex, warehouse, SyncOptions(resnapshot=True))

    assert_silver_equals_truth(warehouse, convex)


class _CrashingSink(BronzeSink):
    def __init__(self, *args: Any, crash: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._crash = crash

    def _append(self, key: TableKey, rows: Any, seq: int, metadata: dict[str, str]) -> None:
        self._crash("before")
        super()._append(key, rows, seq, metadata)
        self._crash("after")


class _CrashingStore(DeltaCheckpointStore):
    def __init__(self, *args: Any, crash: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._crash = crash

    def save(self, checkpoint: Checkpoint) -> None:
        self._crash("before")
        super().save(checkpoint)
        self._crash("after")


class _Plan:
    """Counts durable operations (table appends, checkpoint saves); dies at one of them."""

    def __init__(self, target: tuple[int, str] | None) -> None:
        self.target = target
        self.ops = 0

    def __call__(self, phase: str) -> None:
        if phase == "before":
            self.ops += 1
        if self.target == (self.ops, phase):
            raise Crash(f"op {self.ops} {phase}")


def run_with(plan: _Plan, monkeypatch: pytest.MonkeyPatch) -> Callable[..., ExtractResult]:
    def sink(warehouse: Warehouse, source: SourceIdentity, **kw: Any) -> BronzeSink:
        return _CrashingSink(warehouse, source, crash=plan, **kw)

    def store(warehouse: Warehouse, source: SourceIdentity, **kw: Any) -> DeltaCheckpointStore:
        return _CrashingStore(warehouse, source, crash=plan, **kw)

    monkeypatch.setattr(extractor_module, "BronzeSink", sink)
    monkeypatch.setattr(extractor_module, "DeltaCheckpointStore", store)
    return extract


# 3-document pages, batches of 2 pages (spanning tables); the restart is given other
# limits, yet replays the first batch as the crashed run cut it.
CRASHING_RUN = SyncOptions(batch_rows=4)
RESTART = SyncOptions()


def test_a_crash_at_any_append_or_save_then_a_restart_converges(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    dry = _Plan(None)
    run_with(dry, monkeypatch)(
        deployment(),
        Warehouse.from_uri(str(tmp_path / "dry"), source_name=SOURCE_NAME),
        CRASHING_RUN,
    )
    points = [(op, phase) for op in range(1, dry.ops + 1) for phase in ("before", "after")]
    assert len(points) >= 20

    recoveries = Counter[str]()
    for n, point in enumerate(points):
        target = Warehouse.from_uri(str(tmp_path / f"w{n}"), source_name=SOURCE_NAME)
        convex = deployment()
        with pytest.raises(Crash):
            run_with(_Plan(point), monkeypatch)(convex, target, CRASHING_RUN)
        result = run_with(_Plan(None), monkeypatch)(convex, target, RESTART)  # it completes

        assert_bronze_exactly_once(target)
        assert_silver_equals_truth(target, convex)
        recoveries.update(
            ["reconciled"] * result.reconciled + ["skipped"] * (result.skipped_appends > 0)
        )
    # Both recovery paths were exercised: a lost save adopted from bronze, a replay skipped.
    assert recoveries["reconciled"] > 0 and recoveries["skipped"] > 0
