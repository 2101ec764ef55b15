"""render: Lakeflow AUTO CDC pipeline sources and the bundle, golden-tested.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/platform/databricks``.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from convex_cdc.cli import cli
from convex_cdc.core.errors import ConfigError
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType as C
from convex_cdc.platform.databricks.bronze import BronzeSink
from convex_cdc.platform.databricks.render import RenderOptions, render
from convex_cdc.platform.databricks.table_spec import TableSpec
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.platform.databricks.change_batches import SOURCE, batch, doc
from tests.platform.databricks.fake_pyspark import PipelineRecorder

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).parents[3]

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
CASES = {
    "bronze_scd1": RenderOptions(),
    "s3_export_scd2": RenderOptions(
        source="s3-export",
        scd_type=2,
        language="python",
        raw_change_log="s3://exports/convex/raw_change_log",
    ),
}

# Field names of the bundle schema (databricks-bundles 1.22.1 models, see
# docs/delta-lake-notes.md §6); deprecated ones must never appear.
TOP_FIELDS = {"bundle", "include", "variables", "targets", "resources", "artifacts", "workspace"}
PIPELINE_FIELDS = {
    "name", "catalog", "schema", "serverless", "root_path", "libraries", "configuration",
    "environment", "channel", "edition", "photon", "clusters", "event_log", "notifications",
    "permissions", "tags", "budget_policy_id", "storage",
}  # fmt: skip
JOB_FIELDS = {
    "name", "max_concurrent_runs", "schedule", "trigger", "tasks", "environments",
    "timeout_seconds", "queue", "parameters", "tags", "email_notifications", "permissions",
}  # fmt: skip
TASK_FIELDS = {
    "task_key", "depends_on", "python_wheel_task", "spark_python_task", "pipeline_task",
    "environment_key", "timeout_seconds",
}  # fmt: skip
NESTED_FIELDS = {
    "python_wheel_task": {"package_name", "entry_point", "parameters", "named_parameters"},
    "pipeline_task": {"pipeline_id", "full_refresh"},
    "schedule": {"quartz_cron_expression", "timezone_id", "pause_status"},
    "spec": {"environment_version", "dependencies"},
    "glob": {"include"},
}
DEPRECATED = {"target", "continuous", "development", "client"}


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
            "sequence": "_ts",
            "excluded": "_deleted",
            "scd": str(options.scd_type),
        }
        for name in NAMES
    ]
    tables = re.findall(r"CREATE OR REFRESH STREAMING TABLE `([^`]+)`", sql)
    assert tables == NAMES
    views = re.findall(r"CREATE TEMPORARY VIEW `([^`]+)` AS", sql)
    assert views == [f"{name}__changes" for name in NAMES]
    assert sql.count("WHERE _batch >= ${convex.first_batch};") == 3
    has_tombstones = "pipelines.cdc.tombstoneGCThresholdInSeconds" in sql
    assert has_tombstones == (options.scd_type == 1)


def test_sql_source_view_projects_every_typed_column_and_never_nulls_only_fields() -> None:
    sql = render(SPECS, RenderOptions())["src/silver_sql/convex_silver.sql"]
    messages = sql.split("CREATE TEMPORARY VIEW `messages__changes` AS", 1)[1].split(";", 1)[0]

    aliases = re.findall(r" AS `([^`]+)`,?\n", messages)
    assert aliases == ["_creationTime", "attachment", "author", "likes", "meta", "pinned", "score"]
    assert "CAST(get_json_object(document, '$[\"likes\"]') AS BIGINT)" in messages
    assert 'unbase64(get_json_object(document, \'$["attachment"]["$bytes"]\'))' in messages
    assert "'AAAAAAAA8H8=' THEN CAST('Infinity' AS DOUBLE)" in messages
    assert "FROM STREAM(${convex.bronze_catalog}.${convex.bronze_schema}.`messages`)" in messages


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
    source = render(SPECS, RenderOptions(language="python"))["src/silver_python/convex_silver.py"]
    conf = {"convex.bronze_catalog": "main", "convex.bronze_schema": "bronze"}

    recorder = run_python_pipeline(source, conf)

    assert [f["target"] for f in recorder.flows] == NAMES
    for flow in recorder.flows:
        assert flow["keys"] == ["_id"]
        assert flow["sequence_by"].name == "_ts"
        assert flow["apply_as_deletes"].text == "_deleted"
        assert flow["except_column_list"] == ["_deleted"]
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
    selected = [c.name for c in reads["users__changes"][-1][1][3:]]
    assert selected == ["_creationTime", "age", "name"]


def test_python_pipeline_builds_the_configured_tables_untyped_if_unknown(
    run_python_pipeline: Callable[[str, dict[str, str]], PipelineRecorder],
) -> None:
    source = render(SPECS, CASES["s3_export_scd2"])["src/silver_python/convex_silver.py"]
    conf = {"convex.raw_change_log": "s3://x/raw/", "convex.tables": "users,shop/orders"}

    recorder = run_python_pipeline(source, conf)

    assert [f["target"] for f in recorder.flows] == ["users", "shop__orders"]
    assert {f["stored_as_scd_type"] for f in recorder.flows} == {2}
    orders = recorder.views["shop__orders__changes"]().steps
    assert ("load", ("s3://x/raw/shop.orders/",)) in orders
    assert [c.name for c in orders[-1][1][3:]] == ["_creationTime", "document"]


def yaml_files(case: str) -> dict[str, Any]:
    return {
        name: yaml.safe_load(content)
        for name, content in render(SPECS, CASES[case]).items()
        if name.endswith(".yml")
    }


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bundle_yaml_parses_and_names_only_current_fields(case: str) -> None:
    files = yaml_files(case)
    bundle = files["databricks.yml"]
    assert set(bundle) <= TOP_FIELDS
    pipelines = [
        p for f in files.values() for p in f.get("resources", {}).get("pipelines", {}).values()
    ]
    jobs = [j for f in files.values() for j in f.get("resources", {}).get("jobs", {}).values()]
    assert len(pipelines) == 1 and len(jobs) == 1
    pipeline, job = pipelines[0], jobs[0]
    assert set(pipeline) <= PIPELINE_FIELDS
    assert set(job) <= JOB_FIELDS
    assert all(set(task) <= TASK_FIELDS for task in job["tasks"])
    for key, value in walk([f.get("resources", {}) for f in files.values()]):
        assert key not in DEPRECATED, f"deprecated bundle field {key!r}"
        if key in NESTED_FIELDS:
            assert set(value) <= NESTED_FIELDS[key], key
    assert not DEPRECATED & {key for key, _ in walk(bundle["targets"])}
    assert pipeline["serverless"] is True
    assert (pipeline["catalog"], pipeline["schema"]) == ("${var.catalog}", "${var.silver_schema}")
    assert (
        pipeline["configuration"]["convex.tables"] == "messages,users,waitlist/ratelimiter/limits"
    )
    assert job["max_concurrent_runs"] == 1
    assert job["schedule"]["quartz_cron_expression"] == "${var.schedule}"
    assert (
        job["tasks"][-1]["pipeline_task"]["pipeline_id"]
        == "${resources.pipelines.convex_cdc_silver.id}"
    )


def test_the_extractor_job_runs_the_wheel_entry_point_without_secrets_in_parameters() -> None:
    job = yaml_files("bronze_scd1")["resources/convex_cdc_extract.job.yml"]
    job = job["resources"]["jobs"]["convex_cdc_extract"]
    extract, silver = job["tasks"]

    wheel = extract["python_wheel_task"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert wheel["package_name"] == "convex_cdc"
    assert scripts[wheel["entry_point"]] == "convex_cdc.cli:databricks_extract"
    assert "--secret-scope" in wheel["parameters"]
    assert not any("key" in p.lower() and p != "--secret-scope" for p in wheel["parameters"])
    assert silver["depends_on"] == [{"task_key": "extract"}]
    assert job["environments"][0]["spec"]["environment_version"]
    assert extract["environment_key"] == job["environments"][0]["environment_key"]


def test_bronze_external_tables_register_every_table_by_location() -> None:
    sql = render(SPECS, RenderOptions(warehouse="s3://lake/convex"))[
        "sql/bronze_external_tables.sql"
    ]

    assert (
        "CREATE TABLE IF NOT EXISTS `main`.`convex_bronze`.`waitlist__ratelimiter__limits`\n"
        "  USING DELTA LOCATION 's3://lake/convex/bronze/waitlist.ratelimiter.limits';" in sql
    )
    assert sql.count("USING DELTA LOCATION 's3://lake/convex/bronze/") == 3
    assert "'s3://lake/convex/_convex_cdc/checkpoints'" in sql


def test_tables_whose_databricks_names_collide_are_refused() -> None:
    specs = [TableSpec(TableKey("", "Users")), TableSpec(TableKey("", "users"))]
    with pytest.raises(ConfigError, match="would both be named"):
        render(specs, RenderOptions())


def test_render_command_reads_the_spec_from_the_warehouse(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    BronzeSink(warehouse, SOURCE).write(batch(1, [doc("messages", "m1", 10, text="hi", n=1)]))
    out = tmp_path / "bundle"

    result = CliRunner().invoke(
        cli, ["databricks", "render", "--out", str(out), "--warehouse", warehouse.root]
    )

    assert result.exit_code == 0, result.output
    sql = (out / "src/silver_sql/convex_silver.sql").read_text()
    assert re.findall(r" AS `([^`]+)`,?\n", sql) == ["_creationTime", "n", "text"]
    assert (out / "databricks.yml").exists()
    assert "databricks bundle deploy" in result.output
