"""verify: staging vs a fresh snapshot walk of an in-memory source."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from convex_cdc.core.errors import ConfigError
from convex_cdc.core.names import TableKey
from convex_cdc.core.orchestrator import run_sync
from convex_cdc.core.selection import Selection
from convex_cdc.core.source import DeltaPage, SnapshotPage
from convex_cdc.devserver.writes import Delete, Insert
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.raw.change_log import RawChangeLogSink
from convex_cdc.target_s3.staging.materializer import StagingMaterializer
from convex_cdc.target_s3.staging.state import load_staging_state, save_staging_state
from convex_cdc.target_s3.staging.verify import verify
from tests.core.in_process_convex import InProcessConvex
from tests.target_s3.handmade_staging import DEPLOYMENT, write_staging

NAN = {"$float": "AAAAAAAA+H8="}
POS_INF = {"$float": "AAAAAAAA8H8="}
NEG_INF = {"$float": "AAAAAAAA8P8="}


class FakeSource:
    """A Convex deployment in memory: paged list_snapshot, one table per page."""

    def __init__(
        self, tables: Mapping[str, Sequence[Mapping[str, Any]]], *, page_size: int = 3
    ) -> None:
        self.tables = {k: [dict(d) for d in v] for k, v in tables.items()}
        self.page_size = page_size
        self.now = 5_000
        self.calls: list[tuple[int | None, str | None]] = []

    @property
    def deployment_url(self) -> str:
        return DEPLOYMENT

    def test_connection(self) -> None:
        return None

    def json_schemas(self) -> dict[str, dict[str, Any]]:
        return {}

    def list_snapshot(
        self, *, snapshot: int | None, cursor: str | None, selection: Selection | None
    ) -> SnapshotPage:
        self.calls.append((snapshot, cursor))
        names = sorted(self.tables)
        table_no, offset = (0, 0) if cursor is None else map(int, cursor.split(":"))
        name = names[table_no] if names else None
        values: list[dict[str, Any]] = []
        if name is not None:
            component, table = TableKey.parse(name).component, TableKey.parse(name).table
            for doc in self.tables[name][offset : offset + self.page_size]:
                values.append({"_component": component, "_table": table, "_ts": 7, **doc})
            offset += self.page_size
            if offset >= len(self.tables[name]):
                table_no, offset = table_no + 1, 0
        has_more = table_no < len(names)
        body = json.dumps(values, default=str)
        return SnapshotPage(
            values=copy.deepcopy(values),
            snapshot=self.now if snapshot is None else snapshot,
            cursor=f"{table_no}:{offset}" if has_more else None,
            has_more=has_more,
            response_bytes=len(body),
        )

    def document_deltas(self, *, cursor: int, selection: Selection | None) -> DeltaPage:
        raise AssertionError("verify never reads deltas")


def docs() -> dict[str, list[dict[str, Any]]]:
    return {
        "messages": [
            {
                "_id": f"m{i}",
                "_creationTime": 1_700_000_000_000.25 + i,
                "body": f"hi {i}",
                "n": i,
                "tags": ["a", {"b": i}] if i % 2 else None,
            }
            for i in range(10)
        ],
        "waitlist/entries": [
            {"_id": "w1", "_creationTime": 1.5, "email": "a@b"},
            {"_id": "w2", "_creationTime": 2.5},
        ],
    }


def test_a_faithful_staging_verifies_ok(tmp_path: Path) -> None:
    write_staging(tmp_path, docs())
    source = FakeSource(docs())

    report = verify(DestinationLayout.at(tmp_path), source)

    assert report.ok, report.summary()
    assert [t.key.qualified for t in report.tables] == ["messages", "waitlist/entries"]
    assert report.table("messages").source_rows == report.table("messages").staging_rows == 10
    assert report.source_snapshot_ts == 5_000
    assert "staging matches the source" in report.summary()
    # The walk is pinned at the first page's snapshot, like the orchestrator's.
    assert source.calls[0] == (None, None)
    assert all(snapshot == 5_000 for snapshot, _ in source.calls[1:])
    assert len(source.calls) == report.source_pages > 2


def test_one_tampered_value_in_a_staging_file_is_one_differing_row(tmp_path: Path) -> None:
    state = write_staging(tmp_path, docs(), segments=1)
    (file,) = state.tables[0].files
    rows = pq.read_table(tmp_path / file.path)
    body = rows.column("body").to_pylist()
    body[4] = "tampered"
    pq.write_table(
        rows.set_column(rows.schema.get_field_index("body"), "body", pa.array(body)),
        tmp_path / file.path,
    )

    report = verify(DestinationLayout.at(tmp_path), FakeSource(docs()))

    assert not report.ok
    (bad,) = report.differing_tables
    assert bad.key == TableKey("", "messages")
    assert bad.changed == 1 and bad.differing_rows == 1
    assert "messages: 1 differing row (1 changed)" in report.summary()
    assert rows.column("_id")[4].as_py() in bad.examples


def test_missing_and_extra_rows_are_counted(tmp_path: Path) -> None:
    write_staging(tmp_path, docs())
    source_docs = docs()
    del source_docs["messages"][2:5]  # deleted in the source, still in staging
    source_docs["messages"].append({"_id": "m-new", "_creationTime": 9.0, "body": "new"})
    source_docs["fresh"] = [{"_id": "f1", "x": 1}, {"_id": "f2", "x": 2}]

    report = verify(DestinationLayout.at(tmp_path), FakeSource(source_docs))

    messages = report.table("messages")
    assert (messages.only_in_staging, messages.only_in_source, messages.changed) == (3, 1, 0)
    assert messages.differing_rows == 4
    fresh = report.table("fresh")
    assert fresh.only_in_source == 2 and fresh.staging_state_rows is None
    assert report.table("waitlist/entries").ok
    assert "messages: 4 differing rows (1 only in source, 3 only in staging)" in report.summary()


def test_special_floats_bytes_and_int64_extremes_compare_equal(tmp_path: Path) -> None:
    special = {
        "values": [
            {"_id": "a", "f": NAN, "g": -0.0, "i": 2**63 - 1, "b": {"$bytes": "AAEC/w=="}},
            {"_id": "b", "f": POS_INF, "g": 0.0, "i": -(2**63), "b": {"$bytes": ""}},
            {"_id": "c", "f": NEG_INF, "g": 1e-310, "i": 0, "b": {"$bytes": "3q2+7w=="}},
            {"_id": "d", "f": 1e21, "g": 5e-324, "i": -1, "mixed": [NAN, {"$bytes": "AA=="}]},
            {"_id": "e", "mixed": "now a string", "flag": True, "nothing": None},
        ]
    }
    write_staging(tmp_path, special)
    report = verify(DestinationLayout.at(tmp_path), FakeSource(special))
    assert report.ok, report.summary()


def test_minus_zero_is_not_zero(tmp_path: Path) -> None:
    write_staging(tmp_path, {"t": [{"_id": "a", "g": 0.0, "h": 1.0}]})
    report = verify(
        DestinationLayout.at(tmp_path), FakeSource({"t": [{"_id": "a", "g": -0.0, "h": 1.0}]})
    )
    assert report.table("t").changed == 1


def test_a_field_that_is_null_in_the_source_matches_a_missing_one(tmp_path: Path) -> None:
    write_staging(tmp_path, {"t": [{"_id": "a", "x": 1}, {"_id": "b", "x": 2}]})
    report = verify(
        DestinationLayout.at(tmp_path),
        FakeSource({"t": [{"_id": "a", "x": 1}, {"_id": "b", "x": 2, "y": None}]}),
    )
    assert report.ok


def test_a_wrong_row_count_in_the_staging_state_is_reported(tmp_path: Path) -> None:
    state = write_staging(tmp_path, docs())
    broken = replace(state, tables=(replace(state.tables[0], row_count=11), *state.tables[1:]))
    save_staging_state(tmp_path / "staging" / "_state.json", broken)
    report = verify(DestinationLayout.at(tmp_path), FakeSource(docs()))
    assert not report.ok
    assert "the staging state counts 11 rows, its files hold 10" in report.summary()


def test_verify_refuses_a_staging_that_is_mid_snapshot(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no staging yet"):
        verify(DestinationLayout.at(tmp_path), FakeSource(docs()))
    write_staging(tmp_path, docs(), consistent_as_of_ts=None)
    with pytest.raises(ConfigError, match="initial snapshot is incomplete"):
        verify(DestinationLayout.at(tmp_path), FakeSource(docs()))


def test_a_walk_can_be_pinned_at_the_staging_timestamp(tmp_path: Path) -> None:
    write_staging(tmp_path, docs(), consistent_as_of_ts=4_000)
    source = FakeSource(docs())
    report = verify(DestinationLayout.at(tmp_path), source, at_ts=4_000)
    assert report.ok
    assert {snapshot for snapshot, _ in source.calls} == {4_000}


def _synced_and_materialized(dest: Path, convex: InProcessConvex) -> None:
    layout = DestinationLayout.at(dest)
    run_sync(convex, RawChangeLogSink(layout), FileCheckpointStore(layout))
    StagingMaterializer(layout).materialize()


def test_staging_built_by_the_real_pipeline_verifies_and_later_writes_show(
    tmp_path: Path,
) -> None:
    convex = InProcessConvex(snapshot_page_size=4, delta_row_limit=5)
    for i in range(9):
        convex.insert("messages", {"body": f"m{i}", "n": i, "f": [float("nan"), -0.0][i % 2]})
    convex.insert("files", {"blob": b"\x00\x01\xff", "big": 2**63 - 1, "nested": {"x": [1, b"z"]}})
    doomed = convex.insert("messages", {"body": "to delete"})
    _synced_and_materialized(tmp_path, convex)  # snapshot walk
    convex.transact([Delete("messages", doomed), Insert("messages", {"body": "late", "n": -1})])
    _synced_and_materialized(tmp_path, convex)  # deltas
    state = load_staging_state(tmp_path / "staging" / "_state.json")
    assert state is not None and state.consistent_as_of_ts is not None

    report = verify(DestinationLayout.at(tmp_path), convex)
    assert report.ok, report.summary()
    assert report.table("messages").source_rows == 10

    convex.insert("messages", {"body": "after staging"})
    behind = verify(DestinationLayout.at(tmp_path), convex)
    assert behind.table("messages").only_in_source == 1
    assert "writes in between also show up here" in behind.summary()
    pinned = verify(DestinationLayout.at(tmp_path), convex, at_ts=state.consistent_as_of_ts)
    assert pinned.ok, pinned.summary()
