"""``render``: the Lakeflow AUTO CDC pipeline sources and the bundle, from the table spec.

Output (paths relative to ``--out``)::

    databricks.yml                              the bundle: wheel artifact, variables, dev/prod
    resources/convex_cdc_extract.job.yml        extractor (wheel) → silver pipeline, scheduled
      (or resources/convex_cdc_refresh.job.yml  for --feed s3-export: pipeline only)
    resources/convex_cdc_silver.pipeline.yml    serverless pipeline, catalog/schema, config
    src/silver_sql/convex_silver.sql            SQL source: a view + table + AUTO CDC flow per table
    src/silver_python/convex_silver.py          Python source: the same, in a loop
    sql/bronze_external_tables.sql              registers bronze as UC external tables
    sql/published_tables.sql                    with --published: the S3/export target's
                                                published Delta tables as UC external tables

A bundle serves one source (Convex deployment) of the warehouse. Every name it gives
Databricks carries the source name (:class:`BundleNames`), so the bundles of several
sources deploy side by side into one workspace and catalog. Both pipeline sources are
rendered; the pipeline resource includes the one chosen with ``language``. Templates live
in ``templates/`` (package data) and use ``{{name}}`` placeholders, so SQL's own
``${convex.*}`` pipeline-configuration references pass through.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from convex_cdc.core.errors import ConfigError
from convex_cdc.platform.databricks.dashboard import dashboard_files
from convex_cdc.platform.databricks.published_tables import (
    PUBLISHED_TABLES_FILE,
    published_tables_sql,
)
from convex_cdc.platform.databricks.render_options import (
    BRONZE_SCHEMA_TABLES,
    BundleNames,
    ChangeFeed,
    RenderOptions,
    bundle_names,
)
from convex_cdc.platform.databricks.source_name import parse_source_name
from convex_cdc.platform.databricks.spark_projection import (
    EXCEPT_COLUMNS,
    KINDS,
    TYPED,
    TYPED_OPTIONS,
    JsonText,
    Projection,
    check_unique_names,
    projection,
    quote,
    sql_name,
    string_literal,
)
from convex_cdc.platform.databricks.table_spec import TableSpec
from convex_cdc.platform.databricks.template_text import fill, generated_notice, template, yaml_str
from convex_cdc.platform.databricks.wheel_project import WHEEL_EXTRA


def render(specs: Sequence[TableSpec], options: RenderOptions) -> dict[str, str]:
    """Every rendered file, relative path → content.

    Raises:
        ConfigError: no tables, two tables whose Databricks names collide (with each other
            or with the control table's), an invalid source name, or a value the change
            feed needs is missing (the message names the ``render`` flag).
    """
    if not specs:
        raise ConfigError(
            "no tables to render",
            hint="run `databricks extract` first, or name tables with --tables",
        )
    parse_source_name(options.source_name)
    chosen = sorted(specs, key=lambda s: s.key)
    check_unique_names(chosen, suffixes=("__changes", "__auto_cdc"), reserved=BRONZE_SCHEMA_TABLES)
    _require_deployment_values(options)
    names = bundle_names(options)
    job = "extract" if options.feed == "bronze" else "refresh"
    files = {
        "databricks.yml": _databricks_yml(options, names),
        f"resources/convex_cdc_{job}.job.yml": _job_yml(options, names, job),
        "resources/convex_cdc_silver.pipeline.yml": _pipeline_yml(chosen, options, names),
        "src/silver_sql/convex_silver.sql": _silver_sql(chosen, options),
        "src/silver_python/convex_silver.py": _silver_python(chosen, options),
    }
    if options.feed == "bronze":
        files["sql/bronze_external_tables.sql"] = _bronze_external_tables(chosen, options, names)
        # The monitoring dashboard reads what that file registers.
        files.update(dashboard_files(chosen, options))
    if options.published is not None:
        files[PUBLISHED_TABLES_FILE] = published_tables_sql(chosen, options)
    return files


def write_rendered(files: Mapping[str, str], out: Path) -> list[Path]:
    """Write ``files`` under ``out`` (created if needed); returns the paths written."""
    written = []
    for relative, content in sorted(files.items()):
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


# --- bundle -----------------------------------------------------------------------------

MINIMUM_CLI_VERSION: Final = "1.13.0"
"""The first Databricks CLI that uploads a local wheel given with pip extras
(``dist/*.whl[extra]``) in a job environment's ``dependencies``."""
_WHEEL_BUILD_DIR: Final = "dist"
"""Where the artifact's build command (``pip wheel --wheel-dir dist``) puts the wheel,
relative to the checkout."""

_FLAGS: Final = {
    "warehouse": (
        "--warehouse-location",
        "s3://bucket/prefix, the warehouse as Databricks reaches it",
    ),
    "convex_url": ("--url", "https://<deployment>.convex.cloud, the deployment to replicate"),
    "project_dir": (
        "--project-dir",
        "DIR, the convex-cdc checkout the bundle builds the extractor's wheel from",
    ),
    "raw_change_log": (
        "--raw-change-log",
        "s3://bucket/prefix/raw_change_log, the S3/export target's publish",
    ),
}
"""Each deployment-specific option, the ``render`` flag that gives it and what it is."""
_NEEDED: Final[Mapping[ChangeFeed, tuple[str, ...]]] = {
    "bronze": ("warehouse", "convex_url", "project_dir"),
    "s3-export": ("raw_change_log",),
}


def _require_deployment_values(options: RenderOptions) -> None:
    """Refuse to render a bundle that would deploy a made-up location or deployment."""
    for field in _NEEDED[options.feed]:
        _required(options, field)


def _required(options: RenderOptions, field: str) -> str:
    value = getattr(options, field)
    if not value:
        flag, meaning = _FLAGS[field]
        raise ConfigError(
            f"{flag} is required to render the {options.feed} bundle",
            hint=f"pass {flag} {meaning}",
        )
    return str(value)


def _databricks_yml(options: RenderOptions, names: BundleNames) -> str:
    bronze = options.feed == "bronze"
    variables = fill(
        template(f"bundle/variables_{options.feed.replace('-', '_')}.yml"),
        **(
            {
                "bronze_catalog": yaml_str(options.catalog),
                "bronze_schema": yaml_str(names.bronze_schema),
                "warehouse": yaml_str(_required(options, "warehouse").rstrip("/")),
                "convex_url": yaml_str(_required(options, "convex_url")),
            }
            if bronze
            else {"raw_change_log": yaml_str(_required(options, "raw_change_log"))}
        ),
    )
    requirements = artifacts = ""
    if bronze:
        requirements = fill(
            template("bundle/bundle_bronze.yml"), minimum_cli_version=MINIMUM_CLI_VERSION
        )
        artifacts = fill(
            template("bundle/artifacts_bronze.yml"),
            project_dir=yaml_str(_required(options, "project_dir")),
        )
    return fill(
        template("bundle/databricks.yml"),
        generated=generated_notice(),
        job_key=names.job,
        bundle_name=names.bundle,
        bundle_requirements=requirements,
        artifacts=artifacts,
        silver_catalog=yaml_str(options.catalog),
        prod_silver_schema=yaml_str(names.silver_schema),
        dev_silver_schema=yaml_str(f"{names.silver_schema}_${{workspace.current_user.short_name}}"),
        source_variables=variables,
    )


def _job_yml(options: RenderOptions, names: BundleNames, job: str) -> str:
    keys = {"generated": generated_notice(), "job_key": names.job, "pipeline_key": names.pipeline}
    if options.feed != "bronze":
        return fill(template(f"bundle/job_{job}.yml"), **keys)
    # Relative to resources/, where the job is defined; the CLI resolves it from there.
    checkout = posixpath.normpath(posixpath.join("..", _required(options, "project_dir")))
    wheel = f"{checkout}/{_WHEEL_BUILD_DIR}/*.whl[{WHEEL_EXTRA}]"
    return fill(
        template(f"bundle/job_{job}.yml"),
        **keys,
        wheel=wheel,
        source_name=yaml_str(options.source_name),
    )


def _configuration(specs: Sequence[TableSpec], options: RenderOptions) -> list[tuple[str, str]]:
    tables = ",".join(s.key.qualified for s in specs)
    common = [
        ("convex.tables", json.dumps(tables)),
        ("convex.first_batch", "${var.first_batch}"),
        ("convex.tombstone_seconds", json.dumps(str(options.tombstone_seconds))),
    ]
    if options.feed == "bronze":
        return [
            ("convex.bronze_catalog", "${var.bronze_catalog}"),
            ("convex.bronze_schema", "${var.bronze_schema}"),
            *common,
        ]
    return [("convex.raw_change_log", "${var.raw_change_log}"), *common]


def _pipeline_yml(specs: Sequence[TableSpec], options: RenderOptions, names: BundleNames) -> str:
    lines = [f"        {key}: {value}" for key, value in _configuration(specs, options)]
    return fill(
        template("bundle/pipeline.yml"),
        generated=generated_notice(),
        pipeline_key=names.pipeline,
        scd_type=str(options.scd_type),
        library_dir=f"silver_{options.language}",
        configuration="\n".join(lines),
    )


# --- pipeline sources -------------------------------------------------------------------

_CONFIG_HELP: Final = {
    "convex.bronze_catalog": "catalog of the bronze external tables",
    "convex.bronze_schema": "schema of the bronze external tables",
    "convex.raw_change_log": "s3://.../raw_change_log of the S3/export publish",
    "convex.tables": "comma-separated Convex tables (component/table) to build",
    "convex.first_batch": "first _batch of the current snapshot walk (default 0)",
    "convex.tombstone_seconds": "how long deleted keys are kept as tombstones (SCD type 1)",
}

_TYPED_COLUMNS_HELP: Final = """\
Typed columns come from the convex-cdc table spec (the same spec `apply-silver` uses).
{parses}
`typed` = from_json with each field as its column's Spark type (a value of another JSON
kind is NULL in that field only); `kinds` = from_json with VARIANT fields, whose
schema_of_variant names a value's JSON kind. Per column type:
  string   the JSON string; a value of any other kind -> NULL
  int64    the JSON integer (exact above 2^53) or a {{"$integer": base64}} tag
  float64  the JSON number (-0.0, subnormals exact); a JSON integer -> NULL;
           {{"$float": base64}} tags -> +/-Infinity, any other payload -> NaN
           (Spark stores every NaN as the canonical one)
  bool     true / false
  binary   the base64-decoded {{"$bytes": ...}} tag
  json     {json_text}
A value that does not fit its column (the field widened after this render) is NULL,
never an error. The extractor records the widening in the table spec before the value
lands in bronze; rendering again changes the column to JSON text, which needs a full
refresh of this pipeline. A new field gets a column at the next render; documents
changed before that render fill it only at their next change or a full refresh.
After `extract --resnapshot` set convex.first_batch to the batch it prints and run a
full refresh."""

_PARSES_HELP: Final[Mapping[JsonText, str]] = {
    "spark": "Each view parses `document` twice per row, whatever the number of columns:",
    "document": (
        "Each view parses `document` twice per row, whatever the number of columns (and\n"
        "the json_texts pandas UDF scans it once more when the table has JSON columns):"
    ),
}
_JSON_TEXT_HELP: Final[Mapping[JsonText, str]] = {
    "spark": (
        "the value's JSON text as Spark writes it: the same JSON value as staging's\n"
        "           text, not the same bytes (Spark formats numbers its own way,\n"
        "           5e-324 -> 4.9E-324, 1e+20 -> 1.0E20, and escapes control characters\n"
        "           in upper case); the Python source keeps the exact text"
    ),
    "document": (
        "the field's own text in the document, byte for byte staging's JSON text\n"
        "           (cut out of the document by the json_texts pandas UDF)"
    ),
}


def _typed_columns_help(json_text: JsonText, prefix: str) -> str:
    text = _TYPED_COLUMNS_HELP.format(
        parses=_PARSES_HELP[json_text], json_text=_JSON_TEXT_HELP[json_text]
    )
    return "\n".join((prefix + line).rstrip() for line in text.splitlines())


def _configuration_help(options: RenderOptions, prefix: str, *, tables: bool) -> str:
    keys = ["convex.bronze_catalog", "convex.bronze_schema"]
    if options.feed == "s3-export":
        keys = ["convex.raw_change_log"]
    if tables:
        keys.append("convex.tables")
    keys += ["convex.first_batch", "convex.tombstone_seconds"]
    width = max(len(k) for k in keys)
    return "\n".join(f"{prefix}{k.ljust(width)}  {_CONFIG_HELP[k]}" for k in keys)


def _source_description(options: RenderOptions) -> str:
    if options.feed == "bronze":
        return "the convex-cdc bronze CDC Delta tables (append-only, written by the extractor)."
    return "the S3/export target's published raw change log (immutable parquet, Auto Loader)."


def _sql_source(spec: TableSpec, options: RenderOptions) -> str:
    if options.feed == "bronze":
        name = quote(sql_name(spec.key))
        return f"STREAM(${{convex.bronze_catalog}}.${{convex.bronze_schema}}.{name})"
    location = string_literal(f"${{convex.raw_change_log}}/{spec.dir}/")
    return (
        f"STREAM read_files({location}, format => 'parquet', pathGlobFilter => 'batch=*.parquet')"
    )


def _sql_projection(reading: Projection) -> str:
    """The source view's silver columns, one per line (a long expression over several)."""
    columns = []
    for column in reading.columns:
        *head, last = column.lines
        alias = "" if last == column.name else f" AS {quote(column.name)}"
        columns.append("\n".join([f"  {line}" for line in head] + [f"  {last}{alias}"]))
    return ",\n".join(columns)


def _sql_parsed(reading: Projection) -> str:
    """The inner SELECT's parsed documents: ``typed``, ``kinds`` and ``document`` if kept."""
    options = ", ".join(
        f"{string_literal(key)}, {string_literal(value)}" for key, value in TYPED_OPTIONS.items()
    )
    parsed = [
        "    from_json(\n"
        "      document,\n"
        f"      {string_literal(reading.typed_schema)},\n"
        f"      map({options})\n"
        f"    ) AS {TYPED}"
    ]
    if reading.kinds_schema:
        parsed.append(f"    from_json(document, {string_literal(reading.kinds_schema)}) AS {KINDS}")
    if reading.keeps_document:
        parsed.append("    document")
    return ",\n".join(parsed)


_TRUNCATE_HELP: Final = {
    1: """\
SEQUENCE BY STRUCT(_batch, _ts): batch order is the server's order (for Data Sync and the
legacy API alike), and _ts orders the events of a batch.
APPLY AS TRUNCATE WHEN _op IN ('truncate', 'drop'): a truncate row (a table entered a
Convex Data Sync: a cold start, newly selected, or replaced by an import; _ts 0, so it
sorts after every earlier batch and before its own batch's rows) empties the table, and
the rows after it fill it again. A drop row (the table was dropped at the source) empties
it the same way. Truncate and drop rows never become silver rows.""",
    2: """\
SEQUENCE BY _ts (Convex commit time, ns): __START_AT and __END_AT are Convex timestamps.
AUTO CDC has no truncate for SCD type 2, so truncate and drop rows (_op 'truncate': a
table entered a Convex Data Sync; 'drop': it was dropped at the source) are filtered out:
the history of a table replaced by an import or dropped keeps its rows, and documents the
import or the drop removed stay current.""",
}


def _truncate_help(scd_type: int, prefix: str) -> str:
    return "\n".join((prefix + line).rstrip() for line in _TRUNCATE_HELP[scd_type].splitlines())


def _silver_sql(specs: Sequence[TableSpec], options: RenderOptions) -> str:
    parts = [
        fill(
            template("sql/silver_header.sql"),
            generated=generated_notice(),
            scd_type=str(options.scd_type),
            truncate_help=_truncate_help(options.scd_type, "-- "),
            source_description=_source_description(options),
            configuration_help=_configuration_help(options, "--   ", tables=False),
            table_count=str(len(specs)),
            typed_columns_help=_typed_columns_help("spark", "-- "),
        )
    ]
    properties = ""
    if options.scd_type == 1:
        properties = (
            "\n  TBLPROPERTIES ('pipelines.cdc.tombstoneGCThresholdInSeconds' = "
            "'${convex.tombstone_seconds}')"
        )
    for spec in specs:
        name = sql_name(spec.key)
        reading = projection(spec, json_text="spark")
        parts.append(
            fill(
                template("sql/silver_table.sql"),
                qualified=spec.key.qualified,
                table=spec.key.table,
                component_description=_component(spec),
                view=quote(f"{name}__changes"),
                projection=_sql_projection(reading),
                parsed=_sql_parsed(reading),
                source=_sql_source(spec, options),
                target=quote(name),
                comment=string_literal(_comment(spec, options)),
                table_properties=properties,
                flow=quote(f"{name}__auto_cdc"),
                source_filter=_SQL_SOURCE_FILTER[options.scd_type],
                apply_as_truncate=_SQL_APPLY_AS_TRUNCATE[options.scd_type],
                sequence_by=_SQL_SEQUENCE_BY[options.scd_type],
                except_columns=", ".join(EXCEPT_COLUMNS),
                scd_type=str(options.scd_type),
            )
        )
    return "".join(parts)


_SQL_SOURCE_FILTER: Final = {1: "", 2: "\n    AND _op NOT IN ('truncate', 'drop')"}
"""SCD type 2 has no truncate: its source view leaves truncate and drop rows out."""
_SQL_APPLY_AS_TRUNCATE: Final = {1: "\nAPPLY AS TRUNCATE WHEN _op IN ('truncate', 'drop')", 2: ""}
_SQL_SEQUENCE_BY: Final = {1: "STRUCT(_batch, _ts)", 2: "_ts"}


def _python_table(reading: Projection, indent: str) -> str:
    """The body of one ``TABLES`` entry (or ``UNTYPED``): schemas, JSON fields, columns."""
    columns = "".join(
        f"{indent}        ({_py_str(column.name)}, {_py_str(column.expression)}),\n"
        for column in reading.columns
    )
    return (
        f'{indent}    "typed": {_py_str(reading.typed_schema)},\n'
        f'{indent}    "kinds": {_py_str(reading.kinds_schema)},\n'
        f'{indent}    "json": {json.dumps(list(reading.json_fields))},\n'
        f'{indent}    "columns": [\n{columns}{indent}    ],\n'
    )


def _silver_python(specs: Sequence[TableSpec], options: RenderOptions) -> str:
    entries = [
        f"    {_py_str(spec.key.qualified)}: {{\n"
        f'        "name": {_py_str(sql_name(spec.key))},\n'
        + _python_table(projection(spec, json_text="document"), "    ")
        + "    },\n"
        for spec in specs
    ]
    untyped = projection(TableSpec(specs[0].key, keep_document=True), json_text="document")
    source = template(f"python/source_{options.feed.replace('-', '_')}.py.tmpl").rstrip("\n")
    return fill(
        template("python/silver_pipeline.py.tmpl"),
        generated=generated_notice(),
        scd_type=str(options.scd_type),
        truncate_help=_truncate_help(options.scd_type, ""),
        source_description=_source_description(options),
        configuration_help=_configuration_help(options, "    ", tables=True),
        typed_columns_help=_typed_columns_help("document", ""),
        tables="{\n" + "".join(entries) + "}",
        untyped="{\n" + _python_table(untyped, "") + "}",
        typed_options=json.dumps(TYPED_OPTIONS),
        source_function=source,
        except_columns=json.dumps(list(EXCEPT_COLUMNS)),
    )


def _bronze_external_tables(
    specs: Sequence[TableSpec], options: RenderOptions, names: BundleNames
) -> str:
    schema = f"{quote(options.catalog)}.{quote(names.bronze_schema)}"
    # The source's part of the warehouse (the layout of warehouse.Warehouse).
    root = f"{_required(options, 'warehouse').rstrip('/')}/{options.source_name}"
    parts = [
        fill(
            template("sql/bronze_external_tables_header.sql"),
            generated=generated_notice(),
            location=root,
            schema=schema,
            source_name=options.source_name,
            source_literal=string_literal(options.source_name),
            guard_message=string_literal(
                f"{options.catalog}.{names.bronze_schema} already registers the control table "
                f"of another source than {options.source_name}; render this source with a "
                "--bronze-schema of its own"
            ),
            checkpoints_location=string_literal(f"{root}/_convex_cdc/checkpoints"),
            specs_location=string_literal(f"{root}/_convex_cdc/table_specs"),
        )
    ]
    for spec in specs:
        parts.append(
            fill(
                template("sql/bronze_external_table.sql"),
                comment=f"Convex table {spec.key.qualified} ({_component(spec)})",
                name=f"{schema}.{quote(sql_name(spec.key))}",
                location=string_literal(f"{root}/bronze/{spec.dir}"),
            )
        )
    return "\n".join(parts)


# --- helpers ----------------------------------------------------------------------------


def _component(spec: TableSpec) -> str:
    return f"component {spec.key.component}" if spec.key.component else "the app"


def _comment(spec: TableSpec, options: RenderOptions) -> str:
    return (
        f"Convex table {spec.key.qualified}: current state "
        f"(AUTO CDC SCD type {options.scd_type} from convex-cdc)"
    )


def _py_str(text: str) -> str:
    """A Python string literal for ``text`` that needs as few escapes as possible."""
    if '"' not in text:
        return json.dumps(text)
    if "'" not in text and "\\" not in text:
        return f"'{text}'"
    if '"""' not in text and "\\" not in text and not text.endswith('"'):
        return f'"""{text}"""'
    return repr(text)
