"""Current state from change events: the one row builder every current-state target uses.

Staging (the S3/export target) and silver (the Databricks target) keep one row per
document, deletes applied, the highest ``_ts`` winning. Both build those rows with the
pure functions here, so the two agree by construction, value for value:

1. :func:`latest_events` keeps the last event per ``_id`` by ``(_id, _ts)``, ties in
   arrival order (a replay carries the same version, so either copy is right). Deletes
   are events like any other: a delete that is the latest event removes the row.
2. :func:`parse_fields` parses the events' documents (``export_json`` text) in bulk into
   one value list per field; deletes have no fields.
3. :func:`observed_column_types` gives the column type each user field's values need,
   so a target can evolve its columns (:func:`convex_cdc.core.columns.evolve_columns`)
   before typing.
4. :func:`typed_rows` types the rows against a column spec: ``_id`` and ``_ts`` from the
   events, ``_creationTime`` and the user columns from the documents
   (:mod:`convex_cdc.core.type_mapping` for every value).

How a target stores the result, and how it decides against what it already holds
(staging compares ``_ts`` with its segment files; silver lets a Delta MERGE compare), is
the target's business. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.columns import ColumnSpec, arrow_schema
from convex_cdc.core.document_columns import field_columns, parse_documents
from convex_cdc.core.type_mapping import (
    ColumnType,
    creation_time_array,
    typed_array,
    values_column_type,
)

DocumentFields = dict[str, list[Any]]
"""``{field: [value per row]}`` (``None`` where a row lacks the field or is a delete)."""

_NONE: Final = type(None)
_STRING_CHUNK_BYTES: Final = 2**31 - 2**20
"""Text (plus offsets) above which one ``string`` array would overflow its 32-bit offsets."""


class DocumentError(ValueError):
    """A document cannot become a row: it is not an object, or a value does not fit its
    column. ``position`` is the row (of the table given) and ``doc_id`` its ``_id``."""

    def __init__(self, message: str, *, position: int | None, doc_id: str | None) -> None:
        super().__init__(message)
        self.position = position
        self.doc_id = doc_id


def single_chunk(events: pa.Table) -> pa.Table:
    """``events`` with one chunk per column.

    ``take`` over many chunks (one per file or scanned batch) is orders of magnitude
    slower than over one. A ``document`` column holding more text than one ``string``
    array can address becomes ``large_string`` first.
    """
    if "document" in events.column_names:
        text = events.column("document")
        if text.type == pa.string() and text.nbytes >= _STRING_CHUNK_BYTES:
            position = events.column_names.index("document")
            events = events.set_column(position, "document", text.cast(pa.large_string()))
    return events.combine_chunks()


def latest_positions(events: pa.Table) -> pa.Array:
    """Positions of the last event per ``_id`` by ``(_id, _ts)``, ties in arrival order,
    listed in ``_id`` order. ``events`` needs ``_id`` and ``_ts``."""
    if events.num_rows == 0:
        return pa.array([], pa.uint64())
    # sort_indices is stable, so equal (_id, _ts) keep their arrival order.
    order = pc.sort_indices(
        events.select(["_id", "_ts"]), sort_keys=[("_id", "ascending"), ("_ts", "ascending")]
    )
    return order.filter(last_of_runs(events.column("_id").take(order)))


def latest_events(events: pa.Table) -> pa.Table:
    """One event per ``_id``: its last by ``(_id, _ts)`` (deletes included), in ``_id`` order.

    Sorting and taking the last row of each run avoids ``group_by(...).aggregate("last")``,
    which skips nulls and would pair a delete with the previous version's document.
    """
    events = single_chunk(events)
    return events.take(latest_positions(events))


def last_of_runs(sorted_ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    """True at the last row of each run of equal ids (``sorted_ids`` is sorted)."""
    ids = sorted_ids.combine_chunks() if isinstance(sorted_ids, pa.ChunkedArray) else sorted_ids
    n = len(ids)
    if n == 0:
        return pa.array([], pa.bool_())
    differs = pc.not_equal(ids.slice(0, n - 1), ids.slice(1))
    return pa.concat_arrays([differs, pa.array([True])])


def parse_fields(events: pa.Table) -> DocumentFields:
    """The ``document`` of every event, parsed, as one value list per field.

    Deletes (null documents) give rows without fields; a null document on a row that is
    not a delete is refused like any other broken document. Wrap long-lived results in
    :func:`convex_cdc.core.document_columns.paused_gc` (parsed documents are many small
    objects the cyclic collector would otherwise scan again and again).

    Raises:
        DocumentError: a document is not JSON text of an object (naming the first one).
    """
    # Bytes, not str: orjson parses them without a UTF-8 decode into Python first.
    texts = events.column("document").cast(pa.large_binary()).to_pylist()
    try:
        documents = parse_documents(texts)
    except orjson.JSONDecodeError:
        documents = []
    types = set(map(type, documents))
    if len(documents) != len(texts) or not types <= {dict, type(None)} or _NONE in types:
        deleted = (
            events.column("_deleted").to_pylist()
            if "_deleted" in events.column_names
            else [False] * len(texts)
        )
        position = next(
            (i for i, text in enumerate(texts) if not _is_document(text, deleted=deleted[i])),
            None,
        )
        if position is None:  # only deletes lack a document
            return field_columns(documents)
        raise DocumentError(
            "not a JSON object",
            position=position,
            doc_id=events.column("_id")[position].as_py(),
        )
    return field_columns(documents)


def observed_column_types(fields: Mapping[str, Sequence[Any]]) -> dict[str, ColumnType]:
    """The column type each user field's values need (system fields left out).

    Raises:
        TypeError: a value is not an ``export_json`` value.
    """
    return {name: values_column_type(values) for name, values in fields.items() if name[:1] != "_"}


def typed_rows(
    events: pa.Table, fields: Mapping[str, Sequence[Any]], columns: Sequence[ColumnSpec]
) -> pa.Table:
    """The rows of ``events`` typed against ``columns``.

    ``_id`` and ``_ts`` come from the events, every other column from ``fields`` (as
    :func:`parse_fields` gave them for the same events); a field the documents lack is
    all-null. Fields that ``columns`` does not list are left out.

    Raises:
        DocumentError: a value does not fit its column (the columns must cover the
            documents' types, see :func:`observed_column_types`).
    """
    rows = events.num_rows
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for spec in columns:
        if spec.name in ("_id", "_ts"):
            arrays.append(events.column(spec.name))
            continue
        values = fields.get(spec.name)
        try:
            if spec.name == "_creationTime":
                arrays.append(creation_time_array(values or [None] * rows))
            elif values is None:
                arrays.append(pa.nulls(rows, spec.type.arrow))
            else:
                arrays.append(typed_array(values, spec.type))
        except (TypeError, ValueError, OverflowError, KeyError, pa.ArrowException) as exc:
            raise DocumentError(
                f"field {spec.name!r} does not fit its {spec.type.value} column: {exc}",
                position=None,
                doc_id=None,
            ) from exc
    return pa.Table.from_arrays(arrays, schema=arrow_schema(columns))


def upserts_only(events: pa.Table) -> pa.Table:
    """The events that are not deletes."""
    deleted = events.column("_deleted")
    return events.filter(pc.invert(deleted)) if pc.any(deleted).as_py() else events


def _is_document(text: bytes | None, *, deleted: bool) -> bool:
    if text is None:
        return deleted
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False
