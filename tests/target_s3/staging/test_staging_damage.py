"""Staging damaged behind convex-cdc's back is found and rebuilt; a half-done materialize
is told apart from a half-walked snapshot.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pytest

from convex_cdc.core.errors import ConfigError, TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3 import atomic_file
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging import segments
from convex_cdc.target_s3.staging.materializer import StagingMaterializer
from convex_cdc.target_s3.staging.reader import read_staging_table
from convex_cdc.target_s3.staging.readiness import consistent_staging
from convex_cdc.target_s3.staging.state import load_staging_state
from tests.target_s3.change_batches import ScriptedSync, doc

MESSAGES = TableKey("", "messages")


def _landed(dest: Path) -> pa.Table:
    sync = ScriptedSync(dest)
    sync.snapshot([[doc("messages", f"m{i}", 10 + i, text=f"t{i}") for i in range(50)]],
                  snapshot_ts=100)  # fmt: skip
    sync.delta([doc("messages", "m1", 200, text="changed")])
    StagingMaterializer(DestinationLayout.at(dest)).materialize()
    return read_staging_table(DestinationLayout.at(dest), MESSAGES)


def _listed_file(dest: Path) -> Path:
    state = load_staging_state(DestinationLayout.at(dest).staging_state)
    assert state is not None
    return dest / state.tables[0].files[0].path


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_truncated_or_missing_staging_part_is_rebuilt_by_materialize(
    tmp_path: Path, damage: str
) -> None:
    before = _landed(tmp_path)
    part = _listed_file(tmp_path)
    if damage == "truncated":
        part.write_bytes(part.read_bytes()[:100])
    else:
        part.unlink()
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert report.damaged_files == [part.relative_to(tmp_path).as_posix()]
    assert report.full_rebuild
    after = read_staging_table(DestinationLayout.at(tmp_path), MESSAGES)
    assert after.sort_by("_id").equals(before.sort_by("_id"))
    assert StagingMaterializer(DestinationLayout.at(tmp_path)).materialize().damaged_files == []


def test_a_same_size_corruption_is_rebuilt_with_rebuild(tmp_path: Path) -> None:
    before = _landed(tmp_path)
    part = _listed_file(tmp_path)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    assert StagingMaterializer(DestinationLayout.at(tmp_path)).materialize().damaged_files == []
    report = StagingMaterializer(DestinationLayout.at(tmp_path), rebuild=True).materialize()
    assert report.damaged_files == [part.relative_to(tmp_path).as_posix()]
    after = read_staging_table(DestinationLayout.at(tmp_path), MESSAGES)
    assert after.sort_by("_id").equals(before.sort_by("_id"))


def test_after_a_failed_materialize_publish_says_materialize_not_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10)], [doc("messages", "m2", 11)]], snapshot_ts=100)
    layout = DestinationLayout.at(tmp_path)
    real = atomic_file.atomic_write_bytes
    calls = {"n": 0}

    def full_after_first_step(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    # One batch per step: the first step's state is saved (mid-walk), the second fails.
    monkeypatch.setattr(segments, "atomic_write_bytes", full_after_first_step, raising=True)
    with pytest.raises(TargetError, match="No space left on device") as raised:
        StagingMaterializer(layout, max_events_per_step=1).materialize()
    assert "free disk space" in (raised.value.hint or "")
    with pytest.raises(ConfigError, match="staging is behind the checkpoint") as refused:
        consistent_staging(layout, purpose="publish")
    assert "half-walked" not in str(refused.value)
    assert "run `convex-cdc materialize`" in (refused.value.hint or "")

    monkeypatch.undo()  # space is back: the next run recovers
    StagingMaterializer(layout).materialize()
    state, as_of = consistent_staging(layout, purpose="publish")
    assert as_of == 100 and state.tables[0].row_count == 2
