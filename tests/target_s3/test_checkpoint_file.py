"""The checkpoint file round-trips, refuses anything it did not write, and survives bad saves."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from convex_cdc.core.checkpoint import (
    Checkpoint,
    SourceIdentity,
    after_snapshot_page,
    begin_snapshot,
)
from convex_cdc.core.checkpoint_json import dumps_checkpoint
from convex_cdc.core.errors import StateError, TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout

SOURCE = SourceIdentity("https://happy-animal-123.convex.cloud")


def _checkpoint(batches: int = 1) -> Checkpoint:
    checkpoint = begin_snapshot(None, source=SOURCE, snapshot=1_000)
    for number in range(batches):
        checkpoint = after_snapshot_page(
            checkpoint, cursor=f"c{number}", has_more=True, tables=[TableKey("", "messages")]
        )
    return checkpoint


def test_a_missing_file_means_no_checkpoint(tmp_path: Path) -> None:
    assert FileCheckpointStore(DestinationLayout.at(tmp_path)).load() is None


def test_a_saved_checkpoint_loads_back_equal(tmp_path: Path) -> None:
    store = FileCheckpointStore(DestinationLayout.at(tmp_path))
    checkpoint = _checkpoint(3)
    store.save(checkpoint)
    assert store.load() == checkpoint
    assert (tmp_path / "checkpoint.json").read_bytes() == dumps_checkpoint(checkpoint)


def test_saving_replaces_the_previous_checkpoint(tmp_path: Path) -> None:
    store = FileCheckpointStore(DestinationLayout.at(tmp_path))
    store.save(_checkpoint(1))
    store.save(_checkpoint(2))
    loaded = store.load()
    assert loaded is not None
    assert loaded.batch_seq == 2


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x00\xff garbage", "corrupt"),
        (b'{"format": "convex-cdc.checkpoint", "version": 1, "sour', "corrupt"),
        (b"", "corrupt"),
        (b'{"name": "my-app", "version": "1.0.0"}', "not a usable convex-cdc checkpoint"),
        (b"[1, 2, 3]", "not a usable convex-cdc checkpoint"),
    ],
    ids=["garbage", "truncated", "empty", "foreign-json", "json-array"],
)
def test_a_file_that_is_not_a_checkpoint_is_an_error_never_a_reset(
    tmp_path: Path, content: bytes, match: str
) -> None:
    (tmp_path / "checkpoint.json").write_bytes(content)
    with pytest.raises(StateError, match=match):
        FileCheckpointStore(DestinationLayout.at(tmp_path)).load()


def test_a_truncated_real_checkpoint_is_an_error(tmp_path: Path) -> None:
    whole = dumps_checkpoint(_checkpoint(2))
    (tmp_path / "checkpoint.json").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(StateError, match="corrupt"):
        FileCheckpointStore(DestinationLayout.at(tmp_path)).load()


def test_a_checkpoint_from_a_newer_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    data = json.loads(dumps_checkpoint(_checkpoint()))
    data["version"] = 99
    (tmp_path / "checkpoint.json").write_text(json.dumps(data))
    with pytest.raises(StateError, match="newer convex-cdc") as raised:
        FileCheckpointStore(DestinationLayout.at(tmp_path)).load()
    assert raised.value.hint == "upgrade convex-cdc"


def test_a_failed_save_leaves_the_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileCheckpointStore(DestinationLayout.at(tmp_path))
    previous = _checkpoint(1)
    store.save(previous)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(TargetError, match="No space left") as raised:
        store.save(_checkpoint(2))
    monkeypatch.undo()

    assert "free disk space" in (raised.value.hint or "")
    assert store.load() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json"]
