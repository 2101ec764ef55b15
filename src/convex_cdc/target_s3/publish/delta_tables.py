"""Each published table is also a Delta Lake table, so any engine reads exactly one state.

The Delta table of a Convex table lives where its files already are,
``<to>/staging/<table-dir>/`` (the same directory a reader would point a glob at), with
its log in ``_delta_log/``. Publish uploads the content-named files first, then commits,
per table whose file set or columns changed, one Delta transaction whose add and remove
actions make the table's file set exactly the manifest's, and only then writes the
manifest. Nothing is copied: a Delta ``add`` action names a file that is already there.

Every commit carries, in its ``commitInfo``:

* ``convex_cdc.manifest_sequence`` and ``convex_cdc.consistent_as_of_ts``, so a reader
  can tell which manifest a Delta version equals (and ``userMetadata`` with both, which
  Spark's ``DESCRIBE HISTORY`` shows);
* an application transaction ``(app_id, version)``: ``app_id`` names the publishing
  deployment (one prefix holds one deployment, which publish enforces), ``version`` is
  the manifest sequence.

A publish interrupted after some commits and before its manifest is simply run again:
each table's Delta state is compared with the wanted one and only a difference is
committed, so a table already committed is left alone, and the transaction version says
which manifest sequence it was committed for.

Columns follow the manifest. A new column, or a type change (``int64`` widened to JSON
text), rewrites every file of the table in staging, so the commit that brings the new
files also replaces the table's schema (an ``overwrite`` commit: every old file removed,
every new file added, new metadata). Types map as ``json`` → ``string``; a column seen
only as null so far has no Delta type and is left out of the Delta schema until it gets
one (it holds no value; readers ignore the extra parquet column).

A table that leaves the manifest (dropped at the source) is committed empty: its files
are removed, its schema and history stay, so a registered external table keeps working
and reads zero rows.

Table properties: the log is checkpointed every :data:`CHECKPOINT_INTERVAL` commits;
delta-rs never deletes log entries (``delta.enableExpiredLogCleanup=false``), so every
version of every kept manifest stays in the log; ``delta.logRetentionDuration`` and
``delta.deletedFileRetentionDuration`` declare the retention publish's garbage collector
honours for data files (:mod:`.retention`), so another engine's ``VACUUM`` agrees.

The protocol stays reader 1 / writer 2 with no table features: every Delta reader can
read it (delta-rs, Spark/Databricks, Trino/Athena, Snowflake, DuckDB, Polars).

**Committing without reading the table.** Opening a table with delta-rs (listing and
replaying its log, then committing through it) costs several round trips per table, more
than uploading the table's files. So publish records, in ``<to>/delta_versions.json``
written after its commits and before its manifest, the Delta version each table was left
at. When that record belongs to the newest manifest, each table's Delta state is known
without reading anything: the version it names holds exactly that manifest's entry (every
later commit would belong to a later manifest sequence, and none was published). The
commit is then written directly as the next log entry, create-only (``If-None-Match`` on
S3, as delta-rs itself commits), so a table that moved on meanwhile (a publish killed
after its commits) makes the write fail instead of being overwritten; that table, a
schema change, and anything the record does not vouch for go through delta-rs as before.
A table with no record is created the same way, create-only at version 0. A checkpoint is
written through delta-rs every :data:`CHECKPOINT_INTERVAL` commits, as delta-rs's own
post-commit hook does. Everything that needs delta-rs is in :mod:`.delta_rs`, which is
imported only then: an ordinary publish does not even load ``deltalake``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from urllib.parse import quote

import pyarrow as pa

from convex_cdc import __version__
from convex_cdc.core.columns import ColumnSpec
from convex_cdc.core.errors import TargetError
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.publish.manifest import Manifest, ManifestTable, dumps_manifest
from convex_cdc.target_s3.publish.object_store import PublishTarget
from convex_cdc.target_s3.table_paths import table_dir_name

log = logging.getLogger(__name__)

STAGING_DIR: Final = "staging"
"""Published tables live under ``<to>/staging/<table-dir>/`` (files and Delta log)."""
DELTA_LOG_DIR: Final = "_delta_log"
CHECKPOINT_INTERVAL: Final = 10
"""A Delta checkpoint every this many commits keeps a reader's log replay short."""
SEQUENCE_KEY: Final = "convex_cdc.manifest_sequence"
"""``commitInfo`` key: the manifest sequence the commit makes the table equal to."""
CONSISTENT_AS_OF_KEY: Final = "convex_cdc.consistent_as_of_ts"
"""``commitInfo`` key: that manifest's ``consistent_as_of_ts`` (Convex ns)."""
_APP_ID_PREFIX: Final = "convex-cdc.publish:"
VERSIONS_PATH: Final = "delta_versions.json"
"""Under the prefix: the Delta version each table was left at by the last Delta publish."""
_VERSIONS_FORMAT: Final = "convex-cdc.delta-versions"
_PROTOCOL: Final = {"minReaderVersion": 1, "minWriterVersion": 2}
_DELTA_TYPES: Final = {
    ColumnType.STRING: "string",
    ColumnType.JSON: "string",
    ColumnType.INT64: "long",
    ColumnType.FLOAT64: "double",
    ColumnType.BOOL: "boolean",
    ColumnType.BINARY: "binary",
}
"""Delta primitive type names of the Arrow types :func:`delta_schema` uses."""


@dataclass(frozen=True, slots=True)
class DeltaFile:
    """One data file of a published table, relative to the table's directory."""

    name: str
    bytes: int
    rows: int


@dataclass(frozen=True, slots=True)
class WantedTable:
    """The state one published table's Delta table must have: its manifest entry."""

    directory: str
    """Relative to the publish prefix: ``staging/<table-dir>``."""
    qualified_name: str
    columns: tuple[ColumnSpec, ...]
    files: tuple[DeltaFile, ...]


@dataclass(frozen=True, slots=True)
class CommitStamp:
    """What every commit of one publish carries."""

    app_id: str
    sequence: int
    consistent_as_of_ts: int
    retention: timedelta
    """Declared as the table's log and deleted-file retention."""


@dataclass(frozen=True, slots=True)
class DeltaCommit:
    """One Delta commit a publish made."""

    directory: str
    version: int
    added: int
    removed: int
    schema_changed: bool


@dataclass(frozen=True, slots=True)
class KnownTable:
    """A table's Delta state as the newest manifest left it: its entry, at ``version``."""

    version: int
    columns: tuple[ColumnSpec, ...]
    files: tuple[DeltaFile, ...]


@dataclass(frozen=True, slots=True)
class TableOutcome:
    """Where one table's Delta table stands after this publish, and the commit if any."""

    directory: str
    version: int
    commit: DeltaCommit | None


def app_id_for(deployment_url: str) -> str:
    """The Delta application id of the publisher of ``deployment_url``'s tables."""
    return _APP_ID_PREFIX + deployment_url


def table_directory(table: ManifestTable) -> str:
    """``staging/<table-dir>``: where a manifest table's files and Delta log are.

    Raises:
        TargetError: the table's name is not a safe directory name.
    """
    return f"{STAGING_DIR}/{table_dir_name(table.key)}"


def wanted_table(table: ManifestTable, *, dropped: bool = False) -> WantedTable:
    """The Delta state that equals ``table``'s manifest entry (no files if ``dropped``).

    Raises:
        TargetError: a file of the table is not directly in the table's directory.
    """
    directory = table_directory(table)
    files = []
    for f in () if dropped else table.files:
        parent, _, name = f.path.rpartition("/")
        if parent != directory:
            raise TargetError(
                f"{f.path} is not in {directory}/, so it cannot be a file of the Delta table "
                f"of {table.key.qualified}",
                hint="the staging state is damaged; rebuild staging, then publish again",
            )
        files.append(DeltaFile(name, f.bytes, f.rows))
    return WantedTable(directory, table.key.qualified, table.columns, tuple(files))


def delta_schema(columns: tuple[ColumnSpec, ...]) -> pa.Schema:
    """The Arrow schema of the Delta table: ``json`` as string, null-only columns left out."""
    return pa.schema(
        [
            pa.field(c.name, c.type.arrow, nullable=c.nullable)
            for c in columns
            if c.type is not ColumnType.NULL
        ]
    )


def commit_blind(
    target: PublishTarget,
    wanted: WantedTable,
    stamp: CommitStamp,
    known: KnownTable | None,
) -> TableOutcome | None:
    """Commit on the recorded state (or create the table), writing only the log entry;
    a checkpoint is then due when ``(version + 1) % CHECKPOINT_INTERVAL == 0``.

    Returns ``None`` when the recorded state cannot be used: the next version already
    exists (the table moved on since the record), or the schema changed (the commit must
    replace the table's metadata). The caller then reads the table.
    """
    schema = delta_schema(wanted.columns)
    now = now_ms()
    wanted_names = {f.name for f in wanted.files}
    if known is None:
        version = 0
        actions: list[dict[str, Any]] = [
            _commit_info(stamp, now, "CREATE TABLE", {"mode": "ErrorIfExists"}),
            {"protocol": _PROTOCOL},
            {"metaData": _metadata(wanted, stamp, now)},
            *(_add_json(f, now) for f in wanted.files),
        ]
        commit = DeltaCommit(wanted.directory, 0, len(wanted.files), 0, schema_changed=True)
    else:
        if not delta_schema(known.columns).equals(schema):
            return None  # rare; delta-rs writes the overwrite with the new metadata
        current = {f.name: f.bytes for f in known.files}
        if set(current) == wanted_names:
            # Nothing to commit, if nothing was committed since the record either.
            if target.head(_log_entry(wanted.directory, known.version + 1)) is not None:
                return None
            return TableOutcome(wanted.directory, known.version, None)
        version = known.version + 1
        removed = [name for name in current if name not in wanted_names]
        actions = [
            _commit_info(
                stamp, now, "WRITE", {"mode": "Append", "partitionBy": "[]"}, blind=not removed
            ),
            *(_add_json(f, now) for f in wanted.files if f.name not in current),
            *(_remove_json(name, current[name], now) for name in removed),
        ]
        commit = DeltaCommit(
            wanted.directory,
            version,
            len(wanted_names - set(current)),
            len(removed),
            schema_changed=False,
        )
    actions.append({"txn": {"appId": stamp.app_id, "version": stamp.sequence, "lastUpdated": now}})
    body = "".join(json.dumps(a, separators=(",", ":")) + "\n" for a in actions).encode()
    # Create-only, as delta-rs commits: if the version exists the table is not where the
    # record says, and reading it decides instead.
    if not target.put_if_absent(_log_entry(wanted.directory, version), body):
        return None
    return TableOutcome(wanted.directory, version, commit)


def table_description(wanted: WantedTable) -> str:
    """The description of a published Delta table (both ways of committing write it)."""
    return f"Convex table {wanted.qualified_name}, published by convex-cdc"


def file_stats(file: DeltaFile) -> str:
    """The ``stats`` of a file's add action, the same from both ways of committing."""
    return json.dumps({"numRecords": file.rows})


def _log_entry(directory: str, version: int) -> str:
    return f"{directory}/{DELTA_LOG_DIR}/{version:020d}.json"


def _add_json(file: DeltaFile, now: int) -> dict[str, Any]:
    return {
        "add": {
            "path": quote(file.name),  # a URI reference, per the Delta protocol
            "partitionValues": {},
            "size": file.bytes,
            "modificationTime": now,
            "dataChange": True,
            "stats": file_stats(file),
        }
    }


def _remove_json(name: str, size: int, now: int) -> dict[str, Any]:
    return {
        "remove": {
            "path": quote(name),
            "dataChange": True,
            "deletionTimestamp": now,
            "extendedFileMetadata": True,
            "partitionValues": {},
            "size": size,
        }
    }


def _commit_info(
    stamp: CommitStamp,
    now: int,
    operation: str,
    parameters: dict[str, str],
    *,
    blind: bool = False,
) -> dict[str, Any]:
    """The ``commitInfo`` of a commit written directly: what delta-rs writes, same keys."""
    return {
        "commitInfo": {
            "timestamp": now,
            "operation": operation,
            "operationParameters": parameters,
            "isBlindAppend": blind,
            "engineInfo": f"convex-cdc/{__version__}",
            "clientVersion": f"convex-cdc-{__version__}",
            **commit_metadata(stamp),
        }
    }


def schema_string(columns: tuple[ColumnSpec, ...]) -> str:
    """The Delta ``schemaString`` of :func:`delta_schema`, as delta-rs writes it."""
    fields = [
        {"name": c.name, "type": _DELTA_TYPES[c.type], "nullable": c.nullable, "metadata": {}}
        for c in columns
        if c.type is not ColumnType.NULL
    ]
    return json.dumps({"type": "struct", "fields": fields}, separators=(",", ":"))


def _metadata(wanted: WantedTable, stamp: CommitStamp, now: int) -> Any:
    return {
        "id": str(uuid.uuid4()),
        "name": wanted.qualified_name,
        "description": table_description(wanted),
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema_string(wanted.columns),
        "partitionColumns": [],
        "configuration": table_configuration(stamp.retention),
        "createdTime": now,
    }


def read_known_tables(
    target: PublishTarget, latest: Manifest | None, stamp: CommitStamp
) -> dict[str, KnownTable]:
    """Each table's Delta state as ``latest`` left it, by directory, when it is on record.

    Only a record written for ``latest`` itself (its sequence and its exact content), by
    this publisher, with this retention, counts: any other (a publish killed before its
    manifest, one with ``--no-delta`` since, another publisher's manifest, a changed
    retention) leaves every table to be read. A damaged record counts as none.

    Raises:
        TargetError: the record could not be read.
    """
    if latest is None:
        return {}
    raw = target.get(VERSIONS_PATH)
    if raw is None:
        return {}
    try:
        record = json.loads(raw)
        if (
            record.get("format") != _VERSIONS_FORMAT
            or record.get("version") != 1
            or record.get("manifest_sequence") != latest.sequence
            or record.get("manifest_sha256") != _digest(latest)
            or record.get("app_id") != stamp.app_id
            or record.get("retention_seconds") != int(stamp.retention.total_seconds())
        ):
            return {}
        versions = {str(k): int(v) for k, v in dict(record["tables"]).items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("%s is damaged; every Delta table is read", target.url_of(VERSIONS_PATH))
        return {}
    known = {}
    for table in latest.tables:
        directory = table_directory(table)
        if directory in versions:
            state = wanted_table(table)
            known[directory] = KnownTable(versions[directory], state.columns, state.files)
    return known


def write_known_tables(
    target: PublishTarget, manifest: Manifest, stamp: CommitStamp, outcomes: list[TableOutcome]
) -> None:
    """Record where every table stands, for ``manifest``, which is about to be written.

    Raises:
        TargetError: the record could not be written.
    """
    record = {
        "format": _VERSIONS_FORMAT,
        "version": 1,
        "manifest_sequence": manifest.sequence,
        "manifest_sha256": _digest(manifest),
        "app_id": stamp.app_id,
        "retention_seconds": int(stamp.retention.total_seconds()),
        "tables": {o.directory: o.version for o in outcomes},
    }
    target.put(VERSIONS_PATH, (json.dumps(record, indent=2) + "\n").encode())


def _digest(manifest: Manifest) -> str:
    return hashlib.sha256(dumps_manifest(manifest)).hexdigest()


def commit_metadata(stamp: CommitStamp) -> dict[str, Any]:
    """The custom ``commitInfo`` entries every commit of one publish carries."""
    marker = {"manifest_sequence": stamp.sequence, "consistent_as_of_ts": stamp.consistent_as_of_ts}
    return {
        SEQUENCE_KEY: stamp.sequence,
        CONSISTENT_AS_OF_KEY: stamp.consistent_as_of_ts,
        "userMetadata": json.dumps(marker, separators=(",", ":")),
    }


def table_configuration(retention: timedelta) -> dict[str, str]:
    """The table properties publish declares (see the module docstring)."""
    interval = f"interval {int(retention.total_seconds() // 3600)} hours"
    return {
        "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
        "delta.enableExpiredLogCleanup": "false",
        "delta.logRetentionDuration": interval,
        "delta.deletedFileRetentionDuration": interval,
    }


def now_ms() -> int:
    """Now, in milliseconds since the epoch (Delta's timestamps)."""
    return int(time.time() * 1000)
