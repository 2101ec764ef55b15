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
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import pyarrow as pa
from deltalake import DeltaTable, Schema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    PostCommitHookProperties,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)

from convex_cdc.core.columns import ColumnSpec
from convex_cdc.core.errors import TargetError
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.publish.manifest import ManifestTable
from convex_cdc.target_s3.publish.object_store import (
    DeltaLocation,
    no_space_left,
    quote_backend_error,
)
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


def commit_table(
    location: DeltaLocation, wanted: WantedTable, stamp: CommitStamp
) -> DeltaCommit | None:
    """Make the Delta table at ``location`` hold exactly ``wanted``, in one commit.

    Returns:
        The commit, or ``None`` when the table already held that state (nothing written).

    Raises:
        TargetError: the store failed, another writer committed concurrently, the table
            was committed for a newer manifest than this one, or its log is damaged.
    """
    schema = Schema.from_arrow(delta_schema(wanted.columns))
    properties = _commit_properties(stamp)
    hooks = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
    with _delta_errors(f"commit the Delta table {location.uri}", location):
        table = _open(location)
        if table is None:
            create_table_with_add_actions(
                location.uri,
                schema,
                [_add(f) for f in wanted.files],
                mode="error",
                name=wanted.qualified_name,
                description=f"Convex table {wanted.qualified_name}, published by convex-cdc",
                configuration=_configuration(stamp.retention),
                storage_options=location.storage_options,
                commit_properties=properties,
                post_commithook_properties=hooks,
            )
            return DeltaCommit(wanted.directory, 0, len(wanted.files), 0, schema_changed=True)
        committed_for = table.transaction_version(stamp.app_id)
        if committed_for is not None and committed_for > stamp.sequence:
            raise TargetError(
                f"the Delta table {location.uri} was committed for manifest {committed_for}, "
                f"newer than the manifest {stamp.sequence} this publish writes",
                hint="another publisher writes to this prefix, or its manifests were removed; "
                "publish each deployment from one place to its own prefix",
            )
        _declare_retention(table, stamp.retention)
        current = _active_files(table)
        wanted_names = {f.name for f in wanted.files}
        schema_changed = _fields(table.schema()) != _fields(schema)
        if not schema_changed and set(current) == wanted_names:
            return None
        if schema_changed:
            unchanged = wanted_names & set(current)
            if unchanged:
                raise TargetError(
                    f"the columns of {wanted.qualified_name} changed but "
                    f"{sorted(unchanged)[0]} did not",
                    hint="the staging state is damaged; rebuild staging, then publish again",
                )
            # Overwrite: delta-rs removes every current file and writes the new metadata.
            actions: list[AddAction | RemoveAction] = [_add(f) for f in wanted.files]
            mode = "overwrite"
        else:
            now = _now_ms()
            actions = [_add(f) for f in wanted.files if f.name not in current]
            actions += [
                RemoveAction(name, True, now, size, {})
                for name, size in current.items()
                if name not in wanted_names
            ]
            mode = "append"
        table.create_write_transaction(
            actions,
            mode,
            schema,
            commit_properties=properties,
            post_commithook_properties=hooks,
        )
        added = len(wanted_names - set(current)) if not schema_changed else len(wanted_names)
        removed = len(set(current) - wanted_names) if not schema_changed else len(current)
        return DeltaCommit(wanted.directory, table.version(), added, removed, schema_changed)


def _open(location: DeltaLocation) -> DeltaTable | None:
    try:
        return DeltaTable(location.uri, storage_options=location.storage_options)
    except TableNotFoundError:
        return None


def _active_files(table: DeltaTable) -> dict[str, int]:
    """The current version's files (name → size)."""
    # Through the Arrow C stream: ``pa.table()`` would first import pandas (~0.8 s).
    actions = pa.RecordBatchReader.from_stream(table.get_add_actions(flatten=True)).read_all()
    return dict(
        zip(
            actions.column("path").to_pylist(),
            actions.column("size_bytes").to_pylist(),
            strict=True,
        )
    )


def _fields(schema: Schema) -> list[tuple[str, Any, bool]]:
    """Name, type and nullability of each field (field metadata is not compared)."""
    data = json.loads(schema.to_json())
    return [(f["name"], f["type"], f["nullable"]) for f in data["fields"]]


def _add(file: DeltaFile) -> AddAction:
    return AddAction(
        path=file.name,
        size=file.bytes,
        partition_values={},
        modification_time=_now_ms(),
        data_change=True,
        stats=json.dumps({"numRecords": file.rows}),
    )


def _commit_properties(stamp: CommitStamp) -> CommitProperties:
    marker = {"manifest_sequence": stamp.sequence, "consistent_as_of_ts": stamp.consistent_as_of_ts}
    return CommitProperties(
        custom_metadata={
            SEQUENCE_KEY: stamp.sequence,
            CONSISTENT_AS_OF_KEY: stamp.consistent_as_of_ts,
            "userMetadata": json.dumps(marker, separators=(",", ":")),
        },
        app_transactions=[Transaction(stamp.app_id, stamp.sequence)],
    )


def _configuration(retention: timedelta) -> dict[str, str]:
    interval = f"interval {int(retention.total_seconds() // 3600)} hours"
    return {
        "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
        "delta.enableExpiredLogCleanup": "false",
        "delta.logRetentionDuration": interval,
        "delta.deletedFileRetentionDuration": interval,
    }


def _declare_retention(table: DeltaTable, retention: timedelta) -> None:
    """Bring the table's declared retention in line with this publish's (rarely changes)."""
    wanted = _configuration(retention)
    current = table.metadata().configuration
    if any(current.get(k) != v for k, v in wanted.items()):
        table.alter.set_table_properties(wanted, raise_if_not_exists=False)
        table.update_incremental()  # the data commit that follows must build on this one


def _now_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def _delta_errors(what: str, location: DeltaLocation) -> Iterator[None]:
    """delta-rs, pyarrow and OS errors → one-line :class:`TargetError`."""
    try:
        yield
    except TargetError:
        raise
    except CommitFailedError as exc:
        raise TargetError(
            f"cannot {what}: another writer committed first "
            f"({quote_backend_error(exc, *location.secrets)})",
            hint="make sure only one publish runs per prefix, then publish again",
        ) from exc
    except (DeltaError, OSError, pa.ArrowException) as exc:
        if no_space_left(exc):
            raise TargetError(
                f"cannot {what}: no space left on the target "
                f"({quote_backend_error(exc, *location.secrets)})",
                hint="free space on the target (or raise its quota), then publish again "
                "(readers still see the previous manifest)",
            ) from exc
        raise TargetError(
            f"cannot {what}: {quote_backend_error(exc, *location.secrets)}",
            hint="check the target URL, the credentials and the network, then publish again "
            "(readers still see the previous manifest)",
        ) from exc
