"""``convex-cdc databricks``: bronze CDC Delta tables, local silver, Lakeflow assets.

``extract`` lands a deployment in bronze (and is what the bundle's job runs),
``apply-silver`` builds silver current-state tables locally with AUTO CDC SCD1
semantics, ``render`` writes the Lakeflow pipeline sources and the bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

import click

from convex_cdc.commands.connection import connect, source_options
from convex_cdc.commands.options import batch_rows_option
from convex_cdc.core.errors import ConfigError, TargetError

_WAREHOUSE_ENV = "CONVEX_CDC_WAREHOUSE"


_WAREHOUSE_HELP = f"Warehouse: a local directory or s3://bucket/prefix [env: {_WAREHOUSE_ENV}]."
_warehouse_required = click.option(
    "--warehouse", envvar=_WAREHOUSE_ENV, required=True, metavar="URI", help=_WAREHOUSE_HELP
)
_warehouse_optional = click.option(
    "--warehouse", envvar=_WAREHOUSE_ENV, metavar="URI", help=_WAREHOUSE_HELP
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
@source_options
@_endpoint_option
@click.option("--resnapshot", is_flag=True, help="Start a new snapshot (truncate-and-reload).")
@click.option("--follow", is_flag=True, help="Keep polling for changes after catching up.")
@click.option(
    "--secret-scope",
    metavar="SCOPE",
    help="On Databricks: read the deploy key (`deploy-key`) and optional S3 credentials "
    "from this secret scope.",
)
@batch_rows_option
def extract(
    *,
    warehouse: str,
    url: str | None,
    deploy_key_env: str,
    endpoint_url: str | None,
    resnapshot: bool,
    follow: bool,
    secret_scope: str | None,
    batch_rows: int,
) -> None:
    """Land the deployment in bronze CDC Delta tables (one per Convex table).

    Each batch is one Delta commit per table, tagged with an application transaction,
    so a replay after a crash writes nothing twice. The checkpoint goes to the control
    table (<warehouse>/_convex_cdc/checkpoints) after the batch is committed.
    """
    from convex_cdc.commands.progress import SyncProgress
    from convex_cdc.core.orchestrator import SyncOptions
    from convex_cdc.platform.databricks.control_table import read_control_state
    from convex_cdc.platform.databricks.extractor import extract as run_extract
    from convex_cdc.platform.databricks.extractor import load_secret_scope
    from convex_cdc.platform.databricks.warehouse import Warehouse

    if secret_scope:
        load_secret_scope(secret_scope, deploy_key_env=deploy_key_env)
    target = Warehouse.from_uri(warehouse, endpoint_url=endpoint_url)
    options = SyncOptions(resnapshot=resnapshot, follow=follow, batch_rows=batch_rows)
    with connect(url, deploy_key_env) as source, SyncProgress("extract") as progress:
        result = run_extract(source, target, options, observer=progress)
    report = result.sync
    rate = report.events / report.elapsed_seconds if report.elapsed_seconds > 0 else 0.0
    click.echo(
        f"extract: {report.events:,} change events ({report.deletes:,} deletes) in "
        f"{report.snapshot_pages + report.delta_pages:,} pages, {result.bronze_commits:,} "
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
@_endpoint_option
def apply_silver(*, warehouse: str, endpoint_url: str | None) -> None:
    """Build silver/<table> current-state tables from bronze (AUTO CDC SCD type 1).

    Keys _id, sequence _ts, deletes where _deleted; late and replayed events are
    ignored. Incremental: only bronze batches not applied yet are read.
    """
    from convex_cdc.platform.databricks.silver import TableApply
    from convex_cdc.platform.databricks.silver import apply_silver as run_apply
    from convex_cdc.platform.databricks.warehouse import Warehouse

    target = Warehouse.from_uri(warehouse, endpoint_url=endpoint_url)

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
        f"apply-silver: {len(report.tables)} tables, {report.rows_read:,} bronze rows in "
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
@click.option(
    "--source",
    type=click.Choice(["bronze", "s3-export"]),
    default="bronze",
    show_default=True,
    help="Read the extractor's bronze tables, or the S3/export target's published raw "
    "change log (Auto Loader).",
)
@click.option("--scd-type", type=click.Choice(["1", "2"]), default="1", show_default=True)
@click.option(
    "--language",
    type=click.Choice(["sql", "python"]),
    default="sql",
    show_default=True,
    help="Which pipeline source the bundle's pipeline uses (both are rendered).",
)
@click.option("--catalog", default="main", show_default=True)
@click.option("--bronze-schema", default="convex_bronze", show_default=True)
@click.option("--silver-schema", default="convex_silver", show_default=True)
@click.option("--location", metavar="S3_URI", help="Where Databricks finds the warehouse.")
@click.option("--raw-change-log", metavar="S3_URI", help="The published raw change log.")
@click.option("--url", "convex_url", metavar="URL", help="Deployment URL for the job.")
def render(
    *,
    out: Path,
    warehouse: str | None,
    endpoint_url: str | None,
    tables: str | None,
    source: str,
    scd_type: str,
    language: str,
    catalog: str,
    bronze_schema: str,
    silver_schema: str,
    location: str | None,
    raw_change_log: str | None,
    convex_url: str | None,
) -> None:
    """Render the Lakeflow AUTO CDC pipeline (SQL and Python) and the bundle.

    Typed columns come from the table spec the extractor keeps in --warehouse; with
    --tables alone the silver tables carry the document JSON instead.
    """
    from convex_cdc.core.names import TableKey
    from convex_cdc.platform.databricks.render import RenderOptions, write_rendered
    from convex_cdc.platform.databricks.render import render as run_render
    from convex_cdc.platform.databricks.table_spec import TableSpec, TableSpecStore
    from convex_cdc.platform.databricks.warehouse import Warehouse

    if warehouse is None and not tables:
        raise ConfigError("nothing to render", hint="pass --warehouse URI or --tables a,b/c")
    known: dict[TableKey, TableSpec] = {}
    defaults = RenderOptions()
    wh_location = defaults.warehouse
    if warehouse is not None:
        target = Warehouse.from_uri(warehouse, endpoint_url=endpoint_url)
        known = TableSpecStore(target).load()
        if not target.is_local:
            wh_location = target.root
    if tables:
        keys = [TableKey.parse(t.strip()) for t in tables.split(",") if t.strip()]
        specs = [known.get(k, TableSpec(k, keep_document=True)) for k in keys]
    else:
        specs = list(known.values())
    for spec in specs:
        _ = spec.dir  # validates the names before they reach a template
    options = RenderOptions(
        source=cast(Literal["bronze", "s3-export"], source),
        scd_type=1 if scd_type == "1" else 2,
        language=cast(Literal["sql", "python"], language),
        catalog=catalog,
        bronze_schema=bronze_schema,
        silver_schema=silver_schema,
        warehouse=location or wh_location,
        raw_change_log=raw_change_log or defaults.raw_change_log,
        convex_url=convex_url or defaults.convex_url,
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
    click.echo(f"render: {len(specs)} tables, {len(written)} files → {out}")
    for path in written:
        click.echo(f"  {path.relative_to(out)}")
    click.echo(f"deploy: cd {out} && databricks bundle deploy -t dev")
