"""Names of Convex things: tables, components, and the rules their identifiers follow.

Convex identifiers are letters, digits and underscores, at most 64 characters. A user
table name cannot start with ``_`` (those are system tables, never exported). A component
path is ``""`` for the app, else ``/``-joined identifiers (``waitlist/ratelimiter``).

Table and component names arrive from the server and become file paths, Delta table
locations and SQL identifiers downstream, so every target checks them with these rules
before it uses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True, order=True)
class TableKey:
    """A Convex table: table names are unique only within a component."""

    component: str
    table: str

    @property
    def qualified(self) -> str:
        """``table`` for the root component, ``component/table`` otherwise."""
        return f"{self.component}/{self.table}" if self.component else self.table

    @classmethod
    def parse(cls, qualified: str) -> TableKey:
        """Inverse of :attr:`qualified` (table names never contain ``/``)."""
        component, _, table = qualified.rpartition("/")
        return cls(component, table)

    def __str__(self) -> str:
        return self.qualified


def is_identifier(name: str) -> bool:
    """A Convex identifier: letters, digits and ``_``, not starting with a digit, ≤ 64."""
    return _IDENTIFIER.fullmatch(name) is not None


def is_system_table_name(name: str) -> bool:
    """A Convex system table (``_storage``, ``_scheduled_functions``...): never exported."""
    return name.startswith("_") and is_identifier(name)


def is_valid_table_name(name: str) -> bool:
    """A Convex user table name: an identifier that does not start with ``_``."""
    return not name.startswith("_") and is_identifier(name)


def is_valid_component_path(path: str) -> bool:
    """``""`` for the app, else ``/``-joined identifiers such as ``waitlist/ratelimiter``."""
    return path == "" or all(is_identifier(part) for part in path.split("/"))


def table_dir_name(key: TableKey) -> str:
    """The one directory (or location segment) name of ``key``'s table in every target.

    The table name for the root component, ``<component segments joined by ".">.<table>``
    otherwise (``waitlist/ratelimiter`` + ``limits`` → ``waitlist.ratelimiter.limits``).
    Identifiers never contain ``.``, so the mapping is injective and a root table (no
    ``.``) never collides with a component table.

    Raises:
        ValueError: the table or component name is not a Convex identifier (the message
            names it, shortened).
    """
    if not is_valid_table_name(key.table):
        raise ValueError(f"refusing table name {_show(key.table)}: not a Convex table name")
    if not is_valid_component_path(key.component):
        raise ValueError(
            f"refusing component path {_show(key.component)} (table {_show(key.table)}): "
            "not a Convex component path"
        )
    return ".".join([*key.component.split("/"), key.table]) if key.component else key.table


def table_key_from_dir_name(name: str) -> TableKey:
    """Inverse of :func:`table_dir_name`.

    Raises:
        ValueError: ``name`` is not a table directory name.
    """
    *component, table = name.split(".")
    key = TableKey("/".join(component), table)
    table_dir_name(key)
    return key


def _show(name: str, limit: int = 80) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "…")
