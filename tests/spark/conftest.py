"""Fixtures for the Apache Spark tests: one warm Spark Connect server for this package.

The server is the expensive part (a JVM with Spark, ~10-20 s to start, more to warm up),
so every pipeline run goes to the same one; each test keeps to its own schemas and
directories. The tests that use it share one xdist group, so under ``pytest -n 2 --dist
loadgroup`` a single worker starts it, and stops it when the package's tests are done.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

# One worker may hold a Spark Connect session (gRPC threads) and then start the classic
# local session of test_projection, whose JVM pyspark launches with a fork: gRPC's fork
# handlers, met with busy threads, broke the parent's poller and the JVM never reported
# its port (JAVA_GATEWAY_EXITED). The child only execs spark-submit, so gRPC needs no fork
# support here. Set before anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

from tests.fixtures.devserver import RunningDevServer
from tests.spark.convex_lake import ConvexLake
from tests.spark.spark_harness import (
    ConnectServer,
    SilverReader,
    SparkUnavailable,
    build_test_jar,
    start_connect_server,
)


@pytest.fixture(scope="package")
def spark_test_jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Java test doubles, compiled against this pyspark (fails clearly without a JDK 17)."""
    try:
        return build_test_jar(tmp_path_factory.mktemp("spark-jar"))
    except SparkUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="package")
def spark_server(
    spark_test_jar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConnectServer]:
    """A Spark Connect server with the test catalog and Auto Loader stand-in loaded."""
    server = start_connect_server(tmp_path_factory.mktemp("spark-server"), spark_test_jar)
    yield server
    server.stop()


@pytest.fixture(scope="package")
def spark(spark_server: ConnectServer) -> Iterator[SilverReader]:
    """A Spark Connect session on the test server (registers sources, reads silver)."""
    reader = SilverReader(spark_server)
    yield reader
    reader.stop()


@pytest.fixture
def convex_lake(
    devserver_factory: Callable[..., RunningDevServer], tmp_path: Path
) -> Callable[..., ConvexLake]:
    """``convex_lake(export=True, **devserver settings)``: a devserver and its replicas."""

    def start(*, export: bool = True, **settings: object) -> ConvexLake:
        return ConvexLake(devserver_factory(**settings), tmp_path / "lake", export=export)

    return start
