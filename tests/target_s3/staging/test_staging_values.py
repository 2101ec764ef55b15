"""Staging holds exact typed values, and widens a column to JSON text losslessly."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pyarrow as pa

from convex_cdc.core.columns import Widening
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.materializer import StagingMaterializer
from convex_cdc.target_s3.staging.reader import read_staging_table
from tests.target_s3.change_batches import ScriptedSync, creation_time_of, doc, key
from tests.target_s3.staging_checks import assert_only_listed_files, rows_by_id, state_of

THINGS = key("things")


def _float_tag(bits: int) -> dict[str, str]:
    return {"$float": base64.b64encode(struct.pack("<Q", bits)).decode()}


def _bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


NAN = 0x7FF8000000000000
NAN_WITH_PAYLOAD = 0x7FF8000000000001
POS_INF = 0x7FF0000000000000
NEG_INF = 0xFFF0000000000000
NEG_ZERO = 0x8000000000000000


def test_values_land_exactly_in_typed_columns(tmp_path: Path) -> None:
    ScriptedSync(tmp_path).snapshot(
        [
            [
                doc(
                    "things", "t1", 10,
                    big=2**62 + 1, negative=-(2**63), nan=_float_tag(NAN),
                    payload_nan=_float_tag(NAN_WITH_PAYLOAD), inf=_float_tag(POS_INF),
                    ninf=_float_tag(NEG_INF), negzero=-0.0, half=1.5,
                    data={"$bytes": base64.b64encode(b"\x00\x01\xff").decode()},
                    nested={"b": [1, 2.5, {"$bytes": "AA=="}], "a": None},
                    flag=True, text='héllo "quoted"', nothing=None,
                ),
                doc("things", "t2", 11, flag=False),
            ]
        ],
        snapshot_ts=100,
    )  # fmt: skip
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()

    table = read_staging_table(DestinationLayout.at(tmp_path), THINGS)
    assert table.schema.names == [
        "_id", "_creationTime", "_ts",
        "big", "data", "flag", "half", "inf", "nan", "negative", "negzero", "nested",
        "ninf", "nothing", "payload_nan", "text",
    ]  # fmt: skip
    types = {f.name: f.type for f in table.schema}
    assert types["big"] == pa.int64() and types["negative"] == pa.int64()
    assert types["nan"] == pa.float64() and types["data"] == pa.binary()
    assert types["flag"] == pa.bool_() and types["text"] == pa.string()
    assert types["nested"] == pa.string()  # JSON text
    assert types["nothing"] == pa.null()  # only null so far
    assert types["_creationTime"] == pa.float64() and types["_ts"] == pa.int64()

    rows = rows_by_id(tmp_path, THINGS)
    t1, t2 = rows["t1"], rows["t2"]
    assert t1["big"] == 2**62 + 1 and t1["negative"] == -(2**63)
    assert _bits(t1["nan"]) == NAN
    assert _bits(t1["payload_nan"]) == NAN_WITH_PAYLOAD
    assert _bits(t1["inf"]) == POS_INF and _bits(t1["ninf"]) == NEG_INF
    assert _bits(t1["negzero"]) == NEG_ZERO and t1["half"] == 1.5
    assert t1["data"] == b"\x00\x01\xff"
    assert t1["nested"] == '{"a":null,"b":[1,2.5,{"$bytes":"AA=="}]}'
    assert t1["flag"] is True and t1["text"] == 'héllo "quoted"'
    assert t1["_ts"] == 10 and t1["_creationTime"] == creation_time_of("t1")
    # A missing field and an explicit null are both null.
    assert t1["nothing"] is None and t2["big"] is None and t2["data"] is None
    assert t2["flag"] is False


def test_a_null_only_column_adopts_the_first_real_type_without_a_widening(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("things", "t1", 10, later=None), doc("things", "t2", 11)]], snapshot_ts=50)
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    sync.delta([doc("things", "t3", 60, later=7)])
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()

    (table,) = state_of(tmp_path).tables
    assert {c.name: c.type for c in table.columns}["later"] is ColumnType.INT64
    assert table.widenings == () and report.widenings == []
    assert {i: r["later"] for i, r in rows_by_id(tmp_path, THINGS).items()} == {
        "t1": None, "t2": None, "t3": 7,
    }  # fmt: skip
    assert_only_listed_files(tmp_path)


def test_an_incompatible_type_widens_old_rows_to_lossless_json_text(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot(
        [
            [
                doc("things", "t1", 10, n=5, f=-0.0, b={"$bytes": "AAE="}, s="abc", ok=True),
                doc("things", "t2", 11, n=-(2**63), f=_float_tag(NAN), ok=False),
                doc("things", "t3", 12, f=2.5),
            ]
        ],
        snapshot_ts=50,
    )
    StagingMaterializer(DestinationLayout.at(tmp_path), rows_per_segment=1).materialize()
    sync.delta([doc("things", "t4", 60, n="five", f=[1], b="text", s=["x"], ok={"k": 1})])
    report = StagingMaterializer(DestinationLayout.at(tmp_path), rows_per_segment=1).materialize()

    rows = rows_by_id(tmp_path, THINGS)
    assert {i: r["n"] for i, r in rows.items()} == {
        "t1": "5",
        "t2": "-9223372036854775808",
        "t3": None,
        "t4": '"five"',
    }
    assert {i: r["f"] for i, r in rows.items()} == {
        "t1": "-0.0",
        "t2": '{"$float":"AAAAAAAA+H8="}',
        "t3": "2.5",
        "t4": "[1]",
    }
    assert rows["t1"]["b"] == '{"$bytes":"AAE="}' and rows["t4"]["b"] == '"text"'
    assert rows["t1"]["s"] == '"abc"' and rows["t4"]["s"] == '["x"]'
    assert rows["t1"]["ok"] == "true" and rows["t2"]["ok"] == "false"
    assert rows["t4"]["ok"] == '{"k":1}'

    (table,) = state_of(tmp_path).tables
    assert set(table.widenings) == {
        Widening("b", ColumnType.BINARY, ColumnType.JSON, 2),
        Widening("f", ColumnType.FLOAT64, ColumnType.JSON, 2),
        Widening("n", ColumnType.INT64, ColumnType.JSON, 2),
        Widening("ok", ColumnType.BOOL, ColumnType.JSON, 2),
        Widening("s", ColumnType.STRING, ColumnType.JSON, 2),
    }
    assert {w for _, w in report.widenings} == set(table.widenings)
    # Every file of the table was rewritten with the widened columns.
    assert len(table.files) > 1
    assert report.files_written == len(table.files)
    assert_only_listed_files(tmp_path)


def test_a_widened_column_never_narrows_back(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("things", "t1", 10, n=1)]], snapshot_ts=50)
    sync.delta([doc("things", "t2", 60, n="two")])
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    sync.delta([doc("things", "t2", 70, n=3)])  # the only non-int row is gone
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()

    (table,) = state_of(tmp_path).tables
    assert {c.name: c.type for c in table.columns}["n"] is ColumnType.JSON
    assert {i: r["n"] for i, r in rows_by_id(tmp_path, THINGS).items()} == {"t1": "1", "t2": "3"}


def test_widened_old_rows_read_the_same_as_rows_typed_from_scratch(tmp_path: Path) -> None:
    values = [
        [doc("things", "t1", 10, n=2**60, f=_float_tag(POS_INF), b={"$bytes": "/w=="})],
        [doc("things", "t2", 60, n={"deep": [1, "x"]}, f="inf", b=None)],
    ]
    incremental, scratch = tmp_path / "incremental", tmp_path / "scratch"
    for dest in (incremental, scratch):
        sync = ScriptedSync(dest)
        sync.snapshot([values[0]], snapshot_ts=50)
        if dest == incremental:
            StagingMaterializer(DestinationLayout.at(dest)).materialize()
        sync.delta(values[1])
        StagingMaterializer(DestinationLayout.at(dest)).materialize()
    assert read_staging_table(DestinationLayout.at(incremental), THINGS).equals(
        read_staging_table(DestinationLayout.at(scratch), THINGS)
    )
