"""The store's building blocks: document revisions, tables and components.

A :class:`Revision` is one committed version of one document (or its deletion). It is
immutable except for its lazily filled cache of the other formats' bodies, so readers can
encode it outside the store lock. Each revision points at the previous revision of the same
document, which is all the MVCC the snapshot walk needs.

Bodies are the document's members without braces (``"_creationTime":…,"_id":…,…``), sorted,
so a page value is ``{`` + metadata + body + ``}`` with no re-serialisation.

Memory is what limits how many documents a devserver holds (ten million on a 24 GB
machine), so a document costs its export_json bytes, one small slotted object and two list
slots: a table keeps its documents' latest revisions in one list sorted by id (no dict),
``_creationTime`` is read back from the body when needed, and the other formats' bodies
are cached only up to :data:`ALT_CACHE_BYTES` in all.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Final

import orjson

from convex_cdc.devserver.ids import encode_tablet_id
from convex_cdc.devserver.schema_inference import ShapeCounts
from convex_cdc.devserver.value_encoding import ValueFormat, convert_body

ALT_CACHE_BYTES: Final = 768 << 20
"""Bytes of ``json``/``convex_encoded_json`` bodies kept, over all revisions; past it they are
converted per request. A million documents' worth fits, so their second walk is served from
the cache; ten million do not, and would double the server's memory."""

_by_id = attrgetter("id")


class _AltCache:
    """How many alternative-format body bytes are cached (approximate under threads)."""

    __slots__ = ("budget", "lock", "used")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.lock = threading.Lock()

    def admit(self, size: int) -> bool:
        with self.lock:
            if self.used + size > self.budget:
                return False
            self.used += size
            return True


ALT_CACHE = _AltCache(ALT_CACHE_BYTES)
"""The process-wide budget of cached alternative-format bodies."""


class Revision:
    """One version of a document; ``export is None`` marks a deletion."""

    __slots__ = ("alt", "export", "id", "prev", "table", "ts")

    def __init__(
        self,
        ts: int,
        table: Table,
        doc_id: str,
        prev: Revision | None,
        export: bytes | None,
        *,
        neutral: bool,
    ) -> None:
        self.ts = ts
        self.table = table
        self.id = doc_id
        self.prev = prev
        self.export = export
        # A document with no Int64/Bytes/special floats encodes identically in every format:
        # ``alt is export`` says so. Otherwise ``alt`` is None or [encoded, clean], filled lazily.
        self.alt: bytes | list[bytes | None] | None = export if neutral else None

    @property
    def deleted(self) -> bool:
        """Whether this revision is a deletion."""
        return self.export is None

    @property
    def creation_time(self) -> float:
        """The document's ``_creationTime`` (read from the body: kept once, in the bytes).

        Raises:
            ValueError: called on a deletion.
        """
        if self.export is None:
            raise ValueError("a deletion has no body")
        value: float = orjson.loads(b"{" + self.export + b"}")["_creationTime"]
        return value

    def body(self, fmt: ValueFormat) -> bytes:
        """The document's members in ``fmt``, cached while :data:`ALT_CACHE` allows.

        Raises:
            ValueError: called on a deletion.
        """
        export = self.export
        if export is None:
            raise ValueError("a deletion has no body")
        if fmt is ValueFormat.EXPORT:
            return export
        alt = self.alt
        if alt is export:
            return export
        slot = 0 if fmt is ValueFormat.ENCODED else 1
        if type(alt) is list:
            cached = alt[slot]
            if cached is not None:
                return cached
        converted = convert_body(export, fmt)
        if ALT_CACHE.admit(len(converted) + 40):  # + the bytes object's header
            if type(alt) is list:
                alt[slot] = converted
            else:
                pair: list[bytes | None] = [None, None]
                pair[slot] = converted
                self.alt = pair
        return converted

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
    shape: ShapeCounts = field(default_factory=ShapeCounts)
    _documents: list[Revision] = field(default_factory=list)
    """The latest revision of every document the table ever held, ascending by id."""
    _pending: list[Revision] = field(default_factory=list)
    """New documents not merged into ``_documents`` yet (merged before any read)."""

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

    def add_document(self, revision: Revision) -> None:
        """Register a new document's first revision (documents are never removed: MVCC
        needs old ones)."""
        self._pending.append(revision)

    def document(self, doc_id: str) -> Revision | None:
        """The latest revision of ``doc_id`` (a deletion if it was deleted), if it exists."""
        documents = self.sorted_documents()
        at = bisect.bisect_left(documents, doc_id, key=_by_id)
        if at < len(documents) and documents[at].id == doc_id:
            return documents[at]
        return None

    def set_latest(self, revision: Revision) -> None:
        """Make ``revision`` the latest of its (existing) document."""
        documents = self.sorted_documents()
        at = bisect.bisect_left(documents, revision.id, key=_by_id)
        if at == len(documents) or documents[at].id != revision.id:
            raise KeyError(revision.id)
        documents[at] = revision

    def sorted_documents(self) -> list[Revision]:
        """The latest revision of every document ever held, ascending by id (by_id order)."""
        pending = self._pending
        if pending:
            documents = self._documents
            if len(pending) < 64:
                for revision in pending:
                    bisect.insort(documents, revision, key=_by_id)
            else:
                documents.extend(pending)
                documents.sort(key=_by_id)
            pending.clear()
        return self._documents


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
