"""How fast the devserver serves a list_snapshot walk, next to a trivial loopback baseline.

Starts a DevServer populated by the workload generator (``--docs``, default 100k), walks
``list_snapshot`` with 1024-document pages over one keep-alive httpx client (a cold walk that
pays the per-format encoding once, then a warm walk from the cache), and compares with the
same client fetching a static, pre-built blob (a real 1024-document page captured from the
walk) from a trivial stdlib HTTP server in the same process. The client parses every body
with orjson in both cases, so the difference is the devserver's own cost. Prints pages/s,
docs/s and MB/s, and peak RSS.

    .venv/bin/python bench/devserver_throughput.py --docs 100000 --format convex_encoded_json
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson

from convex_cdc.devserver.server import DevServer


def walk(client: httpx.Client, url: str, fmt: str) -> tuple[int, int, int, float, bytes]:
    """One full list_snapshot walk → (pages, documents, bytes, seconds, a full page)."""
    pages = documents = size = 0
    snapshot = cursor = None
    full: list[bytes] = []
    started = time.perf_counter()
    while True:
        body = {"snapshot": snapshot, "cursor": cursor, "format": fmt}
        response = client.post(url + "/api/list_snapshot", json=body)
        response.raise_for_status()
        page = orjson.loads(response.content)
        pages += 1
        documents += len(page["values"])
        size += len(response.content)
        if len(page["values"]) == 1024:
            full.append(response.content)
        if not page["hasMore"]:
            seconds = time.perf_counter() - started
            average = size / pages
            sample = min(full, key=lambda body: abs(len(body) - average), default=response.content)
            return pages, documents, size, seconds, sample
        snapshot, cursor = page["snapshot"], page["cursor"]


def baseline(client: httpx.Client, blob: bytes, pages: int) -> float:
    """Seconds to fetch ``blob`` ``pages`` times from a trivial keep-alive server."""

    class Static(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Static)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        started = time.perf_counter()
        for _ in range(pages):
            response = client.post(url, json={"snapshot": 1, "cursor": "x", "format": "json"})
            response.raise_for_status()
            orjson.loads(response.content)
        return time.perf_counter() - started
    finally:
        server.shutdown()
        server.server_close()


def row(label: str, pages: int, documents: int, size: int, seconds: float) -> str:
    """One line of the results table."""
    return (
        f"{label:<28} {pages / seconds:>9.1f} {documents / seconds:>11.0f} "
        f"{size / seconds / 1e6:>9.1f} {seconds:>8.2f}"
    )


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--format", default="convex_encoded_json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    server = DevServer(workload_seed=args.seed)
    started = time.perf_counter()
    server.seed("demo", args.docs)
    populate_seconds = time.perf_counter() - started
    server.start()
    headers = {"Authorization": f"Convex {server.key}"}
    try:
        with httpx.Client(headers=headers, timeout=120) as client:
            cold = walk(client, server.url, args.format)
            warm = walk(client, server.url, args.format)
            pages, documents, size, _, blob = warm
            # The baseline serves a real 1024-document page, so the client parses the same JSON.
            base_seconds = baseline(client, blob, pages)
    finally:
        server.stop()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"documents: {documents}  populate: {populate_seconds:.1f} s  format: {args.format}")
    print(
        f"pages: {pages}  average page: {size / pages / 1e3:.0f} kB  "
        f"average document: {size / max(documents, 1):.0f} B"
    )
    print(f"{'':<28} {'pages/s':>9} {'docs/s':>11} {'MB/s':>9} {'seconds':>8}")
    print(row("devserver, cold (encode)", *cold[:4]))
    print(row("devserver, warm (cached)", *warm[:4]))
    print(row("baseline static page", pages, 1024 * pages, len(blob) * pages, base_seconds))
    print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
