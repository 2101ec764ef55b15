"""The current-state row builder that staging and silver both run.

Events go in as change-event columns (``_id``, ``_ts``, ``_deleted``, ``document`` as
``export_json`` text); rows come out typed against a column spec.
"""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.core.columns import (
    SYSTEM_COLUMN_SPECS,
    ColumnSpec,
    column_specs,
    conform,
    evolve_columns,
)
from convex_cdc.core.current_state import (
    DocumentError,
    latest_events,
    observed_column_types,
    parse_fields,
    typed_rows,
)
from convex_cdc.core.type_mapping import ColumnType, column_type_for, kind_of, widen


def events(*rows: tuple[str, int, bool, dict[str, Any] | str | None]) -> pa.Table:
    """Change events from ``(id, ts, deleted, document)``; a dict document is encoded."""
    return pa.table(
        {
            "_id": pa.array([r[0] for r in rows], pa.string()),
            "_ts": pa.array([r[1] for r in rows], pa.int64()),
            "_deleted": pa.array([r[2] for r in rows], pa.bool_()),
            "document": pa.array(
                [
                    orjson.dumps(r[3], option=orjson.OPT_SORT_KEYS).decode()
                    if isinstance(r[3], dict)
                    else r[3]
                    for r in rows
                ],
                pa.string(),
            ),
        }
    )


def build(table: pa.Table) -> pa.Table:
    """Latest event per id → parse → observe types → typed rows, as a target does."""
    latest = latest_events(table)
    fields = parse_fields(latest)
    return typed_rows(latest, fields, column_specs(observed_column_types(fields)))


def test_every_current_state_table_starts_with_id_creation_time_and_ts() -> None:
    assert [(s.name, s.type, s.nullable) for s in SYSTEM_COLUMN_SPECS] == [
        ("_id", ColumnType.STRING, False),
        ("_creationTime", ColumnType.FLOAT64, True),
        ("_ts", ColumnType.INT64, False),
    ]
    specs = column_specs({"b": ColumnType.INT64, "a": ColumnType.JSON})
    assert [s.name for s in specs] == ["_id", "_creationTime", "_ts", "a", "b"]


def test_the_latest_event_per_id_wins_and_a_delete_carries_no_document() -> None:
    latest = latest_events(
        events(
            ("a", 1, False, {"x": 1}),
            ("b", 1, False, {"x": 2}),
            ("a", 2, True, None),
        )
    )
    assert latest.to_pylist() == [
        {"_id": "a", "_ts": 2, "_deleted": True, "document": None},
        {"_id": "b", "_ts": 1, "_deleted": False, "document": '{"x":2}'},
    ]


def test_an_older_event_arriving_later_loses_and_equal_versions_keep_the_last_arrival() -> None:
    latest = latest_events(
        events(
            ("a", 5, False, {"v": "new"}),
            ("a", 3, False, {"v": "old, late"}),
            ("b", 7, False, {"v": "first copy"}),
            ("b", 7, False, {"v": "replayed copy"}),
        )
    )
    assert [orjson.loads(d)["v"] for d in latest.column("document").to_pylist()] == [
        "new",
        "replayed copy",
    ]


def test_rows_are_typed_with_creation_time_in_ms_ts_in_ns_and_nulls_for_missing_fields() -> None:
    rows = build(
        events(
            ("a", 2**62, False, {"_id": "a", "_creationTime": 1755820789999.4512, "n": 1}),
            ("b", 2**62 + 1, False, {"_id": "b", "_creationTime": 1.5, "s": "x"}),
        )
    )
    assert rows.schema.names == ["_id", "_creationTime", "_ts", "n", "s"]
    assert rows.column("_creationTime").to_pylist() == [1755820789999.4512, 1.5]
    assert rows.column("_ts").to_pylist() == [2**62, 2**62 + 1]
    assert rows.column("n").to_pylist() == [1, None]
    assert rows.column("s").to_pylist() == [None, "x"]
    assert rows.schema.field("_id").nullable is False


def test_deletes_parse_to_rows_without_fields() -> None:
    table = events(("a", 1, False, {"n": 1}), ("b", 2, True, None))
    fields = parse_fields(table)
    assert fields == {"n": [1, None]}
    rows = typed_rows(table, fields, column_specs({"n": ColumnType.INT64}))
    assert rows.column("n").to_pylist() == [1, None]


@pytest.mark.parametrize("document", ['["not", "an", "object"]', "{truncated", "null", None])
def test_a_broken_document_on_an_upsert_is_refused_naming_its_id(document: str | None) -> None:
    table = events(("good", 1, False, {"n": 1}), ("bad", 2, False, document))
    with pytest.raises(DocumentError) as raised:
        parse_fields(table)
    assert (raised.value.doc_id, raised.value.position) == ("bad", 1)


def test_a_value_that_does_not_fit_its_column_is_refused_naming_the_column() -> None:
    table = events(("a", 1, False, {"n": "text"}))
    with pytest.raises(DocumentError, match="'n' does not fit its int64 column"):
        typed_rows(table, parse_fields(table), column_specs({"n": ColumnType.INT64}))


def test_columns_the_spec_does_not_list_are_left_out() -> None:
    """Silver has no column for some fields (names Spark cannot take); they are skipped."""
    table = events(("a", 1, False, {"keep": 1, "drop me": 2}))
    specs = (*SYSTEM_COLUMN_SPECS, ColumnSpec("keep", ColumnType.INT64))
    assert typed_rows(table, parse_fields(table), specs).schema.names == [
        "_id",
        "_creationTime",
        "_ts",
        "keep",
    ]


def test_observed_types_skip_system_fields_treat_missing_as_nullable_and_widen() -> None:
    table = events(
        ("a", 1, False, {"_id": "a", "_creationTime": 1.0, "n": 1, "s": "x", "mixed": 1}),
        ("d", 2, True, None),
        ("b", 3, False, {"_id": "b", "n": None, "mixed": 2.5, "tags": ["a"]}),
        ("c", 4, False, {"_id": "c", "s": "y"}),
    )
    assert observed_column_types(parse_fields(table)) == {
        "n": ColumnType.INT64,
        "s": ColumnType.STRING,
        "mixed": ColumnType.JSON,
        "tags": ColumnType.JSON,
    }


def test_a_column_widened_later_holds_the_same_text_as_one_typed_json_from_the_start() -> None:
    """Incremental targets widen old rows with ``conform``; a one-pass build types every row
    as json at once. Both must store the same value, so silver and staging agree however
    their history went."""
    infinity = {"$float": "AAAAAAAA8H8="}  # export_json tags NaN and ±inf
    first = events(("a", 1, False, {"f": -0.0}), ("b", 2, False, {"f": infinity}))
    second = events(("c", 3, False, {"f": "now a string"}))
    before = observed_column_types(parse_fields(first))
    after, widenings = evolve_columns(before, observed_column_types(parse_fields(second)), batch=2)
    assert [(w.column, w.from_type, w.to_type) for w in widenings] == [
        ("f", ColumnType.FLOAT64, ColumnType.JSON)
    ]
    incremental = conform(build(first), before, after).column("f").to_pylist()
    both = pa.concat_tables([first, second])
    at_once = typed_rows(both, parse_fields(both), column_specs(after)).column("f").to_pylist()
    assert incremental == at_once[:2] == ["-0.0", '{"$float":"AAAAAAAA8H8="}']


export_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.none() | st.dictionaries(st.sampled_from("abc_"), export_values), max_size=8))
def test_observed_types_are_the_join_of_every_value_kind(
    documents: list[dict[str, Any] | None],
) -> None:
    kinds: dict[str, ColumnType] = {}
    for document in documents:
        for name, value in (document or {}).items():
            if not name.startswith("_"):
                kinds[name] = widen(
                    kinds.get(name, ColumnType.NULL), column_type_for([kind_of(value)])
                )
    table = events(*((f"id{i}", i, d is None, d) for i, d in enumerate(documents)))
    assert observed_column_types(parse_fields(table)) == kinds
