"""The progress rows of active Data Syncs, as ``GET /api/v1/data/list_active_syncs`` lists them.

The server records a row per sync id after each page (it rate-limits the writes to one per
5 s; the devserver records every page, so tests see the latest numbers) and lists the syncs
that fetched a page in the last 3 days, most recently updated first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from convex_cdc.devserver.data_sync import SyncProgress

ACTIVE_WINDOW_MS = 3 * 86_400_000


class InvalidListCursor(ValueError):
    """A ``list_active_syncs`` cursor this server did not hand out."""


@dataclass(frozen=True, slots=True)
class ActiveSync:
    """The last recorded progress of one sync."""

    sync_id: str
    last_updated_ms: int
    progress: SyncProgress

    def to_json(self) -> dict[str, Any]:
        """The sync as ``list_active_syncs`` shows it."""
        progress = self.progress
        status: dict[str, Any] = {"type": progress.status.kind}
        if progress.current_table is None:
            status |= {
                "totalTables": progress.total_tables,
                "numDocumentsSynced": progress.documents_synced,
                "syncedTs": progress.synced_ts,
            }
        else:
            status |= {
                "numTablesSynced": progress.tables_synced,
                "totalTables": progress.total_tables,
                "currentComponent": progress.current_table.component,
                "currentTable": progress.current_table.name,
                "numDocumentsInCurrentTable": progress.documents_in_current_table,
                "totalDocumentsInCurrentTable": progress.total_documents_in_current_table,
                "numDocumentsSynced": progress.documents_synced,
                "totalDocuments": progress.total_documents,
            }
        return {"syncId": self.sync_id, "lastUpdated": self.last_updated_ms, "status": status}


def _order(sync: ActiveSync) -> tuple[int, str]:
    return (-sync.last_updated_ms, sync.sync_id)


class ActiveSyncs:
    """Thread-safe registry of sync progress, keyed by sync id."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._syncs: dict[str, ActiveSync] = {}

    def record(self, sync_id: str, progress: SyncProgress) -> None:
        """Store a sync's progress after a page (and forget syncs idle too long)."""
        now = self._clock_ms()
        with self._lock:
            self._syncs[sync_id] = ActiveSync(sync_id, now, progress)
            idle = [
                key
                for key, sync in self._syncs.items()
                if sync.last_updated_ms < now - ACTIVE_WINDOW_MS
            ]
            for key in idle:
                del self._syncs[key]

    def page(self, limit: int, cursor: str | None) -> tuple[list[ActiveSync], str | None]:
        """Up to ``limit`` active syncs after ``cursor``, and the next cursor if more remain.

        Raises:
            InvalidListCursor: a cursor that is not one this method returned.
        """
        after: tuple[int, str] | None = None
        if cursor is not None:
            try:
                last_updated, sync_id = orjson.loads(bytes.fromhex(cursor))
                after = (-int(last_updated), str(sync_id))
            except (ValueError, TypeError):
                raise InvalidListCursor(f"invalid list_active_syncs cursor {cursor!r}") from None
        oldest = self._clock_ms() - ACTIVE_WINDOW_MS
        with self._lock:
            syncs = sorted(
                (sync for sync in self._syncs.values() if sync.last_updated_ms >= oldest),
                key=_order,
            )
        if after is not None:
            syncs = [sync for sync in syncs if _order(sync) > after]
        chosen = syncs[:limit]
        if len(syncs) <= limit:
            return chosen, None
        last = chosen[-1]
        return chosen, orjson.dumps([last.last_updated_ms, last.sync_id]).hex()
