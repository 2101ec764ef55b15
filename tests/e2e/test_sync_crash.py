"""`convex-cdc sync` killed with SIGKILL at random moments loses and duplicates nothing,
following the deployment with the legacy pair and with Data Sync.

The devserver runs out of process with 10% of export requests failing (500/503/429,
dropped bodies, stalls). `sync` runs as a subprocess and is killed at least 20 times,
at least 5 times in each of the snapshot walk and the delta phase (more workload lands
between kills). Each kill follows a write the test saw land: a table's batch file (the
kill falls inside the batch), a batch index (between the batch and its checkpoint) or a
checkpoint save (between batches). Then it runs to completion, and: staging equals the
devserver's truth, and the raw change log holds every change event exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.materializer import StagingMaterializer
from convex_cdc.target_s3.staging.reader import read_staging_table
from convex_cdc.target_s3.staging.state import load_staging_state
from tests.e2e.kill_loop import Phase, ProgressSignal, files_in, kill_after_progress
from tests.e2e.lake_truth import assert_tables_equal_truth, truth_by_table
from tests.fixtures.devserver import start_devserver_process, stop_process

MIN_KILLS = 20


def _phase(dest: Path) -> Phase:
    """``snapshot`` while a walk is incomplete (a legacy walk, or a snapshotting data
    sync), ``delta`` once the landed data is consistent."""
    try:
        checkpoint = json.loads((dest / "checkpoint.json").read_text())
    except (FileNotFoundError, ValueError):
        return "none"
    position = checkpoint["position"]
    walking = "InitialSnapshot" in position or (
        "DataSync" in position and position["DataSync"]["status"] == "snapshotting"
    )
    return "snapshot" if walking else "delta"


_TABLE_FILE = re.compile(r"batch=\d{12}\.parquet")
_BATCH_INDEX = re.compile(r"\d{12}\.json")


def _progress_signals(dest: Path) -> list[ProgressSignal]:
    """The writes of one batch, in order: table files, the batch index, the checkpoint."""
    layout = DestinationLayout.at(dest)

    def table_files() -> list[str]:
        return files_in(layout.raw_change_log, _TABLE_FILE, depth=1)

    def batch_indexes() -> list[str]:
        return files_in(layout.batch_index, _BATCH_INDEX)

    def checkpoint_saves() -> list[str]:
        try:
            return [hashlib.sha256(layout.checkpoint.read_bytes()).hexdigest()]
        except FileNotFoundError:
            return []

    return [
        ProgressSignal("raw table file", table_files, most=4),
        ProgressSignal("batch index", batch_indexes, most=3),
        ProgressSignal("checkpoint save", checkpoint_saves, most=3),
    ]


def _add_workload(control: httpx.Client, *, transactions: int) -> None:
    control.post("/_devserver/workload", params={"transactions": transactions}).raise_for_status()


@pytest.mark.slow
@pytest.mark.timeout(900)  # a stalled run fails sooner, with its own message (kill_loop)
@pytest.mark.parametrize("api", ["streaming-export", "data-sync"])
def test_sync_killed_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, api: str
) -> None:
    server, url, key = start_devserver_process(
        "--seed", "demo", "--docs", "4000", "--snapshot-page-size", "40",
        "--deltas-row-limit", "30", "--data-sync-page-size", "40", "--fail-rate", "0.1",
        "--fault-seed", "11", "--stall-seconds", "0.2",
    )  # fmt: skip
    control = httpx.Client(base_url=url, headers={"Authorization": f"Convex {key}"}, timeout=60)
    dest = tmp_path / "lake"
    env = {**os.environ, "CONVEX_URL": url, "CONVEX_DEPLOY_KEY": key, "CONVEX_CDC_API": api}
    try:
        # Batches of 3 snapshot or 4 delta pages, so the kills land inside and between
        # batches; the final run uses the default limits.
        kills = kill_after_progress(
            [
                sys.executable,
                "-m",
                "convex_cdc",
                "sync",
                "--dest",
                str(dest),
                "--batch-rows",
                "100",
            ],
            env=env,
            signals=_progress_signals(dest),
            phase=lambda: _phase(dest),
            more_changes=lambda: _add_workload(control, transactions=60),
            key=key,
            seed=20261126,
            min_kills=MIN_KILLS,
        )
        print(f"kills {kills}")

        final = subprocess.run(
            [sys.executable, "-m", "convex_cdc", "sync", "--dest", str(dest)],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert final.returncode == 0, final.stderr.decode()
        truth = control.get("/_devserver/truth").content
    finally:
        control.close()
        stop_process(server)

    position = json.loads((dest / "checkpoint.json").read_text())["position"]
    assert ("DataSync" in position) == (api == "data-sync"), position
    documents = [json.loads(line) for line in truth.splitlines() if line]
    layout = DestinationLayout.at(dest)
    StagingMaterializer(layout).materialize()
    state = load_staging_state(layout.staging_state)
    assert state is not None
    tables = {t.key: read_staging_table(layout, t.key) for t in state.tables}
    declared = {t.key: {c.name: c.type for c in t.columns} for t in state.tables}
    assert_tables_equal_truth(tables, documents, declared=declared)

    # The files the batch indexes name: a data sync batch that never landed whole is
    # fetched anew, and may leave a file of a table the new batch does not touch.
    indexed = [
        layout.raw_change_log / table["dir"] / table["file"]
        for path in sorted(layout.batch_index.glob("*.json"))
        for table in json.loads(path.read_text())["tables"]
    ]
    raw = pa.concat_tables(
        pq.read_table(path, columns=["_component", "_table", "_id", "_ts", "_op"])
        for path in indexed
    )
    raw = raw.filter(pc.not_equal(raw["_op"], "truncate")).drop_columns(["_op"])
    distinct = raw.group_by(["_component", "_table", "_id", "_ts"]).aggregate([])
    assert distinct.num_rows == raw.num_rows, "the raw change log holds a duplicated event"
    landed = set(
        zip(
            pc.binary_join_element_wise(raw["_component"], raw["_table"], "/").to_pylist(),
            raw["_id"].to_pylist(),
            raw["_ts"].to_pylist(),
            strict=True,
        )
    )
    for key_, docs in truth_by_table(documents).items():
        prefix = f"{key_.component}/{key_.table}"
        for doc_id, doc in docs.items():
            assert (prefix, doc_id, doc["_ts"]) in landed, f"missing event {key_} {doc_id}"
    assert kills.total >= MIN_KILLS, kills
    assert kills.per_phase["snapshot"] >= 5 and kills.per_phase["delta"] >= 5, kills
    assert TableKey("", "attachments") in tables  # the late table arrived through deltas
