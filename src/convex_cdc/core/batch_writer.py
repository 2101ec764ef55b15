"""Making a batch durable and then saving its checkpoint, on a writer thread.

The orchestrator hands each batch over as a :class:`BatchCommit` and goes on normalising
the pages of the next one while this one is written. One commit is in flight at a time:
handing over the next one first waits for it, so batches land and checkpoints are saved
strictly in page order, each checkpoint only after its batch is durable. A failed commit
surfaces at that wait, and nothing after it is written.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import pyarrow as pa

from convex_cdc.core.batch_assembler import PageTally
from convex_cdc.core.checkpoint import Checkpoint, InitialSnapshot
from convex_cdc.core.errors import ConvexCdcError, StepFailed, TargetError
from convex_cdc.core.events import BatchKind, ChangeBatch
from convex_cdc.core.sink import CheckpointStore, Sink
from convex_cdc.core.source import WIRE_FORMAT

ABANDON_AFTER_SECONDS: Final = 10.0
"""How long :meth:`BatchWriter.close` waits for a commit still in flight (only after a
failure elsewhere; the thread is a daemon and never keeps the process alive)."""


@dataclass(frozen=True, slots=True)
class BatchCommit:
    """What the writer does for one batch of consecutive pages, in this order."""

    previous: Checkpoint
    """The checkpoint the batch starts from."""
    following: Checkpoint
    """The checkpoint that is true once ``events`` are durable (after the last page)."""
    events: pa.Table
    kind: BatchKind
    pages: tuple[PageTally, ...]
    save_first: Checkpoint | None = None
    """A checkpoint that must be durable before the batch is written (a new walk's pin,
    or a pending delta batch)."""

    @property
    def response_bytes(self) -> int:
        """Bytes of every page's HTTP response body."""
        return sum(page.response_bytes for page in self.pages)


class BatchWriter:
    """Commits batches on a background thread, one at a time, in the order handed over."""

    def __init__(self, sink: Sink, store: CheckpointStore) -> None:
        self.sink = sink
        self.store = store
        self._jobs: queue.SimpleQueue[tuple[BatchCommit, Future[None]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._in_flight: tuple[BatchCommit, Future[None]] | None = None

    def submit(self, commit: BatchCommit) -> BatchCommit | None:
        """Settle the commit in flight, then start ``commit``; returns the settled one.

        Raises:
            StepFailed, ConvexCdcError: the commit in flight failed (``commit`` is dropped).
        """
        settled = self.settle()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="convex-cdc-write", daemon=True)
            self._thread.start()
        done: Future[None] = Future()
        self._jobs.put((commit, done))
        self._in_flight = (commit, done)
        return settled

    def settle(self) -> BatchCommit | None:
        """Wait for the commit in flight; returns it once its checkpoint is saved.

        Raises:
            StepFailed, ConvexCdcError: the commit failed.
        """
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return None
        commit, done = in_flight
        done.result()
        return commit

    def close(self, *, timeout: float = ABANDON_AFTER_SECONDS) -> None:
        """Stop the thread once the commit in flight (if any) is done; wait up to ``timeout``."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join(timeout)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            commit, done = job
            try:
                self._commit(commit)
            except BaseException as exc:  # handed to whoever settles the commit
                done.set_exception(exc)
            else:
                done.set_result(None)

    def _commit(self, commit: BatchCommit) -> None:
        """Write the batch (if any), then — and only then — save its checkpoint."""
        if commit.save_first is not None:
            self.store.save(commit.save_first)
        events, following = commit.events, commit.following
        if events.num_rows:
            previous = commit.previous.position
            batch = ChangeBatch(
                seq=following.batch_seq,
                kind=commit.kind,
                events=events,
                checkpoint=following,
                snapshot_ts=(
                    int(previous.snapshot) if isinstance(previous, InitialSnapshot) else None
                ),
                wire_format=WIRE_FORMAT,
                response_bytes=commit.response_bytes,
            )
            try:
                self.sink.write(batch)
            except ConvexCdcError as exc:
                raise StepFailed(step="write", batch_seq=batch.seq, cause=exc) from exc
            except OSError as exc:
                cause = TargetError(
                    f"could not make batch {batch.seq} durable: {exc.strerror or exc}",
                    hint="free disk space or fix permissions, then run sync again; "
                    "nothing was lost",
                )
                raise StepFailed(step="write", batch_seq=batch.seq, cause=cause) from exc
        if following != commit.previous:  # an idle poll that moved nothing needs no save
            self.store.save(following)
