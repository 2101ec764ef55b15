"""Databricks/delta target end to end: devserver → extract → workload → extract → apply-silver.

Every silver table must equal ``/_devserver/truth``, typed, both on a local warehouse and
on ``s3://`` against moto's standalone server. Replaying the run writes nothing new.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from convex_cdc.cli import cli
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.delta_read import open_table, read_table
from convex_cdc.platform.databricks.silver import read_silver
from convex_cdc.platform.databricks.source_name import source_name_from_url
from convex_cdc.platform.databricks.table_spec import TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.fixtures.devserver import RunningDevServer
from tests.fixtures.moto_s3 import S3Endpoint


def run(args: list[str], env: Mapping[str, str]) -> str:
    """Run ``convex-cdc databricks ...`` in-process; returns its output."""
    result = CliRunner().invoke(cli, ["databricks", *args], env=dict(env), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def silver_tables(warehouse: Warehouse) -> dict[TableKey, pa.Table]:
    tables = {}
    for key in TableSpecStore(warehouse).load():
        table = read_silver(warehouse, key)
        assert table is not None, f"no silver table for {key}"
        tables[key] = table
    return tables


def bronze_versions(warehouse: Warehouse) -> dict[TableKey, int]:
    versions = {}
    for key in TableSpecStore(warehouse).load():
        table = open_table(warehouse.bronze(key), warehouse)
        if table is not None:
            versions[key] = table.version()
    return versions


def assert_each_version_landed_once(warehouse: Warehouse) -> int:
    rows = 0
    for key in TableSpecStore(warehouse).load():
        table = open_table(warehouse.bronze(key), warehouse)
        if table is None:
            continue
        counts = (
            read_table(table, columns=["_component", "_table", "_id", "_ts"])
            .group_by(["_component", "_table", "_id", "_ts"])
            .aggregate([([], "count_all")])
        )
        duplicated = counts.filter(pa.compute.greater(counts.column("count_all"), 1))
        assert duplicated.num_rows == 0, f"{key}: {duplicated.to_pylist()[:3]}"
        rows += counts.num_rows
    return rows


def events_per_second(output: str) -> float:
    match = re.search(r"\(([\d,]+) (?:events|rows)/s\)", output)
    assert match is not None, output
    return float(match.group(1).replace(",", ""))


def scenario(
    server: RunningDevServer,
    uri: str,
    env: Mapping[str, str],
    warehouse: Warehouse,
    *,
    transactions: int,
) -> dict[str, Any]:
    env = {**env, "CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}
    started = time.monotonic()
    first = run(["extract", "--warehouse", uri], env)
    applied = run(["apply-silver", "--warehouse", uri], env)
    # Two more rounds, so that incremental applies run after deletes left tombstones.
    for _ in range(2):
        server.workload(transactions // 2)  # inserts, replaces, deletes, components
        later = run(["extract", "--warehouse", uri], env)
        assert re.search(r"\([1-9][\d,]* deletes\)", later), later
        run(["apply-silver", "--warehouse", uri], env)
    truth = server.truth()

    specs = TableSpecStore(warehouse).load()
    compared = assert_tables_equal_truth(
        silver_tables(warehouse), truth, declared={k: s.columns for k, s in specs.items()}
    )
    assert compared == len(truth)
    assert any(key.component for key in specs), "the demo seed has component tables"
    assert_each_version_landed_once(warehouse)

    # Replay: nothing new to extract or apply; no bronze table gets a new commit.
    before = bronze_versions(warehouse)
    run(["extract", "--warehouse", uri], env)
    again = run(["apply-silver", "--warehouse", uri], env)
    assert bronze_versions(warehouse) == before
    assert "bronze rows →" not in again
    return {
        "extract_events_per_s": events_per_second(first),
        "apply_rows_per_s": events_per_second(applied),
        "seconds": time.monotonic() - started,
    }


def test_local_warehouse_silver_equals_the_devserver(
    devserver_factory: Callable[..., RunningDevServer], tmp_path: Path
) -> None:
    uri = str(tmp_path / "warehouse")
    server = devserver_factory(seed="demo", docs=3000, snapshot_page_size=250, workload_seed=3)

    warehouse = Warehouse.from_uri(uri, source_name=source_name_from_url(server.url))

    figures = scenario(server, uri, {}, warehouse, transactions=400)

    print(f"local: {figures}")  # measured figures, shown with -s


@pytest.mark.s3
def test_s3_warehouse_silver_equals_the_devserver(
    devserver_factory: Callable[..., RunningDevServer], s3_server: S3Endpoint, s3_bucket: str
) -> None:
    uri = f"s3://{s3_bucket}/convex"
    env = s3_server.env()
    # Fewer, larger pages: against moto every Delta commit costs several round trips.
    server = devserver_factory(
        seed="demo", docs=1500, snapshot_page_size=500, deltas_row_limit=400, workload_seed=4
    )

    name = source_name_from_url(server.url)
    warehouse = Warehouse.from_uri(uri, source_name=name, env=env)

    figures = scenario(server, uri, env, warehouse, transactions=200)

    assert DeltaTable(f"{uri}/{name}/_convex_cdc/checkpoints", storage_options=env).version() >= 0
    print(f"s3: {figures}")  # measured figures, shown with -s


def test_a_selection_narrows_what_extract_lands_in_bronze(
    devserver_factory: Callable[..., RunningDevServer], tmp_path: Path
) -> None:
    """`--include/--exclude` work on `databricks extract` as on `sync`."""
    uri = str(tmp_path / "warehouse")
    server = devserver_factory(seed="demo", docs=600, workload_seed=5)
    env = {"CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}

    run(["extract", "--warehouse", uri, "--exclude", "channels", "--exclude", "users.email"], env)

    warehouse = Warehouse.from_uri(uri, source_name=source_name_from_url(server.url))
    specs = TableSpecStore(warehouse).load()
    assert TableKey("", "channels") not in specs
    assert TableKey("", "users") in specs and TableKey("waitlist", "users") in specs
    assert "email" not in specs[TableKey("", "users")].columns
    assert "email" in specs[TableKey("waitlist", "users")].columns  # another table's column
    users = open_table(warehouse.bronze(TableKey("", "users")), warehouse)
    assert users is not None
    documents = read_table(users, columns=["document"]).column("document").to_pylist()
    documents = [d for d in documents if d is not None]  # a data sync's truncate has none
    assert documents and not any("email" in orjson.loads(document) for document in documents)
