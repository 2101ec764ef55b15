"""`render --published`: the SQL that registers the S3/export target's published tables in
Unity Catalog points each table at the Delta table publish keeps for it.

Spark here cannot read Delta, so the rendered SQL is not run; instead every LOCATION it
names is opened with delta-rs on the same S3 endpoint (moto's server) and must hold exactly
the devserver's truth for that table, with deletes applied and the type change typed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from convex_cdc.core.errors import ConfigError
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.published_tables import PUBLISHED_TABLES_FILE
from convex_cdc.platform.databricks.render import render
from convex_cdc.platform.databricks.render_options import RenderOptions
from convex_cdc.platform.databricks.source_name import SourceName
from convex_cdc.platform.databricks.table_spec import TableSpec
from convex_cdc.target_s3.publish.reader import read_published
from tests.e2e.cli_process import invoke_cli
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.fixtures.moto_s3 import S3Endpoint

_REGISTERED = re.compile(r"CREATE TABLE IF NOT EXISTS (\S+)\s+USING DELTA LOCATION '([^']+)';")


def read_location(location: str, s3: S3Endpoint) -> pa.Table:
    env = s3.env()
    options = {
        "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": env["AWS_REGION"],
    }
    table = DeltaTable(location, storage_options=options)
    batches = QueryBuilder().register("t", table).execute("SELECT * FROM t")
    read = pa.RecordBatchReader.from_stream(batches).read_all()
    # Delta readers hand out view types; the truth comparison wants plain ones.
    return read.cast(
        pa.schema(
            [
                f.with_type(pa.string() if f.type == pa.string_view() else f.type)
                for f in read.schema
            ]
        )
    )


def test_every_registered_location_is_the_published_current_state(
    devserver_factory: Any,
    tmp_path: Path,
    s3_env: S3Endpoint,
    s3_bucket: str,
) -> None:
    server = devserver_factory(seed="demo", docs=400)
    dest, to = tmp_path / "lake", f"s3://{s3_bucket}/export"
    invoke_cli(server, "sync", "--dest", str(dest))
    server.workload(80)  # deletes, the type change, a table created later
    invoke_cli(server, "run", "--dest", str(dest), "--to", to)
    manifest = read_published(to).manifest
    tables = ",".join(TableKey(t.component, t.table).qualified for t in manifest.tables)

    out = tmp_path / "bundle"
    invoke_cli(
        server,
        "databricks", "render", "--out", str(out), "--tables", tables, "--feed", "s3-export",
        "--raw-change-log", f"{to}/raw_change_log", "--published", to,
    )  # fmt: skip

    sql = (out / PUBLISHED_TABLES_FILE).read_text()
    registered = dict(_REGISTERED.findall(sql))
    assert len(registered) == len(manifest.tables)
    assert all(name.startswith("`main`.`convex_host_127_0_0_1_") for name in registered)
    lake = {}
    for location in registered.values():
        assert location.startswith(f"{to}/staging/")
        rows = read_location(location, s3_env)
        component, _, table = location.removeprefix(f"{to}/staging/").rpartition(".")
        lake[TableKey(component.replace(".", "/"), table)] = rows
    declared = {
        TableKey(t.component, t.table): {c.name: c.type for c in t.columns} for t in manifest.tables
    }
    compared = assert_tables_equal_truth(lake, server.truth(), declared=declared)
    assert compared == len(server.truth())


SPEC = [TableSpec(TableKey("", "messages"), keep_document=True)]


@pytest.mark.parametrize(
    "published",
    ["/tmp/lake", "file:///tmp/lake", "published", "s3://b/x\nDROP SCHEMA main.other;"],
)
def test_a_location_databricks_cannot_read_is_refused(published: str) -> None:
    options = RenderOptions(
        source_name=SourceName("app"), feed="s3-export", raw_change_log="s3://b/raw",
        published=published,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="--published"):
        render(SPEC, options)


def test_a_quote_in_the_location_cannot_break_out_of_the_statement() -> None:
    options = RenderOptions(
        source_name=SourceName("app"), feed="s3-export", raw_change_log="s3://b/raw",
        published="s3://b/it's",
    )  # fmt: skip
    sql = render(SPEC, options)[PUBLISHED_TABLES_FILE]
    assert "LOCATION 's3://b/it\\'s/staging/messages';" in sql
    assert "`main`.`convex_app_published`.`messages`" in sql


def test_no_published_tables_without_the_flag() -> None:
    options = RenderOptions(
        source_name=SourceName("app"), feed="s3-export", raw_change_log="s3://b/raw"
    )
    assert PUBLISHED_TABLES_FILE not in render(SPEC, options)
