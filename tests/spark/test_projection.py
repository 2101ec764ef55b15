"""The rendered projection alone on Apache Spark: both pipeline sources against the local apply.

Bronze-shaped rows holding every value kind go through the source views exactly as
rendered (the SQL view statement, the Python source's view function), in a local classic
SparkSession with ANSI mode on. The result must equal what the local apply and staging
build (:func:`convex_cdc.core.current_state.typed_rows`) value for value, with the
exceptions the rendered headers document:

- a value that does not fit its rendered column (the field widened afterwards) is NULL;
- every NaN is the canonical NaN (Spark cannot build a double from its bits, and its
  Parquet writer canonicalises NaN anyway);
- the SQL source's JSON text is Spark's (same value, not the same bytes); the Python
  source's is byte-exact.

Starting the JVM takes ~10-20 s; every test of the module shares one session.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import re
import struct
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import pyarrow as pa
import pytest

from convex_cdc.core.columns import ColumnSpec
from convex_cdc.core.current_state import parse_fields, typed_rows
from convex_cdc.core.events import RAW_CHANGE_LOG_SCHEMA
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType as C
from convex_cdc.core.type_mapping import values_column_type, widen
from convex_cdc.platform.databricks.render import render
from convex_cdc.platform.databricks.render_options import RenderOptions
from convex_cdc.platform.databricks.source_name import SourceName
from convex_cdc.platform.databricks.spark_projection import EXCEPT_COLUMNS, sql_name
from convex_cdc.platform.databricks.table_spec import TableSpec

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (pip install '.[dev]')")

from pyspark.sql import DataFrame, SparkSession  # noqa: E402

# One worker runs the whole module under `pytest -n 2 --dist loadgroup`: one JVM, not two.
pytestmark = pytest.mark.xdist_group("spark_projection")

BRONZE_VIEW: Final = "bronze_rows"
CANONICAL_NAN: Final = 0x7FF8000000000000
MISSING: Final = object()
"""A field the document does not have."""


def b64_int(value: int) -> dict[str, str]:
    return {"$integer": base64.b64encode(struct.pack("<q", value)).decode()}


def b64_float(bits: int) -> dict[str, str]:
    return {"$float": base64.b64encode(struct.pack("<Q", bits)).decode()}


def b64_bytes(value: bytes) -> dict[str, str]:
    return {"$bytes": base64.b64encode(value).decode()}


NESTED: Final = {
    "numbers": [1, -1, 0, -0.0, 5.0, 5e-324, 1e20, 1.5e-7, 2**63 - 1, -(2**63), 2**53 + 1],
    "tags": [b64_bytes(b"\x00\x01"), b64_float(CANONICAL_NAN), b64_int(7)],
    "text": 'sé ✓ 😀 "q" \\ \n\t\u0001\u001f\u007f\u2028',
    "z": {"deep": [None, True, False, {}, []]},
}

# The rendered spec: one column per type, then columns rendered before their field widened.
RENDERED: Final = {
    "text": C.STRING,
    "count": C.INT64,
    "ratio": C.FLOAT64,
    "flag": C.BOOL,
    "blob": C.BINARY,
    "nested": C.JSON,
    "wasText": C.STRING,
    "wasCount": C.INT64,
    "wasRatio": C.FLOAT64,
    "wasFlag": C.BOOL,
    "wasBlob": C.BINARY,
}
VALUES: Final[Mapping[str, Sequence[Any]]] = {
    "_creationTime": [1700000000000.123, 1.0, 1712345678901.5],
    "text": [
        "plain", "", "sé ✓ 😀", 'quotes "q" and \\ backslash', "line\nbreak\ttab\u0001\u001f\u007f",
        "NaN", "5", "{\"a\":1}", None, MISSING,
    ],
    "count": [
        0, -1, 2**63 - 1, -(2**63), 2**53 + 1, -(2**53) - 1, b64_int(42), b64_int(-(2**63)),
        b64_int(2**63 - 1), None, MISSING,
    ],
    "ratio": [
        1.5, -0.0, 0.0, 5e-324, -5e-324, 1e20, 1.7976931348623157e308, 2.2250738585072014e-308,
        -2.5e-7, 123456789.0, 0.1, b64_float(CANONICAL_NAN), b64_float(0x7FF8000000000123),
        b64_float(0xFFF8000000000000), b64_float(0x7FF0000000000000), b64_float(0xFFF0000000000000),
        None, MISSING,
    ],
    "flag": [True, False, None, MISSING],
    "blob": [b64_bytes(b""), b64_bytes(b"\x00\x01\xff"), b64_bytes(bytes(range(256))), None],
    "nested": [
        NESTED, [], {}, "a string in a JSON column", "", 5, 5.0, -0.0, 5e-324, 1e20, 2**63 - 1,
        True, b64_float(CANONICAL_NAN), [b64_bytes(b"")], None, MISSING,
    ],
    # Rendered narrower; later documents hold other kinds (NULL in silver until re-rendered).
    "wasText": ["ok", 5, 5.0, {"a": 1}, [1], True, b64_bytes(b"x"), None],
    "wasCount": [7, 7.0, "7", {"k": 1}, True, b64_float(CANONICAL_NAN), [7], None],
    "wasRatio": [2.5, 3, "NaN", "Infinity", "1.5", b64_int(3), {"k": 1.5}, True, [1.5], None],
    "wasFlag": [True, "true", 1, 0.0, {"k": True}, None],
    "wasBlob": [b64_bytes(b"\x01"), "AAE=", {"k": "AAE="}, 5, None],
}  # fmt: skip
SPEC: Final = TableSpec(TableKey("", "kinds"), RENDERED)
UNKNOWN_SPEC: Final = TableSpec(TableKey("shop", "orders"), {})
"""A table the Python source builds untyped (listed in convex.tables, unknown to the spec)."""


def document(row: int) -> dict[str, Any]:
    """Row ``row``'s document: each field takes its next value in turn."""
    fields = {name: values[row % len(values)] for name, values in VALUES.items()}
    fields["_id"] = f"k{row:03d}"
    return {name: value for name, value in fields.items() if value is not MISSING}


def bronze_rows(documents: Sequence[dict[str, Any] | None], *, ids: Sequence[str]) -> pa.Table:
    """Bronze envelope rows (``None`` = a delete), documents as canonical export_json text."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    n = len(documents)
    return pa.table(
        {
            "_component": [""] * n,
            "_table": ["kinds"] * n,
            "_id": list(ids),
            "_ts": [1_000 + i for i in range(n)],
            "_deleted": [d is None for d in documents],
            "_op": ["delete" if d is None else "upsert" for d in documents],
            "_batch": [1] * n,
            "_snapshot_ts": [None] * n,
            "_extracted_at": [now] * n,
            "document": [
                None if d is None else orjson.dumps(d, option=orjson.OPT_SORT_KEYS).decode()
                for d in documents
            ],
        },
        schema=RAW_CHANGE_LOG_SCHEMA,
    )


ROWS: Final = max(len(v) for v in VALUES.values()) * 2
KINDS_DOCUMENTS: Final = [document(i) for i in range(ROWS)] + [None]
KINDS_BRONZE: Final = bronze_rows(
    KINDS_DOCUMENTS, ids=[f"k{i:03d}" for i in range(ROWS)] + ["k-deleted"]
)


# --- the reference: what the local apply and staging build ---------------------------------


def fits(value: Any, column: C) -> bool:
    """Whether ``value`` can be stored in a ``column`` column as rendered."""
    return value is None or widen(column, values_column_type([value])) is column


def reference_rows(events: pa.Table, columns: Sequence[ColumnSpec]) -> pa.Table:
    """``typed_rows`` of ``events``, a value that does not fit its rendered column read as
    null (what the rendered pipeline promises until it is rendered again)."""
    fields = parse_fields(events)
    types = {spec.name: spec.type for spec in columns}
    fitting = {
        name: [v if fits(v, types[name]) else None for v in values] if name in types else values
        for name, values in fields.items()
    }
    return typed_rows(events, fitting, columns)


def float_bits(value: float) -> int:
    bits: int = struct.unpack("<Q", struct.pack("<d", value))[0]
    return bits


def spark_float(value: float | None) -> int | None:
    """The bits Spark stores for ``value``: every NaN becomes the canonical one."""
    if value is None:
        return None
    return CANONICAL_NAN if math.isnan(value) else float_bits(value)


def strict_json(text: str | None) -> Any:
    """JSON text parsed so that equal values, and only those, compare equal: integers and
    floats apart, floats by their bits (-0.0 is not 0.0), booleans apart from numbers."""
    if text is None:
        return None

    def tag(value: Any) -> Any:
        if isinstance(value, bool):
            return ("bool", value)
        if isinstance(value, dict):
            return {key: tag(item) for key, item in value.items()}
        if isinstance(value, list):
            return [tag(item) for item in value]
        return value

    return tag(
        json.loads(
            text,
            parse_int=lambda literal: ("int", int(literal)),
            parse_float=lambda literal: ("float", float_bits(float(literal))),
        )
    )


def assert_equal_rows(got: pa.Table, want: pa.Table, *, json_exact: bool) -> None:
    """Column by column, row by row (both sorted by ``_id``)."""
    assert got.column_names == want.column_names
    got = got.sort_by("_id")
    want = want.sort_by("_id")
    types = {field.name: field.type for field in want.schema}
    json_columns = {name for name, kind in RENDERED.items() if kind is C.JSON}
    for name in want.column_names:
        got_values = got.column(name).to_pylist()
        want_values = want.column(name).to_pylist()
        if pa.types.is_floating(types[name]):
            got_values = [spark_float(v) for v in got_values]
            want_values = [spark_float(v) for v in want_values]
        elif name in json_columns and not json_exact:
            got_values = [strict_json(v) for v in got_values]
            want_values = [strict_json(v) for v in want_values]
        for row, (g, w) in enumerate(zip(got_values, want_values, strict=True)):
            assert g == w, f"{name} of {want.column('_id')[row]}: spark {g!r}, reference {w!r}"


# --- running the rendered sources -----------------------------------------------------------


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """A local classic SparkSession, ANSI on (as on serverless), Python UDFs in this venv."""
    saved = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[1]")
        .appName("convex-cdc-projection")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.sql.shuffle.partitions", "1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    if saved is None:
        del os.environ["PYSPARK_PYTHON"]
    else:
        os.environ["PYSPARK_PYTHON"] = saved


def rendered(specs: Sequence[TableSpec]) -> dict[str, str]:
    """Both pipeline sources (the change feed only decides the FROM, which is replaced)."""
    return render(
        specs,
        RenderOptions(
            SourceName("app"), feed="s3-export", raw_change_log="s3://lake/raw_change_log"
        ),
    )


def sql_view(spark: SparkSession, sql: str, table: str, bronze: pa.Table) -> pa.Table:
    """Run the rendered SQL view statement of ``table`` over ``bronze``; its rows."""
    view = f"{sql_name(TableKey('', table))}__changes"
    statement = re.search(rf"CREATE TEMPORARY VIEW `{view}` AS\n.*?\n\);\n", sql, flags=re.DOTALL)
    assert statement is not None, f"no view {view} in the SQL source"
    text, sources = re.subn(
        r"FROM STREAM read_files\([^\n]*\)", f"FROM {BRONZE_VIEW}", statement[0]
    )
    assert sources == 1
    spark.createDataFrame(bronze).createOrReplaceTempView(BRONZE_VIEW)
    spark.catalog.dropTempView(view)
    spark.sql(text.replace("${convex.first_batch}", "0"))
    return without_deleted(spark.table(f"`{view}`"))


def python_views(
    spark: SparkSession, source: str, bronze: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Callable[[], DataFrame]]:
    """Execute the rendered Python source with a stand-in for ``pyspark.pipelines`` (views
    only) and every read of the change feed served from ``bronze``; its view functions."""
    views: dict[str, Callable[[], DataFrame]] = {}
    pipelines = types.ModuleType("pyspark.pipelines")

    def temporary_view(*, name: str) -> Callable[[Callable[[], DataFrame]], None]:
        def register(function: Callable[[], DataFrame]) -> None:
            views[name] = function

        return register

    pipelines.temporary_view = temporary_view  # type: ignore[attr-defined]
    pipelines.create_streaming_table = lambda **_: None  # type: ignore[attr-defined]
    pipelines.create_auto_cdc_flow = lambda **_: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyspark.pipelines", pipelines)
    monkeypatch.setattr(pyspark, "pipelines", pipelines, raising=False)
    spark.createDataFrame(bronze).createOrReplaceTempView(BRONZE_VIEW)
    namespace: dict[str, Any] = {"__name__": "convex_silver"}
    code = compile(source, "convex_silver.py", "exec", dont_inherit=True)
    exec(code, namespace)  # noqa: S102
    namespace["read_changes"] = lambda location: spark.table(BRONZE_VIEW)
    return views


def without_deleted(frame: DataFrame) -> pa.Table:
    """The view's rows without the columns AUTO CDC does not copy into silver."""
    table: pa.Table = frame.toArrow()
    return table.drop_columns([c for c in EXCEPT_COLUMNS if c in table.column_names])


@pytest.fixture
def configured(spark: SparkSession) -> Iterator[Callable[[str], None]]:
    """Set ``convex.tables`` (and the change log the s3-export source reads) for one test."""
    spark.conf.set("convex.raw_change_log", "s3://lake/raw_change_log")

    def configure(tables: str) -> None:
        spark.conf.set("convex.tables", tables)

    yield configure
    spark.conf.unset("convex.tables")


# --- the tests ------------------------------------------------------------------------------


def test_the_sql_source_reads_every_value_kind_like_the_local_apply(spark: SparkSession) -> None:
    got = sql_view(
        spark, rendered([SPEC])["src/silver_sql/convex_silver.sql"], "kinds", KINDS_BRONZE
    )

    assert_equal_rows(got, reference_rows(KINDS_BRONZE, SPEC.column_specs()), json_exact=False)


def test_the_python_source_reads_every_value_kind_like_the_local_apply_json_byte_exact(
    spark: SparkSession, configured: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    configured("")
    source = rendered([SPEC])["src/silver_python/convex_silver.py"]

    views = python_views(spark, source, KINDS_BRONZE, monkeypatch)
    got = without_deleted(views["kinds__changes"]())

    assert_equal_rows(got, reference_rows(KINDS_BRONZE, SPEC.column_specs()), json_exact=True)


def test_the_typed_columns_have_the_spark_types_of_the_column_spec(
    spark: SparkSession, configured: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    configured("")
    files = rendered([SPEC])
    sql = sql_view(spark, files["src/silver_sql/convex_silver.sql"], "kinds", KINDS_BRONZE)
    views = python_views(
        spark, files["src/silver_python/convex_silver.py"], KINDS_BRONZE, monkeypatch
    )
    python = without_deleted(views["kinds__changes"]())
    want = pa.schema([spec.arrow_field for spec in SPEC.column_specs()])

    for got in (sql, python):
        assert got.column_names == want.names
        for field in want:
            # Spark hands strings and bytes over as large_* Arrow types.
            assert got.schema.field(field.name).type in (
                field.type,
                pa.large_string() if field.type == pa.string() else field.type,
                pa.large_binary() if field.type == pa.binary() else field.type,
            ), field.name


def test_random_int64s_and_float64_bits_survive_both_sources(
    spark: SparkSession, configured: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    configured("")
    rng = random.Random(9)
    spec = TableSpec(TableKey("", "numbers"), {"n": C.INT64, "x": C.FLOAT64, "j": C.JSON})
    documents: list[dict[str, Any] | None] = []
    for i in range(3000):
        bits = rng.getrandbits(64)
        x = struct.unpack("<d", struct.pack("<Q", bits))[0]
        if not math.isfinite(x):
            x = b64_float(bits)
        n = rng.choice([rng.getrandbits(64) - 2**63, rng.randrange(-(2**60), 2**60)])
        documents.append({"_id": f"n{i}", "_creationTime": 1.0 + i, "n": n, "x": x, "j": [x, n]})
    bronze = bronze_rows(documents, ids=[f"n{i}" for i in range(len(documents))])
    files = rendered([spec])
    want = reference_rows(bronze, spec.column_specs())

    sql = sql_view(spark, files["src/silver_sql/convex_silver.sql"], "numbers", bronze)
    views = python_views(spark, files["src/silver_python/convex_silver.py"], bronze, monkeypatch)
    python = without_deleted(views["numbers__changes"]())

    for got in (sql, python):
        assert got.column("n").to_pylist() == want.column("n").to_pylist()
        assert [spark_float(v) for v in got.column("x").to_pylist()] == [
            spark_float(v) for v in want.column("x").to_pylist()
        ]
    assert python.column("j").to_pylist() == want.column("j").to_pylist()
    assert [strict_json(v) for v in sql.column("j").to_pylist()] == [
        strict_json(v) for v in want.column("j").to_pylist()
    ]


def test_malformed_tags_read_without_an_error_in_ansi_mode(
    spark: SparkSession, configured: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    configured("")
    spec = TableSpec(TableKey("", "tags"), {"n": C.INT64, "x": C.FLOAT64, "b": C.BINARY})
    malformed = ["!!", "", "/////////////w==", "AAAAAAAAAAAA////"]  # none is 8 bytes
    documents: list[dict[str, Any] | None] = [
        {"_id": f"t{i}", "n": {"$integer": t}, "x": {"$float": t}, "b": {"$bytes": t}}
        for i, t in enumerate(malformed)
    ]
    bronze = bronze_rows(documents, ids=[f"t{i}" for i in range(len(documents))])
    files = rendered([spec])

    sql = sql_view(spark, files["src/silver_sql/convex_silver.sql"], "tags", bronze)
    views = python_views(spark, files["src/silver_python/convex_silver.py"], bronze, monkeypatch)
    python = without_deleted(views["tags__changes"]())

    for got in (sql, python):
        assert got.num_rows == len(malformed)
        assert got.sort_by("_id").column("b").to_pylist() == [
            None,
            *map(base64.b64decode, malformed[1:]),
        ]


def test_the_python_source_builds_a_listed_table_the_spec_lacks_untyped(
    spark: SparkSession, configured: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    configured("kinds,shop/orders")
    source = rendered([SPEC])["src/silver_python/convex_silver.py"]

    views = python_views(spark, source, KINDS_BRONZE, monkeypatch)
    got = without_deleted(views["shop__orders__changes"]())

    assert sorted(views) == ["kinds__changes", "shop__orders__changes"]
    assert got.column_names == ["_id", "_creationTime", "_ts", "document"]
    want = reference_rows(KINDS_BRONZE, UNKNOWN_SPEC.column_specs())
    assert got.sort_by("_id").column("_creationTime").to_pylist() == (
        want.sort_by("_id").column("_creationTime").to_pylist()
    )
    assert got.sort_by("_id").column("document").to_pylist() == (
        KINDS_BRONZE.sort_by("_id").column("document").to_pylist()
    )


def test_the_sql_source_keeps_the_document_of_a_table_rendered_without_types(
    spark: SparkSession,
) -> None:
    untyped = TableSpec(TableKey("", "kinds"), keep_document=True)

    got = sql_view(
        spark, rendered([untyped])["src/silver_sql/convex_silver.sql"], "kinds", KINDS_BRONZE
    )

    assert got.column_names == ["_id", "_creationTime", "_ts", "document"]
    want = reference_rows(KINDS_BRONZE, untyped.column_specs())
    assert got.sort_by("_id").column("_creationTime").to_pylist() == (
        want.sort_by("_id").column("_creationTime").to_pylist()
    )
    assert got.sort_by("_id").column("document").to_pylist() == (
        KINDS_BRONZE.sort_by("_id").column("document").to_pylist()
    )


def test_the_bracket_quoted_json_path_the_sources_used_to_render_reads_null_on_spark(
    spark: SparkSession,
) -> None:
    spark.createDataFrame(KINDS_BRONZE).createOrReplaceTempView(BRONZE_VIEW)

    old = (
        spark.table(BRONZE_VIEW)
        .selectExpr(
            """get_json_object(document, '$["flag"]') AS bracket_quoted""",
            "get_json_object(document, '$.flag') AS dotted",
        )
        .collect()
    )

    assert any(row.dotted is not None for row in old)
    assert all(row.bracket_quoted is None for row in old)
    for source in rendered([SPEC]).values():
        assert "get_json_object" not in source
