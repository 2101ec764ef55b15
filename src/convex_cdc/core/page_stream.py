"""The pages of one walk, fetched ahead on a background thread.

Each page names the request for the next one (a snapshot page its cursor, a delta page
the cursor to continue from), so a walk can run ahead of the caller: while the caller
normalises and writes page n, page n+1 is waiting parsed and page n+2 is on the wire.
That keeps the server busy while the client parses, and the client busy while the
server answers.

Pages come out strictly in walk order, and a failed fetch comes out in its place, after
every page before it: the caller handles exactly the same sequence of pages and errors
as if it fetched them itself. Reads have no side effects, so pages fetched ahead of a
caller that stops early are simply dropped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Final, Generic, TypeVar

P = TypeVar("P")

PAGES_AHEAD: Final = 2
"""Parsed pages held ready at most (one more may be in flight): enough to hide the
server's time per page, and a bounded amount of memory."""

ABANDON_AFTER_SECONDS: Final = 10.0
"""How long :meth:`PageStream.close` waits for a request in flight before leaving it to
finish on its own (the thread is a daemon, so it never keeps the process alive)."""

_POLL_SECONDS: Final = 0.05


class _End:
    """Put in the queue when the walk has no more pages."""


class PageStream(Generic[P]):
    """Calls ``first``, then ``after(page)`` for each page until it returns ``None``.

    Args:
        first: fetches the first page.
        after: the call that fetches the page after ``page``, ``None`` at the end.
        name: the background thread's name.
        ahead: pages fetched ahead of the caller at most.
    """

    def __init__(
        self,
        first: Callable[[], P],
        after: Callable[[P], Callable[[], P] | None],
        *,
        name: str,
        ahead: int = PAGES_AHEAD,
    ) -> None:
        self._pages: queue.Queue[P | BaseException | _End] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._walk, args=(first, after), name=name, daemon=True
        )
        self._thread.start()

    def next(self) -> P:
        """The next page, waiting for it if needed.

        Raises:
            BaseException: whatever fetching this page raised.
            RuntimeError: the walk has no more pages.
        """
        item = self._pages.get()
        if isinstance(item, _End):
            raise RuntimeError("the walk has no more pages")
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self, *, timeout: float = ABANDON_AFTER_SECONDS) -> None:
        """Stop fetching; wait up to ``timeout`` for a request in flight to end.

        Waiting keeps a request that is about to end from racing with whatever the caller
        does next with the source (closing it, or starting another run on it).
        """
        self._stop.set()
        while True:  # unblock a fetcher waiting for room in the queue
            try:
                self._pages.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)

    def __enter__(self) -> PageStream[P]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _walk(self, call: Callable[[], P], after: Callable[[P], Callable[[], P] | None]) -> None:
        upcoming: Callable[[], P] | None = call
        while upcoming is not None and not self._stop.is_set():
            try:
                page = upcoming()
                upcoming = after(page)
            except BaseException as exc:  # handed to the caller in its place
                self._put(exc)
                return
            if not self._put(page):
                return
        self._put(_End())

    def _put(self, item: P | BaseException | _End) -> bool:
        while not self._stop.is_set():
            try:
                self._pages.put(item, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False
