"""Where the Databricks/delta target keeps its Delta tables, and how to reach them.

A warehouse is a local directory or an ``s3://bucket/prefix`` URI. It holds one or more
*sources* (Convex deployments), each in a directory of its own named by its source name
(:mod:`.source_name`)::

    <warehouse>/<source>/
      bronze/<table-dir>/                    one append-only CDC Delta table per Convex table
      silver/<table-dir>/                    current state, built by ``apply-silver``
      _convex_cdc/checkpoints/               control table: append-only checkpoint log
      _convex_cdc/table_specs/               typed-column spec log (drives silver + templates)
      _convex_cdc/silver_progress/           per silver table: last applied bronze batch
      _convex_cdc/silver_tombstones/<table-dir>/   deleted keys (``_id``, ``_ts``)
      _convex_cdc/journal/                   write-ahead journal of Data Sync batches

Sources share no Delta table, so two deployments with a ``messages`` table never collide,
every crash-recovery rule (application transactions, the control table's reconciliation,
``DestinationBusy`` for a second extractor) holds per source unchanged, and extractors of
different sources never contend. A :class:`Warehouse` is always one source's view of the
warehouse: every location it hands out is under ``<warehouse>/<source>/``.

``<table-dir>`` is the table name for the root component and ``<component path with "/"
→ ".">.<table>`` otherwise (the S3 target's rule). Names come from the server, so both
parts are checked against the Convex identifier grammar before they become a path.

S3 credentials come from the standard AWS environment variables (or an instance
profile, which delta-rs finds on its own); ``--endpoint-url`` or ``AWS_ENDPOINT_URL``
points at an S3-compatible store. delta-rs commits to S3 with conditional puts, so no
locking provider is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final
from urllib.parse import urlparse

from convex_cdc.core import names
from convex_cdc.core.errors import ConfigError, TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.credentials import CredentialSource
from convex_cdc.platform.databricks.source_name import SourceName

CONTROL_DIR: Final = "_convex_cdc"

_CREDENTIAL_OPTIONS: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

# Environment variable → delta-rs (object_store) storage option, for s3:// warehouses.
_AWS_ENV: Final[Mapping[str, str]] = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN": "AWS_SESSION_TOKEN",
    "AWS_PROFILE": "AWS_PROFILE",
    "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP": "AWS_ALLOW_HTTP",
}


@dataclass(frozen=True, slots=True)
class Warehouse:
    """One source's part of a warehouse, plus the options delta-rs needs to open its tables.

    The source name is part of the object, not of each call, so no table of one source
    can be opened through another source's warehouse by mistake.

    ``storage_options`` may hold credentials, so it is left out of ``repr``; never log it.
    ``credentials``, when set, supplies temporary S3 credentials that are asked for again
    each time a table is opened (they rotate; see :mod:`.credentials`).
    """

    root: str
    """The warehouse: an absolute local path, or ``s3://bucket/prefix`` without a
    trailing slash."""
    source_name: SourceName
    """The source whose tables live under ``<root>/<source_name>/``."""
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    credentials: CredentialSource | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        source_name: SourceName,
        endpoint_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Warehouse:
        """Parse ``--warehouse`` (a local path, ``file://`` allowed, or ``s3://bucket/prefix``)
        as seen by the source ``source_name``.

        Raises:
            ConfigError: another scheme, an S3 URI without a bucket, or an endpoint that is
                not an http(s) URL.
        """
        env = os.environ if env is None else env
        text = uri.strip()
        if not text:
            raise ConfigError("--warehouse is empty", hint="pass a directory or s3://bucket/prefix")
        parsed = urlparse(text)
        if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # "C:\..." on Windows
            path = parsed.path if parsed.scheme == "file" else text
            return cls(str(Path(path).expanduser().absolute()), source_name)
        if parsed.scheme not in ("s3", "s3a"):
            raise ConfigError(
                f"unsupported warehouse scheme {parsed.scheme!r} in {text!r}",
                hint="use a local directory or s3://bucket/prefix",
            )
        if not parsed.netloc:
            raise ConfigError(f"{text!r} names no bucket", hint="use s3://bucket/prefix")
        prefix = parsed.path.strip("/")
        root = f"s3://{parsed.netloc}" + (f"/{prefix}" if prefix else "")
        return cls(root, source_name, _s3_storage_options(env, endpoint_url))

    @property
    def is_local(self) -> bool:
        """True for a local directory."""
        return not self.root.startswith("s3://")

    def options(self) -> dict[str, str]:
        """A fresh copy of the storage options, as delta-rs wants them, with the current
        temporary credentials when a credential source is set (they win over static keys).

        Raises:
            TargetError: the credential source cannot supply credentials.
        """
        options = dict(self.storage_options)
        if self.credentials is not None:
            for name in _CREDENTIAL_OPTIONS:
                options.pop(name, None)
            options.update(self.credentials.storage_options())
        return options

    def with_credentials(self, source: CredentialSource) -> Warehouse:
        """This warehouse, with S3 credentials from ``source`` instead of static keys."""
        return replace(self, credentials=source)

    @property
    def location(self) -> str:
        """``<root>/<source_name>``: where every table of this source lives."""
        return f"{self.root}/{self.source_name}"

    def join(self, *parts: str) -> str:
        """``<root>/<source_name>/part/...`` (parts are trusted, already-validated names)."""
        return "/".join([self.location, *parts])

    def bronze(self, key: TableKey) -> str:
        """Location of the bronze CDC table of ``key``."""
        return self.join("bronze", table_dir(key))

    def silver(self, key: TableKey) -> str:
        """Location of the silver current-state table of ``key``."""
        return self.join("silver", table_dir(key))

    def tombstones(self, key: TableKey) -> str:
        """Location of the silver tombstone side table of ``key``."""
        return self.join(CONTROL_DIR, "silver_tombstones", table_dir(key))

    def holds_state(self, location: str) -> bool:
        """True for a table under ``_convex_cdc/`` (convex-cdc's own state, not data)."""
        state = self.join(CONTROL_DIR)
        return location == state or location.startswith(state + "/")

    @property
    def checkpoints(self) -> str:
        """Location of the control table (the checkpoint log)."""
        return self.join(CONTROL_DIR, "checkpoints")

    @property
    def table_specs(self) -> str:
        """Location of the typed-column spec log."""
        return self.join(CONTROL_DIR, "table_specs")

    @property
    def silver_progress(self) -> str:
        """Location of the silver apply progress log."""
        return self.join(CONTROL_DIR, "silver_progress")

    def __str__(self) -> str:
        return self.location


def table_dir(key: TableKey) -> str:
    """The directory name of ``key``'s table, validated so it cannot escape the warehouse.

    Raises:
        TargetError: the table or component name is not a Convex identifier.
    """
    try:
        return names.table_dir_name(key)
    except ValueError as exc:
        raise TargetError(str(exc), hint=_HINT) from None


def table_key_from_dir(name: str) -> TableKey:
    """Inverse of :func:`table_dir` (Convex identifiers never contain ``.``).

    Raises:
        TargetError: ``name`` is not a table directory name.
    """
    try:
        return names.table_key_from_dir_name(name)
    except ValueError as exc:
        raise TargetError(str(exc), hint=_HINT) from None


_HINT: Final = "this name did not come from a Convex deployment; check --url"


def _s3_storage_options(env: Mapping[str, str], endpoint_url: str | None) -> dict[str, str]:
    options = {option: env[var] for var, option in _AWS_ENV.items() if env.get(var)}
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    if endpoint_url:
        options["AWS_ENDPOINT_URL"] = endpoint_url
    endpoint = options.get("AWS_ENDPOINT_URL")
    if endpoint is not None:
        scheme = urlparse(endpoint).scheme
        if scheme not in ("http", "https"):
            raise ConfigError(
                f"S3 endpoint {endpoint!r} is not an http(s) URL",
                hint="pass --endpoint-url http(s)://host:port",
            )
        if scheme == "http":
            options.setdefault("AWS_ALLOW_HTTP", "true")
    return options
