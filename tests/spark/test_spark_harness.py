"""The Spark harness explains a missing JDK, and changes nothing in a rendered source but
the statement and the clause Apache Spark rejects. No Spark here."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.platform.databricks.render import render, write_rendered
from convex_cdc.platform.databricks.render_options import RenderOptions
from convex_cdc.platform.databricks.source_name import SourceName
from convex_cdc.platform.databricks.table_spec import TableSpec
from tests.spark.spark_harness import (
    PYTHON_APPLY_AS_TRUNCATES,
    SQL_APPLY_AS_TRUNCATE,
    Language,
    SparkUnavailable,
    java_tools,
    pipeline_configuration,
    pipeline_source,
)


def fake_tool(directory: Path, name: str, version_line: str) -> None:
    tool = directory / name
    tool.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n", encoding="utf-8")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def test_without_a_jdk_the_spark_tests_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(SparkUnavailable, match=r"JDK 17 \(javac and java not on PATH\)"):
        java_tools(path=str(tmp_path))


def test_an_older_jdk_is_named_in_the_error(tmp_path: Path) -> None:
    fake_tool(tmp_path, "javac", "javac 11.0.22")
    fake_tool(tmp_path, "java", "openjdk 11.0.22")

    with pytest.raises(SparkUnavailable, match="is Java 11"):
        java_tools(path=str(tmp_path))


def test_the_sql_source_loses_only_or_refresh_and_the_truncate_clause(tmp_path: Path) -> None:
    sql = (
        "CREATE OR REFRESH STREAMING TABLE `t`\n  COMMENT 'CREATE OR REFRESH';\n"
        "CREATE FLOW f AS AUTO CDC INTO `t` FROM STREAM(v) KEYS (_id)\n"
        "APPLY AS TRUNCATE WHEN _op IN ('truncate', 'drop')\nSEQUENCE BY STRUCT(_batch, _ts);\n"
    )
    (tmp_path / "src/silver_sql").mkdir(parents=True)
    (tmp_path / "src/silver_sql/convex_silver.sql").write_text(sql, encoding="utf-8")

    ran = pipeline_source(tmp_path, "sql")

    assert ran == (
        sql.replace("CREATE OR REFRESH STREAMING TABLE", "CREATE STREAMING TABLE").replace(
            "\nAPPLY AS TRUNCATE WHEN _op IN ('truncate', 'drop')", ""
        )
    )
    assert "APPLY AS TRUNCATE" in pipeline_source(tmp_path, "sql", truncates=True)


def test_the_python_source_runs_as_rendered_but_for_the_truncate_argument(
    tmp_path: Path,
) -> None:
    (tmp_path / "src/silver_python").mkdir(parents=True)
    text = "# CREATE OR REFRESH STREAMING TABLE\nfrom pyspark import pipelines as dp\n"
    (tmp_path / "src/silver_python/convex_silver.py").write_text(text, encoding="utf-8")

    assert pipeline_source(tmp_path, "python") == text


@pytest.mark.parametrize("language", ["sql", "python"])
def test_the_truncate_rewrite_matches_what_render_writes(
    tmp_path: Path, language: Language
) -> None:
    options = RenderOptions(
        source_name=SourceName("s"),
        warehouse="s3://b/w",
        convex_url="https://a.convex.cloud",
        project_dir="..",
    )
    files = render([TableSpec(TableKey("", "t"), {"n": ColumnType.INT64})], options)
    write_rendered(files, tmp_path)

    kept = pipeline_source(tmp_path, language, truncates=True)
    ran = pipeline_source(tmp_path, language)

    clause = SQL_APPLY_AS_TRUNCATE if language == "sql" else PYTHON_APPLY_AS_TRUNCATES
    assert clause in kept
    assert "'truncate'\nSEQUENCE BY" not in ran and '["apply_as_truncates"]' not in ran


def test_bundle_variables_in_the_configuration_get_test_values(tmp_path: Path) -> None:
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources/silver.pipeline.yml").write_text(
        "resources:\n  pipelines:\n    p:\n      configuration:\n"
        '        convex.tables: "a,b/c"\n        convex.first_batch: ${var.first_batch}\n',
        encoding="utf-8",
    )

    configuration = pipeline_configuration(tmp_path, {"convex.first_batch": "0"})

    assert configuration == {"convex.tables": "a,b/c", "convex.first_batch": "0"}
    with pytest.raises(AssertionError, match=r"convex\.first_batch"):
        pipeline_configuration(tmp_path, {})
