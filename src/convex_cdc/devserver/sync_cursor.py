"""The Data Sync cursor: what a sync has captured, sealed into an opaque lowercase-hex token.

The state mirrors the server's (docs/convex-export-api.md §13): the timestamp every captured
document is synced to, the tablets walked completely, the tablet being walked with the last
id walked in it, document counters and the sync id. The selection is not part of it: the
client sends the same selection with every call.

Sealing: the state's JSON is encrypted with a SHAKE-256 keystream and authenticated with an
HMAC-SHA256 tag, under a key derived from the deploy key. A client cannot read or forge a
cursor, and a devserver restarted with the same key still accepts its cursors, as a real
deployment does. (A local emulator's cipher, not a production one.)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

_NONCE_BYTES = 16
_TAG_BYTES = 16
_VERSION = 1


class InvalidSyncCursor(ValueError):
    """A token that is not a cursor this deployment sealed (garbled, forged, another key)."""


@dataclass(frozen=True, slots=True)
class TableInProgress:
    """The tablet being walked by id; ``last_id`` is the last id walked (None: not started)."""

    tablet_id: bytes
    last_id: str | None


@dataclass(frozen=True, slots=True)
class DataSyncCursor:
    """Everything a sync needs to resume."""

    sync_id: str
    synced_ts: int
    """Every captured document is emitted at its latest revision at or before this ts."""
    synced_tablets: frozenset[bytes]
    """Tablets whose whole id space has been walked."""
    in_progress: TableInProgress | None
    """None once every selected table has been walked (the sync is consistent)."""
    current_table_documents: int = 0
    """Documents emitted so far by the in-progress table's walk."""
    documents_synced: int = 0
    """Every entry emitted over the sync's life (re-emitted revisions and tombstones too)."""

    def captures(self, tablet_id: bytes, document_id: str) -> bool:
        """Whether the sync has committed to keeping this document current.

        Within one table, id string order is the server's by-id order.
        """
        if tablet_id in self.synced_tablets:
            return True
        current = self.in_progress
        return (
            current is not None
            and current.tablet_id == tablet_id
            and current.last_id is not None
            and document_id <= current.last_id
        )


def _state_json(cursor: DataSyncCursor) -> bytes:
    current = cursor.in_progress
    return orjson.dumps(
        {
            "v": _VERSION,
            "syncId": cursor.sync_id,
            "syncedTs": cursor.synced_ts,
            "synced": sorted(tablet.hex() for tablet in cursor.synced_tablets),
            "current": None if current is None else [current.tablet_id.hex(), current.last_id],
            "currentDocs": cursor.current_table_documents,
            "docs": cursor.documents_synced,
        }
    )


def _state_from_json(plain: bytes) -> DataSyncCursor:
    state = orjson.loads(plain)
    if state["v"] != _VERSION:
        raise ValueError("unknown cursor version")
    current = state["current"]
    in_progress = None
    if current is not None:
        tablet, last_id = current
        if last_id is not None and not isinstance(last_id, str):
            raise TypeError("last_id is a string")
        in_progress = TableInProgress(bytes.fromhex(tablet), last_id)
    cursor = DataSyncCursor(
        sync_id=state["syncId"],
        synced_ts=state["syncedTs"],
        synced_tablets=frozenset(bytes.fromhex(tablet) for tablet in state["synced"]),
        in_progress=in_progress,
        current_table_documents=state["currentDocs"],
        documents_synced=state["docs"],
    )
    if not isinstance(cursor.sync_id, str) or type(cursor.synced_ts) is not int:
        raise TypeError("malformed cursor state")
    return cursor


def _xor(data: bytes, keystream: bytes) -> bytes:
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(keystream, "big")
    return mixed.to_bytes(len(data), "big")


class CursorSealer:
    """Seals cursors into hex tokens and opens them again, under one deployment's key."""

    def __init__(self, secret: bytes | None = None) -> None:
        """``secret``: the deployment's secret (None: a random one, cursors die with the
        server)."""
        material = secrets.token_bytes(32) if secret is None else secret
        self._key = hashlib.sha256(b"convex-cdc devserver data sync cursor\0" + material).digest()

    def _keystream(self, nonce: bytes, length: int) -> bytes:
        return hashlib.shake_256(self._key + nonce).digest(length)

    def _tag(self, nonce: bytes, sealed: bytes) -> bytes:
        return hmac.new(self._key, nonce + sealed, hashlib.sha256).digest()[:_TAG_BYTES]

    def seal(self, cursor: DataSyncCursor) -> str:
        """The cursor as an opaque lowercase-hex token."""
        plain = _state_json(cursor)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = _xor(plain, self._keystream(nonce, len(plain)))
        return (nonce + sealed + self._tag(nonce, sealed)).hex()

    def open(self, token: str) -> DataSyncCursor:
        """The cursor a token holds.

        Raises:
            InvalidSyncCursor: not hex, altered, sealed under another key, or not a cursor.
        """
        try:
            raw = bytes.fromhex(token)
        except ValueError:
            raise InvalidSyncCursor("the cursor is not hex") from None
        if len(raw) <= _NONCE_BYTES + _TAG_BYTES:
            raise InvalidSyncCursor("the cursor is too short")
        nonce, sealed, tag = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(nonce, sealed)):
            raise InvalidSyncCursor("the cursor could not be decrypted")
        plain = _xor(sealed, self._keystream(nonce, len(sealed)))
        try:
            return _state_from_json(plain)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise InvalidSyncCursor("the cursor could not be parsed") from None
