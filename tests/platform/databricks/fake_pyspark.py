"""A stand-in for ``pyspark`` that records what a rendered Lakeflow Python source defines."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any


class PipelineRecorder:
    """Stands in for pyspark so the rendered Python pipeline can run here."""

    def __init__(self, conf: dict[str, str]) -> None:
        self.conf = conf
        self.views: dict[str, Callable[[], Any]] = {}
        self.tables: list[dict[str, Any]] = []
        self.flows: list[dict[str, Any]] = []
        self.udfs: list[tuple[Callable[..., Any], str]] = []
        """Each pandas UDF defined: its function and return schema."""

    def modules(self) -> dict[str, types.ModuleType]:
        recorder = self
        pyspark = types.ModuleType("pyspark")
        dp = types.ModuleType("pyspark.pipelines")

        def temporary_view(*, name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
            def register(function: Callable[[], Any]) -> Callable[[], Any]:
                recorder.views[name] = function
                return function

            return register

        dp.temporary_view = temporary_view  # type: ignore[attr-defined]
        dp.create_streaming_table = lambda **kw: recorder.tables.append(kw)  # type: ignore[attr-defined]
        dp.create_auto_cdc_flow = lambda **kw: recorder.flows.append(kw)  # type: ignore[attr-defined]
        pyspark.pipelines = dp  # type: ignore[attr-defined]
        sql = types.ModuleType("pyspark.sql")
        functions = types.ModuleType("pyspark.sql.functions")
        functions.col = Col  # type: ignore[attr-defined]
        functions.expr = Expr  # type: ignore[attr-defined]
        functions.from_json = lambda *args: Call("from_json", args)  # type: ignore[attr-defined]
        functions.struct = lambda *args: Call("struct", args)  # type: ignore[attr-defined]

        def pandas_udf(function: Callable[..., Any], schema: str) -> Callable[..., Call]:
            recorder.udfs.append((function, schema))
            return lambda *columns: Call("pandas_udf", (schema, *columns))

        functions.pandas_udf = pandas_udf  # type: ignore[attr-defined]
        sql.functions = functions  # type: ignore[attr-defined]
        sql.DataFrame = object  # type: ignore[attr-defined]
        session = types.SimpleNamespace(
            conf=types.SimpleNamespace(get=lambda k, d=None: recorder.conf.get(k, d)),
            readStream=Stream(),
        )
        sql.SparkSession = types.SimpleNamespace(getActiveSession=lambda: session)  # type: ignore[attr-defined]
        return {
            "pyspark": pyspark,
            "pyspark.pipelines": dp,
            "pyspark.sql": sql,
            "pyspark.sql.functions": functions,
        }


class Col:
    def __init__(self, name: str) -> None:
        self.name = name

    def __ge__(self, other: object) -> tuple[str, str, object]:
        return (">=", self.name, other)


class Expr:
    def __init__(self, text: str) -> None:
        self.text = text
        self.name: str | None = None

    def alias(self, name: str) -> Expr:
        self.name = name
        return self

    def __invert__(self) -> Expr:
        return Expr(f"NOT ({self.text})")


class Call:
    """A call of a Spark function (``from_json``, a UDF), recorded with its arguments."""

    def __init__(self, function: str, args: tuple[Any, ...]) -> None:
        self.function = function
        self.args = args
        self.name: str | None = None

    def alias(self, name: str) -> Call:
        self.name = name
        return self


class Stream:
    """Records a readStream chain: options, format, the table or path, filter, columns."""

    def __init__(self, steps: tuple[Any, ...] = ()) -> None:
        self.steps = steps

    def __getattr__(self, name: str) -> Callable[..., Stream]:
        return lambda *args, **kwargs: Stream((*self.steps, (name, args)))
