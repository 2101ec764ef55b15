"""The monitoring dashboard's queries, run on Apache Spark against a real lake, report it.

A devserver workload (inserts, replaces and deletes in an app table and a component table,
a field that turns from int64 to strings) → ``databricks extract`` twice → the rendered SQL
pipeline (SCD type 1) on Spark → more changes, extracted but not applied to silver. The
rendered ``sql/bronze_external_tables.sql`` registers the control table, its
latest-checkpoint view and the spec log (each Delta table exported through delta-rs as
parquet, as the harness does for bronze), and every dataset of the rendered dashboard runs
on the test server with the pipeline's silver schema as its default schema, which is what
the bundle resource's ``dataset_catalog``/``dataset_schema`` do on Databricks.

Every number is compared with one found without the dashboard's SQL: the devserver's truth
before and after the unapplied changes, the deletes the workload made, and the warehouse as
delta-rs reads it. "Now" needs no pinning: the checkpoint dataset returns the
``current_timestamp()`` it measured the lag against, which must lie between the moments
before and after the query. Each widget's own query over its dataset runs too, and the
silver datasets of an SCD type 2 rendering run against SCD type 2 copies of silver.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.dashboard import DASHBOARD_FILE, Dataset, datasets
from convex_cdc.platform.databricks.delta_read import open_table, read_table
from convex_cdc.platform.databricks.render import render
from convex_cdc.platform.databricks.render_options import RenderOptions
from convex_cdc.platform.databricks.spark_projection import sql_name
from tests.spark.convex_lake import DEPLOYMENT_VALUES, ConvexLake, convex_cdc
from tests.spark.silver_pipeline import Configuration, SilverPipeline
from tests.spark.spark_harness import (
    AUTO_CDC_COLUMNS,
    BRONZE_CATALOG,
    TEST_CATALOG,
    ConnectServer,
    SilverReader,
    quote,
)

if TYPE_CHECKING:
    from pyspark.sql.connect.session import SparkSession

pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark"), pytest.mark.timeout(900)]

ORDERS: Final = TableKey("", "orders")
STOCK: Final = TableKey("shop", "stock")
REMOTE_WAREHOUSE: Final = DEPLOYMENT_VALUES["--warehouse-location"]
"""Where the rendered SQL says the warehouse is; the test maps it to the local one."""
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Rows = list[dict[str, Any]]
_DELTA_LOCATION: Final = re.compile(r"USING DELTA LOCATION '([^']*)'")
_CREATES: Final = re.compile(r"CREATE (?:OR REPLACE VIEW|TABLE IF NOT EXISTS) (\S+)")
_AGGREGATE: Final = re.compile(r"(SUM|COUNT|MIN|MAX|AVG)\(", re.IGNORECASE)


# --- the workload -----------------------------------------------------------------------


def write(op: str, key: TableKey, **values: Any) -> dict[str, Any]:
    """One write of ``/_devserver/transaction``."""
    return {"op": op, "component": key.component, "table": key.table, **values}


@dataclass
class Workload:
    """What the writes so far must show."""

    deletes: Counter[TableKey]
    last_write_ts: int


def land_and_widen(lake: ConvexLake) -> Workload:
    """Two extracts: a snapshot with ``orders.qty`` an int64, then deltas in which it turns
    into strings (so the spec log holds int64, then json), with replaces and deletes."""
    first = lake.server.transact(
        [write("insert", ORDERS, fields={"item": f"o{i}", "qty": i}) for i in range(12)]
        + [write("insert", STOCK, fields={"sku": f"s{i}", "count": i}) for i in range(5)]
    )
    orders, stock = first["ids"][:12], first["ids"][12:]
    lake.replicate()
    second = lake.server.transact(
        [write("insert", ORDERS, fields={"item": f"n{i}", "qty": "lots"}) for i in range(3)]
        + [write("replace", ORDERS, id=doc, fields={"item": "x", "qty": 1}) for doc in orders[:2]]
        + [write("delete", ORDERS, id=doc) for doc in orders[2:5]]
        + [write("delete", STOCK, id=stock[0])]
    )
    lake.replicate()
    return Workload(Counter({ORDERS: 3, STOCK: 1}), int(second["ts"]))


def change_without_applying(lake: ConvexLake, workload: Workload) -> Workload:
    """A delete, two inserts and a replace, extracted to bronze but not applied to silver."""
    live = live_ids(lake.truth())
    orders, stock = sorted(live[ORDERS.qualified]), sorted(live[STOCK.qualified])
    written = lake.server.transact(
        [write("delete", ORDERS, id=orders[0])]
        + [write("insert", ORDERS, fields={"item": f"late{i}", "qty": "more"}) for i in range(2)]
        + [write("replace", STOCK, id=stock[0], fields={"sku": "s-changed", "count": 99})]
    )
    convex_cdc("databricks", "extract", "--warehouse", str(lake.warehouse_dir), env=lake.env)
    return Workload(workload.deletes + Counter({ORDERS: 1}), int(written["ts"]))


# --- Unity Catalog, as far as the dashboard needs it ------------------------------------


@dataclass
class RegisteredTables:
    """``sql/bronze_external_tables.sql`` run on Spark, each ``USING DELTA LOCATION`` of the
    rendered warehouse turned into parquet that delta-rs exports from the local table."""

    lake: ConvexLake
    export_root: Path
    names: list[str] = field(default_factory=list)
    """Every table and view the statements create."""
    exported: dict[str, Path] = field(default_factory=dict)
    """Rendered location → the parquet directory registered for it."""

    def register(self, session: SparkSession, rendered_sql: str) -> None:
        """Run the statements. Bronze is registered under the same names by the pipeline's
        feed already; those statements are skipped (Spark would look for Delta first)."""
        for statement in sql_statements(rendered_sql):
            created = _CREATES.match(statement)
            if created is not None:
                self.names.append(created.group(1))
            location = _DELTA_LOCATION.search(statement)
            if location is not None:
                assert created is not None, statement
                if session.catalog.tableExists(created.group(1)):
                    continue
                directory = self._export(location.group(1))
                session.sql(
                    _DELTA_LOCATION.sub(f"USING parquet LOCATION '{directory}'", statement)
                ).collect()
                continue
            session.sql(statement).collect()

    def refresh(self, session: SparkSession) -> None:
        """Export every Delta table again and have Spark list all files anew."""
        for location in self.exported:
            self._export(location)
        for name in self.names:
            session.sql(f"REFRESH TABLE {name}").collect()

    def _export(self, remote: str) -> Path:
        local = str(self.lake.warehouse_dir) + remote.removeprefix(REMOTE_WAREHOUSE)
        table = open_table(local, self.lake.warehouse)
        assert table is not None, f"no Delta table at {local} (rendered as {remote})"
        directory = self.exported.setdefault(remote, self.export_root / str(len(self.exported)))
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / ".data.parquet.partial"  # hidden from Spark until renamed
        pq.write_table(read_table(table), partial)
        partial.replace(directory / "data.parquet")
        return directory


def sql_statements(text: str) -> list[str]:
    """The statements of a rendered SQL file: split at ``;`` outside string literals, with
    ``--`` comment lines dropped."""
    statements: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for line in text.splitlines(keepends=True):
        if not quoted and line.lstrip().startswith("--"):
            continue
        for char in line:
            if quoted:
                quoted = escaped or char != "'"
                escaped = not escaped and char == "\\"
            elif char == "'":
                quoted = True
            elif char == ";":
                statements.append("".join(current).strip())
                current = []
                continue
            current.append(char)
    statements.append("".join(current).strip())
    return [statement for statement in statements if statement]


def test_rendered_sql_splits_at_semicolons_outside_string_literals() -> None:
    text = "-- a; comment\nSELECT 'x;y', 'it\\'s;' FROM t;\n-- c\nCREATE x;\n"

    assert sql_statements(text) == ["SELECT 'x;y', 'it\\'s;' FROM t", "CREATE x"]


# --- running the dashboard --------------------------------------------------------------


def dataset_sql(dataset: Mapping[str, Any]) -> str:
    return "".join(dataset["queryLines"])


def run_datasets(
    session: SparkSession, dashboard: Mapping[str, Any], silver: tuple[str, str]
) -> dict[str, Rows]:
    """Every dataset's rows, with ``silver`` (catalog, schema) as the default schema."""
    session.sql(f"USE {quote(silver[0])}.{quote(silver[1])}").collect()
    return {
        dataset["name"]: session.sql(dataset_sql(dataset)).toArrow().to_pylist()
        for dataset in dashboard["datasets"]
    }


def widget_queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str, list[str]]]:
    """(widget, SQL, field names) of every widget query, run the way Lakeview runs it over
    its dataset: the fields' expressions, grouped by the others if some aggregate."""
    sql_of = {dataset["name"]: dataset_sql(dataset) for dataset in dashboard["datasets"]}
    for page in dashboard["pages"]:
        for item in page["layout"]:
            widget = item["widget"]
            for query in widget.get("queries", []):
                spec = query["query"]
                fields = spec["fields"]
                select = ", ".join(f"{f['expression']} AS {quote(f['name'])}" for f in fields)
                sql = f"SELECT {select} FROM (\n{sql_of[spec['datasetName']]}\n) AS dataset"  # noqa: S608
                groups = [f["expression"] for f in fields if not _AGGREGATE.match(f["expression"])]
                if not spec["disaggregated"] and groups:
                    sql += "\nGROUP BY " + ", ".join(groups)
                yield widget["name"], sql, [f["name"] for f in fields]


def copy_silver_as_scd2(
    session: SparkSession, silver: tuple[str, str], keys: Sequence[TableKey]
) -> str:
    """Each silver table as an SCD type 2 target holds it: every current row open (no
    ``__END_AT``), plus a closed older version of it that no count may include. Returns
    the ``spark_catalog`` schema of the copies."""
    schema = f"{silver[1]}_scd2"
    session.sql(f"CREATE DATABASE {BRONZE_CATALOG}.{quote(schema)}").collect()
    for key in keys:
        source = f"{quote(silver[0])}.{quote(silver[1])}.{quote(sql_name(key))}"
        kept = [c for c in session.table(source).columns if c not in AUTO_CDC_COLUMNS]
        columns = ", ".join(map(quote, kept))
        session.sql(
            f"CREATE TABLE {BRONZE_CATALOG}.{quote(schema)}.{quote(sql_name(key))} "  # noqa: S608
            f"USING parquet AS SELECT {columns}, _ts AS __START_AT, "
            f"CAST(NULL AS BIGINT) AS __END_AT FROM {source} "
            f"UNION ALL SELECT {columns}, _ts - 1 AS __START_AT, _ts AS __END_AT FROM {source}"
        ).collect()
    return schema


# --- what the numbers must be -----------------------------------------------------------


def live_ids(truth: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Convex table → ``_id`` → ``_ts`` of every live document."""
    tables: dict[str, dict[str, int]] = {}
    for doc in truth:
        key = TableKey(doc["component"], doc["table"])
        tables.setdefault(key.qualified, {})[doc["_id"]] = doc["_ts"]
    return tables


def keys_changed(before: Mapping[str, int], after: Mapping[str, int]) -> int:
    """Keys whose live state (there or not, and at which ``_ts``) differs between two
    truths: exactly the keys silver built from ``before`` has not caught up on."""
    return sum(1 for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def delta_rows(lake: ConvexLake, location: str, columns: Sequence[str]) -> Rows:
    table = open_table(location, lake.warehouse)
    assert table is not None, f"no Delta table at {location}"
    rows: Rows = read_table(table, columns=columns).to_pylist()
    return rows


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def widened_in_spec_log(log: Rows) -> set[tuple[str, str, str]]:
    """(Convex table, column, last scalar type) of every column the spec log holds as json
    in one row and as a scalar type in another."""
    seen: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
    for row in log:
        table = TableKey(row["component"], row["table"]).qualified
        for column, kind in json.loads(row["columns"]).items():
            seen.setdefault((table, column), []).append((row["saved_at"], kind))
    widened = set()
    for (table, column), kinds in seen.items():
        scalars = [kind for _, kind in sorted(kinds) if kind not in ("null", "json")]
        if scalars and any(kind == "json" for _, kind in kinds):
            widened.add((table, column, scalars[-1]))
    return widened


def by_table(rows: Rows) -> dict[str, dict[str, Any]]:
    return {row["convex_table"]: row for row in rows}


# --- the test ---------------------------------------------------------------------------


def test_every_dashboard_query_runs_on_spark_and_reports_the_lake(
    convex_lake: Callable[..., ConvexLake],
    spark_server: ConnectServer,
    spark: SilverReader,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    lake = convex_lake(export=False)
    workload = land_and_widen(lake)
    pipeline = SilverPipeline(
        Configuration("sql", "bronze", 1), lake, spark_server, spark, tmp_path / "spark"
    )
    pipeline.run()
    truth_in_silver = live_ids(lake.truth())
    assert pipeline.feed is not None
    silver = (TEST_CATALOG, pipeline.project.silver_schema)
    options = RenderOptions(
        source_name=lake.warehouse.source_name,
        catalog=BRONZE_CATALOG,
        bronze_schema=pipeline.feed.schema,
        silver_schema=pipeline.project.silver_schema,
        warehouse=REMOTE_WAREHOUSE,
        convex_url=lake.server.url,
        project_dir=DEPLOYMENT_VALUES["--project-dir"],
    )
    specs = list(lake.specs().values())
    files = render(specs, options)
    dashboard = json.loads(files[DASHBOARD_FILE])
    reader = SilverReader(spark_server)  # a session of its own: USE changes its schema
    session = reader.session
    try:
        registered = RegisteredTables(lake, tmp_path / "uc")
        registered.register(session, files["sql/bronze_external_tables.sql"])

        # Right after the pipeline run, silver holds everything bronze holds.
        caught_up = by_table(run_datasets(session, dashboard, silver)["silver_tables"])
        stale = {table: row["stale_rows"] for table, row in caught_up.items()}
        assert stale == {ORDERS.qualified: 0, STOCK.qualified: 0}

        workload = change_without_applying(lake, workload)
        pipeline.feed.export(spark, lake.specs())
        registered.refresh(session)
        before = datetime.now(UTC)
        results = run_datasets(session, dashboard, silver)
        after = datetime.now(UTC)

        assert_columns_as_declared(results, datasets(specs, options))
        assert_checkpoint(results["checkpoint"], lake, workload, before, after)
        assert_activity(results["activity_per_hour"], lake)
        assert_bronze(results["bronze_tables"], lake, workload)
        assert_silver(results["silver_tables"], truth_in_silver, live_ids(lake.truth()))
        assert_freshness(results["pipeline_freshness"], truth_in_silver, lake)
        assert_widened(results["widened_columns"], lake)
        for widget, sql, fields in widget_queries(dashboard):
            assert session.sql(sql).toArrow().column_names == fields, widget

        # An SCD type 2 rendering counts only the current version of each key.
        scd2_schema = copy_silver_as_scd2(session, silver, sorted(lake.specs()))
        scd2 = json.loads(render(specs, replace(options, scd_type=2))[DASHBOARD_FILE])
        scd2_results = run_datasets(session, scd2, (BRONZE_CATALOG, scd2_schema))
        for name in ("silver_tables", "pipeline_freshness"):
            assert scd2_results[name] == results[name], name
    finally:
        reader.stop()
    print(f"dashboard on Spark: {time.monotonic() - started:.1f}s")  # shown with -s


def assert_columns_as_declared(results: Mapping[str, Rows], declared: Sequence[Dataset]) -> None:
    """Each dataset returns rows, with exactly the columns the dashboard module declares
    (the ones its widgets read)."""
    columns = {dataset.name: dataset.columns for dataset in declared}
    assert set(results) == set(columns)
    for name, rows in results.items():
        assert rows, f"{name} returned no rows"
        assert tuple(rows[0]) == columns[name], name


def assert_checkpoint(
    rows: Rows, lake: ConvexLake, workload: Workload, before: datetime, after: datetime
) -> None:
    control = delta_rows(
        lake,
        lake.warehouse.checkpoints,
        ["save_seq", "batch_seq", "consistent_as_of", "updated_at"],
    )
    latest = max(control, key=lambda saved: saved["save_seq"])
    first_saved = min(r["updated_at"] for r in control if r["batch_seq"] == latest["batch_seq"])
    (row,) = rows
    assert (row["source"], row["deployment_url"]) == (lake.source_name, lake.server.url)
    assert (row["phase"], row["reason"]) == ("delta", "save")
    assert row["batch_seq"] == latest["batch_seq"] == 3
    assert row["batch_committed_at"] == first_saved
    assert row["saved_at"] == latest["updated_at"]
    assert row["consistent_as_of"] == latest["consistent_as_of"]
    # The extract after the last write saw it: the landed data is consistent as of it.
    assert row["consistent_as_of"] >= workload.last_write_ts
    assert micros(row["consistent_as_of_at"]) == row["consistent_as_of"] // 1000

    checked_at = micros(row["checked_at"])
    assert micros(before) <= checked_at <= micros(after)
    lag = checked_at - row["consistent_as_of"] // 1000
    assert lag > 0
    assert row["lag_seconds"] == pytest.approx(lag / 1e6, abs=1e-6)
    assert row["lag_minutes"] == pytest.approx(lag / 6e7, abs=1e-8)
    lag_at_save = micros(latest["updated_at"]) - row["consistent_as_of"] // 1000
    assert row["lag_at_save_seconds"] == pytest.approx(lag_at_save / 1e6, abs=1e-6)
    since_save = checked_at - micros(latest["updated_at"])
    assert row["minutes_since_save"] == pytest.approx(since_save / 6e7, abs=1e-8)


def assert_activity(rows: Rows, lake: ConvexLake) -> None:
    saves = delta_rows(lake, lake.warehouse.checkpoints, ["batch_seq"])
    batches = {saved["batch_seq"] for saved in saves if saved["batch_seq"] > 0}
    events = []
    for key in (ORDERS, STOCK):
        events += delta_rows(lake, lake.warehouse.bronze(key), ["_deleted"])
    # However the hours fall, the hourly rows add up to the whole (all of it is recent).
    assert sum(row["batches"] for row in rows) == len(batches) == 3
    assert sum(row["change_events"] for row in rows) == len(events)
    assert sum(row["deletes"] for row in rows) == sum(e["_deleted"] for e in events)
    assert sum(row["checkpoint_saves"] for row in rows) == len(saves)
    assert [row["hour"] for row in rows] == sorted(row["hour"] for row in rows)


def assert_bronze(rows: Rows, lake: ConvexLake, workload: Workload) -> None:
    got = by_table(rows)
    assert list(got) == [ORDERS.qualified, STOCK.qualified]
    for key in (ORDERS, STOCK):
        bronze = pa.Table.from_pylist(
            delta_rows(lake, lake.warehouse.bronze(key), ["_batch", "_ts", "_deleted"])
        )
        row = got[key.qualified]
        assert row["change_events"] == bronze.num_rows
        assert row["deletes"] == workload.deletes[key]
        assert row["last_batch"] == pc.max(bronze.column("_batch")).as_py() == 3
        assert row["last_change_ts"] == pc.max(bronze.column("_ts")).as_py()
        assert micros(row["last_change_at"]) == row["last_change_ts"] // 1000


def assert_silver(
    rows: Rows,
    in_silver: Mapping[str, Mapping[str, int]],
    in_bronze: Mapping[str, Mapping[str, int]],
) -> None:
    got = by_table(rows)
    assert list(got) == [ORDERS.qualified, STOCK.qualified]
    for table, row in got.items():
        assert row["silver_rows"] == len(in_silver[table])
        assert row["expected_rows"] == len(in_bronze[table])
        assert row["stale_rows"] == keys_changed(in_silver[table], in_bronze[table]) > 0
        assert row["silver_last_ts"] == max(in_silver[table].values())
        assert row["bronze_last_ts"] >= max(in_bronze[table].values())


def assert_freshness(
    rows: Rows, in_silver: Mapping[str, Mapping[str, int]], lake: ConvexLake
) -> None:
    control = delta_rows(lake, lake.warehouse.checkpoints, ["save_seq", "consistent_as_of"])
    consistent_as_of = max(control, key=lambda saved: saved["save_seq"])["consistent_as_of"]
    newest = max(ts for table in in_silver.values() for ts in table.values())
    (row,) = rows
    assert row["silver_last_ts"] == newest
    assert row["consistent_as_of"] == consistent_as_of
    behind = row["silver_behind_checkpoint_minutes"]
    assert behind == pytest.approx((consistent_as_of - newest) / 6e10) and behind > 0


def assert_widened(rows: Rows, lake: ConvexLake) -> None:
    log = delta_rows(
        lake, lake.warehouse.table_specs, ["component", "table", "columns", "saved_at"]
    )
    got = {(row["convex_table"], row["column_name"], row["type_before"]) for row in rows}
    assert got == widened_in_spec_log(log) == {(ORDERS.qualified, "qty", "int64")}
    first_json = min(
        r["saved_at"]
        for r in log
        if r["table"] == ORDERS.table and json.loads(r["columns"]).get("qty") == "json"
    )
    assert [row["widened_at"] for row in rows] == [first_json]
