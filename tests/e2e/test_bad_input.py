"""A server that breaks the contract gets a clear error, and nothing on disk changes.

A small canned HTTP server on 127.0.0.1 plays a Convex deployment that first answers
correctly (so a lake and a checkpoint exist) and then answers something malformed: a
body that is not JSON, a page without ``hasMore``, a value without ``_id``, a table name
that tries to escape the destination. ``convex-cdc sync`` must exit non-zero with one
line naming the problem, and leave the checkpoint and every file of the lake as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

KEY = "prod:canned-deployment|" + "ab" * 24
GOOD_DOC = {
    "_component": "",
    "_table": "messages",
    "_ts": 1_800_000_000_000_000_001,
    "_id": "j5755wh6cpk0r4pjh4c5v58ex17p4zhw",
    "_creationTime": 1_800_000_000_000.5,
    "body": "hi",
}
SNAPSHOT_TS = 1_800_000_000_000_000_005
NOW_BODY = json.dumps(
    {"values": [], "snapshot": SNAPSHOT_TS + 1000, "cursor": None, "hasMore": False}
).encode()
"""The answer to the client's clock probe: the deployment's "now", after every cursor."""


class CannedConvex(ThreadingHTTPServer):
    """Answers list_snapshot correctly and document_deltas with ``delta_body``."""

    delta_body: bytes = b""
    snapshot_body: bytes = json.dumps(
        {"values": [GOOD_DOC], "snapshot": SNAPSHOT_TS, "cursor": None, "hasMore": False}
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    server: CannedConvex

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        # The table the pages hold exists (a table missing here would be a dropped one).
        schemas = b'{"": {"messages": {"type": "object"}}}'
        self._answer(schemas if self.path.startswith("/api/json_schemas") else b"null")

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if self.path.startswith("/api/list_snapshot"):
            probe = request.get("selection") == {"_other": "excluded"}
            self._answer(NOW_BODY if probe else self.server.snapshot_body)
        else:
            self._answer(self.server.delta_body)


@pytest.fixture
def canned() -> Iterator[CannedConvex]:
    server = CannedConvex(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _sync(dest: Path, url: str) -> subprocess.CompletedProcess[str]:
    # The canned server answers the legacy pair only.
    env = {
        **os.environ,
        "CONVEX_DEPLOY_KEY": KEY,
        "CONVEX_URL": url,
        "CONVEX_CDC_API": "streaming-export",
    }
    return subprocess.run(
        [sys.executable, "-m", "convex_cdc", "sync", "--dest", str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".locks" not in p.parts
    }


DELTA_DOC = GOOD_DOC | {"_ts": SNAPSHOT_TS + 20}
"""A change after the first run's cursor (SNAPSHOT_TS + 10), within the page's."""


def _delta_page(values: list[dict[str, object]], **extra: object) -> bytes:
    cursor = SNAPSHOT_TS + 30 if values else SNAPSHOT_TS + 10
    page: dict[str, object] = {"values": values, "cursor": cursor, "hasMore": False}
    page.update(extra)
    return json.dumps(page).encode()


BAD_DELTA_PAGES = {
    "not JSON": (b'{"values": [', "not JSON"),
    "hasMore missing": (
        json.dumps({"values": [], "cursor": SNAPSHOT_TS + 10}).encode(),
        "hasMore",
    ),
    "value without _id": (
        _delta_page([{k: v for k, v in DELTA_DOC.items() if k != "_id"} | {"_deleted": False}]),
        "_id",
    ),
    "hostile table name": (
        _delta_page([DELTA_DOC | {"_table": "../../outside", "_deleted": False}]),
        "not a Convex table name",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DELTA_PAGES))
def test_a_malformed_page_is_refused_and_nothing_changes(
    case: str, canned: CannedConvex, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{canned.server_address[1]}"
    dest = tmp_path / "lake"
    canned.delta_body = _delta_page([])
    first = _sync(dest, url)
    assert first.returncode == 0, first.stderr
    before = _tree(dest)
    assert "checkpoint.json" in before

    canned.delta_body, expected = BAD_DELTA_PAGES[case]
    failed = _sync(dest, url)

    assert failed.returncode == 3, failed.stderr
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, failed.stderr
    assert "document_deltas" in error_lines[0] and expected in error_lines[0]
    assert KEY not in failed.stderr + failed.stdout
    assert _tree(dest) == before
    assert not (tmp_path / "outside").exists()


def test_a_hostile_table_name_in_the_first_snapshot_page_creates_nothing(
    canned: CannedConvex, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{canned.server_address[1]}"
    dest = tmp_path / "lake"
    canned.snapshot_body = json.dumps(
        {
            "values": [GOOD_DOC | {"_table": "/etc/passwd"}],
            "snapshot": SNAPSHOT_TS,
            "cursor": None,
            "hasMore": False,
        }
    ).encode()
    failed = _sync(dest, url)
    assert failed.returncode == 3, failed.stderr
    assert "not a Convex table name" in failed.stderr
    assert _tree(dest) == {}
