"""What a caller gives a sync run and gets back: options, a progress observer, a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from convex_cdc.core.api_choice import Api, ApiChoice
from convex_cdc.core.checkpoint import (
    DEFAULT_BATCH_DOCUMENT_BYTES,
    DEFAULT_BATCH_PAGES,
    DEFAULT_BATCH_ROWS,
    BatchLimits,
    Checkpoint,
)
from convex_cdc.core.errors import ConfigError
from convex_cdc.core.events import DEFAULT_MAX_DOCUMENT_BYTES, BatchKind
from convex_cdc.core.selection import Selection


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How one ``sync`` run behaves."""

    selection: Selection | None = None
    api: ApiChoice = "streaming-export"
    """Which Convex API to follow the source with (see :mod:`convex_cdc.core.api_choice`);
    the CLI's default is ``auto``."""
    resnapshot: bool = False
    """Start a new snapshot walk even if a checkpoint exists (truncate-and-reload)."""
    follow: bool = False
    """Keep polling document_deltas after catching up, backing off while idle."""
    idle_initial_seconds: float = 1.0
    idle_max_seconds: float = 30.0
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    batch_rows: int = DEFAULT_BATCH_ROWS
    """A batch ends with the page that brings it to this many change events (or earlier:
    see :mod:`convex_cdc.core.batch_assembler`). ``1``: every non-empty page on its own."""
    batch_document_bytes: int = DEFAULT_BATCH_DOCUMENT_BYTES
    """... or to this much document text (bounds the memory a batch takes)."""
    batch_pages: int = DEFAULT_BATCH_PAGES
    """... or to this many pages, empty ones included."""

    @property
    def batch_limits(self) -> BatchLimits:
        """The three limits above.

        Raises:
            ConfigError: a limit is below 1.
        """
        try:
            return BatchLimits(self.batch_rows, self.batch_document_bytes, self.batch_pages)
        except ValueError:
            raise ConfigError(
                "batch limits must be at least 1 (rows, document bytes, pages)",
                hint="pass --batch-rows 1 or more",
            ) from None


class SyncObserver(Protocol):
    """Receives progress; the CLI renders it as a progress display or log lines."""

    def on_page(
        self,
        *,
        kind: BatchKind,
        events: int,
        response_bytes: int,
        checkpoint: Checkpoint,
    ) -> None:
        """A page's batch was made durable (or had no events) and its checkpoint saved.

        Called once per page, in page order, when the batch holding the page is settled:
        ``events`` and ``response_bytes`` are the page's own, ``checkpoint`` is the one
        saved after the whole batch (the same for every page of a batch).
        """
        ...

    def on_idle(self, *, seconds: float, checkpoint: Checkpoint) -> None:
        """Caught up in follow mode; sleeping ``seconds`` before polling again."""
        ...


@dataclass(slots=True)
class SyncReport:
    """What one run did."""

    snapshot_pages: int = 0
    delta_pages: int = 0
    data_sync_pages: int = 0
    batches: int = 0
    events: int = 0
    deletes: int = 0
    response_bytes: int = 0
    started_new_snapshot: bool = False
    api: Api | None = None
    """The API the run followed the source with."""
    tables_dropped: list[str] = field(default_factory=list)
    """Tables the destination held that the source no longer has (sent as drop events)."""
    adopted_batches: int = 0
    """Data Sync batches found durable without their checkpoint, and adopted."""
    converted_to_data_sync: bool = False
    """A legacy checkpoint was switched to a data sync (no data read again)."""
    checkpoint: Checkpoint | None = None
    elapsed_seconds: float = 0.0
    tables: set[str] = field(default_factory=set)
