"""Normalising Convex values into change events: what lands, what is refused, and losslessness."""

from __future__ import annotations

import base64
import copy
import re
import struct
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.core.checkpoint import SourceIdentity, begin_snapshot
from convex_cdc.core.errors import MalformedResponse
from convex_cdc.core.events import (
    RAW_CHANGE_LOG_SCHEMA,
    ChangeBatch,
    Op,
    events_from_values,
    tables_in,
)
from convex_cdc.core.names import TableKey, is_valid_component_path, is_valid_table_name

TS = 1_755_820_790_000_000_001
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NAN = {"$float": base64.b64encode(struct.pack("<d", float("nan"))).decode()}


def value(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "_component": "",
        "_table": "messages",
        "_ts": TS,
        "_id": "j5755wh6cpk0r4pjh4c5v58ex17p4zhw",
        "_creationTime": 1755820789999.4512,
    }
    base.update(fields)
    return base


def normalise(
    values: list[Any], kind: Literal["snapshot", "delta"] = "snapshot", **kw: Any
) -> pa.Table:
    return events_from_values(
        values,
        kind=kind,
        batch_seq=kw.pop("batch_seq", 3),
        snapshot_ts=kw.pop("snapshot_ts", TS + 5 if kind == "snapshot" else None),
        extracted_at=WHEN,
        endpoint="list_snapshot" if kind == "snapshot" else "document_deltas",
        **kw,
    )


def test_a_snapshot_value_becomes_a_snapshot_row_with_its_document_as_lossless_text() -> None:
    table = normalise([value(author="ada", body="hi", likes=3)])
    assert table.schema == RAW_CHANGE_LOG_SCHEMA
    (row,) = table.to_pylist()
    assert row == {
        "_component": "",
        "_table": "messages",
        "_id": "j5755wh6cpk0r4pjh4c5v58ex17p4zhw",
        "_ts": TS,
        "_deleted": False,
        "_op": "snapshot",
        "_batch": 3,
        "_snapshot_ts": TS + 5,
        "_extracted_at": WHEN,
        "document": '{"_creationTime":1755820789999.4512,"_id":"j5755wh6cpk0r4pjh4c5v58ex17p4zhw",'
        '"author":"ada","body":"hi","likes":3}',
    }


def test_a_delta_upsert_and_a_minimal_delete_become_upsert_and_delete_rows() -> None:
    delete = {"_component": "wl", "_table": "entries", "_ts": TS + 2, "_deleted": True, "_id": "k1"}
    table = normalise([value(_deleted=False, body="yo"), delete], kind="delta")
    upsert, tombstone = table.to_pylist()
    assert (upsert["_op"], upsert["_deleted"], upsert["_snapshot_ts"]) == ("upsert", False, None)
    assert orjson.loads(upsert["document"])["body"] == "yo"
    assert tombstone["_op"] == Op.DELETE and tombstone["_deleted"] is True
    assert tombstone["document"] is None
    assert (tombstone["_component"], tombstone["_table"], tombstone["_id"]) == (
        "wl",
        "entries",
        "k1",
    )


def test_system_tables_are_dropped_and_unknown_underscore_fields_are_ignored() -> None:
    values = [
        value(_table="_scheduled_functions"),
        value(_table="_storage", _deleted=True),
        value(_future_metadata=1, _deleted=False, name="x"),
    ]
    table = normalise(values, kind="delta")
    assert table.num_rows == 1
    document = orjson.loads(table.column("document")[0].as_py())
    assert set(document) == {"_id", "_creationTime", "name"}  # no _component/_table/_ts/_deleted


def test_a_document_without_creation_time_is_kept_as_it_is() -> None:
    bare = value(x=1)
    del bare["_creationTime"]
    document = orjson.loads(normalise([bare]).column("document")[0].as_py())
    assert document == {"_id": bare["_id"], "x": 1}


def test_an_empty_page_is_an_empty_table_with_the_change_log_schema() -> None:
    table = normalise([])
    assert table.num_rows == 0 and table.schema == RAW_CHANGE_LOG_SCHEMA
    assert tables_in(table) == []


@pytest.mark.parametrize(
    ("bad", "kind", "message"),
    [
        ("not an object", "snapshot", "value #1 is not an object"),
        (value(_id=None), "snapshot", "has no string _id"),
        (value(_id=""), "snapshot", "has no string _id"),
        (value(_id=7), "snapshot", "has no string _id"),
        (value(_table=None), "snapshot", "has no string _table"),
        (value(_component=1), "snapshot", "has no string _component"),
        (value(_component={"a": 1}), "snapshot", "has no string _component"),  # unhashable
        (value(_table=["messages"]), "delta", "has no string _table"),
        (value(_ts=1.5), "snapshot", "has no integer _ts"),
        (value(_ts="1755820790000000001"), "snapshot", "has no integer _ts"),
        (value(_ts=True), "snapshot", "has no integer _ts"),
        (value(_ts=-1), "snapshot", "has no integer _ts"),
        (value(_ts=2**64 - 1), "snapshot", "has no integer _ts"),
        (value(), "delta", "has no boolean _deleted"),
        (value(_deleted="false"), "delta", "has no boolean _deleted"),
        (value(_deleted=True), "snapshot", "returned a tombstone"),
        (value(_table="../x"), "snapshot", "names table '../x'"),
        (value(_table="/etc"), "snapshot", "names table '/etc'"),
        (value(_table="a\x00b"), "snapshot", "not a Convex table name"),
        (value(_table="a" * 300), "snapshot", "not a Convex table name"),
        (value(_table=""), "snapshot", "not a Convex table name"),
        (value(_table="a.b"), "snapshot", "not a Convex table name"),
        (value(_table="9lives"), "snapshot", "not a Convex table name"),
        (value(_component="../up"), "snapshot", "not a Convex component path"),
        (value(_component="a//b"), "snapshot", "not a Convex component path"),
        (value(_component="/abs"), "snapshot", "not a Convex component path"),
        (value(_component="trailing/"), "snapshot", "not a Convex component path"),
        (value(_component="c" * 300), "snapshot", "not a Convex component path"),
    ],
)
def test_malformed_values_are_refused_with_a_message_naming_them(
    bad: Any, kind: Literal["snapshot", "delta"], message: str
) -> None:
    good = value(_deleted=False) if kind == "delta" else value()
    with pytest.raises(MalformedResponse, match=re.escape(message)) as caught:
        normalise([good, bad], kind=kind)
    assert caught.value.endpoint in ("list_snapshot", "document_deltas")
    assert caught.value.hint  # "nothing was written..."


def test_a_hostile_name_is_shortened_in_the_message() -> None:
    with pytest.raises(MalformedResponse) as caught:
        normalise([value(_table="x" * 10_000)])
    assert len(str(caught.value)) < 500


def test_an_oversized_document_is_refused_with_its_size_and_the_limit() -> None:
    big = value(blob="x" * 5000)
    with pytest.raises(
        MalformedResponse, match=r"is \d+ bytes, over the 4096-byte limit"
    ) as caught:
        normalise([big], max_document_bytes=4096)
    assert "max-document-bytes" in (caught.value.hint or "")
    assert normalise([big], max_document_bytes=8192).num_rows == 1


def test_documents_are_lossless_for_int64_negative_zero_nan_and_bytes() -> None:
    fields = {
        "big": 2**53 + 1,
        "min": -(2**63),
        "max": 2**63 - 1,
        "negzero": -0.0,
        "nan": NAN,
        "blob": {"$bytes": "ABCD"},
        "nested": {"x": [1, 2.5, -0.0, {"$float": "AAAAAAAA8H8="}]},
    }
    wire = orjson.dumps({"values": [value(**fields)]})  # as it arrives over HTTP
    (parsed,) = orjson.loads(wire)["values"]
    document = normalise([parsed]).column("document")[0].as_py()
    assert '"negzero":-0.0' in document and '"big":9007199254740993' in document
    assert '"min":-9223372036854775808' in document
    assert '"nan":{"$float":"AAAAAAAA+H8="}' in document
    assert '"blob":{"$bytes":"ABCD"}' in document
    assert orjson.loads(document)["nested"] == fields["nested"]


export_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.builds(lambda b: {"$bytes": base64.b64encode(b).decode()}, st.binary(max_size=16)),
    st.builds(
        lambda f: {"$float": base64.b64encode(struct.pack("<d", f)).decode()},
        st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    ),
)
export_values = st.recursive(
    export_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.from_regex(r"[a-z][a-zA-Z0-9_]{0,6}", fullmatch=True), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-zA-Z0-9_]{0,6}", fullmatch=True), export_values, max_size=6
    ).filter(lambda fields: len({name.lower() for name in fields}) == len(fields))
)  # names differing only in case are refused (tests/e2e/test_hostile_server.py)
def test_any_export_json_document_survives_the_round_trip_byte_for_byte(
    fields: dict[str, Any],
) -> None:
    original = value(**fields)
    (parsed,) = orjson.loads(orjson.dumps([original]))
    document = normalise([parsed]).column("document")[0].as_py()
    expected = {k: v for k, v in original.items() if k not in ("_component", "_table", "_ts")}
    assert document == orjson.dumps(expected, option=orjson.OPT_SORT_KEYS).decode()


def test_names_follow_convex_identifier_rules() -> None:
    assert is_valid_table_name("messages") and is_valid_table_name("a_1")
    assert not is_valid_table_name("_storage")  # system tables are not user tables
    assert not is_valid_table_name("a" * 65) and is_valid_table_name("a" * 64)
    assert is_valid_component_path("") and is_valid_component_path("waitlist/ratelimiter")
    assert not is_valid_component_path("waitlist/") and not is_valid_component_path("..")


def test_a_batch_splits_its_events_by_table_in_server_order() -> None:
    values = [
        value(_id="b", _deleted=False),
        value(_id="a", _component="wl", _table="entries", _deleted=False),
        value(_id="c", _deleted=True),
    ]
    events = normalise(values, kind="delta")
    checkpoint = begin_snapshot(None, source=SourceIdentity("https://a.convex.cloud"), snapshot=1)
    batch = ChangeBatch(
        seq=3,
        kind="delta",
        events=events,
        checkpoint=checkpoint,
        snapshot_ts=None,
        wire_format="export_json",
        response_bytes=100,
    )
    assert batch.tables() == [TableKey("", "messages"), TableKey("wl", "entries")]
    assert batch.num_events == 3
    assert batch.events_for(TableKey("", "messages")).column("_id").to_pylist() == ["b", "c"]
    assert [(e.key, e.id, e.op) for e in batch.iter_events()] == [
        (TableKey("", "messages"), "b", Op.UPSERT),
        (TableKey("wl", "entries"), "a", Op.UPSERT),
        (TableKey("", "messages"), "c", Op.DELETE),
    ]


def test_tables_in_finds_the_tables_of_every_page_of_a_batch() -> None:
    """Chunk by chunk: a page of one table, then a page of several."""
    first = normalise([value(_id="a"), value(_id="b")])
    second = normalise(
        [value(_id="c", _component="wl", _table="entries"), value(_id="d", _table="users")]
    )
    events = pa.concat_tables([first, second])
    assert events.column("_table").num_chunks == 2
    assert tables_in(events) == [
        TableKey("", "messages"),
        TableKey("", "users"),
        TableKey("wl", "entries"),
    ]
    assert tables_in(first) == [TableKey("", "messages")]


def test_a_page_of_one_table_builds_the_same_columns_as_value_by_value() -> None:
    """The bulk columns (one repeated name, int64 and text from buffers) hold exactly what
    a conversion value by value holds, deletes (null documents) included."""
    values = [value(_id=f"id{n}", _ts=TS + n, text="é" * n, _deleted=n % 2 == 0) for n in range(5)]
    page = normalise(values, kind="delta")
    one_by_one = pa.concat_tables([normalise([v], kind="delta") for v in values])
    assert page.equals(one_by_one)
    assert page.column("document").null_count == 3
    snapshot = normalise([value(_id=f"id{n}", text="é" * n) for n in range(5)])
    assert snapshot.column("document").to_pylist() == [
        orjson.dumps({"_creationTime": 1755820789999.4512, "_id": f"id{n}", "text": "é" * n},
                     option=orjson.OPT_SORT_KEYS).decode()
        for n in range(5)
    ]  # fmt: skip
    assert snapshot.validate(full=True) is None


page_values = st.lists(
    st.tuples(
        st.sampled_from([("", "messages"), ("wl", "entries"), ("a/b", "t_1")]),
        st.dictionaries(
            st.from_regex(r"[a-z][a-zA-Z0-9_]{0,6}", fullmatch=True), export_values, max_size=4
        ),
        st.booleans(),
    ),
    max_size=12,
)


@settings(max_examples=100, deadline=None)
@given(page_values, st.sampled_from(["snapshot", "delta"]))
def test_a_page_normalises_value_by_value_whatever_else_it_holds(
    spec: list[tuple[tuple[str, str], dict[str, Any], bool]], kind: Literal["snapshot", "delta"]
) -> None:
    values = []
    for n, ((component, table), fields, gone) in enumerate(spec):
        meta = {"_component": component, "_table": table, "_ts": TS + n, "_id": f"id{n}"}
        if kind == "delta":
            meta["_deleted"] = gone
        values.append({**meta, "_creationTime": 1.5, **fields})
    before = copy.deepcopy(values)
    page = normalise(values, kind=kind)
    assert values == before  # the page's own values are left as they were
    one_by_one = [normalise([value], kind=kind) for value in values]
    assert page.to_pylist() == [row for rows in one_by_one for row in rows.to_pylist()]
    # A system-table value or an unknown underscore field is dropped, nothing else changes.
    odd = [{**values[0], "_future": 1}] if values else []
    system = {"_component": "", "_table": "_storage", "_ts": TS, "_id": "s", "_deleted": False}
    mixed = normalise([system, *odd, *values[1:]], kind=kind)
    assert mixed.to_pylist() == page.to_pylist()


@settings(max_examples=60, deadline=None)
@given(page_values, st.sampled_from(["snapshot", "delta"]), st.integers(0, 3))
def test_consuming_the_values_gives_the_same_rows_and_the_same_refusals(
    spec: list[tuple[tuple[str, str], dict[str, Any], bool]],
    kind: Literal["snapshot", "delta"],
    odd: int,
) -> None:
    """The orchestrator gives its pages' values up (no copy per value); a page that turns
    out to need the value-by-value path after its metadata was taken still gets it."""
    values: list[Any] = []
    for n, ((component, table), fields, gone) in enumerate(spec):
        meta = {"_component": component, "_table": table, "_ts": TS + n, "_id": f"id{n}"}
        if kind == "delta":
            meta["_deleted"] = gone
        values.append({**meta, "_creationTime": 1.5, **fields})
    if values and odd == 1:  # refused late: cannot be re-encoded (above 64 bits)
        values[-1] = {**values[-1], "_deleted": False, "huge": 2**70}
    if values and odd == 2:  # refused late: too large
        values[-1] = {**values[-1], "_deleted": False, "text": "x" * 5000}
    if values and odd == 3 and kind == "snapshot":  # a snapshot value without _deleted
        values[0].pop("_deleted", None)

    def outcome(consume: bool) -> object:
        try:
            page = normalise(copy.deepcopy(values), kind=kind, max_document_bytes=4096,
                             consume_values=consume)  # fmt: skip
        except MalformedResponse as exc:
            return str(exc)
        return page.to_pylist()

    assert outcome(True) == outcome(False)
