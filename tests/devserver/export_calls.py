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


# --- Data Sync --------------------------------------------------------------------------------


def sync(
    server: RunningDevServer,
    cursor: str | None = None,
    *,
    client: str | None = None,
    **body: Any,
) -> dict[str, Any]:
    """One ``POST /api/v1/data/sync`` page (``cursor=None``: a cold start)."""
    request = dict(body) if cursor is None else {**body, "cursor": cursor}
    headers = {} if client is None else {"Convex-Client": client}
    # The server's keep-alive client: a sync is many small requests.
    page: dict[str, Any] = parse(
        server.client.post("/api/v1/data/sync", json=request, headers=headers)
    )
    return page


class SyncReplica:
    """What a Data Sync consumer holds: truncates applied before values, page by page."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pages: list[dict[str, Any]] = []
        self.cursor: str | None = None

    def apply(self, page: dict[str, Any]) -> dict[str, Any]:
        """Apply one page and keep its cursor; returns the page."""
        self.pages.append(page)
        for truncate in page["truncates"]:
            where = (truncate["component"], truncate["table"])
            for key in [key for key in self.rows if key[:2] == where]:
                del self.rows[key]
        for value in page["values"]:
            key = (value["component"], value["table"], value["value"]["_id"])
            if value["deleted"]:
                self.rows.pop(key, None)
            else:
                self.rows[key] = {"_ts": value["ts"], **value["value"]}
        self.cursor = page["pagination"]["nextCursor"]
        return page

    def step(self, server: RunningDevServer, **body: Any) -> dict[str, Any]:
        """Fetch and apply the next page."""
        return self.apply(sync(server, self.cursor, **body))

    def until_up_to_date(self, server: RunningDevServer, **body: Any) -> list[dict[str, Any]]:
        """Fetch pages until one reports ``upToDate``; returns the pages fetched."""
        first = len(self.pages)
        for _ in range(10_000):
            if self.step(server, **body)["status"]["type"] == "upToDate":
                return self.pages[first:]
        raise AssertionError("the sync never caught up")


def truth_rows(server: RunningDevServer) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``/_devserver/truth`` in the shape :class:`SyncReplica` keeps."""
    return {
        (doc["component"], doc["table"], doc["_id"]): {
            "_ts": doc["_ts"],
            "_creationTime": doc["_creationTime"],
            "_id": doc["_id"],
            **doc["fields"],
        }
        for doc in server.truth()
    }


def drop_table(server: RunningDevServer, table: str, component: str = "") -> int:
    """Drop a table through the write API → the drop's ts."""
    body = {"component": component, "table": table}
    ts: int = parse(server.client.post("/_devserver/drop_table", json=body))["ts"]
    return ts


def replace_table(
    server: RunningDevServer, table: str, documents: list[dict[str, Any]], component: str = ""
) -> dict[str, Any]:
    """Replace a table's documents, as an import with ``--replace`` → ``{"ts", "ids"}``."""
    body = {"component": component, "table": table, "documents": documents}
    result: dict[str, Any] = parse(server.client.post("/_devserver/replace_table", json=body))
    return result
