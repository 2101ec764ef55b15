"""One devserver deployment replicated the ways a Databricks pipeline can consume it.

``databricks extract`` lands bronze; ``sync`` → ``materialize`` → ``publish
--include-raw`` publishes the raw change log (the ``s3-export`` change feed) to a local
directory; ``apply-silver`` builds the local silver tables the Spark ones must equal.
Every command runs in-process through the CLI, as a user would run it.

Spark cannot read Delta here, so :class:`BronzeFeed` exports bronze through delta-rs:
each export reads the committed bronze version and writes the rows of batches not yet
exported as a new parquet file of a ``spark_catalog`` table, which the pipeline streams
like the Unity Catalog external table it stands for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from click.testing import CliRunner

from convex_cdc.cli import cli
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.delta_read import open_table, read_table
from convex_cdc.platform.databricks.silver import read_silver
from convex_cdc.platform.databricks.source_name import SourceName, source_name_from_url
from convex_cdc.platform.databricks.spark_projection import sql_name
from convex_cdc.platform.databricks.table_spec import TableSpec, TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.fixtures.devserver import RunningDevServer
from tests.spark.spark_harness import BRONZE_CATALOG, Language, SilverReader, quote

DEPLOYMENT_VALUES: Final = {
    "--location": "s3://convex-cdc-test/warehouse",
    "--warehouse-location": "s3://convex-cdc-test/warehouse",
    "--raw-change-log": "s3://convex-cdc-test/export/raw_change_log",
    "--project-dir": str(Path(__file__).resolve().parents[2]),  # this checkout
}
"""Values the bundle needs (job, variables) and a pipeline run never reads: the run's
configuration is filled by the test (:func:`~tests.spark.spark_harness.pipeline_configuration`)."""


def convex_cdc(*args: str, env: Mapping[str, str]) -> str:
    """Run ``convex-cdc *args`` in-process; returns its output."""
    result = CliRunner().invoke(cli, list(args), env=dict(env), catch_exceptions=False)
    assert result.exit_code == 0, f"convex-cdc {' '.join(args)}:\n{result.output}"
    return result.output


def render_options() -> set[str]:
    """The flags ``convex-cdc databricks render`` declares."""
    import click

    group = cli.commands["databricks"]
    assert isinstance(group, click.Group)
    return {opt for param in group.commands["render"].params for opt in param.opts}


@dataclass
class ConvexLake:
    """A devserver and everything replicated from it under ``root``."""

    server: RunningDevServer
    root: Path
    export: bool = True
    """Also sync and publish the raw change log (the ``s3-export`` change feed)."""

    @property
    def env(self) -> dict[str, str]:
        # The legacy pair: Apache Spark's AUTO CDC has no APPLY AS TRUNCATE (the harness
        # removes the clause), so a data sync's truncate rows would become silver rows
        # here while Databricks applies them as truncates.
        return {
            "CONVEX_URL": self.server.url,
            "CONVEX_DEPLOY_KEY": self.server.key,
            "CONVEX_CDC_API": "streaming-export",
        }

    @property
    def warehouse_dir(self) -> Path:
        return self.root / "warehouse"

    @property
    def source_name(self) -> SourceName:
        """The deployment's source name in the warehouse (derived from its URL)."""
        return source_name_from_url(self.server.url)

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse.from_uri(str(self.warehouse_dir), source_name=self.source_name)

    @property
    def raw_change_log(self) -> Path:
        """The published raw change log (``<published>/raw_change_log/<table-dir>/``)."""
        return self.root / "published" / "raw_change_log"

    def replicate(self) -> None:
        """Bring bronze, the published raw change log and local silver up to date."""
        convex_cdc("databricks", "extract", "--warehouse", str(self.warehouse_dir), env=self.env)
        if self.export:
            dest = str(self.root / "lake")
            convex_cdc("sync", "--dest", dest, env=self.env)
            convex_cdc("materialize", "--dest", dest, env=self.env)
            published = str(self.root / "published")
            convex_cdc("publish", "--dest", dest, "--to", published, "--include-raw", env=self.env)
        convex_cdc(
            "databricks", "apply-silver", "--warehouse", str(self.warehouse_dir),
            "--source", self.source_name, env={},
        )  # fmt: skip

    def specs(self) -> dict[TableKey, TableSpec]:
        """The warehouse's table specs (the typed columns silver has)."""
        return TableSpecStore(self.warehouse).load()

    def apply_silver(self) -> dict[TableKey, pa.Table]:
        """The local silver tables ``apply-silver`` built."""
        tables = {}
        for key in self.specs():
            table = read_silver(self.warehouse, key)
            assert table is not None, f"apply-silver built no table for {key.qualified}"
            tables[key] = table
        return tables

    def truth(self) -> list[dict[str, Any]]:
        return self.server.truth()

    def render(self, out: Path, *, feed: str, scd_type: int, language: Language) -> Path:
        """``convex-cdc databricks render`` of the warehouse's spec into ``out``.

        Deployment values are passed for the flags this version of ``render`` declares.
        """
        args = [
            "databricks",
            "render",
            "--warehouse",
            str(self.warehouse_dir),
            "--out",
            str(out),
            "--feed",
            feed,
            "--scd-type",
            str(scd_type),
            "--language",
            language,
        ]
        declared = render_options()
        for flag, value in {**DEPLOYMENT_VALUES, "--url": self.server.url}.items():
            if flag in declared:
                args += [flag, value]
        convex_cdc(*args, env={})
        return out


@dataclass
class BronzeFeed:
    """Bronze as parquet tables in ``spark_catalog.<schema>``, exported through delta-rs."""

    warehouse: Warehouse
    root: Path
    schema: str
    exported: dict[TableKey, int] = field(default_factory=dict)
    """The last ``_batch`` exported per table."""

    def export(self, spark: SilverReader, tables: Mapping[TableKey, TableSpec]) -> int:
        """Export what bronze committed since the last export; returns the rows exported."""
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {BRONZE_CATALOG}.{quote(self.schema)}")
        exported = 0
        for key in sorted(tables):
            bronze = open_table(self.warehouse.bronze(key), self.warehouse)
            assert bronze is not None, f"no bronze table for {key.qualified}"
            last = self.exported.get(key, -1)
            rows = read_table(bronze, where=f"_batch > {last}", order_by=["_batch", "_ts"])
            if rows.num_rows == 0:
                continue
            directory = self.root / sql_name(key)
            first, newest = pc.min_max(rows.column("_batch")).values()
            name = f"batches-{first.as_py():012d}-{newest.as_py():012d}.parquet"
            _write_atomically(rows, directory / name)
            if key not in self.exported:
                spark.sql(
                    f"CREATE TABLE {BRONZE_CATALOG}.{quote(self.schema)}.{quote(sql_name(key))}"
                    f" USING parquet LOCATION '{directory.as_posix()}'"
                )
            self.exported[key] = int(newest.as_py())
            exported += rows.num_rows
        return exported


def _write_atomically(table: pa.Table, path: Path) -> None:
    """Write a parquet file under a hidden name, then rename it into place: Spark's file
    source skips names starting with ``.``, so it never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    pq.write_table(table, partial)
    partial.replace(path)
