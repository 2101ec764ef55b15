"""Hostile or broken server answers, over real HTTP: each is refused with exit code 3 and
one ``error:`` line, and nothing is written (the lake and the checkpoint stay as they were).

Answers that break the first walk are checked against an empty destination; answers in
the change log against a lake a first, sane sync made.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.hostile_server import (
    ID_A,
    ID_B,
    KEY,
    NOW,
    SNAPSHOT_TS,
    Drip,
    HostileConvex,
    Json,
    delta_page,
    doc,
    hostile_convex,
    schema,
    snapshot_page,
)

INT64_MAX = 2**63 - 1


@pytest.fixture
def server() -> Iterator[HostileConvex]:
    with hostile_convex() as running:
        yield running


def sync(
    dest: Path, url: str, *flags: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CONVEX_DEPLOY_KEY": KEY,
        "CONVEX_URL": url,
        "CONVEX_CDC_MAX_RETRY_SECONDS": "0",  # one attempt: a refusal must not need retries
        "CONVEX_CDC_API": "streaming-export",  # the answers under test are the legacy pair's
    }
    return subprocess.run(
        [sys.executable, "-m", "convex_cdc", "sync", "--dest", str(dest), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (lock files aside) and its sha256."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".locks" not in p.parts
    }


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str, code: int = 3) -> str:
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert KEY not in result.stderr + result.stdout
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def synced_lake(server: HostileConvex, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A lake after a sane first sync (snapshot, then an idle change log)."""
    dest = tmp_path / "lake"
    first = sync(dest, server.url)
    assert first.returncode == 0, first.stderr
    before = tree(dest)
    assert "checkpoint.json" in before
    return dest, before


# --- the snapshot walk ------------------------------------------------------------------


def repeating_cursor(request: Json) -> Json:
    return snapshot_page([doc(ID_A)] if request["cursor"] is None else [], cursor="c1")


def cursor_cycle(request: Json) -> Json:
    following = {None: "c1", "c1": "c2", "c2": "c1"}[request["cursor"]]
    return snapshot_page([], cursor=following)


SNAPSHOT_ANSWERS: dict[str, tuple[Callable[[Json], Json | bytes], str]] = {
    "cursor repeated with hasMore": (repeating_cursor, "repeat this page forever"),
    "cursor cycle": (cursor_cycle, "go round in circles"),
    "duplicate _id in one page": (
        lambda r: snapshot_page([doc(ID_A), doc(ID_B), doc(ID_A)]),
        "appears twice in one page",
    ),
    "_creationTime not a number": (
        lambda r: snapshot_page([doc(ID_A, _creationTime="yesterday")]),
        "_creationTime a string, not a number",
    ),
    "$bytes not base64": (
        lambda r: snapshot_page([doc(ID_A, avatar={"$bytes": "not base64!"})]),
        "$bytes tag whose payload is not base64",
    ),
    "$integer of the wrong size": (
        lambda r: snapshot_page([doc(ID_A, n={"$integer": "KgAA"})]),
        "$integer tag of 3 bytes, not 8",
    ),
    "an unknown tag": (
        lambda r: snapshot_page([doc(ID_A, n={"nested": [{"$date": "2026"}]})]),
        "not an export_json tag",
    ),
    "a value after the snapshot": (
        lambda r: snapshot_page([doc(ID_A, ts=SNAPSHOT_TS + 1)]),
        "after the snapshot",
    ),
    "an empty field name": (lambda r: snapshot_page([doc(ID_A, **{"": 1})]), "is empty"),
    "a NUL in a field name": (
        lambda r: snapshot_page([doc(ID_A, **{"a\x00b": 1})]),
        "holds a control character",
    ),
    "a / in a field name": (lambda r: snapshot_page([doc(ID_A, **{"a/b": 1})]), "holds /"),
    "a .. in a field name": (lambda r: snapshot_page([doc(ID_A, **{"a..b": 1})]), "holds .."),
    "field names differing only in case": (
        lambda r: snapshot_page([doc(ID_A, Name="x"), doc(ID_B, name="y")]),
        "only in case",
    ),
}


@pytest.mark.parametrize("case", sorted(SNAPSHOT_ANSWERS))
def test_a_hostile_snapshot_answer_is_refused_and_nothing_is_written(
    case: str, server: HostileConvex, tmp_path: Path
) -> None:
    answer, expected = SNAPSHOT_ANSWERS[case]
    server.script.snapshot = answer
    dest = tmp_path / "lake"
    line = assert_refused(sync(dest, server.url), "list_snapshot", expected)
    assert tree(dest) == {}, line


def test_fields_that_clash_across_pages_are_refused_from_the_schema(
    server: HostileConvex, tmp_path: Path
) -> None:
    server.script.schemas = schema("body", "Name", "name")
    dest = tmp_path / "lake"
    assert_refused(sync(dest, server.url), "json_schemas", "'messages'", "'name'", "only in case")
    assert tree(dest) == {}
    # Leaving one of them out lets the sync go on.
    assert sync(dest, server.url, "--exclude", "messages.Name").returncode == 0


def test_a_field_with_a_slash_is_refused_naming_the_table_and_the_field(
    server: HostileConvex, tmp_path: Path
) -> None:
    server.script.snapshot = lambda r: snapshot_page([doc(ID_A, **{"a/b": 1})])
    line = assert_refused(sync(tmp_path / "lake", server.url))
    assert "table 'messages' has a field 'a/b' that holds /" in line
    assert "--exclude" in line


# --- the change log -----------------------------------------------------------------------


def after(request: Json, ts: int) -> int:
    return int(request["cursor"]) + ts


DELTA_ANSWERS: dict[str, tuple[Callable[[Json], Json | bytes], str]] = {
    "cursor repeated with no values and hasMore": (
        lambda r: delta_page([], int(r["cursor"]), has_more=True),
        "polling would never move on",
    ),
    "cursor ahead of the server's clock": (
        lambda r: delta_page([], INT64_MAX),
        "ahead of the deployment's own latest timestamp",
    ),
    "cursor behind the previous one": (
        lambda r: delta_page([], int(r["cursor"]) - 1),
        "the cursor went back",
    ),
    "a value older than the requested cursor": (
        lambda r: delta_page(
            [doc(ID_A, ts=int(r["cursor"]) - 5) | {"_deleted": False}], after(r, 10)
        ),
        "not after the requested cursor",
    ),
    "a value at the requested cursor": (
        lambda r: delta_page([doc(ID_A, ts=int(r["cursor"])) | {"_deleted": False}], after(r, 10)),
        "not after the requested cursor",
    ),
    "a malformed $integer in a change": (
        lambda r: delta_page(
            [doc(ID_A, ts=after(r, 1), n={"$integer": 5}) | {"_deleted": False}], after(r, 10)
        ),
        "payload is not a string",
    ),
}


@pytest.mark.parametrize("case", sorted(DELTA_ANSWERS))
def test_a_hostile_change_log_answer_is_refused_and_nothing_changes(
    case: str, server: HostileConvex, tmp_path: Path
) -> None:
    dest, before = synced_lake(server, tmp_path)
    answer, expected = DELTA_ANSWERS[case]
    server.script.deltas = answer
    assert_refused(sync(dest, server.url), "document_deltas", expected)
    assert tree(dest) == before


def test_a_cursor_within_the_servers_clock_is_accepted(
    server: HostileConvex, tmp_path: Path
) -> None:
    dest, _ = synced_lake(server, tmp_path)
    server.script.deltas = lambda r: delta_page(
        [doc(ID_A, ts=after(r, 1), body="edited") | {"_deleted": False}], NOW
    )
    assert sync(dest, server.url).returncode == 0


# --- limits on one request --------------------------------------------------------------


def test_an_answer_that_drips_is_cut_off_at_the_request_timeout(
    server: HostileConvex, tmp_path: Path
) -> None:
    server.script.drip = Drip(chunk=1, every=0.2)  # ~100 bytes would take 20 s
    dest = tmp_path / "lake"
    result = sync(dest, server.url, "--request-timeout", "1", timeout=60)
    assert_refused(result, "list_snapshot", "no complete answer within 1 s", "--request-timeout")
    assert tree(dest) == {}


@pytest.mark.parametrize("content_length", [True, False], ids=["announced", "streamed"])
def test_an_answer_larger_than_the_limit_is_refused_unread(
    content_length: bool, server: HostileConvex, tmp_path: Path
) -> None:
    big = "x" * (3 * 1024 * 1024)
    server.script.snapshot = lambda r: snapshot_page([doc(ID_A, body=big)])
    server.script.content_length = content_length
    dest = tmp_path / "lake"
    result = sync(dest, server.url, "--max-response-mb", "1")
    assert_refused(result, "list_snapshot", "larger than 1 MB", "--max-response-mb")
    assert tree(dest) == {}


def test_the_limits_are_documented_in_the_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "convex_cdc", "sync", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--request-timeout SECONDS" in result.stdout
    assert "--max-response-mb MB" in result.stdout
