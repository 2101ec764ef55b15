"""The rendered Lakeflow pipelines, run for real on Apache Spark, build the right silver.

For each rendering (Python or SQL, SCD type 1 or 2, from bronze or from the S3/export
raw change log): a devserver workload with every value kind, component tables, deletes,
a field that widens to JSON and a table created later → ``databricks extract`` (and
``sync`` → ``publish --include-raw``) → ``render`` → ``spark-pipelines run`` → the silver
tables equal ``/_devserver/truth`` and ``apply-silver`` value for value. Then more
workload → re-render → an incremental run → equal again.

What runs is Spark's own: the pipeline CLI, the dataflow graph, AUTO CDC's ordering,
deletes and SCD bookkeeping. Only storage is doubled (see ``tests/spark/java``).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.platform.databricks.delta_read import open_table, read_table
from convex_cdc.platform.databricks.spark_projection import sql_name
from convex_cdc.platform.databricks.table_spec import TableSpec
from tests.spark.convex_lake import ConvexLake
from tests.spark.silver_equality import (
    SilverMismatch,
    assert_silver_equal,
    table_rows,
    truth_rows,
)
from tests.spark.silver_pipeline import Configuration, SilverPipeline
from tests.spark.spark_harness import TEST_CATALOG, ConnectServer, SilverReader, quote

# One worker runs them all against one server; a run with an SCD type 2 pipeline takes
# minutes on a loaded 2-core machine, so the suite's 300 s default is too short.
pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark"), pytest.mark.timeout(1200)]

EVERY_CONFIGURATION = [
    Configuration(language, feed, scd_type)
    for language in ("python", "sql")
    for feed in ("bronze", "s3-export")
    for scd_type in (1, 2)
]
EVERY_PAIR = [
    Configuration("python", "bronze", 1),
    Configuration("sql", "s3-export", 1),
    Configuration("python", "s3-export", 2),
    Configuration("sql", "bronze", 2),
]
"""Every pair of choices (language and SCD type, language and feed, SCD type and feed) runs
at least once; an SCD type 2 run costs about three SCD type 1 runs. Set
``CONVEX_CDC_SPARK_CONFIGURATIONS=all`` to run all eight."""
CONFIGURATIONS = (
    EVERY_CONFIGURATION
    if os.environ.get("CONVEX_CDC_SPARK_CONFIGURATIONS") == "all"
    else EVERY_PAIR
)

WORKLOAD = {"seed": "demo", "docs": 600, "snapshot_page_size": 250, "workload_seed": 3}
FIRST_TRANSACTIONS = 60
"""Covers the first ``attachments`` insert (transaction 10, a table created later) and
``tasks.estimate`` turning from int64 to strings (transaction 40, a widening to JSON)."""
MORE_TRANSACTIONS = 40

ALL_KINDS = {
    ColumnType.STRING,
    ColumnType.INT64,
    ColumnType.FLOAT64,
    ColumnType.BOOL,
    ColumnType.BINARY,
    ColumnType.JSON,
}


def assert_spark_silver_equals_truth_and_apply_silver(
    pipeline: SilverPipeline, lake: ConvexLake, *, after: str
) -> int:
    """Both comparisons, reported together; returns the rows compared."""
    silver, specs = pipeline.silver(), lake.specs()
    expectations = {
        "truth": truth_rows(lake.truth(), specs),
        "apply-silver": {key: table_rows(table) for key, table in lake.apply_silver().items()},
    }
    outcomes, failed, compared = [], False, 0
    for name, expected in expectations.items():
        try:
            compared = assert_silver_equal(
                silver, expected, specs, got_name="spark", want_name=name
            )
            outcomes.append(f"spark equals {name} ({compared} rows)")
        except SilverMismatch as exc:
            outcomes.append(str(exc))
            failed = True
    if failed:
        raise SilverMismatch(
            f"[{pipeline.configuration.name}, after {after}] " + "; ".join(outcomes)
        )
    return compared


def assert_the_workload_has_what_the_test_claims(lake: ConvexLake) -> None:
    """The module docstring's claims hold (another seed or workload could drop one)."""
    specs = lake.specs()
    kinds = {kind for spec in specs.values() for kind in spec.typed_columns.values()}
    assert kinds >= ALL_KINDS, f"value kinds missing from the workload: {ALL_KINDS - kinds}"
    assert any(key.component for key in specs), "no component table"
    assert specs[TableKey("", "tasks")].typed_columns["estimate"] is ColumnType.JSON
    assert TableKey("", "attachments") in specs, "the late table never appeared"
    deletes = 0
    for key in specs:
        bronze = open_table(lake.warehouse.bronze(key), lake.warehouse)
        assert bronze is not None
        deletes += read_table(bronze, columns=["_id"], where="_deleted").num_rows
    assert deletes > 0, "the workload deleted nothing"


@pytest.mark.parametrize("configuration", CONFIGURATIONS, ids=lambda c: c.name)
def test_the_rendered_pipeline_builds_silver_equal_to_the_devserver_and_apply_silver(
    configuration: Configuration,
    convex_lake: Callable[..., ConvexLake],
    spark_server: ConnectServer,
    spark: SilverReader,
    tmp_path: Path,
) -> None:
    lake = convex_lake(export=configuration.feed == "s3-export", **WORKLOAD)
    lake.replicate()  # the snapshot
    lake.server.workload(FIRST_TRANSACTIONS)
    lake.replicate()
    assert_the_workload_has_what_the_test_claims(lake)
    pipeline = SilverPipeline(configuration, lake, spark_server, spark, tmp_path / "spark")

    first_run = pipeline.run()
    print(f"{configuration.name}: first run {first_run.seconds:.1f}s")  # shown with -s
    first = assert_spark_silver_equals_truth_and_apply_silver(pipeline, lake, after="the first run")

    types_before = {key: dict(spec.typed_columns) for key, spec in lake.specs().items()}
    lake.server.workload(MORE_TRANSACTIONS)
    lake.replicate()
    for key, spec in lake.specs().items():
        for column, kind in types_before.get(key, {}).items():
            # A retyped column needs a full refresh, not the incremental run tested here.
            assert spec.typed_columns[column] is kind, f"{key.qualified}.{column} was retyped"

    update = pipeline.run()  # reads only what bronze / the change log added since
    print(f"{configuration.name}: incremental run {update.seconds:.1f}s")
    second = assert_spark_silver_equals_truth_and_apply_silver(
        pipeline, lake, after="the incremental run"
    )

    assert first > 0 and second > 0


# --- the check catches Apache Spark's NULL columns ----------------------------------------

KINDS_DOCUMENT: Mapping[str, Any] = {
    "text": "héllo ✓",
    "count": 2**53 + 1,
    "ratio": -0.0,
    "nan": {"$float": "AAAAAAAA+H8="},
    "flag": True,
    "blob": {"$bytes": "AQID"},
    "nested": {"a": [1, 2.5, {"$bytes": "AQI="}], "b": None},
}

_VIEW = re.compile(
    r"CREATE TEMPORARY VIEW\s+(?P<view>\S+)\s+AS\b.*?"
    r"(?=\n\s*CREATE (?:OR REFRESH )?STREAMING TABLE)",
    re.DOTALL,
)
_BRACKET_QUOTED: Mapping[ColumnType, str] = {
    ColumnType.STRING: "get_json_object(document, '$[\"{f}\"]')",
    ColumnType.JSON: "get_json_object(document, '$[\"{f}\"]')",
    ColumnType.INT64: "CAST(get_json_object(document, '$[\"{f}\"]') AS BIGINT)",
    ColumnType.FLOAT64: "CAST(get_json_object(document, '$[\"{f}\"]') AS DOUBLE)",
    ColumnType.BOOL: "CAST(get_json_object(document, '$[\"{f}\"]') AS BOOLEAN)",
    ColumnType.BINARY: 'unbase64(get_json_object(document, \'$["{f}"]["$bytes"]\'))',
}
"""How the rendered sources used to read typed columns: JSONPath in bracket-quote form,
which Databricks accepts and Apache Spark answers with NULL."""


def bracket_quoted_views(specs: Mapping[TableKey, TableSpec]) -> Callable[[str], str]:
    """An edit of the rendered SQL that swaps every source view for one reading the
    spec's columns through ``$["field"]`` JSON paths (tables and flows stay as rendered)."""
    tables = {sql_name(key): spec for key, spec in specs.items()}

    def edit(sql: str) -> str:
        def view(match: re.Match[str]) -> str:
            name = match.group("view").strip("`").removesuffix("__changes")
            columns = "".join(
                f",\n  {_BRACKET_QUOTED[c.type].format(f=c.name)} AS `{c.name}`"
                for c in tables[name].column_specs()
                if c.name not in ("_id", "_ts")
            )
            source = f"STREAM(${{convex.bronze_catalog}}.${{convex.bronze_schema}}.`{name}`)"
            return (
                f"CREATE TEMPORARY VIEW {match.group('view')} AS\n"
                f"SELECT _id, _ts, _deleted, _op, _batch{columns}\nFROM {source};\n"
            )

        edited, views = _VIEW.subn(view, sql)
        assert views == len(tables), f"found {views} source views for {len(tables)} tables"
        return edited

    return edit


def test_a_pipeline_whose_json_paths_read_null_on_spark_fails_the_equality_check(
    convex_lake: Callable[..., ConvexLake],
    spark_server: ConnectServer,
    spark: SilverReader,
    tmp_path: Path,
) -> None:
    lake = convex_lake(export=False)
    lake.server.transact(
        [{"op": "insert", "table": "kinds", "fields": dict(KINDS_DOCUMENT)} for _ in range(3)]
    )
    lake.replicate()
    pipeline = SilverPipeline(
        Configuration("sql", "bronze", 1), lake, spark_server, spark, tmp_path / "spark"
    )

    pipeline.run(edit=bracket_quoted_views(lake.specs()))

    with pytest.raises(SilverMismatch) as mismatch:
        assert_silver_equal(
            pipeline.silver(),
            truth_rows(lake.truth(), lake.specs()),
            lake.specs(),
            got_name="spark",
            want_name="truth",
        )
    report = str(mismatch.value)
    for column in ("_creationTime", *KINDS_DOCUMENT):
        assert f"kinds.{column}: 3 of 3 values differ (3 of them NULL in spark)" in report, report


# --- the storage double itself ------------------------------------------------------------


def test_the_test_catalog_merges_and_keeps_every_value_bit_for_bit(
    spark: SilverReader, tmp_path: Path
) -> None:
    schema = f"catalog_{tmp_path.name.replace('-', '_')}"
    table = f"{TEST_CATALOG}.{quote(schema)}.t"
    nan_with_payload = struct.unpack("<d", bytes.fromhex("0100000000f8ff7f"))[0]
    rows = pa.table(
        {
            "id": ["a", "b", "c"],
            "f": [nan_with_payload, -0.0, 5e-324],
            "n": [2**63 - 1, -(2**63), 2**53 + 1],
            "b": [b"\x00\xff", b"", None],
            "s": ['{"x":-0.0}', "", None],
        }
    )
    spark.sql(f"CREATE TABLE {table} (id STRING, f DOUBLE, n BIGINT, b BINARY, s STRING)")
    spark.session.createDataFrame(rows).writeTo(table).append()
    changes = pa.table({"id": ["b", "d"], "n": [7, 8]})
    spark.session.createDataFrame(changes).createOrReplaceTempView("changes")
    spark.sql(
        f"MERGE INTO {table} t USING changes c ON t.id = c.id "  # noqa: S608 -- our own names
        "WHEN MATCHED THEN UPDATE SET t.n = c.n "
        "WHEN NOT MATCHED THEN INSERT (id, n) VALUES (c.id, c.n)"
    )
    spark.sql(f"DELETE FROM {table} WHERE id = 'c'")  # noqa: S608 -- our own names

    back = spark.session.table(table).orderBy("id").toArrow()

    assert back.column("id").to_pylist() == ["a", "b", "d"]
    bits = [None if f is None else struct.pack("<d", f) for f in back.column("f").to_pylist()]
    assert bits == [struct.pack("<d", nan_with_payload), struct.pack("<d", -0.0), None]
    assert back.column("n").to_pylist() == [2**63 - 1, 7, 8]
    assert back.column("b").to_pylist() == [b"\x00\xff", b"", None]
    assert back.column("s").to_pylist() == ['{"x":-0.0}', "", None]
