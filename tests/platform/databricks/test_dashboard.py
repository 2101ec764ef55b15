"""The monitoring dashboard: a Lakeview file whose widgets read what its datasets return.

Lakeview accepts a ``.lvdash.json`` whose widget names a missing dataset or column and
shows the widget broken only when someone opens the page, so these checks are the only
place such a mistake is caught before a deploy. What the queries return on a real lake
is checked in ``tests/spark/test_dashboard_on_spark.py``.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import replace
from typing import Any

import pytest
import yaml

from convex_cdc.platform.databricks.dashboard import (
    DASHBOARD_FILE,
    DASHBOARD_RESOURCE,
    GRID_COLUMNS,
    SCD2_CURRENT_ROWS,
    datasets,
)
from convex_cdc.platform.databricks.render import render
from convex_cdc.platform.databricks.source_name import SourceName
from tests.platform.databricks.test_render import BRONZE, CASES, SPECS

_FIELD_COLUMN = re.compile(r"`([^`]+)`")
_QUALIFIED = re.compile(r"`[^`]+`\.`[^`]+`\.`[^`]+`")


def dashboard_of(files: dict[str, str]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(files[DASHBOARD_FILE])
    return loaded


def widgets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [placed["widget"] for page in dashboard["pages"] for placed in page["layout"]]


def test_every_widget_reads_only_columns_its_dataset_declares() -> None:
    declared = {d.name: set(d.columns) for d in datasets(SPECS, BRONZE)}
    dashboard = dashboard_of(render(SPECS, BRONZE))

    assert {d["name"] for d in dashboard["datasets"]} == set(declared)
    read = 0
    for widget in widgets(dashboard):
        for query in widget.get("queries", []):
            columns = declared[query["query"]["datasetName"]]
            fields = {f["name"] for f in query["query"]["fields"]}
            for field in query["query"]["fields"]:
                assert set(_FIELD_COLUMN.findall(field["expression"])) <= columns, widget["name"]
                read += 1
            encoded = json.dumps(widget["spec"]["encodings"])
            assert set(re.findall(r'"fieldName": "([^"]+)"', encoded)) <= fields, widget["name"]
    assert read >= 20  # every counter, table and chart was looked at


def test_the_widgets_fill_the_page_without_overlapping() -> None:
    dashboard = dashboard_of(render(SPECS, BRONZE))
    taken: set[tuple[int, int]] = set()
    for page in dashboard["pages"]:
        for placed in page["layout"]:
            p = placed["position"]
            assert p["x"] >= 0 and p["x"] + p["width"] <= GRID_COLUMNS, placed["widget"]["name"]
            cells = {
                (x, y)
                for x in range(p["x"], p["x"] + p["width"])
                for y in range(p["y"], p["y"] + p["height"])
            }
            assert not cells & taken, placed["widget"]["name"]
            taken |= cells
    names = [w["name"] for w in widgets(dashboard)]
    assert len(names) == len(set(names))


def test_the_queries_name_exactly_what_the_bronze_sql_registers() -> None:
    files = render(SPECS, BRONZE)
    registered = {
        name.replace("`", "")
        for name in re.findall(
            r"CREATE (?:TABLE IF NOT EXISTS|OR REPLACE VIEW) (\S+)",
            files["sql/bronze_external_tables.sql"],
        )
    }
    queried = {
        name.replace("`", "")
        for dataset in dashboard_of(files)["datasets"]
        for name in _QUALIFIED.findall("".join(dataset["queryLines"]))
    }

    assert queried
    assert queried <= registered
    # every bronze table and the three control-table objects are read by some query
    assert len(queried) == len(SPECS) + 3


def test_silver_is_read_from_the_deploying_targets_schema() -> None:
    files = render(SPECS, BRONZE)
    resource = yaml.safe_load(files[DASHBOARD_RESOURCE])
    (dashboard,) = resource["resources"]["dashboards"].values()

    assert dashboard["dataset_schema"] == "${var.silver_schema}"
    assert dashboard["dataset_catalog"] == "${var.silver_catalog}"
    assert dashboard["warehouse_id"] == "${var.warehouse_id}"
    path = posixpath.normpath(posixpath.join("resources", dashboard["file_path"]))
    assert path == DASHBOARD_FILE
    assert "warehouse_id" in yaml.safe_load(files["databricks.yml"])["variables"]


def test_scd2_counts_only_the_current_version_of_each_key() -> None:
    scd1 = {d.name: d.sql for d in datasets(SPECS, BRONZE)}
    scd2 = {d.name: d.sql for d in datasets(SPECS, replace(BRONZE, scd_type=2))}

    for name in ("silver_tables", "pipeline_freshness"):
        assert SCD2_CURRENT_ROWS not in scd1[name]
        assert scd2[name].count(SCD2_CURRENT_ROWS) == len(SPECS)


def test_two_sources_get_two_dashboards() -> None:
    first = yaml.safe_load(render(SPECS, BRONZE)[DASHBOARD_RESOURCE])
    other = replace(BRONZE, source_name=SourceName("staging_app"))
    second_files = render(SPECS, other)
    second = yaml.safe_load(second_files[DASHBOARD_RESOURCE])

    assert set(first["resources"]["dashboards"]).isdisjoint(second["resources"]["dashboards"])
    for dataset in dashboard_of(second_files)["datasets"]:
        text = "".join(dataset["queryLines"])
        assert "convex_test_animal" not in text
        for name in _QUALIFIED.findall(text):
            assert name.startswith("`main`.`convex_staging_app_bronze`."), name


@pytest.mark.parametrize("case", [c for c in sorted(CASES) if CASES[c].feed == "s3-export"])
def test_the_s3_export_feed_renders_no_dashboard(case: str) -> None:
    """That feed registers no control table or bronze tables for a dashboard to read."""
    files = render(SPECS, CASES[case])

    assert DASHBOARD_FILE not in files
    assert DASHBOARD_RESOURCE not in files
