"""``convex-cdc inspect``: what the deployment answers, for when a sync fails.

Prints three JSON lines on stdout, one per request: ``json_schemas``, one
``list_snapshot`` page and one ``document_deltas`` page. Each line holds the endpoint,
the request sent (never a header), the answer's size, the answer itself, and ``check``:
``"ok"``, or the one-line problem ``sync`` would refuse the answer with. ``--raw`` prints
each answer's body exactly as the server sent it instead (one per line when the server
sends compact JSON), with a ``# endpoint request`` line before it. The deploy key is
replaced by ``***`` wherever it appears, server text included.

By default the snapshot page is the first of a new walk and the delta page starts at
that walk's snapshot; ``--dest`` starts both where that destination's checkpoint stands
(the page a failing sync is stuck on), and ``--snapshot``/``--snapshot-cursor``/
``--cursor`` name a position explicitly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click
import orjson

from convex_cdc.commands.connection import connect, source_options
from convex_cdc.commands.options import selection_options
from convex_cdc.core.checkpoint import DeltaTail, InitialSnapshot
from convex_cdc.core.client import ConvexClient
from convex_cdc.core.errors import ConvexCdcError
from convex_cdc.core.events import events_from_values
from convex_cdc.core.responses import parse_delta_page, parse_json_schemas, parse_snapshot_page
from convex_cdc.core.selection import Selection
from convex_cdc.core.source import WIRE_FORMAT
from convex_cdc.logs import redact_secrets

_TEXT_SHOWN: Final = 4000
"""Characters of a body that is not JSON shown in its line."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where the pages inspected start."""

    snapshot: int | None = None
    snapshot_cursor: str | None = None
    delta_cursor: int | None = None


@dataclass
class _Answer:
    """One request and what came of it."""

    endpoint: str
    request: dict[str, Any]
    body: bytes | None = None
    error: ConvexCdcError | None = None


@click.command()
@source_options
@selection_options
@click.option(
    "--raw",
    is_flag=True,
    help="Print each answer's body as the server sent it (key redacted), after a "
    "'# endpoint request' line.",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Start where this destination's checkpoint stands (the page a failing sync is on).",
)
@click.option("--snapshot", "snapshot", type=click.IntRange(min=0), help="list_snapshot snapshot.")
@click.option("--snapshot-cursor", metavar="TEXT", help="list_snapshot cursor (with --snapshot).")
@click.option(
    "--cursor",
    "delta_cursor",
    type=click.IntRange(min=0),
    help="document_deltas cursor (default: the snapshot page's snapshot).",
)
def inspect(
    *,
    url: str | None,
    deploy_key_env: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    raw: bool,
    dest: Path | None,
    snapshot: int | None,
    snapshot_cursor: str | None,
    delta_cursor: int | None,
) -> None:
    """Print the deployment's schemas, one list_snapshot page and one document_deltas page.

    One JSON line per request on stdout: the endpoint, the request, the answer and
    whether sync would accept it ("check"). --raw prints the server's bytes instead.
    The deploy key never appears (it is replaced by ***). Exits with the code of the
    first request that failed, after printing all three.
    """
    selection = Selection.from_patterns(include=include, exclude=exclude)
    chosen = None if selection.is_everything else selection
    position = _position(dest) if dest is not None else Position()
    position = Position(
        snapshot=snapshot if snapshot is not None else position.snapshot,
        snapshot_cursor=snapshot_cursor or position.snapshot_cursor,
        delta_cursor=delta_cursor if delta_cursor is not None else position.delta_cursor,
    )
    with connect(url, deploy_key_env) as client:
        answers = _ask(client, chosen, position)
    out = sys.stdout.buffer
    for answer in answers:
        out.write(_raw_lines(answer) if raw else _json_line(answer))
    out.flush()
    failed = next((a.error for a in answers if a.error is not None), None)
    if failed is not None:
        raise failed


def _ask(client: ConvexClient, selection: Selection | None, at: Position) -> list[_Answer]:
    """The three requests, each whatever the others answered."""
    wire = None if selection is None else selection.to_wire()
    schemas = _fetch(
        "json_schemas",
        {"deltaSchema": True, "byComponent": True, "format": WIRE_FORMAT},
        client.raw_json_schemas,
    )
    snapshot_request = {
        "snapshot": at.snapshot,
        "cursor": at.snapshot_cursor,
        "format": WIRE_FORMAT,
        "selection": wire,
    }
    snapshot_page = _fetch(
        "list_snapshot",
        snapshot_request,
        lambda: client.raw_list_snapshot(
            snapshot=at.snapshot, cursor=at.snapshot_cursor, selection=selection
        ),
    )
    cursor = at.delta_cursor if at.delta_cursor is not None else _snapshot_of(snapshot_page)
    delta_request = {"cursor": cursor, "format": WIRE_FORMAT, "selection": wire}
    if cursor is None:
        delta_page = _Answer("document_deltas", delta_request)
        delta_page.error = ConvexCdcError(
            "no document_deltas cursor: the list_snapshot page gave no snapshot",
            hint="pass --cursor N",
        )
    else:
        delta_page = _fetch(
            "document_deltas",
            delta_request,
            lambda: client.raw_document_deltas(cursor=cursor, selection=selection),
        )
    return [schemas, snapshot_page, delta_page]


def _fetch(endpoint: str, request: dict[str, Any], call: Callable[[], bytes]) -> _Answer:
    answer = _Answer(endpoint, request)
    try:
        answer.body = call()
    except ConvexCdcError as exc:
        answer.error = exc
    return answer


def _position(dest: Path) -> Position:
    """Where the checkpoint at ``dest`` stands."""
    # Imported here: only --dest needs the S3/export target's checkpoint file.
    from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
    from convex_cdc.target_s3.layout import DestinationLayout

    checkpoint = FileCheckpointStore(DestinationLayout.at(dest)).load()
    if checkpoint is None:
        return Position()
    match checkpoint.position:
        case InitialSnapshot(snapshot=snapshot, cursor=cursor):
            return Position(snapshot=snapshot, snapshot_cursor=cursor, delta_cursor=snapshot)
        case DeltaTail(cursor=cursor):
            return Position(delta_cursor=cursor)
    return Position()


def _snapshot_of(answer: _Answer) -> int | None:
    try:
        parsed = orjson.loads(answer.body) if answer.body is not None else None
    except orjson.JSONDecodeError:
        return None
    snapshot = parsed.get("snapshot") if isinstance(parsed, dict) else None
    return snapshot if isinstance(snapshot, int) and not isinstance(snapshot, bool) else None


def _json_line(answer: _Answer) -> bytes:
    line: dict[str, Any] = {"endpoint": answer.endpoint, "request": answer.request}
    if answer.error is not None:
        line["error"] = answer.error.one_line()
        line["exit_code"] = answer.error.exit_code
    elif answer.body is not None:
        line["bytes"] = len(answer.body)
        try:
            line["answer"] = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            line["answer_text"] = answer.body[:_TEXT_SHOWN].decode("utf-8", "replace")
        line["check"] = _check(answer)
    text = orjson.dumps(line).decode("utf-8")
    return (redact_secrets(text) + "\n").encode("utf-8")


def _raw_lines(answer: _Answer) -> bytes:
    head = f"# {answer.endpoint} {orjson.dumps(answer.request).decode()}"
    if answer.error is not None:
        head += f" → error: {answer.error.one_line()}"
    lines = [redact_secrets(head).encode("utf-8")]
    if answer.body is not None:
        # Bytes that are not UTF-8 travel through unchanged; only the key is replaced.
        text = answer.body.decode("utf-8", "surrogateescape")
        lines.append(redact_secrets(text).encode("utf-8", "surrogateescape"))
    return b"\n".join(lines) + b"\n"


def _check(answer: _Answer) -> str:
    """``"ok"``, or the one-line problem sync would refuse this answer with."""
    assert answer.body is not None
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return f"{answer.endpoint}: malformed response: the body is not JSON"
    request, size = answer.request, len(answer.body)
    try:
        if answer.endpoint == "json_schemas":
            parse_json_schemas(data)
        elif answer.endpoint == "list_snapshot":
            snapshot_page = parse_snapshot_page(
                data, size, request_snapshot=request["snapshot"], request_cursor=request["cursor"]
            )
            events_from_values(
                snapshot_page.values,
                kind="snapshot",
                batch_seq=1,
                snapshot_ts=snapshot_page.snapshot,
                endpoint="list_snapshot",
            )
        else:
            delta_page = parse_delta_page(data, size, request_cursor=request["cursor"])
            events_from_values(
                delta_page.values,
                kind="delta",
                batch_seq=1,
                snapshot_ts=None,
                endpoint="document_deltas",
            )
    except ConvexCdcError as exc:
        return exc.one_line()
    return "ok"
