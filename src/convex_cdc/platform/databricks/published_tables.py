"""``sql/published_tables.sql``: the S3/export target's published tables in Unity Catalog.

A team on the S3/export target (``sync`` → ``materialize`` → ``publish``) can query the
current state from Databricks without the extractor: ``publish`` makes every published
table a Delta table at ``<to>/staging/<table-dir>/`` whose files are exactly the latest
manifest's (older files beside them are not part of any current version), so an external
Delta table over that folder reads exactly the current state and moves to the next
manifest atomically. ``<table-dir>`` is the rule every target shares
(:func:`convex_cdc.core.names.table_dir_name`, :attr:`TableSpec.dir`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from convex_cdc.core.errors import ConfigError
from convex_cdc.platform.databricks.render_options import RenderOptions, bundle_names
from convex_cdc.platform.databricks.spark_projection import quote, sql_name, string_literal
from convex_cdc.platform.databricks.table_spec import TableSpec
from convex_cdc.platform.databricks.template_text import fill, generated_notice, template

PUBLISHED_TABLES_FILE: Final = "sql/published_tables.sql"
_REMOTE_SCHEMES: Final = ("s3://", "s3a://", "abfss://", "gs://")


def published_table_location(published: str, spec: TableSpec) -> str:
    """Where ``publish --to published`` keeps the Delta table of ``spec``'s table."""
    return f"{published.rstrip('/')}/staging/{spec.dir}"


def published_tables_sql(specs: Sequence[TableSpec], options: RenderOptions) -> str:
    """The statements that register every table of ``specs`` published to
    ``options.published`` in the source's published schema.

    Raises:
        ConfigError: ``options.published`` is not a location Databricks can read.
    """
    published = options.published or ""
    # It is also written into a comment line: a line break would end the comment.
    if not published.startswith(_REMOTE_SCHEMES) or not published.isprintable():
        raise ConfigError(
            f"--published {published!r} is not an object-store location Databricks can read",
            hint="pass the `convex-cdc publish --to` URI, e.g. s3://bucket/prefix",
        )
    schema = f"{quote(options.catalog)}.{quote(bundle_names(options).published_schema)}"
    parts = [
        fill(
            template("sql/published_tables_header.sql"),
            generated=generated_notice(),
            published=published.rstrip("/"),
            schema=schema,
        )
    ]
    for spec in sorted(specs, key=lambda s: s.key):
        parts.append(
            fill(
                template("sql/published_table.sql"),
                comment=f"Convex table {spec.key.qualified}: current state, as published",
                name=f"{schema}.{quote(sql_name(spec.key))}",
                location=string_literal(published_table_location(published, spec)),
            )
        )
    return "".join(parts)
