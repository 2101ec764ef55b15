"""Several Convex deployments in one warehouse: each its own source, nothing shared or mixed.

Two devservers, both seeded with the demo tables (so both have ``messages``, ``users``,
``waitlist/users``...), are extracted into ONE warehouse and applied to silver; each
source's silver equals its own devserver's truth, and the bundles rendered for the two
share no name. A source name already bound to one deployment refuses another. Extractors
of different sources run at the same time and both succeed; two extractors of the same
source do not both succeed: one exits 75 (DestinationBusy), and the next run completes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import yaml

from convex_cdc.cli import main
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.control_table import read_control_state
from convex_cdc.platform.databricks.source_name import SourceName, source_name_from_url
from convex_cdc.platform.databricks.table_spec import TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.e2e.test_databricks_end_to_end import (
    assert_each_version_landed_once,
    run,
    silver_tables,
)
from tests.fixtures.devserver import RunningDevServer
from tests.platform.databricks.bundle_schema import bundle_problems
from tests.platform.databricks.test_bundle import databricks_names

SHARED_TABLES = {TableKey("", "messages"), TableKey("", "users"), TableKey("waitlist", "users")}


def deployment_env(server: RunningDevServer) -> dict[str, str]:
    return {"CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}


def assert_silver_equals_truth(warehouse: Warehouse, server: RunningDevServer) -> int:
    """``warehouse``'s source holds exactly ``server``'s documents; returns rows compared."""
    specs = TableSpecStore(warehouse).load()
    truth = server.truth()
    compared = assert_tables_equal_truth(
        silver_tables(warehouse), truth, declared={k: s.columns for k, s in specs.items()}
    )
    assert compared == len(truth)
    assert_each_version_landed_once(warehouse)
    return compared


def exit_code(args: list[str], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``convex-cdc ARGS`` as a user runs it, in-process: the exit code."""
    with monkeypatch.context() as patched:
        for name, value in env.items():
            patched.setenv(name, value)
        try:
            main(args)
        except SystemExit as exited:
            return int(exited.code or 0)
    return 0


def test_two_deployments_share_one_warehouse_and_each_silver_equals_its_own_truth(
    devserver_factory: Callable[..., RunningDevServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = str(tmp_path / "warehouse")
    prod = devserver_factory(seed="demo", docs=500, snapshot_page_size=100, workload_seed=21)
    staging = devserver_factory(seed="demo", docs=300, snapshot_page_size=100, workload_seed=22)
    prod_env, staging_env = deployment_env(prod), deployment_env(staging)
    prod_name = source_name_from_url(prod.url)  # the default: derived from the URL
    staging_name = SourceName("staging_app")  # given with --source
    by_name = ["--source", staging_name]

    for _ in range(2):  # the snapshot walks, then deltas after more workload on both
        run(["extract", "--warehouse", uri], prod_env)
        run(["extract", "--warehouse", uri, *by_name], staging_env)
        prod.workload(60)
        staging.workload(60)
    run(["extract", "--warehouse", uri], prod_env)
    run(["extract", "--warehouse", uri, *by_name], staging_env)
    applied = run(["apply-silver", "--warehouse", uri], prod_env)  # source from CONVEX_URL
    run(["apply-silver", "--warehouse", uri, *by_name], {})

    assert f"apply-silver: source {prod_name}:" in applied
    assert sorted(p.name for p in Path(uri).iterdir()) == sorted([prod_name, staging_name])
    warehouses = {
        name: Warehouse.from_uri(uri, source_name=name) for name in (prod_name, staging_name)
    }
    for name, server in ((prod_name, prod), (staging_name, staging)):
        assert_silver_equals_truth(warehouses[name], server)
        assert set(TableSpecStore(warehouses[name]).load()) >= SHARED_TABLES, name
        state = read_control_state(warehouses[name])
        assert state is not None and state.checkpoint.source.deployment_url == server.url

    # A name bound to one deployment refuses another (exit 6), naming both, writing nothing.
    before = len(list(Path(warehouses[prod_name].checkpoints, "_delta_log").glob("*.json")))
    refused = exit_code(
        ["databricks", "extract", "--warehouse", uri, "--source", prod_name],
        staging_env,
        monkeypatch,
    )
    assert refused == 6
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line]
    assert f"source '{prod_name}'" in line and prod.url in line and staging.url in line
    after = len(list(Path(warehouses[prod_name].checkpoints, "_delta_log").glob("*.json")))
    assert after == before

    # Both rendered from the one warehouse: side by side in one workspace, nothing shared.
    bundles = {}
    for name, env, args in ((prod_name, prod_env, []), (staging_name, {}, by_name)):
        out = tmp_path / f"bundle-{name}"
        run(
            ["render", "--warehouse", uri, "--out", str(out), *args,
             "--location", "s3://lake/convex", "--url", env.get("CONVEX_URL", staging.url)],
            {},
        )  # fmt: skip
        bundles[name] = {
            str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()
        }
        assert bundle_problems(bundles[name]) == []
    assert databricks_names(bundles[prod_name]) & databricks_names(bundles[staging_name]) == set()
    job = yaml.safe_load(bundles[staging_name]["resources/convex_cdc_extract.job.yml"])
    (task, _) = job["resources"]["jobs"]["convex_cdc_staging_app_extract"]["tasks"]
    assert task["python_wheel_task"]["parameters"][2:4] == ["--source", "staging_app"]


# --- at the same time ----------------------------------------------------------------------

LATENCY = {"fail_rate": 1.0, "fault_kinds": ["stall"], "stall_seconds": 0.05}
"""Every export request answers after 50 ms, so a snapshot walk of ~60 pages takes seconds
and two extractors started together really overlap."""
SLOW_DEPLOYMENT = {
    "seed": "demo",
    "docs": 1500,
    "snapshot_page_size": 25,
    "data_sync_page_size": 25,
}
SMALL_BATCHES = ("--batch-rows", "50")
"""Two pages per batch: a checkpoint save every ~100 ms."""


def slow_devserver(
    factory: Callable[..., RunningDevServer], workload_seed: int
) -> RunningDevServer:
    server = factory(**SLOW_DEPLOYMENT, workload_seed=workload_seed)
    server.settings(**LATENCY)
    return server


def start_extract(uri: str, server: RunningDevServer, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONVEX_CDC_SOURCE"}
    return subprocess.Popen(
        [sys.executable, "-m", "convex_cdc", "databricks", "extract", "--warehouse", uri,
         *SMALL_BATCHES, *extra],
        env={**env, **deployment_env(server)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, str, float]:
    """Wait for ``process``: its exit code, its stderr, and when it ended (monotonic)."""
    _, stderr = process.communicate(timeout=240)
    return process.returncode, stderr, time.monotonic()


def saves(warehouse: Warehouse) -> int:
    """Control-table commits so far (the table's creation included)."""
    return len(list(Path(warehouse.checkpoints, "_delta_log").glob("*.json")))


@pytest.mark.slow
def test_extractors_of_two_sources_run_at_the_same_time_and_both_succeed(
    devserver_factory: Callable[..., RunningDevServer], tmp_path: Path
) -> None:
    uri = str(tmp_path / "warehouse")
    servers = [slow_devserver(devserver_factory, seed) for seed in (31, 32)]

    started = time.monotonic()
    processes = [start_extract(uri, server) for server in servers]
    results = [finish(process) for process in processes]

    for code, stderr, _ in results:
        assert code == 0, stderr[-2000:]
    # They overlapped: both started together, and neither ended within 3 seconds.
    assert min(ended for _, _, ended in results) - started > 3.0
    for server in servers:
        server.settings(fail_rate=0.0)
        warehouse = Warehouse.from_uri(uri, source_name=source_name_from_url(server.url))
        run(["apply-silver", "--warehouse", uri], deployment_env(server))
        assert_silver_equals_truth(warehouse, server)


@pytest.mark.slow
def test_a_second_extractor_of_the_same_source_exits_75_and_nothing_is_lost(
    devserver_factory: Callable[..., RunningDevServer], tmp_path: Path
) -> None:
    uri = str(tmp_path / "warehouse")
    server = slow_devserver(devserver_factory, 33)
    warehouse = Warehouse.from_uri(uri, source_name=source_name_from_url(server.url))

    first = start_extract(uri, server)
    deadline = time.monotonic() + 120
    while saves(warehouse) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the table exists and the walk is pinned: the run is under way
    assert first.poll() is None, "the first extractor ended before the second could start"
    second = start_extract(uri, server)
    results = sorted([finish(first)[:2], finish(second)[:2]])

    assert [code for code, _ in results] == [0, 75], results
    busy = [line for line in results[1][1].splitlines() if line.startswith("error:")]
    assert len(busy) == 1 and "another process saved a checkpoint" in busy[0], busy
    assert "run one extractor per source" in busy[0]

    server.settings(fail_rate=0.0)
    server.workload(40)
    run(["extract", "--warehouse", uri], deployment_env(server))
    run(["apply-silver", "--warehouse", uri], deployment_env(server))
    assert_silver_equals_truth(warehouse, server)
