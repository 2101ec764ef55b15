"""``convex-cdc inspect``: the schemas, one list_snapshot page and one document_deltas page
as JSON lines (or the server's bytes with --raw), never the deploy key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.hostile_server import ID_A, KEY, doc, hostile_convex, snapshot_page
from tests.fixtures.devserver import RunningDevServer


def inspect(url: str, key: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "convex_cdc", "inspect", *args],
        env={**os.environ, "CONVEX_URL": url, "CONVEX_DEPLOY_KEY": key},
        capture_output=True,
        timeout=120,
        check=False,
    )


def lines(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_inspect_prints_schemas_a_snapshot_page_and_a_delta_page(
    devserver_factory: Callable[..., RunningDevServer],
) -> None:
    server = devserver_factory(seed="demo", docs=50)
    result = inspect(server.url, server.key, "--include", "messages")
    assert result.returncode == 0, result.stderr
    schemas, snapshot, deltas = lines(result)
    assert [schemas["endpoint"], snapshot["endpoint"], deltas["endpoint"]] == [
        "json_schemas",
        "list_snapshot",
        "document_deltas",
    ]
    assert all(line["check"] == "ok" for line in (schemas, snapshot, deltas))
    assert "messages" in schemas["answer"][""]
    values = snapshot["answer"]["values"]
    assert values and {v["_table"] for v in values} == {"messages"}
    assert snapshot["request"]["format"] == "export_json"
    assert deltas["request"]["cursor"] == snapshot["answer"]["snapshot"]
    assert server.key.encode() not in result.stdout + result.stderr


def test_inspect_raw_prints_the_servers_bytes(
    devserver_factory: Callable[..., RunningDevServer],
) -> None:
    server = devserver_factory(seed="demo", docs=20)
    result = inspect(server.url, server.key, "--raw")
    assert result.returncode == 0, result.stderr
    out = result.stdout.split(b"\n")
    heads = [line for line in out if line.startswith(b"# ")]
    assert [h.split(b" ")[1] for h in heads] == [
        b"json_schemas",
        b"list_snapshot",
        b"document_deltas",
    ]
    body = out[out.index(heads[1]) + 1]
    assert json.loads(body)["values"]  # the page as sent


def test_inspect_starts_where_a_destinations_checkpoint_stands(
    devserver_factory: Callable[..., RunningDevServer], tmp_path: Path
) -> None:
    server = devserver_factory(seed="demo", docs=20)
    env = {**os.environ, "CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}
    dest = tmp_path / "lake"
    subprocess.run(
        [sys.executable, "-m", "convex_cdc", "sync", "--dest", str(dest)],
        env=env,
        check=True,
        capture_output=True,
    )
    checkpoint = json.loads((dest / "checkpoint.json").read_text())
    result = inspect(server.url, server.key, "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    deltas = lines(result)[2]
    assert str(deltas["request"]["cursor"]) in json.dumps(checkpoint)


def test_inspect_shows_why_sync_would_refuse_an_answer_and_redacts_the_key() -> None:
    with hostile_convex() as server:
        server.script.snapshot = lambda r: snapshot_page(
            [doc(ID_A, _creationTime="yesterday", note=f"echo {KEY}")]
        )
        result = inspect(server.url, KEY)
        raw = inspect(server.url, KEY, "--raw")
    assert result.returncode == 0, result.stderr
    snapshot = lines(result)[1]
    assert "_creationTime a string, not a number" in snapshot["check"]
    assert snapshot["answer"]["values"][0]["note"] == "echo ***"
    assert KEY.encode() not in result.stdout + raw.stdout
    assert b"echo ***" in raw.stdout


def test_a_failed_request_is_a_line_and_the_exit_code(
    devserver_factory: Callable[..., RunningDevServer],
) -> None:
    server = devserver_factory()
    wrong = "prod:other|" + "ef" * 24
    result = inspect(server.url, wrong)
    assert result.returncode == 4, result.stderr
    assert all("error" in line and line["exit_code"] == 4 for line in lines(result)[:2])
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert wrong.encode() not in result.stdout + result.stderr


def test_inspect_is_documented_in_the_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "convex_cdc", "--help"], capture_output=True, text=True, check=True
    )
    assert "inspect" in result.stdout
    detail = subprocess.run(
        [sys.executable, "-m", "convex_cdc", "inspect", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--raw" in detail.stdout and "***" in detail.stdout
