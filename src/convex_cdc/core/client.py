"""``ConvexClient``: the streaming-export HTTP API as a :class:`~convex_cdc.core.source.Source`.

One keep-alive ``httpx.Client`` per instance. Every request carries
``Authorization: Convex <key>`` and ``Convex-Client: convex-cdc-<version>`` and asks for
the lossless ``export_json`` format. ``list_snapshot`` and ``document_deltas`` are POSTs
with a JSON body, so a full selection object can travel with them.

Answers are checked strictly against the contract before anything downstream sees them
(:class:`MalformedResponse` names the endpoint and the problem). Transient failures are
retried (see :mod:`convex_cdc.core.retry`); Convex's ``{code, message}`` errors become
typed errors with a one-line fix. The key never leaves this object: ``repr``/``str``
show the URL only, server text is redacted before it enters an exception, and log lines
name the endpoint, never a URL with a query or a header.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final

import httpx
import orjson

from convex_cdc import __version__
from convex_cdc.core.errors import (
    AuthenticationError,
    ConfigError,
    ConvexApiError,
    MalformedResponse,
    RetentionExpired,
    redact,
)
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
from convex_cdc.core.selection import Selection, validate_selection
from convex_cdc.core.source import WIRE_FORMAT, DeltaPage, SnapshotPage

CLIENT_ID: Final = f"convex-cdc-{__version__}"
"""The ``Convex-Client`` header value (``<name>-<semver>``, as the server requires)."""

DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=15.0, read=330.0, write=60.0, pool=30.0)
"""Convex gives up on a request after 300 s (then answers 408); a snapshot page of
1024 large documents can take most of that, so reads wait a little longer than the server."""

_KEY_CHARS: Final = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: header-safe
_MAX_SERVER_TEXT: Final = 300
_DASHBOARD_KEYS: Final = "the Convex dashboard → Settings → Deploy keys"
_KEY_FORMAT_CODES: Final = frozenset(
    {"InvalidAdminKey", "HeaderParseFailure", "InvalidHeaderFailure"}
)
_RETENTION_CODES: Final = frozenset({"InvalidWindowToReadDocuments", "SnapshotTooOld"})


class ConvexClient:
    """A Convex deployment's streaming-export API over HTTP.

    Args:
        deployment_url: e.g. ``https://happy-animal-123.convex.cloud``.
        deploy_key: a deploy key with ``deployment:data:view``.
        key_env: the environment variable the key came from, named in error hints.
        timeout: seconds, or an ``httpx.Timeout``; the default reads for up to 330 s.
        retry: the budget for transient failures.
        transport: an ``httpx`` transport (``httpx.MockTransport`` in tests).
        sleep: how to wait between retries (injectable for tests).

    Raises:
        ConfigError: the URL is not an http(s) base URL, or the key cannot be sent.
    """

    def __init__(
        self,
        deployment_url: str,
        deploy_key: str,
        *,
        key_env: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
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
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
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
        body, _ = self._call(
            "GET",
            "json_schemas",
            params={"deltaSchema": "true", "byComponent": "true", "format": WIRE_FORMAT},
        )
        return parse_json_schemas(body)

    def get_table_column_names(self) -> dict[str, dict[str, list[str]]]:
        """``{component: {table: [column, ...]}}`` from ``get_table_column_names``.

        Raises:
            MalformedResponse: the answer is not ``{"byComponent": {path: [{name, columns}]}}``.
        """
        body, _ = self._call("GET", "get_table_column_names")
        return parse_table_column_names(body)

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
            MalformedResponse: the page breaks the contract.
            ConvexApiError, AuthenticationError, SourceUnavailable: see the module docstring.
        """
        endpoint = "list_snapshot"
        body = {"snapshot": snapshot, "cursor": cursor, "format": WIRE_FORMAT}
        data, size = self._call("POST", endpoint, json_body=_with_selection(body, selection))
        return parse_snapshot_page(data, size)

    def document_deltas(self, *, cursor: int, selection: Selection | None) -> DeltaPage:
        """One page of the change log after ``cursor`` (exclusive).

        Raises:
            RetentionExpired: the cursor is older than the document retention window.
            MalformedResponse: the page breaks the contract.
            ConvexApiError, AuthenticationError, SourceUnavailable: see the module docstring.
        """
        endpoint = "document_deltas"
        body = {"cursor": cursor, "format": WIRE_FORMAT}
        data, size = self._call("POST", endpoint, json_body=_with_selection(body, selection))
        return parse_delta_page(data, size)

    # --- transport ------------------------------------------------------------------

    def _call(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> tuple[Any, int]:
        """Send one request (with retries) and return the parsed body and its size."""
        url = f"{self._url}/api/{endpoint}"
        content = orjson.dumps(json_body) if json_body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None

        def attempt() -> tuple[Any, int]:
            try:
                request = self._http.build_request(
                    method, url, params=params, content=content, headers=headers
                )
                response = self._http.send(request, stream=True)
                try:
                    # Read here rather than through ``response.content``: an httpx response
                    # and its stream refer to each other, so a body kept on the response
                    # (half a megabyte per page) would live until the next cyclic garbage
                    # collection instead of going as soon as the page is parsed.
                    body = b"".join(response.iter_bytes())
                finally:
                    response.close()
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                # Not chained: the transport error holds the request, headers included.
                raise TransientFailure(self._describe(exc)) from None
            except httpx.DecodingError as exc:
                raise MalformedResponse(
                    f"body could not be decoded ({type(exc).__name__})", endpoint=endpoint
                ) from None
            status = response.status_code
            if 200 <= status < 300:
                try:
                    return orjson.loads(body), len(body)
                except orjson.JSONDecodeError:
                    raise MalformedResponse(
                        f"HTTP {status} body is not JSON ({len(body)} bytes)", endpoint=endpoint
                    ) from None
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
        body["selection"] = validate_selection(selection.to_wire())
    return body
