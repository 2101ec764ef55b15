"""A Delta table this process appends to, kept open from one commit to the next.

A commit made through a ``DeltaTable`` object leaves that object at the version it
created, so the next idempotency check (``transaction_version``) and append can go
through the same object without re-listing the log first. If another writer committed
in between, the append through the stale object fails with ``CommitFailedError`` (the
conflict checker sees the other commit), and the caller drops the object and checks again
on a fresh one (docs/delta-lake-notes.md §1).

The object is also replaced when the warehouse's temporary S3 credentials have rotated
(delta-rs keeps the credentials a table was opened with), and every
:data:`REOPEN_AFTER_COMMITS` commits: delta-rs replays the log tail an object has
accumulated on every commit, so a long-lived object gets slower with each one (measured
locally: 400 appends through one object went from ~9 ms to ~28 ms each), while a fresh
one starts from the latest checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from deltalake import DeltaTable

from convex_cdc.platform.databricks.delta_errors import delta_errors
from convex_cdc.platform.databricks.delta_read import open_table
from convex_cdc.platform.databricks.warehouse import Warehouse

REOPEN_AFTER_COMMITS: Final = 50
"""Commits through one ``DeltaTable`` object before it is replaced by a fresh one."""


class WriterTable:
    """The ``DeltaTable`` at ``location`` that this process checks and appends through.

    Args:
        location: the table's URI.
        warehouse: where its storage options come from.
        create: makes the table when it does not exist yet (and ``get(create=True)``).
    """

    def __init__(
        self, location: str, warehouse: Warehouse, create: Callable[[], DeltaTable]
    ) -> None:
        self.location = location
        self.warehouse = warehouse
        self._create = create
        self._table: DeltaTable | None = None
        self._commits = 0
        self._opened_with: dict[str, str] | None = None

    def get(self, *, create: bool = False) -> DeltaTable | None:
        """The table to check and write through (``None``: it does not exist).

        The kept object reflects this process's own commits but not other writers'; see
        the module docstring for why that is safe for appends with application
        transactions. Readers that must see other writers call ``update_incremental``.

        Raises:
            TargetError, StateError: the table cannot be opened or created (see
                :mod:`.delta_errors`).
        """
        fresh_enough = self._table is not None and self._commits < REOPEN_AFTER_COMMITS
        if fresh_enough and (self.warehouse.credentials is None or self._credentials_current()):
            return self._table
        self._opened_with = self.warehouse.options() if self.warehouse.credentials else None
        self._table = open_table(self.location, self.warehouse)
        if self._table is None and create:
            state = self.warehouse.holds_state(self.location)
            with delta_errors(f"create the Delta table {self.location}", state=state):
                self._table = self._create()
        self._commits = 0
        return self._table

    def _credentials_current(self) -> bool:
        """Whether the kept object was opened with the credentials in force now."""
        return self._opened_with == self.warehouse.options()

    def committed(self) -> None:
        """Record a commit made through the object :meth:`get` returned."""
        self._commits += 1

    def forget(self) -> None:
        """Drop the object (after a failed commit); the next :meth:`get` opens a fresh one."""
        self._table = None
