"""Progress for long work: a live display on a terminal, plain log lines otherwise.

Schedulers capture stderr into logs, where a redrawn progress bar is noise; there a line
every few seconds says the same thing. Both render the same counters.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from convex_cdc.core.checkpoint import Checkpoint, DataSync
from convex_cdc.core.events import BatchKind


class SyncProgress:
    """Implements :class:`convex_cdc.core.orchestrator.SyncObserver` for the CLI."""

    def __init__(
        self,
        label: str = "sync",
        *,
        live: bool | None = None,
        plain_interval_seconds: float = 5.0,
    ) -> None:
        self.label = label
        self.live = sys.stderr.isatty() if live is None else live
        self.plain_interval = plain_interval_seconds
        self.pages = 0
        self.rows = 0
        self.bytes = 0
        self.phase = "starting"
        self._started = time.monotonic()
        self._last_line = self._started
        self._progress: Progress | None = None
        self._task: int | None = None

    def __enter__(self) -> SyncProgress:
        if self.live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, status="connecting…")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_page(
        self,
        *,
        kind: BatchKind,
        events: int,
        response_bytes: int,
        checkpoint: Checkpoint,
    ) -> None:
        """Count a page and refresh the display (or print a line now and then)."""
        self.pages += 1
        self.rows += events
        self.bytes += response_bytes
        position = checkpoint.position
        self.phase = f"data sync, {position.status}" if isinstance(position, DataSync) else kind
        self._render(force=False)

    def on_idle(self, *, seconds: float, checkpoint: Checkpoint) -> None:
        """Caught up in follow mode."""
        self.phase = f"caught up, next poll in {seconds:.0f}s"
        self._render(force=True)

    def status_line(self) -> str:
        """One line with the counters and the rate so far."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return (
            f"{self.phase}: {self.rows:,} rows in {self.pages:,} pages, "
            f"{self.bytes / 1e6:,.1f} MB, {self.rows / elapsed:,.0f} rows/s"
        )

    def _render(self, *, force: bool) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, status=self.status_line())  # type: ignore[arg-type]
            return
        now = time.monotonic()
        if force or now - self._last_line >= self.plain_interval:
            self._last_line = now
            click.echo(f"{self.label}: {self.status_line()}", err=True)
