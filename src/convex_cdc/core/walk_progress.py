"""Checks that a walk moves forward across pages, whatever the server answers.

One page can be checked on its own (:mod:`convex_cdc.core.responses`); these checks need
the pages before it. A snapshot walk that comes back to a cursor it has been at would
walk in a circle forever; a delta cursor ahead of the deployment's own clock would be
saved, and the next run would then skip every change up to it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from convex_cdc.core.errors import MalformedResponse


class SnapshotCursors:
    """The cursors of the snapshot walk being followed.

    A request that continues from the last cursor returned continues the walk; any other
    request (a new walk, a resumed one, a restart) starts a new history.
    """

    def __init__(self) -> None:
        self._snapshot: int | None = None
        self._last: str | None = None
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def follow(
        self,
        *,
        request_snapshot: int | None,
        request_cursor: str | None,
        snapshot: int,
        cursor: str | None,
        has_more: bool,
    ) -> None:
        """Record one answered page of a walk.

        Raises:
            MalformedResponse: the answer sends the walk back to a cursor it has been at.
        """
        with self._lock:
            continues = (
                request_snapshot is not None
                and request_snapshot == self._snapshot
                and request_cursor is not None
                and request_cursor == self._last
            )
            if not continues:
                self._seen = set() if request_cursor is None else {request_cursor}
            self._snapshot = snapshot
            self._last = cursor
            if cursor is None or not has_more:
                return
            if cursor in self._seen:
                raise MalformedResponse(
                    f"returned a cursor this walk was already at, after {len(self._seen)} "
                    "pages: the walk would go round in circles forever",
                    endpoint="list_snapshot",
                )
            self._seen.add(cursor)


class ServerClock:
    """The deployment's latest timestamp, as far as the server has told it.

    ``read_now`` asks the server for its current timestamp (a ``list_snapshot`` that
    selects nothing answers with ``snapshot`` = now). It is only called when a cursor
    goes past every timestamp the server has vouched for so far, which while catching up
    on a backlog is rarely, and at most once per ``document_deltas`` page.
    """

    def __init__(self, read_now: Callable[[], int]) -> None:
        self._read_now = read_now
        self._known: int | None = None
        self._lock = threading.Lock()

    def observe(self, now: int) -> None:
        """Remember a timestamp the server gave as its "now"."""
        with self._lock:
            self._known = now if self._known is None else max(self._known, now)

    def check_cursor(self, cursor: int, *, endpoint: str) -> None:
        """Refuse a cursor later than the server's own clock.

        Raises:
            MalformedResponse: the cursor is ahead of the deployment's latest timestamp.
        """
        with self._lock:
            known = self._known
        if known is not None and cursor <= known:
            return
        now = self._read_now()
        self.observe(now)
        if cursor > now:
            raise MalformedResponse(
                f"returned cursor {cursor}, ahead of the deployment's own latest timestamp "
                f"{now}: saving it would skip every change up to it",
                endpoint=endpoint,
            )
