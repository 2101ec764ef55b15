"""The Spark harness explains a missing JDK, and changes nothing in a rendered source but
the one statement Apache Spark rejects. No Spark here."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.spark.spark_harness import (
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


def test_the_sql_source_loses_only_or_refresh(tmp_path: Path) -> None:
    sql = (
        "CREATE OR REFRESH STREAMING TABLE `t`\n  COMMENT 'CREATE OR REFRESH';\n"
        "CREATE FLOW f AS AUTO CDC INTO `t` FROM STREAM(v) KEYS (_id) SEQUENCE BY _ts;\n"
    )
    (tmp_path / "src/silver_sql").mkdir(parents=True)
    (tmp_path / "src/silver_sql/convex_silver.sql").write_text(sql, encoding="utf-8")

    ran = pipeline_source(tmp_path, "sql")

    assert ran == sql.replace("CREATE OR REFRESH STREAMING TABLE", "CREATE STREAMING TABLE")


def test_the_python_source_runs_as_rendered(tmp_path: Path) -> None:
    (tmp_path / "src/silver_python").mkdir(parents=True)
    text = "# CREATE OR REFRESH STREAMING TABLE\nfrom pyspark import pipelines as dp\n"
    (tmp_path / "src/silver_python/convex_silver.py").write_text(text, encoding="utf-8")

    assert pipeline_source(tmp_path, "python") == text


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
