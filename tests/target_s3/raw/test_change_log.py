"""The raw change log sink: durable per-table files, replay-safe, hostile-name-safe."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from convex_cdc.core.checkpoint_json import checkpoint_to_json
from convex_cdc.core.errors import StateError, TargetError
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA, ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.raw import change_log
from convex_cdc.target_s3.raw.change_log import RawChangeLog, RawChangeLogSink, read_file_metadata
from tests.target_s3.change_batches import ScriptedSync, doc, key, tombstone

FINGERPRINT = "sha256:" + "ab" * 32


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_batch_lands_as_one_file_per_table_plus_an_index(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10, body="hi")]], snapshot_ts=50)
    batch = sync.delta(
        [
            doc("messages", "m2", 60, body="yo"),
            doc("entries", "e1", 61, component="waitlist", n=1),
            tombstone("messages", "m1", 62),
        ]
    )
    assert batch is not None and batch.seq == 2
    assert _files(tmp_path / "raw_change_log") == [
        "_batches/000000000001.json",
        "_batches/000000000002.json",
        "messages/batch=000000000001.parquet",
        "messages/batch=000000000002.parquet",
        "waitlist.entries/batch=000000000002.parquet",
    ]
    rows = pq.read_table(tmp_path / "raw_change_log/messages/batch=000000000002.parquet")
    assert rows.schema.equals(RAW_CHANGE_LOG_SCHEMA, check_metadata=False)
    assert rows.select(["_id", "_ts", "_deleted", "_op", "_batch"]).to_pylist() == [
        {"_id": "m2", "_ts": 60, "_deleted": False, "_op": "upsert", "_batch": 2},
        {"_id": "m1", "_ts": 62, "_deleted": True, "_op": "delete", "_batch": 2},
    ]
    assert rows.column("document").to_pylist()[1] is None
    assert (
        pq.ParquetFile(tmp_path / "raw_change_log/messages/batch=000000000002.parquet")
        .metadata.row_group(0)
        .column(0)
        .compression
        == "ZSTD"
    )


def test_the_index_lists_every_table_file_with_counts_and_the_checkpoint(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10)]], snapshot_ts=50)
    batch = sync.delta(
        [doc("messages", "m2", 60), tombstone("messages", "m1", 70), doc("users", "u1", 65)],
        cursor=80,
    )
    assert batch is not None
    index = json.loads((tmp_path / "raw_change_log/_batches/000000000002.json").read_text())
    assert index["seq"] == 2 and index["kind"] == "delta" and index["snapshot_ts"] is None
    assert [t.pop("bytes") for t in index["tables"]] == [
        (tmp_path / "raw_change_log" / t["dir"] / t["file"]).stat().st_size for t in index["tables"]
    ]
    assert all(len(t.pop("sha256")) == 64 for t in index["tables"])
    assert index["previous"] == 1
    assert index["tables"] == [
        {"component": "", "table": "messages", "dir": "messages",
         "file": "batch=000000000002.parquet", "rows": 2, "deletes": 1,
         "min_ts": 60, "max_ts": 70},
        {"component": "", "table": "users", "dir": "users",
         "file": "batch=000000000002.parquet", "rows": 1, "deletes": 0,
         "min_ts": 65, "max_ts": 65},
    ]  # fmt: skip
    assert index["checkpoint"] == checkpoint_to_json(batch.checkpoint)
    assert index["checkpoint"]["position"] == {"DeltaTail": {"cursor": 80}}


def test_file_metadata_records_format_batch_fingerprint_and_checkpoint(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path, fingerprints={"messages": FINGERPRINT})
    (batch,) = sync.snapshot([[doc("messages", "m1", 10), doc("users", "u1", 11)]], snapshot_ts=50)
    messages = read_file_metadata(tmp_path / "raw_change_log/messages/batch=000000000001.parquet")
    users = read_file_metadata(tmp_path / "raw_change_log/users/batch=000000000001.parquet")
    assert messages == {
        "wire_format": "export_json",
        "batch_seq": "1",
        "batch_kind": "snapshot",
        "snapshot_ts": "50",
        "schema_fingerprint": FINGERPRINT,
        "checkpoint": json.dumps(checkpoint_to_json(batch.checkpoint), sort_keys=True),
    }
    assert "schema_fingerprint" not in users  # json_schemas did not describe it
    assert json.loads(messages["checkpoint"])["position"] == {"DeltaTail": {"cursor": 50}}


def test_writing_the_same_batch_again_changes_nothing(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10)]], snapshot_ts=50)
    batch = sync.delta([doc("messages", "m2", 60), doc("users", "u1", 61)])
    assert batch is not None
    before = {
        p: (tmp_path / "raw_change_log" / p).read_bytes()
        for p in _files(tmp_path / "raw_change_log")
    }
    RawChangeLogSink(DestinationLayout.at(tmp_path)).write(batch)
    RawChangeLogSink(DestinationLayout.at(tmp_path)).write(batch)
    after = {
        p: (tmp_path / "raw_change_log" / p).read_bytes()
        for p in _files(tmp_path / "raw_change_log")
    }
    assert after == before


def _batch_with_table(template: ChangeBatch, table: str) -> ChangeBatch:
    events = template.events.set_column(
        1,
        RAW_CHANGE_LOG_SCHEMA.field("_table"),
        pa.array([table] * template.num_events, pa.string()),
    )
    return ChangeBatch(
        seq=template.seq + 1,
        kind=template.kind,
        events=pa.concat_tables([template.events, events]),
        checkpoint=template.checkpoint,
        snapshot_ts=template.snapshot_ts,
        wire_format=template.wire_format,
        response_bytes=0,
    )


@pytest.mark.parametrize(
    "hostile",
    ["../../etc", "a/b", "..", "x" * 300, "\x00"],
    ids=["parent-escape", "separator", "dotdot", "300-chars", "nul"],
)
def test_a_hostile_table_name_is_refused_before_anything_is_written(
    tmp_path: Path, hostile: str
) -> None:
    (good,) = ScriptedSync(tmp_path / "source").snapshot([[doc("aaa", "m1", 10)]], snapshot_ts=50)
    dest = tmp_path / "dest"
    with pytest.raises(TargetError, match="refusing"):
        RawChangeLogSink(DestinationLayout.at(dest)).write(_batch_with_table(good, hostile))
    assert not dest.exists() or _files(dest) == []
    assert not (tmp_path / "etc").exists()


def _disk_full_after(limit: int) -> Callable[[pa.Table, BinaryIO], None]:
    real = change_log._write_parquet
    calls = {"n": 0}

    def write(table: pa.Table, handle: BinaryIO) -> None:
        calls["n"] += 1
        if calls["n"] > limit:
            handle.write(b"PAR1 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(table, handle)

    return write


@pytest.mark.parametrize("tables_written_before_failure", [0, 1])
def test_a_full_disk_is_a_sink_error_leaving_no_partial_file_and_no_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tables_written_before_failure: int
) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10)]], snapshot_ts=50)
    monkeypatch.setattr(
        change_log, "_write_parquet", _disk_full_after(tables_written_before_failure)
    )
    with pytest.raises(TargetError, match="No space left on device") as raised:
        sync.delta([doc("messages", "m2", 60), doc("users", "u1", 61)])
    assert "free disk space" in (raised.value.hint or "")
    files = _files(tmp_path / "raw_change_log")
    assert "_batches/000000000002.json" not in files
    assert not [f for f in files if f.endswith(".tmp") or "/." in f]
    for name in files:
        if name.endswith(".parquet"):  # whatever landed is complete
            pq.read_table(tmp_path / "raw_change_log" / name)
    assert "users/batch=000000000002.parquet" not in files
    # The checkpoint did not move, and a retry once space is back lands the batch.
    monkeypatch.undo()
    assert sync.store.load() == sync.checkpoint
    sync.delta([doc("messages", "m2", 60), doc("users", "u1", 61)])
    assert RawChangeLog(DestinationLayout.at(tmp_path)).batch(2) is not None


def test_the_reader_lists_committed_batches_in_a_range_skipping_gaps(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10)], [doc("users", "u1", 11)]], snapshot_ts=50)
    sync.delta([doc("messages", "m2", 60)])
    (tmp_path / "raw_change_log/_batches/000000000002.json").unlink()  # a skipped number
    log = RawChangeLog(DestinationLayout.at(tmp_path))
    assert [b.seq for b in log.committed_batches(0, 3)] == [1, 3]
    assert [b.seq for b in log.committed_batches(1, 2)] == []
    assert [b.seq for b in log.committed_batches(0, 1)] == [1]
    (first,) = log.committed_batches(0, 1)
    assert first.kind == "snapshot" and first.snapshot_ts == 50
    assert [t.key for t in first.tables] == [TableKey("", "messages")]


def test_the_reader_concatenates_a_tables_batches_in_order(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10)]], snapshot_ts=50)
    sync.delta([doc("messages", "m2", 60), doc("messages", "m1", 61)])
    log = RawChangeLog(DestinationLayout.at(tmp_path))
    rows = log.read_table_batches(key("messages"), [1, 2], columns=["_id", "_ts"])
    assert rows.to_pylist() == [
        {"_id": "m1", "_ts": 10},
        {"_id": "m2", "_ts": 60},
        {"_id": "m1", "_ts": 61},
    ]
    assert log.read_table_batches(key("messages"), []).num_rows == 0


def test_a_missing_committed_file_is_a_clear_error(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10)]], snapshot_ts=50)
    (tmp_path / "raw_change_log/messages/batch=000000000001.parquet").unlink()
    with pytest.raises(StateError, match="missing although batch 1 is indexed"):
        RawChangeLog(DestinationLayout.at(tmp_path)).read_table_batches(key("messages"), [1])
