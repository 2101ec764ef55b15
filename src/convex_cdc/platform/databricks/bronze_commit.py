"""What a bronze (or journal) commit says about the batch it belongs to.

Every bronze commit of a batch carries the same ``custom_metadata``: the source, the batch
number and kind, the tables of the batch and the checkpoint the batch leads to. That is
what lets the control table adopt a batch whose checkpoint save was lost in a crash, and
the journal (:mod:`.batch_journal`) write a half-written Data Sync batch again exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from deltalake import DeltaTable

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.checkpoint_json import checkpoint_from_json, checkpoint_to_json
from convex_cdc.core.errors import StateError
from convex_cdc.core.events import ChangeBatch
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.delta_errors import delta_errors

META_SOURCE: Final = "convex.source"
META_BATCH: Final = "convex.batch_seq"
META_KIND: Final = "convex.kind"
META_SNAPSHOT_TS: Final = "convex.snapshot_ts"
META_TABLES: Final = "convex.tables"
META_CHECKPOINT: Final = "convex.checkpoint"
META_WIRE_FORMAT: Final = "convex.wire_format"
"""Journal commits only: the batch's wire format (bronze rows do not depend on it)."""


@dataclass(frozen=True, slots=True)
class BronzeCommit:
    """What a bronze commit says about the batch it belongs to."""

    batch_seq: int
    tables: tuple[TableKey, ...]
    checkpoint: Checkpoint
    kind: str = "delta"
    """``snapshot``, ``delta`` or ``data-sync``."""
    snapshot_ts: int | None = None
    wire_format: str = "export_json"


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
    """Decode one ``DeltaTable.history()`` entry written by the bronze sink or the journal.

    Raises:
        StateError: the entry carries convex-cdc's batch metadata, but it cannot be decoded.
    """
    if META_BATCH not in entry or META_CHECKPOINT not in entry:
        return None
    try:
        snapshot_ts = entry.get(META_SNAPSHOT_TS) or ""
        return BronzeCommit(
            batch_seq=int(entry[META_BATCH]),
            tables=tuple(TableKey.parse(t) for t in json.loads(entry[META_TABLES])),
            checkpoint=checkpoint_from_json(
                json.loads(entry[META_CHECKPOINT]), where="bronze commit metadata"
            ),
            kind=str(entry.get(META_KIND, "delta")),
            snapshot_ts=int(snapshot_ts) if snapshot_ts else None,
            wire_format=str(entry.get(META_WIRE_FORMAT, "export_json")),
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
