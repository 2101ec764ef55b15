"""Tables dropped at the source, end to end over real HTTP with both APIs: the devserver's
``POST /_devserver/drop_table`` → sync → materialize → publish (the table is gone from the
manifest and what a reader gets, the rest equals ``/_devserver/truth``), and
databricks extract → apply-silver (silver of the dropped table is empty).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.silver import read_silver
from convex_cdc.platform.databricks.source_name import source_name_from_url
from convex_cdc.platform.databricks.table_spec import TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse
from convex_cdc.target_s3.publish.reader import read_published
from tests.e2e.cli_process import invoke_cli
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.fixtures.devserver import RunningDevServer

APIS = pytest.mark.parametrize("api", ["streaming-export", "data-sync"])
DROPPED = TableKey("", "reactions")


def drop_table(server: RunningDevServer, key: TableKey) -> None:
    body = {"table": key.table, **({"component": key.component} if key.component else {})}
    server.client.post("/_devserver/drop_table", json=body).raise_for_status()


def truth_tables(server: RunningDevServer) -> set[TableKey]:
    return {TableKey(row["component"], row["table"]) for row in server.truth()}


@APIS
def test_a_dropped_table_leaves_the_published_lake(
    devserver_factory: Callable[..., RunningDevServer], tmp_path: Path, api: str
) -> None:
    server = devserver_factory(seed="demo", docs=300)
    dest, published = tmp_path / "lake", tmp_path / "published"
    invoke_cli(server, "sync", "--dest", str(dest), "--api", api)
    invoke_cli(server, "materialize", "--dest", str(dest))
    invoke_cli(server, "publish", "--dest", str(dest), "--to", str(published))
    assert DROPPED in {t.key for t in read_published(str(published)).manifest.tables}

    server.workload(60)  # the workload writes to every table: it runs before the drop
    drop_table(server, DROPPED)
    synced = invoke_cli(server, "sync", "--dest", str(dest), "--api", api)
    materialized = invoke_cli(server, "materialize", "--dest", str(dest))
    invoke_cli(server, "publish", "--dest", str(dest), "--to", str(published))
    assert f"dropped at the source, removed from the destination: {DROPPED.qualified}" in (
        synced.output
    )
    assert f"removed tables dropped at the source: {DROPPED.qualified}" in materialized.output

    snapshot = read_published(str(published))
    assert DROPPED not in {t.key for t in snapshot.manifest.tables}
    assert DROPPED not in truth_tables(server)
    declared = {t.key: {c.name: c.type for c in t.columns} for t in snapshot.manifest.tables}
    truth = server.truth()
    assert assert_tables_equal_truth(snapshot.tables, truth, declared=declared) == len(truth) > 0


@APIS
def test_a_dropped_table_is_empty_in_silver(
    devserver_factory: Callable[..., RunningDevServer], tmp_path: Path, api: str
) -> None:
    server = devserver_factory(seed="demo", docs=300)
    uri = str(tmp_path / "warehouse")
    warehouse = Warehouse.from_uri(uri, source_name=source_name_from_url(server.url))
    invoke_cli(server, "databricks", "extract", "--warehouse", uri, "--api", api)
    invoke_cli(server, "databricks", "apply-silver", "--warehouse", uri)
    before = read_silver(warehouse, DROPPED)
    assert before is not None and before.num_rows > 0

    server.workload(60)  # the workload writes to every table: it runs before the drop
    drop_table(server, DROPPED)
    invoke_cli(server, "databricks", "extract", "--warehouse", uri, "--api", api)
    invoke_cli(server, "databricks", "apply-silver", "--warehouse", uri)

    dropped = read_silver(warehouse, DROPPED)
    assert dropped is not None and dropped.num_rows == 0
    specs = TableSpecStore(warehouse).load()
    silver = {key: read_silver(warehouse, key) for key in specs}
    tables = {key: table for key, table in silver.items() if table is not None}
    declared = {key: spec.columns for key, spec in specs.items()}
    truth = server.truth()
    assert assert_tables_equal_truth(tables, truth, declared=declared) == len(truth) > 0
