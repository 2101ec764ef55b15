"""Small helpers the devserver tests share: raw export calls and full walks over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.fixtures.devserver import RunningDevServer


def call(
    server: RunningDevServer,
    method: str,
    path: str,
    *,
    key: str | None = "",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One request; ``key=""`` sends the server's key, ``None`` sends no Authorization."""
    all_headers = dict(headers or {})
    if key is not None:
        all_headers.setdefault("Authorization", f"Convex {key or server.key}")
    return httpx.request(method, server.url + path, headers=all_headers, timeout=30, **kwargs)


def error(response: httpx.Response) -> tuple[int, str]:
    """``(status, code)`` of an error answer, checking the body is exactly {code, message}."""
    body = response.json()
    assert set(body) == {"code", "message"}
    assert isinstance(body["code"], str)
    assert isinstance(body["message"], str)
    assert body["message"]
    return response.status_code, body["code"]


def parse(response: httpx.Response) -> Any:
    """The JSON body of a 200 answer."""
    assert response.status_code == 200, response.text
    return orjson.loads(response.content)


def snapshot_pages(server: RunningDevServer, **body: Any) -> list[dict[str, Any]]:
    """Every list_snapshot page of one walk (POST, sending snapshot and cursor back)."""
    pages = []
    snapshot = cursor = None
    for _ in range(10_000):
        request = {**body, "snapshot": snapshot, "cursor": cursor}
        page = parse(call(server, "POST", "/api/list_snapshot", json=request))
        pages.append(page)
        if not page["hasMore"]:
            return pages
        snapshot, cursor = page["snapshot"], page["cursor"]
    raise AssertionError("list_snapshot never finished")


def delta_pages(server: RunningDevServer, cursor: int, **body: Any) -> list[dict[str, Any]]:
    """Every document_deltas page from ``cursor`` until ``hasMore`` is false."""
    pages = []
    for _ in range(10_000):
        page = parse(call(server, "POST", "/api/document_deltas", json={**body, "cursor": cursor}))
        pages.append(page)
        cursor = page["cursor"]
        if not page["hasMore"]:
            return pages
    raise AssertionError("document_deltas never finished")


def insert(table: str, component: str = "", **fields: Any) -> dict[str, Any]:
    """An insert write for ``RunningDevServer.transact``."""
    return {"op": "insert", "component": component, "table": table, "fields": fields}


def replace(table: str, doc_id: str, component: str = "", **fields: Any) -> dict[str, Any]:
    """A replace write."""
    return {"op": "replace", "component": component, "table": table, "id": doc_id, "fields": fields}


def delete(table: str, doc_id: str, component: str = "") -> dict[str, Any]:
    """A delete write."""
    return {"op": "delete", "component": component, "table": table, "id": doc_id}
