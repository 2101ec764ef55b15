"""The documents of the devserver's demo application, and the values they are made of.

The catalogue (tables, fields, value types) is described in :mod:`.workload`, which
decides *when* documents are written; this module decides *what* they hold. Builders
draw from the workload's random generator, so the two together are deterministic for a
seed. Value tables are shared between documents (never mutated) to keep a
million-document workload small in memory.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Final

from convex_cdc.devserver.writes import ConvexValue, Fields, Replace

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
CONTENT_TYPES: Final = ("application/pdf", "image/png", "text/markdown", "image/jpeg")
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


Builder = Callable[[], dict[str, ConvexValue]]


class Pool:
    """Live document ids of one table, in an order that depends only on the call sequence.

    The fields are kept only when no store can give them back (``keep_fields``): a
    ten-million-document devserver must not hold every document twice. The id → position
    index that removal needs is built on first use, so a bulk load never pays for it.
    """

    __slots__ = ("_fields", "_index", "ids")

    def __init__(self, *, keep_fields: bool = True) -> None:
        self.ids: list[str] = []
        self._index: dict[str, int] | None = None
        self._fields: dict[str, Fields] | None = {} if keep_fields else None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._positions()

    def _positions(self) -> dict[str, int]:
        if self._index is None:
            self._index = {doc_id: i for i, doc_id in enumerate(self.ids)}
        return self._index

    def fields(self, doc_id: str) -> Fields | None:
        """The document's fields if this pool keeps them (else the store has them)."""
        return None if self._fields is None else self._fields[doc_id]

    def add(self, doc_id: str, fields: Fields) -> None:
        self.extend([doc_id], [fields])

    def extend(self, ids: list[str], docs: list[Fields]) -> None:
        if self._index is not None:
            self._index.update({doc_id: i for i, doc_id in enumerate(ids, len(self.ids))})
        self.ids.extend(ids)
        if self._fields is not None:
            self._fields.update(zip(ids, docs, strict=True))

    def replace(self, doc_id: str, fields: Fields) -> None:
        if self._fields is not None:
            self._fields[doc_id] = fields

    def remove(self, doc_id: str) -> None:
        index = self._positions()
        i = index.pop(doc_id)
        last_id = self.ids.pop()
        if i < len(self.ids):  # swap the last document into the hole
            self.ids[i], index[last_id] = last_id, i
        if self._fields is not None:
            del self._fields[doc_id]

    def sample(self, rng: random.Random, k: int) -> list[str]:
        return [self.ids[i] for i in rng.sample(range(len(self.ids)), min(k, len(self.ids)))]


FieldsOf = Callable[[Key, str], Fields]
"""The current fields of a live document of a table."""


class AppDocuments:
    """Builds new documents and next versions of existing ones, table by table."""

    def __init__(
        self,
        rng: random.Random,
        pools: Mapping[Key, Pool],
        *,
        string_estimates: Callable[[], bool],
        fields_of: FieldsOf,
    ) -> None:
        """Share ``rng`` and the live-document ``pools`` with the workload.

        Args:
            rng: the workload's random generator (one generator keeps runs reproducible).
            pools: live documents per table, to draw references from.
            string_estimates: whether ``tasks.estimate`` has turned into a string yet.
            fields_of: the current fields of a live document (what a revision starts from).
        """
        self._rng = rng
        self._pools = pools
        self._fields_of = fields_of
        self._string_estimates = string_estimates
        self._serials: dict[Key, int] = {}  # documents built per table (drives value rotations)
        self.clock = 1_735_689_600_000.0
        """Simulated wall clock (ms), from 2025-01-01."""
        self.pending_uploads: deque[str] = deque()
        """``_storage`` ids not yet attached to an ``attachments`` document."""

    def builder(self, key: Key) -> Builder:
        """The builder of new ``key`` documents."""
        return {
            USERS: self.user, CHANNELS: self.channel, MESSAGES: self.message,
            TASKS: self.task, REACTIONS: self.reaction, ATTACHMENTS: self.attachment,
            WAITLIST_USERS: self.waitlist_user, WAITLIST_INVITES: self.invite,
        }[key]  # fmt: skip

    def pick(self, key: Key) -> str:
        """A random live id of ``key``."""
        ids = self._pools[key].ids
        return ids[int(self._rng.random() * len(ids))]

    def tick(self, key: Key) -> tuple[float, int]:
        """Advance the simulated clock; return it and the table's document counter."""
        n = self._serials.get(key, 0)
        self._serials[key] = n + 1
        self.clock += self._rng.random() * 400.0
        return self.clock, n

    def user(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self.tick(USERS)
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

    def channel(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self.tick(CHANNELS)
        return {
            "name": f"{_WORDS[n % len(_WORDS)]}-{n}" if n % 5 else f"général-🚀-{n}",
            "isPrivate": r() < 0.2,
            "createdBy": self.pick(USERS),
            "memberIds": [self.pick(USERS) for _ in range(int(r() * 5))],
            "settings": {"retentionDays": None if n % 3 else 30, "color": "#4f46e5", "pinned": []},
            "topic": None if n % 4 == 0 else _BODIES[n % len(_BODIES)],
            "createdAt": now,
        }

    def message(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self.tick(MESSAGES)
        text = _text_index(r)
        author = self.pick(USERS)
        doc: dict[str, ConvexValue] = {
            "channelId": self.pick(CHANNELS),
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
            doc["parentId"] = self.pick(MESSAGES)
        if n % 9 == 0:
            doc["signature"] = _BYTES[n % len(_BYTES)]
        return doc

    def task(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self.tick(TASKS)
        doc: dict[str, ConvexValue] = {
            "channelId": self.pick(CHANNELS),
            "assigneeId": None if n % 6 == 0 else self.pick(USERS),
            "title": f"{_WORDS[n % len(_WORDS)]}: {_WORDS[(n // 3) % len(_WORDS)]} #{n}",
            "status": _STATUSES[int(r() * len(_STATUSES))],
            "priority": int(r() * 5),
            "estimate": self.estimate(),
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

    def estimate(self) -> ConvexValue:
        """An estimate: int64 at first, a string once the workload says so."""
        if self._string_estimates():
            return _ESTIMATES[int(self._rng.random() * len(_ESTIMATES))]
        return (1, 2, 3, 5, 8, 13)[int(self._rng.random() * 6)]

    def reaction(self) -> dict[str, ConvexValue]:
        r, (now, _) = self._rng.random, self.tick(REACTIONS)
        return {
            "messageId": self.pick(MESSAGES),
            "userId": self.pick(USERS),
            "emoji": _EMOJI[int(r() * len(_EMOJI))],
            "count": 1,
            "at": now,
        }

    def attachment(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self.tick(ATTACHMENTS)
        doc: dict[str, ConvexValue] = {
            "messageId": self.pick(MESSAGES),
            "uploaderId": self.pick(USERS),
            "fileName": _FILES[n % len(_FILES)],
            "contentType": CONTENT_TYPES[n % len(CONTENT_TYPES)],
            "size": int(r() * 5_000_000),
            "thumbnail": _BYTES[n % len(_BYTES)],
            "uploadedAt": now,
        }
        if self.pending_uploads:
            doc["storageId"] = self.pending_uploads.popleft()
        else:
            doc["url"] = f"https://files.example.com/{n}/{_FILES[n % len(_FILES)]}"
        if n % 2:
            doc["dimensions"] = {"width": int(r() * 4000) + 1, "height": int(r() * 3000) + 1}
        return doc

    def waitlist_user(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self.tick(WAITLIST_USERS)
        doc: dict[str, ConvexValue] = {
            "email": f"waiting{n}@example.org",
            "position": n,
            "signedUpAt": now,
            "source": ("twitter", "hn", "friend", "")[n % 4],
            "consent": r() < 0.9,
        }
        if n % 3 == 0 and self._pools[WAITLIST_USERS]:
            doc["referredBy"] = self.pick(WAITLIST_USERS)
        if n % 5 == 0:
            doc["utm"] = {"campaign": "launch-week", "medium": "social", "clicks": n % 11}
        return doc

    def invite(self) -> dict[str, ConvexValue]:
        r, (now, n) = self._rng.random, self.tick(WAITLIST_INVITES)
        return {
            "userId": self.pick(WAITLIST_USERS),
            "code": f"INV-{n:06d}",
            "token": _BYTES[n % len(_BYTES)],
            "redeemed": False,
            "expiresAt": None if r() < 0.2 else now + 604_800_000.0,
        }

    def replace(self, key: Key, doc_id: str, *, status: str | None = None) -> Replace:
        fields = self.revise(key, self._fields_of(key, doc_id))
        if status is not None:
            fields["status"] = status
            fields["progress"] = 1.0
        return Replace(key[1], doc_id, fields, key[0])

    def revise(self, key: Key, old: Fields) -> dict[str, ConvexValue]:
        """The next full version of a document: a few fields changed, references kept."""
        rng = self._rng
        self.clock += rng.random() * 400.0
        now, new = self.clock, dict(old)
        if key == MESSAGES:
            text = _text_index(rng.random)
            blocks: list[ConvexValue] = [_TEXT_BLOCKS[text][0]] if old["blocks"] else []
            new.update(body=_TEXTS[text], blocks=blocks, edited=True)
            new["editCount"] = _as_int(old["editCount"]) + 1
        elif key == TASKS:
            new.update(
                status=rng.choice(_STATUSES), progress=rng.random(), estimate=self.estimate()
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


def _text_index(random01: Callable[[], float]) -> int:
    """Index into ``_TEXTS``: a single message body or, half the time, two of them."""
    if random01() < 0.5:
        return int(random01() * len(_BODIES))
    return len(_BODIES) + int(random01() * (len(_TEXTS) - len(_BODIES)))


def _as_int(value: ConvexValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int64 field, got {value!r}")
    return value
