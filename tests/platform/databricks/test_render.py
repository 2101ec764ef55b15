"""render: Lakeflow AUTO CDC pipeline sources and the bundle, golden-tested.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/platform/databricks``.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.core.errors import ConfigError
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType as C
from convex_cdc.core.type_mapping import json_text
from convex_cdc.platform.databricks.render import render
from convex_cdc.platform.databricks.render_options import RenderOptions
from convex_cdc.platform.databricks.table_spec import TableSpec
from tests.platform.databricks.change_batches import SOURCE_NAME, URL
from tests.platform.databricks.fake_pyspark import PipelineRecorder

GOLDEN = Path(__file__).parent / "golden"

SPECS = [
    TableSpec(
        TableKey("", "messages"),
        {
            "author": C.STRING,
            "likes": C.INT64,
            "score": C.FLOAT64,
            "pinned": C.BOOL,
            "attachment": C.BINARY,
            "meta": C.JSON,
            "neverSet": C.NULL,
        },
    ),
    TableSpec(TableKey("", "users"), {"name": C.STRING, "age": C.INT64}),
    TableSpec(TableKey("waitlist/ratelimiter", "limits"), {"count": C.INT64, "window": C.FLOAT64}),
]
NAMES = ["messages", "users", "waitlist__ratelimiter__limits"]
BRONZE = RenderOptions(
    source_name=SOURCE_NAME,
    warehouse="s3://lake/convex",
    convex_url=URL,
    project_dir="../convex-cdc",
)
"""The bronze change feed with every value its bundle needs (see test_bundle.py)."""
CASES = {
    "bronze_scd1": BRONZE,
    "s3_export_scd2": RenderOptions(
        source_name=SOURCE_NAME,
        feed="s3-export",
        scd_type=2,
        language="python",
        raw_change_log="s3://exports/convex/raw_change_log",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_files_match_the_golden_files(case: str) -> None:
    files = render(SPECS, CASES[case])
    root = GOLDEN / case
    if os.environ.get("UPDATE_GOLDEN"):
        for relative, content in files.items():
            path = root / f"{relative}.golden"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    golden = {
        str(p.relative_to(root))[: -len(".golden")]: p.read_text(encoding="utf-8")
        for p in root.rglob("*.golden")
    }
    assert sorted(files) == sorted(golden)
    for relative, content in files.items():
        assert content == golden[relative], f"{relative} differs (UPDATE_GOLDEN=1 to accept)"


def flows(sql: str) -> list[dict[str, str]]:
    pattern = re.compile(
        r"CREATE FLOW `(?P<flow>[^`]+)` AS AUTO CDC INTO `(?P<target>[^`]+)`\n"
        r"FROM STREAM\(`(?P<source>[^`]+)`\)\n"
        r"KEYS \((?P<keys>[^)]*)\)\n"
        r"APPLY AS DELETE WHEN (?P<delete>[^\n]+)\n"
        r"(?:APPLY AS TRUNCATE WHEN (?P<truncate>[^\n]+)\n)?"
        r"SEQUENCE BY (?P<sequence>[^\n]+)\n"
        r"COLUMNS \* EXCEPT \((?P<excluded>[^)]*)\)\n"
        r"STORED AS SCD TYPE (?P<scd>\d);"
    )
    return [m.groupdict() for m in pattern.finditer(sql)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_sql_pipeline_declares_one_auto_cdc_flow_per_table(case: str) -> None:
    options = CASES[case]
    sql = render(SPECS, options)["src/silver_sql/convex_silver.sql"]

    assert flows(sql) == [
        {
            "flow": f"{name}__auto_cdc",
            "target": name,
            "source": f"{name}__changes",
            "keys": "_id",
            "delete": "_deleted",
            # SCD type 2 has no truncate (its views leave truncate rows out).
            "truncate": "_op IN ('truncate', 'drop')" if options.scd_type == 1 else None,
            "sequence": "STRUCT(_batch, _ts)" if options.scd_type == 1 else "_ts",
            "excluded": "_deleted, _op, _batch",
            "scd": str(options.scd_type),
        }
        for name in NAMES
    ]
    tables = re.findall(r"CREATE OR REFRESH STREAMING TABLE `([^`]+)`", sql)
    assert tables == NAMES
    views = re.findall(r"CREATE TEMPORARY VIEW `([^`]+)` AS", sql)
    assert views == [f"{name}__changes" for name in NAMES]
    where = "  WHERE _batch >= ${convex.first_batch}"
    if options.scd_type == 2:
        where += "\n    AND _op NOT IN ('truncate', 'drop')"
    assert sql.count(where + "\n);") == 3
    has_tombstones = "pipelines.cdc.tombstoneGCThresholdInSeconds" in sql
    assert has_tombstones == (options.scd_type == 1)


def test_sql_source_view_reads_every_typed_column_from_two_parses_without_json_paths() -> None:
    sql = render(SPECS, BRONZE)["src/silver_sql/convex_silver.sql"]
    messages = sql.split("CREATE TEMPORARY VIEW `messages__changes` AS", 1)[1].split(";", 1)[0]

    aliases = re.findall(r" AS `([^`]+)`,?\n", messages)
    assert aliases == ["_creationTime", "attachment", "author", "likes", "meta", "pinned", "score"]
    assert messages.startswith(
        "\nSELECT\n  _id,\n  typed.`_creationTime` AS `_creationTime`,\n  _ts,"
    )
    # One typed parse and one VARIANT parse per row, whatever the number of columns.
    assert messages.count("from_json(") == 2
    assert (
        "'`_creationTime` DOUBLE, `attachment` STRUCT<`$bytes`: BINARY>, `author` STRING, "
        "`likes` BIGINT, `meta` STRING, `pinned` BOOLEAN, `score` DOUBLE',\n"
        "      map('allowNonNumericNumbers', 'false')\n    ) AS typed" in messages
    )
    assert (
        "from_json(document, '`author` VARIANT, `likes` VARIANT, `meta` VARIANT, "
        "`score` VARIANT') AS kinds" in messages
    )
    assert "neverSet" not in sql
    for unwanted in ("get_json_object", "parse_json", "$[", "CAST(typed"):
        assert unwanted not in sql
    assert "FROM STREAM(${convex.bronze_catalog}.${convex.bronze_schema}.`messages`)" in messages


def test_only_the_python_source_reads_convex_tables_and_both_headers_say_so() -> None:
    files = render(SPECS, BRONZE)
    sql = files["src/silver_sql/convex_silver.sql"]
    python = files["src/silver_python/convex_silver.py"]

    assert "--   convex.tables" not in sql
    assert "-- Tables: exactly the 3 rendered below. convex.tables is not read here" in sql
    assert "    convex.tables             comma-separated Convex tables" in python
    assert 'spark.conf.get("convex.tables", "")' in python
    assert "The SQL source differs here: it builds exactly its rendered tables." in python


def test_s3_export_sources_read_the_published_raw_change_log() -> None:
    files = render(SPECS, CASES["s3_export_scd2"])

    sql = files["src/silver_sql/convex_silver.sql"]
    assert (
        "FROM STREAM read_files('${convex.raw_change_log}/waitlist.ratelimiter.limits/', "
        "format => 'parquet', pathGlobFilter => 'batch=*.parquet')" in sql
    )
    assert "sql/bronze_external_tables.sql" not in files
    assert "resources/convex_cdc_refresh.job.yml" in files


@pytest.fixture
def run_python_pipeline() -> Iterator[Callable[[str, dict[str, str]], PipelineRecorder]]:
    saved = {k: sys.modules[k] for k in list(sys.modules) if k.startswith("pyspark")}

    def run(source: str, conf: dict[str, str]) -> PipelineRecorder:
        recorder = PipelineRecorder(conf)
        sys.modules.update(recorder.modules())
        exec(compile(source, "convex_silver.py", "exec"), {"__name__": "pipeline"})  # noqa: S102
        return recorder

    yield run
    for name in [k for k in sys.modules if k.startswith("pyspark")]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_python_pipeline_defines_a_flow_per_table_each_with_its_own_source(
    run_python_pipeline: Callable[[str, dict[str, str]], PipelineRecorder],
) -> None:
    source = render(SPECS, replace(BRONZE, language="python"))["src/silver_python/convex_silver.py"]
    conf = {"convex.bronze_catalog": "main", "convex.bronze_schema": "bronze"}

    recorder = run_python_pipeline(source, conf)

    assert [f["target"] for f in recorder.flows] == NAMES
    for flow in recorder.flows:
        assert flow["keys"] == ["_id"]
        sequence = flow["sequence_by"]
        assert (sequence.function, sequence.args) == ("struct", ("_batch", "_ts"))
        assert flow["apply_as_deletes"].text == "_deleted"
        assert flow["apply_as_truncates"].text == "_op IN ('truncate', 'drop')"
        assert flow["except_column_list"] == ["_deleted", "_op", "_batch"]
        assert flow["stored_as_scd_type"] == 1
        assert flow["source"] == f"{flow['target']}__changes"
    assert [t["name"] for t in recorder.tables] == NAMES
    assert all(
        "pipelines.cdc.tombstoneGCThresholdInSeconds" in t["table_properties"]
        for t in recorder.tables
    )
    # Each view reads its own bronze table (no late-binding closure over the loop variable).
    reads = {name: view().steps for name, view in recorder.views.items()}
    assert reads["users__changes"][:3] == (
        ("option", ("skipChangeCommits", "true")),
        ("table", ("`main`.`bronze`.`users`",)),
        ("where", ((">=", "_batch", 0),)),
    )
    (_, parsed), (_, selected) = reads["users__changes"][3:]
    assert parsed[:6] == ("_id", "_ts", "_deleted", "_op", "_batch", "document")
    assert [(c.function, c.args[1], c.name) for c in parsed[6:]] == [
        ("from_json", "`_creationTime` DOUBLE, `age` BIGINT, `name` STRING", "typed"),
        ("from_json", "`age` VARIANT, `name` VARIANT", "kinds"),
    ]
    assert [c.name for c in selected[:-3]] == ["_id", "_creationTime", "_ts", "age", "name"]
    assert selected[-3:] == ("_deleted", "_op", "_batch")
    # Only a table with JSON columns runs the pandas UDF that cuts their text out.
    messages = reads["messages__changes"][3][1]
    assert [(c.function, c.name) for c in messages[6:]] == [
        ("from_json", "typed"),
        ("from_json", "kinds"),
        ("pandas_udf", "json_text"),
    ]
    assert [schema for _, schema in recorder.udfs] == ["`meta` STRING"]


def test_python_pipeline_builds_the_configured_tables_untyped_if_unknown(
    run_python_pipeline: Callable[[str, dict[str, str]], PipelineRecorder],
) -> None:
    source = render(SPECS, CASES["s3_export_scd2"])["src/silver_python/convex_silver.py"]
    conf = {"convex.raw_change_log": "s3://x/raw/", "convex.tables": "users,shop/orders"}

    recorder = run_python_pipeline(source, conf)

    assert [f["target"] for f in recorder.flows] == ["users", "shop__orders"]
    assert {f["stored_as_scd_type"] for f in recorder.flows} == {2}
    # SCD type 2 has no truncate: its views leave truncate rows out, sequenced by _ts alone.
    assert all("apply_as_truncates" not in f for f in recorder.flows)
    assert {f["sequence_by"].name for f in recorder.flows} == {"_ts"}
    orders = recorder.views["shop__orders__changes"]().steps
    assert ("load", ("s3://x/raw/shop.orders/",)) in orders
    (truncates,) = [
        args[0] for step, args in orders if step == "where" and hasattr(args[0], "text")
    ]
    assert truncates.text == "NOT (_op IN ('truncate', 'drop'))"
    assert [c.name for c in orders[-1][1][:-3]] == ["_id", "_creationTime", "_ts", "document"]


EXPORT_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=6).map(lambda raw: {"$bytes": base64.b64encode(raw).decode()}),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)
JSON_FIELDS = ["a", "meta", "zz"]
FIELD_NAMES = st.sampled_from([*JSON_FIELDS, "A", "_creationTime", "_id", "b", "m", "z", "zzz"])


def test_the_python_json_texts_udf_cuts_out_exactly_stagings_json_text(
    run_python_pipeline: Callable[[str, dict[str, str]], PipelineRecorder],
) -> None:
    spec = TableSpec(TableKey("", "docs"), dict.fromkeys(JSON_FIELDS, C.JSON))
    source = render([spec], replace(BRONZE, language="python"))[
        "src/silver_python/convex_silver.py"
    ]
    recorder = run_python_pipeline(
        source, {"convex.bronze_catalog": "c", "convex.bronze_schema": "s"}
    )
    ((texts, schema),) = recorder.udfs
    assert schema == "`a` STRING, `meta` STRING, `zz` STRING"

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.none() | st.dictionaries(FIELD_NAMES, EXPORT_JSON_VALUES), max_size=4))
    def cuts_out_each_fields_text(documents: list[dict[str, Any] | None]) -> None:
        canonical = [
            None if d is None else orjson.dumps(d, option=orjson.OPT_SORT_KEYS).decode()
            for d in documents
        ]
        frame = texts(pd.Series(canonical, dtype=object))
        want = [
            {f: None if d is None or d.get(f) is None else json_text(d[f]) for f in JSON_FIELDS}
            for d in documents
        ]
        assert list(frame.columns) == JSON_FIELDS
        assert frame.to_dict("records") == want

    cuts_out_each_fields_text()


def test_bronze_external_tables_register_the_sources_tables_by_location() -> None:
    sql = render(SPECS, BRONZE)["sql/bronze_external_tables.sql"]
    schema = "`main`.`convex_test_animal_123_bronze`"
    source_root = "s3://lake/convex/test_animal_123"

    assert (
        f"CREATE TABLE IF NOT EXISTS {schema}.`waitlist__ratelimiter__limits`\n"
        f"  USING DELTA LOCATION '{source_root}/bronze/waitlist.ratelimiter.limits';" in sql
    )
    assert sql.count(f"USING DELTA LOCATION '{source_root}/bronze/") == 3
    assert sql.count("USING DELTA LOCATION 's3://lake/convex/") == 5  # + control, spec log
    assert f"'{source_root}/_convex_cdc/checkpoints'" in sql
    assert f"'{source_root}/_convex_cdc/table_specs'" in sql


def test_the_checkpoint_view_shows_the_sources_latest_checkpoint_and_guards_the_schema() -> None:
    sql = render(SPECS, BRONZE)["sql/bronze_external_tables.sql"]
    schema = "`main`.`convex_test_animal_123_bronze`"

    assert (
        f"CREATE OR REPLACE VIEW {schema}.`convex_cdc_checkpoint` AS\n"
        f"SELECT * FROM {schema}.`convex_cdc_checkpoints`\n"
        "WHERE source = 'test_animal_123'\nORDER BY save_seq DESC\nLIMIT 1;" in sql
    )
    # A schema that already registers another source's control table stops the script
    # before any bronze table of this source could be silently skipped.
    guard = sql.index("SELECT assert_true(\n  count(*) = 0,\n  'main.convex_test_animal_123_bronze")
    assert sql.index("CREATE TABLE IF NOT EXISTS") < guard < sql.index("`messages`")
    assert f"FROM {schema}.`convex_cdc_checkpoints`\nWHERE source <> 'test_animal_123';" in sql


def test_a_table_named_like_the_control_table_is_refused() -> None:
    specs = [TableSpec(TableKey("", "convex_cdc_checkpoints"))]
    with pytest.raises(ConfigError, match="the name of the control table"):
        render(specs, BRONZE)


def test_tables_whose_databricks_names_collide_are_refused() -> None:
    specs = [TableSpec(TableKey("", "Users")), TableSpec(TableKey("", "users"))]
    with pytest.raises(ConfigError, match="would both be named"):
        render(specs, BRONZE)
