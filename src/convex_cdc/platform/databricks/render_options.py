"""What ``render`` is asked for, and every name a source's bundle gives Databricks.

The render of the bundle and the monitoring dashboard both read these; they live apart
from :mod:`.render` so the dashboard can name the bundle's schemas without importing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from convex_cdc.platform.databricks.source_name import SourceName

ChangeFeed = Literal["bronze", "s3-export"]
"""Where the silver pipeline reads change events (``render --feed``)."""
Language = Literal["sql", "python"]

DEFAULT_TOMBSTONE_SECONDS: Final = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What to render, and the values written into the bundle.

    The deployment-specific values have no defaults: a bundle that deploys a made-up
    bucket or deployment fails far from its cause, so :func:`render` refuses to render
    without the ones its change feed needs (``warehouse``, ``convex_url`` and
    ``project_dir`` for ``bronze``; ``raw_change_log`` for ``s3-export``). Names left
    ``None`` are derived from ``source_name`` (:func:`bundle_names`).
    """

    source_name: SourceName
    """The source (Convex deployment) the bundle serves: its part of the warehouse, and
    part of every schema, job, pipeline and bundle name."""
    feed: ChangeFeed = "bronze"
    """``bronze``: the extractor's bronze tables; ``s3-export``: the S3/export target's
    published raw change log, read with Auto Loader (no extractor on Databricks)."""
    scd_type: Literal[1, 2] = 1
    language: Language = "sql"
    """Which pipeline source the bundle's pipeline includes."""
    catalog: str = "main"
    """Catalog of the bronze tables and of both targets' silver schemas."""
    bronze_schema: str | None = None
    """Where the bronze tables are registered; ``None``: ``convex_<source>_bronze``."""
    silver_schema: str | None = None
    """The prod target's silver schema (dev gets ``<silver_schema>_<developer>``);
    ``None``: ``convex_<source>_silver``."""
    warehouse: str | None = None
    """Where Databricks reaches the warehouse the extractor writes (bronze source)."""
    convex_url: str | None = None
    """The deployment the extractor replicates (bronze source)."""
    project_dir: str | None = None
    """The convex-cdc source checkout, relative to the bundle root, that the bundle's
    artifact builds the extractor's wheel from (bronze source)."""
    raw_change_log: str | None = None
    """Where the S3/export target publishes its raw change log (s3-export source)."""
    published: str | None = None
    """The S3/export target's ``publish --to``: when given, ``sql/published_tables.sql``
    registers its published (Delta) tables in Unity Catalog."""
    bundle_name: str | None = None
    """The bundle's name, which also names its workspace folder; ``None``:
    ``convex_cdc_<source>``."""
    tombstone_seconds: int = DEFAULT_TOMBSTONE_SECONDS


@dataclass(frozen=True, slots=True)
class BundleNames:
    """Every name one source's bundle gives Databricks.

    Each carries the source name, so the bundles of two sources share none: not the
    bundle (whose name is also its workspace folder: two bundles with one name would
    overwrite each other's deployment), not a job or pipeline, not a schema, and so not
    a table either.
    """

    bundle: str
    """``convex_cdc_<source>``."""
    job: str
    """The job's resource key and name: ``convex_cdc_<source>_extract`` (``_refresh`` for
    the s3-export feed)."""
    pipeline: str
    """The silver pipeline's resource key and name: ``convex_cdc_<source>_silver``."""
    bronze_schema: str
    """``convex_<source>_bronze``: the bronze tables, the control table and its view."""
    silver_schema: str
    """``convex_<source>_silver``: the prod target's streaming tables (dev appends
    ``_<developer>``)."""
    published_schema: str
    """``convex_<source>_published``: the S3/export target's published tables."""


def bundle_names(options: RenderOptions) -> BundleNames:
    """The names of ``options``' bundle: the explicit ones, the rest from the source name."""
    source = options.source_name
    job = "extract" if options.feed == "bronze" else "refresh"
    return BundleNames(
        bundle=options.bundle_name or f"convex_cdc_{source}",
        job=f"convex_cdc_{source}_{job}",
        pipeline=f"convex_cdc_{source}_silver",
        bronze_schema=options.bronze_schema or f"convex_{source}_bronze",
        silver_schema=options.silver_schema or f"convex_{source}_silver",
        published_schema=f"convex_{source}_published",
    )


BRONZE_SCHEMA_TABLES: Final[Mapping[str, str]] = {
    "convex_cdc_checkpoints": "the control table",
    "convex_cdc_checkpoint": "the latest-checkpoint view",
    "convex_cdc_table_specs": "the table spec log",
}
"""What ``sql/bronze_external_tables.sql`` registers in the bronze schema besides bronze."""
