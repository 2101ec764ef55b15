"""AUTO CDC SCD type 1, locally: merge a window of change events into a silver table.

The semantics are Lakeflow's ``AUTO CDC ... KEYS (_id) APPLY AS DELETE WHEN _deleted
SEQUENCE BY _ts STORED AS SCD TYPE 1``:

* per key, the event with the highest ``_ts`` wins; an event older than what silver
  already reflects for that key is ignored, whether it arrives late or is replayed;
* a delete removes the row, and the key's tombstone (``_id``, ``_ts``) is kept in a side
  table so that a late, older upsert cannot bring the row back (Lakeflow keeps
  tombstones inside its target and hides them behind a view; a side table keeps the
  silver Delta table clean for readers that have no catalog views).

Both MERGEs are guarded by ``s._ts > t._ts``, so applying a window twice (after a crash
between the two MERGEs, or before progress was recorded) changes nothing. A tombstone
older than a live row is harmless: every decision compares against the newer of the two.

A truncate row (``_op = 'truncate'``: the table entered a Data Sync) is Lakeflow's
``APPLY AS TRUNCATE WHEN _op = 'truncate'`` with ``SEQUENCE BY STRUCT(_batch, _ts)``:
everything of earlier batches is gone, silver and tombstones alike, and the rows of the
truncate's batch and later ones apply to an empty table (:func:`after_last_truncate`).
After a truncate a key's events come in ``_ts`` order again (the server emits a document
at increasing ``_ts`` until the table enters the sync anew), so ``_ts`` alone orders
them; a document walked again may be older than what was held before, which the
truncate removed. A drop row (``_op = 'drop'``: the table left the source) is applied
the same way (``APPLY AS TRUNCATE WHEN _op IN ('truncate', 'drop')``): silver of a dropped
table is empty, and rows after it (the table was created again) fill it anew.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from convex_cdc.core.current_state import (
    DocumentError,
    latest_events,
    observed_column_types,
    parse_fields,
    typed_rows,
)
from convex_cdc.core.document_columns import paused_gc
from convex_cdc.core.errors import TargetError
from convex_cdc.core.events import TABLE_OPS
from convex_cdc.core.type_mapping import ColumnType, widen
from convex_cdc.platform.databricks.delta_read import read_table, sql_ident, sql_string
from convex_cdc.platform.databricks.table_spec import TableSpec

TOMBSTONE_SCHEMA: Final = pa.schema(
    [pa.field("_id", pa.string(), nullable=False), pa.field("_ts", pa.int64(), nullable=False)]
)

CHANGE_COLUMNS: Final = ("_id", "_ts", "_deleted", "document")
"""The bronze columns a merge needs."""

WINDOW_COLUMNS: Final = (*CHANGE_COLUMNS, "_batch", "_op")
"""The bronze columns a window is read with (to find its truncates)."""

MERGE_GROUP_BYTES: Final = 32 << 20
"""Silver file bytes (on disk) one MERGE reads and rewrites, where the files allow."""

PARSE_SLICE_ROWS: Final = 25_000
"""Documents parsed into Python objects at a time (see :func:`silver_rows`)."""

_EMPTYING_OPS: Final = pa.array(TABLE_OPS, pa.string())


@dataclass(frozen=True, slots=True)
class WindowChanges:
    """A window of bronze rows with its truncates applied."""

    truncated_at: int | None
    """The batch of the window's last truncate: silver must be emptied first."""
    changes: pa.Table
    """The value rows (:data:`CHANGE_COLUMNS`) to merge after that."""


def after_last_truncate(rows: pa.Table) -> WindowChanges:
    """Split a window of bronze rows (:data:`WINDOW_COLUMNS`) at its last truncate.

    A truncate in batch ``N`` drops everything held from batches before ``N``; the rows
    of batch ``N`` and later apply after it. A drop is such a truncate. Truncate and drop
    rows never become silver rows.
    """
    truncate = pc.is_in(rows.column("_op"), _EMPTYING_OPS)
    if not pc.any(truncate).as_py():
        # The common window: no copy of its documents.
        return WindowChanges(None, rows.select(list(CHANGE_COLUMNS)))
    truncated_at = pc.max(pc.filter(rows.column("_batch"), truncate)).as_py()
    keep = pc.invert(truncate)
    if truncated_at is not None:
        keep = pc.and_(keep, pc.greater_equal(rows.column("_batch"), truncated_at))
    return WindowChanges(truncated_at, rows.filter(keep).select(list(CHANGE_COLUMNS)))


@dataclass(frozen=True, slots=True)
class MergeCounts:
    """What one window did."""

    keys: int
    """Distinct keys in the window."""
    upserts: int
    """Keys whose newest event is an upsert newer than their tombstone (applied if newer
    than the silver row too)."""
    deletes: int
    """Keys whose newest event is a delete newer than their tombstone."""
    stale: int
    """Keys whose newest event is older than (or as old as) their tombstone: ignored."""


class SpecNotCovered(Exception):
    """Documents hold fields or types the table spec does not have yet."""

    def __init__(self, observed: dict[str, ColumnType]) -> None:
        super().__init__("the table spec does not cover these documents")
        self.observed = observed


def silver_rows(changes: pa.Table, spec: TableSpec) -> pa.Table:
    """Typed silver rows (plus ``_deleted``) for deduplicated change events.

    The rows come from the same builder as staging's
    (:func:`convex_cdc.core.current_state.typed_rows`), typed against the spec's columns.
    Documents are parsed :data:`PARSE_SLICE_ROWS` at a time: parsed, a document takes
    several times its text, so a whole window parsed at once would set the peak memory.

    Raises:
        SpecNotCovered: a document has a field or type the spec lacks (widen it first);
            the exception carries the types observed over all of ``changes``.
        TargetError: bronze holds a document that is not a JSON object, or a value that
            does not fit its column.
    """
    columns = spec.column_specs()
    typed: list[pa.Table] = []
    observed: dict[str, ColumnType] = {}
    covered = True
    for start in range(0, max(changes.num_rows, 1), PARSE_SLICE_ROWS):
        part = changes.slice(start, PARSE_SLICE_ROWS)
        with paused_gc():  # the parsed documents are alive until the columns are built
            try:
                fields = parse_fields(part)
                for name, kind in observed_column_types(fields).items():
                    observed[name] = widen(observed[name], kind) if name in observed else kind
                covered = covered and spec.widened(observed).columns == spec.columns
                if covered:
                    typed.append(typed_rows(part, fields, columns))
            except (DocumentError, TypeError) as exc:
                raise TargetError(
                    f"bronze table of {spec.key} holds a document silver cannot type: {exc}",
                    hint="bronze is written only by convex-cdc; report this with the document id",
                ) from exc
            del fields  # freed while the collector is paused, so it never scans the documents
    if not covered:
        raise SpecNotCovered(observed)
    rows = pa.concat_tables(typed) if len(typed) > 1 else typed[0]
    if spec.keep_document:
        rows = rows.append_column("document", changes.column("document"))
    rows = rows.append_column("_deleted", changes.column("_deleted"))
    schema = pa.schema([*spec.silver_schema(), pa.field("_deleted", pa.bool_(), nullable=False)])
    return rows.cast(schema)


def merge_window(
    silver: DeltaTable, tombstones: DeltaTable, changes: pa.Table, spec: TableSpec
) -> MergeCounts:
    """Apply one window of bronze change events (any order, duplicates allowed).

    Raises:
        SpecNotCovered: before anything is written, if the spec must be widened first.
    """
    latest = latest_events(changes.select(list(CHANGE_COLUMNS)))
    if latest.num_rows == 0:
        return MergeCounts(0, 0, 0, 0)
    known = read_table(tombstones, columns=["_id", "_ts"]).rename_columns(["_id", "_tomb_ts"])
    joined = latest.join(known, "_id", join_type="left outer") if known.num_rows else latest
    if known.num_rows:
        tomb = joined.column("_tomb_ts")
        # Kleene logic: "no tombstone" OR (null) is true. Plain `or_` would give null and
        # the filter would drop every key that was never deleted.
        fresh = pc.or_kleene(pc.is_null(tomb), pc.greater(joined.column("_ts"), tomb))
        touches_tombstone = pc.any(pc.and_(fresh, pc.is_valid(tomb))).as_py() or False
        current = joined.filter(fresh).drop_columns(["_tomb_ts"])
    else:
        touches_tombstone = False
        current = latest
    rows = silver_rows(current, spec)
    deletes = pc.sum(rows.column("_deleted").cast(pa.int64())).as_py() or 0
    if rows.num_rows:
        _merge_silver(silver, rows)
    if deletes or touches_tombstone:
        _merge_tombstones(tombstones, rows.select(["_id", "_ts", "_deleted"]))
    return MergeCounts(
        keys=latest.num_rows,
        upserts=rows.num_rows - deletes,
        deletes=deletes,
        stale=latest.num_rows - rows.num_rows,
    )


def _merge_silver(silver: DeltaTable, rows: pa.Table) -> None:
    """MERGE ``rows`` into silver, one range of ``_id`` (a few files) at a time.

    delta-rs reads and rewrites every file a MERGE may match, and its memory grows with
    what it rewrites at once: one MERGE of scattered keys into a 2.5M-row table peaked at
    ~0.9 GB. Silver's files hold ranges of ``_id`` (a first build appends the snapshot
    walk, which goes by ``_id``, and a ranged MERGE writes its range back), so the rows
    are merged range by range with the range in the predicate; delta-rs then skips the
    files outside it by their ``_id`` statistics. The predicate stays exact whatever the
    files hold: files that overlap (or have no statistics) only cost more reading.
    """
    names = [name for name in rows.column_names if name != "_deleted"]
    values = {sql_ident(name): f"s.{sql_ident(name)}" for name in names}
    ids = rows.column("_id")
    for low, high in _id_ranges(silver, MERGE_GROUP_BYTES):
        keep = None
        predicate = ['t."_id" = s."_id"']
        if low is not None:
            keep = pc.greater_equal(ids, low)
            predicate.append(f't."_id" >= {sql_string(low)}')
        if high is not None:
            below = pc.less(ids, high)
            keep = below if keep is None else pc.and_(keep, below)
            predicate.append(f't."_id" < {sql_string(high)}')
        part = rows if keep is None else rows.filter(keep)
        if not part.num_rows:
            continue
        (
            silver.merge(
                part, predicate=" AND ".join(predicate), source_alias="s", target_alias="t"
            )
            .when_matched_delete(predicate='s."_deleted" AND s."_ts" > t."_ts"')
            .when_matched_update(
                updates={k: v for k, v in values.items() if k != sql_ident("_id")},
                predicate='NOT s."_deleted" AND s."_ts" > t."_ts"',
            )
            .when_not_matched_insert(updates=values, predicate='NOT s."_deleted"')
            .execute()
        )


def _id_ranges(silver: DeltaTable, group_bytes: int) -> list[tuple[str | None, str | None]]:
    """``[low, high)`` ranges of ``_id`` covering every key, each starting at a file's
    smallest ``_id`` and holding files of about ``group_bytes`` (``None``: unbounded)."""
    actions = pa.RecordBatchReader.from_stream(silver.get_add_actions(flatten=True)).read_all()
    if "min._id" not in actions.column_names or actions.column("min._id").null_count:
        return [(None, None)]  # no statistics to go by: one MERGE over everything
    files = actions.select(["min._id", "size_bytes"]).sort_by("min._id")
    starts: list[str] = []
    held = 0
    for low, size in zip(files.column(0).to_pylist(), files.column(1).to_pylist(), strict=True):
        if held and held + size > group_bytes and low != (starts[-1] if starts else None):
            starts.append(low)
            held = 0
        held += size
    bounds: list[str | None] = [None, *starts, None]
    return list(itertools.pairwise(bounds))


def _merge_tombstones(tombstones: DeltaTable, rows: pa.Table) -> None:
    (
        tombstones.merge(rows, predicate='t."_id" = s."_id"', source_alias="s", target_alias="t")
        .when_matched_update(
            updates={'"_ts"': 's."_ts"'}, predicate='s."_deleted" AND s."_ts" > t."_ts"'
        )
        .when_matched_delete(predicate='NOT s."_deleted" AND s."_ts" > t."_ts"')
        .when_not_matched_insert(
            updates={'"_id"': 's."_id"', '"_ts"': 's."_ts"'}, predicate='s."_deleted"'
        )
        .execute()
    )
