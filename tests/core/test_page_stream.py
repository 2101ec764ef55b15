"""Walking ahead: pages come out in walk order, errors in their place, nothing after a stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from convex_cdc.core.errors import SourceUnavailable
from convex_cdc.core.page_stream import PageStream


class Walk:
    """Pages 0..last; page ``fail_at`` raises instead; records every request."""

    def __init__(self, last: int, *, fail_at: int | None = None) -> None:
        self.last = last
        self.fail_at = fail_at
        self.requested: list[int] = []
        self.lock = threading.Lock()

    def fetch(self, n: int) -> Callable[[], int]:
        def call() -> int:
            with self.lock:
                self.requested.append(n)
            if n == self.fail_at:
                raise SourceUnavailable(f"page {n} failed", hint="retry")
            return n

        return call

    def after(self, page: int) -> Callable[[], int] | None:
        return self.fetch(page + 1) if page < self.last else None


def _settle() -> None:
    time.sleep(0.2)  # lets the background walk run as far ahead as it may


def test_pages_come_out_in_walk_order_and_the_walk_stops_at_the_last_page() -> None:
    walk = Walk(last=9)
    with PageStream(walk.fetch(0), walk.after, name="test") as pages:
        assert [pages.next() for _ in range(10)] == list(range(10))
        with pytest.raises(RuntimeError, match="no more pages"):
            pages.next()
    assert walk.requested == list(range(10))


def test_the_walk_runs_only_a_bounded_number_of_pages_ahead() -> None:
    walk = Walk(last=1000)
    with PageStream(walk.fetch(0), walk.after, name="test", ahead=2) as pages:
        assert pages.next() == 0
        _settle()
        # Two pages wait for the caller, one more may be fetched and waiting for room.
        assert len(walk.requested) <= 4


def test_a_failed_fetch_comes_out_after_every_page_before_it() -> None:
    walk = Walk(last=9, fail_at=3)
    with PageStream(walk.fetch(0), walk.after, name="test") as pages:
        assert [pages.next() for _ in range(3)] == [0, 1, 2]
        with pytest.raises(SourceUnavailable, match="page 3 failed"):
            pages.next()
    assert walk.requested == [0, 1, 2, 3]  # nothing after the failure


def test_closing_stops_the_walk() -> None:
    walk = Walk(last=1000)
    pages = PageStream(walk.fetch(0), walk.after, name="test", ahead=1)
    assert pages.next() == 0
    pages.close()
    requested = len(walk.requested)
    _settle()
    assert len(walk.requested) == requested <= 3
