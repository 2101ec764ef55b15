"""Writes the devserver applies in one transaction, and the value model they carry.

Convex values are held as plain Python objects, with one rule that the encoders rely on:
``int`` is always a Convex Int64 and ``float`` always a Float64 (``bool`` is checked
before ``int``). ``bytes`` is Bytes, ``str`` is String (and Id), ``None`` is Null,
``list`` is Array and ``dict[str, ...]`` is Object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

ConvexValue: TypeAlias = (
    bool | int | float | str | bytes | list["ConvexValue"] | dict[str, "ConvexValue"] | None
)
Fields = Mapping[str, ConvexValue]
"""A document's user fields (never ``_id`` or ``_creationTime``; the server assigns those)."""


@dataclass(frozen=True, slots=True)
class Insert:
    """Create a document; the server assigns ``_id`` and ``_creationTime``."""

    table: str
    fields: Fields
    component: str = ""


@dataclass(frozen=True, slots=True)
class Replace:
    """Replace every user field of an existing document (a full new version)."""

    table: str
    id: str
    fields: Fields
    component: str = ""


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete an existing document."""

    table: str
    id: str
    component: str = ""


Write = Insert | Replace | Delete


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a committed transaction returns."""

    ts: int
    """The transaction's commit timestamp (ns), strictly greater than every earlier one."""
    ids: list[str] = field(default_factory=list)
    """One id per write, in order: the new id for inserts, the given id otherwise."""


class Committer(Protocol):
    """Anything that applies a list of writes atomically (the devserver's document store)."""

    def commit(self, writes: Sequence[Write]) -> CommitResult:
        """Apply ``writes`` in one transaction.

        Tables (and components) are created on first insert. Writes to tables whose names
        start with ``_`` are system-table writes: they advance the document log but are
        never exported.

        Raises:
            KeyError: a replace or delete names a document that does not exist.
            ValueError: a write is invalid (bad table name, field name starting with
                ``_`` or ``$``, document over 1 MiB...).
        """
        ...
