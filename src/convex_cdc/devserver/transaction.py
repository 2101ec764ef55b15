"""Validating one transaction's writes before the store applies any of them.

Names follow Convex's rules (identifiers of at most 64 characters; components are
``/``-joined identifiers); user fields cannot start with ``_`` or ``$``; a document's
encoded body is at most 1 MiB; a transaction holds at most 16000 writes.
"""

from __future__ import annotations

import re
from typing import Any

from convex_cdc.devserver.ids import InvalidId, decode_document_id
from convex_cdc.devserver.tables import Revision, Table
from convex_cdc.devserver.value_encoding import dumps_body, to_export_tree
from convex_cdc.devserver.writes import Delete, Replace

MAX_DOCUMENT_BYTES = 1 << 20
MAX_WRITES_PER_TRANSACTION = 16000
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

Touched = dict[tuple[int, str], tuple[Table, str, "PendingDocument"]]
"""The documents a transaction touches: ``(id(table), doc id)`` → (table, id, state)."""


def check_component(path: str) -> None:
    """Raises ValueError unless ``path`` is ``""`` or ``/``-joined identifiers."""
    if path and not all(_IDENTIFIER.fullmatch(part) for part in path.split("/")):
        raise ValueError(f"invalid component path {path!r}")


def check_table(name: str) -> None:
    """Raises ValueError unless ``name`` is a table identifier (``_`` prefix: system)."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"invalid table name {name!r}")


def user_fields_tree(fields: Any) -> tuple[dict[str, Any], bool]:
    """The export_json tree of a document's user fields and whether it is format-neutral.

    Raises:
        ValueError: a top-level name starting with ``_`` or ``$``, or an invalid value.
    """
    if not isinstance(fields, dict):
        fields = dict(fields)
    for key in fields:
        if not isinstance(key, str) or not key or key[0] in "_$":
            raise ValueError(f"invalid top-level field name {key!r}")
    tree, neutral = to_export_tree(fields)
    return tree, neutral


class PendingDocument:
    """A document's state inside a transaction being validated (``fields=None``: deleted)."""

    __slots__ = ("creation_time", "fields", "neutral", "previous")

    def __init__(self, creation_time: float, fields: dict[str, Any] | None) -> None:
        self.creation_time = creation_time
        self.fields = fields
        self.neutral = True
        self.previous: Revision | None = None
        """The document's latest revision before the transaction (None: inserted by it)."""


def existing_document(
    table: Table | None, write: Replace | Delete, touched: Touched
) -> tuple[int, str]:
    """The touched-key of the live document a replace or delete names.

    Raises:
        KeyError: no such table, not an id of this table, or not a live document.
    """
    where = f"{write.component}/{write.table}" if write.component else write.table
    if table is None:
        raise KeyError(f"table {where} does not exist")
    try:
        number = decode_document_id(write.id).table_number
    except InvalidId:
        raise KeyError(f"{write.id!r} is not a document id") from None
    if number != table.number:
        raise KeyError(f"document {write.id} is not in table {where}")
    key = (id(table), write.id)
    entry = touched.get(key)
    if entry is not None:
        if entry[2].fields is None:
            raise KeyError(f"document {write.id} was deleted in this transaction")
        return key
    current = table.document(write.id)
    if current is None or current.deleted:
        raise KeyError(f"document {write.id} does not exist in table {where}")
    return key


def document_body(pending: PendingDocument, doc_id: str) -> bytes:
    """The stored export_json body (``_creationTime``, ``_id`` and fields, sorted).

    Raises:
        ValueError: the body is larger than 1 MiB.
    """
    assert pending.fields is not None
    body = dumps_body({"_creationTime": pending.creation_time, "_id": doc_id, **pending.fields})
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"document {doc_id} is larger than 1 MiB")
    return body
