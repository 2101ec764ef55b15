"""Apache Spark 4.3 has no truncate in AUTO CDC: what exactly fails with the rendered
SCD type 1 pipelines (Databricks runs them; the other Spark tests leave the clause out,
see :func:`tests.spark.spark_harness.pipeline_source`)."""

from __future__ import annotations

import inspect
import re

import pytest

from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.platform.databricks.render import render
from convex_cdc.platform.databricks.render_options import RenderOptions
from convex_cdc.platform.databricks.source_name import SourceName
from convex_cdc.platform.databricks.table_spec import TableSpec
from tests.spark.spark_harness import SQL_APPLY_AS_TRUNCATE, SilverReader

pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

OPTIONS = RenderOptions(
    source_name=SourceName("s"),
    warehouse="s3://b/w",
    convex_url="https://a.convex.cloud",
    project_dir="..",
)


def rendered_flow() -> str:
    """The rendered SCD type 1 ``CREATE FLOW`` statement of one table."""
    sql = render([TableSpec(TableKey("", "t"), {"n": ColumnType.INT64})], OPTIONS)[
        "src/silver_sql/convex_silver.sql"
    ]
    flows: list[str] = re.findall(r"CREATE FLOW .*?;", sql, re.DOTALL)
    (flow,) = flows
    assert SQL_APPLY_AS_TRUNCATE.strip() in flow
    return flow.rstrip(";")


def test_apache_spark_4_3_create_auto_cdc_flow_takes_no_apply_as_truncates() -> None:
    from pyspark.pipelines import create_auto_cdc_flow

    parameters = inspect.signature(create_auto_cdc_flow).parameters
    assert "apply_as_deletes" in parameters
    assert "apply_as_truncates" not in parameters


def test_apache_spark_4_3_cannot_parse_apply_as_truncate(spark: SilverReader) -> None:
    flow = rendered_flow()

    with pytest.raises(Exception, match=r"PARSE_SYNTAX_ERROR.*'TRUNCATE'") as refused:
        spark.session.sql(flow)
    print(str(refused.value).splitlines()[0])  # shown with -s
    try:
        spark.session.sql(flow.replace(SQL_APPLY_AS_TRUNCATE, ""))
    except Exception as exc:  # outside a pipeline a flow is refused, but it parses
        assert "PARSE_SYNTAX_ERROR" not in str(exc)
