"""``convex-cdc devserver``: serve a local Convex streaming-export API.

Prints exactly one line to stdout once it listens::

    convex-cdc devserver ready url=http://127.0.0.1:PORT [key=...]

(``key=`` only when the key was generated because ``CONVEX_DEPLOY_KEY`` is unset), then
serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from types import FrameType

import click

from convex_cdc.core.errors import ConfigError
from convex_cdc.devserver.settings import DevServerSettings

_DEFAULTS = DevServerSettings()
"""The server's own defaults, shown by --help (one place to change them)."""


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=0, show_default=True, type=int, help="Port to listen on (0: a free port)."
)
@click.option(
    "--seed",
    "seed_name",
    type=click.Choice(["demo", "empty"]),
    default="empty",
    show_default=True,
    help="Initial data: 'demo' runs the workload generator for --docs documents.",
)
@click.option(
    "--docs", default=2000, show_default=True, type=int, help="Documents for --seed demo."
)
@click.option(
    "--fail-rate",
    default=_DEFAULTS.fail_rate,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Probability that an /api request fails (500, 503, 429, dropped body or stall).",
)
@click.option("--fault-seed", type=int, default=None, help="Seed of the fault-injection RNG.")
@click.option(
    "--stall-seconds",
    default=_DEFAULTS.stall_seconds,
    show_default=True,
    type=float,
    help="How long a 'stall' fault sleeps before answering.",
)
@click.option(
    "--workload-seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the workload generator and of generated ids.",
)
@click.option(
    "--snapshot-page-size",
    default=_DEFAULTS.snapshot_page_size,
    show_default=True,
    type=click.IntRange(min=1),
    help="Documents per list_snapshot page.",
)
@click.option(
    "--deltas-row-limit",
    default=_DEFAULTS.deltas_row_limit,
    show_default=True,
    type=click.IntRange(min=1),
    help="Log rows per document_deltas page before the page end is chosen.",
)
@click.option(
    "--retention-seconds",
    default=_DEFAULTS.retention_seconds,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Document-log retention: older delta cursors get InvalidWindowToReadDocuments.",
)
@click.option(
    "--snapshot-max-age-seconds",
    default=_DEFAULTS.snapshot_max_age_seconds,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Oldest usable list_snapshot snapshot (older: SnapshotTooOld).",
)
@click.option(
    "--disable-streaming-export",
    is_flag=True,
    help="Answer every export endpoint with 403 StreamingExportNotEnabled.",
)
@click.option(
    "--disable-data-sync",
    is_flag=True,
    help="Answer the Data Sync routes (/api/v1/data/sync, list_active_syncs, "
    "data_sync_cursor_from_deltas) with 404, as a deployment without Data Sync does.",
)
@click.option(
    "--data-sync-page-size",
    default=_DEFAULTS.data_sync_page_size,
    show_default=True,
    type=click.IntRange(min=1),
    help="Entries per Data Sync page (a transaction is never split).",
)
@click.option(
    "--data-sync-page-bytes",
    default=_DEFAULTS.data_sync_page_bytes,
    show_default=True,
    type=click.IntRange(min=1),
    help="Bytes of documents per Data Sync page (the document crossing it is still sent).",
)
@click.option(
    "--data-sync-rows-read-limit",
    default=_DEFAULTS.data_sync_rows_read_limit,
    show_default=True,
    type=click.IntRange(min=1),
    help="Log rows a Data Sync page reads; at least --data-sync-page-size.",
)
@click.option(
    "--data-sync-by-id-freshness-seconds",
    default=_DEFAULTS.data_sync_by_id_freshness_seconds,
    show_default=True,
    type=click.FloatRange(min=0.0, min_open=True),
    help="A Data Sync walks tables by id only while its timestamp is this close to the "
    "latest; otherwise it first catches up along the log.",
)
def devserver(
    *,
    host: str,
    port: int,
    seed_name: str,
    docs: int,
    fail_rate: float,
    fault_seed: int | None,
    stall_seconds: float,
    workload_seed: int,
    snapshot_page_size: int,
    deltas_row_limit: int,
    retention_seconds: float,
    snapshot_max_age_seconds: float,
    disable_streaming_export: bool,
    disable_data_sync: bool,
    data_sync_page_size: int,
    data_sync_page_bytes: int,
    data_sync_rows_read_limit: int,
    data_sync_by_id_freshness_seconds: float,
) -> None:
    """Serve a local Convex streaming-export API (with a write API and fault injection).

    The deploy key comes from CONVEX_DEPLOY_KEY; when it is unset a key is generated and
    printed on the ready line.
    """
    from convex_cdc.devserver.server import DevServer
    from convex_cdc.logs import register_secret

    settings = DevServerSettings(
        snapshot_page_size=snapshot_page_size,
        deltas_row_limit=deltas_row_limit,
        retention_seconds=retention_seconds,
        snapshot_max_age_seconds=snapshot_max_age_seconds,
        fail_rate=fail_rate,
        stall_seconds=stall_seconds,
        streaming_export_enabled=not disable_streaming_export,
        data_sync_enabled=not disable_data_sync,
        data_sync_page_size=data_sync_page_size,
        data_sync_page_bytes=data_sync_page_bytes,
        data_sync_rows_read_limit=data_sync_rows_read_limit,
        data_sync_by_id_freshness_seconds=data_sync_by_id_freshness_seconds,
    )
    try:
        settings.validate()
    except ValueError as exc:
        raise ConfigError(f"invalid devserver settings: {exc}") from exc
    key = os.environ.get("CONVEX_DEPLOY_KEY") or None
    try:
        server = DevServer(
            host=host,
            port=port,
            key=key,
            settings=settings,
            workload_seed=workload_seed,
            fault_seed=fault_seed,
        )
    except OSError as exc:  # the address is taken, or not one of this machine's
        raise ConfigError(
            f"the devserver cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pass another --port (0 picks a free one) or --host",
        ) from exc
    register_secret(server.key)

    seeded = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        if not seeded.is_set():
            raise KeyboardInterrupt  # still seeding: abandon it (the CLI exits 130)
        # shutdown() waits for serve_forever, so it must run off the serving thread.
        threading.Thread(target=server.stop, daemon=True).start()

    # Handlers go in before the ready line: a supervisor may signal as soon as it reads it.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.seed(seed_name, docs)
        # The seeded documents live as long as the process: the cyclic collector need never
        # scan them again (with millions of objects, each full collection would take seconds).
        gc.freeze()
        seeded.set()
        line = f"convex-cdc devserver ready url={server.url}"
        if server.key_generated:
            line += f" key={server.key}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        server.serve_forever()
    finally:
        server.stop()
