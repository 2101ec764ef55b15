"""Walk a deployment's whole ``list_snapshot`` and discard it: the benchmark's baselines.

Run as its own process by ``bench/run.py`` (the URL and key come from ``CONVEX_URL`` and
``CONVEX_DEPLOY_KEY``); prints one JSON line ``{"pages", "rows", "response_bytes",
"seconds"}``. Modes:

* ``floor`` — convex-cdc's own HTTP client (``ConvexClient.list_snapshot``: keep-alive
  httpx, ``export_json``, orjson parse and the contract checks) over every page, each
  page dropped: the cost no extractor built on this client can avoid.
* ``raw`` — a bare httpx keep-alive client reading each page's bytes without parsing the
  documents (only the page's tail is decoded, for the cursor): what the devserver can
  serve, with the client's cost kept as small as Python allows.
* ``json-tables`` — what the Airbyte connector asks for: ``json_schemas`` without
  components, then ``GET list_snapshot?tableName=T&format=json`` per table. Run before
  the connector, it also warms the devserver's per-format body cache, so the connector
  does not pay the devserver's one-off conversion to the lossy ``json`` format.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import httpx
import orjson

AIRBYTE_CLIENT = "airbyte-export-0.4.0"
_VALUE_START = b'{"_component":'  # every exported value starts with it (devserver)


def floor(url: str, key: str) -> dict[str, Any]:
    """Every page through ``ConvexClient.list_snapshot``, parsed and dropped."""
    from convex_cdc.core.client import ConvexClient

    pages = rows = size = 0
    snapshot: int | None = None
    cursor: str | None = None
    started = time.perf_counter()
    with ConvexClient(url, key) as client:
        while True:
            page = client.list_snapshot(snapshot=snapshot, cursor=cursor, selection=None)
            pages += 1
            rows += len(page.values)
            size += page.response_bytes
            if not page.has_more:
                break
            snapshot, cursor = page.snapshot, page.cursor
    return {"pages": pages, "rows": rows, "response_bytes": size, "seconds": _since(started)}


def _page_tail(body: bytes) -> dict[str, Any]:
    """``snapshot``/``cursor``/``hasMore`` of a page, decoding only the end of the body."""
    at = body.rfind(b'],"snapshot":')
    if at < 0:
        return dict(orjson.loads(body))
    return dict(orjson.loads(b"{" + body[at + 2 :]))


def raw(url: str, key: str) -> dict[str, Any]:
    """Every page's bytes over one keep-alive client, documents not parsed."""
    pages = rows = size = 0
    snapshot: int | None = None
    cursor: str | None = None
    from convex_cdc.core.client import CLIENT_ID

    headers = {"Authorization": f"Convex {key}", "Convex-Client": CLIENT_ID}
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        while True:
            request = {"snapshot": snapshot, "cursor": cursor, "format": "export_json"}
            response = client.post("/api/list_snapshot", json=request)
            response.raise_for_status()
            body = response.content
            pages += 1
            rows += body.count(_VALUE_START)
            size += len(body)
            tail = _page_tail(body)
            if not tail["hasMore"]:
                break
            snapshot, cursor = tail["snapshot"], tail["cursor"]
    return {"pages": pages, "rows": rows, "response_bytes": size, "seconds": _since(started)}


def json_tables(url: str, key: str) -> dict[str, Any]:
    """The connector's requests: one GET walk per root table in the lossy ``json`` format."""
    pages = rows = size = 0
    headers = {"Authorization": f"Convex {key}", "Convex-Client": AIRBYTE_CLIENT}
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        schemas = client.get("/api/json_schemas", params={"deltaSchema": "true", "format": "json"})
        schemas.raise_for_status()
        tables = sorted(schemas.json())
        for table in tables:
            params: dict[str, Any] = {"tableName": table, "format": "json"}
            while True:
                response = client.get("/api/list_snapshot", params=params)
                response.raise_for_status()
                page = orjson.loads(response.content)
                pages += 1
                rows += len(page["values"])
                size += len(response.content)
                if not page["hasMore"]:
                    break
                params = {**params, "cursor": page["cursor"], "snapshot": page["snapshot"]}
    return {
        "pages": pages,
        "rows": rows,
        "response_bytes": size,
        "seconds": _since(started),
        "tables": tables,
    }


def _since(started: float) -> float:
    return time.perf_counter() - started


def main() -> None:
    """Run one walk and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["floor", "raw", "json-tables"])
    args = parser.parse_args()
    url, key = os.environ["CONVEX_URL"], os.environ["CONVEX_DEPLOY_KEY"]
    walks = {"floor": floor, "raw": raw, "json-tables": json_tables}
    print(json.dumps(walks[args.mode](url, key)))


if __name__ == "__main__":
    main()
