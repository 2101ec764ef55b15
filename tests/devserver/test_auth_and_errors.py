"""Routes, authentication, error bodies and the order of checks.

The rules are those of docs/convex-export-api.md §2 to §5.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.devserver.export_calls import call, error, insert, parse
from tests.fixtures.devserver import RunningDevServer

EXPORT_GETS = [
    "/api/test_streaming_export_connection",
    "/api/json_schemas",
    "/api/get_table_column_names",
    "/api/list_snapshot",
    "/api/document_deltas?cursor=0",
    "/api/v1/data/list_active_syncs",
]
EXPORT_POSTS = {
    "/api/list_snapshot": {},
    "/api/document_deltas": {},
    "/api/v1/data/sync": {},
    # Its cursor is a required field: without one the body itself does not parse (400).
    "/api/data_sync_cursor_from_deltas": {"cursor": 1},
}


def test_every_route_answers_under_api(devserver: RunningDevServer) -> None:
    now = devserver.transact([insert("t", a=1)])["ts"]
    assert parse(call(devserver, "GET", "/api/test_streaming_export_connection")) is None
    assert "t" in parse(call(devserver, "GET", "/api/json_schemas"))
    assert parse(call(devserver, "GET", "/api/get_table_column_names"))["byComponent"][""]
    assert parse(call(devserver, "GET", "/api/list_snapshot"))["values"]
    deltas = parse(call(devserver, "GET", f"/api/document_deltas?cursor={now - 1}"))
    assert [value["a"] for value in deltas["values"]] == ["1"]
    assert parse(call(devserver, "GET", "/api/v1/data/list_active_syncs")) == {
        "syncs": [],
        "pagination": {"hasMore": False},
    }
    limit = call(devserver, "GET", "/api/v1/data/list_active_syncs", params={"limit": 0})
    assert error(limit) == (400, "LimitOutOfRange")
    sync = parse(call(devserver, "POST", "/api/v1/data/sync", json={}))
    assert [value["value"]["a"] for value in sync["values"]] == [1]  # export_json
    conversion = call(devserver, "POST", "/api/data_sync_cursor_from_deltas", json={"cursor": now})
    assert isinstance(parse(conversion)["cursor"], str)


def test_get_and_post_have_the_same_semantics(devserver: RunningDevServer) -> None:
    first = devserver.transact([insert("t", n=1), insert("u", n=2)])["ts"]
    devserver.transact([insert("t", n=3)])
    get = parse(call(devserver, "GET", "/api/list_snapshot", params={"tableName": "t"}))
    post = parse(call(devserver, "POST", "/api/list_snapshot", json={"tableName": "t"}))
    assert get == post
    query = {"cursor": first - 1, "format": "export_json", "tableName": "u"}
    get = parse(call(devserver, "GET", "/api/document_deltas", params=query))
    post = parse(call(devserver, "POST", "/api/document_deltas", json=query))
    assert get == post
    assert [value["n"] for value in get["values"]] == [2]


def test_the_key_is_accepted_with_any_case_scheme_or_as_admin_key_param(
    devserver: RunningDevServer,
) -> None:
    path = "/api/test_streaming_export_connection"
    for scheme in ("Convex", "convex", "CONVEX", "cOnVeX"):
        headers = {"Authorization": f"{scheme} {devserver.key}"}
        assert call(devserver, "GET", path, key=None, headers=headers).status_code == 200
    param = call(devserver, "GET", path, key=None, params={"adminKey": devserver.key})
    assert param.status_code == 200


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        ("Convex not-the-key", (401, "BadAdminKey")),
        ("Basic dXNlcjpwYXNz", (400, "InvalidAdminKey")),
        ("Conv", (400, "InvalidHeaderFailure")),
        (None, (403, "BadDeployKey")),
    ],
)
def test_bad_credentials_get_the_documented_errors(
    devserver: RunningDevServer, authorization: str | None, expected: tuple[int, str]
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in EXPORT_GETS:
        response = call(devserver, "GET", path, key=None, headers=headers)
        assert error(response) == expected, path
    for path, body in EXPORT_POSTS.items():
        response = call(devserver, "POST", path, key=None, headers=headers, json=body)
        assert error(response) == expected, path


def test_a_non_ascii_authorization_header_is_a_header_parse_failure(
    devserver: RunningDevServer,
) -> None:
    headers = [(b"Authorization", "Convex clé".encode())]
    response = httpx.get(
        devserver.url + "/api/test_streaming_export_connection", headers=headers, timeout=10
    )
    assert error(response) == (400, "HeaderParseFailure")


def test_a_wrong_admin_key_param_is_401_and_the_header_wins(devserver: RunningDevServer) -> None:
    path = "/api/test_streaming_export_connection"
    assert error(call(devserver, "GET", path, key=None, params={"adminKey": "nope"})) == (
        401,
        "BadAdminKey",
    )
    both = call(devserver, "GET", path, params={"adminKey": "nope"})
    assert both.status_code == 200


def test_get_parses_the_query_before_authenticating(devserver: RunningDevServer) -> None:
    bad_query = "/api/document_deltas?cursor=abc"
    assert error(call(devserver, "GET", bad_query, key=None)) == (400, "BadQueryArgs")
    assert error(call(devserver, "GET", bad_query, key="wrong")) == (400, "BadQueryArgs")
    bad_bool = "/api/json_schemas?deltaSchema=1"
    assert error(call(devserver, "GET", bad_bool, key="wrong")) == (400, "BadQueryArgs")
    # A good query with a wrong key then fails on identity.
    good = "/api/document_deltas?cursor=1"
    assert error(call(devserver, "GET", good, key="wrong")) == (401, "BadAdminKey")


def test_post_resolves_identity_before_reading_the_body(devserver: RunningDevServer) -> None:
    path = "/api/document_deltas"
    bad_body = {"cursor": "123"}
    assert error(call(devserver, "POST", path, key="wrong", json=bad_body)) == (
        401,
        "BadAdminKey",
    )
    # No credentials: the anonymous identity is only rejected at the permission check.
    assert error(call(devserver, "POST", path, key=None, json=bad_body)) == (400, "BadJsonBody")
    assert error(call(devserver, "POST", path, json=bad_body)) == (400, "BadJsonBody")
    assert error(call(devserver, "POST", path, key=None, json={"cursor": 1})) == (
        403,
        "BadDeployKey",
    )


def test_post_needs_a_json_content_type(devserver: RunningDevServer) -> None:
    for path in ("/api/list_snapshot", "/api/document_deltas"):
        plain = call(
            devserver,
            "POST",
            path,
            content=b'{"cursor": 1}',
            headers={"Content-Type": "text/plain"},
        )
        assert error(plain) == (400, "BadJsonBody")
        missing = call(devserver, "POST", path, content=b'{"cursor": 1}')
        assert error(missing) == (400, "BadJsonBody")
        broken = call(
            devserver, "POST", path, content=b"{", headers={"Content-Type": "application/json"}
        )
        assert error(broken) == (400, "BadJsonBody")
    vendor = call(
        devserver,
        "POST",
        "/api/list_snapshot",
        content=b"{}",
        headers={"Content-Type": "application/vnd.convex+json; charset=utf-8"},
    )
    assert vendor.status_code == 200


def test_a_convex_client_header_without_a_dash_is_rejected_before_anything(
    devserver: RunningDevServer,
) -> None:
    headers = {"Convex-Client": "fivetran"}
    for path in EXPORT_GETS:
        response = call(devserver, "GET", path, key="wrong", headers=headers)
        assert error(response) == (400, "InvalidClientVersion"), path
    bad_query = call(devserver, "GET", "/api/document_deltas?cursor=x", headers=headers)
    assert error(bad_query) == (400, "InvalidClientVersion")
    good = {"Convex-Client": "fivetran-export-2.0.2"}
    ok = call(devserver, "GET", "/api/test_streaming_export_connection", headers=good)
    assert ok.status_code == 200


def test_the_switch_answers_not_enabled_before_the_permission_check(
    devserver_factory: Callable[..., RunningDevServer],
) -> None:
    server = devserver_factory(streaming_export_enabled=False)
    for path in EXPORT_GETS:
        for key in ("", None):
            response = call(server, "GET", path, key=key)
            assert error(response) == (403, "StreamingExportNotEnabled"), path
    for path, body in EXPORT_POSTS.items():
        assert error(call(server, "POST", path, key=None, json=body)) == (
            403,
            "StreamingExportNotEnabled",
        )
    # A wrong key is still caught first (identity comes before the switch).
    wrong = call(server, "GET", "/api/test_streaming_export_connection", key="wrong")
    assert error(wrong) == (401, "BadAdminKey")
    server.settings(streaming_export_enabled=True)
    assert call(server, "GET", "/api/test_streaming_export_connection").status_code == 200


def test_a_wrong_method_gets_405_with_an_empty_body(devserver: RunningDevServer) -> None:
    for method, path in [
        ("POST", "/api/test_streaming_export_connection"),
        ("POST", "/api/json_schemas"),
        ("PUT", "/api/list_snapshot"),
        ("DELETE", "/api/document_deltas"),
        ("GET", "/api/v1/data/sync"),
    ]:
        response = call(devserver, method, path)
        assert response.status_code == 405, (method, path)
        assert response.content == b""


def test_unexpected_failures_are_internal_server_errors(devserver: RunningDevServer) -> None:
    negative = call(devserver, "GET", "/api/list_snapshot", params={"snapshot": -1})
    assert error(negative) == (500, "InternalServerError")
    assert negative.json()["message"] == "Your request couldn't be completed. Try again later."
    deltas = call(devserver, "POST", "/api/document_deltas", json={"cursor": -5})
    assert error(deltas) == (500, "InternalServerError")


def test_a_crash_inside_a_handler_is_a_500_not_a_dropped_connection() -> None:
    from convex_cdc.devserver.server import DevServer

    with DevServer() as server:

        def explode(*args: object, **kwargs: object) -> None:
            raise RuntimeError("boom")

        server.store.snapshot_page = explode  # type: ignore[method-assign,assignment]
        response = httpx.get(
            server.url + "/api/list_snapshot",
            headers={"Authorization": f"Convex {server.key}"},
            timeout=10,
        )
        assert response.status_code == 500
        assert response.json() == {
            "code": "InternalServerError",
            "message": "Your request couldn't be completed. Try again later.",
        }


def test_devserver_endpoints_need_the_key(devserver: RunningDevServer) -> None:
    assert error(call(devserver, "GET", "/_devserver/truth", key=None)) == (403, "BadDeployKey")
    assert error(call(devserver, "GET", "/_devserver/truth", key="nope")) == (401, "BadAdminKey")
    writes = {"writes": [insert("t", a=1)]}
    denied = call(devserver, "POST", "/_devserver/transaction", key="nope", json=writes)
    assert error(denied) == (401, "BadAdminKey")
    assert devserver.truth() == []
