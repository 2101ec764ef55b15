"""Damaged local state, as a user meets it: refused with exit 6 and the way back.

A lost or rolled-back checkpoint never lets `sync` overwrite landed raw batches;
`sync --restore-checkpoint` rebuilds it from the newest batch and the lake equals the
truth again. A lost batch index or a shortened raw file stops `materialize` (it used to
skip or accept them and say all was well).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.reader import read_staging_table
from convex_cdc.target_s3.staging.state import load_staging_state
from tests.e2e.cli_process import run_cli
from tests.e2e.lake_truth import assert_tables_equal_truth


def _convex_cdc(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Legacy batches: with Data Sync one batch beyond the checkpoint is adopted, so a
    # checkpoint rolled back by a single batch cannot be told from a crash.
    return run_cli(*args, env={"CONVEX_CDC_API": "streaming-export", **env})


def _raw_digests(dest: Path) -> dict[str, str]:
    root = dest / "raw_change_log"
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_lost_or_rolled_back_checkpoint_is_refused_and_restored(
    devserver_factory: Any, tmp_path: Path
) -> None:
    server = devserver_factory(seed="demo", docs=300)
    env = {"CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}
    dest = tmp_path / "lake"
    assert _convex_cdc("sync", "--dest", str(dest), "--batch-rows", "50", env=env).returncode == 0
    backup = tmp_path / "old-checkpoint.json"
    shutil.copy(dest / "checkpoint.json", backup)
    server.workload(30)
    assert _convex_cdc("sync", "--dest", str(dest), "--batch-rows", "5", env=env).returncode == 0
    landed = _raw_digests(dest)

    (dest / "checkpoint.json").unlink()
    lost = _convex_cdc("sync", "--dest", str(dest), env=env)
    assert lost.returncode == 6, lost.stderr
    assert "checkpoint.json is missing" in lost.stderr and "--restore-checkpoint" in lost.stderr
    shutil.copy(backup, dest / "checkpoint.json")
    rolled_back = _convex_cdc("sync", "--dest", str(dest), env=env)
    assert rolled_back.returncode == 6, rolled_back.stderr
    assert "restored from an older backup" in rolled_back.stderr
    assert _raw_digests(dest) == landed  # nothing was overwritten

    restored = _convex_cdc("sync", "--dest", str(dest), "--restore-checkpoint", env=env)
    assert restored.returncode == 0, restored.stderr
    assert "checkpoint rebuilt from raw batch" in restored.stdout
    assert _convex_cdc("materialize", "--dest", str(dest), env=env).returncode == 0
    layout = DestinationLayout.at(dest)
    state = load_staging_state(layout.staging_state)
    assert state is not None
    tables = {t.key: read_staging_table(layout, t.key) for t in state.tables}
    declared = {t.key: {c.name: c.type for c in t.columns} for t in state.tables}
    assert_tables_equal_truth(tables, server.truth(), declared=declared)
    assert {k: v for k, v in _raw_digests(dest).items() if k in landed} == landed


def test_a_lost_index_or_a_shortened_raw_file_stops_materialize(
    devserver_factory: Any, tmp_path: Path
) -> None:
    server = devserver_factory(seed="demo", docs=200)
    env = {"CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}
    dest = tmp_path / "lake"
    assert _convex_cdc("sync", "--dest", str(dest), "--batch-rows", "20", env=env).returncode == 0

    index = dest / "raw_change_log/_batches/000000000003.json"
    saved = index.read_bytes()
    index.unlink()
    hole = _convex_cdc("materialize", "--dest", str(dest), env=env)
    assert hole.returncode == 6, hole.stderr
    assert "000000000003.json is missing" in hole.stderr
    index.write_bytes(saved)

    (table_file,) = sorted((dest / "raw_change_log").glob("*/batch=000000000004.parquet"))[:1]
    rows = pq.read_table(table_file)
    pq.write_table(rows.slice(0, rows.num_rows // 2), table_file)  # valid, but short
    short = _convex_cdc("materialize", "--dest", str(dest), env=env)
    assert short.returncode == 6, short.stderr
    assert table_file.name in short.stderr and "damaged" in short.stderr
    assert not (dest / "staging" / "_state.json").exists()
