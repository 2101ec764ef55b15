"""A small Convex stand-in over real HTTP on 127.0.0.1 that answers what a test tells it.

By default it plays a consistent deployment: one table ``messages`` with two documents in
one snapshot page at :data:`SNAPSHOT_TS`, no changes after it, and a clock (the
``snapshot`` of a ``list_snapshot`` that selects nothing) at :data:`NOW`. A test replaces
the snapshot or delta answer with a function of the request body, and may make an answer
drip slowly or come without a ``Content-Length``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY = "prod:hostile-deployment|" + "cd" * 24
SNAPSHOT_TS = 1_790_000_000_000_000_000
NOW = SNAPSHOT_TS + 1_000_000_000_000
"""The deployment's latest timestamp: 1000 s after the snapshot."""

Json = dict[str, Any]


def doc(doc_id: str, ts: int = SNAPSHOT_TS - 1, **fields: Any) -> Json:
    """A ``messages`` value as list_snapshot sends it."""
    return {
        "_component": "",
        "_table": "messages",
        "_ts": ts,
        "_creationTime": 1_789_999_999_000.25,
        "_id": doc_id,
        "body": "hi",
        **fields,
    }


ID_A = "j5755wh6cpk0r4pjh4c5v58ex17p4zhw"
ID_B = "j5755wh6cpk0r4pjh4c5v58ex17p4zhx"


def snapshot_page(
    values: list[Json], *, cursor: str | None = None, snapshot: int = SNAPSHOT_TS
) -> Json:
    """A list_snapshot answer."""
    return {"values": values, "snapshot": snapshot, "cursor": cursor, "hasMore": cursor is not None}


def delta_page(values: list[Json], cursor: int, *, has_more: bool = False) -> Json:
    """A document_deltas answer."""
    return {"values": values, "cursor": cursor, "hasMore": has_more}


def consistent_snapshot(request: Json) -> Json:
    """The default walk: both documents in one page."""
    return snapshot_page([doc(ID_A), doc(ID_B)])


def idle_deltas(request: Json) -> Json:
    """The default change log: nothing after the requested cursor."""
    return delta_page([], int(request["cursor"]))


def schema(*fields: str) -> Json:
    """A byComponent json_schemas answer for ``messages`` with these user fields."""
    properties = {name: {"type": "string"} for name in ("_id", "_creationTime", *fields)}
    return {"": {"messages": {"type": "object", "properties": properties}}}


@dataclass
class Drip:
    """Send the answer's bytes slowly: ``chunk`` bytes every ``every`` seconds."""

    chunk: int = 1
    every: float = 0.2


@dataclass
class Script:
    """What the server answers; every field may be replaced by a test."""

    snapshot: Callable[[Json], Json | bytes] = consistent_snapshot
    deltas: Callable[[Json], Json | bytes] = idle_deltas
    schemas: Json = field(default_factory=lambda: schema("body"))
    drip: Drip | None = None
    """Applies to list_snapshot and document_deltas answers (not to clock probes)."""
    content_length: bool = True
    requests: list[tuple[str, Json]] = field(default_factory=list)


class HostileConvex(ThreadingHTTPServer):
    """The server; ``script`` says what it answers."""

    daemon_threads = True
    script: Script

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: HostileConvex
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/api/json_schemas"):
            self._answer(json.dumps(self.server.script.schemas).encode())
        else:
            self._answer(b"null")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        script = self.server.script
        endpoint = self.path.removeprefix("/api/").partition("?")[0]
        if endpoint == "list_snapshot" and request.get("selection") == {"_other": "excluded"}:
            self._answer(json.dumps(snapshot_page([], snapshot=NOW)).encode())
            return
        script.requests.append((endpoint, request))
        answer = script.snapshot(request) if endpoint == "list_snapshot" else script.deltas(request)
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self._answer(body, drip=script.drip, content_length=script.content_length)

    def _answer(
        self, body: bytes, *, drip: Drip | None = None, content_length: bool = True
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if content_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            if drip is None:
                self.wfile.write(body)
                return
            for start in range(0, len(body), drip.chunk):
                self.wfile.write(body[start : start + drip.chunk])
                self.wfile.flush()
                time.sleep(drip.every)  # pacing only: the client's deadline decides
        except OSError:
            pass  # the client gave up on the answer: that is the point of some tests


@contextmanager
def hostile_convex() -> Iterator[HostileConvex]:
    """A running server with the consistent default script."""
    server = HostileConvex(("127.0.0.1", 0), _Handler)
    server.script = Script()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
