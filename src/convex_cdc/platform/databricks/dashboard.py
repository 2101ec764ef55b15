"""The monitoring dashboard: a Lakeview (AI/BI) dashboard over one source's replication.

``render`` adds two files to a bundle of the bronze change feed (the s3-export feed
registers no control table or bronze tables in Unity Catalog, so there is nothing for the
dashboard to read there)::

    resources/convex_cdc_monitoring.dashboard.yml   the bundle's ``dashboards`` resource
    src/convex_cdc_monitoring.lvdash.json           datasets (SQL) and one page of widgets

What the widgets show: how far the landed data is behind the source (the latest
checkpoint's ``consistent_as_of`` against now and against its save), the last batch and
when it was committed, batches, change events and deletes per hour, change events and
deletes per table in bronze, silver rows against what bronze says they should be (and
how many keys silver has not caught up on), the newest change silver holds against the
checkpoint, and the columns the spec log widened to JSON.

Every dataset is plain SQL that Databricks SQL and Apache Spark both run. The control
table, its latest-checkpoint view, the spec log and the bronze tables are named fully
qualified, as ``sql/bronze_external_tables.sql`` registers them. Silver tables are named
without catalog and schema: each dataset's ``catalog``/``schema`` is the prod silver
schema, and the resource's ``dataset_catalog``/``dataset_schema`` replace them with the
deploying target's (dev publishes silver to a schema per developer), so one file serves
every target. Each :class:`Dataset` declares the columns its query returns; the widgets
read only those, and ``tests/spark`` runs every query against a lake built from the
devserver and checks the columns and the numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from convex_cdc.platform.databricks.render_options import RenderOptions, bundle_names
from convex_cdc.platform.databricks.spark_projection import quote, sql_name, string_literal
from convex_cdc.platform.databricks.table_spec import TableSpec
from convex_cdc.platform.databricks.template_text import fill, generated_notice, template, yaml_str

DASHBOARD_FILE: Final = "src/convex_cdc_monitoring.lvdash.json"
"""The dashboard, relative to the bundle root."""
DASHBOARD_RESOURCE: Final = "resources/convex_cdc_monitoring.dashboard.yml"
"""The bundle resource that deploys it."""

CHECKPOINTS_TABLE: Final = "convex_cdc_checkpoints"
"""The names ``sql/bronze_external_tables.sql`` gives the control table, its latest-row
view and the spec log (:data:`~.render_options.BRONZE_SCHEMA_TABLES` reserves them)."""
CHECKPOINT_VIEW: Final = "convex_cdc_checkpoint"
TABLE_SPECS_TABLE: Final = "convex_cdc_table_specs"

GRID_COLUMNS: Final = 6
"""Width of a Lakeview canvas page in grid units."""
SCD2_CURRENT_ROWS: Final = "__END_AT IS NULL"
"""The current version of each key in an SCD type 2 target (closed versions and deleted
keys have an ``__END_AT``)."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """One query of the dashboard, and the columns widgets may read from it."""

    name: str
    display_name: str
    sql: str
    columns: tuple[str, ...]
    """What the query returns, in order."""


@dataclass(frozen=True, slots=True)
class DashboardNames:
    """The Unity Catalog names the queries read, quoted."""

    checkpoints: str
    checkpoint: str
    table_specs: str
    bronze: Mapping[str, str]
    """Convex table (``TableKey.qualified``) → its bronze table, fully qualified."""
    silver: Mapping[str, str]
    """Convex table → its silver table, unqualified (the dataset's schema)."""


def dashboard_key(options: RenderOptions) -> str:
    """The dashboard's resource key: one per source, like the job and the pipeline."""
    return f"convex_cdc_{options.source_name}_monitoring"


def dashboard_names(specs: Sequence[TableSpec], options: RenderOptions) -> DashboardNames:
    """The names of ``sql/bronze_external_tables.sql`` and of the silver pipeline's tables."""
    schema = f"{quote(options.catalog)}.{quote(bundle_names(options).bronze_schema)}"
    ordered = sorted(specs, key=lambda s: s.key)
    return DashboardNames(
        checkpoints=f"{schema}.{quote(CHECKPOINTS_TABLE)}",
        checkpoint=f"{schema}.{quote(CHECKPOINT_VIEW)}",
        table_specs=f"{schema}.{quote(TABLE_SPECS_TABLE)}",
        bronze={s.key.qualified: f"{schema}.{quote(sql_name(s.key))}" for s in ordered},
        silver={s.key.qualified: quote(sql_name(s.key)) for s in ordered},
    )


_SEQUENCE: Final = {1: "struct(_batch, _ts)", 2: "_ts"}
"""How the silver pipeline orders a key's events (see ``render``)."""
_SINCE_TRUNCATE: Final[Mapping[int, Callable[[str], str]]] = {
    1: lambda bronze: (
        f"\n    AND _batch >= (SELECT coalesce(max(_batch), 0) FROM {bronze} "  # noqa: S608
        "WHERE _op IN ('truncate', 'drop'))"
    ),
    2: lambda bronze: "",
}
"""SCD type 1 applies truncates and drops: only the events from a table's last truncate or
drop on count (a dropped table expects no rows)."""
_TRUNCATE_NOTE: Final = {
    1: "and at or after the table's last truncate or drop, the pipeline's APPLY AS TRUNCATE",
    2: "truncates and drops are not applied to SCD type 2",
}


def datasets(specs: Sequence[TableSpec], options: RenderOptions) -> tuple[Dataset, ...]:
    """Every query of the dashboard, for the tables of ``specs``."""
    names = dashboard_names(specs, options)
    source = string_literal(options.source_name)
    current_rows = "" if options.scd_type == 1 else f" WHERE {SCD2_CURRENT_ROWS}"

    def sql(query: str, **values: str) -> str:
        return fill(template(f"dashboard/{query}.sql"), **values).rstrip("\n")

    def per_table(query: str, separator: str, **values: str | Callable[[str], str]) -> str:
        """``query`` for each table; a callable value is given the table's bronze name."""
        return separator.join(
            sql(
                query,
                convex_table=string_literal(table),
                bronze=names.bronze[table],
                silver=names.silver[table],
                **{
                    key: value if isinstance(value, str) else value(names.bronze[table])
                    for key, value in values.items()
                },
            )
            for table in names.bronze
        )

    def each_table(line: str) -> Iterable[str]:
        return (
            line.format(bronze=names.bronze[table], silver=names.silver[table])
            for table in names.bronze
        )

    union = "\nUNION ALL\n"
    return (
        Dataset(
            "checkpoint",
            "Latest checkpoint",
            sql(
                "checkpoint",
                source_name=options.source_name,
                source=source,
                checkpoint=names.checkpoint,
                checkpoints=names.checkpoints,
            ),
            (
                "source",
                "deployment_url",
                "phase",
                "batch_seq",
                "batch_committed_at",
                "pending_batch_seq",
                "walk_first_batch",
                "save_seq",
                "reason",
                "api",
                "sync_status",
                "sync_id",
                "consistent_as_of",
                "consistent_as_of_at",
                "saved_at",
                "checked_at",
                "lag_seconds",
                "lag_minutes",
                "lag_at_save_seconds",
                "minutes_since_save",
            ),
        ),
        Dataset(
            "activity_per_hour",
            "Extractor activity per hour",
            sql(
                "activity_per_hour",
                source=source,
                checkpoints=names.checkpoints,
                bronze_batches="\n    UNION ALL\n".join(
                    each_table("    SELECT _batch, _deleted FROM {bronze}")
                ),
            ),
            ("hour", "batches", "change_events", "deletes", "checkpoint_saves"),
        ),
        Dataset(
            "bronze_tables",
            "Bronze per table",
            sql("bronze_tables", per_table=per_table("bronze_table", union)),
            (
                "convex_table",
                "change_events",
                "deletes",
                "last_batch",
                "last_change_ts",
                "last_change_at",
                "last_extracted_at",
            ),
        ),
        Dataset(
            "silver_tables",
            "Silver against bronze per table",
            sql(
                "silver_tables",
                checkpoint=names.checkpoint,
                truncate_note=_TRUNCATE_NOTE[options.scd_type],
                per_table=per_table(
                    "silver_table",
                    union,
                    current_rows=current_rows,
                    sequence=_SEQUENCE[options.scd_type],
                    since_truncate=_SINCE_TRUNCATE[options.scd_type],
                ),
            ),
            (
                "convex_table",
                "silver_rows",
                "expected_rows",
                "stale_rows",
                "silver_last_ts",
                "silver_last_change_at",
                "bronze_last_ts",
                "bronze_last_change_at",
            ),
        ),
        Dataset(
            "pipeline_freshness",
            "Silver against the checkpoint",
            sql(
                "pipeline_freshness",
                checkpoint=names.checkpoint,
                silver_last_ts="\n    UNION ALL\n".join(
                    each_table(
                        f"    SELECT max(_ts) AS last_ts FROM {{silver}}{current_rows}"  # noqa: S608 -- quoted names
                    )
                ),
            ),
            (
                "silver_last_ts",
                "silver_last_change_at",
                "consistent_as_of",
                "silver_behind_checkpoint_minutes",
            ),
        ),
        Dataset(
            "widened_columns",
            "Columns widened to JSON",
            sql("widened_columns", table_specs=names.table_specs),
            ("convex_table", "column_name", "type_before", "widened_at"),
        ),
    )


# --- widgets ----------------------------------------------------------------------------

_TS_NOTE: Final = (
    "Convex timestamps (consistent_as_of, _ts and every column ending in _ts) are "
    "nanoseconds since the Unix epoch, UTC."
)


@dataclass(frozen=True, slots=True)
class Widget:
    """A widget of the page and its size in grid units (the layout places it)."""

    body: Mapping[str, Any]
    width: int
    height: int


def _frame(title: str, description: str) -> dict[str, Any]:
    return {
        "showTitle": True,
        "title": title,
        "showDescription": bool(description),
        "description": description,
    }


def _query(dataset: Dataset, fields: Sequence[tuple[str, str]], *, aggregated: bool) -> list[Any]:
    """The widget's one query: ``fields`` are (name, expression) over ``dataset``'s columns."""
    return [
        {
            "name": "main_query",
            "query": {
                "datasetName": dataset.name,
                "fields": [{"name": name, "expression": expr} for name, expr in fields],
                "disaggregated": not aggregated,
            },
        }
    ]


def _column(name: str) -> tuple[str, str]:
    return name, f"`{name}`"


def text(name: str, lines: Sequence[str], *, height: int) -> Widget:
    """Markdown; each line is kept on its own."""
    body = {"name": name, "multilineTextboxSpec": {"lines": [f"{line}\n" for line in lines]}}
    return Widget(body, GRID_COLUMNS, height)


def counter(
    name: str,
    dataset: Dataset,
    column: str,
    *,
    title: str,
    description: str,
    aggregate: str | None = None,
) -> Widget:
    """One number: ``column`` of a one-row dataset, or ``aggregate`` (``SUM``…) over rows."""
    if aggregate is None:
        field, aggregated = _column(column), False
    else:
        field, aggregated = (f"{aggregate.lower()}({column})", f"{aggregate}(`{column}`)"), True
    body = {
        "name": name,
        "queries": _query(dataset, [field], aggregated=aggregated),
        "spec": {
            "version": 2,
            "widgetType": "counter",
            "encodings": {"value": {"fieldName": field[0], "displayName": title}},
            "frame": _frame(title, description),
        },
    }
    return Widget(body, 2, 2)


def table(
    name: str,
    dataset: Dataset,
    columns: Mapping[str, str],
    *,
    title: str,
    description: str,
    width: int = GRID_COLUMNS,
    height: int = 4,
) -> Widget:
    """Rows of ``dataset``: ``columns`` maps a column to its heading."""
    body = {
        "name": name,
        "queries": _query(dataset, [_column(c) for c in columns], aggregated=False),
        "spec": {
            "version": 2,
            "widgetType": "table",
            "encodings": {
                "columns": [
                    {"fieldName": column, "displayName": heading}
                    for column, heading in columns.items()
                ]
            },
            "frame": _frame(title, description),
        },
    }
    return Widget(body, width, height)


def chart(
    kind: str,
    name: str,
    dataset: Dataset,
    x: tuple[str, str],
    ys: Mapping[str, str],
    *,
    temporal: bool,
    title: str,
    description: str,
    width: int = 3,
    height: int = 5,
) -> Widget:
    """A ``line`` or ``bar`` chart of ``dataset``'s rows: ``x`` is (column, heading), ``ys``
    maps each plotted column to its heading."""
    x_column, x_heading = x
    body = {
        "name": name,
        "queries": _query(dataset, [_column(x_column), *map(_column, ys)], aggregated=False),
        "spec": {
            "version": 3,
            "widgetType": kind,
            "encodings": {
                "x": {
                    "fieldName": x_column,
                    "displayName": x_heading,
                    "scale": {"type": "temporal" if temporal else "categorical"},
                },
                "y": {
                    "scale": {"type": "quantitative"},
                    "fields": [
                        {"fieldName": column, "displayName": heading}
                        for column, heading in ys.items()
                    ],
                },
            },
            "frame": _frame(title, description),
        },
    }
    return Widget(body, width, height)


def _layout(rows: Sequence[Sequence[Widget]]) -> list[dict[str, Any]]:
    """Place each row's widgets left to right, each row below the tallest of the last."""
    placed = []
    y = 0
    for row in rows:
        x = 0
        for widget in row:
            position = {"x": x, "y": y, "width": widget.width, "height": widget.height}
            placed.append({"widget": dict(widget.body), "position": position})
            x += widget.width
        y += max(widget.height for widget in row)
    return placed


def monitoring_dashboard(specs: Sequence[TableSpec], options: RenderOptions) -> dict[str, Any]:
    """The dashboard as Lakeview's serialized JSON object (``.lvdash.json``)."""
    found = {dataset.name: dataset for dataset in datasets(specs, options)}
    checkpoint, activity = found["checkpoint"], found["activity_per_hour"]
    bronze, silver = found["bronze_tables"], found["silver_tables"]
    freshness, widened = found["pipeline_freshness"], found["widened_columns"]
    rows = [
        [
            text(
                "about",
                [
                    f"## convex-cdc: source `{options.source_name}` ({options.convex_url})",
                    "",
                    "Extractor: the latest checkpoint in the control table and the batches it "
                    "committed to bronze. Pipeline: silver compared with bronze key by key. "
                    f"{_TS_NOTE} Lag is measured against this SQL warehouse's clock.",
                ],
                height=2,
            )
        ],
        [
            counter(
                "lag-behind-source",
                checkpoint,
                "lag_minutes",
                title="Lag behind the source (minutes)",
                description="Now minus consistent_as_of, the Convex time the landed data is "
                "exactly the source's state at (nanoseconds since the epoch). Grows between "
                "extractor runs; empty while a snapshot walk is in progress.",
            ),
            counter(
                "last-batch",
                checkpoint,
                "batch_seq",
                title="Last batch",
                description="batch_seq of the latest checkpoint: the number of batches "
                "committed to bronze (see the checkpoint table for when).",
            ),
            counter(
                "minutes-since-save",
                checkpoint,
                "minutes_since_save",
                title="Minutes since the last checkpoint save",
                description="Now minus updated_at of the latest checkpoint. Each extractor run "
                "saves one when it lands changes or the cursor moves.",
            ),
        ],
        [
            counter(
                "rows-not-in-silver",
                silver,
                "stale_rows",
                aggregate="SUM",
                title="Keys silver has not caught up on",
                description="Keys whose newest bronze event silver does not hold yet, over all "
                "tables. 0: the pipeline has applied everything bronze holds.",
            ),
            counter(
                "silver-behind-checkpoint",
                freshness,
                "silver_behind_checkpoint_minutes",
                title="Silver's newest change before the checkpoint (minutes)",
                description="consistent_as_of minus the largest _ts in silver, in Convex time. "
                "Large with keys not caught up: the pipeline is behind; large with none: "
                "the deployment has not changed since.",
            ),
            counter(
                "widened-columns",
                widened,
                "column_name",
                aggregate="COUNT",
                title="Columns widened to JSON",
                description="Each needs a re-render, a deploy and a full refresh of the "
                "pipeline (see the table below).",
            ),
        ],
        [
            table(
                "checkpoint",
                checkpoint,
                {
                    "phase": "Phase",
                    "api": "Convex API",
                    "sync_status": "Data Sync status",
                    "sync_id": "Data Sync id",
                    "batch_seq": "Last batch",
                    "batch_committed_at": "Last batch committed at",
                    "pending_batch_seq": "Pending batch",
                    "walk_first_batch": "First batch of the walk",
                    "consistent_as_of": "consistent_as_of (ns)",
                    "consistent_as_of_at": "Consistent as of",
                    "saved_at": "Saved at",
                    "lag_at_save_seconds": "Lag at save (s)",
                    "reason": "Reason",
                    "deployment_url": "Deployment",
                },
                title="Latest checkpoint",
                description="The newest row of the control table. " + _TS_NOTE,
                height=3,
            )
        ],
        [
            chart(
                "bar",
                "change-events-per-hour",
                activity,
                ("hour", "Hour"),
                {"change_events": "Change events", "deletes": "Deletes"},
                temporal=True,
                title="Change events per hour",
                description="Change events (and the deletes among them) of the batches "
                "committed in each hour, last 7 days.",
            ),
            chart(
                "line",
                "batches-per-hour",
                activity,
                ("hour", "Hour"),
                {"batches": "Batches", "checkpoint_saves": "Checkpoint saves"},
                temporal=True,
                title="Batches per hour",
                description="Batches committed and checkpoint saves in each hour, last 7 "
                "days. Saves without a batch moved the cursor only.",
            ),
        ],
        [
            table(
                "bronze-per-table",
                bronze,
                {
                    "convex_table": "Convex table",
                    "change_events": "Change events",
                    "deletes": "Deletes",
                    "last_batch": "Last batch",
                    "last_change_at": "Last change",
                    "last_extracted_at": "Last extracted at",
                },
                title="Bronze per table",
                description="Every change event landed, all snapshot walks included.",
                width=4,
                height=5,
            ),
            chart(
                "bar",
                "deletes-per-table",
                bronze,
                ("convex_table", "Convex table"),
                {"deletes": "Deletes"},
                temporal=False,
                title="Deletes per table",
                description="Delete events in bronze (_deleted).",
                width=2,
            ),
        ],
        [
            table(
                "silver-per-table",
                silver,
                {
                    "convex_table": "Convex table",
                    "silver_rows": "Silver rows",
                    "expected_rows": "Expected rows",
                    "stale_rows": "Keys not caught up",
                    "silver_last_change_at": "Newest change in silver",
                    "bronze_last_change_at": "Newest change in bronze",
                },
                title="Silver against bronze",
                description="Expected rows: documents whose newest event in the current "
                "snapshot walk is not a delete. Keys not caught up: silver lacks that newest "
                "event.",
                height=5,
            )
        ],
        [
            table(
                "widened-columns-table",
                widened,
                {
                    "convex_table": "Convex table",
                    "column_name": "Column",
                    "type_before": "Type before",
                    "widened_at": "Widened at",
                },
                title="Columns widened to JSON",
                description="From the spec log: a scalar type in one row, json in a later one. "
                "The pipeline reads NULL for their new values until it is rendered again, "
                "deployed and fully refreshed.",
            )
        ],
    ]
    return {
        "datasets": [
            {
                "name": dataset.name,
                "displayName": dataset.display_name,
                "queryLines": dataset.sql.splitlines(keepends=True),
                "catalog": options.catalog,
                "schema": bundle_names(options).silver_schema,
            }
            for dataset in found.values()
        ],
        "pages": [
            {
                "name": "replication",
                "displayName": "Replication",
                "pageType": "PAGE_TYPE_CANVAS",
                "layout": _layout(rows),
            }
        ],
    }


def dashboard_files(specs: Sequence[TableSpec], options: RenderOptions) -> dict[str, str]:
    """The dashboard and its bundle resource (bronze change feed only)."""
    dashboard = monitoring_dashboard(specs, options)
    resource = fill(
        template("dashboard/dashboard.yml"),
        generated=generated_notice(),
        source_name=options.source_name,
        dashboard_key=dashboard_key(options),
        display_name=yaml_str(f"convex-cdc monitoring: {options.source_name}"),
        dashboard_file=DASHBOARD_FILE,
    )
    return {
        DASHBOARD_FILE: json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n",
        DASHBOARD_RESOURCE: resource,
    }
