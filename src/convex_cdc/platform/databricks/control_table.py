"""The control table: the source checkpoint as an append-only Delta log.

Each source of a warehouse has its own, ``<warehouse>/<source>/_convex_cdc/checkpoints``,
with one row per save; the row with the highest ``save_seq`` is the checkpoint. Each row
holds the checkpoint JSON (the form :mod:`convex_cdc.core.checkpoint_json` writes, as in
the S3 target's ``checkpoint.json``) plus flat columns for people and SQL (the source name
and its deployment URL, phase, cursors, ``batch_seq``, the snapshot walk and the first
batch of that walk, ``updated_at``). Blind appends never conflict, unlike MERGEs into one
small table (docs/delta-lake-notes.md §2); every append also carries the application
transaction ``(convex-cdc-control:<deployment url>, save_seq)``, checked and written
through the same ``DeltaTable`` (§1 there), so two extractors racing on one source fail
loudly instead of interleaving their checkpoints. Extractors of different sources write
different tables and never meet.

The first save binds the source name to its deployment URL: an extractor of another
deployment under the same name is refused (:meth:`DeltaCheckpointStore.load`), so a reused
or colliding name can never mix two deployments' changes in one bronze table.

The orchestrator saves a checkpoint only after every bronze append of its batch is
committed. A crash between the two leaves bronze one batch ahead of this table. On
start-up :meth:`DeltaCheckpointStore.load` reconciles: if batch ``batch_seq + 1`` is
committed in *every* table its commit metadata names, that batch was durable and only
the checkpoint save was lost, so its checkpoint is adopted (and written here, reason
``reconciled``). Otherwise the stored checkpoint is returned and the orchestrator replays
the batch; the replay carries the same events and tables that already hold it skip it.
A Data Sync batch cannot be replayed (its pages are not fetched again identically): one
that reached only some tables, or only the write-ahead journal, is completed from the
journal (:mod:`.batch_journal`) and then adopted the same way.

A Data Sync needs no "first batch of the walk": a table that enters the sync arrives with
a truncate row, which silver applies itself, so ``walk_first_batch`` only moves when a
legacy snapshot walk starts. The flat columns ``api``, ``sync_status``, ``sync_id`` and
``sync_cursor`` were added for Data Sync; rows saved before them read as null.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import pyarrow as pa
from deltalake import CommitProperties, Transaction
from deltalake.exceptions import CommitFailedError

from convex_cdc.core.checkpoint import (
    Checkpoint,
    DataSync,
    DeltaTail,
    InitialSnapshot,
    SourceIdentity,
)
from convex_cdc.core.checkpoint_json import checkpoint_from_json, checkpoint_to_json
from convex_cdc.core.errors import DestinationBusy, StateError, TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.append_log import AppendOnlyLog
from convex_cdc.platform.databricks.bronze import BronzeSink, bronze_app_id
from convex_cdc.platform.databricks.bronze_commit import find_batch_commit
from convex_cdc.platform.databricks.delta_errors import delta_errors
from convex_cdc.platform.databricks.delta_read import open_table, query
from convex_cdc.platform.databricks.source_name import SourceName
from convex_cdc.platform.databricks.table_spec import TableSpecStore
from convex_cdc.platform.databricks.warehouse import CONTROL_DIR, Warehouse

log = logging.getLogger(__name__)

CONTROL_SCHEMA: Final = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("deployment_url", pa.string(), nullable=False),
        pa.field("save_seq", pa.int64(), nullable=False),
        pa.field("phase", pa.string(), nullable=False),
        pa.field("snapshot_ts", pa.int64()),
        pa.field("snapshot_cursor", pa.string()),
        pa.field("delta_cursor", pa.int64()),
        pa.field("batch_seq", pa.int64(), nullable=False),
        pa.field("pending_batch_seq", pa.int64()),
        pa.field("walk_ts", pa.int64()),
        pa.field("walk_first_batch", pa.int64(), nullable=False),
        pa.field("consistent_as_of", pa.int64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("checkpoint", pa.string(), nullable=False),
        pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
        # Added with Data Sync (null in older rows).
        pa.field("api", pa.string()),
        pa.field("sync_status", pa.string()),
        pa.field("sync_id", pa.string()),
        pa.field("sync_cursor", pa.string()),
    ]
)
"""One row per save. The columns after ``updated_at`` came later; an older control table
gains them on its next save (``schema_mode="merge"``)."""


@dataclass(frozen=True, slots=True)
class ControlState:
    """The latest row of the control table."""

    save_seq: int
    checkpoint: Checkpoint
    walk_first_batch: int
    """The first ``batch_seq`` of the current snapshot walk: silver is built from bronze
    rows with ``_batch >= walk_first_batch`` (earlier walks were truncated-and-reloaded)."""
    reason: str

    @property
    def api(self) -> str:
        """``streaming-export`` (the legacy pair) or ``data-sync``."""
        return self.checkpoint.api

    @property
    def sync_status(self) -> str | None:
        """The Data Sync status (``snapshotting``, ``stale``, ``upToDate``), else ``None``."""
        position = self.checkpoint.position
        return position.status if isinstance(position, DataSync) else None

    @property
    def sync_id(self) -> str | None:
        """The server's name of the Data Sync, if any."""
        position = self.checkpoint.position
        return position.sync_id if isinstance(position, DataSync) else None


def control_app_id(source: SourceIdentity) -> str:
    """The application id of the control table's appends."""
    return f"convex-cdc-control:{source.deployment_url}"


def refuse_warehouse_without_sources(warehouse: Warehouse) -> None:
    """Refuse a warehouse written before it held sources (its control table at the root).

    Extracting into ``<warehouse>/<source>/`` beside it would start a second copy of the
    deployment from scratch and leave the first one's bronze and checkpoint orphaned.

    Raises:
        StateError: ``<warehouse>/_convex_cdc/checkpoints`` is a Delta table.
    """
    old = f"{warehouse.root}/{CONTROL_DIR}/checkpoints"
    if open_table(old, warehouse) is None:
        return
    raise StateError(
        f"{warehouse.root} holds a deployment at its top level (written by a convex-cdc "
        "from before a warehouse held sources)",
        hint=f"move bronze/, silver/ and {CONTROL_DIR}/ into {warehouse.location}/ and run "
        "again, or extract into a fresh warehouse",
    )


def read_control_state(warehouse: Warehouse) -> ControlState | None:
    """The latest control row of ``warehouse``'s source, or ``None`` if there is none.

    Raises:
        StateError: the control table is damaged, belongs to another source name (it was
            moved or copied), or the stored checkpoint JSON is not a usable checkpoint.
        TargetError: the warehouse cannot be reached.
    """
    table = open_table(warehouse.checkpoints, warehouse)
    if table is None:
        return None
    rows = query(
        'SELECT "source", "save_seq", "walk_first_batch", "reason", "checkpoint" FROM t '
        'ORDER BY "save_seq" DESC LIMIT 1',
        {"t": table},
        state=True,
    )
    if rows.num_rows == 0:
        return None
    row = rows.to_pylist()[0]
    where = f"the control table {warehouse.checkpoints}"
    if row["source"] != warehouse.source_name:
        raise StateError(
            f"{where} holds checkpoints of source {row['source']!r}, not {warehouse.source_name!r}",
            hint="the directory was moved or copied; put it back under "
            f"<warehouse>/{row['source']}, or extract into a fresh warehouse",
        )
    try:
        data = json.loads(row["checkpoint"])
    except ValueError:
        raise StateError(
            f"{where} holds a checkpoint that is not JSON",
            hint="restore the table to an earlier version (Delta time travel)",
        ) from None
    return ControlState(
        save_seq=row["save_seq"],
        checkpoint=checkpoint_from_json(data, where=where),
        walk_first_batch=row["walk_first_batch"],
        reason=row["reason"],
    )


class DeltaCheckpointStore:
    """Implements :class:`convex_cdc.core.sink.CheckpointStore` over the control table."""

    def __init__(
        self,
        warehouse: Warehouse,
        source: SourceIdentity,
        *,
        specs: TableSpecStore | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.source = source
        self.specs = specs or TableSpecStore(warehouse)
        self.reconciled = False
        """True once :meth:`load` adopted a checkpoint recovered from bronze."""
        self._log = AppendOnlyLog(
            warehouse,
            warehouse.checkpoints,
            CONTROL_SCHEMA,
            description="convex-cdc checkpoints (latest save_seq wins)",
            evolving=True,
        )
        self._latest: ControlState | None = None

    def load(self) -> Checkpoint | None:
        """The stored checkpoint, reconciled with the bronze transaction versions.

        Raises:
            StateError: the stored checkpoint or the control table is damaged, bronze
                holds batches the control table knows nothing about (it lost rows), or the
                source name already replicates another deployment.
            TargetError: the warehouse cannot be reached.
        """
        with delta_errors(f"load the checkpoint from {self.warehouse.checkpoints}", state=True):
            return self._load()

    def _load(self) -> Checkpoint | None:
        refuse_warehouse_without_sources(self.warehouse)
        self._latest = read_control_state(self.warehouse)
        stored = self._latest.checkpoint if self._latest is not None else None
        if stored is not None and stored.source != self.source:
            name = self.warehouse.source_name
            raise StateError(
                f"source {name!r} of {self.warehouse.root} replicates "
                f"{stored.source.deployment_url}, not {self.source.deployment_url}",
                hint=f"give this deployment a source name of its own (--source NAME), or "
                f"pass --url {stored.source.deployment_url} to extract source {name!r}",
            )
        adopted = self._reconcile(stored)
        if adopted is None:
            return stored
        log.warning(
            "batch %d was committed to bronze but its checkpoint was not saved; adopting it",
            adopted.batch_seq,
        )
        self._append(adopted, reason="reconciled")
        self.reconciled = True
        return adopted

    def save(self, checkpoint: Checkpoint) -> None:
        """Append ``checkpoint`` as the newest row.

        Raises:
            DestinationBusy: another process saved a checkpoint for this source since
                this one last read or wrote the table.
            StateError: the control table is damaged, or the append conflicted with
                another writer.
            TargetError: the warehouse refused the write or cannot be reached.
        """
        with delta_errors(f"save the checkpoint to {self.warehouse.checkpoints}", state=True):
            self._append(checkpoint, reason="save")

    def _reconcile(self, stored: Checkpoint | None) -> Checkpoint | None:
        durable = stored.batch_seq if stored is not None else 0
        versions: dict[TableKey, int] = {}
        for key in self.specs.load():
            table = open_table(self.warehouse.bronze(key), self.warehouse)
            if table is None:
                continue
            version = table.transaction_version(bronze_app_id(self.source, key))
            if version is not None:
                versions[key] = version
        ahead = max(versions.values(), default=0)
        if ahead <= durable:
            # A Data Sync batch may have reached the journal and no table yet.
            return self._sink().complete_from_journal(durable + 1)
        where = f"the control table {self.warehouse.checkpoints}"
        if ahead > durable + 1:
            # Bronze was read after the control table: another extractor of this source
            # may have saved and moved on in between, which is a race, not lost rows.
            latest = read_control_state(self.warehouse)
            known = self._latest.save_seq if self._latest is not None else 0
            self._refuse_if_saved_elsewhere(latest.save_seq if latest else None, known)
            raise StateError(
                f"{where} is at batch {durable}, but bronze already holds batch {ahead}",
                hint="the control table lost rows: restore it to its latest version with "
                "Delta time travel, or extract into a fresh warehouse",
            )
        holder = next(key for key, version in versions.items() if version == ahead)
        table = open_table(self.warehouse.bronze(holder), self.warehouse)
        commit = find_batch_commit(table, ahead) if table is not None else None
        if commit is None:
            return None
        missing = [t.qualified for t in commit.tables if versions.get(t, 0) < ahead]
        if not missing:
            return commit.checkpoint
        if commit.kind != "data-sync":
            log.info(
                "batch %d is in bronze for some tables only (missing: %s); it will be replayed",
                ahead,
                ", ".join(missing),
            )
            return None
        completed = self._sink().complete_from_journal(ahead)
        if completed is None:
            raise StateError(
                f"Data Sync batch {ahead} is in bronze for some tables only (missing: "
                f"{', '.join(missing)}) and not in the journal, so it cannot be completed",
                hint="extract again with --resnapshot (a Data Sync batch cannot be fetched "
                "again identically)",
            )
        return completed

    def _sink(self) -> BronzeSink:
        return BronzeSink(self.warehouse, self.source, specs=self.specs)

    def _refuse_if_saved_elsewhere(self, committed: int | None, known: int) -> None:
        if committed is not None and committed > known:
            raise DestinationBusy(
                f"another process saved a checkpoint to {self.warehouse.checkpoints} "
                f"(save {committed}) since this one read it (save {known})",
                hint=f"run one extractor per source (here {self.warehouse.source_name!r}; the "
                "bundle's job has max_concurrent_runs: 1); this run stopped without writing",
            )

    def _append(self, checkpoint: Checkpoint, *, reason: str) -> None:
        previous = self._latest
        if isinstance(checkpoint.position, DataSync):
            # Tables entering a Data Sync arrive with truncates, which silver applies
            # itself; its first save may follow its first batch, so nothing moves here.
            first = previous.walk_first_batch if previous is not None else 0
        elif previous is None or previous.checkpoint.snapshot_started_at != (
            checkpoint.snapshot_started_at
        ):
            # A new snapshot walk: the orchestrator saves it, pinned, before its first batch.
            first = checkpoint.batch_seq + 1
        else:
            first = previous.walk_first_batch
        # The check and the append go through the same object (see writer_table): if
        # another extractor saved since, the append fails instead of interleaving.
        table = self._log.writable()
        app_id = control_app_id(self.source)
        known = previous.save_seq if previous is not None else 0
        self._refuse_if_saved_elsewhere(table.transaction_version(app_id), known)
        save_seq = known + 1
        row = _control_row(
            checkpoint,
            source_name=self.warehouse.source_name,
            save_seq=save_seq,
            walk_first_batch=first,
            reason=reason,
        )
        try:
            self._log.append(
                row,
                through=table,
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id=app_id, version=save_seq)]
                ),
            )
        except TargetError as exc:
            if not isinstance(exc.__cause__, CommitFailedError):
                raise  # the store refused the write: a target problem, not a race
            latest = self._log.table()
            if latest is not None:
                self._refuse_if_saved_elsewhere(latest.transaction_version(app_id), known)
            raise StateError(
                f"could not save the checkpoint to {self.warehouse.checkpoints}: {exc.message}",
                hint=exc.hint,
            ) from exc
        self._latest = ControlState(save_seq, checkpoint, first, reason)


def _control_row(
    checkpoint: Checkpoint,
    *,
    source_name: SourceName,
    save_seq: int,
    walk_first_batch: int,
    reason: str,
) -> pa.Table:
    position = checkpoint.position
    snapshot_ts = position.snapshot if isinstance(position, InitialSnapshot) else None
    snapshot_cursor = position.cursor if isinstance(position, InitialSnapshot) else None
    delta_cursor = position.cursor if isinstance(position, DeltaTail) else None
    sync = position if isinstance(position, DataSync) else None
    row = {
        "source": source_name,
        "deployment_url": checkpoint.source.deployment_url,
        "save_seq": save_seq,
        "phase": checkpoint.phase,
        "snapshot_ts": snapshot_ts,
        "snapshot_cursor": snapshot_cursor,
        "delta_cursor": delta_cursor,
        "batch_seq": checkpoint.batch_seq,
        "pending_batch_seq": checkpoint.pending.batch_seq if checkpoint.pending else None,
        "walk_ts": checkpoint.snapshot_started_at,
        "walk_first_batch": walk_first_batch,
        "consistent_as_of": checkpoint.consistent_as_of,
        "reason": reason,
        "checkpoint": json.dumps(checkpoint_to_json(checkpoint), sort_keys=True),
        "updated_at": datetime.now(UTC),
        "api": checkpoint.api,
        "sync_status": sync.status if sync is not None else None,
        "sync_id": sync.sync_id if sync is not None else None,
        "sync_cursor": sync.cursor if sync is not None else None,
    }
    return pa.Table.from_pylist([row], schema=CONTROL_SCHEMA)
