"""``convex-cdc status``: where a destination stands, for humans and for monitoring."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from convex_cdc.commands.connection import connect, source_options
from convex_cdc.commands.options import dest_option
from convex_cdc.commands.sync import describe_position, format_ts
from convex_cdc.core.checkpoint import Checkpoint, DataSync
from convex_cdc.core.checkpoint_json import checkpoint_to_json
from convex_cdc.core.errors import ConvexCdcError
from convex_cdc.core.retention import (
    check_retention,
    cursor_ts,
    default_retention_days,
    describe_duration,
)
from convex_cdc.core.selection import Selection
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.io_errors import io_errors
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.state import StagingState, load_staging_state

_NOTHING_SELECTED = Selection.from_wire({"_other": "excluded"})


def collect_status(
    layout: DestinationLayout,
    *,
    url: str | None,
    deploy_key_env: str,
    ask_server: bool,
    retention_days: float | None = None,
) -> dict[str, Any]:
    """Everything ``status`` shows, as a JSON-ready dict.

    ``retention_days``: the deployment's document retention (default: 14 days for a
    ``*.convex.cloud`` URL, 2 days otherwise), which the cursor's age is compared with.

    Raises:
        StateError: the checkpoint or the staging state is unusable.
        TargetError: a state file cannot be read (permissions, a file where a directory
            belongs).
    """
    with io_errors(f"read the state of {layout.root}", then="run status again"):
        checkpoint = FileCheckpointStore(layout).load()
        staging = load_staging_state(layout.staging_state)
        last_publish = _last_publish(layout.last_publish)
    status: dict[str, Any] = {
        "dest": str(layout.root),
        "phase": "not started" if checkpoint is None else checkpoint.phase,
        "api": None if checkpoint is None else checkpoint.api,
        "data_sync": _data_sync_status(checkpoint),
        "consistent_as_of_ts": None if checkpoint is None else checkpoint.consistent_as_of,
        "checkpoint": None if checkpoint is None else checkpoint_to_json(checkpoint),
        "position": None if checkpoint is None else describe_position(checkpoint),
        "lag_seconds": None,
        "lag_source": None,
        "retention_days": None,
        "cursor_age_seconds": None,
        "retention_left_seconds": None,
        "retention_warning": None,
        "staging": _staging_status(staging, checkpoint),
        "last_publish": last_publish,
    }
    if checkpoint is None:
        return status
    now, source = _server_now(checkpoint, url, deploy_key_env) if ask_server else (None, None)
    if now is None:
        now, source = time.time_ns(), "local clock (no server reached)"
    # Lag is how far behind the server the landed data is consistent (none mid-walk).
    consistent = checkpoint.consistent_as_of
    if consistent is not None:
        status["lag_seconds"] = round(max(now - consistent, 0) / 1e9, 3)
        status["lag_source"] = source
    status.update(
        _retention_status(
            layout, checkpoint=checkpoint, url=url, now=now, retention_days=retention_days
        )
    )
    return status


def _retention_status(
    layout: DestinationLayout,
    *,
    checkpoint: Checkpoint,
    url: str | None,
    now: int,
    retention_days: float | None,
) -> dict[str, Any]:
    """The cursor's age against the deployment's retention, and a warning past half of it."""
    days = retention_days or default_retention_days(url or checkpoint.source.deployment_url)
    cursor_at = cursor_ts(checkpoint)
    if cursor_at is None:
        # A data sync still snapshotting keeps its timestamp inside the opaque cursor; it
        # moves with every page, so the last save is when it was last fresh.
        with io_errors(f"read the state of {layout.root}", then="run status again"):
            cursor_at = layout.checkpoint.stat().st_mtime_ns
    check = check_retention(cursor_at=cursor_at, now=now, retention_days=days)
    return {
        "retention_days": check.retention_days,
        "cursor_age_seconds": check.cursor_age_seconds,
        "retention_left_seconds": check.retention_left_seconds,
        "retention_warning": None
        if check.message is None
        else {"level": check.level, "message": check.message},
    }


def _data_sync_status(checkpoint: Checkpoint | None) -> dict[str, Any] | None:
    """The Data Sync part of the status; ``None`` unless the source is followed with it."""
    if checkpoint is None or not isinstance(checkpoint.position, DataSync):
        return None
    position = checkpoint.position
    return {
        "status": position.status,
        "sync_id": position.sync_id,
        "consistent_as_of_ts": checkpoint.consistent_as_of,
    }


def _server_now(
    checkpoint: Checkpoint, url: str | None, key_env: str
) -> tuple[int | None, str | None]:
    # list_snapshot with nothing selected is the cheapest call that returns the server's
    # current timestamp.
    if not (url or checkpoint.source.deployment_url) or not os.environ.get(key_env):
        return None, None
    try:
        with connect(url or checkpoint.source.deployment_url, key_env) as client:
            page = client.list_snapshot(snapshot=None, cursor=None, selection=_NOTHING_SELECTED)
    except ConvexCdcError as exc:
        return None, f"server unreachable: {exc.message}"
    return page.snapshot, "server"


def _staging_status(staging: StagingState | None, checkpoint: Checkpoint | None) -> dict[str, Any]:
    if staging is None:
        return {"built": False, "tables": []}
    committed = checkpoint.batch_seq if checkpoint is not None else 0
    return {
        "built": True,
        "last_applied_batch": staging.last_applied_batch,
        "batches_behind": max(committed - staging.last_applied_batch, 0),
        "consistent_as_of_ts": staging.consistent_as_of_ts,
        "tables": [
            {
                "table": t.key.qualified,
                "rows": t.row_count,
                "files": len(t.files),
                "columns": len(t.columns),
                "widenings": [w.column for w in t.widenings],
            }
            for t in sorted(staging.tables, key=lambda t: t.key)
        ],
    }


def _last_publish(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _render(status: dict[str, Any]) -> None:
    console = Console()
    console.print(f"[bold]destination[/bold] {status['dest']}")
    console.print(f"[bold]phase[/bold]       {status['phase']}")
    if status["api"]:
        console.print(f"[bold]api[/bold]         {_describe_api(status)}")
    if status["position"]:
        console.print(f"[bold]position[/bold]    {status['position']}")
    if status["lag_seconds"] is not None:
        console.print(
            f"[bold]lag[/bold]         {status['lag_seconds']:.1f}s ({status['lag_source']})"
        )
    if status["retention_days"] is not None:
        console.print(
            f"[bold]retention[/bold]   {status['retention_days']:g} days; cursor "
            f"{describe_duration(status['cursor_age_seconds'])} old, "
            f"{describe_duration(max(status['retention_left_seconds'], 0))} left"
        )
    warning = status["retention_warning"]
    if warning is not None:
        style = "bold red" if warning["level"] == "error" else "yellow"
        console.print(f"[{style}]{warning['level']}:[/{style}] {warning['message']}")
    staging = status["staging"]
    if not staging["built"]:
        console.print("[bold]staging[/bold]     not built yet (run `convex-cdc materialize`)")
    else:
        consistent = staging["consistent_as_of_ts"]
        waiting = (
            "data sync snapshotting" if status["api"] == "data-sync" else "snapshot incomplete"
        )
        as_of = format_ts(consistent) if consistent is not None else waiting
        console.print(
            f"[bold]staging[/bold]     batch {staging['last_applied_batch']}, "
            f"{staging['batches_behind']} committed batches not yet applied, "
            f"consistent as of {as_of}"
        )
        table = Table("table", "rows", "files", "columns", "widened")
        for row in staging["tables"]:
            table.add_row(
                row["table"],
                f"{row['rows']:,}",
                str(row["files"]),
                str(row["columns"]),
                ", ".join(row["widenings"]) or "-",
            )
        console.print(table)
    published = status["last_publish"]
    if published:
        state = "published" if published.get("published") else "nothing new"
        console.print(
            f"[bold]last publish[/bold] {published.get('at')} → {published.get('to')} "
            f"(manifest {published.get('sequence')}, {state})"
        )
    else:
        console.print("[bold]last publish[/bold] never")


def _describe_api(status: dict[str, Any]) -> str:
    """E.g. ``data-sync: upToDate, sync 3f…, consistent as of …``."""
    data_sync = status["data_sync"]
    if data_sync is None:
        return str(status["api"])
    consistent = data_sync["consistent_as_of_ts"]
    parts = [
        data_sync["status"],
        f"sync {data_sync['sync_id'] or 'not started'}",
        "not consistent yet (publish waits)"
        if consistent is None
        else f"consistent as of {format_ts(consistent)}",
    ]
    return f"{status['api']}: " + ", ".join(parts)


@click.command()
@dest_option
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--offline", is_flag=True, help="Do not contact the server (lag from local clock).")
@click.option(
    "--retention-days",
    type=click.FloatRange(min=0, min_open=True),
    envvar="CONVEX_CDC_RETENTION_DAYS",
    help="The deployment's document retention [default: 14 for *.convex.cloud, else 2, "
    "a self-hosted backend's default].",
)
def status(
    *,
    dest: str,
    url: str | None,
    deploy_key_env: str,
    as_json: bool,
    offline: bool,
    retention_days: float | None,
) -> None:
    """Show DIR's phase, the API it follows (and a data sync's status), cursors, lag
    behind the server, the cursor's age against the deployment's retention, rows per table
    and last publish.

    Lag and the cursor's age are measured against the server's current timestamp when the
    deploy key is available, otherwise against the local clock. A cursor past half of the
    retention window gets a warning, past 90% an error line: sync more often.
    """
    result = collect_status(
        DestinationLayout.at(dest),
        url=url,
        deploy_key_env=deploy_key_env,
        ask_server=not offline,
        retention_days=retention_days,
    )
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        _render(result)
