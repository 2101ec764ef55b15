"""Run rendered Lakeflow pipelines on Apache Spark (``pyspark[pipelines]`` from PyPI).

The pieces, in the order a test uses them:

* :func:`build_test_jar` compiles the Java doubles under ``tests/spark/java`` against
  pyspark's own jars: ``RowLevelCatalog`` (an in-memory catalog whose tables support
  MERGE, standing in for Unity Catalog's storage, which Apache Spark's AUTO CDC needs
  for its targets), ``CloudFilesSource`` and ``ReadFilesExtension`` (Auto Loader's
  ``cloudFiles`` format and Databricks SQL's ``read_files``, both as Spark's streaming
  file source, for the S3/export change feed).
* :func:`start_connect_server` starts one Spark Connect server with them loaded. Every
  pipeline run and every read-back goes to this one warm server, so its JVM start
  (and JIT warm-up) is paid once, and the catalog's tables outlive each run, which
  is what an incremental run needs.
* :func:`write_pipeline_project` turns a ``convex-cdc databricks render`` output into a
  ``spark-pipeline.yml`` project; :func:`run_pipeline` runs it with the real
  ``spark-pipelines run`` CLI.
* :class:`SilverReader` reads the silver tables back as Arrow through a Spark Connect
  session, so values arrive exactly as Spark stores them (doubles bit for bit).

Nothing here waits on the clock for correctness: the server is ready when its port
accepts connections, a pipeline run is done when its command exits; deadlines only bound
how long a broken run can hang, and fail with the log.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import pyarrow as pa
import yaml

if TYPE_CHECKING:
    from pyspark.sql.connect.session import SparkSession

Language = Literal["python", "sql"]

JAVA_SOURCES: Final = Path(__file__).parent / "java"
TEST_CATALOG: Final = "convex_uc"
"""The name the row-level test catalog is registered under (the pipelines' ``catalog``)."""
BRONZE_CATALOG: Final = "spark_catalog"
"""Where the harness registers bronze (and any other source) tables: Spark's own catalog."""
MINIMUM_JAVA: Final = 17

SERVER_START_SECONDS: Final = 300.0
PIPELINE_RUN_SECONDS: Final = 900.0

SCD2_COLUMNS: Final = ("__START_AT", "__END_AT")
AUTO_CDC_COLUMNS: Final = ("__spark_autocdc_metadata",)
"""Bookkeeping Apache Spark's AUTO CDC adds to a target (Databricks hides it)."""
AUX_TABLE_PREFIX: Final = "__spark_autocdc_aux_state_"

_SQL_CREATE_OR_REFRESH: Final = "CREATE OR REFRESH STREAMING TABLE"
_SQL_CREATE: Final = "CREATE STREAMING TABLE"
SQL_APPLY_AS_TRUNCATE: Final = "\nAPPLY AS TRUNCATE WHEN _op IN ('truncate', 'drop')"
"""The rendered SCD type 1 truncate clause, which Apache Spark 4.3's grammar lacks."""
PYTHON_APPLY_AS_TRUNCATES: Final = '        truncates["apply_as_truncates"] = F.expr(TRUNCATE)\n'
"""The rendered SCD type 1 ``apply_as_truncates=`` argument, which Apache Spark 4.3's
``create_auto_cdc_flow`` lacks."""


class SparkUnavailable(RuntimeError):
    """The machine lacks something the Spark tests need (a JDK 17, pyspark)."""


# --- the Java doubles -------------------------------------------------------------------


def pyspark_jars() -> Path:
    """The directory of the jars pyspark ships (its Spark distribution)."""
    try:
        import pyspark
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise SparkUnavailable(
            "pyspark is not installed; `make test` installs it with the dev extra"
        ) from exc
    return Path(pyspark.__file__).parent / "jars"


def java_major(javac: str) -> int:
    """The major version ``javac -version`` reports (``javac 17.0.15`` → 17)."""
    output = subprocess.run(
        [javac, "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    match = re.search(r"javac (\d+)", output.stdout + output.stderr)
    if match is None:
        raise SparkUnavailable(f"cannot read the version of {javac}: {output.stderr.strip()}")
    return int(match.group(1))


def java_tools(path: str | None = None) -> tuple[Path, Path]:
    """``(javac, java)`` of a JDK 17+: in ``$JAVA_HOME/bin`` if set (Spark's launcher
    prefers it too), else on ``path`` (default: ``PATH``).

    Raises:
        SparkUnavailable: with what is missing and how to get it.
    """
    if path is None:
        path = os.environ.get("PATH", "")
        if os.environ.get("JAVA_HOME"):
            path = os.pathsep.join([str(Path(os.environ["JAVA_HOME"]) / "bin"), path])
    found = {tool: _which(tool, path) for tool in ("javac", "java")}
    missing = [tool for tool, where in found.items() if where is None]
    if missing:
        raise SparkUnavailable(
            f"the Spark tests need a JDK {MINIMUM_JAVA} ({' and '.join(missing)} not on PATH); "
            "install one, e.g. `apt-get install openjdk-17-jdk-headless`"
        )
    javac, java = found["javac"], found["java"]
    assert javac is not None and java is not None
    major = java_major(str(javac))
    if major < MINIMUM_JAVA:
        raise SparkUnavailable(
            f"the Spark tests need a JDK {MINIMUM_JAVA}; {javac} is Java {major}; "
            "put a JDK 17 first on PATH"
        )
    return javac, java


def _which(tool: str, path: str) -> Path | None:
    where = shutil.which(tool, path=path)
    return None if where is None else Path(where)


def build_test_jar(out_dir: Path, *, path: str | None = None) -> Path:
    """Compile ``tests/spark/java`` against pyspark's jars into a jar under ``out_dir``.

    The jar's name carries a hash of the sources and of the Spark jars it was built
    against, so an unchanged build is reused.

    Raises:
        SparkUnavailable: no JDK 17 (see :func:`java_tools`).
        AssertionError: the Java sources do not compile (with javac's output).
    """
    javac, _ = java_tools(path)
    sources = sorted(JAVA_SOURCES.rglob("*.java"))
    resources = sorted(p for p in JAVA_SOURCES.rglob("*") if p.is_file() and p.suffix != ".java")
    digest = hashlib.sha256()
    for item in [*sources, *resources]:
        digest.update(str(item.relative_to(JAVA_SOURCES)).encode())
        digest.update(item.read_bytes())
    jars = pyspark_jars()
    digest.update(",".join(sorted(p.name for p in jars.glob("*.jar"))).encode())
    jar = out_dir / f"convexcdc-spark-test-{digest.hexdigest()[:16]}.jar"
    if jar.exists():
        return jar
    classes = out_dir / f"classes-{os.getpid()}"
    compiled = subprocess.run(
        [
            str(javac),
            "--release",
            str(MINIMUM_JAVA),
            "-Xlint:all,-path",
            "-Werror",
            "-d",
            str(classes),
            "-cp",
            str(jars / "*"),
            *map(str, sources),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert compiled.returncode == 0, f"javac failed:\n{compiled.stdout}{compiled.stderr}"
    partial = jar.with_suffix(f".{os.getpid()}.tmp")
    with zipfile.ZipFile(partial, "w") as archive:
        for item in sorted(classes.rglob("*.class")):
            archive.write(item, item.relative_to(classes).as_posix())
        for item in resources:
            archive.write(item, item.relative_to(JAVA_SOURCES).as_posix())
    partial.replace(jar)
    return jar


# --- the Spark Connect server -----------------------------------------------------------


def spark_env(path: str | None = None) -> dict[str, str]:
    """Environment for Spark's launchers: this venv first on ``PATH``, its Python for
    pyspark, loopback only."""
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_HOME", "SPARK_REMOTE")}
    env["PATH"] = os.pathsep.join([str(venv_bin), path if path is not None else env["PATH"]])
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    return env


_DIE_WITH_PARENT: Final = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def dies_with_this_process(argv: list[str]) -> list[str]:
    """``argv``, started so that it gets SIGTERM when the process that started it dies.

    A killed pytest must not leave a Spark JVM (1-2 GB) running. On Linux a one-line
    Python launcher sets the parent-death signal, which survives the ``exec`` chain of
    Spark's scripts, then becomes ``argv``; elsewhere ``argv`` runs as is.
    """
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-c", _DIE_WITH_PARENT, *argv]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_LOG4J2: Final = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss.SSS} %p %c{1}: %m%n
"""


def server_conf(workdir: Path, port: int) -> dict[str, str]:
    """The Spark settings of the test server.

    Beyond the doubles, they only size Spark for a few thousand rows on two cores (few
    shuffle partitions, interpreted expressions, no UI) and keep every file under
    ``workdir``.
    """
    log4j = workdir / "log4j2.properties"
    log4j.write_text(_LOG4J2, encoding="utf-8")
    java_options = f"-Dlog4j2.configurationFile={log4j.as_uri()} -Djava.io.tmpdir={workdir}"
    return {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        f"spark.sql.catalog.{TEST_CATALOG}": "convexcdc.spark.RowLevelCatalog",
        # Databricks' read_files, and Auto Loader's schema inference, for the S3/export feed.
        "spark.sql.extensions": "convexcdc.spark.ReadFilesExtension",
        "spark.sql.streaming.schemaInference": "true",
        "spark.sql.catalogImplementation": "in-memory",
        "spark.sql.warehouse.dir": str(workdir / "spark-warehouse"),
        "spark.local.dir": str(workdir / "local"),
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        # Generating and compiling Java for every plan costs more than it saves on a few
        # thousand rows: interpreted evaluation halves an SCD type 2 run.
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.codegen.factoryMode": "NO_CODEGEN",
        "spark.ui.enabled": "false",
        "spark.driver.extraJavaOptions": java_options,
    }


@dataclass
class ConnectServer:
    """A running Spark Connect server (``sc://`` URL), its process and log."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    started_in: float

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); idempotent."""
        _stop(self.process)


def start_connect_server(
    workdir: Path,
    jar: Path,
    *,
    driver_memory: str = "1g",
    deadline_seconds: float = SERVER_START_SECONDS,
) -> ConnectServer:
    """Start a local Spark Connect server with the test jar; returns once it accepts
    connections.

    Raises:
        AssertionError: the server exited or did not open its port within the deadline
            (with the end of its log).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    attempts = 0
    while True:
        attempts += 1
        try:
            return _start_connect_server(workdir, jar, driver_memory, deadline_seconds)
        except _PortTaken:
            if attempts == 3:
                raise


class _PortTaken(AssertionError):
    """Another process bound the free port first (then a new port is tried)."""


def _start_connect_server(
    workdir: Path, jar: Path, driver_memory: str, deadline_seconds: float
) -> ConnectServer:
    port = free_port()
    argv = [
        str(Path(sys.executable).with_name("spark-submit")),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master",
        "local[2]",
        "--driver-memory",
        driver_memory,
        "--jars",
        str(jar),
    ]
    for key, value in server_conf(workdir, port).items():
        argv += ["--conf", f"{key}={value}"]
    log = workdir / "connect-server.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            dies_with_this_process(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=spark_env(),
            cwd=workdir,
            start_new_session=True,
        )
    server = ConnectServer(f"sc://127.0.0.1:{port}", process, log, 0.0)
    try:
        _wait_for_port(process, port, started + deadline_seconds)
    except AssertionError as exc:
        server.stop()
        if "BindException" in log.read_text(encoding="utf-8", errors="replace"):
            raise _PortTaken(str(exc)) from None
        raise AssertionError(f"{exc}\n--- {log}:\n{server.log_tail()}") from None
    server.started_in = time.monotonic() - started
    return server


def _wait_for_port(process: subprocess.Popen[bytes], port: int, deadline: float) -> None:
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the Spark Connect server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the Spark Connect server did not open port {port} in time")
        # Polling interval only: readiness is the open port, never the elapsed time.
        time.sleep(0.2)


def _stop(process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        process.wait(timeout=timeout)


# --- pipeline projects ------------------------------------------------------------------


RENDERED_SOURCES: Final[Mapping[Language, str]] = {
    "python": "src/silver_python/convex_silver.py",
    "sql": "src/silver_sql/convex_silver.sql",
}
"""Where ``convex-cdc databricks render`` writes each pipeline source."""


def pipeline_source(rendered: Path, language: Language, *, truncates: bool = False) -> str:
    """The rendered pipeline source, as Apache Spark can run it.

    Two rewrites, nothing else: Apache Spark rejects ``CREATE OR REFRESH STREAMING TABLE``
    (Databricks syntax) and wants ``CREATE STREAMING TABLE``; and Apache Spark 4.3 has no
    truncate in AUTO CDC (no ``APPLY AS TRUNCATE WHEN`` in its SQL grammar, no
    ``apply_as_truncates`` in ``create_auto_cdc_flow``), so the SCD type 1 truncate
    clause is left out unless ``truncates`` (a test that shows Spark's refusal). A feed
    without truncate rows (the legacy API) is applied the same either way.
    """
    text = (rendered / RENDERED_SOURCES[language]).read_text(encoding="utf-8")
    if language == "sql":
        text = text.replace(_SQL_CREATE_OR_REFRESH, _SQL_CREATE)
    if not truncates:
        clause = SQL_APPLY_AS_TRUNCATE if language == "sql" else PYTHON_APPLY_AS_TRUNCATES
        text = text.replace(clause, "")
    return text


def rendered_configuration(rendered: Path) -> dict[str, str]:
    """The ``configuration`` of the rendered bundle's pipeline resource."""
    pipelines: dict[str, Any] = {}
    for path in sorted((rendered / "resources").glob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        pipelines.update((document.get("resources") or {}).get("pipelines") or {})
    assert len(pipelines) == 1, f"expected one pipeline resource in {rendered}: {pipelines}"
    (pipeline,) = pipelines.values()
    return {str(k): str(v) for k, v in (pipeline.get("configuration") or {}).items()}


def pipeline_configuration(rendered: Path, values: Mapping[str, str]) -> dict[str, str]:
    """The rendered configuration with this test's values for its bundle variables.

    Literal values (the table list, the tombstone threshold) are kept as rendered; a
    value that is a bundle variable (``${var...}``) is replaced by ``values[key]``.

    Raises:
        AssertionError: a variable the test has no value for.
    """
    configuration = {}
    for key, rendered_value in rendered_configuration(rendered).items():
        if "${" in rendered_value:
            assert key in values, f"no test value for configuration {key}: {rendered_value}"
        configuration[key] = values[key] if "${" in rendered_value else rendered_value
    return configuration


@dataclass(frozen=True)
class PipelineProject:
    """A ``spark-pipeline.yml`` project: one rendered source, its storage and schema."""

    root: Path
    silver_schema: str
    language: Language

    @property
    def spec(self) -> Path:
        return self.root / "spark-pipeline.yml"

    @property
    def source(self) -> Path:
        suffix = "py" if self.language == "python" else "sql"
        return self.root / "transformations" / f"convex_silver.{suffix}"


def write_pipeline_project(
    project: PipelineProject,
    rendered: Path,
    configuration: Mapping[str, str],
    *,
    truncates: bool = False,
) -> None:
    """Write (or, after a re-render, rewrite) ``project`` from a render output.

    The storage directory (streaming checkpoints) and the silver schema stay the same
    across rewrites, so the next run continues where the last one stopped. ``truncates``
    keeps the truncate clause Apache Spark 4.3 lacks (see :func:`pipeline_source`).
    """
    project.source.parent.mkdir(parents=True, exist_ok=True)
    source = pipeline_source(rendered, project.language, truncates=truncates)
    project.source.write_text(source, encoding="utf-8")
    spec = {
        "name": f"convex_cdc_silver_{project.silver_schema}",
        "storage": (project.root / "storage").as_uri(),
        "catalog": TEST_CATALOG,
        "database": project.silver_schema,
        "configuration": dict(configuration),
        "libraries": [{"glob": {"include": "transformations/**"}}],
    }
    project.spec.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


@dataclass(frozen=True)
class PipelineRun:
    """A finished ``spark-pipelines run``: how long it took and what it printed."""

    seconds: float
    output: str = field(repr=False)


class PipelineFailed(AssertionError):
    """``spark-pipelines run`` exited non-zero (the message has its output)."""


def run_pipeline(
    server: ConnectServer,
    project: PipelineProject,
    *,
    full_refresh: bool = False,
    deadline_seconds: float = PIPELINE_RUN_SECONDS,
) -> PipelineRun:
    """``spark-pipelines --remote <server> run --spec <project>``; returns when it exits.

    Raises:
        PipelineFailed: the run failed, with the CLI's error lines and the server log.
        AssertionError: it did not finish within the deadline (it is killed).
    """
    argv = [
        str(Path(sys.executable).with_name("spark-pipelines")),
        "--remote",
        server.url,
        "run",
        "--spec",
        str(project.spec),
    ]
    if full_refresh:
        argv.append("--full-refresh-all")
    started = time.monotonic()
    process = subprocess.Popen(
        dies_with_this_process(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=spark_env(),
        cwd=project.root,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=deadline_seconds)
    except subprocess.TimeoutExpired:
        _stop(process)
        raise AssertionError(
            f"spark-pipelines run of {project.spec} did not finish in {deadline_seconds:.0f}s"
            f"\n--- server log:\n{server.log_tail()}"
        ) from None
    output = out.decode("utf-8", errors="replace")
    if process.returncode != 0:
        raise PipelineFailed(
            f"spark-pipelines run of {project.spec} failed ({process.returncode}):\n"
            f"{_error_lines(output)}\n--- server log:\n{server.log_tail(20)}"
        )
    return PipelineRun(time.monotonic() - started, output)


def _error_lines(output: str, limit: int = 60) -> str:
    """The lines of a failed run worth reading (errors, not the progress chatter)."""
    lines = output.splitlines()
    wanted = [line for line in lines if re.search(r"error|exception|failed", line, re.I)]
    return "\n".join((wanted or lines)[-limit:])


# --- reading silver back ----------------------------------------------------------------


class SilverReader:
    """A Spark Connect session on the test server, to register sources and read results."""

    def __init__(self, server: ConnectServer) -> None:
        # The Connect builder itself: pyspark's generic builder would also switch this whole
        # process to Connect mode (an environment variable), which breaks any classic local
        # SparkSession another test starts later in the same worker.
        from pyspark.sql.connect.session import SparkSession

        self.session: SparkSession = SparkSession.builder.remote(server.url).create()

    def sql(self, statement: str) -> None:
        """Run one statement (DDL) and wait for it."""
        self.session.sql(statement).collect()

    def table_names(self, schema: str) -> list[str]:
        """The silver tables of ``schema`` (AUTO CDC's auxiliary tables left out)."""
        rows = self.session.sql(f"SHOW TABLES IN {TEST_CATALOG}.{quote(schema)}").collect()
        return sorted(
            str(row["tableName"])
            for row in rows
            if not str(row["tableName"]).startswith(AUX_TABLE_PREFIX)
        )

    def current_rows(self, schema: str, table: str, *, scd_type: int) -> pa.Table:
        """The current rows of one silver table, without AUTO CDC's bookkeeping columns.

        SCD type 2 keeps every version; the current ones are those with no ``__END_AT``
        (deleted keys have none).
        """
        frame = self.session.table(f"{TEST_CATALOG}.{quote(schema)}.{quote(table)}")
        if scd_type == 2:
            frame = frame.where(f"{SCD2_COLUMNS[1]} IS NULL").drop(*SCD2_COLUMNS)
        frame = frame.drop(*[c for c in AUTO_CDC_COLUMNS if c in frame.columns])
        return frame.toArrow()

    def stop(self) -> None:
        """End the session on the server."""
        self.session.stop()


def quote(identifier: str) -> str:
    """A back-quoted Spark SQL identifier."""
    return "`" + identifier.replace("`", "``") + "`"
