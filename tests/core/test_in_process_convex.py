"""The in-process deployment the core tests sync from: deterministic, and as strict as the
devserver over HTTP, including the errors the real client would raise."""

from __future__ import annotations

import httpx
import orjson
import pytest

from convex_cdc.core.client import ConvexClient
from convex_cdc.core.errors import ConvexApiError, ConvexCdcError, RetentionExpired
from convex_cdc.core.retry import RetryPolicy
from convex_cdc.core.selection import Selection
from convex_cdc.devserver import api_errors
from convex_cdc.devserver.api_errors import ApiError
from convex_cdc.devserver.writes import Delete, Insert
from tests.core.in_process_convex import InProcessConvex, core_error

# Every error answer the devserver's export endpoints, key check and fault injection give.
DEVSERVER_ERRORS = [
    api_errors.internal_server_error(),
    ApiError(503, "ServiceUnavailable", "The service is temporarily unavailable."),
    ApiError(429, "RateLimited", "Too many requests. Slow down and retry later."),
    ApiError(501, "NotImplemented", "Data Sync is not emulated"),
    api_errors.bad_query_args("invalid digit found in cursor"),
    api_errors.bad_json_body("invalid type for `cursor`: expected i64"),
    api_errors.bad_format("xml"),
    api_errors.bad_deploy_key(),
    api_errors.bad_admin_key(),
    api_errors.invalid_admin_key(),
    api_errors.header_parse_failure(),
    api_errors.invalid_header_failure(),
    api_errors.streaming_export_not_enabled(),
    ApiError(400, "InvalidClientVersion", "Invalid Convex-Client header"),
    ApiError(400, "SnapshotTooNew", "Snapshot value 9 is in the future."),
    ApiError(400, "SnapshotTooOld", "Snapshot value 9 is too old."),
    ApiError(400, "InvalidListSnapshotCursor", "Invalid list_snapshot cursor: 'x'"),
    ApiError(400, "DocumentDeltasCursorRequired", "/api/document_deltas requires a cursor"),
    ApiError(400, "InvalidWindowToReadDocuments", "Timestamp 10 is too old"),
]


def _client_raises(error: ApiError) -> ConvexCdcError:
    """What ``ConvexClient`` raises when the server gives this answer every time."""
    answer = httpx.Response(error.status, content=error.body())
    client = ConvexClient(
        "https://happy-animal-123.convex.cloud",
        "prod:happy-animal-123|" + "ab" * 24,
        transport=httpx.MockTransport(lambda _: answer),
        retry=RetryPolicy(max_attempts=2, initial_backoff_seconds=0),
        sleep=lambda _: None,
    )
    with client, pytest.raises(ConvexCdcError) as caught:
        client.document_deltas(cursor=1, selection=None)
    return caught.value


@pytest.mark.parametrize("error", DEVSERVER_ERRORS, ids=lambda error: error.code)
def test_a_devserver_error_becomes_the_error_the_client_raises_for_that_answer(
    error: ApiError,
) -> None:
    expected = _client_raises(error)
    got = core_error("document_deltas", error, url="https://happy-animal-123.convex.cloud")
    assert type(got) is type(expected)
    if isinstance(expected, ConvexApiError):
        assert isinstance(got, ConvexApiError)
        assert (got.status, got.code, got.hint) == (expected.status, expected.code, expected.hint)


def _everything_seen(deployment: InProcessConvex) -> list[object]:
    """Every page of a walk and of the catch-up after it, with the timestamps and ids."""
    pages: list[object] = []
    snapshot, cursor = None, None
    while True:
        page = deployment.list_snapshot(snapshot=snapshot, cursor=cursor, selection=None)
        pages.append(page.values)
        if not page.has_more:
            break
        snapshot, cursor = page.snapshot, page.cursor
    delta = deployment.document_deltas(cursor=page.snapshot, selection=None)
    return [*pages, delta.values, delta.cursor]


def _busy_deployment(seed: int) -> InProcessConvex:
    deployment = InProcessConvex(snapshot_page_size=2, delta_row_limit=3, seed=seed)
    ids = [deployment.insert("messages", {"n": n}) for n in range(5)]
    deployment.insert("users", {"name": "ada"}, "auth")
    deployment.schedule(
        [[Delete("messages", doc_id), Insert("messages", {"n": 9})] for doc_id in ids[:3]]
    )
    return deployment


def test_the_same_seed_gives_the_same_deployment_down_to_timestamps_and_ids() -> None:
    """The crash tests replay a run to reach each of its crash points, so a deployment
    must come out identical every time it is built from the same seed."""
    first, again, other = _busy_deployment(3), _busy_deployment(3), _busy_deployment(4)
    assert _everything_seen(first) == _everything_seen(again)
    assert first.truth() == again.truth() and first.latest_ts == again.latest_ts
    assert first.truth() != other.truth()


def test_requests_the_devserver_refuses_raise_what_the_client_would() -> None:
    deployment = InProcessConvex()
    deployment.insert("messages", {"n": 1})
    with pytest.raises(ConvexApiError, match="SnapshotTooNew"):
        deployment.list_snapshot(snapshot=deployment.latest_ts + 1, cursor=None, selection=None)
    with pytest.raises(ConvexApiError, match="InvalidListSnapshotCursor"):
        deployment.list_snapshot(snapshot=None, cursor="not a cursor", selection=None)
    deployment.min_retained_ts = deployment.latest_ts
    with pytest.raises(RetentionExpired, match="InvalidWindowToReadDocuments"):
        deployment.document_deltas(cursor=deployment.latest_ts - 1, selection=None)
    assert deployment.calls == ["list_snapshot", "list_snapshot", "document_deltas"]


def test_the_selection_travels_as_the_client_sends_it() -> None:
    deployment = InProcessConvex()
    deployment.insert("users", {"name": "ada", "ssn": "123"})
    deployment.insert("messages", {"body": "hi"})
    selection = Selection.from_patterns(include=["users"], exclude=["users.ssn"])
    page = deployment.list_snapshot(snapshot=None, cursor=None, selection=selection)
    assert [sorted(value) for value in page.values] == [
        ["_component", "_creationTime", "_id", "_table", "_ts", "name"]
    ]
    changes = deployment.document_deltas(cursor=0, selection=selection)
    assert [value["_table"] for value in changes.values] == ["users"]
    assert "ssn" not in changes.values[0]


@pytest.mark.parametrize(
    "bad",
    [{"": {"users": "excluded"}}, {"_other": "maybe"}, {"_other": "included", "": "yes"}],
    ids=["no-other", "bad-inclusion", "bad-component"],
)
def test_the_oracle_refuses_a_selection_the_server_would_read_as_everything(
    bad: dict[str, object],
) -> None:
    deployment = InProcessConvex()
    deployment.insert("users", {"name": "ada"})
    with pytest.raises(ValueError, match="cannot parse"):
        deployment.truth(bad)


def test_the_oracle_applies_a_selection_object_as_the_devserver_reads_it() -> None:
    deployment = InProcessConvex()
    ada = deployment.insert("users", {"name": "ada", "ssn": "123"})
    deployment.insert("messages", {"body": "hi"})
    chosen = deployment.truth(
        {
            "_other": "excluded",
            "": {"_other": "excluded", "users": {"_other": "incl", "ssn": "excl"}},
        }
    )
    assert list(chosen) == [("", "users", ada)]
    assert set(orjson.loads(chosen[("", "users", ada)])) == {"_id", "_creationTime", "name"}
