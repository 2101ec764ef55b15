"""``convex-cdc devserver``: serve a local Convex streaming-export API.

Prints exactly one line to stdout once it listens::

    convex-cdc devserver ready url=http://127.0.0.1:PORT [key=...]

(``key=`` only when the key was generated because ``CONVEX_DEPLOY_KEY`` is unset), then
serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

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
    )
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
        seeded.set()
        line = f"convex-cdc devserver ready url={server.url}"
        if server.key_generated:
            line += f" key={server.key}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        server.serve_forever()
    finally:
        server.stop()
