"""Where batches end: consecutive pages of one phase collected into one batch.

A sink pays a fixed cost per batch (files, fsyncs, an index, a Delta commit, a checkpoint
save), so pages are written in batches of several. Where a batch ends depends only on
the pages and on the :class:`~convex_cdc.core.checkpoint.BatchLimits` recorded in the
checkpoint the batch starts from, never on time or on what happens to be fetched ahead:
a replay after a crash walks the same pages from the same checkpoint and so rebuilds
exactly the same batch.

A batch ends with the page that

* reaches the limits (change events, document text, or pages, empty pages included);
* ends the walk: the last snapshot page, or a delta page without ``hasMore`` (a page that
  exhausted the log is recorded as pending before its batch is written, see
  :mod:`convex_cdc.core.checkpoint`);
* or, replaying a pending delta batch, reaches the recorded end cursor, whatever the
  limits are.

This module does no I/O: it only counts and concatenates the pages' change events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.checkpoint import BatchLimits
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA, tables_in
from convex_cdc.core.names import TableKey


@dataclass(frozen=True, slots=True)
class PageTally:
    """What one page contributed to its batch (for the report and progress display)."""

    events: int
    response_bytes: int


@dataclass(slots=True)
class BatchAssembler:
    """The pages of one open batch, and whether it ends with the latest one.

    Args:
        limits: where the batch ends; ``None`` when only the caller's ``last`` ends it
            (replaying a pending delta batch, whose end is recorded).
    """

    limits: BatchLimits | None
    pages: list[PageTally] = field(default_factory=list)
    rows: int = 0
    document_bytes: int = 0
    _parts: list[pa.Table] = field(default_factory=list)
    _tables: set[TableKey] = field(default_factory=set)

    def add(self, events: pa.Table, *, response_bytes: int, last: bool) -> bool:
        """Add one page's change events; ``True`` if the batch ends with this page.

        Args:
            events: the page's change-event rows (possibly none).
            response_bytes: size of the page's HTTP response body.
            last: nothing may follow this page in the batch (the walk ends here, or the
                page exhausted the log, or it reaches a pending batch's recorded end).
        """
        self.pages.append(PageTally(events.num_rows, response_bytes))
        if events.num_rows:
            self._parts.append(events)
            self._tables.update(tables_in(events))
            self.rows += events.num_rows
            self.document_bytes += document_text_bytes(events)
        return last or self._full()

    def events(self) -> pa.Table:
        """Every page's change events, in page order (chunked, not copied)."""
        if not self._parts:
            return RAW_CHANGE_LOG_SCHEMA.empty_table()
        if len(self._parts) == 1:
            return self._parts[0]
        return pa.concat_tables(self._parts)

    def tables(self) -> list[TableKey]:
        """The distinct tables of the batch's events, sorted."""
        return sorted(self._tables)

    @property
    def response_bytes(self) -> int:
        """Bytes of every page's HTTP response body."""
        return sum(page.response_bytes for page in self.pages)

    def _full(self) -> bool:
        limits = self.limits
        return limits is not None and (
            self.rows >= limits.rows
            or self.document_bytes >= limits.document_bytes
            or len(self.pages) >= limits.pages
        )


def document_text_bytes(events: pa.Table) -> int:
    """Bytes of document text in change-event rows (deletes carry none)."""
    total = pc.sum(pc.binary_length(events.column("document"))).as_py()
    return int(total or 0)
