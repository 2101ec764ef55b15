"""`convex-cdc sync` killed with SIGKILL at random moments loses and duplicates nothing.

The devserver runs out of process with 10% of export requests failing (500/503/429,
dropped bodies, stalls). `sync` runs as a subprocess and is killed at random moments,
at least 20 times, across the snapshot walk and the delta phase (more workload lands
between kills). Then it runs to completion, and: staging equals the devserver's truth,
and the raw change log holds every change event exactly once.
"""

from __future__ import annotations

import json
import os
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
from tests.e2e.kill_loop import kill_at_random_moments
from tests.e2e.lake_truth import assert_tables_equal_truth, truth_by_table
from tests.fixtures.devserver import start_devserver_process, stop_process

MIN_KILLS = 20


def _phase(dest: Path) -> str:
    try:
        checkpoint = json.loads((dest / "checkpoint.json").read_text())
    except (FileNotFoundError, ValueError):
        return "none"
    return "snapshot" if "InitialSnapshot" in checkpoint["position"] else "delta"


@pytest.mark.slow
def test_sync_killed_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    server, url, key = start_devserver_process(
        "--seed", "demo", "--docs", "4000", "--snapshot-page-size", "40",
        "--deltas-row-limit", "30", "--fail-rate", "0.1", "--fault-seed", "11",
        "--stall-seconds", "0.2",
    )  # fmt: skip
    control = httpx.Client(base_url=url, headers={"Authorization": f"Convex {key}"}, timeout=60)
    dest = tmp_path / "lake"
    env = {**os.environ, "CONVEX_URL": url, "CONVEX_DEPLOY_KEY": key}
    try:
        # Batches of 3 snapshot or 4 delta pages, so the kills land inside and between
        # batches; the final run uses the default limits.
        kills = kill_at_random_moments(
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
            phase=lambda: _phase(dest),
            control=control,
            key=key,
            seed=20261126,
            min_kills=MIN_KILLS,
        )

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

    documents = [json.loads(line) for line in truth.splitlines() if line]
    StagingMaterializer(dest).materialize()
    state = load_staging_state(DestinationLayout.at(dest).staging_state)
    assert state is not None
    tables = {t.key: read_staging_table(dest, t.key) for t in state.tables}
    declared = {t.key: {c.name: c.type for c in t.columns} for t in state.tables}
    assert_tables_equal_truth(tables, documents, declared=declared)

    raw = pa.concat_tables(
        pq.read_table(path, columns=["_component", "_table", "_id", "_ts"])
        for path in sorted((dest / "raw_change_log").glob("*/batch=*.parquet"))
    )
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
    assert kills["snapshot"] >= 5 and kills["delta"] >= 5, kills
    assert TableKey("", "attachments") in tables  # the late table arrived through deltas
