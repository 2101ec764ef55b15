"""Which top-level document fields convex-cdc can turn into columns.

Every top-level field of a document becomes a column of the same name in staging and in
silver, so a field name must be a usable column name for every reader of those tables.
convex-cdc does not rename fields (a renamed column is a surprise in every query); it
refuses, at sync time and before anything is written, a field name that

* is empty, or holds a control character (NUL included): Convex never stores such a name;
* starts with ``$``: ``export_json`` reserves that for tagged values;
* holds ``/`` or ``..``: unsafe wherever a column name becomes part of a path;
* differs only in case from another field of the same table: case-insensitive readers
  (Spark, Databricks SQL) cannot tell ``Name`` from ``name``.

Each page is checked as it is normalised, and the fields of every selected table's
current shape (``json_schemas``) before a walk starts. The error names the table and the
field, and how to go on: exclude the field (``--exclude table.field``) or rename it in
Convex.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from convex_cdc.core.errors import MalformedResponse
from convex_cdc.core.names import TableKey
from convex_cdc.core.selection import Selection

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_SHOWN_CHARS: Final = 60


def field_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a column, or ``None`` when it can (case aside)."""
    if not name:
        return "is empty"
    if _CONTROL.search(name):
        return "holds a control character"
    if name[0] == "$":
        return "starts with $, which export_json reserves for tagged values"
    if "/" in name:
        return "holds /"
    if ".." in name:
        return "holds .."
    return None


def case_twin(name: str, others: Iterable[str]) -> str | None:
    """Another name of ``others`` that differs from ``name`` only in case, if any."""
    folded = name.casefold()
    return next((o for o in others if o != name and o.casefold() == folded), None)


def refuse_field(table: TableKey, name: str, problem: str, *, endpoint: str) -> MalformedResponse:
    """The one-line error for a field of ``table`` that cannot be a column."""
    shown = repr(name if len(name) <= _SHOWN_CHARS else name[:_SHOWN_CHARS] + "…")
    return MalformedResponse(
        f"table {table.qualified!r} has a field {shown} that {problem}",
        endpoint=endpoint,
        hint="nothing was written and the checkpoint did not move; every top-level field "
        "becomes a column of the same name, so exclude this field (--exclude "
        "[component/]table.field) or rename it in Convex",
    )


def check_field_names(table: TableKey, names: Iterable[str], *, endpoint: str) -> None:
    """Refuse the first user field name of one table that cannot be a column.

    Names starting with ``_`` are Convex's metadata and system fields, not columns of
    their own, and are left out.

    Raises:
        MalformedResponse: naming the table and the field.
    """
    user = sorted(n for n in names if n[:1] != "_")
    for name in user:
        problem = field_name_problem(name)
        if problem is not None:
            raise refuse_field(table, name, problem, endpoint=endpoint)
        twin = case_twin(name, user)
        if twin is not None:
            raise refuse_field(
                table,
                name,
                f"differs from {twin!r} only in case, which case-insensitive readers "
                "(Spark, Databricks) cannot tell apart",
                endpoint=endpoint,
            )


def check_schema_field_names(
    schemas: Mapping[str, Mapping[str, Any]], selection: Selection | None
) -> None:
    """Refuse a selected field, in a ``json_schemas`` answer, that cannot be a column.

    The schema is the shape of each table's current data, so this catches, before a walk
    starts and at no cost per page, names that clash across pages or with what earlier
    runs landed; each page is checked on its own too, for fields new since the schema.

    Raises:
        MalformedResponse: naming the table and the field.
    """
    for component, tables in schemas.items():
        for table, schema in tables.items():
            key = TableKey(component, table)
            if selection is not None and not selection.includes(key):
                continue
            properties = schema.get("properties") if isinstance(schema, Mapping) else None
            if not isinstance(properties, Mapping):
                continue
            names = [
                name
                for name in properties
                if isinstance(name, str)
                and (selection is None or selection.includes_column(key, name))
            ]
            check_field_names(key, names, endpoint="json_schemas")
