"""The Delta commits that go through delta-rs: reading a table, and checkpoints.

:mod:`.delta_tables` writes an ordinary commit itself, without reading the table. A
table it cannot vouch for (no record of its version, a version that moved on, a schema
change) is opened here with delta-rs, compared with the wanted state and committed
through delta-rs. Loading ``deltalake`` costs noticeable CPU time, so this module is
imported only when one of these is needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

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

from convex_cdc.core.errors import TargetError
from convex_cdc.target_s3.publish.delta_tables import (
    CommitStamp,
    DeltaCommit,
    DeltaFile,
    TableOutcome,
    WantedTable,
    commit_metadata,
    delta_schema,
    file_stats,
    now_ms,
    table_configuration,
    table_description,
)
from convex_cdc.target_s3.publish.object_store import (
    DeltaLocation,
    no_space_left,
    quote_backend_error,
)


def checkpoint(location: DeltaLocation) -> None:
    """Write a Delta checkpoint of the table's latest version.

    Raises:
        TargetError: the store failed or the log is damaged.
    """
    with _delta_errors(f"checkpoint the Delta table {location.uri}", location):
        DeltaTable(location.uri, storage_options=location.storage_options).create_checkpoint()


def commit_after_reading(
    location: DeltaLocation, wanted: WantedTable, stamp: CommitStamp
) -> TableOutcome:
    """Open the table with delta-rs, compare its state with ``wanted``, commit the difference.

    Returns:
        The table's version afterwards, and the commit (``None`` when the table already
        held that state: nothing was written).

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
                description=table_description(wanted),
                configuration=table_configuration(stamp.retention),
                storage_options=location.storage_options,
                commit_properties=properties,
                post_commithook_properties=hooks,
            )
            commit = DeltaCommit(wanted.directory, 0, len(wanted.files), 0, schema_changed=True)
            return TableOutcome(wanted.directory, 0, commit)
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
            return TableOutcome(wanted.directory, table.version(), None)
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
            now = now_ms()
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
        commit = DeltaCommit(wanted.directory, table.version(), added, removed, schema_changed)
        return TableOutcome(wanted.directory, commit.version, commit)


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
        modification_time=now_ms(),
        data_change=True,
        stats=file_stats(file),
    )


def _commit_properties(stamp: CommitStamp) -> CommitProperties:
    return CommitProperties(
        custom_metadata=commit_metadata(stamp),
        app_transactions=[Transaction(stamp.app_id, stamp.sequence)],
    )


def _declare_retention(table: DeltaTable, retention: timedelta) -> None:
    """Bring the table's declared retention in line with this publish's (rarely changes)."""
    wanted = table_configuration(retention)
    current = table.metadata().configuration
    if any(current.get(k) != v for k, v in wanted.items()):
        table.alter.set_table_properties(wanted, raise_if_not_exists=False)
        table.update_incremental()  # the data commit that follows must build on this one


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
