"""The raw change log: one parquet file per table per batch, append-only and replayable.

``raw_change_log/<table-dir>/batch=<seq:012d>.parquet`` holds one table's rows of one
batch, in server order, in :data:`~convex_cdc.core.events.RAW_CHANGE_LOG_SCHEMA`. The name
comes from the batch sequence, so a batch replayed after a crash overwrites its own files
instead of adding rows. After every table file is durable, the batch index
(:mod:`.batch_index`) is written; a batch without an index was never completed.

A batch with an index is never overwritten: written again with the same events (the
replay of a batch whose checkpoint a crash did not save) it is left as it is; given other
events it is refused, since then the checkpoint is behind the log (see :mod:`.history`).
Readers check each file against its index (size, sha256, rows) and refuse a damaged one.

Parquet key-value metadata of each file:

=================================  =========================================================
``convex_cdc.wire_format``         value format the documents were fetched in
``convex_cdc.batch_seq``           the batch sequence, decimal
``convex_cdc.batch_kind``          ``snapshot``, ``delta`` or ``data-sync``
``convex_cdc.snapshot_ts``         the walk's timestamp; only on snapshot batches
``convex_cdc.schema_fingerprint``  this table's json_schemas fingerprint, when known
``convex_cdc.checkpoint``          JSON of the checkpoint this batch advances to
=================================  =========================================================
"""

from __future__ import annotations

import bisect
import errno
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.checkpoint_json import checkpoint_to_json
from convex_cdc.core.errors import StateError, TargetError
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA, ChangeBatch, Op
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
from convex_cdc.target_s3.raw.history import (
    DAMAGED_RAW_HINT,
    STALE_CHECKPOINT_HINT,
    differing_batch,
    predecessor,
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

_INDEX_FILE: Final = re.compile(r"(\d{12})\.json")


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
        # Numbers with an index, listed once: the sink is the log's only writer (sync lock).
        self._indexed: list[int] | None = None

    def write(self, batch: ChangeBatch) -> None:
        """Write one parquet file per table, then the batch index; durable on return.

        A batch whose index exists already is left alone if it holds the same events.

        Raises:
            StateError: the log already holds other events under this batch number (the
                checkpoint is behind the log); nothing is written.
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

    def committed_checkpoint(self, seq: int) -> Checkpoint | None:
        """The checkpoint batch ``seq`` leads to, if its index (written last) exists.

        Raises:
            StateError: the index exists but cannot be parsed.
            TargetError: the index cannot be read.
        """
        index = RawChangeLog(self.layout).batch(seq)
        return index.checkpoint if index is not None else None

    def _write(
        self, batch: ChangeBatch, keys: Sequence[TableKey], dirs: Mapping[TableKey, Path]
    ) -> None:
        indexed = self._indexed_batches()
        rows_of = {key: batch.events_for(key) for key in keys}
        planned = BatchIndex(
            seq=batch.seq,
            kind=batch.kind,
            snapshot_ts=batch.snapshot_ts,
            wire_format=batch.wire_format,
            tables=tuple(
                _entry(key, dirs[key] / batch_file_name(batch.seq), rows_of[key]) for key in keys
            ),
            checkpoint=batch.checkpoint,
            previous=predecessor(indexed, batch.seq),
        )
        position = bisect.bisect_left(indexed, batch.seq)
        if position < len(indexed) and indexed[position] == batch.seq:
            self._keep_committed(planned)
            return
        entries: list[BatchTableEntry] = []
        for entry in planned.tables:
            path = dirs[entry.key] / entry.file
            table = rows_of[entry.key].replace_schema_metadata(_file_metadata(batch, entry.key))
            digest = _Digest()
            self._durably(path, batch.seq, functools.partial(_write_parquet_hashed, table, digest))
            entries.append(replace(entry, bytes=digest.size, sha256=digest.hexdigest()))
        index = replace(planned, tables=tuple(entries))
        index_path = self.layout.batch_index / f"{batch.seq:012d}.json"
        payload = dumps_batch_index(index)
        self._durably(index_path, batch.seq, functools.partial(_write_bytes, payload))
        indexed.insert(position, batch.seq)

    def _indexed_batches(self) -> list[int]:
        if self._indexed is None:
            self._indexed = RawChangeLog(self.layout).batch_numbers()
        return self._indexed

    def _keep_committed(self, planned: BatchIndex) -> None:
        """Leave a batch that is already complete alone, if this is the same batch again.

        Raises:
            StateError: it holds other events, so it is not a replay.
        """
        existing = RawChangeLog(self.layout).batch(planned.seq)
        if existing is None:  # listed a moment ago, gone now: damage, not a replay
            raise StateError(
                f"raw batch index {self.layout.batch_index}/{planned.seq:012d}.json "
                "disappeared while sync ran",
                hint=DAMAGED_RAW_HINT,
            )
        if existing.same_batch(planned):
            return
        raise StateError(
            f"raw change log batch {planned.seq} already holds other changes than this run "
            f"would write there ({differing_batch(existing, planned)}): the checkpoint is "
            "behind the raw change log; nothing was overwritten",
            hint=STALE_CHECKPOINT_HINT,
        )

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


def remove_interrupted_writes(layout: DestinationLayout) -> int:
    """Delete the temporary files a killed sync left (raw files, indexes, the checkpoint).

    Only names :func:`~convex_cdc.target_s3.atomic_file.atomic_write` gives its temporary
    files are touched. Call it while holding the destination's ``sync`` lock. Returns how
    many were deleted.

    Raises:
        TargetError: a directory cannot be listed or a file cannot be deleted.
    """
    root = layout.raw_change_log
    with io_errors(f"clean up after an interrupted sync in {layout.root}", then="run sync again"):
        removed = atomic_file.remove_temp_files(layout.root)
        removed += atomic_file.remove_temp_files(layout.batch_index)
        if root.is_dir():
            for entry in os.scandir(root):
                if entry.is_dir(follow_symlinks=False):
                    removed += atomic_file.remove_temp_files(Path(entry.path))
    return removed


class RawChangeLog:
    """Read access to the raw change log of ``layout``, through batch indexes."""

    def __init__(self, layout: DestinationLayout) -> None:
        self.layout = layout

    def batch_numbers(self) -> list[int]:
        """Every batch number with an index, ascending (one directory listing).

        Raises:
            TargetError: the index directory cannot be listed.
        """
        directory = self.layout.batch_index
        try:
            names = [entry.name for entry in os.scandir(directory)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TargetError(
                f"cannot list {directory}: {describe_os_error(exc)}",
                hint=os_error_hint(exc, then="run the command again"),
            ) from exc
        return sorted(int(m.group(1)) for name in names if (m := _INDEX_FILE.fullmatch(name)))

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
        self,
        key: TableKey,
        batches: Iterable[int | BatchIndex],
        *,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """The rows of ``key`` in ``batches`` (numbers or their indexes), in the order given.

        Each file is checked against its batch index: its size and sha256 (indexes written
        before those were recorded: its row count only).

        Raises:
            StateError: a batch index is missing or unusable, or a file is missing, damaged
                (size, hash or row count differ from its index) or not a raw change log
                file.
            TargetError: a file cannot be read (permissions, I/O).
        """
        schema = RAW_CHANGE_LOG_SCHEMA
        if columns is not None:
            schema = pa.schema([schema.field(name) for name in columns])
        parts = [self._read_one(key, self._index(batch), schema) for batch in batches]
        if not parts:
            return schema.empty_table()
        return pa.concat_tables(parts)

    def _index(self, batch: int | BatchIndex) -> BatchIndex:
        if isinstance(batch, BatchIndex):
            return batch
        index = self.batch(batch)
        if index is None:
            raise StateError(
                f"raw batch index {self.layout.batch_index}/{batch:012d}.json is missing",
                hint=DAMAGED_RAW_HINT,
            )
        return index

    def _read_one(self, key: TableKey, index: BatchIndex, schema: pa.Schema) -> pa.Table:
        entry = index.entry(key)
        path = self.table_file(key, index.seq)
        if entry is None:
            raise StateError(
                f"raw batch {index.seq} has no file for {key.qualified}, yet it was asked for",
                hint=DAMAGED_RAW_HINT,
            )
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StateError(
                f"raw change log file {path} is missing although batch {index.seq} is indexed",
                hint=DAMAGED_RAW_HINT,
            ) from None
        except OSError as exc:
            raise TargetError(
                f"cannot read raw change log file {path}: {describe_os_error(exc)}",
                hint=os_error_hint(exc, then="run the command again"),
            ) from exc
        damage = _damage(data, entry)
        if damage is None:
            try:
                table = pq.read_table(pa.BufferReader(data), columns=schema.names)
            except (pa.ArrowInvalid, KeyError, ValueError) as exc:
                damage = f"it cannot be read as parquet: {exc}"
            else:
                if table.num_rows != entry.rows:
                    damage = f"it holds {table.num_rows} rows, its index records {entry.rows}"
                elif not table.schema.equals(schema, check_metadata=False):
                    damage = "it does not have the raw change log columns"
        if damage is not None:
            raise StateError(
                f"raw change log file {path} (batch {index.seq}) is damaged: {damage}",
                hint=DAMAGED_RAW_HINT,
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


def _damage(data: bytes, entry: BatchTableEntry) -> str | None:
    """What is wrong with a file's bytes against its index entry, ``None`` if nothing."""
    if entry.bytes is not None and len(data) != entry.bytes:
        return f"it is {len(data):,} bytes, its index records {entry.bytes:,}"
    if entry.sha256 is not None and hashlib.sha256(data).hexdigest() != entry.sha256:
        return "its sha256 differs from the one its index records"
    return None


class _Digest:
    """Size and sha256 of what goes through :meth:`wrap`."""

    def __init__(self) -> None:
        self.size = 0
        self._hash = hashlib.sha256()

    def wrap(self, handle: BinaryIO) -> BinaryIO:
        """A file object that writes to ``handle`` and counts and hashes what it writes."""
        return _DigestingWriter(handle, self)  # type: ignore[return-value]

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Count and hash ``data``."""
        view = memoryview(data)
        self.size += view.nbytes
        self._hash.update(view)

    def hexdigest(self) -> str:
        """Hex sha256 of everything written so far."""
        return self._hash.hexdigest()


class _DigestingWriter:
    """The little of a binary file object the writers use: ``write``."""

    def __init__(self, handle: BinaryIO, digest: _Digest) -> None:
        self._handle = handle
        self._digest = digest

    def write(self, data: bytes | bytearray | memoryview) -> int:
        written = self._handle.write(data)
        self._digest.update(data)
        return written


def _write_parquet_hashed(table: pa.Table, digest: _Digest, handle: BinaryIO) -> None:
    _write_parquet(table, digest.wrap(handle))


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
    """What one table's rows of a batch are, truncates and drops included (their ``_ts`` is 0)."""
    ts = pc.min_max(rows.column("_ts"))
    deletes = pc.sum(rows.column("_deleted").cast(pa.int64())).as_py() or 0
    ops = rows.column("_op")
    truncates = pc.sum(pc.equal(ops, Op.TRUNCATE.value).cast(pa.int64())).as_py()
    drops = pc.sum(pc.equal(ops, Op.DROP.value).cast(pa.int64())).as_py()
    return BatchTableEntry(
        key=key,
        dir=path.parent.name,
        file=path.name,
        rows=rows.num_rows,
        deletes=int(deletes),
        min_ts=int(ts["min"].as_py()),
        max_ts=int(ts["max"].as_py()),
        truncates=int(truncates or 0),
        drops=int(drops or 0),
    )
