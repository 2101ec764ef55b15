"""Change events and batches: the one shape every target receives.

One or more consecutive pages from Convex become one :class:`ChangeBatch`: an Arrow
table of change events in the raw_change_log layout (:data:`RAW_CHANGE_LOG_SCHEMA`) plus the
checkpoint that becomes true once the batch is durable. Documents travel as lossless
``export_json`` text, so no target has to know the Convex wire format to store them.
"""

from __future__ import annotations

import binascii
import functools
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import accumulate, repeat
from typing import Any, Final, Literal, NamedTuple, cast

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.errors import MalformedResponse
from convex_cdc.core.field_names import check_field_names, field_name_problem
from convex_cdc.core.names import (
    TableKey,
    is_system_table_name,
    is_valid_component_path,
    is_valid_table_name,
)

BatchKind = Literal["snapshot", "delta", "data-sync"]
"""What a batch's pages came from: the legacy snapshot walk, the legacy change log, or a
Data Sync (its walk and its changes in one stream)."""


class Op(StrEnum):
    """Why a row is in the change log."""

    SNAPSHOT = "snapshot"
    """A document as of the snapshot timestamp, from the initial walk."""
    UPSERT = "upsert"
    """A new full version of a document, from document_deltas."""
    DELETE = "delete"
    """A tombstone from document_deltas or Data Sync; ``document`` is null."""
    TRUNCATE = "truncate"
    """The table entered a data sync (cold start, newly selected, replaced by an import):
    everything held for it from earlier batches is gone. ``_id`` is ``""``, ``_ts`` is 0,
    ``document`` is null. It is among the first rows of its batch (a page with truncates
    starts a batch), so "before" is simply "in an earlier batch"."""
    DROP = "drop"
    """The table is gone from the source (dropped in Convex): everything held for it from
    earlier batches is gone, and so is the table itself. Same shape as a truncate (``_id``
    ``""``, ``_ts`` 0, ``document`` null), in a batch of drop rows only. Convex sends
    nothing for a dropped table; convex-cdc finds it missing from ``json_schemas``
    (:mod:`convex_cdc.core.table_drops`)."""


TABLE_OPS: Final = (Op.TRUNCATE.value, Op.DROP.value)
"""``_op`` values of rows about a whole table rather than a document: each empties the
table of what earlier batches hold, and none ever becomes a current-state row."""

RAW_CHANGE_LOG_SCHEMA: Final = pa.schema(
    [
        pa.field("_component", pa.string(), nullable=False),
        pa.field("_table", pa.string(), nullable=False),
        pa.field("_id", pa.string(), nullable=False),
        pa.field("_ts", pa.int64(), nullable=False),
        pa.field("_deleted", pa.bool_(), nullable=False),
        pa.field("_op", pa.string(), nullable=False),
        pa.field("_batch", pa.int64(), nullable=False),
        pa.field("_snapshot_ts", pa.int64(), nullable=True),
        pa.field("_extracted_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("document", pa.string(), nullable=True),
    ]
)
"""Column layout of a change-event batch, of raw_change_log files and of bronze envelopes."""

DEFAULT_MAX_DOCUMENT_BYTES: Final = 8 * 1024 * 1024
"""Convex caps documents at 1 MiB; export_json text of one can be ~1.4x that (base64).
Anything far beyond is not a Convex document and is refused rather than buffered."""

_METADATA_KEYS: Final = ("_component", "_table", "_ts", "_deleted")
_KEPT_UNDERSCORE_FIELDS: Final = frozenset({"_id", "_creationTime"})


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One row of a batch, for code that wants objects instead of columns (tests, tools)."""

    component: str
    table: str
    id: str
    ts: int
    deleted: bool
    op: Op
    document: str | None

    @property
    def key(self) -> TableKey:
        """The table this event belongs to."""
        return TableKey(self.component, self.table)


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """The change events of one or more consecutive pages of one phase, and the checkpoint
    that is true once they are durable (the position after the last page)."""

    seq: int
    """``batch_seq`` of this batch; a replay of the batch carries the same number."""
    kind: BatchKind
    events: pa.Table
    """Rows in :data:`RAW_CHANGE_LOG_SCHEMA`, in server order."""
    checkpoint: Checkpoint
    snapshot_ts: int | None
    """The walk's timestamp for snapshot batches, ``None`` for delta batches. A target that
    sees a snapshot batch of a walk it has not seen before truncates every table first
    (``--resnapshot`` is a truncate-and-reload)."""
    wire_format: str
    response_bytes: int
    """Bytes of the HTTP response bodies this batch came from (for throughput figures)."""

    @property
    def num_events(self) -> int:
        """Number of change events in the batch."""
        return int(self.events.num_rows)

    def tables(self) -> list[TableKey]:
        """The distinct tables in this batch, sorted."""
        return tables_in(self.events)

    def events_for(self, table: TableKey) -> pa.Table:
        """The rows of one table, in server order."""
        if self.tables() == [table]:
            return self.events
        mask = pc.and_(
            pc.equal(self.events.column("_component"), table.component),
            pc.equal(self.events.column("_table"), table.table),
        )
        return self.events.filter(mask)

    def iter_events(self) -> Iterator[ChangeEvent]:
        """Rows as :class:`ChangeEvent` objects (slow; not for the hot path)."""
        for row in self.events.to_pylist():
            yield ChangeEvent(
                component=row["_component"],
                table=row["_table"],
                id=row["_id"],
                ts=row["_ts"],
                deleted=row["_deleted"],
                op=Op(row["_op"]),
                document=row["document"],
            )


def tables_in(events: pa.Table) -> list[TableKey]:
    """The distinct ``(_component, _table)`` pairs of change-event rows, sorted.

    Chunk by chunk (a batch's chunks are its pages, most of one table each): two
    ``unique`` kernels per chunk, and pairs value by value only for a chunk of several
    tables. Not a ``group_by``, whose engine costs more to import than a sync spends here.
    """
    if events.num_rows == 0:
        return []
    pairs: set[TableKey] = set()
    for chunk in events.select(["_component", "_table"]).to_batches():
        components, tables = chunk.column(0), chunk.column(1)
        unique_components, unique_tables = components.unique(), tables.unique()
        if len(unique_components) == 1 and len(unique_tables) == 1:
            pairs.add(TableKey(unique_components[0].as_py(), unique_tables[0].as_py()))
        elif len(chunk):
            pairs.update(map(TableKey, components.to_pylist(), tables.to_pylist()))
    return sorted(pairs)


def truncate_events(
    tables: Sequence[TableKey],
    *,
    batch_seq: int,
    extracted_at: datetime | None = None,
    snapshot_ts: int | None = None,
) -> pa.Table:
    """One :attr:`Op.TRUNCATE` row per table of ``tables``, in order. ``snapshot_ts``: the
    walk a ``--resnapshot`` opens with them (``None`` for a data sync's truncates)."""
    return _table_events(Op.TRUNCATE, tables, batch_seq, extracted_at, snapshot_ts)


def drop_events(
    tables: Sequence[TableKey], *, batch_seq: int, extracted_at: datetime | None = None
) -> pa.Table:
    """One :attr:`Op.DROP` row per table of ``tables``, in order."""
    return _table_events(Op.DROP, tables, batch_seq, extracted_at)


def _table_events(
    op: Op,
    tables: Sequence[TableKey],
    batch_seq: int,
    extracted_at: datetime | None,
    snapshot_ts: int | None = None,
) -> pa.Table:
    """Rows about whole tables (truncates, drops): no id, no timestamp, no document."""
    count = len(tables)
    return pa.table(
        {
            "_component": pa.array([t.component for t in tables], pa.string()),
            "_table": pa.array([t.table for t in tables], pa.string()),
            "_id": pa.array([""] * count, pa.string()),
            "_ts": pa.array([0] * count, pa.int64()),
            "_deleted": pa.array([False] * count, pa.bool_()),
            "_op": pa.array([op.value] * count, pa.string()),
            "_batch": pa.array([batch_seq] * count, pa.int64()),
            "_snapshot_ts": pa.array([snapshot_ts] * count, pa.int64()),
            "_extracted_at": pa.array(
                [extracted_at or datetime.now(UTC)] * count, pa.timestamp("us", tz="UTC")
            ),
            "document": pa.nulls(count, pa.string()),
        },
        schema=RAW_CHANGE_LOG_SCHEMA,
    )


def events_from_values(
    values: Sequence[Any],
    *,
    kind: Literal["snapshot", "delta"],
    batch_seq: int,
    snapshot_ts: int | None,
    extracted_at: datetime | None = None,
    endpoint: str,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    consume_values: bool = False,
) -> pa.Table:
    """Normalise the ``values`` of one page into change-event rows.

    Validates what targets rely on: every value is an object with string ``_component``,
    ``_table`` and ``_id`` and an integer ``_ts``; delta values carry a boolean
    ``_deleted``; snapshot values are never tombstones; table and component names are
    Convex identifiers (so they are safe to turn into paths downstream); no document is
    larger than ``max_document_bytes``; the export format holds (``_creationTime`` is a
    number, every ``$``-tagged value is a well-formed ``$bytes``, ``$float`` or
    ``$integer``); every field name can be a column (:mod:`convex_cdc.core.field_names`);
    no ``_id`` twice in one snapshot page. So whatever sync lands, materialize can type.
    Values of system tables are dropped. ``values``
    is not modified, unless ``consume_values``: then the caller gives them up (they are
    used as the documents, without their metadata keys), which saves copying each one.

    Raises:
        MalformedResponse: naming the first offending value, before anything is written.
    """
    columns = _page_columns(values, kind, max_document_bytes, consume_values)
    if columns is None:
        # Something is unusual (a bad value, a system table, an unknown underscore field):
        # the value-by-value path drops it or refuses it, naming the first offender.
        columns = _checked_columns(values, kind, endpoint, max_document_bytes)
    events = _events_table(columns, kind, batch_seq, snapshot_ts, extracted_at or datetime.now(UTC))
    _check_documents(events, kind, endpoint)
    return events


class _Columns(NamedTuple):
    components: list[str]
    tables: list[str]
    ids: list[str]
    tss: list[int]
    deleted: list[bool]
    documents: list[bytes | None]
    """Sorted-key export_json of each document's fields, ``None`` for deletes."""


_EVENT_TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
_INT64_MAX: Final = 2**63 - 1
_INT32_MAX: Final = 2**31 - 1
_dumps_sorted: Final = functools.partial(orjson.dumps, option=orjson.OPT_SORT_KEYS)


def _page_columns(
    values: Sequence[Any],
    kind: Literal["snapshot", "delta"],
    max_document_bytes: int,
    consume: bool,
) -> _Columns | None:
    """The columns of a well-formed page of user-table values, ``None`` for anything else.

    The hot path: the same checks as :func:`_checked_columns`, made column by column with
    C-level iteration (``map``, ``set``, ``min``) instead of value by value, in as few
    passes over the page as they allow. ``consume``: the documents are the values
    themselves, their metadata keys popped (and put back if the page turns out to need
    the value-by-value path).
    """
    if not values:
        return _Columns([], [], [], [], [], [])
    if set(map(type, values)) != {dict}:
        return None
    # Shallow copies keep the page's own values intact, unless the caller gave them up.
    fields: Sequence[dict[str, Any]] = values if consume else list(map(dict.copy, values))
    pop, absent = dict.pop, repeat(_ABSENT)
    metadata = [list(map(pop, fields, repeat(key), absent)) for key in _METADATA_KEYS]
    columns = _well_formed_columns(fields, metadata, kind, max_document_bytes)
    if columns is None and consume:  # the value-by-value path looks at the values whole
        for value, *items in zip(fields, *metadata, strict=True):
            kept = zip(_METADATA_KEYS, items, strict=True)
            value.update((key, item) for key, item in kept if item is not _ABSENT)
    return columns


def _well_formed_columns(
    fields: Sequence[dict[str, Any]],
    metadata: list[list[Any]],
    kind: Literal["snapshot", "delta"],
    max_document_bytes: int,
) -> _Columns | None:
    """:func:`_page_columns` once the metadata keys are off the values (``_ABSENT`` where
    one was missing): the columns, or ``None`` if any check fails."""
    components, tables, tss, flags = metadata
    ids: list[Any] = list(map(dict.get, fields, repeat("_id")))
    if set(map(type, ids)) != {str} or "" in ids:
        return None
    if set(map(type, tss)) != {int} or min(tss) < 0 or max(tss) > _INT64_MAX:
        return None
    try:
        pairs = set(zip(components, tables, strict=True))
    except TypeError:  # an unhashable name: the value-by-value path names it
        return None
    for component, table in pairs:
        if not (
            type(component) is str
            and type(table) is str
            and is_valid_table_name(table)  # also False for system tables
            and is_valid_component_path(component)
        ):
            return None
    if kind == "delta":
        if set(map(type, flags)) != {bool}:
            return None
        deleted: list[bool] = flags
    elif flags.count(_ABSENT) < len(flags) and any(f for f in flags if f is not _ABSENT):
        return None
    else:
        deleted = [False] * len(fields)
    extra = set[Any]().union(*fields) - _KEPT_UNDERSCORE_FIELDS
    if any(type(key) is not str or key[:1] == "_" for key in extra):
        return None
    if any(map(field_name_problem, extra)) or len(set(map(str.casefold, extra))) < len(extra):
        return None  # the value-by-value path names the table and the field, or accepts
    documents = _documents(fields, deleted if kind == "delta" else None)
    if (
        documents is None
        or max(map(len, filter(None, documents)), default=0) > max_document_bytes
        or not set(map(type, map(dict.get, fields, repeat(_CREATION_TIME)))) <= _NUMBER_OR_NONE
    ):
        return None
    return _Columns(components, tables, ids, tss, deleted, documents)


_ABSENT: Final = object()
"""Marks a value without a ``_deleted`` key."""

_CREATION_TIME: Final = "_creationTime"
_NUMBER_OR_NONE: Final = frozenset({float, int, type(None)})
_TAG_PAYLOAD_BYTES: Final = {"$bytes": None, "$float": 8, "$integer": 8}
"""The export_json tags and the decoded size of their payload (``None``: any)."""
_B64: Final = rb"[A-Za-z0-9+/]"
_TAG_TAIL: Final = rb'(?:bytes":"(?:B{4})*(?:B{2}==|B{3}=)?|float":"B{11}=|integer":"B{11}=)"\}'
"""What follows ``{"$`` in a well-formed tag object; ``B`` stands for a base64 character."""
_NOT_A_TAG: Final = re.compile((rb'"\$(?!(?<=\{"\$)' + _TAG_TAIL + rb")").replace(b"B", _B64))
"""A ``"$`` in compact JSON text that does not start a well-formed tag object (its only
key a known tag, its payload base64, of 8 bytes for ``$float`` and ``$integer``)."""


def _tags_well_formed(text: bytes | memoryview) -> bool:
    """Whether every object of the compact JSON ``text`` (one or more documents) with a
    ``$`` key is a well-formed tag; ``False`` may also mean "look closer".

    One regex scan in C for a whole page. Inside a JSON string a quote is always escaped,
    so a ``"$`` after ``{`` starts a ``$`` key; keys are sorted, so it is the object's
    first. After ``,`` it is a later key or a string in an array: :func:`_tag_problem`
    decides. Anywhere else it is inside a string, or starts one.
    """
    for candidate in _NOT_A_TAG.finditer(text):
        start = candidate.start()
        if start > 0 and text[start - 1] in b"{,":
            return False
    return True


def _check_documents(events: pa.Table, kind: BatchKind, endpoint: str) -> None:
    """Checks made on the built batch, column at a time in C: no ``_id`` twice in one
    snapshot page (a page holds one table), and every ``$`` tag well-formed.

    Raises:
        MalformedResponse: naming the value and the problem.
    """
    if kind == "snapshot" and events.num_rows > 1:
        ids = events.column("_id")
        if pc.count_distinct(ids).as_py() < events.num_rows:
            counts = pc.value_counts(ids).flatten()
            twice = counts[0].filter(pc.greater(counts[1], 1))[0].as_py()
            raise MalformedResponse(
                f"value {_shorten(twice)} appears twice in one page", endpoint=endpoint
            )
    documents = events.column("document")
    if all(
        chunk.buffers()[2] is None or _tags_well_formed(memoryview(chunk.buffers()[2]))
        for chunk in documents.chunks
    ):
        return
    # Rare: a $ key that may be malformed. Decide document by document.
    ids = events.column("_id").to_pylist()
    tables = events.column("_table").to_pylist()
    for position, text in enumerate(documents.cast(pa.binary()).to_pylist()):
        if text is None or _tags_well_formed(text):
            continue
        problem = _tag_problem(orjson.loads(text), "the document")
        if problem is not None:
            raise MalformedResponse(
                f"value {ids[position]} in table {tables[position]!r}: {problem}",
                endpoint=endpoint,
            )


def _tag_problem(value: Any, where: str) -> str | None:
    """The first malformed ``$`` tag inside ``value`` (at ``where``), or ``None``."""
    if isinstance(value, list):
        for position, item in enumerate(value):
            problem = _tag_problem(item, f"{where}[{position}]")
            if problem is not None:
                return problem
        return None
    if not isinstance(value, dict):
        return None
    tags = [key for key in value if key[:1] == "$"]
    if not tags:
        for key, item in value.items():
            problem = _tag_problem(item, f"{where}.{_shorten(key, 40)}")
            if problem is not None:
                return problem
        return None
    tag = tags[0]
    if len(value) != 1:
        return f"{where} holds the tag {_shorten(tag, 40)!r} next to other keys"
    if tag not in _TAG_PAYLOAD_BYTES:
        return f"{where} holds {_shorten(tag, 40)!r}, which is not an export_json tag"
    payload = value[tag]
    if not isinstance(payload, str):
        return f"{where} is a {tag} tag whose payload is not a string"
    try:
        decoded = binascii.a2b_base64(payload.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        return f"{where} is a {tag} tag whose payload is not base64"
    size = _TAG_PAYLOAD_BYTES[tag]
    if size is not None and len(decoded) != size:
        return f"{where} is a {tag} tag of {len(decoded)} bytes, not {size}"
    return None


def _documents(
    fields: Sequence[dict[str, Any]], deleted: list[bool] | None
) -> list[bytes | None] | None:
    """Each value's fields as sorted-key JSON; ``None`` if one cannot be encoded."""
    try:
        if deleted is None:
            return list(map(_dumps_sorted, fields))
        return [
            None if gone else _dumps_sorted(doc) for doc, gone in zip(fields, deleted, strict=True)
        ]
    except TypeError:  # orjson.JSONEncodeError is one
        return None


def _checked_columns(
    values: Sequence[Any],
    kind: Literal["snapshot", "delta"],
    endpoint: str,
    max_document_bytes: int,
) -> _Columns:
    """Value by value: drops system-table values and unknown underscore fields, and raises
    :class:`MalformedResponse` on the first value that breaks the contract."""
    columns = _Columns([], [], [], [], [], [])
    names_by_table: dict[TableKey, set[str]] = {}
    for position, value in enumerate(values):
        if not isinstance(value, dict):
            raise MalformedResponse(f"value #{position} is not an object", endpoint=endpoint)
        component = value.get("_component")
        table = value.get("_table")
        doc_id = value.get("_id")
        ts = value.get("_ts")
        if not isinstance(doc_id, str) or not doc_id:
            raise MalformedResponse(
                f"value #{position} (table {table!r}) has no string _id", endpoint=endpoint
            )
        if not isinstance(table, str):
            raise MalformedResponse(f"value {doc_id} has no string _table", endpoint=endpoint)
        if not isinstance(component, str):
            raise MalformedResponse(f"value {doc_id} has no string _component", endpoint=endpoint)
        if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= _INT64_MAX:
            raise MalformedResponse(f"value {doc_id} has no integer _ts", endpoint=endpoint)
        if is_system_table_name(table):
            continue  # a system table: never exported, never landed
        if not is_valid_table_name(table):
            raise MalformedResponse(
                f"value {doc_id} names table {_shorten(table)!r}, which is not a Convex table name",
                endpoint=endpoint,
            )
        if not is_valid_component_path(component):
            raise MalformedResponse(
                f"value {doc_id} names component {_shorten(component)!r}, which is not a "
                "Convex component path",
                endpoint=endpoint,
            )
        flag = value.get("_deleted")
        if kind == "delta":
            if not isinstance(flag, bool):
                raise MalformedResponse(
                    f"value {doc_id} has no boolean _deleted", endpoint=endpoint
                )
        elif flag:
            raise MalformedResponse(
                f"list_snapshot returned a tombstone for {doc_id}", endpoint=endpoint
            )
        is_delete = bool(flag)
        creation_time = value.get(_CREATION_TIME)
        if type(creation_time) not in _NUMBER_OR_NONE:
            raise MalformedResponse(
                f"value {doc_id} in table {table!r} has _creationTime {_kind(creation_time)}, "
                "not a number",
                endpoint=endpoint,
            )
        key = TableKey(component, table)
        check_field_names(key, value, endpoint=endpoint)
        names_by_table.setdefault(key, set()).update(value)
        document: bytes | None = None
        if not is_delete:
            fields = {
                k: v for k, v in value.items() if k[:1] != "_" or k in _KEPT_UNDERSCORE_FIELDS
            }
            try:
                document = _dumps_sorted(fields)
            except TypeError as exc:  # orjson.JSONEncodeError is one
                raise MalformedResponse(
                    f"value {doc_id} cannot be re-encoded losslessly: {exc}", endpoint=endpoint
                ) from None
            if len(document) > max_document_bytes:
                raise MalformedResponse(
                    f"document {doc_id} in table {table!r} is {len(document)} bytes, over the "
                    f"{max_document_bytes}-byte limit",
                    endpoint=endpoint,
                    hint="raise --max-document-bytes if this deployment really stores such "
                    "documents",
                )
        columns.components.append(component)
        columns.tables.append(table)
        columns.ids.append(doc_id)
        columns.tss.append(ts)
        columns.deleted.append(is_delete)
        columns.documents.append(document)
    for key, names in names_by_table.items():
        check_field_names(key, names, endpoint=endpoint)
    return columns


def _events_table(
    columns: _Columns,
    kind: Literal["snapshot", "delta"],
    batch_seq: int,
    snapshot_ts: int | None,
    when: datetime,
) -> pa.Table:
    n = len(columns.ids)
    if kind == "snapshot":
        deleted = pa.repeat(pa.scalar(False, pa.bool_()), n)
        ops = pa.repeat(pa.scalar(Op.SNAPSHOT.value, pa.string()), n)
    else:
        deleted = pa.array(columns.deleted, pa.bool_())
        ops = pc.if_else(deleted, Op.DELETE.value, Op.UPSERT.value)
    return pa.Table.from_arrays(
        [
            _strings(columns.components),
            _strings(columns.tables),
            pa.array(columns.ids, pa.string()),
            _int64s(columns.tss),
            deleted,
            ops,
            pa.repeat(pa.scalar(batch_seq, pa.int64()), n),
            pa.repeat(pa.scalar(snapshot_ts, pa.int64()), n),
            pa.repeat(pa.scalar(when, _EVENT_TIMESTAMP), n),
            _texts(columns.documents),
        ],
        schema=RAW_CHANGE_LOG_SCHEMA,
    )


def _strings(values: list[str]) -> pa.Array:
    """A string column; one repeated scalar when every value is the same (a page of one
    table), rather than a conversion per value."""
    if values and values.count(values[0]) == len(values):
        return pa.repeat(pa.scalar(values[0], pa.string()), len(values))
    return pa.array(values, pa.string())


def _int64s(values: list[int]) -> pa.Array:
    """An int64 column of checked ints, from one C array instead of a conversion per value."""
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(array("q", values))])


def _texts(documents: list[bytes | None]) -> pa.Array:
    """The ``document`` column from orjson's output, which is valid UTF-8: one string
    column without a check or a conversion per value (its bytes joined once, offsets from
    their lengths), unless some are null (deletes) or they exceed 32-bit offsets."""
    if None not in documents:
        texts = cast("list[bytes]", documents)
        lengths = list(map(len, texts))
        if sum(lengths) <= _INT32_MAX:
            offsets = array("i", [0])
            offsets.extend(accumulate(lengths))
            buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(texts))]
            return pa.Array.from_buffers(pa.string(), len(texts), buffers)
    return pa.array(documents, pa.binary()).view(pa.string())


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _kind(value: Any) -> str:
    """A short description of a JSON value for messages (never the value itself)."""
    if isinstance(value, bool):
        return "a boolean"
    kinds: dict[type, str] = {str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), "not a number")
