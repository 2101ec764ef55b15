"""Which components, tables and columns an export request selects.

The selection rules are summarised in docs/convex-export-api.md §6.

The legacy endpoints accept one of four argument forms, tried in order like serde's
``untagged`` enum: the full ``selection`` object, ``tableName``/``table_name`` (+ optional
``component``), ``component`` alone, or nothing. A form that does not *parse* falls through
to the next one, so a malformed ``selection`` object silently exports everything, exactly as
the server does. A selection that parses but is semantically invalid (``_id`` excluded, a bad
table or component name) raises :class:`InvalidSelection`, which the legacy endpoints turn
into a 500 ``InternalServerError``.

The Data Sync endpoints take only the full object (:func:`parse_selection_object`), strictly:
a malformed one is an error there, not "everything".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_INCLUSION = {"included": True, "incl": True, "excluded": False, "excl": False}
_EXCLUDED_TAG = ("excluded", "excl")


class InvalidSelection(ValueError):
    """A selection that parses but cannot be honoured (e.g. ``_id`` excluded)."""


class MalformedSelection(ValueError):
    """The selection object does not deserialize (the legacy endpoints' untagged fallback
    moves on to the next form; the Data Sync endpoints answer ``BadJsonBody``)."""


@dataclass(frozen=True, slots=True)
class ColumnFilter:
    """Which top-level columns of a table's documents are exported."""

    columns: Mapping[str, bool] = field(default_factory=dict)
    other: bool = True

    def includes(self, column: str) -> bool:
        """Whether ``column`` is exported."""
        return self.columns.get(column, self.other)

    @property
    def keeps_everything(self) -> bool:
        """True when no column is removed (the cached-bytes fast path)."""
        return self.other and all(self.columns.values())


ALL_COLUMNS = ColumnFilter()


@dataclass(frozen=True, slots=True)
class ComponentSelection:
    """The tables of one component: ``None`` per table means excluded."""

    tables: Mapping[str, ColumnFilter | None]
    other_tables: bool


@dataclass(frozen=True, slots=True)
class RequestSelection:
    """The selection one export request carries, as the server parses it; ``None`` per
    component means excluded."""

    components: Mapping[str, ComponentSelection | None] = field(default_factory=dict)
    other_components: bool = True

    def column_filter(self, component: str, table: str) -> ColumnFilter | None:
        """The column filter of a table, or ``None`` when the table is not selected."""
        if component not in self.components:
            return ALL_COLUMNS if self.other_components else None
        selected = self.components[component]
        if selected is None:
            return None
        if table in selected.tables:
            return selected.tables[table]
        return ALL_COLUMNS if selected.other_tables else None

    def includes(self, component: str, table: str) -> bool:
        """Whether a table is selected."""
        return self.column_filter(component, table) is not None


EVERYTHING = RequestSelection()


def _inclusion(value: Any) -> bool:
    if isinstance(value, str) and value in _INCLUSION:
        return _INCLUSION[value]
    raise MalformedSelection


def _is_excluded_tag(value: Any) -> bool:
    return isinstance(value, str) and value in _EXCLUDED_TAG


def _parse_columns(raw: Any) -> ColumnFilter | None:
    if isinstance(raw, dict):
        if "_other" not in raw:
            raise MalformedSelection
        other = _inclusion(raw["_other"])
        columns = {name: _inclusion(value) for name, value in raw.items() if name != "_other"}
        return ColumnFilter(columns, other)
    if _is_excluded_tag(raw):
        return None
    raise MalformedSelection


def _parse_component(raw: Any) -> ComponentSelection | None:
    if isinstance(raw, dict):
        if "_other" not in raw:
            raise MalformedSelection
        other = _inclusion(raw["_other"])
        tables = {name: _parse_columns(value) for name, value in raw.items() if name != "_other"}
        return ComponentSelection(tables, other)
    if _is_excluded_tag(raw):
        return None
    raise MalformedSelection


def _parse_exact(raw: Any) -> RequestSelection:
    if not isinstance(raw, dict) or "_other" not in raw:
        raise MalformedSelection
    other = _inclusion(raw["_other"])
    components = {path: _parse_component(value) for path, value in raw.items() if path != "_other"}
    return RequestSelection(components, other)


def _check_component_path(path: str) -> None:
    if path and not all(_IDENTIFIER.fullmatch(part) for part in path.split("/")):
        raise InvalidSelection(f"invalid component path {path!r}")


def _check_table_name(name: str) -> None:
    if not _IDENTIFIER.fullmatch(name):
        raise InvalidSelection(f"invalid table name {name!r}")


def validate(selection: RequestSelection) -> RequestSelection:
    """Check names and the ``_id`` rule, as the server's conversion does.

    Raises:
        InvalidSelection: a bad component path, table name or column name, or a table
            whose column filter would drop ``_id``.
    """
    for path, component in selection.components.items():
        _check_component_path(path)
        if component is None:
            continue
        for table, columns in component.tables.items():
            _check_table_name(table)
            if columns is None:
                continue
            for column in columns.columns:
                if not column or column.startswith("$"):
                    raise InvalidSelection(f"invalid column name {column!r}")
            if not columns.includes("_id"):
                raise InvalidSelection("`_id` must be included in the column selection")
    return selection


def parse_selection_object(raw: Any) -> RequestSelection:
    """A full selection object, parsed strictly and validated (the Data Sync form).

    Raises:
        MalformedSelection: it does not deserialize (a missing ``_other``, an unknown word).
        InvalidSelection: it names something invalid, or excludes ``_id``.
    """
    return validate(_parse_exact(raw))


def selection_from_args(args: Mapping[str, Any]) -> RequestSelection:
    """Resolve the selection forms of a list_snapshot / document_deltas request.

    ``args`` is the query string (values are strings) or the JSON body.

    Raises:
        InvalidSelection: the chosen form names something invalid (→ 500 on these endpoints).
    """
    if "selection" in args:
        try:
            return validate(_parse_exact(args["selection"]))
        except MalformedSelection:
            pass
    has_snake, has_camel = "table_name" in args, "tableName" in args
    table = args.get("table_name") if has_snake else args.get("tableName")
    component = args.get("component")
    if (
        has_snake != has_camel
        and isinstance(table, str)
        and (component is None or isinstance(component, str))
    ):
        path = component or ""
        return validate(
            RequestSelection({path: ComponentSelection({table: ALL_COLUMNS}, False)}, False)
        )
    if isinstance(component, str):
        return validate(RequestSelection({component: ComponentSelection({}, True)}, False))
    return EVERYTHING
