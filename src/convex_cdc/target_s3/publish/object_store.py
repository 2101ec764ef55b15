"""Where ``publish`` writes: an S3 bucket/prefix or a local directory, behind one small API.

Built on obstore (the Python binding of Rust's ``object_store``), which gives atomic puts
and create-only puts (``If-None-Match: *`` on S3) on every backend. Replacing an object
only if it is still the version read (:meth:`PublishTarget.put_unless`) uses ``If-Match``
on S3; obstore's local store has no such mode, so a local directory serialises the
read-compare-write under an ``flock`` of the directory itself. Paths are always
``/``-separated and relative to the target's prefix.

S3 credentials and region come from the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``); an explicit endpoint URL overrides the
environment, and an ``http://`` endpoint allows plain HTTP (MinIO, moto, a local gateway).
No error message ever contains a credential: messages are written here, and any
backend text that is quoted is redacted first.

The published Delta tables are written by delta-rs, which opens the store itself:
:meth:`PublishTarget.delta_location` hands it the same location, endpoint and HTTP
setting, and delta-rs reads the same AWS environment variables for credentials.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

import obstore
import obstore.exceptions as obs_errors
from obstore.store import LocalStore, S3Store

from convex_cdc.core.errors import ConfigError, TargetError, redact
from convex_cdc.core.secrets import redact_secrets
from convex_cdc.target_s3.io_errors import shorten

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

_MAX_RETRIES: Final = 4
"""Transient failures (5xx, dropped connections) are retried briefly; a wrong endpoint
should fail in seconds, not after object_store's default of three minutes."""
_RETRY_TIMEOUT: Final = timedelta(seconds=60)
_CONNECT_TIMEOUT: Final = timedelta(seconds=10)
_S3_CODE: Final = re.compile(r"<Code>([A-Za-z]+)</Code>")
_SECRET_VARIABLES: Final = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_NO_SPACE: Final = re.compile(
    r"os error (?:28|122)\b|StorageFull|No space left|Disk quota exceeded|"
    r"<Code>(?:XMinioStorageFull|QuotaExceeded|InsufficientStorage)</Code>",
    re.IGNORECASE,
)
"""How a full disk or quota shows in obstore's text: the OS error of a local store
(ENOSPC 28, EDQUOT 122), or the code an S3-compatible server answers with."""
_HTTP_STATUS: Final = re.compile(r"non-2xx status code: (\d{3})")
_CAS_ATTEMPTS: Final = 8
"""Conditional replacements retried after losing a race; more means a runaway writer."""
_QUOTED_URL: Final = 200


@dataclass(frozen=True, slots=True)
class DeltaLocation:
    """Where delta-rs finds one directory of the target, and how it reaches the store."""

    uri: str
    """``s3://bucket/prefix/<dir>`` or an absolute local path."""
    storage_options: dict[str, str]
    """delta-rs storage options: only the endpoint and plain-HTTP switch; credentials and
    region come from the same AWS environment variables the object store reads."""
    secrets: tuple[str, ...] = ()
    """Values that must never appear in a message (a password in the endpoint URL)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object, as listed."""

    path: str
    """Relative to the target's prefix."""
    size: int
    last_modified: datetime


class PublishTarget:
    """An object store location (bucket + prefix, or a directory) that publish writes to."""

    def __init__(
        self,
        store: S3Store | LocalStore,
        *,
        url: str,
        bucket: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        self._store = store
        self._url = url.rstrip("/")
        self._bucket = bucket
        self._endpoint = endpoint

    @property
    def url(self) -> str:
        """``s3://bucket/prefix`` or ``file:///dir``; never holds credentials."""
        return self._url

    @property
    def local_directory(self) -> Path | None:
        """The directory of a local target, ``None`` for S3."""
        if self._bucket is not None:
            return None
        return Path(url2pathname(urlsplit(self._url).path))

    @property
    def bucket(self) -> str | None:
        """The S3 bucket, ``None`` for a local directory."""
        return self._bucket

    @property
    def endpoint_password(self) -> str | None:
        """A password embedded in the endpoint URL, to keep out of messages."""
        return urlsplit(self._endpoint).password if self._endpoint else None

    def describe(self) -> str:
        """The target as a URL, without credentials (for messages and reports)."""
        if self._endpoint is None:
            return self._url
        return f"{self._url} (endpoint {_without_userinfo(self._endpoint)})"

    def url_of(self, path: str) -> str:
        """The URL of one object under the target (for messages and reports)."""
        return f"{self._url}/{path}"

    def delta_location(self, directory: str) -> DeltaLocation:
        """The location of ``directory`` (relative to the prefix) for delta-rs."""
        directory = directory.strip("/")
        if self._bucket is None:
            return DeltaLocation(url2pathname(urlsplit(f"{self._url}/{directory}").path), {})
        options: dict[str, str] = {}
        if self._endpoint:
            options["AWS_ENDPOINT_URL"] = self._endpoint.rstrip("/")
            if self._endpoint.lower().startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        secrets = tuple(s for s in (self.endpoint_password,) if s)
        return DeltaLocation(f"{self._url}/{directory}", options, secrets)

    def put(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path``, replacing any existing object, atomically.

        Raises:
            TargetError: the store refused or could not be reached.
        """
        with self._translate("write", path):
            obstore.put(self._store, path, data, mode="overwrite", use_multipart=False)

    def put_if_absent(self, path: str, data: bytes) -> bool:
        """Create ``path`` with ``data`` only if no object exists there.

        Returns:
            ``True`` if this call created the object, ``False`` if one already existed
            (it was left untouched).

        Raises:
            TargetError: the store refused or could not be reached.
        """
        with self._translate("write", path):
            try:
                obstore.put(self._store, path, data, mode="create")
            except obs_errors.AlreadyExistsError:
                return False
            except obs_errors.PreconditionError:
                return False  # some S3-compatible stores answer 412 without the mapping
        return True

    def put_unless(self, path: str, data: bytes, *, keep: Callable[[bytes], bool]) -> bool:
        """Write ``data`` to ``path`` unless the object there satisfies ``keep``, atomically.

        A compare-and-swap: the object is read, ``keep`` decides on its content, and the
        write happens only if the object is still the version that was read (``If-Match``
        its ETag on S3, create-only if there was none; on a local directory, both steps
        under an exclusive ``flock`` of the directory). A writer that lost the race reads
        again and decides again.

        Returns:
            ``True`` if ``data`` was written, ``False`` if the existing object was kept.

        Raises:
            TargetError: the store refused or could not be reached, or the object kept
                changing under this writer.
        """
        directory = self.local_directory
        if directory is not None:
            with self._translate("write", path), _directory_lock(directory):
                current = self.get(path)
                if current is not None and keep(current):
                    return False
                obstore.put(self._store, path, data, mode="overwrite", use_multipart=False)
                return True
        for _ in range(_CAS_ATTEMPTS):
            with self._translate("write", path):
                try:
                    found = obstore.get(self._store, path)
                    current, e_tag = bytes(found.bytes()), found.meta["e_tag"]
                except (FileNotFoundError, obs_errors.NotFoundError) as exc:
                    if _s3_code(exc) == "NoSuchBucket":
                        raise
                    current, e_tag = None, None
                if current is not None and keep(current):
                    return False
                try:
                    if current is None:
                        obstore.put(self._store, path, data, mode="create")
                    else:
                        obstore.put(self._store, path, data, mode={"e_tag": e_tag})
                except (obs_errors.AlreadyExistsError, obs_errors.PreconditionError):
                    continue  # another writer changed it between our read and our write
                return True
        raise TargetError(
            f"{self.url_of(path)} kept changing while this publish tried to replace it",
            hint="another publisher writes to this prefix; publish each destination to its "
            "own prefix",
        )

    def get(self, path: str) -> bytes | None:
        """The content of ``path``, or ``None`` if there is no such object.

        Raises:
            TargetError: the store refused or could not be reached (a missing bucket is an
                error, not a missing object).
        """
        with self._translate("read", path):
            try:
                return bytes(obstore.get(self._store, path).bytes())
            except (FileNotFoundError, obs_errors.NotFoundError) as exc:
                if _s3_code(exc) == "NoSuchBucket":
                    raise
                return None

    def head(self, path: str) -> ObjectInfo | None:
        """Size and modification time of ``path``, or ``None`` if there is no such object.

        Raises:
            TargetError: the store refused or could not be reached.
        """
        with self._translate("read", path):
            try:
                meta = obstore.head(self._store, path)
            except (FileNotFoundError, obs_errors.NotFoundError) as exc:
                if _s3_code(exc) == "NoSuchBucket":
                    raise
                return None
        return ObjectInfo(meta["path"], int(meta["size"]), meta["last_modified"])

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose path starts with the directory ``prefix`` (recursively).

        Raises:
            TargetError: the store refused or could not be reached.
        """
        with self._translate("list", prefix):
            listed = obstore.list(self._store, prefix.rstrip("/") or None).collect()
        return [ObjectInfo(m["path"], int(m["size"]), m["last_modified"]) for m in listed]

    def delete(self, paths: Sequence[str]) -> None:
        """Delete ``paths``; objects that are already gone are fine.

        Raises:
            TargetError: the store refused or could not be reached.
        """
        for path in paths:
            # Deleting is idempotent: a crashed GC may have removed it already.
            with (
                self._translate("delete", path),
                suppress(FileNotFoundError, obs_errors.NotFoundError),
            ):
                obstore.delete(self._store, path)

    @contextmanager
    def _translate(self, action: str, path: str) -> Iterator[None]:
        """Turn backend exceptions into one-line :class:`TargetError` with a fix."""
        try:
            yield
        except TargetError:
            raise
        except (obs_errors.BaseError, OSError) as exc:
            _raise_sink_error(exc, action=action, where=self.url_of(path), target=self)


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` itself (no lock file in the target)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def open_publish_target(
    url: str, *, endpoint_url: str | None = None, create: bool = True
) -> PublishTarget:
    """Open ``s3://bucket/prefix``, ``file:///abs/dir`` or a local path for publishing.

    A local directory is created if missing (unless ``create`` is false, for readers).
    Nothing is contacted yet for S3; the first operation reports a missing bucket, bad
    credentials or an unreachable endpoint.

    Raises:
        ConfigError: the URL is not one of the supported forms.
        TargetError: the local directory cannot be created.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("s3", "s3a"):
        return _open_s3(url, endpoint_url)
    if endpoint_url is not None:
        raise ConfigError(
            f"--endpoint-url only applies to s3:// targets, not {_quote_url(url)}",
            hint="drop --endpoint-url, or publish to s3://bucket/prefix",
        )
    if scheme == "file":
        path = Path(url2pathname(urlsplit(url).path))
        if not path.is_absolute() or urlsplit(url).netloc not in ("", "localhost"):
            raise ConfigError(
                f"{_quote_url(url)} is not an absolute file:// URL",
                hint="write file:///absolute/dir or just the directory path",
            )
    elif len(scheme) <= 1:  # a plain path (a one-letter scheme is a Windows drive)
        path = Path(url).expanduser().absolute()
    else:
        raise ConfigError(
            f"cannot publish to {_quote_url(url)}: unsupported scheme {shorten(repr(scheme), 40)}",
            hint="use s3://bucket/prefix (any S3-compatible endpoint via --endpoint-url), "
            "file:///abs/dir or a local directory",
        )
    if not create and not path.is_dir():
        raise TargetError(
            f"nothing is published at {path.as_uri()}: no such directory",
            hint="check the path, or publish there first",
        )
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        store = LocalStore(path, automatic_cleanup=True)
    except (OSError, obs_errors.BaseError) as exc:
        raise TargetError(
            f"cannot use {path} as a publish target: {_first_line(exc)}",
            hint="check the path and its permissions",
        ) from None
    return PublishTarget(store, url=path.as_uri())


def _open_s3(url: str, endpoint_url: str | None) -> PublishTarget:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ConfigError(
            "credentials do not belong in an s3:// URL",
            hint="set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment instead",
        )
    if not parts.netloc:
        raise ConfigError(f"{_quote_url(url)} names no bucket", hint="write s3://bucket/prefix")
    endpoint = (
        endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    config: S3Config = {}
    client: ClientConfig = {"connect_timeout": _CONNECT_TIMEOUT}
    retry: RetryConfig = {"max_retries": _MAX_RETRIES, "retry_timeout": _RETRY_TIMEOUT}
    if endpoint:
        config["endpoint"] = endpoint.rstrip("/")
        if endpoint.lower().startswith("http://"):
            client["allow_http"] = True
    prefix = parts.path.strip("/")
    try:
        store = S3Store(
            parts.netloc,
            prefix=prefix or None,
            config=config,
            client_options=client,
            retry_config=retry,
        )
    except obs_errors.BaseError as exc:
        raise ConfigError(
            f"cannot configure S3 access for s3://{parts.netloc}/{prefix}: {_quote(exc)}",
            hint="check the AWS_* environment variables and --endpoint-url",
        ) from None
    return PublishTarget(
        store, url=f"s3://{parts.netloc}/{prefix}", bucket=parts.netloc, endpoint=endpoint
    )


def _raise_sink_error(
    exc: BaseException, *, action: str, where: str, target: PublishTarget
) -> NoReturn:
    code = _s3_code(exc)
    if code == "NoSuchBucket":
        raise TargetError(
            f"bucket {target.bucket!r} does not exist ({target.describe()})",
            hint="create the bucket first, or fix the bucket name / --endpoint-url",
        ) from None
    if isinstance(
        exc,
        obs_errors.PermissionDeniedError | obs_errors.UnauthenticatedError | PermissionError,
    ) or code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}:
        raise TargetError(
            f"access denied to {action} {where}" + (f" ({code})" if code else ""),
            hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the role) and that it "
            "may read, write, list and delete under the prefix",
        ) from None
    text = _quote(exc, target.endpoint_password)
    if no_space_left(exc):
        raise TargetError(
            f"no space left to {action} {where}"
            + (f" ({code})" if code else " (the disk or quota is full)"),
            hint="free space on the target (or raise its quota), then publish again; readers "
            "still see the previous manifest",
        ) from None
    if "error sending request" in text or "Connect" in text or "dns error" in text:
        raise TargetError(
            f"cannot reach the object store to {action} {where}: network error",
            hint="check --endpoint-url / AWS_ENDPOINT_URL and the network, then publish "
            "again (a publish interrupted before its manifest changes nothing readers see)",
        ) from None
    status = _HTTP_STATUS.search(str(exc))
    if status is not None:
        # The store answered: URL, credentials and network work; the store said no.
        raise TargetError(
            f"the object store refused to {action} {where}: HTTP {status.group(1)}"
            + (f" {code}" if code else "")
            + f" ({text})",
            hint="the store rejected the request (quota, full disk on the server, object "
            "lock or bucket policy); fix that, then publish again",
        ) from None
    if isinstance(exc, OSError):
        raise TargetError(
            f"cannot {action} {where}: {text}",
            hint="check the target directory's disk and permissions, then publish again",
        ) from None
    raise TargetError(
        f"cannot {action} {where}: {text}",
        hint="check the target URL, the credentials and the network, then publish again",
    ) from None


def no_space_left(exc: BaseException) -> bool:
    """``exc`` says the disk or quota behind the target is full (any backend)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return _NO_SPACE.search(str(exc)) is not None


def _s3_code(exc: BaseException) -> str | None:
    match = _S3_CODE.search(str(exc))
    return match.group(1) if match else None


def _first_line(exc: BaseException) -> str:
    return shorten(str(exc).split("\n", 1)[0])


def _quote_url(url: str) -> str:
    """A URL someone typed, for a message: repr'd and cut short."""
    return shorten(repr(url), _QUOTED_URL)


def quote_backend_error(exc: BaseException, *secrets: str | None, limit: int = 300) -> str:
    """The first line of a backend's error text (delta-rs appends a backtrace), whitespace
    collapsed, cut short, with ``secrets`` and the AWS secret variables' values removed."""
    first = str(exc).split("\n", 1)[0] or type(exc).__name__
    return _quote(Exception(first), *secrets, limit=limit)


def _quote(exc: BaseException, *secrets: str | None, limit: int = 300) -> str:
    """The backend's own text, on one line, cut short, with any credential removed."""
    text = str(exc).split("\n\nDebug source", 1)[0]
    text = " ".join(text.split())
    text = redact(text, *secrets, *(os.environ.get(name) for name in _SECRET_VARIABLES))
    text = redact_secrets(text)
    return text if len(text) <= limit else text[:limit] + "…"


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
