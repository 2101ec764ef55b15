"""read_published: follows manifest.json only and verifies every byte it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from convex_cdc.core.errors import TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.publish.manifest import ManifestFormatError
from convex_cdc.target_s3.publish.publisher import publish
from convex_cdc.target_s3.publish.reader import read_published
from tests.target_s3.handmade_staging import write_staging

DOCS = {
    "messages": [{"_id": f"m{i}", "_creationTime": 1.0 + i, "n": i} for i in range(12)],
    "empty": [],
}


@pytest.fixture
def published(tmp_path: Path) -> Path:
    write_staging(tmp_path / "dest", DOCS, segments=3)
    publish(DestinationLayout.at(tmp_path / "dest"), str(tmp_path / "out"))
    return tmp_path / "out"


def test_tables_come_back_with_their_rows_and_manifest(published: Path) -> None:
    snapshot = read_published(str(published))
    assert snapshot.manifest.sequence == 1
    messages = snapshot.table("messages").sort_by("_id")
    assert messages.column("_id").to_pylist() == sorted(f"m{i}" for i in range(12))
    assert messages.column_names == ["_id", "_creationTime", "_ts", "n"]
    empty = snapshot.table(TableKey("", "empty"))
    assert empty.num_rows == 0
    assert empty.column_names == ["_id", "_creationTime", "_ts"]


def test_files_no_manifest_names_are_invisible(published: Path) -> None:
    stray = published / "staging" / "messages" / "part-0000-ffffffffffffffff.parquet"
    pq.write_table(read_published(str(published)).table("messages"), stray)
    assert read_published(str(published)).table("messages").num_rows == 12


def test_a_changed_object_fails_its_digest(published: Path) -> None:
    manifest = read_published(str(published)).manifest
    victim = published / manifest.tables[1].files[0].path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(TargetError, match="does not match the size/sha256 in the manifest"):
        read_published(str(published))


def test_a_missing_object_is_named(published: Path) -> None:
    manifest = read_published(str(published)).manifest
    path = manifest.tables[1].files[0].path
    (published / path).unlink()
    with pytest.raises(TargetError, match=f"{path} is named by the manifest but missing"):
        read_published(str(published))


def test_a_row_count_that_disagrees_with_the_files_is_refused(published: Path) -> None:
    pointer = published / "manifest.json"
    data = json.loads(pointer.read_bytes())
    data["tables"][1]["row_count"] = 13
    pointer.write_text(json.dumps(data))
    with pytest.raises(TargetError, match="has 12 rows in its files, the manifest says 13"):
        read_published(str(published))


def test_nothing_published_and_foreign_manifests_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="nothing is published"):
        read_published(str(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()  # a reader creates nothing
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text('{"format": "delta", "version": 1}')
    with pytest.raises(ManifestFormatError, match="not a convex-cdc manifest"):
        read_published(str(tmp_path / "other"))
