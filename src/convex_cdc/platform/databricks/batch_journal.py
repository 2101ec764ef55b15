"""The write-ahead journal of Data Sync batches: what completes a half-written batch.

A legacy batch that reached only some bronze tables before a crash is simply fetched
again: its pages come back identical, and the tables that already hold it skip it. A Data
Sync batch cannot be fetched again identically (the server decides per request whether
to walk a table or read its log), so before its per-table appends the bronze sink writes
the whole batch (every table's rows, in server order) to this journal in one Delta
commit, ``<warehouse>/<source>/_convex_cdc/journal``, with the batch's commit metadata
(:func:`~convex_cdc.platform.databricks.bronze.commit_metadata`: its tables and the
checkpoint it leads to). After a crash the batch is completed from here for the tables
that miss it (the appends stay idempotent through their application transactions) and
its checkpoint is adopted.

The journal is one Delta table: each batch is one append carrying the application
transaction ``(convex-cdc-journal:<deployment url>, batch_seq)``, checked and written
through the same ``DeltaTable`` (docs/delta-lake-notes.md §1), so a batch is journaled
at most once. An entry is only needed while bronze may miss part of its batch; the sink
deletes the entries of earlier batches when it journals the next one (each batch is its
own files, so the delete removes whole files) and vacuums them at once, so the journal
holds about one batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final, Literal

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from convex_cdc.core.checkpoint import SourceIdentity
from convex_cdc.core.errors import StateError
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA, ChangeBatch
from convex_cdc.platform.databricks.bronze_commit import (
    META_WIRE_FORMAT,
    BronzeCommit,
    commit_metadata,
    find_batch_commit,
)
from convex_cdc.platform.databricks.delta_errors import delta_errors
from convex_cdc.platform.databricks.delta_read import query
from convex_cdc.platform.databricks.warehouse import CONTROL_DIR, Warehouse
from convex_cdc.platform.databricks.writer_table import WriterTable

log = logging.getLogger(__name__)

ROW: Final = "_journal_row"
"""The position of a row in its batch: a read gives the rows back in server order."""

JOURNAL_SCHEMA: Final = RAW_CHANGE_LOG_SCHEMA.append(pa.field(ROW, pa.int64(), nullable=False))
"""The bronze envelope plus :data:`ROW`."""

_KINDS: Final = ("snapshot", "delta", "data-sync")


def journal_app_id(source: SourceIdentity) -> str:
    """The application id of the journal's appends."""
    return f"convex-cdc-journal:{source.deployment_url}"


@dataclass(frozen=True, slots=True)
class JournaledBatch:
    """A batch as the journal holds it: enough to write it to bronze again, identically."""

    batch: ChangeBatch
    commit: BronzeCommit


class BatchJournal:
    """The journal of one source of a warehouse.

    Args:
        warehouse: where ``_convex_cdc/journal`` lives.
        source: the deployment the batches come from (part of the application id).
    """

    def __init__(self, warehouse: Warehouse, source: SourceIdentity) -> None:
        self.warehouse = warehouse
        self.source = source
        self.location = warehouse.join(CONTROL_DIR, "journal")
        self._writer = WriterTable(self.location, warehouse, self._create)
        self._lowest: int | None = None
        """The lowest batch the journal may still hold (``None``: not known yet)."""
        self._empty = False
        """True once the journal is known to hold no rows."""

    def record(self, batch: ChangeBatch) -> None:
        """Journal ``batch`` (every table's rows) in one commit, unless it is there already.

        Raises:
            TargetError: the store refused the write or cannot be reached.
            StateError: the journal is damaged, or another writer journals this source.
        """
        metadata = commit_metadata(batch)
        metadata[META_WIRE_FORMAT] = batch.wire_format
        rows = batch.events.cast(RAW_CHANGE_LOG_SCHEMA).append_column(
            pa.field(ROW, pa.int64(), nullable=False),
            pa.array(range(batch.events.num_rows), pa.int64()),
        )
        app_id = journal_app_id(self.source)
        with delta_errors(f"journal batch {batch.seq} in {self.location}", state=True):
            table = self._writer.get(create=True)
            assert table is not None
            done = table.transaction_version(app_id)
            if done is not None and done >= batch.seq:
                return
            try:
                write_deltalake(
                    table,
                    rows,
                    mode="append",
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(app_id=app_id, version=batch.seq)],
                        custom_metadata=metadata,
                    ),
                )
            except CommitFailedError as exc:
                self._writer.forget()
                raise StateError(
                    f"could not journal batch {batch.seq} in {self.location}: another writer "
                    "committed first",
                    hint="run one extractor per source (the bundle's job has "
                    "max_concurrent_runs: 1)",
                ) from exc
            self._writer.committed()
        self._empty = False
        self._lowest = batch.seq if self._lowest is None else min(self._lowest, batch.seq)

    def entry(self, seq: int) -> JournaledBatch | None:
        """Batch ``seq`` as journaled, or ``None`` if the journal does not hold it.

        Raises:
            TargetError: the journal cannot be reached.
            StateError: the journal or its commit metadata is damaged.
        """
        with delta_errors(f"read batch {seq} from {self.location}", state=True):
            table = self._writer.get()
            if table is None:
                return None
            table.update_incremental()
            done = table.transaction_version(journal_app_id(self.source))
            if done is None or done < seq:
                return None
            rows = query(
                f'SELECT * FROM t WHERE "_batch" = {int(seq)} ORDER BY "{ROW}"',  # noqa: S608
                {"t": table},
                state=True,
            )
            if rows.num_rows == 0:
                return None  # deleted: its batch was complete in bronze
            commit = find_batch_commit(table, seq)
        if commit is None:
            raise StateError(
                f"{self.location} holds rows of batch {seq} but not its commit metadata",
                hint="the journal was changed by hand; restore it with Delta time travel",
            )
        return JournaledBatch(
            batch=ChangeBatch(
                seq=seq,
                kind=_kind(commit.kind, self.location),
                events=rows.drop_columns([ROW]).cast(RAW_CHANGE_LOG_SCHEMA),
                checkpoint=commit.checkpoint,
                snapshot_ts=commit.snapshot_ts,
                wire_format=commit.wire_format,
                response_bytes=0,
            ),
            commit=commit,
        )

    def drop_before(self, seq: int) -> None:
        """Delete the entries of batches before ``seq`` (whose bronze appends are all done)
        and vacuum their files at once (nothing else reads the journal).

        Raises:
            TargetError: the store refused the delete or cannot be reached.
            StateError: the journal is damaged.
        """
        if self._empty or (self._lowest is not None and self._lowest >= seq):
            return
        with delta_errors(f"delete settled batches from {self.location}", state=True):
            table = self._writer.get()
            if table is None:
                self._empty = True
                return
            if self._lowest is None:
                lowest = query('SELECT min("_batch") AS low FROM t', {"t": table}, state=True)
                self._lowest = lowest.column("low")[0].as_py()
                if self._lowest is None:
                    self._empty = True
                    return
                if self._lowest >= seq:
                    return
            try:
                table.delete(f'"_batch" < {int(seq)}')
                table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
            except CommitFailedError:
                self._writer.forget()  # another writer moved the table; try next time
                return
            self._writer.committed()
        self._lowest = None

    def _create(self) -> DeltaTable:
        return DeltaTable.create(
            self.location,
            JOURNAL_SCHEMA,
            mode="ignore",
            description="convex-cdc write-ahead journal of Data Sync batches",
            storage_options=self.warehouse.options(),
        )


def _kind(text: str, where: str) -> Literal["snapshot", "delta", "data-sync"]:
    for kind in _KINDS:
        if text == kind:
            return kind
    raise StateError(
        f"{where} holds a batch of unknown kind {text[:40]!r}",
        hint="the journal was written by a newer convex-cdc; upgrade",
    )
