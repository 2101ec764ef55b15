"""Bronze: one append-only CDC Delta table per Convex table, written idempotently.

Every row is one change event in a fixed envelope (:data:`BRONZE_SCHEMA`): the
raw_change_log columns under the same names (:data:`~convex_cdc.core.events.RAW_CHANGE_LOG_SCHEMA`),
the document as lossless ``export_json`` text. Key ``_id``,
sequence ``_ts`` (BIGINT ns), delete flag ``_deleted``. A fixed envelope means bronze
never needs schema evolution or type widening (which delta-rs cannot write); typed
columns are projected in silver (:mod:`.table_spec`).

Each append carries a Delta application transaction ``(app_id, batch_seq)`` with
``app_id = convex-cdc:<deployment url>:<component/table>``, and is skipped when that
table already committed the batch. The check and the write go through the *same*
``DeltaTable`` object: a concurrent writer that committed the same app id in between
makes our commit fail (``CommitFailedError``), after which we reload and check again
(docs/delta-lake-notes.md §1). Commit metadata carries the batch number,
the tables of the batch and the checkpoint the batch advances to, which is what lets
the control table recover a checkpoint save lost in a crash (:mod:`.control_table`,
:mod:`.bronze_commit`).

Truncates (``_op = 'truncate'``, ``_id = ''``, ``_ts = 0``, ``document`` null) are bronze
rows like any other: they mark where a table entered a Data Sync, and silver drops
everything of the table from earlier batches there. A Data Sync batch cannot be fetched
again identically, so before its per-table appends the whole batch goes to the
write-ahead journal (:mod:`.batch_journal`), from which a crash between two table
appends is completed (:meth:`BronzeSink.committed_checkpoint`).
"""

from __future__ import annotations

import logging
from typing import Final

import pyarrow as pa
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError

from convex_cdc.core.checkpoint import Checkpoint, SourceIdentity
from convex_cdc.core.errors import StateError, TargetError
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA, ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.append_log import APPEND_ONLY
from convex_cdc.platform.databricks.batch_journal import BatchJournal
from convex_cdc.platform.databricks.bronze_commit import commit_metadata, find_batch_commit
from convex_cdc.platform.databricks.delta_errors import delta_errors
from convex_cdc.platform.databricks.delta_read import open_table
from convex_cdc.platform.databricks.table_spec import TableSpecStore, observed_types
from convex_cdc.platform.databricks.warehouse import Warehouse, table_dir
from convex_cdc.platform.databricks.writer_table import WriterTable

log = logging.getLogger(__name__)

BRONZE_SCHEMA: Final = RAW_CHANGE_LOG_SCHEMA
"""The bronze envelope: exactly the raw_change_log columns, so one name means one thing in
raw, bronze and the rendered pipelines."""

_COMMIT_ATTEMPTS: Final = 3

BRONZE_WRITER: Final = WriterProperties(
    compression="ZSTD",
    compression_level=1,
    # Document texts and ids are (nearly) unique: a dictionary would only be discarded.
    column_properties={
        "document": ColumnProperties(dictionary_enabled=False),
        "_id": ColumnProperties(dictionary_enabled=False),
    },
)
"""Parquet settings of bronze files: zstd level 1 writes as fast as delta-rs's default
(snappy) and the files are ~40% smaller."""


def bronze_app_id(source: SourceIdentity, key: TableKey) -> str:
    """The Delta application id of ``key``'s bronze appends (stable per source + table)."""
    return f"convex-cdc:{source.deployment_url}:{key.component}/{key.table}"


def bronze_rows(events: pa.Table) -> pa.Table:
    """Change-event rows (raw_change_log layout) as bronze rows."""
    return events.cast(BRONZE_SCHEMA)


class BronzeSink:
    """Implements :class:`convex_cdc.core.sink.Sink` over bronze Delta tables.

    Args:
        warehouse: where the tables live.
        source: the deployment the batches come from (part of every app id).
        specs: the spec log to widen before each append (so the spec covers bronze).
    """

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
        self.commits = 0
        """Bronze commits written by this sink."""
        self.skipped = 0
        """Table appends skipped because the batch was already committed there."""
        self.rows = 0
        self.journal = BatchJournal(warehouse, source)
        """Where Data Sync batches are written ahead of their per-table appends."""
        self._tables: dict[TableKey, WriterTable] = {}

    def committed_checkpoint(self, seq: int) -> Checkpoint | None:
        """The checkpoint of batch ``seq`` if every table it wrote has committed it.

        A journaled Data Sync batch (:mod:`.batch_journal`) is first completed from the
        journal for the tables that miss it, so it always counts as committed.

        Raises:
            TargetError: a table or its history cannot be read, or an append failed.
            StateError: the spec log, the journal or a commit's metadata is damaged.
        """
        completed = self.complete_from_journal(seq)
        if completed is not None:
            return completed
        for key in self.specs.load():
            if self._committed_version(key) < seq:
                continue
            table = open_table(self.warehouse.bronze(key), self.warehouse)
            commit = find_batch_commit(table, seq) if table is not None else None
            if commit is None:
                continue
            complete = all(self._committed_version(t) >= seq for t in commit.tables)
            return commit.checkpoint if complete else None
        return None

    def complete_from_journal(self, seq: int) -> Checkpoint | None:
        """Append journaled batch ``seq`` to the tables that miss it; its checkpoint, or
        ``None`` if the journal does not hold the batch.

        Raises:
            TargetError: the journal cannot be read or an append failed.
            StateError: the journal or the spec log is damaged.
        """
        journaled = self.journal.entry(seq)
        if journaled is None:
            return None
        before = self.commits
        self._append_tables(journaled.batch)
        if self.commits > before:
            log.warning(
                "batch %d was journaled but reached only some bronze tables; completed %d "
                "from the journal",
                seq,
                self.commits - before,
            )
        return journaled.batch.checkpoint

    def _committed_version(self, key: TableKey) -> int:
        table = open_table(self.warehouse.bronze(key), self.warehouse)
        if table is None:
            return 0
        with delta_errors(f"read the transactions of {self.warehouse.bronze(key)}"):
            version = table.transaction_version(bronze_app_id(self.source, key))
        return version or 0

    def write(self, batch: ChangeBatch) -> None:
        """Append each table's events of ``batch`` unless that table already has the batch.

        A Data Sync batch is journaled first (see :mod:`.batch_journal`); journal entries
        of earlier batches, all complete in bronze by now, are deleted.

        Raises:
            TargetError: a table could not be created or appended to, or its log is damaged.
            StateError: the spec log or the journal is damaged, or the journal holds other
                events under this batch number (the batch must be adopted, not fetched again).
        """
        if batch.checkpoint.source != self.source:
            raise TargetError(
                f"batch {batch.seq} comes from {batch.checkpoint.source.deployment_url}, "
                f"but this sink writes source {self.warehouse.source_name!r} "
                f"({self.source.deployment_url})",
                hint="give each deployment its own source name (--source NAME)",
            )
        tables = batch.tables()
        for key in tables:
            table_dir(key)  # refuse a hostile name before anything is written
        if batch.kind == "data-sync" and tables:
            self._journal(batch)
        else:
            self.specs.widen(observed_types(batch.events))
        self._append_tables(batch)

    def _journal(self, batch: ChangeBatch) -> None:
        journaled = self.journal.entry(batch.seq)
        if journaled is not None and journaled.batch.checkpoint != batch.checkpoint:
            self._append_tables(journaled.batch)
            raise StateError(
                f"batch {batch.seq} was journaled with other events before a crash; it was "
                "completed from the journal and must be adopted, not fetched again",
                hint="run extract again: it adopts the journaled batch",
            )
        self.journal.drop_before(batch.seq)
        self.specs.widen(observed_types(batch.events))  # the spec covers the journal too
        self.journal.record(batch)

    def _append_tables(self, batch: ChangeBatch) -> None:
        metadata = commit_metadata(batch)
        for key in batch.tables():
            self._append(key, bronze_rows(batch.events_for(key)), batch.seq, metadata)

    def committed_batch(self, key: TableKey) -> int | None:
        """The last batch committed to ``key``'s bronze table (``None``: none yet).

        Raises:
            TargetError: the table cannot be read.
        """
        location = self.warehouse.bronze(key)
        table = open_table(location, self.warehouse)
        if table is None:
            return None
        with delta_errors(f"read the Delta table {location}"):
            return table.transaction_version(bronze_app_id(self.source, key))

    def _append(self, key: TableKey, rows: pa.Table, seq: int, metadata: dict[str, str]) -> None:
        location = self.warehouse.bronze(key)
        with delta_errors(f"append batch {seq} to the bronze table {location}"):
            self._append_with_retries(key, rows, seq, metadata)

    def _append_with_retries(
        self, key: TableKey, rows: pa.Table, seq: int, metadata: dict[str, str]
    ) -> None:
        app_id = bronze_app_id(self.source, key)
        writer = self._writer(key)
        for _ in range(_COMMIT_ATTEMPTS):
            # The check and the write go through the same object (see writer_table).
            table = writer.get(create=True)
            assert table is not None
            done = table.transaction_version(app_id)
            if done is not None and done >= seq:
                self.skipped += 1
                log.info("bronze %s already holds batch %d; skipped", key.qualified, seq)
                return
            try:
                write_deltalake(
                    table,
                    rows,
                    mode="append",
                    writer_properties=BRONZE_WRITER,
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(app_id=app_id, version=seq)],
                        custom_metadata=metadata,
                    ),
                )
            except CommitFailedError as exc:
                # Another writer committed first; re-read and decide again.
                log.warning(
                    "bronze %s: commit of batch %d conflicted (%s)", key.qualified, seq, exc
                )
                writer.forget()
                continue
            except OSError as exc:
                writer.forget()
                raise TargetError(
                    f"could not append batch {seq} to bronze {key.qualified}: {exc}",
                    hint="check the warehouse location and credentials, then run extract "
                    "again; nothing was lost",
                ) from exc
            writer.committed()
            self.commits += 1
            self.rows += rows.num_rows
            return
        raise TargetError(
            f"bronze {key.qualified}: batch {seq} kept conflicting with another writer",
            hint="run one extractor per source (the bundle's job has max_concurrent_runs: 1)",
        )

    def _writer(self, key: TableKey) -> WriterTable:
        writer = self._tables.get(key)
        if writer is None:
            location = self.warehouse.bronze(key)

            def create() -> DeltaTable:
                return DeltaTable.create(
                    location,
                    BRONZE_SCHEMA,
                    mode="ignore",
                    description=f"convex-cdc bronze CDC log of {key.qualified} "
                    f"from {self.source.deployment_url}",
                    configuration=APPEND_ONLY,
                    storage_options=self.warehouse.options(),
                )

            writer = self._tables[key] = WriterTable(location, self.warehouse, create)
        return writer
