"""Which components, tables and columns to replicate.

A :class:`Selection` comes from one of three places and always ends as the Convex
selection object that ``list_snapshot`` and ``document_deltas`` receive:

* include/exclude **patterns** (``--include``/``--exclude``, repeatable),
* a config **section** (``{"include": [...], "exclude": [...]}`` or
  ``{"object": <Convex selection object>}``),
* a full Convex **selection object** (docs/convex-export-api.md §6).

Pattern grammar::

    pattern   := [component "/"] table ["." column]
    component := name ("/" name)*        nested components: "waitlist/ratelimiter"
    table     := name | "*"              "*" = every table of that component
    column    := name                    a top-level field

The root component has no prefix: ``messages`` is the root table ``messages``, ``*`` is
every root table, ``waitlist/*`` every table of component ``waitlist``, ``users.ssn`` the
column ``ssn`` of root table ``users``. Names are Convex identifiers.

Rules: no include pattern → everything is included; any include pattern → only what is
included. Excludes apply after includes. A table named by a column pattern
(``--include users.email``) exports only those columns, plus ``_id`` and
``_creationTime``; ``_creationTime`` can be excluded (``--exclude users._creationTime``),
``_id`` never.

The server does not reject a malformed selection object: it silently exports
everything. :func:`validate_selection` therefore checks every object before it is sent.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from convex_cdc.core.errors import ConfigError
from convex_cdc.core.names import TableKey, is_valid_component_path, is_valid_table_name

INCLUDED: Final = "included"
EXCLUDED: Final = "excluded"
OTHER: Final = "_other"
ID_FIELD: Final = "_id"
CREATION_TIME_FIELD: Final = "_creationTime"

_ALIASES: Final = {"included": INCLUDED, "incl": INCLUDED, "excluded": EXCLUDED, "excl": EXCLUDED}
_FIELD_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_SYSTEM_FIELDS: Final = frozenset({ID_FIELD, CREATION_TIME_FIELD})
_PATTERN_HINT: Final = (
    "write [component/]table[.column], e.g. messages, waitlist/*, users.ssn "
    "(names are letters, digits and _)"
)
_OBJECT_HINT: Final = (
    "fix the selection object (docs/convex-export-api.md §6); Convex would silently export "
    "everything instead of rejecting it"
)


@dataclass(frozen=True, slots=True)
class Pattern:
    """One parsed ``[component/]table[.column]`` pattern."""

    component: str
    table: str
    """A table name, or ``*`` for every table of the component."""
    column: str | None = None

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """Parse one pattern.

        Raises:
            ConfigError: the pattern is not ``[component/]table[.column]`` with valid names.
        """

        def bad(why: str) -> ConfigError:
            return ConfigError(f"selection pattern {text!r}: {why}", hint=_PATTERN_HINT)

        component, slash, last = text.strip().rpartition("/")
        table, dot, column = last.partition(".")
        if slash and (not component or not is_valid_component_path(component)):
            raise bad(f"{component!r} is not a component path")
        if table != "*" and not is_valid_table_name(table):
            raise bad(f"{table!r} is not a table name")
        if not dot:
            return cls(component, table)
        if table == "*":
            raise bad("a column pattern needs a table name, not *")
        if not is_valid_field_name(column):
            raise bad(f"{column!r} is not a column name")
        return cls(component, table, column)


@dataclass(frozen=True)
class Selection:
    """Which tables and columns to replicate, held as the canonical Convex object."""

    wire: Mapping[str, Any] = field(default_factory=lambda: {OTHER: INCLUDED})
    """The validated Convex selection object (``_other`` at every level, aliases
    resolved). Use :meth:`to_wire` to get a copy to send."""

    @classmethod
    def everything(cls) -> Selection:
        """Every component, table and column."""
        return cls({OTHER: INCLUDED})

    @classmethod
    def from_wire(cls, obj: object) -> Selection:
        """Adopt a user-supplied Convex selection object after validating it.

        Raises:
            ConfigError: the object is malformed (the server would export everything).
        """
        return cls(validate_selection(obj))

    @classmethod
    def from_patterns(
        cls, *, include: Iterable[str] = (), exclude: Iterable[str] = ()
    ) -> Selection:
        """Build a selection from include and exclude patterns (see the module docstring).

        Raises:
            ConfigError: a pattern is malformed or excludes ``_id``.
        """
        includes = [Pattern.parse(p) for p in include]
        excludes = [Pattern.parse(p) for p in exclude]
        for pattern in excludes:
            if pattern.column == ID_FIELD:
                raise ConfigError(
                    f"selection pattern {pattern_text(pattern)!r} excludes _id",
                    hint="_id identifies every row and can never be excluded; "
                    "exclude the whole table instead",
                )
        wire: dict[str, Any] = {OTHER: EXCLUDED if includes else INCLUDED}
        _apply_includes(wire, includes)
        _apply_excludes(wire, excludes)
        return cls(validate_selection(wire))

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> Selection:
        """Build a selection from a config section.

        Accepts ``{"include": [...], "exclude": [...]}`` (patterns) or
        ``{"object": {...}}`` (a full Convex selection object), not both.

        Raises:
            ConfigError: unknown keys, wrong types, or a bad pattern or object.
        """
        unknown = set(section) - {"include", "exclude", "object"}
        if unknown:
            raise ConfigError(
                f"selection config has unknown keys {sorted(unknown)}",
                hint="use include = [...], exclude = [...] or object = {...}",
            )
        if "object" in section:
            if "include" in section or "exclude" in section:
                raise ConfigError(
                    "selection config gives both an object and include/exclude patterns",
                    hint="use one or the other",
                )
            return cls.from_wire(section["object"])
        patterns: dict[str, list[str]] = {}
        for key in ("include", "exclude"):
            value = section.get(key, [])
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise ConfigError(
                    f"selection config {key} must be a list of patterns",
                    hint=f'write {key} = ["messages", "waitlist/*"]',
                )
            if not all(isinstance(p, str) for p in value):
                raise ConfigError(
                    f"selection config {key} must hold only strings", hint=_PATTERN_HINT
                )
            patterns[key] = list(value)
        return cls.from_patterns(include=patterns["include"], exclude=patterns["exclude"])

    def to_wire(self) -> dict[str, Any]:
        """A fresh copy of the Convex selection object, ready to send."""
        return copy.deepcopy(dict(self.wire))

    @property
    def is_everything(self) -> bool:
        """True when nothing is filtered out."""
        return dict(self.wire) == {OTHER: INCLUDED}

    def includes(self, table: TableKey) -> bool:
        """Whether rows of ``table`` are replicated."""
        return self._table_rule(table) is not None

    def includes_column(self, table: TableKey, column: str) -> bool:
        """Whether ``column`` of ``table`` is replicated (``_id`` always is)."""
        rule = self._table_rule(table)
        if rule is None:
            return False
        if column == ID_FIELD:
            return True
        return rule.get(column, rule[OTHER]) == INCLUDED

    def excluded_columns(self, table: TableKey) -> set[str]:
        """Columns of an included table that are explicitly excluded.

        A table narrowed by column includes (``_other: excluded``) also drops every column
        it does not list; use :meth:`includes_column` for those.
        """
        rule = self._table_rule(table)
        if rule is None:
            return set()
        return {name for name, value in rule.items() if name != OTHER and value == EXCLUDED}

    def _table_rule(self, table: TableKey) -> Mapping[str, str] | None:
        component = self.wire.get(table.component, self.wire[OTHER])
        if component == EXCLUDED:
            return None
        if component == INCLUDED:  # an unlisted component under _other: included
            return {OTHER: INCLUDED}
        rule = component.get(table.table, component[OTHER])
        if rule == EXCLUDED:
            return None
        if rule == INCLUDED:
            return {OTHER: INCLUDED}
        return dict(rule)


def is_valid_field_name(name: str) -> bool:
    """A top-level Convex field: an identifier, or one of ``_id`` and ``_creationTime``."""
    return name in _SYSTEM_FIELDS or _FIELD_NAME.fullmatch(name) is not None


def pattern_text(pattern: Pattern) -> str:
    """The canonical text of a pattern (inverse of :meth:`Pattern.parse`)."""
    text = f"{pattern.component}/{pattern.table}" if pattern.component else pattern.table
    return f"{text}.{pattern.column}" if pattern.column is not None else text


def validate_selection(obj: object) -> dict[str, Any]:
    """Check a Convex selection object and return its canonical form.

    Canonical: ``incl``/``excl`` replaced by ``included``/``excluded``, keys sorted.

    Raises:
        ConfigError: naming the first problem: a missing or invalid ``_other``, a bad
            component, table or column name, a value of the wrong shape, or ``_id``
            excluded.
    """

    def bad(where: str, why: str) -> ConfigError:
        return ConfigError(f"invalid Convex selection at {where}: {why}", hint=_OBJECT_HINT)

    def inclusion(value: object, where: str) -> str:
        if isinstance(value, str) and value in _ALIASES:
            return _ALIASES[value]
        raise bad(where, f'{value!r} is not "included" or "excluded"')

    def level(value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise bad(where, "expected an object")
        if OTHER not in value:
            raise bad(where, 'missing "_other" ("included" or "excluded")')
        if not all(isinstance(key, str) for key in value):
            raise bad(where, "keys must be strings")
        return {OTHER: inclusion(value[OTHER], f"{where}._other")}

    top = level(obj, "top level")
    assert isinstance(obj, Mapping)
    for component_path in sorted(k for k in obj if k != OTHER):
        component_value = obj[component_path]
        where = f"component {component_path!r}"
        if not is_valid_component_path(component_path):
            raise bad(where, "not a component path")
        if isinstance(component_value, str):
            if _ALIASES.get(component_value) != EXCLUDED:
                raise bad(where, 'a component is "excluded" or an object with "_other"')
            top[component_path] = EXCLUDED
            continue
        component = level(component_value, where)
        for table_name in sorted(k for k in component_value if k != OTHER):
            table_value = component_value[table_name]
            where = f"table {TableKey(component_path, table_name).qualified!r}"
            if not is_valid_table_name(table_name):
                raise bad(where, "not a table name")
            if isinstance(table_value, str):
                if _ALIASES.get(table_value) != EXCLUDED:
                    raise bad(where, 'a table is "excluded" or an object with "_other"')
                component[table_name] = EXCLUDED
                continue
            table = level(table_value, where)
            for column in sorted(k for k in table_value if k != OTHER):
                if not is_valid_field_name(column):
                    raise bad(where, f"{column!r} is not a column name")
                table[column] = inclusion(table_value[column], f"{where} column {column!r}")
            if table.get(ID_FIELD, table[OTHER]) != INCLUDED:
                raise bad(where, "_id is excluded; _id can never be excluded")
            component[table_name] = table
        top[component_path] = component
    return top


def _apply_includes(wire: dict[str, Any], includes: list[Pattern]) -> None:
    for pattern in includes:
        component = wire.setdefault(pattern.component, {OTHER: EXCLUDED})
        if pattern.table == "*":
            component[OTHER] = INCLUDED
        elif pattern.column is None:
            component.setdefault(pattern.table, {OTHER: INCLUDED})
    for pattern in includes:
        if pattern.column is None:
            continue
        component = wire[pattern.component]
        table = component.get(pattern.table)
        if table is None or table == {OTHER: INCLUDED}:
            # Naming columns narrows the table to them (plus the two system fields).
            table = component[pattern.table] = {
                OTHER: EXCLUDED,
                ID_FIELD: INCLUDED,
                CREATION_TIME_FIELD: INCLUDED,
            }
        table[pattern.column] = INCLUDED


def _apply_excludes(wire: dict[str, Any], excludes: list[Pattern]) -> None:
    for pattern in excludes:
        component = wire.get(pattern.component)
        if component == EXCLUDED:
            continue
        if pattern.table == "*":
            wire[pattern.component] = EXCLUDED
            continue
        if component is None:
            if wire[OTHER] == EXCLUDED:
                continue  # never included, nothing to take away
            component = wire[pattern.component] = {OTHER: INCLUDED}
        table = component.get(pattern.table)
        if table == EXCLUDED or (table is None and component[OTHER] == EXCLUDED):
            continue  # already out
        if pattern.column is None:
            component[pattern.table] = EXCLUDED
            continue
        if table is None:
            table = component[pattern.table] = {OTHER: INCLUDED}
        table[pattern.column] = EXCLUDED
