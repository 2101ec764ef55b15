"""The devserver's MVCC document store: it commits transactions and answers export reads.

* Timestamps are ``max(previous + 1, time.time_ns())``, one per transaction.
* ``_creationTime`` is the transaction's begin time in ms (a float), nudged to the next
  representable float for each further insert so it stays unique within the transaction.
* The document log holds one row per document per transaction (the final state), ordered by
  ``(ts, tablet id, id)``, and includes system tables (names starting with ``_``), which are
  writable but never exported.
* Tables and components are created on first insert. User tables are numbered from 10001 per
  component (32-character ids); tablet ids are 16 bytes from a seeded RNG, drawn so that a
  new user table never leaves the user tables in alphabetical tablet order.
* Dropping a user table takes a timestamp of its own, like a transaction, and writes no
  log rows: as in Convex, the table disappears from snapshots at or after the drop, from
  ``json_schemas`` and from the truth, and ``document_deltas`` exports none of its rows, so
  a delta reader gets no tombstones for its documents. Reads pinned before the drop still
  see it. A table later created under the same name is a new table (new number and tablet).

One lock guards everything. Reads take it only to collect revisions; encoding happens
outside it, because revisions are immutable.

* Replacing a table (an import with ``--replace``) fills a new tablet with the same name and
  table number and drops the old tablet at the same timestamp: the log gets the new
  documents as inserts and no tombstones for the old ones.

Not reproduced: the hidden tablet of an import in progress (an import here is one atomic
step) and document retention pruning (old revisions are kept; only cursors are checked
against the retention window).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TypeVar

import orjson

from convex_cdc.devserver.ids import (
    MIN_DOCUMENT_ID,
    MIN_INTERNAL_ID,
    decode_document_id,
    encode_document_id,
    new_internal_id,
)
from convex_cdc.devserver.selection import RequestSelection
from convex_cdc.devserver.tables import Component, Revision, Table
from convex_cdc.devserver.transaction import (
    MAX_WRITES_PER_TRANSACTION,
    PendingDocument,
    Touched,
    check_component,
    check_table,
    document_body,
    existing_document,
    user_fields_tree,
)
from convex_cdc.devserver.value_encoding import from_export_tree
from convex_cdc.devserver.writes import CommitResult, Delete, Fields, Insert, Replace, Write

_MS_PER_DAY = 86_400_000
_by_ts = attrgetter("ts")
_by_id = attrgetter("id")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SnapshotCursor:
    """A decoded list_snapshot cursor: resume after ``internal_id`` in tablet ``tablet_id``."""

    tablet_id: bytes
    internal_id: bytes


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """One list_snapshot page: live revisions of one table, ascending by id."""

    revisions: list[Revision]
    snapshot: int
    cursor: SnapshotCursor | None
    cursor_id: str | None


@dataclass(frozen=True, slots=True)
class DeltasPage:
    """One document_deltas page: selected log rows in ``(ts, tablet, id)`` order."""

    revisions: list[Revision]
    cursor: int
    has_more: bool


class DocumentStore:
    """Components → tables → documents with full revision history and a global log."""

    def __init__(self, *, seed: int | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._id_rng = random.Random(seed)
        self._tablet_rng = random.Random(None if seed is None else seed + 1)
        self._components: dict[str, Component] = {"": Component("")}
        self._tablets: list[Table] = []
        self._log: list[Revision] = []
        self._latest_ts = clock()

    def now(self) -> int:
        """The store's clock (ns): what retention windows are measured against."""
        return self._clock()

    @property
    def latest_ts(self) -> int:
        """The latest readable timestamp: the last commit (or the store's creation)."""
        return self._latest_ts

    def settle(self) -> None:
        """Sort every table's new documents into place now (after a bulk load), so the
        first read does not pay for it."""
        with self._lock:
            for table in self._tablets:
                table.sorted_documents()

    def document_fields(self, component: str, table: str, doc_id: str) -> Fields | None:
        """The user fields of a live document (decoded from its body), or None."""
        with self._lock:
            owner = self._components.get(component)
            found = owner.tables.get(table) if owner is not None else None
            revision = found.document(doc_id) if found is not None else None
            export = revision.export if revision is not None else None
        if export is None:
            return None
        tree = orjson.loads(b"{" + export + b"}")
        return {key: from_export_tree(value, 1) for key, value in tree.items() if key[0] != "_"}

    # ----------------------------------------------------------------------------- writes

    def commit(self, writes: Sequence[Write]) -> CommitResult:
        """Apply ``writes`` atomically (see :class:`~convex_cdc.devserver.writes.Committer`).

        Raises:
            KeyError: a replace or delete names a document that does not exist.
            ValueError: a write is invalid; nothing is applied.
        """
        if len(writes) > MAX_WRITES_PER_TRANSACTION:
            raise ValueError(f"a transaction holds at most {MAX_WRITES_PER_TRANSACTION} writes")
        with self._lock:
            return self._commit_locked(writes, None)

    def replace_table(
        self, component: str, table: str, documents: Sequence[Fields]
    ) -> CommitResult:
        """Replace a user table's documents in one step, as ``npx convex import --replace``.

        The documents land in a new tablet under the same name and table number (a table
        that did not exist is created); the old tablet is dropped at the same timestamp.
        The log gets the new documents as inserts and nothing for the old ones, so a
        document_deltas reader sees the new rows but never learns that the old ones went.

        Raises:
            ValueError: a bad name, a system table, or an invalid document; nothing changes.
        """
        check_component(component)
        check_table(table)
        if table.startswith("_"):
            raise ValueError(f"system table {table} cannot be replaced")
        if len(documents) > MAX_WRITES_PER_TRANSACTION:
            raise ValueError(f"an import holds at most {MAX_WRITES_PER_TRANSACTION} documents")
        writes = [Insert(table, fields, component) for fields in documents]
        with self._lock:
            return self._commit_locked(writes, (component, table))

    def _commit_locked(
        self, writes: Sequence[Write], replacing: tuple[str, str] | None
    ) -> CommitResult:
        """Validate and apply ``writes``; ``replacing`` names a table whose inserts go into a
        fresh tablet that takes the old one's place."""
        begin_ts = max(self._latest_ts + 1, self._clock())
        creation_time = math.nextafter(begin_ts / 1e6, -math.inf)
        new_tables: dict[tuple[str, str], Table] = {}
        numbers: dict[str, list[int]] = {}  # component → [next user, next system]
        touched: Touched = {}
        ids: list[str] = []
        checked: dict[tuple[str, str], Table | None] = {}
        for write in writes:
            where = (write.component, write.table)
            if where in checked:
                table = checked[where]  # None until its first insert creates it
            else:
                check_component(write.component)
                check_table(write.table)
                table = checked[where] = (
                    None
                    if where == replacing
                    else self._table(write.component, write.table, new_tables)
                )
            if isinstance(write, Insert):
                if table is None:
                    table = self._new_table(write.component, write.table, numbers, replacing)
                    new_tables[where] = checked[where] = table
                tree, neutral = user_fields_tree(write.fields)
                creation_time = math.nextafter(creation_time, math.inf)
                internal = new_internal_id(
                    self._id_rng.randbytes(14), int(creation_time) // _MS_PER_DAY
                )
                doc_id = encode_document_id(table.number, internal)
                pending = PendingDocument(creation_time, tree)
                pending.neutral = neutral
                touched[(id(table), doc_id)] = (table, doc_id, pending)
                ids.append(doc_id)
                continue
            if not isinstance(write, Replace | Delete):
                raise ValueError(f"unknown write {write!r}")
            key = existing_document(table, write, touched)
            entry = touched.get(key)
            assert table is not None  # _existing raised otherwise
            if entry is None:
                current = table.document(write.id)
                assert current is not None  # existing_document raised otherwise
                # The id object the table already holds, so each document keeps one.
                entry = (table, current.id, PendingDocument(current.creation_time, {}))
                entry[2].previous = current
                touched[key] = entry
            pending = entry[2]
            if isinstance(write, Replace):
                pending.fields, pending.neutral = user_fields_tree(write.fields)
            else:
                pending.fields = None
            ids.append(write.id)
        bodies = {
            key: document_body(pending, doc_id)
            for key, (_, doc_id, pending) in touched.items()
            if pending.fields is not None
        }
        if replacing is not None and replacing not in new_tables:
            # An empty import still leaves an (empty) new table behind.
            new_tables[replacing] = self._new_table(*replacing, numbers, replacing)
        return self._apply(begin_ts, new_tables, touched, bodies, ids)

    def drop_table(self, component: str, table: str) -> int:
        """Drop a user table and all its documents; returns the drop's timestamp.

        Raises:
            KeyError: no such table.
            ValueError: a system table (Convex does not let them be dropped).
        """
        with self._lock:
            owner = self._components.get(component)
            dropped = owner.tables.get(table) if owner is not None else None
            if owner is None or dropped is None:
                where = f"{component}/{table}" if component else table
                raise KeyError(f"table {where} does not exist")
            if dropped.system:
                raise ValueError(f"system table {table} cannot be dropped")
            ts = max(self._latest_ts + 1, self._clock())
            dropped.dropped_ts = ts
            del owner.tables[table]
            del owner.by_number[dropped.number]
            self._latest_ts = ts
            return ts

    def _table(
        self, component: str, name: str, new_tables: dict[tuple[str, str], Table]
    ) -> Table | None:
        existing = self._components.get(component)
        if existing is not None and name in existing.tables:
            return existing.tables[name]
        return new_tables.get((component, name))

    def _new_table(
        self,
        component: str,
        name: str,
        numbers: dict[str, list[int]],
        replacing: tuple[str, str] | None = None,
    ) -> Table:
        owner = self._components.get(component) or Component(component)
        system = name.startswith("_")
        replaced = owner.tables.get(name) if replacing == (component, name) else None
        if replaced is not None:
            # An import keeps the table number, so ids of the old table stay well-formed.
            return Table(component, name, replaced.number, bytes(16), 0, system)
        counters = numbers.setdefault(component, [owner.next_user_number, owner.next_system_number])
        slot = 1 if system else 0
        number = counters[slot]
        counters[slot] += 1
        # Tablet id and creation ts are set when the transaction applies.
        return Table(component, name, number, bytes(16), 0, system)

    def _apply(
        self,
        begin_ts: int,
        new_tables: dict[tuple[str, str], Table],
        touched: Touched,
        bodies: dict[tuple[int, str], bytes],
        ids: list[str],
    ) -> CommitResult:
        ts = max(begin_ts, self._clock())
        for (path, name), table in new_tables.items():
            component = self._components.setdefault(path, Component(path))
            replaced = component.tables.get(name)
            if replaced is not None:
                replaced.dropped_ts = ts  # the import's swap: the old tablet goes at this ts
            table.tablet_id = self._draw_tablet_id(table)
            table.created_ts = ts
            component.tables[name] = table
            component.by_number[table.number] = table
            if table.system:
                component.next_system_number = table.number + 1
            else:
                component.next_user_number = table.number + 1
            self._insert_tablet(table)
        rows: list[Revision] = []
        for key, (table, doc_id, pending) in touched.items():
            previous = pending.previous
            revision = Revision(
                ts, table, doc_id, previous, bodies.get(key), neutral=pending.neutral
            )
            if previous is None:
                table.add_document(revision)
            else:
                if previous.export is not None:
                    old = orjson.loads(b"{" + previous.export + b"}")
                    del old["_creationTime"], old["_id"]
                    table.shape.add_object(old, -1)
                table.set_latest(revision)
            if pending.fields is not None:
                table.shape.add_object(pending.fields, 1)
            rows.append(revision)
        rows.sort(key=lambda row: (row.table.tablet_id, row.id))
        self._log.extend(rows)
        self._latest_ts = ts
        return CommitResult(ts=ts, ids=ids)

    def _draw_tablet_id(self, table: Table) -> bytes:
        """A random tablet id; the first time it matters, one that breaks alphabetical order.

        Real tablet order is effectively random; clients that assume alphabetical order must
        fail against the devserver, so as long as the user tables are still in alphabetical
        tablet order, the new table's id is drawn on the side of another table that inverts it.
        """
        rng = self._tablet_rng
        users = [other for other in self._tablets if not other.system and other.dropped_ts is None]
        others = [other for other in users if other.name != table.name]
        inverted = any(a.name > b.name for a, b in itertools.pairwise(users))
        if table.system or inverted or not others:
            return rng.randbytes(16)
        other = rng.choice(others)
        pivot = int.from_bytes(other.tablet_id, "big")
        if other.name < table.name and pivot > 0:
            value = rng.randrange(0, pivot)
        elif other.name > table.name and pivot < 2**128 - 1:
            value = rng.randrange(pivot + 1, 2**128)
        else:
            return rng.randbytes(16)
        return value.to_bytes(16, "big")

    def _insert_tablet(self, table: Table) -> None:
        position = 0
        while position < len(self._tablets) and self._tablets[position].tablet_id < table.tablet_id:
            position += 1
        self._tablets.insert(position, table)

    # ------------------------------------------------------------------------------ reads

    def snapshot_page(
        self,
        snapshot: int,
        cursor: SnapshotCursor | None,
        selection: RequestSelection,
        page_size: int,
    ) -> SnapshotPage:
        """One list_snapshot page at ``snapshot`` (must be ≤ :attr:`latest_ts`).

        The page holds up to ``page_size`` live documents of the first selected tablet at or
        after the cursor's. A full page resumes after its last id (even if the table happens
        to end there, as the server does); a short page moves on to the next tablet with the
        smallest possible id.
        """
        with self._lock:
            tablets = [
                table
                for table in self._tablets
                if not table.system
                and table.live_at(snapshot)
                and (cursor is None or table.tablet_id >= cursor.tablet_id)
                and selection.includes(table.component, table.name)
            ]
            if not tablets:
                return SnapshotPage([], snapshot, None, None)
            table = tablets[0]
            documents = table.sorted_documents()
            start = 0
            if cursor is not None and cursor.tablet_id == table.tablet_id:
                after = encode_document_id(table.number, cursor.internal_id)
                start = bisect.bisect_right(documents, after, key=_by_id)
            found = _visible_revisions(documents, start, snapshot, page_size)
            if len(found) >= page_size:
                last = found[-1]
                return SnapshotPage(
                    found,
                    snapshot,
                    SnapshotCursor(table.tablet_id, decode_document_id(last.id).internal_id),
                    last.id,
                )
            if len(tablets) > 1:
                return SnapshotPage(
                    found,
                    snapshot,
                    SnapshotCursor(tablets[1].tablet_id, MIN_INTERNAL_ID),
                    MIN_DOCUMENT_ID,
                )
            return SnapshotPage(found, snapshot, None, None)

    def deltas_page(self, cursor: int, selection: RequestSelection, row_limit: int) -> DeltasPage:
        """One document_deltas page after ``cursor``, with the server's page-end rule.

        Every log row read counts toward ``row_limit`` (system and unselected tables too).
        When the count (or the number of returned values) reaches the limit, that row's ts
        becomes the page end; the rest of that transaction is still read, and the first row
        after it stops the page with ``has_more``. If the log runs out first, the cursor is
        the latest timestamp at the start of the request.
        """
        with self._lock:
            upper = self._latest_ts
            log = self._log
            index = bisect.bisect_right(log, cursor, key=_by_ts)
            selected: dict[int, bool] = {}
            values: list[Revision] = []
            page_end: int | None = None
            has_more = False
            rows = 0
            while index < len(log):
                row = log[index]
                index += 1
                rows += 1
                if page_end is not None and row.ts > page_end:
                    has_more = True
                    break
                if page_end is None and rows >= row_limit:
                    page_end = row.ts
                table = row.table
                included = selected.get(id(table))
                if included is None:
                    included = (
                        not table.system
                        and table.dropped_ts is None
                        and selection.includes(table.component, table.name)
                    )
                    selected[id(table)] = included
                if included:
                    values.append(row)
                    if page_end is None and len(values) >= row_limit:
                        page_end = row.ts
            return DeltasPage(values, upper if page_end is None else page_end, has_more)

    def user_tables_at(self, ts: int) -> list[Table]:
        """The user tables that exist at ``ts``, in tablet-id order."""
        with self._lock:
            return [table for table in self._tablets if not table.system and table.live_at(ts)]

    def documents_after(
        self, table: Table, after_id: str | None, ts: int, limit: int
    ) -> list[Revision]:
        """Up to ``limit`` documents of ``table`` alive at ``ts`` with ids after ``after_id``
        (all ids when ``None``), ascending by id, each at its latest revision at ``ts``."""
        with self._lock:
            documents = table.sorted_documents()
            start = 0 if after_id is None else bisect.bisect_right(documents, after_id, key=_by_id)
            return _visible_revisions(documents, start, ts, limit)

    def live_documents(self, ts: int | None = None) -> list[Revision]:
        """Every exported document alive at ``ts`` (default: now), by component, table, id.

        Tables dropped at or before ``ts`` hold none.
        """
        with self._lock:
            at = self._latest_ts if ts is None else ts
            tables = sorted(
                (table for table in self._tablets if not table.system and table.live_at(at)),
                key=attrgetter("component", "name"),
            )
            out: list[Revision] = []
            for table in tables:
                for latest in table.sorted_documents():
                    revision = latest.at(at)
                    if revision is not None and revision.export is not None:
                        out.append(revision)
            return out

    def revisions_between(self, after: int, upto: int) -> list[Revision]:
        """The log rows with ``after < ts <= upto`` in log order: every table's, system and
        dropped tables included (what a delta reader is shown of them is up to the reader)."""
        with self._lock:
            log = self._log
            start = bisect.bisect_right(log, after, key=_by_ts)
            return log[start : bisect.bisect_right(log, upto, key=_by_ts)]

    def read_tables(self, render: Callable[[Component, Table], T]) -> list[tuple[str, list[T]]]:
        """``render`` every user table under the lock, grouped by component (root first).

        Every component is listed, the root always, even without user tables.
        """
        with self._lock:
            out: list[tuple[str, list[T]]] = []
            for path in sorted(self._components):
                component = self._components[path]
                rendered = [
                    render(component, component.tables[name])
                    for name in sorted(component.tables)
                    if not component.tables[name].system
                ]
                out.append((path, rendered))
            return out


_by_export = attrgetter("export")


def _visible_revisions(
    documents: list[Revision], start: int, snapshot: int, limit: int
) -> list[Revision]:
    """Up to ``limit`` live revisions at ``snapshot`` of ``documents[start:]`` (a table's
    latest revisions, by id), in id order.

    Taken a slice at a time: when a slice holds no later revision and no deletion (the
    common case), it is kept whole without looking at its revisions one by one.
    """
    found: list[Revision] = []
    while len(found) < limit and start < len(documents):
        revisions = documents[start : start + limit - len(found)]
        start += len(revisions)
        if max(map(_by_ts, revisions)) <= snapshot and None not in map(_by_export, revisions):
            found.extend(revisions)
            continue
        for revision in revisions:
            visible = revision.at(snapshot) if revision.ts > snapshot else revision
            if visible is not None and visible.export is not None:
                found.append(visible)
    return found
