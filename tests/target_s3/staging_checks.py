"""Reading staging back for assertions: rows by id, files on disk vs files listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.reader import read_staging_table
from convex_cdc.target_s3.staging.state import StagingState, load_staging_state


def state_of(dest: Path) -> StagingState:
    """The saved staging state (it must exist)."""
    state = load_staging_state(dest / "staging" / "_state.json")
    assert state is not None
    return state


def rows_by_id(dest: Path, key: TableKey, *, drop_nulls: bool = False) -> dict[str, dict[str, Any]]:
    """Staging rows of one table keyed by ``_id`` (optionally without null fields)."""
    rows = read_staging_table(DestinationLayout.at(dest), key).to_pylist()
    by_id = {row["_id"]: row for row in rows}
    assert len(by_id) == len(rows), "an _id appears twice in staging"
    if drop_nulls:
        by_id = {i: {k: v for k, v in row.items() if v is not None} for i, row in by_id.items()}
    return by_id


def staging_files(dest: Path) -> dict[str, bytes]:
    """Every parquet file under staging/ (relative path → bytes)."""
    root = dest / "staging"
    return {
        p.relative_to(dest).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*.parquet"))
        if p.is_file()
    }


def assert_only_listed_files(dest: Path) -> None:
    """Staging holds exactly the files its state lists, no leftovers, no temp files."""
    state = state_of(dest)
    listed = {f.path for t in state.tables for f in t.files}
    on_disk = {
        p.relative_to(dest).as_posix()
        for p in (dest / "staging").rglob("*")
        if p.is_file() and p.name != "_state.json"
    }
    assert on_disk == listed
    for table in state.tables:
        assert table.row_count == sum(f.rows for f in table.files)
