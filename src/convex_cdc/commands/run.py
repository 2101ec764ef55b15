"""``convex-cdc run``: sync, materialize and publish — what a scheduler calls.

A SIGTERM during the sync step stops it after the batch being written (see
:mod:`.sync`) and the run ends there with :class:`~convex_cdc.core.errors.Stopped`, even
when sync had just caught up: a stopped run never goes on to materialize and publish.
Later steps are crash-safe, so a SIGTERM there ends the process at once.
"""

from __future__ import annotations

import threading

import click

from convex_cdc.commands.connection import source_options
from convex_cdc.commands.materialize import materialize_step
from convex_cdc.commands.options import (
    api_option,
    batch_rows_option,
    dest_option,
    publish_options,
    selection_options,
)
from convex_cdc.commands.publish import publish_step
from convex_cdc.commands.sync import sync_step
from convex_cdc.core.api_choice import ApiChoice
from convex_cdc.core.errors import Stopped
from convex_cdc.target_s3.layout import DestinationLayout


@click.command()
@dest_option
@source_options
@selection_options
@click.option(
    "--to",
    metavar="URL",
    help="Publish target (s3://bucket/prefix or a directory); without it, publish is skipped.",
)
@publish_options
@batch_rows_option
@api_option
def run(
    *,
    dest: str,
    url: str | None,
    deploy_key_env: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    to: str | None,
    endpoint_url: str | None,
    keep: int,
    include_raw: bool,
    batch_rows: int,
    api: ApiChoice,
) -> None:
    """Sync until caught up, materialize staging, then publish (if --to is given).

    Each step is safe to interrupt and re-run; a failed step stops the run with a
    non-zero exit code and the next run picks up where it stopped.
    """
    layout = DestinationLayout.at(dest)
    stop = threading.Event()
    sync_step(
        layout=layout,
        url=url,
        deploy_key_env=deploy_key_env,
        include=include,
        exclude=exclude,
        batch_rows=batch_rows,
        api=api,
        stop=stop,
    )
    if stop.is_set():
        raise Stopped(
            "run stopped by SIGTERM after sync caught up; materialize and publish were skipped",
            hint="run again to finish them",
        )
    materialize_step(layout=layout)
    if to:
        publish_step(
            layout=layout, to=to, endpoint_url=endpoint_url, keep=keep, include_raw=include_raw
        )
    else:
        click.echo("run: no --to given; skipped publish")
