"""`databricks extract` killed with SIGKILL at random moments loses and duplicates nothing.

The devserver runs out of process with 10% of export requests failing. The extractor
runs as a subprocess and is killed at random moments, at least 20 times, during the
snapshot walk and the delta phase (more workload lands between kills). Then it runs to
completion, and: bronze holds every ``(_component, _table, _id, _ts)`` exactly once, and
the silver tables built by ``apply-silver`` equal the devserver's truth.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from convex_cdc.core.errors import StateError
from convex_cdc.platform.databricks.control_table import read_control_state
from convex_cdc.platform.databricks.delta_read import open_table, read_table
from convex_cdc.platform.databricks.silver import apply_silver, read_silver
from convex_cdc.platform.databricks.table_spec import TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.e2e.kill_loop import kill_at_random_moments
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.fixtures.devserver import start_devserver_process, stop_process

MIN_KILLS = 20


def _phase(warehouse: Warehouse) -> str:
    try:
        state = read_control_state(warehouse)
    except StateError:
        return "none"
    return "none" if state is None else state.checkpoint.phase


def _extract_command(warehouse: Warehouse, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "convex_cdc",
        "databricks",
        "extract",
        "--warehouse",
        warehouse.root,
        *extra,
    ]


KILLED_RUN = ("--batch-rows", "100")
"""Batches of 3 snapshot or 4 delta pages, so the kills land inside and between batches;
the final run uses the default limits (its first batch is cut as the checkpoint says)."""


@pytest.mark.slow
def test_extract_killed_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    server, url, key = start_devserver_process(
        "--seed", "demo", "--docs", "3000", "--snapshot-page-size", "40",
        "--deltas-row-limit", "30", "--fail-rate", "0.1", "--fault-seed", "5",
        "--stall-seconds", "0.2",
    )  # fmt: skip
    control = httpx.Client(base_url=url, headers={"Authorization": f"Convex {key}"}, timeout=60)
    warehouse = Warehouse.from_uri(str(tmp_path / "warehouse"))
    env = {**os.environ, "CONVEX_URL": url, "CONVEX_DEPLOY_KEY": key}
    try:
        kills = kill_at_random_moments(
            _extract_command(warehouse, *KILLED_RUN),
            env=env,
            phase=lambda: _phase(warehouse),
            control=control,
            key=key,
            seed=20261127,
            min_kills=MIN_KILLS,
            delay_seconds=(0.4, 1.8),
        )

        control.post("/_devserver/workload", params={"transactions": 100}).raise_for_status()
        final = subprocess.run(
            _extract_command(warehouse), env=env, capture_output=True, timeout=300, check=False
        )
        assert final.returncode == 0, final.stderr.decode()[-2000:]
        truth = [
            line for line in control.get("/_devserver/truth").content.decode().splitlines() if line
        ]
    finally:
        control.close()
        stop_process(server)

    specs = TableSpecStore(warehouse).load()
    for key_ in specs:
        bronze = open_table(warehouse.bronze(key_), warehouse)
        assert bronze is not None
        rows = read_table(bronze, columns=["_component", "_table", "_id", "_ts"])
        counts = rows.group_by(rows.column_names).aggregate([([], "count_all")])
        twice = counts.filter(pc.greater(counts.column("count_all"), pa.scalar(1, pa.int64())))
        assert twice.num_rows == 0, f"{key_}: landed twice: {twice.to_pylist()[:3]}"

    log = open_table(warehouse.checkpoints, warehouse)
    assert log is not None
    reasons = read_table(log, columns=["reason"]).column("reason").to_pylist()
    print(
        f"kills {kills}, checkpoint saves {len(reasons)}, reconciled {reasons.count('reconciled')}"
    )

    apply_silver(warehouse)

    tables = {k: read_silver(warehouse, k) for k in specs}
    assert_tables_equal_truth(
        {k: t for k, t in tables.items() if t is not None},
        [orjson.loads(line) for line in truth],
        declared={k: s.columns for k, s in specs.items()},
    )
    assert kills["snapshot"] >= 5 and kills["delta"] >= 5
