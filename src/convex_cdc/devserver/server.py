"""The devserver process: a stdlib ``ThreadingHTTPServer`` in front of :class:`HttpApi`.

HTTP/1.1 with keep-alive and exact ``Content-Length``; each response is written with one
``sendall``, with Nagle disabled so small answers are not delayed. Full control of the socket
is what makes the "dropped connection" fault possible: the server sends the real headers and
part of the body, then closes.

:class:`DevServer` runs in a background thread (tests) or in the foreground (the CLI).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from convex_cdc.devserver.auth import KeyChecker, generate_deploy_key
from convex_cdc.devserver.devserver_api import WorkloadRunner
from convex_cdc.devserver.faults import FaultInjector
from convex_cdc.devserver.http_api import HttpApi, Request, Response
from convex_cdc.devserver.settings import DevServerSettings, SettingsBox
from convex_cdc.devserver.store import DocumentStore
from convex_cdc.devserver.sync_cursor import CursorSealer

logger = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HttpServer

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(Response(400, b"", content_type=None))
            return
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        headers = {name.lower(): value for name, value in self.headers.items()}
        logger.debug("devserver: %s %s", self.command, path)
        request = Request(self.command, path, query, headers, body)
        self._send(self.server.api.handle(request))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _send(self, response: Response) -> None:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        head = [f"HTTP/1.1 {response.status} {reason}"]
        if response.content_type is not None:
            head.append(f"Content-Type: {response.content_type}")
        head.append(f"Content-Length: {len(response.body)}")
        head.extend(f"{name}: {value}" for name, value in response.headers)
        dropping = response.truncate_at is not None
        # A dropped body announces nothing: the client learns of it mid-read, as in real life.
        if self.close_connection and not dropping:
            head.append("Connection: close")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        body = (
            response.body if response.truncate_at is None else response.body[: response.truncate_at]
        )
        if self.command != "HEAD":
            payload += body
        self.wfile.write(payload)
        if dropping:
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines can carry ?adminKey=…; never let them reach a log.
        logger.debug("devserver http: %s", self.command)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: HttpApi) -> None:
        super().__init__(address, _Handler)
        self.api = api
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Hang up on idle keep-alive clients so their handler threads end."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class DevServer:
    """A local Convex streaming-export server with a write API and fault injection."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        key: str | None = None,
        settings: DevServerSettings | None = None,
        workload_seed: int = 0,
        fault_seed: int | None = None,
    ) -> None:
        self.key_generated = key is None
        self.key = key if key is not None else generate_deploy_key()
        self.store = DocumentStore(seed=workload_seed)
        self.settings = SettingsBox(settings or DevServerSettings())
        self.workload = WorkloadRunner(self.store, workload_seed)
        self.api = HttpApi(
            self.store,
            self.settings,
            KeyChecker(self.key),
            FaultInjector(fault_seed),
            self.workload,
            # Keyed by the deploy key: a restarted devserver still opens its Data Sync cursors.
            cursor_sealer=CursorSealer(self.key.encode()),
        )
        self._httpd = _HttpServer((host, port), self.api)
        self._thread: threading.Thread | None = None
        self._state = threading.Lock()  # orders start/serve against stop
        self._serving = False
        self._stopped = False

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` the server listens on."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def serving(self) -> bool:
        """Whether :meth:`start` or :meth:`serve_forever` has been called."""
        return self._serving

    def seed(self, name: str, documents: int) -> None:
        """Populate: ``empty`` does nothing, ``demo`` runs the workload generator.

        Raises:
            ValueError: an unknown seed name.
        """
        if name == "demo":
            self.workload.populate(documents)
            self.store.settle()
        elif name != "empty":
            raise ValueError(f"unknown seed {name!r}: expected demo or empty")

    def start(self) -> DevServer:
        """Serve from a background daemon thread; returns ``self``."""
        with self._state:
            if self._stopped:
                raise RuntimeError("the devserver was stopped")
            self._serving = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="convex-cdc-devserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (from another thread or a signal)."""
        with self._state:
            if self._stopped:
                return
            self._serving = True
        # A stop() racing with this call has already asked for shutdown; the loop sees it.
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving, hang up on every client and release the port. Idempotent."""
        with self._state:
            if self._stopped:
                return
            self._stopped = True
            serving = self._serving
        if serving:
            self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd.close_open_connections()
        self._httpd.server_close()

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
