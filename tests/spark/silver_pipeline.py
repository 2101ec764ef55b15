"""One rendering of the silver pipeline (language, change feed, SCD type), run on Spark.

:class:`SilverPipeline` does what a user does between two deployments: re-render from
the warehouse's current spec, make the new bronze visible, run the pipeline (an update,
not a full refresh), then read the silver tables back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa

from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.spark_projection import sql_name
from tests.spark.convex_lake import BronzeFeed, ConvexLake
from tests.spark.spark_harness import (
    BRONZE_CATALOG,
    ConnectServer,
    Language,
    PipelineProject,
    PipelineRun,
    SilverReader,
    pipeline_configuration,
    run_pipeline,
    write_pipeline_project,
)

ChangeFeed = Literal["bronze", "s3-export"]


@dataclass(frozen=True)
class Configuration:
    """Which rendered pipeline to run."""

    language: Language
    feed: ChangeFeed
    scd_type: Literal[1, 2]

    @property
    def name(self) -> str:
        return f"{self.language}-scd{self.scd_type}-{self.feed}"


class SilverPipeline:
    """A configuration's pipeline project on the test server, fed from one lake."""

    def __init__(
        self,
        configuration: Configuration,
        lake: ConvexLake,
        server: ConnectServer,
        spark: SilverReader,
        root: Path,
    ) -> None:
        self.configuration = configuration
        self.lake = lake
        self.server = server
        self.spark = spark
        self.root = root
        suffix = f"{configuration.name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        self.project = PipelineProject(root / "project", f"silver_{suffix}", configuration.language)
        self.feed: BronzeFeed | None = None
        if configuration.feed == "bronze":
            self.feed = BronzeFeed(lake.warehouse, root / "bronze", f"bronze_{suffix}")
        self.runs: list[PipelineRun] = []

    def configuration_values(self) -> dict[str, str]:
        """This test's values for the bundle variables in the pipeline configuration."""
        values = {
            "convex.first_batch": "0",
            "convex.raw_change_log": self.lake.raw_change_log.as_uri(),
        }
        if self.feed is not None:
            values["convex.bronze_catalog"] = BRONZE_CATALOG
            values["convex.bronze_schema"] = self.feed.schema
            values["convex.bronze_location"] = self.feed.root.as_uri()
        return values

    def run(
        self,
        *,
        edit: Callable[[str], str] | None = None,
        configuration: dict[str, str] | None = None,
    ) -> PipelineRun:
        """Re-render, export new bronze, run the pipeline; returns the finished run.

        ``edit`` rewrites the pipeline source and ``configuration`` overrides entries of
        the pipeline configuration (both only for tests that break a pipeline on purpose).
        """
        config = self.configuration
        rendered = self.lake.render(
            self.root / f"render-{len(self.runs)}",
            feed=config.feed,
            scd_type=config.scd_type,
            language=config.language,
        )
        if self.feed is not None:
            self.feed.export(self.spark, self.lake.specs())
        values = pipeline_configuration(rendered, self.configuration_values())
        write_pipeline_project(self.project, rendered, values | (configuration or {}))
        if edit is not None:
            source = self.project.source
            source.write_text(edit(source.read_text(encoding="utf-8")), encoding="utf-8")
        finished = run_pipeline(self.server, self.project)
        self.runs.append(finished)
        return finished

    def silver(self) -> dict[TableKey, pa.Table]:
        """The current rows of every silver table the pipeline built, by Convex table."""
        schema = self.project.silver_schema
        built = set(self.spark.table_names(schema))
        return {
            key: self.spark.current_rows(
                schema, sql_name(key), scd_type=self.configuration.scd_type
            )
            for key in self.lake.specs()
            if sql_name(key) in built
        }
