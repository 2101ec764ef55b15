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
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

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

Key = tuple[str, str]
"""A table as ``(component, table)``; ``""`` is the root component."""

USERS: Final[Key] = ("", "users")
CHANNELS: Final[Key] = ("", "channels")
MESSAGES: Final[Key] = ("", "messages")
TASKS: Final[Key] = ("", "tasks")
REACTIONS: Final[Key] = ("", "reactions")
ATTACHMENTS: Final[Key] = ("", "attachments")
WAITLIST_USERS: Final[Key] = ("waitlist", "users")
WAITLIST_INVITES: Final[Key] = ("waitlist", "invites")
SCHEDULED: Final[Key] = ("", "_scheduled_functions")
STORAGE: Final[Key] = ("", "_storage")
USER_TABLES: Final = (
    USERS, CHANNELS, MESSAGES, TASKS, REACTIONS, ATTACHMENTS, WAITLIST_USERS, WAITLIST_INVITES
)  # fmt: skip
SYSTEM_TABLES: Final = (SCHEDULED, STORAGE)

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

_FLOATS: Final = (math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 0.1)
_INTS: Final = (2**63 - 1, -(2**63), 2**53 + 1, -(2**53) - 1, 0, -1)
_NAMES: Final = ("Ada Lovelace", "Zoë Ørsted", "李雷", "José Álvarez", "Ελένη Παπαδοπούλου",
                 "Иван Петров", "محمد علي", "田中 さくら", "Björk Guðmundsdóttir",
                 'Seán "Bo" O\'Brien', "Grace Hopper", "Nguyễn Văn An")  # fmt: skip
_BODIES: Final = (
    "shipping the export fix today, reviews welcome",
    "Grüße aus München! Können wir das Meeting auf 15:00 verschieben?",
    "日本語のメッセージです。よろしくお願いします。",
    "🎉🚀 release 2.4 is out — thanks everyone 🙏",
    "",
    'line one\nline two\n\ttabbed "quoted" and back\\slash',
    "שלום, מה שלומך? مرحبا بالعالم",
    "Can someone look at the flaky test in CI? It fails about one run in twenty and the "
    "logs point at a timeout in the snapshot walk, not at the code under test.",
    "lgtm",
    "Ελληνικά κείμενα και emoji 🇬🇷 mixed with ASCII",
)
# Message texts and their text blocks are shared between documents (never mutated) to keep
# a million-document workload small in memory.
_TEXTS: Final = _BODIES + tuple(f"{a} {b}" for a in _BODIES for b in _BODIES)
_TEXT_BLOCKS: Final[tuple[tuple[dict[str, ConvexValue], ...], ...]] = tuple(
    tuple({"kind": "text", "text": text, "bold": bold} for bold in (False, True)) for text in _TEXTS
)
_EMOJI: Final = ("👍", "🎉", "❤️", "😂", "🚀", "👀", ":party_parrot:", "✅")
_WORDS: Final = ("export", "schema", "backfill", "parquet", "retry", "cursor", "snapshot",
                 "delta", "widen", "publish", "verify", "naïve", "façade", "über")  # fmt: skip
_STATUSES: Final = ("todo", "doing", "review", "done", "blocked")
_ESTIMATES: Final = ("2h", "3 days", "½ day", "unknown", "", "1w")
_FILES: Final = ("résumé.pdf", "报告.xlsx", "diagram.png", "notes.md", "naïve café.jpg")
_TYPES: Final = ("application/pdf", "image/png", "text/markdown", "image/jpeg")
_BYTES: Final = tuple(
    bytes((i * 131 + k) % 256 for i in range(n)) for k, n in enumerate((16, 16, 32, 8, 1, 0, 24))
)
_CLIENTS: Final[tuple[dict[str, ConvexValue], ...]] = (
    {"app": "web", "version": [2, 4, 1], "agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"},
    {"app": "ios", "version": [2, 3, 0], "agent": "Chat/2.3.0 (iPhone15,2; iOS 17.5)"},
    {"app": "android", "version": [2, 4, 0], "agent": "Chat/2.4.0 (Pixel 8; Android 14)"},
    {"app": "desktop", "version": [1, 9, 12], "agent": "Electron/31.2 (Macintosh; macOS 14.5)"},
)
_PROFILES: Final[tuple[dict[str, ConvexValue], ...]] = tuple(
    {"timezone": tz, "locale": loc, "notifications": {"email": e, "push": not e, "digest": d},
     "tags": list(tags)}
    for tz, loc, e, d, tags in (
        ("Europe/Berlin", "de-DE", True, "daily", ("backend", "oncall")),
        ("Asia/Tokyo", "ja-JP", False, "weekly", ()),
        ("America/New_York", "en-US", True, "never", ("design",)),
        ("Asia/Kolkata", "hi-IN", False, "daily", ("mobile", "android", "ios")),
    )
)  # fmt: skip


_Builder = Callable[[], dict[str, ConvexValue]]


class _Pool:
    """Live documents of one table, in an order that depends only on the call sequence."""

    __slots__ = ("docs", "ids", "index")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.docs: list[Fields] = []
        self.index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, doc_id: str, fields: Fields) -> None:
        self.index[doc_id] = len(self.ids)
        self.ids.append(doc_id)
        self.docs.append(fields)

    def remove(self, doc_id: str) -> Fields:
        i = self.index.pop(doc_id)
        doc, last_id, last_doc = self.docs[i], self.ids.pop(), self.docs.pop()
        if i < len(self.ids):  # swap the last document into the hole
            self.ids[i], self.docs[i], self.index[last_id] = last_id, last_doc, i
        return doc

    def sample(self, rng: random.Random, k: int) -> list[str]:
        return [self.ids[i] for i in rng.sample(range(len(self.ids)), min(k, len(self.ids)))]


class Workload:
    """Seeded application traffic committed through a :class:`Committer`.

    The same seed and call sequence give the same writes (ids aside, which the committer
    assigns). Replaces and deletes only ever name documents this workload saw inserted and
    that are still live.
    """

    def __init__(
        self,
        committer: Committer,
        *,
        seed: int = 0,
        attachments_from: int = 10,
        estimate_string_from: int = 40,
    ) -> None:
        """Create a workload.

        Args:
            committer: where transactions go (the devserver's document store).
            seed: seed of the ``random.Random`` that drives every choice.
            attachments_from: step transaction (0-based, over all ``step`` calls) that
                inserts the first ``attachments`` document.
            estimate_string_from: step transaction from which ``tasks.estimate`` is a string.
        """
        self._committer = committer
        self._rng = random.Random(seed)
        self._pools: dict[Key, _Pool] = {key: _Pool() for key in USER_TABLES + SYSTEM_TABLES}
        self._channel_messages: dict[str, dict[str, None]] = {}  # ordered sets, for determinism
        self._pending_uploads: deque[str] = deque()  # _storage ids not yet attached
        self._serials: dict[Key, int] = {}  # documents built per table (drives value rotations)
        self._clock = 1_735_689_600_000.0  # simulated wall clock (ms), 2025-01-01
        self._steps = 0
        self._mix = [0, 0, 0]
        self._attachments_from = attachments_from
        self._estimate_string_from = estimate_string_from

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
                        build = self._builder(key)
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
        result = self._committer.commit(writes)
        pools, channel_messages = self._pools, self._channel_messages
        for write, doc_id in zip(writes, result.ids, strict=True):
            key = (write.component, write.table)
            pool = pools[key]
            if type(write) is Insert:
                pool.add(doc_id, write.fields)
                if key == STORAGE:
                    self._pending_uploads.append(doc_id)
                elif key == MESSAGES:
                    channel_messages.setdefault(str(write.fields["channelId"]), {})[doc_id] = None
            elif type(write) is Replace:
                pool.docs[pool.index[doc_id]] = write.fields
            else:
                fields = pool.remove(doc_id)
                if key == MESSAGES:
                    channel_messages.get(str(fields["channelId"]), {}).pop(doc_id, None)
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
            pool.index.update({doc_id: i for i, doc_id in enumerate(new_ids, len(pool.ids))})
            pool.ids.extend(new_ids)
            pool.docs.extend(docs)
            if key == MESSAGES:
                for doc_id, fields in zip(new_ids, docs, strict=True):
                    self._channel_messages.setdefault(str(fields["channelId"]), {})[doc_id] = None

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
                writes: list[Write] = [self._replace(key, doc_id) for doc_id in ids]
                if rng.random() < 0.02:  # a second write to the same document
                    pool = self._pools[key]
                    again = self._revise(key, pool.docs[pool.index[ids[0]]])
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
        first = Insert(key[1], self._builder(key)(), key[0])
        writes: list[Write] = [first]
        if key == MESSAGES and rng.random() < 0.3:  # bump the channel's lastMessageAt
            channel = str(first.fields["channelId"])
            if channel in self._pools[CHANNELS].index:
                writes.append(self._replace(CHANNELS, channel))
        elif key == REACTIONS and rng.random() < 0.2:
            writes.extend(Insert("reactions", self._reaction()) for _ in range(rng.randint(1, 2)))
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
                messages = list(self._channel_messages.pop(channel[0], {}))[: MAX_WRITES - 1]
                archive: list[Write] = [Delete("messages", m) for m in messages]
                return [*archive, Delete("channels", channel[0])]
        if kind in (2, 3) and len(self._pools[TASKS if kind == 2 else REACTIONS]) > 100:
            if kind == 3:
                ids = self._pools[REACTIONS].sample(rng, rng.randint(100, 300))
                return [Delete("reactions", doc_id) for doc_id in ids]
            ids = self._pools[TASKS].sample(rng, rng.randint(100, 400))
            return [self._replace(TASKS, doc_id, status="done") for doc_id in ids]
        key = USERS if rng.random() < 0.7 else WAITLIST_USERS
        build = self._builder(key)
        return [Insert(key[1], build(), key[0]) for _ in range(rng.randint(200, 500))]

    def _system_writes(self) -> list[Write]:
        """Scheduler and file-storage writes that some transactions carry along."""
        rng, writes = self._rng, list[Write]()
        if self._steps == 1 or rng.random() < 0.12:
            self._clock += 1.0
            writes.append(Insert("_scheduled_functions", {
                "name": "messages:notify", "args": [{"fanout": rng.randint(1, 50)}],
                "scheduledTime": self._clock + 5_000.0, "state": {"kind": "pending"}}))  # fmt: skip
        pool = self._pools[SCHEDULED]
        if pool and rng.random() < 0.08:
            doc_id = pool.ids[0]
            state = pool.docs[0]["state"]
            if isinstance(state, dict) and state["kind"] == "pending":
                done: dict[str, ConvexValue] = {
                    **pool.docs[0],
                    "state": {"kind": "success"},
                    "completedTime": self._clock,
                }
                writes.append(Replace("_scheduled_functions", doc_id, done))
            else:
                writes.append(Delete("_scheduled_functions", doc_id))
        if rng.random() < 0.04:
            writes.append(Insert("_storage", {
                "sha256": rng.randbytes(32).hex(), "size": rng.randint(1, 5_000_000),
                "contentType": rng.choice(_TYPES)}))  # fmt: skip
        return writes

    # -- documents --------------------------------------------------------------------

    def _builder(self, key: Key) -> _Builder:
        return {
            USERS: self._user, CHANNELS: self._channel, MESSAGES: self._message,
            TASKS: self._task, REACTIONS: self._reaction, ATTACHMENTS: self._attachment,
            WAITLIST_USERS: self._waitlist_user, WAITLIST_INVITES: self._invite,
        }[key]  # fmt: skip

    def _pick(self, key: Key) -> str:
        ids = self._pools[key].ids
        return ids[int(self._rng.random() * len(ids))]

    def _tick(self, key: Key) -> tuple[float, int]:
        """Advance the simulated clock; return it and the table's document counter."""
        n = self._serials.get(key, 0)
        self._serials[key] = n + 1
        self._clock += self._rng.random() * 400.0
        return self._clock, n

    def _user(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self._tick(USERS)
        name = _NAMES[n % len(_NAMES)]
        handle = "" if n % 17 == 0 else f"{name.split()[0].lower()}{n}"
        doc: dict[str, ConvexValue] = {
            "name": name,
            "email": f"user{n}@example.com",
            "handle": handle,
            "accountId": 2**60 + n * 7919,
            "karma": int(r() * 6000) - 1000,
            "credits": _INTS[n % 60] if n % 60 < len(_INTS) else int(r() * 1e12),
            "score": _FLOATS[n % 40] if n % 40 < len(_FLOATS) else r() * 100.0,
            "isActive": r() < 0.8,
            "avatarHash": _BYTES[n % len(_BYTES)],
            "profile": _PROFILES[n % len(_PROFILES)],
            "lastSeenAt": now,
        }
        roll = r()
        if roll < 0.1:
            doc["bio"] = None
        elif roll < 0.5:
            doc["bio"] = _BODIES[n % len(_BODIES)]
        if roll > 0.7:
            doc["location"] = {"lat": r() * 180.0 - 90.0, "lng": r() * 360.0 - 180.0}
        return doc

    def _channel(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self._tick(CHANNELS)
        return {
            "name": f"{_WORDS[n % len(_WORDS)]}-{n}" if n % 5 else f"général-🚀-{n}",
            "isPrivate": r() < 0.2,
            "createdBy": self._pick(USERS),
            "memberIds": [self._pick(USERS) for _ in range(int(r() * 5))],
            "settings": {"retentionDays": None if n % 3 else 30, "color": "#4f46e5", "pinned": []},
            "topic": None if n % 4 == 0 else _BODIES[n % len(_BODIES)],
            "createdAt": now,
        }

    def _message(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self._tick(MESSAGES)
        text = _text_index(r)
        author = self._pick(USERS)
        doc: dict[str, ConvexValue] = {
            "channelId": self._pick(CHANNELS),
            "authorId": author,
            "body": _TEXTS[text],
            "blocks": []
            if n % 3 == 0
            else [_TEXT_BLOCKS[text][n % 2], {"kind": "mention", "userId": author}],
            "mentions": [author] if n % 7 == 0 else [],
            "client": _CLIENTS[n % len(_CLIENTS)],
            "sentAt": now,
            "edited": False,
            "editCount": 0,
        }
        if n % 10 == 0 and self._pools[MESSAGES]:
            doc["parentId"] = self._pick(MESSAGES)
        if n % 9 == 0:
            doc["signature"] = _BYTES[n % len(_BYTES)]
        return doc

    def _task(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self._tick(TASKS)
        doc: dict[str, ConvexValue] = {
            "channelId": self._pick(CHANNELS),
            "assigneeId": None if n % 6 == 0 else self._pick(USERS),
            "title": f"{_WORDS[n % len(_WORDS)]}: {_WORDS[(n // 3) % len(_WORDS)]} #{n}",
            "status": _STATUSES[int(r() * len(_STATUSES))],
            "priority": int(r() * 5),
            "estimate": self._estimate(),
            "progress": -0.0 if n % 25 == 0 else r(),
            "labels": [] if n % 2 else [_WORDS[n % len(_WORDS)]],
            "checklist": [
                {"text": _WORDS[(n + i) % len(_WORDS)], "done": i == 0} for i in range(n % 4)
            ],
        }
        if n % 3 == 0:
            doc["description"] = _BODIES[n % len(_BODIES)]
        if n % 4 == 1:
            doc["dueAt"] = now + 86_400_000.0 * (n % 14)
        return doc

    def _estimate(self) -> ConvexValue:
        if self._steps >= self._estimate_string_from:
            return _ESTIMATES[int(self._rng.random() * len(_ESTIMATES))]
        return (1, 2, 3, 5, 8, 13)[int(self._rng.random() * 6)]

    def _reaction(self) -> dict[str, ConvexValue]:
        r, (now, _) = self._rng.random, self._tick(REACTIONS)
        return {
            "messageId": self._pick(MESSAGES),
            "userId": self._pick(USERS),
            "emoji": _EMOJI[int(r() * len(_EMOJI))],
            "count": 1,
            "at": now,
        }

    def _attachment(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self._tick(ATTACHMENTS)
        doc: dict[str, ConvexValue] = {
            "messageId": self._pick(MESSAGES),
            "uploaderId": self._pick(USERS),
            "fileName": _FILES[n % len(_FILES)],
            "contentType": _TYPES[n % len(_TYPES)],
            "size": int(r() * 5_000_000),
            "thumbnail": _BYTES[n % len(_BYTES)],
            "uploadedAt": now,
        }
        if self._pending_uploads:
            doc["storageId"] = self._pending_uploads.popleft()
        else:
            doc["url"] = f"https://files.example.com/{n}/{_FILES[n % len(_FILES)]}"
        if n % 2:
            doc["dimensions"] = {"width": int(r() * 4000) + 1, "height": int(r() * 3000) + 1}
        return doc

    def _waitlist_user(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self._tick(WAITLIST_USERS)
        doc: dict[str, ConvexValue] = {
            "email": f"waiting{n}@example.org",
            "position": n,
            "signedUpAt": now,
            "source": ("twitter", "hn", "friend", "")[n % 4],
            "consent": r() < 0.9,
        }
        if n % 3 == 0 and self._pools[WAITLIST_USERS]:
            doc["referredBy"] = self._pick(WAITLIST_USERS)
        if n % 5 == 0:
            doc["utm"] = {"campaign": "launch-week", "medium": "social", "clicks": n % 11}
        return doc

    def _invite(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self._tick(WAITLIST_INVITES)
        return {
            "userId": self._pick(WAITLIST_USERS),
            "code": f"INV-{n:06d}",
            "token": _BYTES[n % len(_BYTES)],
            "redeemed": False,
            "expiresAt": None if r() < 0.2 else now + 604_800_000.0,
        }

    def _replace(self, key: Key, doc_id: str, *, status: str | None = None) -> Replace:
        pool = self._pools[key]
        fields = self._revise(key, pool.docs[pool.index[doc_id]])
        if status is not None:
            fields["status"] = status
            fields["progress"] = 1.0
        return Replace(key[1], doc_id, fields, key[0])

    def _revise(self, key: Key, old: Fields) -> dict[str, ConvexValue]:
        """The next full version of a document: a few fields changed, references kept."""
        rng = self._rng
        self._clock += rng.random() * 400.0
        now, new = self._clock, dict(old)
        if key == MESSAGES:
            text = _text_index(rng.random)
            blocks: list[ConvexValue] = [_TEXT_BLOCKS[text][0]] if old["blocks"] else []
            new.update(body=_TEXTS[text], blocks=blocks, edited=True)
            new["editCount"] = _as_int(old["editCount"]) + 1
        elif key == TASKS:
            new.update(
                status=rng.choice(_STATUSES), progress=rng.random(), estimate=self._estimate()
            )
            if "description" in new and rng.random() < 0.5:
                del new["description"]  # an optional field disappears
        elif key == USERS:
            new.update(lastSeenAt=now, score=rng.random() * 100.0, karma=rng.randint(-1000, 5000))
            if rng.random() < 0.3:
                new["bio"] = rng.choice((None, rng.choice(_BODIES)))
        elif key == CHANNELS:
            new["lastMessageAt"] = now
        elif key == WAITLIST_USERS:
            new["position"] = max(0, _as_int(old["position"]) - rng.randint(1, 100))
        elif key == WAITLIST_INVITES:
            new.update(redeemed=True, expiresAt=None)
        elif key == REACTIONS:
            new["count"] = _as_int(old["count"]) + 1
        else:
            new["fileName"] = rng.choice(_FILES)
        return new


def _quotas(documents: int) -> dict[Key, int]:
    """How many documents of each table ``populate(documents)`` inserts (summing to it)."""
    shares = [pair for phase in _POPULATE_PHASES for pair in phase]
    if documents < 20:  # too few to spread over tables: users only
        return {key: documents if key == USERS else 0 for key, _ in shares}
    quotas = {key: max(1, int(documents * share)) for key, share in shares[:-1]}
    quotas[shares[-1][0]] = max(0, documents - sum(quotas.values()))
    return quotas


def _text_index(random01: Callable[[], float]) -> int:
    """Index into ``_TEXTS``: a single message body or, half the time, two of them."""
    if random01() < 0.5:
        return int(random01() * len(_BODIES))
    return len(_BODIES) + int(random01() * (len(_TEXTS) - len(_BODIES)))


def _as_int(value: ConvexValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int64 field, got {value!r}")
    return value
