"""`databricks extract` killed with SIGKILL at random moments loses and duplicates nothing.

The devserver runs out of process with 10% of export requests failing. The extractor
runs as a subprocess and is killed at least 20 times, at least 5 times in each of the
snapshot walk and the delta phase (more workload lands between kills). Each kill follows
a Delta commit the test saw land: a bronze append (the kill falls between a batch's
appends, or between them and the checkpoint) or a control-table append (between
batches). Then it runs to completion, and: bronze holds every ``(_component, _table,
_id, _ts)`` exactly once, and the silver tables built by ``apply-silver`` equal the
devserver's truth.
"""

from __future__ import annotations

import os
import re
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
from convex_cdc.platform.databricks.source_name import source_name_from_url
from convex_cdc.platform.databricks.table_spec import TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.e2e.kill_loop import Phase, ProgressSignal, files_in, kill_after_progress
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.fixtures.devserver import start_devserver_process, stop_process

MIN_KILLS = 20


def _phase(warehouse: Warehouse) -> Phase:
    try:
        state = read_control_state(warehouse)
    except StateError:
        return "none"
    if state is None:
        return "none"
    # "delta" once the landed data is consistent (a completed walk, or a data sync that
    # is no longer snapshotting).
    return "delta" if state.checkpoint.consistent_as_of is not None else "snapshot"


_COMMIT_FILE = re.compile(r"\d{20}\.json")
"""A Delta commit: ``_delta_log/<version:020d>.json`` (temp files and checkpoints differ)."""
_TABLE_DIR = re.compile(r"[^.].*")


def _progress_signals(warehouse: Warehouse) -> list[ProgressSignal]:
    """The commits of one batch, in order: bronze appends, then the control-table append."""
    bronze = Path(warehouse.location) / "bronze"
    control_log = Path(warehouse.checkpoints) / "_delta_log"

    def bronze_commits() -> list[str]:
        return [
            f"{table}/{version}"
            for table in files_in(bronze, _TABLE_DIR)
            for version in files_in(bronze / table / "_delta_log", _COMMIT_FILE)
        ]

    def control_commits() -> list[str]:
        return files_in(control_log, _COMMIT_FILE)

    return [
        ProgressSignal("bronze commit", bronze_commits, most=3),
        ProgressSignal("control commit", control_commits, most=3),
    ]


def _add_workload(control: httpx.Client, *, transactions: int) -> None:
    control.post("/_devserver/workload", params={"transactions": transactions}).raise_for_status()


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
@pytest.mark.timeout(900)  # a stalled run fails sooner, with its own message (kill_loop)
@pytest.mark.parametrize("api", ["streaming-export", "data-sync"])
def test_extract_killed_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, api: str
) -> None:
    server, url, key = start_devserver_process(
        "--seed", "demo", "--docs", "3000", "--snapshot-page-size", "40",
        "--deltas-row-limit", "30", "--data-sync-page-size", "40", "--fail-rate", "0.1",
        "--fault-seed", "5", "--stall-seconds", "0.2",
    )  # fmt: skip
    control = httpx.Client(base_url=url, headers={"Authorization": f"Convex {key}"}, timeout=60)
    warehouse = Warehouse.from_uri(
        str(tmp_path / "warehouse"), source_name=source_name_from_url(url)
    )
    env = {**os.environ, "CONVEX_URL": url, "CONVEX_DEPLOY_KEY": key, "CONVEX_CDC_API": api}
    try:
        kills = kill_after_progress(
            _extract_command(warehouse, *KILLED_RUN),
            env=env,
            signals=_progress_signals(warehouse),
            phase=lambda: _phase(warehouse),
            more_changes=lambda: _add_workload(control, transactions=60),
            key=key,
            seed=20261127,
            min_kills=MIN_KILLS,
        )

        _add_workload(control, transactions=100)
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
        rows = read_table(bronze, columns=["_component", "_table", "_id", "_ts", "_op"])
        rows = rows.filter(pc.not_equal(rows["_op"], "truncate")).drop_columns(["_op"])
        counts = rows.group_by(rows.column_names).aggregate([([], "count_all")])
        twice = counts.filter(pc.greater(counts.column("count_all"), pa.scalar(1, pa.int64())))
        assert twice.num_rows == 0, f"{key_}: landed twice: {twice.to_pylist()[:3]}"

    log = open_table(warehouse.checkpoints, warehouse)
    assert log is not None
    reasons = read_table(log, columns=["reason"]).column("reason").to_pylist()
    apis = set(read_table(log, columns=["api"]).column("api").to_pylist()) - {None}
    assert apis == {api}, apis
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
    assert kills.total >= MIN_KILLS, kills
    assert kills.per_phase["snapshot"] >= 5 and kills.per_phase["delta"] >= 5, kills
