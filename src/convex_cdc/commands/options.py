"""Click options shared by the S3/export commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from convex_cdc.core.checkpoint import DEFAULT_BATCH_ROWS

F = TypeVar("F", bound=Callable[..., object])


def dest_option(command: F) -> F:
    """``--dest DIR``: the local destination holding checkpoint, raw log and staging."""
    return click.option(
        "--dest",
        required=True,
        type=click.Path(file_okay=False, dir_okay=True),
        metavar="DIR",
        help="Destination directory (checkpoint, raw_change_log/, staging/).",
    )(command)


def batch_rows_option(command: F) -> F:
    """``--batch-rows N``: change events a batch collects before it is written."""
    return click.option(
        "--batch-rows",
        type=click.IntRange(min=1),
        default=DEFAULT_BATCH_ROWS,
        show_default=True,
        help="Collect pages until a batch holds this many change events, then write it "
        "(one file or commit per table, one checkpoint save). Larger batches are faster; "
        "a crash re-fetches at most one batch.",
    )(command)


API_ENV = "CONVEX_CDC_API"


def api_option(command: F) -> F:
    """``--api auto|data-sync|streaming-export``: which Convex API follows the source."""
    return click.option(
        "--api",
        type=click.Choice(["auto", "data-sync", "streaming-export"]),
        default="auto",
        show_default=True,
        envvar=API_ENV,
        help="Convex API to follow the deployment with: data-sync (POST /api/v1/data/sync; "
        "sees tables replaced by an import), streaming-export (the list_snapshot / "
        "document_deltas pair), or auto: data-sync where the deployment offers it. A "
        "destination keeps the API it follows; a legacy one switches to data-sync without "
        f"reading anything again [env: {API_ENV}].",
    )(command)


def selection_options(command: F) -> F:
    """``--include`` / ``--exclude`` selection patterns (repeatable)."""
    command = click.option(
        "--exclude",
        multiple=True,
        metavar="PATTERN",
        help="Leave out tables or columns, e.g. 'users.ssn' or 'waitlist/*' (repeatable).",
    )(command)
    command = click.option(
        "--include",
        multiple=True,
        metavar="PATTERN",
        help="Replicate only these: 'messages', 'waitlist/*', 'users.email'... (repeatable; "
        "default: everything).",
    )(command)
    return command


def publish_options(command: F) -> F:
    """Options of ``publish`` (and of ``run``, where ``--to`` is optional)."""
    command = click.option(
        "--include-raw/--no-include-raw",
        default=False,
        show_default=True,
        help="Also publish the raw change log files (for Auto Loader consumers).",
    )(command)
    command = click.option(
        "--keep",
        type=click.IntRange(min=1),
        default=10,
        show_default=True,
        help="Manifests to keep; files only older manifests use are deleted.",
    )(command)
    command = click.option(
        "--endpoint-url",
        metavar="URL",
        help="S3-compatible endpoint (MinIO, R2, moto...); default: AWS_ENDPOINT_URL or AWS.",
    )(command)
    return command
