"""The raw change log is history: never overwritten, holes and damaged files refused.

A checkpoint behind the log (lost, or restored from an older backup) is refused before a
sync writes anything; the one batch a crash leaves beyond the checkpoint is replayed
harmlessly; a batch number reused for other events is refused by the sink itself; a lost
index, a shortened file and a skipped number (a new walk) are told apart.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from convex_cdc.core.errors import StateError
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.raw.batch_index import BatchIndex
from convex_cdc.target_s3.raw.change_log import (
    RawChangeLog,
    RawChangeLogSink,
    remove_interrupted_writes,
)
from convex_cdc.target_s3.raw.history import (
    checkpoint_from_newest_batch,
    ensure_checkpoint_covers,
    ensure_checkpointed_batch_exists,
    ensure_contiguous,
)
from convex_cdc.target_s3.staging.materializer import StagingMaterializer
from tests.target_s3.change_batches import ScriptedSync, doc


def _synced(dest: Path) -> ScriptedSync:
    """Batches 1-2 (a walk at 50), then deltas 3-4."""
    sync = ScriptedSync(dest)
    sync.snapshot([[doc("messages", "m1", 10)], [doc("users", "u1", 11)]], snapshot_ts=50)
    sync.delta([doc("messages", "m2", 60)])
    sync.delta([doc("messages", "m3", 70), doc("users", "u2", 71)])
    return sync


def _log(dest: Path) -> RawChangeLog:
    return RawChangeLog(DestinationLayout.at(dest))


def test_a_missing_checkpoint_over_a_landed_raw_log_is_refused(tmp_path: Path) -> None:
    _synced(tmp_path)
    (tmp_path / "checkpoint.json").unlink()
    with pytest.raises(StateError, match=r"checkpoint\.json is missing") as raised:
        ensure_checkpoint_covers(_log(tmp_path), None)
    assert "--restore-checkpoint" in (raised.value.hint or "")
    assert raised.value.exit_code == 6


def test_a_rolled_back_checkpoint_is_refused_but_one_batch_in_flight_is_not(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "dest"
    sync = ScriptedSync(dest)
    sync.snapshot([[doc("messages", "m1", 10)], [doc("users", "u1", 11)]], snapshot_ts=50)
    backup = tmp_path / "checkpoint-at-2.json"
    shutil.copy(dest / "checkpoint.json", backup)
    sync.delta([doc("messages", "m2", 60)])  # batch 3: one beyond the backup
    stored = FileCheckpointStore(DestinationLayout.at(dest))
    shutil.copy(backup, dest / "checkpoint.json")
    ensure_checkpoint_covers(_log(dest), stored.load())  # batch 3 may be in flight

    shutil.copy(dest / "checkpoint.json", backup)
    sync.checkpoint = stored.load()
    sync.delta([doc("messages", "m2", 60)])  # 3 again, same events: a replay
    sync.delta([doc("messages", "m4", 80)])  # batch 4
    shutil.copy(backup, dest / "checkpoint.json")  # back at 2, the log at 4
    with pytest.raises(StateError, match=r"at batch 2, but .* holds batches up to 4"):
        ensure_checkpoint_covers(_log(dest), stored.load())


def test_the_sink_never_overwrites_a_batch_with_other_events(tmp_path: Path) -> None:
    sync = _synced(tmp_path)
    before = (tmp_path / "raw_change_log/messages/batch=000000000004.parquet").read_bytes()
    # A checkpoint two batches back: batch 3 again, but with what the server says now.
    sync.checkpoint = _log(tmp_path).batch(2).checkpoint  # type: ignore[union-attr]
    with pytest.raises(StateError, match="batch 3 already holds other changes") as raised:
        sync.delta([doc("messages", "m9", 65)])
    assert "nothing was overwritten" in raised.value.message
    after = (tmp_path / "raw_change_log/messages/batch=000000000004.parquet").read_bytes()
    assert after == before


def test_a_replayed_batch_leaves_the_landed_one_as_it_is(tmp_path: Path) -> None:
    sync = _synced(tmp_path)
    path = tmp_path / "raw_change_log/messages/batch=000000000004.parquet"
    before = path.read_bytes()
    sync.checkpoint = _log(tmp_path).batch(3).checkpoint  # type: ignore[union-attr]
    sync.delta([doc("messages", "m3", 70), doc("users", "u2", 71)])  # batch 4 again
    assert path.read_bytes() == before


def test_the_checkpoint_is_rebuilt_from_the_newest_batch(tmp_path: Path) -> None:
    sync = _synced(tmp_path)
    assert checkpoint_from_newest_batch(_log(tmp_path)) == sync.checkpoint


def test_a_lost_index_in_the_middle_is_a_hole_and_materialize_refuses(tmp_path: Path) -> None:
    _synced(tmp_path)
    (tmp_path / "raw_change_log/_batches/000000000003.json").unlink()
    with pytest.raises(StateError, match=r"000000000003\.json is missing") as raised:
        StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert "restore raw_change_log" in (raised.value.hint or "")


def test_a_lost_last_index_is_refused(tmp_path: Path) -> None:
    sync = _synced(tmp_path)
    (tmp_path / "raw_change_log/_batches/000000000004.json").unlink()
    assert sync.checkpoint is not None
    with pytest.raises(StateError, match=r"000000000004\.json is missing, although"):
        ensure_checkpointed_batch_exists(_log(tmp_path), sync.checkpoint)


def test_a_number_skipped_by_a_new_walk_is_not_a_hole(tmp_path: Path) -> None:
    sync = _synced(tmp_path)
    sync.snapshot([[doc("messages", "m1", 90)]], snapshot_ts=100)  # skips 5, lands 6
    log = _log(tmp_path)
    assert log.batch_numbers() == [1, 2, 3, 4, 6]
    ensure_contiguous(log, log.committed_batches(0, 6), after=0)
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert report.last_applied_batch == 6


def test_old_indexes_without_links_allow_a_gap_only_before_a_new_walk(tmp_path: Path) -> None:
    _synced(tmp_path)
    log = _log(tmp_path)
    batches = [
        _unlinked(index)
        for index in log.committed_batches(0, 4)
        if index.seq != 3  # lost
    ]
    with pytest.raises(StateError, match=r"000000000003\.json is missing"):
        ensure_contiguous(log, batches, after=0)
    ensure_contiguous(log, [b for b in batches if b.seq != 4], after=0)


def _unlinked(index: BatchIndex) -> BatchIndex:
    return replace(index, previous=None)


@pytest.mark.parametrize("damage", ["shortened", "missing"])
def test_a_damaged_raw_file_is_refused_naming_it(tmp_path: Path, damage: str) -> None:
    _synced(tmp_path)
    path = tmp_path / "raw_change_log/messages/batch=000000000004.parquet"
    if damage == "shortened":
        # A valid parquet file, one row short of what the batch wrote.
        rows = pq.read_table(path)
        pq.write_table(rows.slice(0, rows.num_rows - 1) if rows.num_rows > 1 else rows[:0], path)
    else:
        path.unlink()
    with pytest.raises(StateError, match=r"batch=000000000004\.parquet") as raised:
        StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert raised.value.exit_code == 6
    assert "restore raw_change_log" in (raised.value.hint or "")


def test_temporary_files_of_a_killed_sync_are_removed_and_nothing_else(tmp_path: Path) -> None:
    _synced(tmp_path)
    layout = DestinationLayout.at(tmp_path)
    left = [
        tmp_path / ".checkpoint.json.abcd_123.tmp",
        tmp_path / "raw_change_log/_batches/.000000000005.json.k2j4h5g6.tmp",
        tmp_path / "raw_change_log/messages/.batch=000000000005.parquet.zz99aa11.tmp",
    ]
    kept = [
        tmp_path / "notes.tmp",
        tmp_path / "raw_change_log/messages/.hidden",
        tmp_path / "raw_change_log/messages/my.parquet.tmp",
    ]
    for path in left + kept:
        path.write_bytes(b"partial")
    assert remove_interrupted_writes(layout) == len(left)
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in kept)
    RawChangeLogSink(layout)  # the log itself is intact
    assert _log(tmp_path).batch_numbers() == [1, 2, 3, 4]
