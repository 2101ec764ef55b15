"""What a target must offer the orchestrator: a durable write and a checkpoint store."""

from __future__ import annotations

from typing import Protocol

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.events import ChangeBatch


class Sink(Protocol):
    """Where change batches land.

    ``write`` returns only once the batch is durable (fsynced files, a committed Delta
    version...). The same batch may arrive again after a crash (same ``seq``, same events);
    writing it again must change nothing.
    """

    def write(self, batch: ChangeBatch) -> None:
        """Make ``batch`` durable, or raise :class:`~convex_cdc.core.errors.TargetError`."""
        ...

    def committed_checkpoint(self, seq: int) -> Checkpoint | None:
        """The checkpoint written with batch ``seq`` if all of that batch is durable here.

        A Data Sync batch cannot be fetched again identically, so one that became durable
        just before a crash (its checkpoint unsaved) is adopted through this instead of
        replayed. ``None``: the batch is not (wholly) here.
        """
        ...


class CheckpointStore(Protocol):
    """Where a source's checkpoint lives (a JSON file, a Delta control table...)."""

    def load(self) -> Checkpoint | None:
        """The last saved checkpoint, ``None`` if there is none.

        Raises:
            StateError: the stored checkpoint is corrupt, foreign or too new; it is
                never silently replaced.
        """
        ...

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the stored checkpoint atomically and durably."""
        ...
