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
the control table recover a checkpoint save lost in a crash (:mod:`.control_table`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final

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
from convex_cdc.core.checkpoint_json import checkpoint_from_json, checkpoint_to_json
from convex_cdc.core.errors import StateError, TargetError
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA, ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.append_log import APPEND_ONLY
from convex_cdc.platform.databricks.delta_errors import delta_errors
from convex_cdc.platform.databricks.delta_read import open_table
from convex_cdc.platform.databricks.table_spec import TableSpecStore, observed_types
from convex_cdc.platform.databricks.warehouse import Warehouse, table_dir
from convex_cdc.platform.databricks.writer_table import WriterTable

log = logging.getLogger(__name__)

BRONZE_SCHEMA: Final = RAW_CHANGE_LOG_SCHEMA
"""The bronze envelope: exactly the raw_change_log columns, so one name means one thing in
raw, bronze and the rendered pipelines."""

META_SOURCE: Final = "convex.source"
META_BATCH: Final = "convex.batch_seq"
META_KIND: Final = "convex.kind"
META_SNAPSHOT_TS: Final = "convex.snapshot_ts"
META_TABLES: Final = "convex.tables"
META_CHECKPOINT: Final = "convex.checkpoint"

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


@dataclass(frozen=True, slots=True)
class BronzeCommit:
    """What a bronze commit says about the batch it belongs to."""

    batch_seq: int
    tables: tuple[TableKey, ...]
    checkpoint: Checkpoint


def commit_metadata(batch: ChangeBatch) -> dict[str, str]:
    """The ``custom_metadata`` of every bronze commit of ``batch``."""
    return {
        META_SOURCE: batch.checkpoint.source.deployment_url,
        META_BATCH: str(batch.seq),
        META_KIND: batch.kind,
        META_SNAPSHOT_TS: "" if batch.snapshot_ts is None else str(batch.snapshot_ts),
        META_TABLES: json.dumps([t.qualified for t in batch.tables()]),
        META_CHECKPOINT: json.dumps(
            checkpoint_to_json(batch.checkpoint), sort_keys=True, separators=(",", ":")
        ),
    }


def batch_commit_from_history(entry: dict[str, Any]) -> BronzeCommit | None:
    """Decode one ``DeltaTable.history()`` entry written by :class:`BronzeSink`.

    Raises:
        StateError: the entry carries convex-cdc's batch metadata, but it cannot be decoded.
    """
    if META_BATCH not in entry or META_CHECKPOINT not in entry:
        return None
    try:
        return BronzeCommit(
            batch_seq=int(entry[META_BATCH]),
            tables=tuple(TableKey.parse(t) for t in json.loads(entry[META_TABLES])),
            checkpoint=checkpoint_from_json(
                json.loads(entry[META_CHECKPOINT]), where="bronze commit metadata"
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(
            f"bronze commit metadata of batch {entry.get(META_BATCH)!r} cannot be decoded: "
            f"{type(exc).__name__}: {exc}",
            hint="the commit was not written by this convex-cdc; extract into a fresh warehouse",
        ) from exc


def find_batch_commit(table: DeltaTable, batch_seq: int) -> BronzeCommit | None:
    """The metadata of ``table``'s commit of batch ``batch_seq``, if it has one.

    Looks at the most recent commits first (the batch wanted is almost always the last
    write), then at the whole history.

    Raises:
        TargetError: the history cannot be read.
        StateError: a commit's convex-cdc metadata cannot be decoded.
    """
    for limit in (8, None):
        with delta_errors(f"read the history of {table.table_uri.rstrip('/')}"):
            history = table.history(limit)
        for entry in history:
            commit = batch_commit_from_history(entry)
            if commit is not None and commit.batch_seq == batch_seq:
                return commit
    return None


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
        self._tables: dict[TableKey, WriterTable] = {}

    def write(self, batch: ChangeBatch) -> None:
        """Append each table's events of ``batch`` unless that table already has the batch.

        Raises:
            TargetError: a table could not be created or appended to, or its log is damaged.
            StateError: the spec log is damaged.
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
        self.specs.widen(observed_types(batch.events))
        metadata = commit_metadata(batch)
        for key in tables:
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
