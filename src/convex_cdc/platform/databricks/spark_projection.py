"""The table spec as Spark SQL: how the Lakeflow source views read typed silver columns.

The local apply types documents with :mod:`convex_cdc.core.type_mapping`
(:func:`convex_cdc.core.current_state.typed_rows`); the rendered pipelines must produce the
same values from bronze's ``document`` (``export_json`` text). Spark parses every document
twice per row, whatever the number of columns, with ``from_json`` and schemas derived from
the spec's :meth:`~TableSpec.column_specs` (the Python source's JSON columns add one scan
in a pandas UDF):

``typed``
    each field as its column's own Spark type, with ``allowNonNumericNumbers`` off. Spark's
    JSON reader converts strictly: ``BIGINT`` takes only JSON integers (exactly, above 2^53
    too), ``DOUBLE`` only numbers (-0.0 and subnormals exact), ``BOOLEAN`` only
    ``true``/``false``, ``STRUCT<`$bytes`: BINARY>`` base64-decodes a bytes tag, and a
    value of any other kind is NULL in that field alone (the other fields keep theirs).
``kinds``
    ``VARIANT`` for the fields that need to know a value's JSON kind: a ``STRING`` field
    reads any value as text, a ``DOUBLE`` field reads integers too, and ``$integer`` /
    ``$float`` tags are objects. ``schema_of_variant`` names the kind (``STRING``,
    ``BIGINT`` for a JSON integer); a tag's payload is the variant cast to
    ``STRUCT<`$float`: STRING>`` (no JSON path). The variant is never used for a float's
    value: it keeps -0.0 as 0.

So a value that does not fit its column (the field widened after the render) is NULL,
never an error, whatever ANSI mode says:

==========  ==================================================================  ==========
column      expression                                                          exactness
==========  ==================================================================  ==========
string      ``typed`` text if ``kinds`` is a ``STRING``                         exact
int64       ``typed`` BIGINT, else a ``$integer`` tag (8 bytes LE, base64)      exact
            read as hex by ``conv``, padded or cut to 16 digits so that a
            malformed tag cannot overflow (an error in ANSI mode)
float64     ``typed`` DOUBLE unless ``kinds`` is an integer; ``$float`` tags:   bits, but
            the two infinities, any other payload is NaN                        NaN payload
bool        ``typed`` BOOLEAN                                                   exact
binary      ``typed`` ``$bytes`` tag, base64-decoded by the JSON reader         exact
json        SQL source: Spark's JSON text of the value (a string value quoted   same value
            by ``to_json``)
json        Python source: the field's own text, cut out of the document by a   same bytes
            pandas UDF (:data:`JSON_TEXT`)
==========  ==================================================================  ==========

``_creationTime`` is a plain finite number Convex writes itself: ``typed`` DOUBLE.
``_id`` and ``_ts`` are envelope columns. Spark SQL cannot build a double from its bits,
and Spark's Parquet writer stores every NaN as the canonical one anyway, so NaN payloads
are the one thing a Spark-built silver table cannot keep. Spark's JSON writer (Jackson)
formats numbers its own way (``5e-324`` → ``4.9E-324``, ``1e+20`` → ``1.0E20``) and
escapes control characters in upper case; the SQL source's JSON text therefore parses to
the same value as staging's but is not byte-equal. Field paths never appear: ``from_json``
matches field names exactly, so no JSONPath dialect (``$["f"]`` is NULL on Apache Spark)
is involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from convex_cdc.core.columns import ColumnSpec
from convex_cdc.core.errors import ConfigError
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.platform.databricks.table_spec import TableSpec

JsonText = Literal["spark", "document"]
"""Where a JSON column's text comes from: ``spark``, Spark's own JSON writer (value-exact,
plain SQL); ``document``, the field's text in the document (byte-exact, a Python UDF)."""

TYPED: Final = "typed"
"""The source-view struct of every field parsed as its column's Spark type."""
KINDS: Final = "kinds"
"""The source-view struct of the fields parsed as ``VARIANT``, to know their JSON kind."""
JSON_TEXT: Final = "json_text"
"""The source-view struct of the JSON columns' own text (Python source only)."""
TYPED_OPTIONS: Final = {"allowNonNumericNumbers": "false"}
"""``from_json`` options of :data:`TYPED`: a JSON string such as ``"NaN"`` or
``"Infinity"`` is not a number (by default a ``DOUBLE`` field would read it as one)."""

POS_INF_B64: Final = "AAAAAAAA8H8="
NEG_INF_B64: Final = "AAAAAAAA8P8="

ENVELOPE_COLUMNS: Final = ("_id", "_ts")
"""Current-state columns that bronze (and the raw change log) carry as columns of their own;
the source views select them as they are."""

EXCEPT_COLUMNS: Final = ("_deleted", "_op", "_batch")
"""Source-view columns AUTO CDC must not copy into silver (they decide deletes, truncates
and the order of events)."""

_SPARK_TYPES: Final = {
    ColumnType.STRING: "STRING",
    ColumnType.INT64: "BIGINT",
    ColumnType.FLOAT64: "DOUBLE",
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.BINARY: "STRUCT<`$bytes`: BINARY>",
    ColumnType.JSON: "STRING",
}
"""The :data:`TYPED` field type of each column type."""

_NEEDS_KIND: Final = frozenset({ColumnType.STRING, ColumnType.INT64, ColumnType.FLOAT64})
"""Column types whose expression asks :data:`KINDS` (JSON columns too, with ``spark`` text)."""


@dataclass(frozen=True, slots=True)
class ColumnReading:
    """One silver column of a source view: its name and the Spark SQL expression (over
    the envelope columns, :data:`TYPED`, :data:`KINDS` and :data:`JSON_TEXT`) that reads it.

    ``lines`` is the expression laid out for the SQL source; :attr:`expression` is the same
    on one line.
    """

    name: str
    lines: tuple[str, ...]

    @property
    def expression(self) -> str:
        """The expression on one line."""
        text = ""
        for line in (line.strip() for line in self.lines):
            if text and not text.endswith("(") and not line.startswith(")"):
                text += " "
            text += line
        return text


@dataclass(frozen=True, slots=True)
class Projection:
    """How one table's source view reads its silver columns out of ``document``."""

    typed_schema: str
    """The ``from_json`` schema (DDL) of :data:`TYPED`."""
    kinds_schema: str
    """The ``from_json`` schema (DDL) of :data:`KINDS`; empty when no column needs it."""
    json_fields: tuple[str, ...]
    """The fields :data:`JSON_TEXT` cuts out of the document (``document`` JSON text)."""
    columns: tuple[ColumnReading, ...]
    """Every silver column in order (the spec's, then ``document`` when it is kept)."""
    keeps_document: bool


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


def projection(spec: TableSpec, *, json_text: JsonText) -> Projection:
    """How the source view of ``spec``'s table reads each silver column.

    Rendered from the spec's :meth:`~TableSpec.column_specs` (the layout the local apply
    and staging use): the envelope's ``_id`` and ``_ts`` as they are, every other column
    from ``document`` with the expression for its type; ``document`` itself last when the
    spec keeps it.
    """
    typed: list[str] = []
    kinds: list[str] = []
    json_fields: list[str] = []
    columns: list[ColumnReading] = []
    for column in spec.column_specs():
        if column.name in ENVELOPE_COLUMNS:
            columns.append(ColumnReading(column.name, (column.name,)))
            continue
        reads_text = column.type is ColumnType.JSON and json_text == "document"
        if reads_text:
            json_fields.append(column.name)
        else:
            typed.append(f"{quote(column.name)} {_SPARK_TYPES[column.type]}")
        if column.name != "_creationTime" and (
            column.type in _NEEDS_KIND or (column.type is ColumnType.JSON and not reads_text)
        ):
            kinds.append(f"{quote(column.name)} VARIANT")
        columns.append(ColumnReading(column.name, _expression(column, json_text=json_text)))
    if spec.keep_document:
        columns.append(ColumnReading("document", ("document",)))
    return Projection(
        typed_schema=", ".join(typed),
        kinds_schema=", ".join(kinds),
        json_fields=tuple(json_fields),
        columns=tuple(columns),
        keeps_document=spec.keep_document,
    )


def check_unique_names(
    specs: Sequence[TableSpec],
    *,
    suffixes: tuple[str, ...] = (),
    reserved: Mapping[str, str] | None = None,
) -> None:
    """Refuse specs whose generated names collide (Spark names are case-insensitive).

    Args:
        specs: the tables to render.
        suffixes: the suffixes of the other names each table gets (views, flows).
        reserved: names taken by something else in the same schema → what that is.

    Raises:
        ConfigError: naming the colliding tables, or the table and what has its name.
    """
    taken = {name.lower(): what for name, what in (reserved or {}).items()}
    seen: dict[str, TableKey] = {}
    for spec in specs:
        for suffix in ("", *suffixes):
            name = (sql_name(spec.key) + suffix).lower()
            if name in taken:
                raise ConfigError(
                    f"table {spec.key.qualified!r} would be named {name!r} in Databricks, "
                    f"the name of {taken[name]}",
                    hint="render without it (--tables)",
                )
            other = seen.get(name)
            if other is not None and other != spec.key:
                raise ConfigError(
                    f"tables {other.qualified!r} and {spec.key.qualified!r} would both be "
                    f"named {name!r} in Databricks",
                    hint="render only one of them (--tables)",
                )
            seen[name] = spec.key


def _expression(column: ColumnSpec, *, json_text: JsonText) -> tuple[str, ...]:
    """The expression lines that read ``column`` (see the module docstring)."""
    field = quote(column.name)
    typed, kind = f"{TYPED}.{field}", f"{KINDS}.{field}"
    if column.name == "_creationTime":
        return (typed,)
    match column.type:
        case ColumnType.STRING:
            return (f"IF(schema_of_variant({kind}) = 'STRING', {typed}, NULL)",)
        case ColumnType.INT64:
            tag = f"try_variant_get({kind}, '$', 'STRUCT<`$integer`: STRING>').`$integer`"
            return (
                "coalesce(",
                f"  {typed},",
                f"  CAST(conv(lpad(hex(reverse(try_to_binary({tag}, 'base64'))), 16, '0'), 16, -10)"
                " AS BIGINT)",
                ")",
            )
        case ColumnType.FLOAT64:
            tag = f"try_variant_get({kind}, '$', 'STRUCT<`$float`: STRING>').`$float`"
            return (
                "CASE",
                f"  WHEN {typed} IS NOT NULL",
                f"    THEN IF(schema_of_variant({kind}) = 'BIGINT', NULL, {typed})",
                f"  WHEN {tag} = '{POS_INF_B64}' THEN CAST('Infinity' AS DOUBLE)",
                f"  WHEN {tag} = '{NEG_INF_B64}' THEN CAST('-Infinity' AS DOUBLE)",
                f"  WHEN {tag} IS NOT NULL THEN CAST('NaN' AS DOUBLE)",
                "END",
            )
        case ColumnType.BOOL:
            return (typed,)
        case ColumnType.BINARY:
            return (f"{typed}.`$bytes`",)
        case ColumnType.JSON if json_text == "document":
            return (f"{JSON_TEXT}.{field}",)
        case ColumnType.JSON:
            return (f"IF(schema_of_variant({kind}) = 'STRING', to_json({kind}), {typed})",)
        case ColumnType.NULL:
            raise ValueError("null-only fields get no column")
