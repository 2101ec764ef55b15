"""The store's building blocks: document revisions, tables and components.

A :class:`Revision` is one committed version of one document (or its deletion). It is
immutable except for its lazily filled per-format body cache, so readers can encode it
outside the store lock. Each revision points at the previous revision of the same document,
which is all the MVCC the snapshot walk needs.

Bodies are the document's members without braces (``"_creationTime":…,"_id":…,…``), sorted,
so a page value is ``{`` + metadata + body + ``}`` with no re-serialisation.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import orjson

from convex_cdc.devserver.ids import encode_tablet_id
from convex_cdc.devserver.schema_inference import ShapeCounts
from convex_cdc.devserver.value_encoding import ValueFormat, convert_body


class Revision:
    """One version of a document; ``export is None`` marks a deletion."""

    __slots__ = ("clean", "creation_time", "encoded", "export", "id", "prev", "table", "ts")

    def __init__(  # noqa: PLR0917 - a plain record, built in one place
        self,
        ts: int,
        table: Table,
        doc_id: str,
        prev: Revision | None,
        creation_time: float,
        export: bytes | None,
        *,
        neutral: bool,
    ) -> None:
        self.ts = ts
        self.table = table
        self.id = doc_id
        self.prev = prev
        self.creation_time = creation_time
        self.export = export
        # A document with no Int64/Bytes/special floats encodes identically in every format.
        self.encoded = export if neutral else None
        self.clean = export if neutral else None

    @property
    def deleted(self) -> bool:
        """Whether this revision is a deletion."""
        return self.export is None

    def body(self, fmt: ValueFormat) -> bytes:
        """The document's members in ``fmt``, computed once and cached.

        Raises:
            ValueError: called on a deletion.
        """
        export = self.export
        if export is None:
            raise ValueError("a deletion has no body")
        if fmt is ValueFormat.EXPORT:
            return export
        if fmt is ValueFormat.ENCODED:
            cached = self.encoded
            if cached is None:
                cached = self.encoded = convert_body(export, fmt)
            return cached
        cached = self.clean
        if cached is None:
            cached = self.clean = convert_body(export, fmt)
        return cached

    def at(self, ts: int) -> Revision | None:
        """The revision of this document visible at ``ts`` (deletions included)."""
        revision: Revision | None = self
        while revision is not None and revision.ts > ts:
            revision = revision.prev
        return revision


@dataclass(eq=False)
class Table:
    """One table (tablet) of one component.

    A dropped table keeps its documents and log rows, so that reads pinned before the drop
    still see it; a table created later under the same name is another :class:`Table`.
    """

    component: str
    name: str
    number: int
    tablet_id: bytes
    created_ts: int
    system: bool
    dropped_ts: int | None = None
    """The timestamp of the transaction that dropped the table, if one did."""
    latest: dict[str, Revision] = field(default_factory=dict)
    shape: ShapeCounts = field(default_factory=ShapeCounts)
    _sorted_ids: list[str] = field(default_factory=list)
    _pending_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        meta = b'{"_component":' + orjson.dumps(self.component)
        meta += b',"_table":' + orjson.dumps(self.name) + b',"_ts":'
        self.value_prefix = meta
        """``{"_component":…,"_table":…,"_ts":`` — what every exported value starts with."""

    def live_at(self, ts: int) -> bool:
        """Whether the table exists at ``ts``: created at or before it, not yet dropped."""
        return self.created_ts <= ts and (self.dropped_ts is None or ts < self.dropped_ts)

    @property
    def tablet(self) -> str:
        """The tablet id as it appears in list_snapshot cursors."""
        return encode_tablet_id(self.tablet_id)

    def add_id(self, doc_id: str) -> None:
        """Register a new document id (ids are never removed: MVCC needs old ones)."""
        self._pending_ids.append(doc_id)

    def sorted_ids(self) -> list[str]:
        """Every id the table ever held, ascending (by_id order); merged lazily."""
        pending = self._pending_ids
        if pending:
            ids = self._sorted_ids
            if len(pending) < 64:
                for doc_id in pending:
                    bisect.insort(ids, doc_id)
            else:
                ids.extend(pending)
                ids.sort()
            pending.clear()
        return self._sorted_ids


@dataclass(eq=False)
class Component:
    """A component (``""`` is the root) and its tables by name and by table number."""

    path: str
    tables: dict[str, Table] = field(default_factory=dict)
    by_number: dict[int, Table] = field(default_factory=dict)
    next_user_number: int = 10001
    next_system_number: int = 1

    def table_name_of(self, number: int) -> str | None:
        """The name of the table with this number, if it exists."""
        table = self.by_number.get(number)
        return table.name if table is not None else None
