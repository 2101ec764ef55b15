"""ConvexClient over httpx.MockTransport: requests, parsing, errors, retries, secrecy."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from convex_cdc import __version__
from convex_cdc.core.client import ConvexClient
from convex_cdc.core.errors import (
    AuthenticationError,
    ConfigError,
    ConvexApiError,
    MalformedResponse,
    RetentionExpired,
    SourceUnavailable,
)
from convex_cdc.core.orchestrator import run_sync
from convex_cdc.core.retry import RetryPolicy, parse_retry_after
from convex_cdc.core.selection import Selection
from convex_cdc.devserver.auth import KeyChecker
from convex_cdc.devserver.devserver_api import WorkloadRunner
from convex_cdc.devserver.faults import FaultInjector
from convex_cdc.devserver.http_api import HttpApi, Request
from convex_cdc.devserver.settings import SettingsBox
from convex_cdc.devserver.writes import Delete, Insert
from tests.core.crash_harness import DurableSink, MemoryCheckpointStore
from tests.core.in_process_convex import InProcessConvex

URL = "https://happy-animal-123.convex.cloud"
SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef"
KEY = f"prod:happy-animal-123|{SECRET}"
S = 1_755_820_800_123_456_789
FAST = RetryPolicy(
    max_attempts=4, max_seconds=60, initial_backoff_seconds=0.5, max_backoff_seconds=4
)

Handler = Callable[[httpx.Request], httpx.Response]


NOW = S + 10**12
"""The deployment's clock in these tests: after every cursor the scripts answer."""


def is_clock_probe(request: httpx.Request) -> bool:
    """The client asking for the server's "now" (a list_snapshot that selects nothing)."""
    if request.url.path != "/api/list_snapshot" or not request.content:
        return False
    return bool(orjson.loads(request.content).get("selection") == {"_other": "excluded"})


class Server:
    """Answers requests from a script (one entry per request, the last one repeats).

    Clock probes are answered with :data:`NOW` and counted apart, in ``probes``.
    """

    def __init__(self, *answers: httpx.Response | Exception | Handler, now: int = NOW) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.probes = 0
        self.now = now

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if is_clock_probe(request):
            self.probes += 1
            return ok({"values": [], "snapshot": self.now, "cursor": None, "hasMore": False})
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, content=orjson.dumps(body))


def error(status: int, code: str | None, message: str = "", **headers: str) -> httpx.Response:
    content = orjson.dumps({"code": code, "message": message}) if code else b""
    return httpx.Response(status, content=content, headers=headers)


SNAPSHOT_PAGE = {
    "values": [{"_component": "", "_table": "t", "_ts": S - 1, "_id": "a", "n": 2**62 + 1}],
    "snapshot": S,
    "cursor": '{"tablet":"x","id":"a"}',
    "hasMore": True,
}
DELTA_PAGE = {"values": [], "cursor": S + 9, "hasMore": False}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def connect(sleeps: list[float]) -> Iterator[Callable[..., tuple[ConvexClient, Server]]]:
    clients: list[ConvexClient] = []

    def make(
        *answers: httpx.Response | Exception | Handler, **kwargs: Any
    ) -> tuple[ConvexClient, Server]:
        server = Server(*answers)
        kwargs.setdefault("retry", FAST)
        client = ConvexClient(
            URL + "/", KEY, transport=httpx.MockTransport(server), sleep=sleeps.append, **kwargs
        )
        clients.append(client)
        return client, server

    yield make
    for client in clients:
        client.close()


# --- request shape ------------------------------------------------------------------------


def test_list_snapshot_posts_a_json_body_with_the_lossless_format_and_headers(connect: Any) -> None:
    client, server = connect(ok(SNAPSHOT_PAGE))
    page = client.list_snapshot(snapshot=None, cursor=None, selection=None)
    (request,) = server.requests
    assert request.method == "POST" and str(request.url) == f"{URL}/api/list_snapshot"
    assert orjson.loads(request.content) == {
        "snapshot": None,
        "cursor": None,
        "format": "export_json",
    }
    assert request.headers["Authorization"] == f"Convex {KEY}"
    assert request.headers["Convex-Client"] == f"convex-cdc-{__version__}"
    assert request.headers["Content-Type"] == "application/json"
    assert page.snapshot == S and page.cursor == SNAPSHOT_PAGE["cursor"] and page.has_more
    assert page.values[0]["n"] == 2**62 + 1  # exact int64
    assert page.response_bytes == len(orjson.dumps(SNAPSHOT_PAGE))


def test_a_selection_travels_validated_and_canonical(connect: Any) -> None:
    client, server = connect(ok(DELTA_PAGE))
    wire = {"_other": "excl", "": {"_other": "incl"}}
    page = client.document_deltas(cursor=S, selection=Selection.from_wire(wire))
    assert orjson.loads(server.requests[0].content) == {
        "cursor": S,
        "format": "export_json",
        # Sent in the short forms every backend accepts (older ones know only these).
        "selection": {"_other": "excl", "": {"_other": "incl"}},
    }
    assert (page.cursor, page.has_more, page.values) == (S + 9, False, [])
    with pytest.raises(ConfigError, match="_other"):
        Selection.from_wire({"": {"_other": "included"}})
    with pytest.raises(ConfigError, match="_other"):  # built around the validation
        client.document_deltas(cursor=S, selection=Selection({"": {"_other": "included"}}))
    assert len(server.requests) == 1  # a malformed selection is never sent


def test_snapshot_pages_resend_the_pinned_snapshot_and_cursor(connect: Any) -> None:
    client, server = connect(ok(SNAPSHOT_PAGE))
    selection = Selection.from_patterns(include=["t"])
    client.list_snapshot(snapshot=S, cursor="c1", selection=selection)
    body = orjson.loads(server.requests[0].content)
    assert (body["snapshot"], body["cursor"]) == (S, "c1")
    assert Selection.from_wire(body["selection"]) == selection  # same selection, short words
    assert "included" not in orjson.dumps(body["selection"]).decode()


def test_schemas_column_names_and_connection_test_are_gets(connect: Any) -> None:
    schemas = {"": {"t": {"type": "object"}}, "wl": {}}
    columns = {"byComponent": {"": [{"name": "t", "columns": ["_creationTime", "_id", "x"]}]}}
    client, server = connect(ok(schemas), ok(columns), ok(None))
    assert client.json_schemas() == schemas
    assert client.get_table_column_names() == {"": {"t": ["_creationTime", "_id", "x"]}}
    client.test_connection()
    first, second, third = server.requests
    assert first.method == second.method == third.method == "GET"
    assert first.url.path == "/api/json_schemas"
    assert dict(first.url.params) == {
        "deltaSchema": "true",
        "byComponent": "true",
        "format": "export_json",
    }
    assert second.url.path == "/api/get_table_column_names"
    assert third.url.path == "/api/test_streaming_export_connection"


def test_the_client_shows_only_its_url(connect: Any) -> None:
    client, _ = connect(ok(None))
    assert client.deployment_url == URL
    assert repr(client) == str(client) == f"ConvexClient('{URL}')"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x.convex.cloud",
        "https://user:pw@x.convex.cloud",
        f"https://x.convex.cloud?adminKey={KEY}",
        "https://x#f",
        "not a url",
        "",
    ],
)
def test_a_url_that_could_carry_credentials_or_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="deployment URL") as caught:
        ConvexClient(url, KEY)
    assert KEY not in str(caught.value) and SECRET not in str(caught.value)


@pytest.mark.parametrize("key", ["", "   ", "abc def", "clé", "abc\nHeader: x"])
def test_a_key_that_cannot_be_sent_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ConvexClient(URL, key, key_env="MY_KEY")
    assert "$MY_KEY" in str(caught.value)
    if key.strip():
        assert key.strip() not in str(caught.value)


# --- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error_class", "code", "hint"),
    [
        (
            error(401, "BadAdminKey", "The provided admin key was invalid"),
            AuthenticationError,
            "BadAdminKey",
            "$CONVEX_DEPLOY_KEY is not valid for https://happy-animal-123",
        ),
        (
            error(403, "BadDeployKey", "The provided deploy key was invalid"),
            AuthenticationError,
            "BadDeployKey",
            "set CONVEX_DEPLOY_KEY",
        ),
        (
            error(403, "OperationNotPermitted", "no"),
            AuthenticationError,
            "OperationNotPermitted",
            "deployment:data:view",
        ),
        (
            error(403, "StreamingExportNotEnabled", "not on plan"),
            AuthenticationError,
            "StreamingExportNotEnabled",
            "plan does not include streaming export",
        ),
        (
            error(400, "InvalidAdminKey", "Invalid admin key"),
            AuthenticationError,
            "InvalidAdminKey",
            "Deploy keys",
        ),
        (error(401, None), AuthenticationError, "HTTP401", "not valid"),
        (
            error(400, "InvalidWindowToReadDocuments", "full re-sync"),
            RetentionExpired,
            "InvalidWindowToReadDocuments",
            "--resnapshot",
        ),
        (
            error(400, "SnapshotTooOld", "older than 5 days"),
            RetentionExpired,
            "SnapshotTooOld",
            "--resnapshot",
        ),
        (error(400, "BadJsonBody", "bad"), ConvexApiError, "BadJsonBody", "upgrade convex-cdc"),
        (error(404, None), ConvexApiError, "HTTP404", "check --url"),
        (error(405, None), ConvexApiError, "HTTP405", "upgrade convex-cdc"),
        (httpx.Response(400, content=b"<html>nope</html>"), ConvexApiError, "HTTP400", ""),
        (
            httpx.Response(301, headers={"Location": "https://elsewhere"}),
            ConvexApiError,
            "HTTP301",
            "redirects",
        ),
    ],
)
def test_final_answers_become_typed_errors_with_a_fix_and_are_not_retried(
    connect: Any, answer: httpx.Response, error_class: type[ConvexApiError], code: str, hint: str
) -> None:
    client, server = connect(answer, key_env="CONVEX_DEPLOY_KEY")
    with pytest.raises(ConvexApiError) as caught:
        client.document_deltas(cursor=S, selection=None)
    assert type(caught.value) is error_class
    assert caught.value.code == code and caught.value.status == answer.status_code
    assert caught.value.endpoint == "document_deltas"
    assert hint in (caught.value.hint or "")
    assert "\n" not in str(caught.value)
    assert len(server.requests) == 1


def test_the_retention_error_explains_the_resnapshot(connect: Any) -> None:
    client, _ = connect(
        error(400, "InvalidWindowToReadDocuments", "Cursor too old; do a full re-sync.")
    )
    with pytest.raises(RetentionExpired) as caught:
        client.document_deltas(cursor=S, selection=None)
    assert str(caught.value) == (
        "document_deltas: HTTP 400 InvalidWindowToReadDocuments: Cursor too old; do a full "
        "re-sync. — run `convex-cdc sync --resnapshot` to start a new snapshot (nothing already "
        "landed is lost); sync more often than the deployment's retention window"
    )


# --- retries --------------------------------------------------------------------------------

TRANSIENT = [
    httpx.ConnectError("[Errno 111] Connection refused"),
    httpx.ReadTimeout("timed out"),
    httpx.ConnectTimeout("timed out"),
    httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
    httpx.ReadError("connection reset"),
    error(408, None),
    error(429, None),
    error(500, "InternalServerError", "Your request couldn't be completed. Try again later."),
    error(502, None),
    error(503, "TableSummariesUnavailable", "still building"),
    error(504, None),
    error(599, None),
]


@pytest.mark.parametrize(
    "failure",
    TRANSIENT,
    ids=lambda f: type(f).__name__ if isinstance(f, Exception) else str(f.status_code),
)
def test_transient_failures_are_retried_then_succeed(
    connect: Any, failure: Any, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    client, server = connect(failure, failure, ok(DELTA_PAGE))
    with caplog.at_level(logging.WARNING, logger="convex_cdc"):
        page = client.document_deltas(cursor=S, selection=None)
    assert page.cursor == S + 9
    assert len(server.requests) == 3 and len(sleeps) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert (
        warnings[0].startswith("document_deltas: ")
        and "(attempt 1 of 4), retrying in" in warnings[0]
    )
    assert all(URL not in w for w in warnings)


def test_sleeps_back_off_exponentially_with_jitter(connect: Any, sleeps: list[float]) -> None:
    policy = RetryPolicy(
        max_attempts=6, max_seconds=1000, initial_backoff_seconds=1, max_backoff_seconds=5
    )
    client, _ = connect(error(503, None), retry=policy)
    with pytest.raises(SourceUnavailable):
        client.test_connection()
    assert len(sleeps) == 5
    for attempt, slept in enumerate(sleeps):
        assert min(2**attempt, 5) <= slept <= min(2**attempt + 1, 5)


def test_retry_after_is_honoured(connect: Any, sleeps: list[float]) -> None:
    client, _ = connect(error(429, None, **{"Retry-After": "7"}), ok(DELTA_PAGE))
    client.document_deltas(cursor=S, selection=None)
    assert sleeps == [7.0]


def test_a_retry_after_beyond_the_budget_gives_up_at_once(
    connect: Any, sleeps: list[float]
) -> None:
    client, server = connect(error(503, None, **{"Retry-After": "3600"}), ok(DELTA_PAGE))
    with pytest.raises(SourceUnavailable, match="asked to retry after 3600 s"):
        client.document_deltas(cursor=S, selection=None)
    assert len(server.requests) == 1 and sleeps == []


def test_retry_after_dates_are_understood() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_after_the_attempt_budget_the_source_is_unavailable_with_the_last_problem(
    connect: Any,
) -> None:
    client, server = connect(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(SourceUnavailable) as caught:
        client.list_snapshot(snapshot=None, cursor=None, selection=None)
    message = str(caught.value)
    assert message.startswith(f"could not reach {URL}/api/list_snapshot after 4 attempts in ")
    assert "ConnectError: [Errno 111] Connection refused" in message
    assert caught.value.hint and "next run resumes from the last checkpoint" in caught.value.hint
    assert len(server.requests) == 4


def test_the_time_budget_bounds_retries_too() -> None:
    server = Server(error(502, None))
    policy = RetryPolicy(
        max_attempts=10_000, max_seconds=0.2, initial_backoff_seconds=0.01, max_backoff_seconds=0.02
    )
    with (
        ConvexClient(
            URL, KEY, retry=policy, transport=httpx.MockTransport(server), sleep=time.sleep
        ) as client,
        pytest.raises(SourceUnavailable, match="HTTP 502"),
    ):
        client.test_connection()
    assert 1 < len(server.requests) < 10_000


# --- malformed bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body", "problem"),
    [
        ("list_snapshot", b"<html>", "body is not JSON"),
        ("list_snapshot", b"", "body is not JSON"),
        ("list_snapshot", b"[]", "expected a JSON object, got a list"),
        ("list_snapshot", {**SNAPSHOT_PAGE, "values": {}}, "values must be a list"),
        (
            "list_snapshot",
            {**SNAPSHOT_PAGE, "values": [1]},
            "value #0 is an integer, not an object",
        ),
        ("list_snapshot", {**SNAPSHOT_PAGE, "hasMore": "true"}, "hasMore must be a boolean"),
        (
            "list_snapshot",
            {k: v for k, v in SNAPSHOT_PAGE.items() if k != "hasMore"},
            "hasMore must be a boolean, got null",
        ),
        (
            "list_snapshot",
            {**SNAPSHOT_PAGE, "snapshot": float(S)},
            "snapshot must be a JSON integer timestamp, got a float",
        ),
        (
            "list_snapshot",
            {**SNAPSHOT_PAGE, "snapshot": str(S)},
            "snapshot must be a JSON integer timestamp, got a string",
        ),
        ("list_snapshot", {**SNAPSHOT_PAGE, "snapshot": -1}, "out of range"),
        ("list_snapshot", {**SNAPSHOT_PAGE, "cursor": 5}, "cursor must be a string or null"),
        ("list_snapshot", {**SNAPSHOT_PAGE, "cursor": None}, "cursor is null but hasMore is true"),
        (
            "list_snapshot",
            {**SNAPSHOT_PAGE, "hasMore": False},
            "cursor is set but hasMore is false",
        ),
        ("list_snapshot", {**SNAPSHOT_PAGE, "values": [{"_ts": 1.5}]}, "value #0 has _ts a float"),
        (
            "list_snapshot",
            {**SNAPSHOT_PAGE, "values": [{"_ts": "17"}]},
            "value #0 has _ts a string",
        ),
        (
            "document_deltas",
            {**DELTA_PAGE, "cursor": str(S)},
            "cursor must be a JSON integer timestamp, got a string",
        ),
        ("document_deltas", {**DELTA_PAGE, "cursor": 1.0}, "got a float"),
        ("document_deltas", {**DELTA_PAGE, "cursor": 2**64 - 1}, "out of range"),
        ("document_deltas", {**DELTA_PAGE, "cursor": True}, "got a boolean"),
        ("json_schemas", {"": []}, "component '' maps to a list"),
        ("json_schemas", {"": {"t": None}}, "table 't' of component ''"),
        ("get_table_column_names", {"": []}, "expected an object with byComponent"),
        (
            "get_table_column_names",
            {"byComponent": {"": [{"name": "t"}]}},
            "not {name: str, columns: [str]}",
        ),
    ],
)
def test_malformed_bodies_are_refused_naming_endpoint_and_problem(
    connect: Any, endpoint: str, body: Any, problem: str
) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    client, server = connect(httpx.Response(200, content=content))
    calls: dict[str, Callable[[], object]] = {
        "list_snapshot": lambda: client.list_snapshot(snapshot=None, cursor=None, selection=None),
        "document_deltas": lambda: client.document_deltas(cursor=S, selection=None),
        "json_schemas": client.json_schemas,
        "get_table_column_names": client.get_table_column_names,
    }
    with pytest.raises(MalformedResponse) as caught:
        calls[endpoint]()
    assert str(caught.value).startswith(f"{endpoint}: malformed response: ")
    assert problem in str(caught.value)
    assert len(server.requests) == 1


# --- a whole sync through the client --------------------------------------------------------


def devserver_backend(deployment: InProcessConvex) -> Handler:
    """Serve an in-process deployment through the devserver's own HTTP layer (routing, key
    check, argument parsing, error answers); a scheduled transaction lands before each
    request."""
    api = HttpApi(
        deployment.store,
        SettingsBox(deployment.settings),
        KeyChecker(KEY),
        FaultInjector(seed=0),
        WorkloadRunner(deployment.store, seed=0),
    )

    def handle(request: httpx.Request) -> httpx.Response:
        deployment.land_scheduled()
        answer = api.handle(
            Request(
                method=request.method,
                path=request.url.path,
                query=request.url.query.decode("ascii"),
                headers={name.lower(): value for name, value in request.headers.items()},
                body=request.content,
            )
        )
        return httpx.Response(answer.status, content=answer.body, headers=answer.headers)

    return handle


def test_a_full_sync_through_the_client_lands_the_source_and_stores_no_key(connect: Any) -> None:
    deployment = InProcessConvex(snapshot_page_size=2, delta_row_limit=2)
    ids = [deployment.insert("t", {"n": i, "big": 2**60 + i, "f": -0.0}) for i in range(5)]
    deployment.insert("u", {"b": {"x": [1, 2]}}, "comp")
    deployment.schedule([[Delete("t", ids[0])], [Insert("t", {"n": 99})]])
    client, server = connect(devserver_backend(deployment))
    sink, store = DurableSink(), MemoryCheckpointStore()
    report = run_sync(client, sink, store)
    assert report.checkpoint is not None and report.checkpoint.consistent_as_of is not None
    assert report.snapshot_pages > 1 and len(server.requests) > 4
    assert sink.state() == deployment.state_at(report.checkpoint.consistent_as_of)
    assert (
        store.raw is not None and KEY.encode() not in store.raw and SECRET.encode() not in store.raw
    )
    assert URL.encode() in store.raw


# --- the key never leaks ------------------------------------------------------------------


def _leaky_answers() -> list[Any]:
    """Failures whose server text or transport error carries the key."""
    return [
        error(401, "BadAdminKey", f"The admin key {KEY} was invalid"),
        error(403, "OperationNotPermitted", f"key …|{SECRET} lacks permission"),
        error(400, "InvalidWindowToReadDocuments", f"cursor too old for {KEY}"),
        error(500, "InternalServerError", f"boom {KEY}"),
        httpx.ConnectError(f"could not connect with Authorization: Convex {KEY}"),
        httpx.Response(200, content=f"not json {KEY}".encode()),
        ok({"values": KEY, "cursor": 1, "hasMore": False}),
    ]


def _texts_of(exc: BaseException) -> Iterator[str]:
    """Everything a traceback or an error report could show of ``exc`` and its chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (str(a) for a in current.args)
        yield from (str(v) for v in vars(current).values() if isinstance(v, str))
        # What a traceback would print: the cause, else the context unless suppressed.
        suppressed = current.__suppress_context__
        current = current.__cause__ or (None if suppressed else current.__context__)


@pytest.mark.parametrize("answer", _leaky_answers(), ids=range(len(_leaky_answers())))
def test_the_key_never_appears_in_an_exception_repr_or_log_line(
    connect: Any, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = connect(answer)
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception) as caught:
        client.document_deltas(cursor=S, selection=None)
    texts = [*_texts_of(caught.value), repr(client), str(client)]
    texts.append("".join(traceback.format_exception(caught.value)))
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    for text in texts:
        assert KEY not in text and SECRET not in text, text
