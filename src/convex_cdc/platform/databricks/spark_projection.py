"""The table spec as Spark SQL: names and typed-column expressions for the Lakeflow templates.

The local apply types documents with :mod:`convex_cdc.core.type_mapping`; these are the
same rules written as Spark SQL over bronze's ``document`` (``export_json`` text), so
the rendered SQL and Python pipelines produce the same silver columns:

==========  ===========================================================================
column      expression over ``document``
==========  ===========================================================================
string      ``get_json_object`` (JSON strings come back unquoted)
int64       ``get_json_object`` cast to BIGINT (never DOUBLE: values may exceed 2^53)
float64     cast to DOUBLE; ``{"$float": b64}`` → +inf / -inf for the canonical payloads,
            NaN for any other (export_json tags only NaN and ±inf; -0.0 stays a number)
bool        cast to BOOLEAN
binary      ``unbase64`` of the ``$bytes`` tag
json        ``to_json`` of the field as VARIANT (keeps strings quoted; number formatting
            may differ from the local apply's text, the JSON value is the same)
==========  ===========================================================================

Field paths use bracket notation (``$["field"]``), so any field name is addressed
exactly; column names are back-quoted.
"""

from __future__ import annotations

from typing import Final

from convex_cdc.core.errors import ConfigError
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.platform.databricks.table_spec import TableSpec

POS_INF_B64: Final = "AAAAAAAA8H8="
NEG_INF_B64: Final = "AAAAAAAA8P8="

_UNTAGGED_FLOATS: Final = frozenset({"_creationTime"})
"""Float fields Convex itself writes, always finite, so never ``{"$float": ...}``-tagged:
a plain cast reads them exactly, without the three extra lookups of a user float."""

ENVELOPE_COLUMNS: Final = ("_id", "_ts")
"""Current-state columns that bronze (and the raw change log) carry as columns of their own;
the source views select them as they are."""

EXCEPT_COLUMNS: Final = ("_deleted",)
"""Source-view columns AUTO CDC must not copy into silver."""


def sql_name(key: TableKey) -> str:
    """The Unity Catalog name of ``key``'s bronze and silver tables.

    UC names cannot contain ``.``, so component segments are joined with ``__``:
    ``waitlist/ratelimiter`` + ``limits`` → ``waitlist__ratelimiter__limits``.
    """
    return "__".join([*key.component.split("/"), key.table]) if key.component else key.table


def quote(identifier: str) -> str:
    """A back-quoted Spark SQL identifier."""
    return "`" + identifier.replace("`", "``") + "`"


def string_literal(text: str) -> str:
    """A single-quoted Spark SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def json_path(field: str, *, tag: str | None = None) -> str:
    """``$["field"]`` (optionally ``["$tag"]``) as a SQL string literal."""
    path = '$["' + field.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    if tag is not None:
        path += f'["{tag}"]'
    return string_literal(path)


def column_expression(field: str, kind: ColumnType) -> str:
    """The Spark SQL expression that reads ``field`` of ``document`` as a ``kind`` column."""
    raw = f"get_json_object(document, {json_path(field)})"
    match kind:
        case ColumnType.STRING:
            return raw
        case ColumnType.INT64:
            return f"CAST({raw} AS BIGINT)"
        case ColumnType.BOOL:
            return f"CAST({raw} AS BOOLEAN)"
        case ColumnType.BINARY:
            return f"unbase64(get_json_object(document, {json_path(field, tag='$bytes')}))"
        case ColumnType.FLOAT64:
            tagged = f"get_json_object(document, {json_path(field, tag='$float')})"
            return (
                f"CASE WHEN {tagged} IS NULL THEN CAST({raw} AS DOUBLE) "
                f"WHEN {tagged} = '{POS_INF_B64}' THEN CAST('Infinity' AS DOUBLE) "
                f"WHEN {tagged} = '{NEG_INF_B64}' THEN CAST('-Infinity' AS DOUBLE) "
                "ELSE CAST('NaN' AS DOUBLE) END"
            )
        case ColumnType.JSON:
            variant_field = f"parse_json(document):[{string_literal(field)}]"
            return f"CASE WHEN {raw} IS NULL THEN NULL ELSE to_json({variant_field}) END"
        case ColumnType.NULL:
            raise ValueError("null-only fields get no column")


def projection(spec: TableSpec) -> list[tuple[str, str]]:
    """``(column, expression)`` of every silver column the document supplies.

    Rendered from the spec's :meth:`~TableSpec.column_specs` (the layout the local apply
    and staging use): every column but the envelope's own (:data:`ENVELOPE_COLUMNS`) is
    read from ``document`` with the expression for its type, ``_creationTime`` included.
    """
    columns = [
        (column.name, _expression(column.name, column.type))
        for column in spec.column_specs()
        if column.name not in ENVELOPE_COLUMNS
    ]
    if spec.keep_document:
        columns.append(("document", "document"))
    return columns


def check_unique_names(specs: list[TableSpec], *, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse specs whose generated names collide (Spark names are case-insensitive).

    Raises:
        ConfigError: naming the colliding tables.
    """
    seen: dict[str, TableKey] = {}
    for spec in specs:
        for suffix in ("", *suffixes):
            name = (sql_name(spec.key) + suffix).lower()
            other = seen.get(name)
            if other is not None and other != spec.key:
                raise ConfigError(
                    f"tables {other.qualified!r} and {spec.key.qualified!r} would both be "
                    f"named {name!r} in Databricks",
                    hint="render only one of them (--tables)",
                )
            seen[name] = spec.key


def _expression(field: str, kind: ColumnType) -> str:
    if field in _UNTAGGED_FLOATS and kind is ColumnType.FLOAT64:
        return f"CAST(get_json_object(document, {json_path(field)}) AS DOUBLE)"
    return column_expression(field, kind)
