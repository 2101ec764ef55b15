"""Where batches end: decided by the pages and the recorded limits alone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.core.batch_assembler import BatchAssembler, PageTally, document_text_bytes
from convex_cdc.core.checkpoint import BatchLimits
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA, events_from_values
from convex_cdc.core.names import TableKey

_counter = iter(range(10**9))


def page(rows: int, *, text: int = 10, table: str = "messages", component: str = "") -> pa.Table:
    """A page's change events: ``rows`` documents of about ``text`` bytes of JSON each."""
    values = [
        {
            "_component": component,
            "_table": table,
            "_ts": 1_700_000_000_000_000_000 + (n := next(_counter)),
            "_id": f"id{n:08d}",
            "_creationTime": 1.5,
            "body": "x" * max(text - 40, 0),
        }
        for _ in range(rows)
    ]
    return events_from_values(
        values,
        kind="snapshot",
        batch_seq=1,
        snapshot_ts=5,
        extracted_at=datetime(2026, 1, 1, tzinfo=UTC),
        endpoint="list_snapshot",
    )


def cut(
    limits: BatchLimits | None, pages: Sequence[tuple[int, int]], *, last_at: int | None = None
) -> list[list[int]]:
    """Feed pages of (rows, text bytes) to assemblers; the page numbers of each batch."""
    batches: list[list[int]] = []
    assembler, numbers = BatchAssembler(limits), []
    for number, (rows, text) in enumerate(pages):
        numbers.append(number)
        last = number == (len(pages) - 1 if last_at is None else last_at)
        if assembler.add(page(rows, text=text), response_bytes=100, last=last):
            batches.append(numbers)
            assembler, numbers = BatchAssembler(limits), []
    if numbers:
        batches.append(numbers)
    return batches


def test_a_batch_ends_with_the_page_that_brings_it_to_the_row_limit() -> None:
    limits = BatchLimits(rows=5)
    assert cut(limits, [(3, 10), (3, 10), (3, 10), (3, 10), (1, 10)]) == [[0, 1], [2, 3], [4]]
    assert cut(limits, [(5, 10), (4, 10), (1, 10), (9, 10)]) == [[0], [1, 2], [3]]


def test_a_batch_ends_with_the_page_that_brings_it_to_the_document_text_limit() -> None:
    limits = BatchLimits(rows=10**6, document_bytes=2_000)
    assert cut(limits, [(1, 900), (1, 900), (1, 900), (3, 1_000)]) == [[0, 1, 2], [3]]


def test_empty_pages_count_towards_the_page_limit_only() -> None:
    limits = BatchLimits(rows=4, pages=3)
    assert cut(limits, [(0, 0), (0, 0), (0, 0), (0, 0), (2, 10), (2, 10)]) == [
        [0, 1, 2],
        [3, 4, 5],
    ]


def test_the_end_of_a_walk_ends_a_batch_whatever_the_limits() -> None:
    assert cut(BatchLimits(), [(2, 10), (2, 10), (2, 10)], last_at=1) == [[0, 1], [2]]
    assert cut(None, [(10**4, 10), (1, 10), (1, 10)], last_at=2) == [[0, 1, 2]]


def test_one_page_limits_make_every_page_its_own_batch() -> None:
    assert cut(BatchLimits(1, 1, 1), [(0, 0), (3, 10), (1, 10)]) == [[0], [1], [2]]


def test_the_batch_holds_every_page_in_order_and_counts_them() -> None:
    assembler = BatchAssembler(BatchLimits())
    first = page(2, text=50, table="users")
    second = page(0)
    third = page(3, text=60, component="waitlist", table="entries")
    for events, size in ((first, 100), (second, 7), (third, 300)):
        assert not assembler.add(events, response_bytes=size, last=False)
    events = assembler.events()
    assert events.schema == RAW_CHANGE_LOG_SCHEMA
    assert events.column("_id").to_pylist() == (
        first.column("_id").to_pylist() + third.column("_id").to_pylist()
    )
    assert assembler.tables() == [TableKey("", "users"), TableKey("waitlist", "entries")]
    assert assembler.pages == [PageTally(2, 100), PageTally(0, 7), PageTally(3, 300)]
    assert assembler.rows == 5 and assembler.response_bytes == 407
    assert assembler.document_bytes == document_text_bytes(events) > 5 * 50


def test_an_empty_batch_is_an_empty_table_of_change_events() -> None:
    assembler = BatchAssembler(BatchLimits())
    assert assembler.add(page(0), response_bytes=5, last=True)
    assert assembler.events().num_rows == 0
    assert assembler.events().schema == RAW_CHANGE_LOG_SCHEMA
    assert assembler.tables() == []


@settings(max_examples=60, deadline=None)
@given(
    pages=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 300)), max_size=14),
    rows=st.integers(1, 12),
    document_bytes=st.integers(1, 3_000),
    page_limit=st.integers(1, 5),
)
def test_batches_are_the_shortest_runs_of_pages_reaching_a_limit_and_a_replay_cuts_the_same(
    pages: list[tuple[int, int]], rows: int, document_bytes: int, page_limit: int
) -> None:
    limits = BatchLimits(rows, document_bytes, page_limit)
    batches = cut(limits, pages)
    assert [n for batch in batches for n in batch] == list(range(len(pages)))
    for batch in batches[:-1]:
        assert 1 <= len(batch) <= page_limit
        sizes = [pages[n][0] for n in batch]
        assert sum(sizes[:-1]) < rows  # it had not ended before its last page
    # A replay starts at a batch boundary and walks the same pages: same batches.
    for start, batch in enumerate(batches):
        first = batch[0]
        replayed = cut(limits, pages[first:])
        assert [[n + first for n in b] for b in replayed] == batches[start:]


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        BatchLimits(pages=0)
