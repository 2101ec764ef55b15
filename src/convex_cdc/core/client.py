"""``ConvexClient``: the streaming-export HTTP API as a :class:`~convex_cdc.core.source.Source`.

One keep-alive ``httpx.Client`` per instance. Every request carries
``Authorization: Convex <key>`` and ``Convex-Client: convex-cdc-<version>`` and asks for
the lossless ``export_json`` format. ``list_snapshot`` and ``document_deltas`` are POSTs
with a JSON body, so a full selection object can travel with them.

Answers are checked strictly against the contract before anything downstream sees them
(:class:`MalformedResponse` names the endpoint and the problem), against the request they
answer, and against the walk so far (:mod:`convex_cdc.core.walk_progress`): a cursor
that does not move, moves back, or runs ahead of the deployment's clock is refused, and
so is a field name that cannot be a column (:mod:`convex_cdc.core.field_names`). One
request never takes longer than ``request_timeout`` seconds (a server that drips its
answer is cut off and retried) and never reads more than ``max_response_bytes`` (a larger
answer is refused, not buffered). Transient failures are
retried (see :mod:`convex_cdc.core.retry`); Convex's ``{code, message}`` errors become
typed errors with a one-line fix. The key never leaves this object: ``repr``/``str``
show the URL only, server text is redacted before it enters an exception, and log lines
name the endpoint, never a URL with a query or a header.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

import httpx
import orjson

from convex_cdc import __version__
from convex_cdc.core.data_sync_response import (
    CONVERSION_ENDPOINT,
    parse_converted_cursor,
    parse_data_sync_page,
)
from convex_cdc.core.data_sync_response import (
    ENDPOINT as DATA_SYNC_ENDPOINT,
)
from convex_cdc.core.errors import (
    AuthenticationError,
    ConfigError,
    ConvexApiError,
    MalformedResponse,
    RetentionExpired,
    SourceError,
    redact,
)
from convex_cdc.core.field_names import check_schema_field_names
from convex_cdc.core.responses import (
    parse_delta_page,
    parse_json_schemas,
    parse_snapshot_page,
    parse_table_column_names,
)
from convex_cdc.core.retry import (
    RetryPolicy,
    TransientFailure,
    call_with_retries,
    is_transient_status,
    parse_retry_after,
)
from convex_cdc.core.selection import EXCLUDED, OTHER, Selection, validate_selection
from convex_cdc.core.source import WIRE_FORMAT, DataSyncPage, DeltaPage, SnapshotPage
from convex_cdc.core.walk_progress import ServerClock, SnapshotCursors

CLIENT_ID: Final = f"convex-cdc-{__version__}"
"""The ``Convex-Client`` header value (``<name>-<semver>``, as the server requires)."""

DEFAULT_REQUEST_TIMEOUT_SECONDS: Final = 330.0
"""Convex gives up on a request after 300 s (then answers 408); a snapshot page of
1024 large documents can take most of that, so a request may take a little longer than
the server's own limit, and no longer."""

DEFAULT_MAX_RESPONSE_BYTES: Final = 256 * 1024 * 1024
"""Far above a normal page (a list_snapshot page of 1024 typical documents is about half
a megabyte), and a bound on the memory one answer can take (parsed, about three times
its size)."""

_KEY_CHARS: Final = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: header-safe
_MAX_SERVER_TEXT: Final = 300
_DASHBOARD_KEYS: Final = "the Convex dashboard → Settings → Deploy keys"
_KEY_FORMAT_CODES: Final = frozenset(
    {"InvalidAdminKey", "HeaderParseFailure", "InvalidHeaderFailure"}
)
_RETENTION_CODES: Final = frozenset(
    {"InvalidWindowToReadDocuments", "SnapshotTooOld", "DataSyncCursorExpired"}
)
_KEY_CODES: Final = frozenset({"BadAdminKey", "BadDeployKey", "OperationNotPermitted"})
"""Refusals that are about the key, whatever the endpoint (never "no Data Sync here")."""
_NO_DATA_SYNC_HINT: Final = (
    "this deployment does not offer Data Sync (an older self-hosted backend, or a Convex "
    "Cloud plan without it): pass --api streaming-export, or --api auto to choose by itself"
)
_SELECTION_WORDS: Final = {"included": "incl", "excluded": "excl"}
"""Sent in their short forms, which every backend accepts (older self-hosted ones know
only these)."""
_NOTHING_SELECTED: Final = {OTHER: EXCLUDED}
_MB: Final = 1024 * 1024


class ConvexClient:
    """A Convex deployment's streaming-export API over HTTP.

    Args:
        deployment_url: e.g. ``https://happy-animal-123.convex.cloud``.
        deploy_key: a deploy key with ``deployment:data:view``.
        key_env: the environment variable the key came from, named in error hints.
        request_timeout: seconds one request may take in all, from connecting to the
            last byte of the answer; then it is abandoned (and retried, as a timeout).
        max_response_bytes: the largest answer read; a larger one is refused.
        retry: the budget for transient failures.
        transport: an ``httpx`` transport (``httpx.MockTransport`` in tests).
        sleep: how to wait between retries (injectable for tests).

    Raises:
        ConfigError: the URL is not an http(s) base URL, the key cannot be sent, or a
            limit is not positive.
    """

    def __init__(
        self,
        deployment_url: str,
        deploy_key: str,
        *,
        key_env: str | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = _normalise_url(deployment_url)
        key = deploy_key.strip()
        where = f"${key_env}" if key_env else "the deploy key"
        if not key:
            raise ConfigError(
                f"{where} is empty",
                hint=f"set it to a deploy key from {_DASHBOARD_KEYS}",
            )
        if not _KEY_CHARS.fullmatch(key):
            raise ConfigError(
                f"{where} contains spaces or non-ASCII characters, so it is not a deploy key",
                hint=f"copy the key again from {_DASHBOARD_KEYS}",
            )
        self._key = key
        # Also hide the secret half of a "prod:<name>|<secret>" key, should a server echo it.
        secret_half = key.partition("|")[2]
        self._secrets = (key, secret_half) if len(secret_half) >= 12 else (key,)
        self._key_env = key_env
        if not request_timeout > 0 or max_response_bytes < 1:
            raise ConfigError(
                "the request timeout and the largest response must be positive",
                hint="pass --request-timeout SECONDS and --max-response-mb MB above 0",
            )
        self._request_timeout = float(request_timeout)
        self._max_response_bytes = int(max_response_bytes)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._snapshot_cursors = SnapshotCursors()
        self._clock = ServerClock(self._server_now)
        self._schemas: dict[str, dict[str, Any]] | None = None
        self._checked_selections: set[bytes] = set()
        timeout = httpx.Timeout(
            connect=min(15.0, request_timeout),
            read=request_timeout,
            write=min(60.0, request_timeout),
            pool=min(30.0, request_timeout),
        )
        self._http = httpx.Client(
            headers={
                "Authorization": f"Convex {key}",
                "Convex-Client": CLIENT_ID,
                "Accept": "application/json",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    # --- lifecycle and identity -----------------------------------------------------

    @property
    def deployment_url(self) -> str:
        """The deployment's base URL, without a trailing slash (never the key)."""
        return self._url

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> ConvexClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ConvexClient({self._url!r})"

    __str__ = __repr__

    # --- endpoints ------------------------------------------------------------------

    def test_connection(self) -> None:
        """Check the key and that streaming export is enabled for the deployment.

        Raises:
            AuthenticationError: the key is wrong, missing, under-privileged, or the plan
                lacks streaming export.
            SourceUnavailable: the deployment could not be reached.
        """
        self._call("GET", "test_streaming_export_connection")

    def json_schemas(self) -> dict[str, dict[str, Any]]:
        """``{component: {table: json_schema}}`` with the delta fields, in export_json.

        Raises:
            ConvexApiError: e.g. 400 ``UnsupportedSchemaForExport`` for some schemas.
            MalformedResponse: not a map of components to maps of tables to objects.
        """
        schemas = parse_json_schemas(self._parsed(self.raw_json_schemas(), "json_schemas"))
        self._schemas, self._checked_selections = schemas, set()
        return schemas

    def raw_json_schemas(self) -> bytes:
        """The body of a ``json_schemas`` answer as the server sent it (unchecked).

        Raises:
            ConvexApiError, AuthenticationError, SourceUnavailable: as :meth:`json_schemas`.
        """
        return self._call(
            "GET",
            "json_schemas",
            params={"deltaSchema": "true", "byComponent": "true", "format": WIRE_FORMAT},
        )

    def get_table_column_names(self) -> dict[str, dict[str, list[str]]]:
        """``{component: {table: [column, ...]}}`` from ``get_table_column_names``.

        Raises:
            MalformedResponse: the answer is not ``{"byComponent": {path: [{name, columns}]}}``.
        """
        body = self._call("GET", "get_table_column_names")
        return parse_table_column_names(self._parsed(body, "get_table_column_names"))

    def list_snapshot(
        self,
        *,
        snapshot: int | None,
        cursor: str | None,
        selection: Selection | None,
    ) -> SnapshotPage:
        """One page of the consistent snapshot walk at ``snapshot`` (``None``: now).

        Raises:
            RetentionExpired: the snapshot is older than the server keeps (``SnapshotTooOld``).
            MalformedResponse: the page breaks the contract, or sends the walk in circles.
            ConvexApiError, AuthenticationError, SourceUnavailable: see the module docstring.
        """
        endpoint = "list_snapshot"
        self._check_field_names(selection)
        body = self.raw_list_snapshot(snapshot=snapshot, cursor=cursor, selection=selection)
        page = parse_snapshot_page(
            self._parsed(body, endpoint),
            len(body),
            request_snapshot=snapshot,
            request_cursor=cursor,
        )
        if snapshot is None:
            self._clock.observe(page.snapshot)  # an unpinned walk starts at the server's now
        self._snapshot_cursors.follow(
            request_snapshot=snapshot,
            request_cursor=cursor,
            snapshot=page.snapshot,
            cursor=page.cursor,
            has_more=page.has_more,
        )
        return page

    def raw_list_snapshot(
        self, *, snapshot: int | None, cursor: str | None, selection: Selection | None
    ) -> bytes:
        """The body of a ``list_snapshot`` answer as the server sent it (unchecked).

        Raises:
            ConvexApiError, AuthenticationError, SourceUnavailable: as :meth:`list_snapshot`.
        """
        body = {"snapshot": snapshot, "cursor": cursor, "format": WIRE_FORMAT}
        return self._call("POST", "list_snapshot", json_body=_with_selection(body, selection))

    def document_deltas(self, *, cursor: int, selection: Selection | None) -> DeltaPage:
        """One page of the change log after ``cursor`` (exclusive).

        Raises:
            RetentionExpired: the cursor is older than the document retention window.
            MalformedResponse: the page breaks the contract, its cursor does not move on
                or is ahead of the deployment's clock.
            ConvexApiError, AuthenticationError, SourceUnavailable: see the module docstring.
        """
        endpoint = "document_deltas"
        self._check_field_names(selection)
        body = self.raw_document_deltas(cursor=cursor, selection=selection)
        page = parse_delta_page(self._parsed(body, endpoint), len(body), request_cursor=cursor)
        if page.cursor != cursor:
            self._clock.check_cursor(page.cursor, endpoint=endpoint)
        return page

    def raw_document_deltas(self, *, cursor: int, selection: Selection | None) -> bytes:
        """The body of a ``document_deltas`` answer as the server sent it (unchecked).

        Raises:
            ConvexApiError, AuthenticationError, SourceUnavailable: as :meth:`document_deltas`.
        """
        body = {"cursor": cursor, "format": WIRE_FORMAT}
        return self._call("POST", "document_deltas", json_body=_with_selection(body, selection))

    # --- Data Sync --------------------------------------------------------------------

    def data_sync_available(self) -> bool:
        """Whether the deployment offers Data Sync: one ``list_active_syncs`` request,
        which reads no data and starts no sync.

        Raises:
            AuthenticationError: the key itself is refused.
            ConvexApiError, SourceUnavailable: any other failure.
        """
        try:
            self._call("GET", "v1/data/list_active_syncs", params={"limit": "1"})
        except ConvexApiError as error:
            if error.code in _KEY_CODES or error.code in _KEY_FORMAT_CODES:
                raise
            if error.status in (403, 404):
                return False  # an older backend, or a plan without Data Sync
            raise
        return True

    def data_sync(self, *, cursor: str | None, selection: Selection | None) -> DataSyncPage:
        """The next page of a data sync (``cursor`` ``None``: a new sync from scratch).

        Raises:
            RetentionExpired: the cursor is outside the deployment's retention.
            MalformedResponse: the page breaks the contract.
            ConvexApiError, AuthenticationError, SourceUnavailable: see the module docstring.
        """
        self._check_field_names(selection)
        body: dict[str, Any] = {} if cursor is None else {"cursor": cursor}
        raw = self._data_sync_call(DATA_SYNC_ENDPOINT, _with_selection(body, selection))
        return parse_data_sync_page(self._parsed(raw, DATA_SYNC_ENDPOINT), len(raw))

    def data_sync_cursor_from_deltas(self, *, cursor: int, selection: Selection | None) -> str:
        """The data sync cursor that continues exactly at the legacy delta ``cursor``.

        Raises:
            RetentionExpired: the cursor is outside the deployment's retention.
            MalformedResponse, ConvexApiError, AuthenticationError, SourceUnavailable.
        """
        body: dict[str, Any] = {"cursor": cursor}
        raw = self._data_sync_call(CONVERSION_ENDPOINT, _with_selection(body, selection))
        return parse_converted_cursor(self._parsed(raw, CONVERSION_ENDPOINT))

    def _data_sync_call(self, endpoint: str, body: Mapping[str, Any]) -> bytes:
        try:
            return self._call("POST", endpoint, json_body=body)
        except ConvexApiError as error:
            if error.status != 404 or type(error) is not ConvexApiError:
                raise
            raise ConvexApiError(
                endpoint=error.endpoint,
                status=error.status,
                code=error.code,
                server_message=error.server_message,
                hint=_NO_DATA_SYNC_HINT,
            ) from None

    def server_now(self) -> int:
        """The deployment's latest timestamp (ns), from a ``list_snapshot`` that selects
        nothing: its ``snapshot`` is the server's "now".

        Raises:
            MalformedResponse, ConvexApiError, AuthenticationError, SourceUnavailable.
        """
        return self._server_now()

    def _check_field_names(self, selection: Selection | None) -> None:
        """Once per selection: the selected fields of the last json_schemas answer."""
        if self._schemas is None:
            return
        wire = orjson.dumps(
            None if selection is None else selection.to_wire(), option=orjson.OPT_SORT_KEYS
        )
        if wire not in self._checked_selections:
            check_schema_field_names(self._schemas, selection)
            self._checked_selections.add(wire)

    def _server_now(self) -> int:
        endpoint = "list_snapshot"
        body: dict[str, Any] = {"snapshot": None, "cursor": None, "format": WIRE_FORMAT}
        body["selection"] = dict(_NOTHING_SELECTED)
        raw = self._call("POST", endpoint, json_body=body)
        return parse_snapshot_page(self._parsed(raw, endpoint), len(raw)).snapshot

    # --- transport ------------------------------------------------------------------

    def _call(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> bytes:
        """Send one request (with retries) and return the body of its 2xx answer."""
        url = f"{self._url}/api/{endpoint}"
        content = orjson.dumps(json_body) if json_body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None

        def attempt() -> bytes:
            deadline = _Deadline(self._request_timeout)
            try:
                request = self._http.build_request(
                    method, url, params=params, content=content, headers=headers
                )
                response = self._http.send(request, stream=True)
                try:
                    body = self._read_body(response, endpoint, deadline)
                finally:
                    deadline.cancel()
                    response.close()
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if deadline.expired:
                    raise TransientFailure(self._too_slow()) from None
                # Not chained: the transport error holds the request, headers included.
                raise TransientFailure(self._describe(exc)) from None
            except httpx.DecodingError as exc:
                raise MalformedResponse(
                    f"body could not be decoded ({type(exc).__name__})", endpoint=endpoint
                ) from None
            status = response.status_code
            if 200 <= status < 300:
                return body
            code, message = self._error_body(body)
            if is_transient_status(status):
                problem = f"HTTP {status}" + (f" {code}" if code else "")
                retry_after = (
                    parse_retry_after(response.headers.get("Retry-After"))
                    if status in (429, 503)
                    else None
                )
                raise TransientFailure(problem, retry_after=retry_after)
            raise self._api_error(endpoint, status, code, message, response.reason_phrase)

        return call_with_retries(
            attempt, policy=self._retry, endpoint=endpoint, target=url, sleep=self._sleep
        )

    def _read_body(self, response: httpx.Response, endpoint: str, deadline: _Deadline) -> bytes:
        """The whole body, within the deadline and the size limit.

        Read here rather than through ``response.content``: an httpx response and its
        stream refer to each other, so a body kept on the response (half a megabyte per
        page) would live until the next cyclic garbage collection instead of going as soon
        as the page is parsed.
        """
        limit = self._max_response_bytes
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise self._too_large(endpoint, int(length))
        # A server that drips its answer keeps every single read within the read timeout:
        # the deadline shuts the connection down under it.
        deadline.arm(response)
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > limit:
                raise self._too_large(endpoint, received)
            if deadline.expired:
                raise TransientFailure(self._too_slow())
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, endpoint: str, size: int) -> SourceError:
        return SourceError(
            f"{endpoint}: the answer is larger than {self._max_response_bytes / _MB:,.0f} MB "
            f"({size / _MB:,.0f} MB or more); it was not read",
            hint="nothing was written and the checkpoint did not move; raise --max-response-mb "
            "if this deployment really stores such large documents",
        )

    def _too_slow(self) -> str:
        return (
            f"no complete answer within {self._request_timeout:g} s (--request-timeout); "
            "the server is too slow or drips its answer"
        )

    @staticmethod
    def _parsed(body: bytes, endpoint: str) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MalformedResponse(
                f"HTTP 200 body is not JSON ({len(body)} bytes)", endpoint=endpoint
            ) from None

    def _describe(self, exc: httpx.HTTPError) -> str:
        detail = self._redact(str(exc))[:_MAX_SERVER_TEXT]
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__

    def _redact(self, text: str) -> str:
        return redact(text, *self._secrets)

    def _error_body(self, body: bytes) -> tuple[str | None, str]:
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return None, ""
        if isinstance(parsed, dict) and isinstance(parsed.get("code"), str):
            message = parsed.get("message")
            text = message if isinstance(message, str) else ""
            return parsed["code"], " ".join(self._redact(text).split())[:_MAX_SERVER_TEXT]
        return None, ""

    def _api_error(
        self, endpoint: str, status: int, code: str | None, message: str, reason: str
    ) -> ConvexApiError:
        """Map a final (non-retryable) HTTP answer to a typed error with a fix."""
        error_class, hint = classify_api_error(status, code, url=self._url, key_env=self._key_env)
        return error_class(
            endpoint=endpoint,
            status=status,
            code=code or f"HTTP{status}",
            server_message=message or reason or "no error body",
            hint=hint,
        )


def classify_api_error(
    status: int, code: str | None, *, url: str, key_env: str | None
) -> tuple[type[ConvexApiError], str]:
    """The error class and one-line fix for a final (non-retryable) Convex answer.

    The one place that decides what a 4xx means for the user: a key problem (exit 4),
    retention (exit 5) or anything else Convex refused (exit 3).
    """
    key_name = f"${key_env}" if key_env else "the deploy key"
    env_name = key_env or "CONVEX_DEPLOY_KEY"
    if code == "BadAdminKey" or (status == 401 and code is None):
        return AuthenticationError, (
            f"the key in {key_name} is not valid for {url}; create a deploy key "
            f"for this deployment in {_DASHBOARD_KEYS}"
        )
    if code == "BadDeployKey":
        return AuthenticationError, (
            f"no deploy key reached the server or it is not an admin key: set "
            f"{env_name} to a deploy key from {_DASHBOARD_KEYS}"
        )
    if code == "OperationNotPermitted":
        return AuthenticationError, (
            f"the key in {key_name} lacks the deployment:data:view permission; "
            f"use a deploy key that can read data ({_DASHBOARD_KEYS})"
        )
    if code == "StreamingExportNotEnabled":
        return AuthenticationError, (
            "this deployment's plan does not include streaming export; enable it "
            "(upgrade the plan) in the Convex dashboard"
        )
    if status in (401, 403) or code in _KEY_FORMAT_CODES:
        return AuthenticationError, (
            f"check that {key_name} holds a deploy key from {_DASHBOARD_KEYS}"
        )
    if code in _RETENTION_CODES:
        return RetentionExpired, (
            "run `convex-cdc sync --resnapshot` to start a new snapshot (nothing already "
            "landed is lost); sync more often than the deployment's retention window"
        )
    if status == 404:
        return ConvexApiError, (
            f"check --url/CONVEX_URL: {url} does not serve the Convex "
            "streaming-export API (expected https://<name>.convex.cloud)"
        )
    if 300 <= status < 400:
        return ConvexApiError, "check --url/CONVEX_URL: the deployment URL redirects elsewhere"
    return ConvexApiError, (
        "Convex refused the request; upgrade convex-cdc or report this with the "
        "deployment's Convex version"
    )


# --- request helpers ---------------------------------------------------------------


class _Deadline:
    """The end of one request's time: once passed, its connection is shut down, which
    ends a read that is waiting for the next byte."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds
        self._timer: threading.Timer | None = None
        self._fired = False

    @property
    def expired(self) -> bool:
        """Whether the request's time is up."""
        return self._fired or time.monotonic() >= self._ends

    def arm(self, response: httpx.Response) -> None:
        """Shut ``response``'s connection down when the time is up (real sockets only)."""
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return  # e.g. httpx.MockTransport: the check between chunks still applies
        remaining = max(0.0, self._ends - time.monotonic())
        self._timer = threading.Timer(remaining, self._shut_down, args=(sock,))
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        """The request is over: no shutdown."""
        if self._timer is not None:
            self._timer.cancel()

    def _shut_down(self, sock: socket.socket) -> None:
        self._fired = True
        with contextlib.suppress(OSError):  # already closed: the request ended meanwhile
            sock.shutdown(socket.SHUT_RDWR)


def _normalise_url(url: str) -> str:
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if (
        parsed is None
        or parsed.scheme not in ("http", "https")
        or not parsed.host
        or parsed.userinfo
        or parsed.query
        or parsed.fragment
    ):
        raise ConfigError(
            "the deployment URL is not an http(s) base URL without credentials, query or fragment",
            hint="pass --url https://<name>.convex.cloud (or set CONVEX_URL)",
        )
    return str(parsed).rstrip("/")


def _with_selection(body: dict[str, Any], selection: Selection | None) -> dict[str, Any]:
    if selection is not None:
        # A malformed selection is silently treated as "everything" by the server, so the
        # canonical object is checked once more on its way out.
        body["selection"] = _short_words(validate_selection(selection.to_wire()))
    return body


def _short_words(selection: Any) -> Any:
    """A selection object with ``included``/``excluded`` in their short forms."""
    if isinstance(selection, dict):
        return {key: _short_words(value) for key, value in selection.items()}
    return _SELECTION_WORDS.get(selection, selection) if isinstance(selection, str) else selection
