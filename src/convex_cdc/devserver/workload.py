"""A seeded chat / project-tracker application that plays its traffic into the devserver.

Tables (``component/table``; every document also gets ``_id`` and ``_creationTime``):

* ``users``: name, email, handle (str; non-ASCII, sometimes ``""``), accountId (int64
  above 2^53), karma (int64, often negative), credits (int64, incl. ±2^63 edges), score
  (float64, incl. NaN, ±inf, -0.0, subnormal), isActive (bool), avatarHash (bytes, sometimes
  empty), profile (object with a nested object and a string array, sometimes empty),
  lastSeenAt (float64 ms); optional bio (absent, null or str) and location ({lat, lng}).
* ``channels``: name, isPrivate, createdBy (Id users), memberIds (array of Id, may be
  empty), settings ({retentionDays: int64|null, color, pinned: []}), topic (str|null),
  createdAt (float64); optional lastMessageAt (float64, added by later updates).
* ``messages``: channelId, authorId (Id), body (str, may be empty), blocks (array of
  objects, may be empty), mentions (array of Id), client ({app, version: [int64], agent}),
  sentAt (float64), edited (bool), editCount (int64); optional parentId (Id messages) and
  signature (bytes).
* ``tasks``: channelId, assigneeId (Id|null), title, status, priority (int64), estimate
  (**int64, then str** from step transaction ``estimate_string_from`` on), progress (float64,
  incl. -0.0), labels (array of str), checklist (array of objects); optional description, dueAt.
* ``reactions``: messageId, userId (Id), emoji (non-ASCII str), count (int64), at (float64).
* ``attachments`` (**created late**: first insert is step transaction ``attachments_from``,
  never in ``populate``): messageId, uploaderId, fileName, contentType, size (int64),
  thumbnail (bytes), uploadedAt; either storageId (Id _storage) or url; optional dimensions.
* ``waitlist/users`` (component table sharing its name with root ``users``): email,
  position (int64), signedUpAt, source, consent (bool); optional referredBy (Id), utm (object).
* ``waitlist/invites``: userId (Id waitlist/users), code, token (bytes), redeemed (bool),
  expiresAt (float64|null).
* System tables ``_scheduled_functions`` and ``_storage``: written in some step
  transactions (insert, replace, delete), never exported.

``step`` mixes roughly 55% inserts, 30% updates and 15% deletes by document count. Most
transactions touch 1-5 documents; about 1.5% are big (bulk user import of 200-500, archiving a
channel with all its messages, closing a sprint's tasks, purging reactions), the first of them
at step transaction ``BULK_IMPORT_AT``. A few replace one document twice, or replace then
delete it, in one transaction.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Sequence
from typing import Final, Protocol

from convex_cdc.devserver.app_documents import (
    ATTACHMENTS,
    CHANNELS,
    CONTENT_TYPES,
    MESSAGES,
    REACTIONS,
    SCHEDULED,
    STORAGE,
    SYSTEM_TABLES,
    TASKS,
    USER_TABLES,
    USERS,
    WAITLIST_INVITES,
    WAITLIST_USERS,
    AppDocuments,
    Key,
    Pool,
)
from convex_cdc.devserver.writes import (
    CommitResult,
    Committer,
    ConvexValue,
    Delete,
    Fields,
    Insert,
    Replace,
    Write,
)

POPULATE_BATCH: Final = 1000
"""Documents per ``populate`` transaction."""
BULK_IMPORT_AT: Final = 20
"""The step transaction (0-based, counted over all ``step`` calls) that bulk-imports users."""
MAX_WRITES: Final = 15_000
"""Upper bound on writes per transaction (Convex allows 16000)."""

# Shares of populate(N); parents come first so children can reference them.
_POPULATE_PHASES: Final[tuple[tuple[tuple[Key, float], ...], ...]] = (
    ((USERS, 0.08), (WAITLIST_USERS, 0.03)),
    ((CHANNELS, 0.01),),
    ((MESSAGES, 0.50), (TASKS, 0.10), (WAITLIST_INVITES, 0.02)),
    ((REACTIONS, 0.26),),
)
_PARENTS: Final[dict[Key, tuple[Key, ...]]] = {
    CHANNELS: (USERS,),
    MESSAGES: (USERS, CHANNELS),
    TASKS: (USERS, CHANNELS),
    REACTIONS: (USERS, MESSAGES),
    ATTACHMENTS: (USERS, MESSAGES),
    WAITLIST_INVITES: (WAITLIST_USERS,),
}
_MIX: Final = (0.55, 0.30, 0.15)  # inserts, updates, deletes by document count
_INSERT_TABLES: Final = (MESSAGES, REACTIONS, TASKS, USERS, WAITLIST_USERS, WAITLIST_INVITES,
                         CHANNELS, ATTACHMENTS)  # fmt: skip
_INSERT_WEIGHTS: Final = (50, 25, 10, 5, 4, 2, 2, 2)
_UPDATE_TABLES: Final = (MESSAGES, TASKS, USERS, CHANNELS, WAITLIST_USERS, WAITLIST_INVITES,
                         REACTIONS, ATTACHMENTS)  # fmt: skip
_UPDATE_WEIGHTS: Final = (35, 30, 15, 5, 5, 5, 3, 2)
_DELETE_TABLES: Final = (REACTIONS, MESSAGES, TASKS, WAITLIST_INVITES, WAITLIST_USERS,
                         ATTACHMENTS, USERS)  # fmt: skip
_DELETE_WEIGHTS: Final = (40, 30, 12, 8, 4, 4, 2)


class DocumentReader(Protocol):
    """Where the workload reads a live document's fields back (the devserver's store)."""

    def document_fields(self, component: str, table: str, doc_id: str) -> Fields | None:
        """The user fields of a live document, or None."""
        ...


class Workload:
    """Seeded application traffic committed through a :class:`Committer`.

    The same seed and call sequence give the same writes (ids aside, which the committer
    assigns), whether or not a ``reader`` is given. Replaces and deletes only ever name
    documents this workload saw inserted and that are still live.
    """

    def __init__(
        self,
        committer: Committer,
        *,
        seed: int = 0,
        attachments_from: int = 10,
        estimate_string_from: int = 40,
        reader: DocumentReader | None = None,
    ) -> None:
        """Create a workload.

        Args:
            committer: where transactions go (the devserver's document store).
            seed: seed of the ``random.Random`` that drives every choice.
            attachments_from: step transaction (0-based, over all ``step`` calls) that
                inserts the first ``attachments`` document.
            estimate_string_from: step transaction from which ``tasks.estimate`` is a string.
            reader: gives back the fields of live documents (the committer's store), so the
                workload keeps only ids; without one it keeps every document's fields.
        """
        self._committer = committer
        self._reader = reader
        self._rng = random.Random(seed)
        tables = USER_TABLES + SYSTEM_TABLES
        self._pools: dict[Key, Pool] = {key: self._new_pool() for key in tables}
        # Message ids per channel in insertion order (lists: an archive takes them in order).
        self._channel_messages: dict[str, list[str]] = {}
        self._steps = 0
        self._mix = [0, 0, 0]
        self._attachments_from = attachments_from
        self._estimate_string_from = estimate_string_from
        self._docs = AppDocuments(
            self._rng,
            self._pools,
            string_estimates=lambda: self._steps >= estimate_string_from,
            fields_of=self._fields_of,
        )

    def _new_pool(self) -> Pool:
        return Pool(keep_fields=self._reader is None)

    def _fields_of(self, key: Key, doc_id: str) -> Fields:
        kept = self._pools[key].fields(doc_id)
        if kept is not None:
            return kept
        assert self._reader is not None  # pools keep fields when there is no reader
        fields = self._reader.document_fields(key[0], key[1], doc_id)
        if fields is None:
            raise KeyError(f"document {doc_id} of {key} is not live in the store")
        return fields

    @property
    def step_transactions(self) -> int:
        """How many transactions ``step`` has committed so far."""
        return self._steps

    def live_counts(self) -> dict[Key, int]:
        """Live documents per ``(component, table)``, system tables included."""
        return {key: len(pool) for key, pool in self._pools.items()}

    def live_ids(self, table: str, *, component: str = "") -> list[str]:
        """The live document ids of one table (a copy)."""
        return list(self._pools[(component, table)].ids)

    def forget(self, component: str, table: str) -> None:
        """Forget the documents of a table dropped or replaced outside the workload, so no
        later transaction names one of them (a later insert creates the table again)."""
        key = (component, table)
        if key in self._pools:
            self._pools[key] = self._new_pool()  # the mapping AppDocuments draws from
        if key == MESSAGES:
            self._channel_messages.clear()

    def populate(self, documents: int) -> None:
        """Insert an initial dataset of about ``documents`` live documents.

        Inserts go out in transactions of up to :data:`POPULATE_BATCH` documents, parents
        (users, channels) before the documents that reference them. ``attachments`` and the
        system tables are not written.
        """
        if documents < 0:
            raise ValueError(f"documents must be >= 0, got {documents}")
        quotas = _quotas(documents)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # only acyclic dicts and lists are allocated; collections just slow it down
        try:
            for phase in _POPULATE_PHASES:
                left = {key: quotas[key] for key, _ in phase}
                while (total := sum(left.values())) > 0:
                    size = min(POPULATE_BATCH, total)
                    batch: list[tuple[Key, list[Fields]]] = []
                    for key, _ in phase:
                        count = left[key] if size == total else size * left[key] // total
                        left[key] -= count
                        build = self._docs.builder(key)
                        batch.append((key, [build() for _ in range(count)]))
                    self._commit_inserts(batch)
        finally:
            if gc_was_enabled:
                gc.enable()

    def step(self, transactions: int) -> CommitResult | None:
        """Commit ``transactions`` more application transactions.

        Returns:
            The last transaction's commit result, or ``None`` when ``transactions`` is 0.
        """
        if transactions < 0:
            raise ValueError(f"transactions must be >= 0, got {transactions}")
        result = None
        for _ in range(transactions):
            result = self._commit(self._next_transaction())
            self._steps += 1
        return result

    # -- transactions -----------------------------------------------------------------

    def _commit(self, writes: Sequence[Write]) -> CommitResult:
        # A deleted message leaves its channel's list: look the channel up while it is live.
        channels = {
            write.id: str(self._fields_of(MESSAGES, write.id)["channelId"])
            for write in writes
            if type(write) is Delete and (write.component, write.table) == MESSAGES
        }
        result = self._committer.commit(writes)
        pools, channel_messages = self._pools, self._channel_messages
        for write, doc_id in zip(writes, result.ids, strict=True):
            key = (write.component, write.table)
            pool = pools[key]
            if type(write) is Insert:
                pool.add(doc_id, write.fields)
                if key == STORAGE:
                    self._docs.pending_uploads.append(doc_id)
                elif key == MESSAGES:
                    channel_messages.setdefault(str(write.fields["channelId"]), []).append(doc_id)
            elif type(write) is Replace:
                pool.replace(doc_id, write.fields)
            else:
                pool.remove(doc_id)
                if key == MESSAGES:
                    listed = channel_messages.get(channels[doc_id])
                    if listed is not None and doc_id in listed:
                        listed.remove(doc_id)
        return result

    def _commit_inserts(self, batch: list[tuple[Key, list[Fields]]]) -> None:
        """Commit one transaction of inserts, grouped by table, and record the new ids in bulk."""
        writes = [Insert(key[1], fields, key[0]) for key, docs in batch for fields in docs]
        ids = self._committer.commit(writes).ids
        if len(ids) != len(writes):
            raise ValueError(f"the committer returned {len(ids)} ids for {len(writes)} writes")
        start = 0
        for key, docs in batch:
            pool, new_ids = self._pools[key], ids[start : start + len(docs)]
            start += len(docs)
            pool.extend(new_ids, docs)
            if key == MESSAGES:
                for doc_id, fields in zip(new_ids, docs, strict=True):
                    self._channel_messages.setdefault(str(fields["channelId"]), []).append(doc_id)

    def _next_transaction(self) -> list[Write]:
        rng, i = self._rng, self._steps
        if i == self._attachments_from:
            writes = self._inserts(ATTACHMENTS)
        elif i == self._estimate_string_from:
            writes = self._inserts(TASKS)  # the first string estimate
        elif i == BULK_IMPORT_AT:
            writes = self._big(0)
        elif rng.random() < 0.015:
            writes = self._big(rng.choices(range(4), (30, 30, 25, 15))[0])
        else:
            writes = self._small()
        kinds = (Insert, Replace, Delete)
        for write in writes:
            if write.table[0] != "_":
                self._mix[kinds.index(type(write))] += 1
        return writes + self._system_writes()

    def _small(self) -> list[Write]:
        """A 1-5 document transaction whose kind keeps the insert/update/delete mix on target."""
        rng = self._rng
        total = sum(self._mix) + 50
        weights = [
            max(s * total - done, 0.0) + 1.0 for s, done in zip(_MIX, self._mix, strict=True)
        ]
        kind = rng.choices(range(3), weights)[0]
        if kind == 1:
            key = rng.choices(_UPDATE_TABLES, _UPDATE_WEIGHTS)[0]
            if key == ATTACHMENTS and self._steps < self._attachments_from:
                key = MESSAGES
            if self._pools[key]:
                ids = self._pools[key].sample(rng, 1 if rng.random() < 0.8 else rng.randint(2, 5))
                writes: list[Write] = [self._docs.replace(key, doc_id) for doc_id in ids]
                if rng.random() < 0.02:  # a second write to the same document
                    again = self._docs.revise(key, self._fields_of(key, ids[0]))
                    deleted = rng.random() < 0.5
                    writes.append(
                        Delete(key[1], ids[0], key[0])
                        if deleted
                        else Replace(key[1], ids[0], again, key[0])
                    )
                return writes
        elif kind == 2:
            key = rng.choices(_DELETE_TABLES, _DELETE_WEIGHTS)[0]
            if self._pools[key]:
                ids = self._pools[key].sample(rng, 1 if rng.random() < 0.85 else rng.randint(2, 4))
                return [Delete(key[1], doc_id, key[0]) for doc_id in ids]
        key = rng.choices(_INSERT_TABLES, _INSERT_WEIGHTS)[0]
        if key == ATTACHMENTS and self._steps < self._attachments_from:
            key = MESSAGES
        return self._inserts(key)

    def _inserts(self, key: Key) -> list[Write]:
        """Insert one ``key`` document (and what a real app does along with it)."""
        rng, key = self._rng, self._creatable(key)
        first = Insert(key[1], self._docs.builder(key)(), key[0])
        writes: list[Write] = [first]
        if key == MESSAGES and rng.random() < 0.3:  # bump the channel's lastMessageAt
            channel = str(first.fields["channelId"])
            if channel in self._pools[CHANNELS]:
                writes.append(self._docs.replace(CHANNELS, channel))
        elif key == REACTIONS and rng.random() < 0.2:
            writes.extend(
                Insert("reactions", self._docs.reaction()) for _ in range(rng.randint(1, 2))
            )
        return writes

    def _creatable(self, key: Key) -> Key:
        """``key``, or the first parent it needs that has no live documents to reference."""
        for parent in _PARENTS.get(key, ()):
            if not self._pools[parent]:
                return self._creatable(parent)
        return key

    def _big(self, kind: int) -> list[Write]:
        """A bulk import, channel archive, sprint close or reaction purge."""
        rng = self._rng
        if kind == 1 and self._channel_messages:
            channel = self._pools[CHANNELS].sample(rng, 1)
            if channel:
                messages = self._channel_messages.pop(channel[0], [])[: MAX_WRITES - 1]
                archive: list[Write] = [Delete("messages", m) for m in messages]
                return [*archive, Delete("channels", channel[0])]
        if kind in (2, 3) and len(self._pools[TASKS if kind == 2 else REACTIONS]) > 100:
            if kind == 3:
                ids = self._pools[REACTIONS].sample(rng, rng.randint(100, 300))
                return [Delete("reactions", doc_id) for doc_id in ids]
            ids = self._pools[TASKS].sample(rng, rng.randint(100, 400))
            return [self._docs.replace(TASKS, doc_id, status="done") for doc_id in ids]
        key = USERS if rng.random() < 0.7 else WAITLIST_USERS
        build = self._docs.builder(key)
        return [Insert(key[1], build(), key[0]) for _ in range(rng.randint(200, 500))]

    def _system_writes(self) -> list[Write]:
        """Scheduler and file-storage writes that some transactions carry along."""
        rng, writes = self._rng, list[Write]()
        if self._steps == 1 or rng.random() < 0.12:
            self._docs.clock += 1.0
            at = self._docs.clock + 5_000.0
            writes.append(Insert("_scheduled_functions", {
                "name": "messages:notify", "args": [{"fanout": rng.randint(1, 50)}],
                "scheduledTime": at, "state": {"kind": "pending"}}))  # fmt: skip
        pool = self._pools[SCHEDULED]
        if pool and rng.random() < 0.08:
            doc_id = pool.ids[0]
            scheduled = self._fields_of(SCHEDULED, doc_id)
            state = scheduled["state"]
            if isinstance(state, dict) and state["kind"] == "pending":
                done: dict[str, ConvexValue] = {
                    **scheduled,
                    "state": {"kind": "success"},
                    "completedTime": self._docs.clock,
                }
                writes.append(Replace("_scheduled_functions", doc_id, done))
            else:
                writes.append(Delete("_scheduled_functions", doc_id))
        if rng.random() < 0.04:
            writes.append(Insert("_storage", {
                "sha256": rng.randbytes(32).hex(), "size": rng.randint(1, 5_000_000),
                "contentType": rng.choice(CONTENT_TYPES)}))  # fmt: skip
        return writes


def _quotas(documents: int) -> dict[Key, int]:
    """How many documents of each table ``populate(documents)`` inserts (summing to it)."""
    shares = [pair for phase in _POPULATE_PHASES for pair in phase]
    if documents < 20:  # too few to spread over tables: users only
        return {key: documents if key == USERS else 0 for key, _ in shares}
    quotas = {key: max(1, int(documents * share)) for key, share in shares[:-1]}
    quotas[shares[-1][0]] = max(0, documents - sum(quotas.values()))
    return quotas
