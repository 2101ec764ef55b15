"""The raw change log: one parquet file per table per batch, append-only and replayable.

``raw_change_log/<table-dir>/batch=<seq:012d>.parquet`` holds one table's rows of one
batch, in server order, in :data:`~convex_cdc.core.events.RAW_CHANGE_LOG_SCHEMA`. The name
comes from the batch sequence, so a batch replayed after a crash overwrites its own files
instead of adding rows. After every table file is durable, the batch index
(:mod:`.batch_index`) is written; a batch without an index was never completed.

Parquet key-value metadata of each file:

=================================  =========================================================
``convex_cdc.wire_format``         value format the documents were fetched in
``convex_cdc.batch_seq``           the batch sequence, decimal
``convex_cdc.batch_kind``          ``snapshot`` or ``delta``
``convex_cdc.snapshot_ts``         the walk's timestamp; only on snapshot batches
``convex_cdc.schema_fingerprint``  this table's json_schemas fingerprint, when known
``convex_cdc.checkpoint``          JSON of the checkpoint this batch advances to
=================================  =========================================================
"""

from __future__ import annotations

import errno
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from convex_cdc.core.checkpoint_json import checkpoint_to_json
from convex_cdc.core.errors import TargetError
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA, ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3 import atomic_file
from convex_cdc.target_s3.io_errors import describe_os_error, io_errors, os_error_hint
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.raw.batch_index import (
    BatchIndex,
    BatchTableEntry,
    dumps_batch_index,
    loads_batch_index,
)
from convex_cdc.target_s3.table_paths import resolve_table_dir

RAW_ROW_GROUP_ROWS: Final = 64 * 1024
"""A batch holds about ``DEFAULT_BATCH_ROWS`` (16Ki) events, so a batch file is usually one
row group."""

RAW_ZSTD_LEVEL: Final = 1
"""Documents compress ~5x at level 1 already; higher levels cost more than they save."""

_DICTIONARY_COLUMNS: Final = ("_component", "_table", "_deleted", "_op", "_batch", "_snapshot_ts",
                              "_extracted_at")  # fmt: skip
"""Columns with a handful of values per file; ``_id`` and ``document`` are unique per row,
so a dictionary for them is built only to be thrown away."""

_STATISTICS_COLUMNS: Final = tuple(
    name for name in RAW_CHANGE_LOG_SCHEMA.names if name != "document"
)
"""Min/max of ``document`` text would be long, costly and useless for pruning."""

METADATA_PREFIX: Final = "convex_cdc."


def batch_file_name(seq: int) -> str:
    """``batch=<seq:012d>.parquet``."""
    return f"batch={seq:012d}.parquet"


class RawChangeLogSink:
    """A :class:`~convex_cdc.core.sink.Sink` writing the raw change log of ``layout``."""

    def __init__(self, layout: DestinationLayout) -> None:
        self.layout = layout
        # Checked once per table and sink: resolving follows every path component, and a
        # sync writes thousands of batches to the same few directories.
        self._table_dirs: dict[TableKey, Path] = {}

    def write(self, batch: ChangeBatch) -> None:
        """Write one parquet file per table, then the batch index; durable on return.

        Raises:
            TargetError: a table or component name is unsafe (nothing is written), or the
                disk refused a write (no partial file is left under a final name, and no
                index is written, so the batch counts as not written).
        """
        root = self.layout.raw_change_log
        keys = batch.tables()
        # Validate every name before the first byte lands.
        dirs = {key: self._table_dir(root, key) for key in keys}
        with io_errors(f"write raw change log batch {batch.seq} to {root}", then="run sync again"):
            self._write(batch, keys, dirs)

    def _write(
        self, batch: ChangeBatch, keys: Sequence[TableKey], dirs: Mapping[TableKey, Path]
    ) -> None:
        entries: list[BatchTableEntry] = []
        for key in keys:
            rows = batch.events_for(key)
            path = dirs[key] / batch_file_name(batch.seq)
            table = rows.replace_schema_metadata(_file_metadata(batch, key))
            self._durably(path, batch.seq, functools.partial(_write_parquet, table))
            entries.append(_entry(key, path, rows))
        index = BatchIndex(
            seq=batch.seq,
            kind=batch.kind,
            snapshot_ts=batch.snapshot_ts,
            wire_format=batch.wire_format,
            tables=tuple(entries),
            checkpoint=batch.checkpoint,
        )
        index_path = self.layout.batch_index / f"{batch.seq:012d}.json"
        payload = dumps_batch_index(index)
        self._durably(index_path, batch.seq, functools.partial(_write_bytes, payload))

    def _table_dir(self, root: Path, key: TableKey) -> Path:
        known = self._table_dirs.get(key)
        if known is None:
            known = self._table_dirs[key] = resolve_table_dir(root, key)
        return known

    def _durably(self, path: Path, seq: int, write: Callable[[BinaryIO], None]) -> None:
        try:
            atomic_file.atomic_write(path, write)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            hint = (
                "free disk space, then run sync again; the batch will be written again"
                if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                else "fix the destination's permissions or storage, then run sync again"
            )
            raise TargetError(
                f"could not write raw change log batch {seq} to {path}: {reason}",
                hint=f"{hint}; nothing already landed was lost",
            ) from exc


class RawChangeLog:
    """Read access to the raw change log of ``layout``, through batch indexes."""

    def __init__(self, layout: DestinationLayout) -> None:
        self.layout = layout

    def batch(self, seq: int) -> BatchIndex | None:
        """The index of batch ``seq``, ``None`` if that batch was never completed.

        Raises:
            StateError: the index exists but cannot be parsed.
            TargetError: the index cannot be read (permissions, a file where a directory
                belongs).
        """
        path = self.layout.batch_index / f"{seq:012d}.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TargetError(
                f"cannot read raw batch index {path}: {describe_os_error(exc)}",
                hint=os_error_hint(exc, then="run the command again"),
            ) from exc
        return loads_batch_index(raw, where=str(path))

    def committed_batches(self, after_seq: int, up_to_seq: int) -> list[BatchIndex]:
        """Indexes of the completed batches with ``after_seq < seq <= up_to_seq``, in order.

        Batch numbers can have gaps (a batch that was pending when a new snapshot began is
        skipped), so a missing number is not an error. Cost follows the size of the range,
        not the length of the log.
        """
        found = (self.batch(seq) for seq in range(after_seq + 1, up_to_seq + 1))
        return [index for index in found if index is not None]

    def table_file(self, key: TableKey, seq: int) -> Path:
        """Where batch ``seq``'s file for ``key`` lives (it may not exist)."""
        return resolve_table_dir(self.layout.raw_change_log, key) / batch_file_name(seq)

    def read_table_batches(
        self, key: TableKey, seqs: Iterable[int], *, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """The rows of ``key`` in batches ``seqs``, concatenated in the order given.

        Raises:
            TargetError: a file is missing or is not a raw change log file.
        """
        schema = RAW_CHANGE_LOG_SCHEMA
        if columns is not None:
            schema = pa.schema([schema.field(name) for name in columns])
        parts = [self._read_one(key, seq, schema) for seq in seqs]
        if not parts:
            return schema.empty_table()
        return pa.concat_tables(parts)

    def _read_one(self, key: TableKey, seq: int, schema: pa.Schema) -> pa.Table:
        path = self.table_file(key, seq)
        try:
            table = pq.read_table(path, columns=schema.names)
        except FileNotFoundError:
            raise TargetError(
                f"raw change log file {path} is missing although batch {seq} is indexed",
                hint="restore raw_change_log from a backup, or run `sync --resnapshot`",
            ) from None
        except (OSError, pa.ArrowInvalid) as exc:
            raise TargetError(
                f"cannot read raw change log file {path}: {exc}",
                hint="restore raw_change_log from a backup, or run `sync --resnapshot`",
            ) from None
        if not table.schema.equals(schema, check_metadata=False):
            raise TargetError(
                f"{path} does not have the raw change log columns",
                hint="remove files convex-cdc did not write from raw_change_log/",
            )
        return table.replace_schema_metadata(None)


def read_file_metadata(path: Path) -> dict[str, str]:
    """The ``convex_cdc.*`` key-value metadata of one raw file (prefix stripped)."""
    metadata = pq.read_schema(path).metadata or {}
    prefix = METADATA_PREFIX.encode()
    return {
        key[len(prefix) :].decode(): value.decode()
        for key, value in metadata.items()
        if key.startswith(prefix)
    }


def _file_metadata(batch: ChangeBatch, key: TableKey) -> dict[str, str]:
    checkpoint = batch.checkpoint
    metadata = {
        "wire_format": batch.wire_format,
        "batch_seq": str(batch.seq),
        "batch_kind": batch.kind,
        "checkpoint": json.dumps(checkpoint_to_json(checkpoint), sort_keys=True),
    }
    if batch.snapshot_ts is not None:
        metadata["snapshot_ts"] = str(batch.snapshot_ts)
    fingerprint = checkpoint.schema_fingerprints.get(key.qualified)
    if fingerprint is not None:
        metadata["schema_fingerprint"] = fingerprint
    return {METADATA_PREFIX + name: value for name, value in metadata.items()}


def _write_bytes(data: bytes, handle: BinaryIO) -> None:
    handle.write(data)


def _write_parquet(table: pa.Table, handle: BinaryIO) -> None:
    """Encode ``table`` in memory, then write it with one call: no Python callbacks while
    it is encoded (so other threads keep running), and one system call to land it."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=RAW_ZSTD_LEVEL,
        row_group_size=RAW_ROW_GROUP_ROWS,
        use_dictionary=list(_DICTIONARY_COLUMNS),
        write_statistics=list(_STATISTICS_COLUMNS),
    )
    handle.write(sink.getvalue())


def _entry(key: TableKey, path: Path, rows: pa.Table) -> BatchTableEntry:
    ts = pc.min_max(rows.column("_ts"))
    deletes = pc.sum(rows.column("_deleted").cast(pa.int64())).as_py() or 0
    return BatchTableEntry(
        key=key,
        dir=path.parent.name,
        file=path.name,
        rows=rows.num_rows,
        deletes=int(deletes),
        min_ts=int(ts["min"].as_py()),
        max_ts=int(ts["max"].as_py()),
    )
