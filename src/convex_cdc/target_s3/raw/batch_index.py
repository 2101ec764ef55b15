"""The per-batch index of the raw change log: ``raw_change_log/_batches/<seq:012d>.json``.

Written after every table file of the batch is durable, so an index names only complete
files. Readers (the staging materializer, publish) list a batch's tables through it and
never scan table directories. Shape::

    {"format": "convex-cdc.raw-batch", "version": 1,
     "seq": 42, "kind": "delta", "snapshot_ts": null, "wire_format": "export_json",
     "previous": 41,
     "tables": [{"component": "", "table": "messages", "dir": "messages",
                 "file": "batch=000000000042.parquet",
                 "rows": 17, "deletes": 2, "min_ts": 1..., "max_ts": 1...,
                 "bytes": 5123, "sha256": "…"}],
     "checkpoint": {...the checkpoint this batch advances to...}}

A table's file is ``raw_change_log/<dir>/<file>`` under the destination root. ``kind`` is
``snapshot``, ``delta`` or ``data-sync``. A data-sync batch may open a table's rows with a
truncate (``_op`` ``truncate``, ``_ts`` 0); its entry then records ``"truncates": 1``
(absent when 0, so indexes of other batches are as they always were), and ``min_ts`` is 0:
``rows``, ``deletes`` and the ``_ts`` range describe the file's rows, truncates included.
A batch that drops a table (it left the source) holds only drop rows (``_op`` ``drop``,
``_ts`` 0); their entry records ``"drops": 1`` the same way.

``previous`` is the batch before this one in the log (``0``: none). Numbers may be
skipped (a new snapshot walk or data sync skips the number of a batch a crash may have left
unsaved), so only this link tells a skipped number from a lost index. ``bytes`` and
``sha256`` let a reader tell a damaged file from the one the batch wrote. Indexes written
before these fields existed lack them; readers then check what they can.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.checkpoint_json import checkpoint_from_json, checkpoint_to_json
from convex_cdc.core.errors import StateError
from convex_cdc.core.events import BatchKind
from convex_cdc.core.names import TableKey

BATCH_INDEX_FORMAT: Final = "convex-cdc.raw-batch"
BATCH_INDEX_VERSION: Final = 1
_KINDS: Final[tuple[BatchKind, ...]] = ("snapshot", "delta", "data-sync")


@dataclass(frozen=True, slots=True)
class BatchTableEntry:
    """One table's file in a raw batch."""

    key: TableKey
    dir: str
    file: str
    """The file name inside ``raw_change_log/<dir>/``."""
    rows: int
    deletes: int
    min_ts: int
    max_ts: int
    bytes: int | None = None
    """Size of the file as written (``None`` in indexes older than this field)."""
    sha256: str | None = None
    """Hex sha256 of the file as written (``None`` in indexes older than this field)."""
    truncates: int = 0
    """Truncate rows among ``rows`` (data-sync batches only; they come first in the file)."""
    drops: int = 0
    """Drop rows among ``rows`` (the table left the source; a drop batch holds nothing else)."""

    def same_rows(self, other: BatchTableEntry) -> bool:
        """Whether ``other`` describes the same rows (the bytes differ between two writes
        of one batch: each records when its pages were received)."""
        return _rows_of(self) == _rows_of(other)


def _rows_of(entry: BatchTableEntry) -> tuple[object, ...]:
    return (entry.key, entry.dir, entry.file, entry.rows, entry.deletes, entry.min_ts,
            entry.max_ts, entry.truncates, entry.drops)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BatchIndex:
    """What one durable raw batch holds, and the checkpoint it advances to."""

    seq: int
    kind: BatchKind
    snapshot_ts: int | None
    wire_format: str
    tables: tuple[BatchTableEntry, ...]
    checkpoint: Checkpoint
    previous: int | None = None
    """The batch before this one in the log, ``0`` if none; ``None`` in indexes older than
    this field (unknown)."""

    @property
    def rows(self) -> int:
        """Change events in the batch, over all tables."""
        return sum(t.rows for t in self.tables)

    def entry(self, key: TableKey) -> BatchTableEntry | None:
        """The entry of one table, if the batch carried events for it."""
        return next((t for t in self.tables if t.key == key), None)

    def truncates(self, key: TableKey) -> bool:
        """Whether the batch truncates ``key`` (before its own rows of that table)."""
        entry = self.entry(key)
        return entry is not None and entry.truncates > 0

    def drops(self, key: TableKey) -> bool:
        """Whether the batch drops ``key`` (it left the source)."""
        entry = self.entry(key)
        return entry is not None and entry.drops > 0

    def same_batch(self, other: BatchIndex) -> bool:
        """Whether ``other`` is this batch written again: the same events (per table: rows,
        deletes, ``_ts`` range), the same predecessor, and the same checkpoint position.

        A replay after a crash is; a different walk or history given the same number is
        not. Schema fingerprints and batch limits may differ between runs and are not
        compared.
        """
        return (
            (self.seq, self.kind, self.snapshot_ts, self.wire_format, self.previous)
            == (other.seq, other.kind, other.snapshot_ts, other.wire_format, other.previous)
            and len(self.tables) == len(other.tables)
            and all(a.same_rows(b) for a, b in zip(self.tables, other.tables, strict=True))
            and self.checkpoint.position == other.checkpoint.position
            and self.checkpoint.batch_seq == other.checkpoint.batch_seq
        )


def batch_index_to_json(index: BatchIndex) -> dict[str, Any]:
    """The index as a JSON-ready dict."""
    data: dict[str, Any] = {
        "format": BATCH_INDEX_FORMAT,
        "version": BATCH_INDEX_VERSION,
        "seq": index.seq,
        "kind": index.kind,
        "snapshot_ts": index.snapshot_ts,
        "wire_format": index.wire_format,
        "tables": [_entry_to_json(t) for t in index.tables],
        "checkpoint": checkpoint_to_json(index.checkpoint),
    }
    if index.previous is not None:
        data["previous"] = index.previous
    return data


def _entry_to_json(entry: BatchTableEntry) -> dict[str, Any]:
    data: dict[str, Any] = {
        "component": entry.key.component,
        "table": entry.key.table,
        "dir": entry.dir,
        "file": entry.file,
        "rows": entry.rows,
        "deletes": entry.deletes,
        "min_ts": entry.min_ts,
        "max_ts": entry.max_ts,
    }
    if entry.bytes is not None:
        data["bytes"] = entry.bytes
    if entry.sha256 is not None:
        data["sha256"] = entry.sha256
    if entry.truncates:
        data["truncates"] = entry.truncates
    if entry.drops:
        data["drops"] = entry.drops
    return data


def dumps_batch_index(index: BatchIndex) -> bytes:
    """Canonical JSON bytes of an index (the same batch always gives the same bytes)."""
    return (json.dumps(batch_index_to_json(index), indent=2, sort_keys=True) + "\n").encode()


def loads_batch_index(raw: bytes, *, where: str) -> BatchIndex:
    """Parse an index strictly.

    Raises:
        StateError: the file is not a batch index this version understands.
    """
    try:
        data = json.loads(raw)
        if data.get("format") != BATCH_INDEX_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}")
        if data["version"] != BATCH_INDEX_VERSION:
            raise ValueError(f"unsupported version {data['version']!r}")
        kind = next((k for k in _KINDS if k == data["kind"]), None)
        if kind is None:
            raise ValueError(f"unknown kind {data['kind']!r}")
        snapshot_ts = data["snapshot_ts"]
        tables = tuple(
            BatchTableEntry(
                key=TableKey(str(t["component"]), str(t["table"])),
                dir=str(t["dir"]),
                file=str(t["file"]),
                rows=int(t["rows"]),
                deletes=int(t["deletes"]),
                min_ts=int(t["min_ts"]),
                max_ts=int(t["max_ts"]),
                bytes=int(t["bytes"]) if "bytes" in t else None,
                sha256=str(t["sha256"]) if "sha256" in t else None,
                truncates=int(t.get("truncates", 0)),
                drops=int(t.get("drops", 0)),
            )
            for t in data["tables"]
        )
        previous = data.get("previous")
        checkpoint = checkpoint_from_json(data["checkpoint"], where=f"{where} (checkpoint)")
        return BatchIndex(
            seq=int(data["seq"]),
            kind=kind,
            snapshot_ts=int(snapshot_ts) if snapshot_ts is not None else None,
            wire_format=str(data["wire_format"]),
            tables=tables,
            checkpoint=checkpoint,
            previous=int(previous) if previous is not None else None,
        )
    except StateError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise StateError(
            f"{where} is not a usable raw batch index: {exc}",
            hint="restore the raw_change_log directory from a backup, or run "
            "`sync --resnapshot` to land a fresh snapshot",
        ) from None
