"""The seam between extraction logic and the Convex wire protocol.

``ConvexClient`` implements :class:`Source` over HTTP; tests may implement it in memory.
A second protocol (Convex Data Sync) can be added behind the same seam without touching
the targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, runtime_checkable

from convex_cdc.core.names import TableKey
from convex_cdc.core.selection import Selection

WIRE_FORMAT: Final = "export_json"
"""The value format convex-cdc requests: lossless, and what Data Sync uses too.

Int64 values are JSON integers, floats always carry a ``.`` or an exponent,
NaN/±inf are ``{"$float": base64}`` and bytes are ``{"$bytes": base64}``.
"""

ConvexValue = dict[str, Any]
"""One exported document value as parsed from the wire (metadata keys included)."""


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """One ``list_snapshot`` response."""

    values: list[ConvexValue]
    snapshot: int
    cursor: str | None
    has_more: bool
    response_bytes: int


@dataclass(frozen=True, slots=True)
class DeltaPage:
    """One ``document_deltas`` response."""

    values: list[ConvexValue]
    cursor: int
    has_more: bool
    response_bytes: int


@dataclass(frozen=True, slots=True)
class DataSyncPage:
    """One Data Sync response, values flattened like ``document_deltas`` values."""

    status: Literal["snapshotting", "stale", "upToDate"]
    snapshot_ts: int | None
    """The state the data seen so far is consistent at (``None`` while snapshotting)."""
    truncates: tuple[TableKey, ...]
    """Tables entering the sync: drop what is held for them before this page's values."""
    values: list[ConvexValue]
    sync_id: str
    cursor: str
    """Where the next page starts (opaque lowercase hex; always present)."""
    response_bytes: int


@runtime_checkable
class DataSyncSource(Protocol):
    """What a Convex deployment that offers the Data Sync API answers (on top of
    :class:`Source`)."""

    def data_sync_available(self) -> bool:
        """Whether the deployment offers Data Sync (``False``: an older backend, or a plan
        without it). Reads nothing and starts no sync.

        Raises:
            AuthenticationError: the key is refused (that is not "unavailable").
        """
        ...

    def data_sync(self, *, cursor: str | None, selection: Selection | None) -> DataSyncPage:
        """The next page of a data sync (``cursor`` ``None``: a new sync from scratch)."""
        ...

    def data_sync_cursor_from_deltas(self, *, cursor: int, selection: Selection | None) -> str:
        """A data sync cursor that continues exactly where the legacy delta ``cursor`` is:
        every selected table counts as synced up to it."""
        ...


class Source(Protocol):
    """What the orchestrator needs from a Convex deployment."""

    @property
    def deployment_url(self) -> str:
        """The deployment's base URL (never includes the key)."""
        ...

    def test_connection(self) -> None:
        """Check credentials and that streaming export is enabled; raise on failure."""
        ...

    def json_schemas(self) -> dict[str, dict[str, Any]]:
        """``{component: {table: json_schema}}`` (``deltaSchema=true&byComponent=true``)."""
        ...

    def list_snapshot(
        self,
        *,
        snapshot: int | None,
        cursor: str | None,
        selection: Selection | None,
    ) -> SnapshotPage:
        """One page of the consistent snapshot walk (``selection`` ``None``: everything)."""
        ...

    def document_deltas(self, *, cursor: int, selection: Selection | None) -> DeltaPage:
        """One page of the change log after ``cursor`` (exclusive)."""
        ...
