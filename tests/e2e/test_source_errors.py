"""ConvexClient against the devserver over real HTTP: wrong keys, expired cursors, dead
servers and a flaky server, each with a clear error or a converged sync, and never a key
in an exception or a log line."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from convex_cdc.commands.connection import connect
from convex_cdc.core.client import ConvexClient
from convex_cdc.core.errors import AuthenticationError, RetentionExpired, SourceUnavailable
from convex_cdc.core.orchestrator import SyncOptions, run_sync
from convex_cdc.core.retry import RetryPolicy
from tests.core.crash_harness import DocKey, DurableSink, MemoryCheckpointStore, document_text
from tests.fixtures.devserver import RunningDevServer

WRONG_KEY = "prod:some-other-deployment-42|" + "f00d" * 20
QUICK = RetryPolicy(
    max_attempts=3, max_seconds=5, initial_backoff_seconds=0.01, max_backoff_seconds=0.05
)
PATIENT = RetryPolicy(
    max_attempts=14, max_seconds=120, initial_backoff_seconds=0.01, max_backoff_seconds=0.1
)

Factory = Callable[..., RunningDevServer]


def truth_state(server: RunningDevServer) -> dict[DocKey, str]:
    """The devserver's live documents in the sink's form (component, table, id) → text."""
    return {
        (line["component"], line["table"], line["_id"]): document_text(
            {"_id": line["_id"], "_creationTime": line["_creationTime"], **line["fields"]}
        )
        for line in server.truth()
    }


def texts_of(exc: BaseException) -> Iterator[str]:
    yield str(exc)
    yield repr(exc)
    yield "".join(traceback.format_exception(exc))


def assert_no_secret(
    secrets: list[str], texts: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    everything = [
        *texts,
        *(r.getMessage() for r in caplog.records),
        *(str(r.args) for r in caplog.records),
    ]
    for secret in secrets:
        for text in everything:
            assert secret not in text, text
            assert secret.partition("|")[2] not in text, text


def insert(table: str, **fields: Any) -> dict[str, Any]:
    return {"op": "insert", "component": "", "table": table, "fields": fields}


def test_a_wrong_key_names_the_problem_and_the_fix(
    devserver: RunningDevServer, caplog: pytest.LogCaptureFixture
) -> None:
    devserver.transact([insert("messages", body="hi")])
    client = connect(devserver.url, "MY_CONVEX_KEY", environ={"MY_CONVEX_KEY": WRONG_KEY})
    caplog.set_level(logging.DEBUG)
    sink, store = DurableSink(), MemoryCheckpointStore()
    with client, pytest.raises(AuthenticationError) as caught:
        run_sync(client, sink, store)
    error = caught.value
    assert (error.status, error.code) == (401, "BadAdminKey")
    assert "\n" not in str(error)
    assert "the key in $MY_CONVEX_KEY is not valid for " + devserver.url in str(error)
    assert "Convex dashboard → Settings → Deploy keys" in str(error)
    assert sink.writes == 0 and store.raw is None
    assert_no_secret([WRONG_KEY, devserver.key], list(texts_of(error)), caplog)


def test_an_expired_delta_cursor_asks_for_a_resnapshot_and_the_resnapshot_recovers(
    devserver_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    server = devserver_factory(retention_seconds=3600)
    server.transact([insert("messages", body="a"), insert("users", name="ada")])
    caplog.set_level(logging.DEBUG)
    sink, store = DurableSink(), MemoryCheckpointStore()
    with ConvexClient(server.url, server.key, retry=QUICK) as client:
        run_sync(client, sink, store)
        server.transact([insert("messages", body="b")])
        server.settings(retention_seconds=0.0)  # the saved cursor is now out of retention
        with pytest.raises(RetentionExpired) as caught:
            run_sync(client, sink, store)
        error = caught.value
        assert error.code == "InvalidWindowToReadDocuments" and error.status == 400
        assert "run `convex-cdc sync --resnapshot` to start a new snapshot" in str(error)
        assert "nothing already landed is lost" in str(error)
        server.settings(retention_seconds=3600)
        report = run_sync(client, sink, store, SyncOptions(resnapshot=True))
    assert report.started_new_snapshot
    assert sink.state() == truth_state(server)
    assert_no_secret([server.key], list(texts_of(error)), caplog)


def test_an_unreachable_server_is_unavailable_quickly_with_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    caplog.set_level(logging.DEBUG)
    with (
        ConvexClient(url, WRONG_KEY, retry=QUICK) as client,
        pytest.raises(SourceUnavailable) as caught,
    ):
        run_sync(client, DurableSink(), MemoryCheckpointStore())
    message = str(caught.value)
    assert message.startswith(f"could not reach {url}/api/json_schemas after 3 attempts in ")
    assert "ConnectError" in message
    assert "check --url/CONVEX_URL and the network" in message
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("convex_cdc")
    ]
    assert len(warnings) == 2
    assert_no_secret([WRONG_KEY], list(texts_of(caught.value)), caplog)


def test_a_flaky_server_still_converges_to_its_truth(
    devserver_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    server = devserver_factory(
        seed="demo",
        docs=300,
        snapshot_page_size=40,
        deltas_row_limit=16,
        fail_rate=0.3,
        fault_seed=11,
        stall_seconds=0.05,
    )
    caplog.set_level(logging.DEBUG)
    sink, store = DurableSink(), MemoryCheckpointStore()
    with ConvexClient(server.url, server.key, retry=PATIENT) as client:
        first = run_sync(client, sink, store)
        assert first.snapshot_pages > 1
        assert sink.state() == truth_state(server)
        server.workload(40)
        run_sync(client, sink, store)
    assert sink.state() == truth_state(server)
    sink.assert_exactly_once()
    retries = [r for r in caplog.records if r.name == "convex_cdc.core.retry"]
    assert retries, "the faults were injected and retried"
    assert_no_secret([server.key], [], caplog)
