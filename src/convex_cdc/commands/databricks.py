"""``convex-cdc databricks``: bronze CDC Delta tables, local silver, Lakeflow assets.

``extract`` lands a deployment in bronze (and is what the bundle's job runs),
``apply-silver`` builds silver current-state tables locally with AUTO CDC SCD1
semantics, ``render`` writes the Lakeflow pipeline sources and the bundle.

A warehouse holds one or more deployments, each under its source name (``--source``,
by default derived from the deployment URL; see
:mod:`convex_cdc.platform.databricks.source_name`). Every command works on one source.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import click

from convex_cdc.commands.connection import URL_ENV, connect, source_options
from convex_cdc.commands.options import api_option, batch_rows_option, selection_options
from convex_cdc.core.api_choice import ApiChoice
from convex_cdc.core.errors import ConfigError, TargetError
from convex_cdc.core.selection import Selection

if TYPE_CHECKING:
    from convex_cdc.platform.databricks.warehouse import Warehouse

_WAREHOUSE_ENV = "CONVEX_CDC_WAREHOUSE"
_SOURCE_ENV = "CONVEX_CDC_SOURCE"


_WAREHOUSE_HELP = f"Warehouse: a local directory or s3://bucket/prefix [env: {_WAREHOUSE_ENV}]."
_warehouse_required = click.option(
    "--warehouse", envvar=_WAREHOUSE_ENV, required=True, metavar="URI", help=_WAREHOUSE_HELP
)
_warehouse_optional = click.option(
    "--warehouse", envvar=_WAREHOUSE_ENV, metavar="URI", help=_WAREHOUSE_HELP
)


_source_option = click.option(
    "--source",
    "source_name",
    envvar=_SOURCE_ENV,
    metavar="NAME",
    help="The deployment's name in the warehouse (its directory <warehouse>/NAME/, and part "
    "of every rendered schema, job and pipeline name): lowercase letters, digits and _, "
    "starting with a letter. Default: derived from the deployment URL "
    f"(https://happy-animal-123.convex.cloud → happy_animal_123) [env: {_SOURCE_ENV}].",
)


_endpoint_option = click.option(
    "--endpoint-url",
    metavar="URL",
    help="S3-compatible endpoint (else AWS_ENDPOINT_URL, else AWS). Credentials come from "
    "the standard AWS environment variables.",
)


@click.group()
def databricks() -> None:
    """Databricks/delta target: bronze CDC tables, silver, Lakeflow AUTO CDC assets."""


@databricks.command()
@_warehouse_required
@_source_option
@source_options
@_endpoint_option
@click.option("--resnapshot", is_flag=True, help="Start a new snapshot (truncate-and-reload).")
@click.option("--follow", is_flag=True, help="Keep polling for changes after catching up.")
@click.option(
    "--secret-scope",
    metavar="SCOPE",
    help="On Databricks: read the deploy key (`deploy-key`) and, as a fallback for S3, static "
    "keys (`aws-access-key-id`, `aws-secret-access-key`, optional `aws-session-token`) from "
    "this secret scope.",
)
@click.option(
    "--service-credential",
    metavar="NAME",
    help="On Databricks (DBR 16.2+, serverless included): take temporary S3 credentials for "
    "an s3:// warehouse from this Unity Catalog service credential; they are refreshed "
    "before they expire and win over static keys.",
)
@selection_options
@batch_rows_option
@api_option
def extract(
    *,
    warehouse: str,
    source_name: str | None,
    url: str | None,
    deploy_key_env: str,
    endpoint_url: str | None,
    resnapshot: bool,
    follow: bool,
    secret_scope: str | None,
    service_credential: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    batch_rows: int,
    api: ApiChoice,
) -> None:
    """Land the deployment in bronze CDC Delta tables (one per Convex table).

    Each batch is one Delta commit per table, tagged with an application transaction,
    so a replay after a crash writes nothing twice. The checkpoint goes to the source's
    control table (<warehouse>/<source>/_convex_cdc/checkpoints) after the batch is
    committed. Extractors of different sources can share a warehouse and run at the same
    time; a second extractor of the same source exits with 75.
    """
    from convex_cdc.commands.progress import SyncProgress
    from convex_cdc.core.orchestrator import SyncOptions
    from convex_cdc.platform.databricks.control_table import read_control_state
    from convex_cdc.platform.databricks.credentials import ServiceCredential
    from convex_cdc.platform.databricks.extractor import extract as run_extract
    from convex_cdc.platform.databricks.extractor import load_secret_scope
    from convex_cdc.platform.databricks.source_name import resolve_source_name
    from convex_cdc.platform.databricks.warehouse import Warehouse

    if secret_scope:
        load_secret_scope(secret_scope, deploy_key_env=deploy_key_env)
    selection = Selection.from_patterns(include=include, exclude=exclude)
    options = SyncOptions(
        selection=None if selection.is_everything else selection,
        api=api,
        resnapshot=resnapshot,
        follow=follow,
        batch_rows=batch_rows,
    )
    with connect(url, deploy_key_env) as source:
        name = resolve_source_name(source_name, source.deployment_url, command="databricks extract")
        target = Warehouse.from_uri(warehouse, source_name=name, endpoint_url=endpoint_url)
        if service_credential:
            if target.is_local:
                raise ConfigError(
                    "--service-credential gives S3 credentials, but the warehouse is a local "
                    "directory",
                    hint="pass --warehouse s3://bucket/prefix, or drop --service-credential",
                )
            target = target.with_credentials(ServiceCredential.from_databricks(service_credential))
        with SyncProgress("extract") as progress:
            result = run_extract(source, target, options, observer=progress)
    report = result.sync
    rate = report.events / report.elapsed_seconds if report.elapsed_seconds > 0 else 0.0
    click.echo(
        f"extract: source {target.source_name}, {report.api} API: {report.events:,} change "
        f"events ({report.deletes:,} deletes) in "
        f"{report.snapshot_pages + report.delta_pages + report.data_sync_pages:,} pages, "
        f"{result.bronze_commits:,} "
        f"bronze commits, {report.elapsed_seconds:.1f}s ({rate:,.0f} events/s)"
    )
    if result.skipped_appends or result.reconciled:
        click.echo(
            f"  recovered from an earlier interruption: {result.skipped_appends} replayed "
            "appends skipped" + (", checkpoint reconciled with bronze" if result.reconciled else "")
        )
    click.echo(f"  bronze: {target.join('bronze')}/<table>")
    click.echo(f"  checkpoint: {target.checkpoints}")
    state = read_control_state(target)
    if report.started_new_snapshot and state is not None and state.walk_first_batch > 1:
        click.echo(
            f"  new snapshot walk from batch {state.walk_first_batch}: `apply-silver` "
            "rebuilds silver; in the Lakeflow pipeline set convex.first_batch="
            f"{state.walk_first_batch} and run a full refresh"
        )


@databricks.command("apply-silver")
@_warehouse_required
@_source_option
@click.option(
    "--url",
    envvar=URL_ENV,
    metavar="URL",
    help="The deployment whose silver to build, to derive --source from (nothing is fetched "
    f"from it) [env: {URL_ENV}].",
)
@_endpoint_option
def apply_silver(
    *, warehouse: str, source_name: str | None, url: str | None, endpoint_url: str | None
) -> None:
    """Build <source>/silver/<table> current-state tables from bronze (AUTO CDC SCD type 1).

    Keys _id, sequence _ts, deletes where _deleted; late and replayed events are
    ignored. Incremental: only bronze batches not applied yet are read.
    """
    from convex_cdc.platform.databricks.control_table import read_control_state
    from convex_cdc.platform.databricks.silver import TableApply
    from convex_cdc.platform.databricks.silver import apply_silver as run_apply
    from convex_cdc.platform.databricks.source_name import resolve_source_name
    from convex_cdc.platform.databricks.warehouse import Warehouse

    name = resolve_source_name(source_name, url, command="databricks apply-silver")
    target = Warehouse.from_uri(warehouse, source_name=name, endpoint_url=endpoint_url)
    if read_control_state(target) is None:
        raise _no_such_source(target)

    def show(table: TableApply) -> None:
        if table.skipped:
            click.echo(f"  {table.key.qualified}: up to date")
            return
        note = " (rebuilt)" if table.rebuilt else ""
        added = f", new columns {', '.join(table.columns_added)}" if table.columns_added else ""
        click.echo(
            f"  {table.key.qualified}: {table.rows_read:,} bronze rows → {table.upserts:,} "
            f"upserts, {table.deletes:,} deletes{note}{added} → {table.location}"
        )

    report = run_apply(target, on_table=show)
    rate = report.rows_read / report.elapsed_seconds if report.elapsed_seconds > 0 else 0.0
    click.echo(
        f"apply-silver: source {target.source_name}: {len(report.tables)} tables, "
        f"{report.rows_read:,} bronze rows in "
        f"{report.elapsed_seconds:.1f}s ({rate:,.0f} rows/s)"
    )
    if not report.snapshot_complete:
        click.echo("  note: the snapshot walk is still running; silver is partial until it ends")


@databricks.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the bundle and pipeline sources to.",
)
@_warehouse_optional
@_endpoint_option
@click.option(
    "--tables",
    metavar="COMP/TABLE,...",
    help="Render these tables (untyped: silver keeps the document JSON) instead of, or as "
    "a subset of, the warehouse's table spec.",
)
@_source_option
@click.option(
    "--feed",
    type=click.Choice(["bronze", "s3-export"]),
    default="bronze",
    show_default=True,
    help="The change feed the pipeline reads: the extractor's bronze tables, or the "
    "S3/export target's published raw change log (Auto Loader).",
)
@click.option("--scd-type", type=click.Choice(["1", "2"]), default="1", show_default=True)
@click.option(
    "--language",
    type=click.Choice(["sql", "python"]),
    default="sql",
    show_default=True,
    help="Which pipeline source the bundle's pipeline uses (both are rendered).",
)
@click.option(
    "--catalog",
    default="main",
    show_default=True,
    help="Catalog of the bronze tables and of the silver schemas.",
)
@click.option(
    "--bronze-schema",
    metavar="SCHEMA",
    help="Where the source's bronze tables are registered (one source per schema). "
    "Default: convex_<source>_bronze.",
)
@click.option(
    "--silver-schema",
    metavar="SCHEMA",
    help="The prod target's silver schema; dev uses <this>_<developer short name>. "
    "Default: convex_<source>_silver.",
)
@click.option(
    "--warehouse-location",
    "--location",
    "warehouse_location",
    metavar="URI",
    help="The warehouse as Databricks reaches it (s3://bucket/prefix), where the extractor "
    "job writes and bronze is registered. Default: --warehouse when it is not local.",
)
@click.option(
    "--url",
    "convex_url",
    envvar=URL_ENV,
    metavar="URL",
    help="The deployment the extractor job replicates (and, without --source, what the "
    "source name is derived from). Default: the one the source's checkpoint in --warehouse "
    f"belongs to [env: {URL_ENV}].",
)
@click.option(
    "--project-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="DIR",
    help="The convex-cdc checkout the bundle builds the extractor's wheel from at deploy "
    "time. Default: the checkout this convex-cdc runs from.",
)
@click.option(
    "--raw-change-log",
    metavar="URI",
    help="With --feed s3-export: the published raw change log (s3://bucket/prefix/raw_change_log).",
)
@click.option(
    "--published",
    metavar="URI",
    help="The S3/export target's `publish --to` (s3://bucket/prefix): also write "
    "sql/published_tables.sql, which registers its published Delta tables (current state) "
    "as Unity Catalog external tables in convex_<source>_published.",
)
def render(
    *,
    out: Path,
    warehouse: str | None,
    endpoint_url: str | None,
    tables: str | None,
    source_name: str | None,
    feed: str,
    scd_type: str,
    language: str,
    catalog: str,
    bronze_schema: str | None,
    silver_schema: str | None,
    warehouse_location: str | None,
    convex_url: str | None,
    project_dir: Path | None,
    raw_change_log: str | None,
    published: str | None,
) -> None:
    """Render the Lakeflow AUTO CDC pipeline (SQL and Python) and the bundle.

    The bundle serves one source of the warehouse; every schema, job and pipeline name
    it gives Databricks carries the source name. Typed columns come from the source's
    table spec in --warehouse; with --tables alone the silver tables carry the document
    JSON instead. Nothing is made up: a value the bundle needs that is neither given nor
    found in the warehouse is a usage error naming its flag.
    """
    from convex_cdc.core.checkpoint import SourceIdentity
    from convex_cdc.core.names import TableKey
    from convex_cdc.platform.databricks.control_table import read_control_state
    from convex_cdc.platform.databricks.render import render as run_render
    from convex_cdc.platform.databricks.render import write_rendered
    from convex_cdc.platform.databricks.render_options import RenderOptions, bundle_names
    from convex_cdc.platform.databricks.source_name import resolve_source_name
    from convex_cdc.platform.databricks.table_spec import TableSpec, TableSpecStore
    from convex_cdc.platform.databricks.warehouse import Warehouse
    from convex_cdc.platform.databricks.wheel_project import find_checkout

    if warehouse is None and not tables:
        raise ConfigError("nothing to render", hint="pass --warehouse URI or --tables a,b/c")
    name = resolve_source_name(source_name, convex_url, command="databricks render")
    known: dict[TableKey, TableSpec] = {}
    if warehouse is not None:
        target = Warehouse.from_uri(warehouse, source_name=name, endpoint_url=endpoint_url)
        known = TableSpecStore(target).load()
        state = read_control_state(target)
        if state is None and not known and not tables:
            raise _no_such_source(target)
        if feed == "bronze":
            if warehouse_location is None and not target.is_local:
                warehouse_location = target.root
            replicated = state.checkpoint.source if state is not None else None
            if convex_url is None and replicated is not None:
                convex_url = replicated.deployment_url
            elif convex_url and replicated and SourceIdentity.from_url(convex_url) != replicated:
                raise ConfigError(
                    f"--url {convex_url} is not the deployment source {name!r} replicates "
                    f"({replicated.deployment_url}); the extractor job would refuse to run",
                    hint="drop --url, or pass the --source of that deployment",
                )
    if tables:
        keys = [TableKey.parse(t.strip()) for t in tables.split(",") if t.strip()]
        specs = [known.get(k, TableSpec(k, keep_document=True)) for k in keys]
    else:
        specs = list(known.values())
    for spec in specs:
        _ = spec.dir  # validates the names before they reach a template
    checkout = find_checkout(project_dir) if feed == "bronze" else None
    options = RenderOptions(
        source_name=name,
        feed=cast(Literal["bronze", "s3-export"], feed),
        scd_type=1 if scd_type == "1" else 2,
        language=cast(Literal["sql", "python"], language),
        catalog=catalog,
        bronze_schema=bronze_schema,
        silver_schema=silver_schema,
        warehouse=warehouse_location,
        convex_url=convex_url,
        # The bundle records the checkout relative to itself, as the CLI resolves it.
        project_dir=_relative_posix(checkout, out) if checkout is not None else None,
        raw_change_log=raw_change_log,
        published=published,
    )
    files = run_render(specs, options)
    try:
        written = write_rendered(files, out)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise TargetError(
            f"cannot write the rendered bundle to {out}: {exc.strerror or exc}{where}",
            hint="pass an --out directory this user can create and write",
        ) from exc
    names = bundle_names(options)
    click.echo(f"render: source {name}: {len(specs)} tables, {len(written)} files → {out}")
    for path in written:
        click.echo(f"  {path.relative_to(out)}")
    click.echo(
        f"names: bundle {names.bundle}, job {names.job}, pipeline {names.pipeline}, "
        f"schemas {catalog}.{names.bronze_schema} (bronze) and {catalog}.{names.silver_schema} "
        "(prod silver)"
    )
    if checkout is not None:
        click.echo(f"wheel: built from {checkout} by `databricks bundle deploy`")
    click.echo(f"deploy: cd {out} && databricks bundle deploy -t dev")


def _no_such_source(target: Warehouse) -> ConfigError:
    """The error for a source the warehouse holds nothing of (a mistyped or other name)."""
    return ConfigError(
        f"the warehouse {target.root} holds no source {target.source_name!r} "
        f"(nothing at {target.location})",
        hint="pass the --source `databricks extract` used (or its --url), or extract it first",
    )


def _relative_posix(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (both resolved), with forward slashes as in YAML."""
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
