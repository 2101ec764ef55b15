"""The raw change log as history: what the checkpoint must cover, and what a hole is.

The raw change log is the replayable history of the source, so it is never rewritten. A
checkpoint says how many batches are durable (``batch_seq``); at most the one batch after
it may exist beyond it (written, then a crash before its checkpoint was saved), and its
replay carries the same events. Anything further means the checkpoint is behind the log
(lost, or restored from an older backup): a sync from it would write other events under
numbers the log already holds, so it is refused before anything is fetched.

Batch numbers may be skipped (a new snapshot walk or data sync skips the number of a batch
a crash may have left without its checkpoint), so a missing number is not a hole by itself. Each
index names the batch before it (``previous``), which tells a skipped number from a lost
index; indexes written before that link existed are checked more loosely (a number may
only be missing right before a new snapshot walk).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Final, Protocol

from convex_cdc.core.checkpoint import Checkpoint, DataSync
from convex_cdc.core.errors import StateError
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.raw.batch_index import BatchIndex


class RawChangeLog(Protocol):
    """What these checks read of the log (``change_log.RawChangeLog`` offers it; named
    here so that the sink, which uses this module, is not imported by it)."""

    @property
    def layout(self) -> DestinationLayout:
        """The destination."""
        ...

    def batch_numbers(self) -> list[int]:
        """Every batch number with an index, ascending."""
        ...

    def batch(self, seq: int) -> BatchIndex | None:
        """The index of batch ``seq``, ``None`` if it has none."""
        ...


STALE_CHECKPOINT_HINT: Final = (
    "restore the checkpoint.json that belongs to this raw change log, or rebuild it from "
    "the newest raw batch with `convex-cdc sync --restore-checkpoint`, or sync into a fresh "
    "--dest"
)
DAMAGED_RAW_HINT: Final = (
    "restore raw_change_log/ from a backup; or run `convex-cdc sync --resnapshot` and then "
    "`materialize`, which rebuilds staging from the new snapshot"
)


def predecessor(numbers: Sequence[int], seq: int) -> int:
    """The highest of the ascending ``numbers`` below ``seq``; ``0`` if there is none."""
    position = bisect.bisect_left(numbers, seq)
    return numbers[position - 1] if position else 0


def differing_batch(existing: BatchIndex, planned: BatchIndex) -> str:
    """A short account of how two batches with one number differ, for an error message."""
    if existing.snapshot_ts != planned.snapshot_ts or existing.kind != planned.kind:
        return f"it holds {_describe_kind(existing)}, this run {_describe_kind(planned)}"
    if existing.checkpoint.position != planned.checkpoint.position:
        return "it ends at another position"
    return f"it holds {existing.rows} events, this run has {planned.rows}"


def ensure_checkpoint_covers(log: RawChangeLog, checkpoint: Checkpoint | None) -> None:
    """Refuse to sync from a checkpoint the raw change log has moved past.

    Allowed beyond the checkpoint: the one batch after it (a crash between its write and
    the checkpoint save leaves it; its replay is checked event for event when it is
    written again).

    Raises:
        StateError: the log holds batches beyond that (or any batch, without a
            checkpoint), naming the newest one and the recovery.
    """
    numbers = log.batch_numbers()
    if not numbers:
        return
    newest = numbers[-1]
    if checkpoint is None:
        raise StateError(
            f"{log.layout.checkpoint} is missing, but {log.layout.raw_change_log} holds "
            f"batches up to {newest}: a new sync would overwrite that history",
            hint=STALE_CHECKPOINT_HINT,
        )
    if newest > checkpoint.batch_seq + 1:
        raise StateError(
            f"{log.layout.checkpoint} is at batch {checkpoint.batch_seq}, but "
            f"{log.layout.raw_change_log} holds batches up to {newest} (was the checkpoint "
            "restored from an older backup?): a sync from it would overwrite that history",
            hint=STALE_CHECKPOINT_HINT,
        )


def checkpoint_from_newest_batch(log: RawChangeLog) -> Checkpoint:
    """The checkpoint the newest complete raw batch advances to (its index records it).

    Raises:
        StateError: the log has no batch.
    """
    numbers = log.batch_numbers()
    index = log.batch(numbers[-1]) if numbers else None
    if index is None:
        raise StateError(
            f"{log.layout.raw_change_log} holds no batch to rebuild the checkpoint from",
            hint="run `convex-cdc sync` without --restore-checkpoint",
        )
    return index.checkpoint


def ensure_contiguous(
    log: RawChangeLog, batches: Sequence[BatchIndex], *, after: int | None
) -> None:
    """Refuse a hole in ``batches`` (consecutive indexes, ascending).

    ``after``: the batch before the first of them, which must then be its predecessor (or
    come before it); ``None`` when the first starts a snapshot walk and what came before
    does not matter.

    Raises:
        StateError: an index the others name as their predecessor is missing.
    """
    before: BatchIndex | None = None
    for index in batches:
        if index.previous is not None:
            lost = index.previous
            if before is not None:
                missing = lost > before.seq
            else:
                missing = after is not None and lost > after
        else:  # an index from before ``previous`` was recorded
            lost = index.seq - 1
            missing = (
                before is not None
                and index.seq > before.seq + 1
                and not _starts_new_walk(index, before)
            )
        if missing:
            raise StateError(
                f"raw batch index {log.layout.batch_index}/{lost:012d}.json is missing: batch "
                f"{index.seq} follows it, so the raw change log has a hole",
                hint=DAMAGED_RAW_HINT,
            )
        before = index


def ensure_checkpointed_batch_exists(log: RawChangeLog, checkpoint: Checkpoint) -> None:
    """Refuse when the batch the checkpoint counts last has lost its index.

    Its number may have been skipped instead: by a snapshot walk or a data sync begun
    after the batch before it, or when nothing was ever delivered.

    Raises:
        StateError: the index is missing and the number was not skipped.
    """
    seq = checkpoint.batch_seq
    if seq == 0 or log.batch(seq) is not None:
        return
    earlier = [n for n in log.batch_numbers() if n < seq]
    if earlier:
        last = log.batch(earlier[-1])
        if last is not None and _history_start(last.checkpoint) != _history_start(checkpoint):
            return
    elif not checkpoint.tables_seen:
        return
    raise StateError(
        f"raw batch index {log.layout.batch_index}/{seq:012d}.json is missing, although "
        f"the checkpoint counts batch {seq} as durable",
        hint=DAMAGED_RAW_HINT,
    )


def _history_start(checkpoint: Checkpoint) -> tuple[int | None, str | None]:
    """What a skipped batch number follows: the snapshot walk the history starts from, and
    the data sync it is followed with (a cold start is a new sync, with a new id)."""
    position = checkpoint.position
    sync_id = position.sync_id if isinstance(position, DataSync) else None
    return checkpoint.snapshot_started_at, sync_id


def _describe_kind(index: BatchIndex) -> str:
    if index.kind == "snapshot":
        return f"a snapshot batch of walk {index.snapshot_ts}"
    return f"a {index.kind} batch"


def _starts_new_walk(index: BatchIndex, before: BatchIndex) -> bool:
    return index.kind == "snapshot" and index.snapshot_ts != before.checkpoint.snapshot_started_at
