"""``convex-cdc demo``: the whole loop against an embedded devserver, in under a minute.

Starts the devserver with the demo workload, runs ``run`` (sync → materialize →
publish) into ``--dest``, plays more application traffic (updates, deletes, a field
changing type, a table created later), runs again, verifies staging against the source,
and prints where everything went.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from convex_cdc.commands.materialize import materialize_step
from convex_cdc.commands.sync import sync_step
from convex_cdc.core.client import ConvexClient
from convex_cdc.core.errors import ConfigError
from convex_cdc.devserver.server import DevServer
from convex_cdc.logs import register_secret
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.io_errors import io_errors
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.raw.change_log import RawChangeLog
from convex_cdc.target_s3.staging.state import load_staging_state
from convex_cdc.target_s3.staging.verify import verify

_KEY_ENV = "CONVEX_CDC_DEMO_DEPLOY_KEY"
_MARKER = ".convex-cdc-demo"


@click.command()
@click.option(
    "--dest",
    default="./demo-lake",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo lake goes (replaced if it holds an earlier demo).",
)
@click.option("--docs", type=click.IntRange(min=20), default=2000, show_default=True)
@click.option(
    "--transactions",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    help="Application transactions played between the two runs.",
)
def demo(dest: str, docs: int, transactions: int) -> None:
    """Run sync → materialize → publish twice against an embedded devserver.

    Nothing leaves this machine: the devserver listens on 127.0.0.1 and the lake and
    its published copy are local directories under --dest.
    """
    layout = DestinationLayout.at(dest)
    with io_errors(f"prepare the demo lake {layout.root}", then="run the demo again"):
        _prepare(layout.root)
    published = layout.root / "published"
    console = Console()
    with DevServer() as server:
        server.seed("demo", docs)
        register_secret(server.key)
        os.environ[_KEY_ENV] = server.key
        console.rule(f"devserver at {server.url} with {docs:,} documents")
        _run_once(layout, server.url, published)
        console.rule(f"playing {transactions} more transactions (updates, deletes, new table)")
        server.workload.step(transactions)
        _run_once(layout, server.url, published)
        console.rule("verify: staging against a fresh snapshot of the source")
        with ConvexClient(server.url, server.key) as client:
            report = verify(layout, client)
        click.echo(report.summary())
    _summary(console, layout, published)


def _prepare(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        if not (root / _MARKER).exists():
            raise ConfigError(
                f"{root} exists and is not a demo lake; refusing to replace it",
                hint="pass another --dest",
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / _MARKER).write_text("created by `convex-cdc demo`; safe to delete\n")


def _run_once(layout: DestinationLayout, url: str, published: Path) -> None:
    sync_step(layout=layout, url=url, deploy_key_env=_KEY_ENV)
    materialize_step(layout=layout)
    try:  # publishing needs the s3 extra; the rest of the demo does not
        from convex_cdc.commands.publish import publish_step
    except ModuleNotFoundError as exc:
        if exc.name != "obstore":
            raise
        click.echo("publish: skipped (pip install 'convex-cdc[s3]' to publish)")
        return
    publish_step(layout=layout, to=str(published))


def _summary(console: Console, layout: DestinationLayout, published: Path) -> None:
    state = load_staging_state(layout.staging_state)
    checkpoint = FileCheckpointStore(layout).load()
    deletes: Counter[str] = Counter()
    if checkpoint is not None:
        for batch in RawChangeLog(layout).committed_batches(0, checkpoint.batch_seq):
            for entry in batch.tables:
                deletes[entry.key.qualified] += entry.deletes
    table = Table("table", "rows", "deletes applied", "files", "widened columns", title="staging")
    for t in sorted(state.tables if state else (), key=lambda t: t.key):
        table.add_row(
            t.key.qualified,
            f"{t.row_count:,}",
            f"{deletes[t.key.qualified]:,}",
            str(len(t.files)),
            ", ".join(w.column for w in t.widenings) or "-",
        )
    console.print(table)
    console.print(f"raw change log  {layout.raw_change_log}")
    console.print(f"checkpoint      {layout.checkpoint}")
    console.print(f"staging         {layout.staging}")
    console.print(f"manifest        {published / 'manifest.json'}")
    console.print(
        "next: `convex-cdc status --dest "
        f"{layout.root} --offline`, or read {published / 'manifest.json'} with any parquet reader"
    )
