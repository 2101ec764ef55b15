"""The measured steps: each one child process, its figures in a :class:`StepResult`.

``rows`` and ``response_bytes`` come from the process itself (the walk script's JSON line,
or the report the convex-cdc command returned, recorded by ``cli_probe.py``); wall
seconds and peak RSS come from the parent (``os.wait4``). ``inner_seconds`` is the time
the tool measured around its own work, without interpreter start-up and imports.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measured_process import ProcessResult, run_measured
from servers import ServerMeter

BENCH_DIR = Path(__file__).resolve().parent


@dataclass
class StepResult:
    """One step's figures; ``None`` where a figure does not apply to the step."""

    name: str
    rows: int | None
    response_bytes: int | None
    wall_seconds: float
    peak_rss_mb: float
    cpu_seconds: float | None = None
    """User + system CPU of the process (less sensitive to a busy machine than wall time)."""
    server_cpu_seconds: float | None = None
    """CPU the devserver spent while the step ran (near ``wall_seconds``: server-bound)."""
    inner_seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    how: str = ""
    """How ``rows`` and ``response_bytes`` were obtained."""

    @property
    def rows_per_second(self) -> float | None:
        """Rows over the process's wall time."""
        return _rate(self.rows, self.wall_seconds)

    @property
    def mb_per_second(self) -> float | None:
        """Response MB (10^6 bytes) over the process's wall time."""
        if self.response_bytes is None:
            return None
        return _rate(self.response_bytes / 1e6, self.wall_seconds)

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON values."""
        return {
            "rows": self.rows,
            "rows_per_s": _round(self.rows_per_second),
            "response_mb": None if self.response_bytes is None else self.response_bytes / 1e6,
            "mb_per_s": _round(self.mb_per_second),
            "wall_s": round(self.wall_seconds, 3),
            "cpu_s": None if self.cpu_seconds is None else round(self.cpu_seconds, 3),
            "server_cpu_s": _round(self.server_cpu_seconds),
            "inner_s": None if self.inner_seconds is None else round(self.inner_seconds, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "how": self.how,
            **self.details,
        }


def _rate(amount: float | None, seconds: float) -> float | None:
    if amount is None or seconds <= 0:
        return None
    return amount / seconds


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass(frozen=True)
class StepContext:
    """What every step needs: where logs go, the children's environment, the server."""

    work: Path
    env: Mapping[str, str]
    meter: ServerMeter | None = None

    def log(self, name: str) -> Path:
        """The log prefix for step ``name``."""
        return self.work / "logs" / name

    def run(
        self, name: str, argv: Sequence[str], **options: Any
    ) -> tuple[ProcessResult, float | None]:
        """:func:`run_measured` → the process and the server CPU seconds it caused."""
        if self.meter is not None:
            self.meter.mark()
        process = run_measured(argv, env=self.env, log_prefix=self.log(name), **options)
        server_cpu = None if self.meter is None else self.meter.since_mark()
        return process, server_cpu


def walk_step(context: StepContext, name: str, mode: str) -> StepResult:
    """Run ``snapshot_walk.py MODE`` (floor, raw or json-tables)."""
    argv = [sys.executable, str(BENCH_DIR / "snapshot_walk.py"), mode]
    process, server_cpu = context.run(name, argv)
    figures = json.loads(process.stdout().strip().splitlines()[-1])
    how = {
        "floor": "ConvexClient.list_snapshot over every page, parsed and discarded",
        "raw": "bare httpx, page bytes only (no document parsing)",
        "json-tables": "the connector's GET walk per root table, format=json",
    }[mode]
    details: dict[str, Any] = {"pages": figures["pages"]}
    if "tables" in figures:
        details["tables"] = figures["tables"]
    return StepResult(
        name=name,
        rows=figures["rows"],
        response_bytes=figures["response_bytes"],
        wall_seconds=process.wall_seconds,
        peak_rss_mb=process.peak_rss_mb,
        cpu_seconds=process.cpu_seconds,
        server_cpu_seconds=server_cpu,
        inner_seconds=figures["seconds"],
        details=details,
        how=how,
    )


def cli_step(
    context: StepContext, name: str, args: Sequence[str]
) -> tuple[StepResult, dict[str, Any]]:
    """Run ``convex-cdc ARGS`` under the probe; → the step and the command's own report.

    ``rows``/``response_bytes`` are the documents and bytes the command received from the
    server (``None`` when it read nothing from the server).
    """
    probe = context.work / "probe" / f"{name}.json"
    probe.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(BENCH_DIR / "cli_probe.py"), str(probe), *args]
    process, server_cpu = context.run(name, argv)
    record: dict[str, Any] = json.loads(probe.read_text())
    report: dict[str, Any] = record.get("report", {})
    if "hook_error" in record or not report:
        raise RuntimeError(f"{name}: the probe recorded no report ({record.get('hook_error')})")
    reads = record.get("reads", {})
    read_anything = bool(reads.get("pages"))
    inner = report.get("elapsed_seconds", report.get("sync", {}).get("elapsed_seconds"))
    return (
        StepResult(
            name=name,
            rows=reads.get("rows") if read_anything else None,
            response_bytes=reads.get("response_bytes") if read_anything else None,
            wall_seconds=process.wall_seconds,
            peak_rss_mb=process.peak_rss_mb,
            cpu_seconds=process.cpu_seconds,
            server_cpu_seconds=server_cpu,
            inner_seconds=inner if isinstance(inner, float | int) else None,
            how="documents/bytes received by ConvexClient (probe)" if read_anything else "",
        ),
        report,
    )


def from_process(
    name: str,
    process: ProcessResult,
    *,
    rows: int | None,
    how: str,
    response_bytes: int | None,
    server_cpu_seconds: float | None,
) -> StepResult:
    """A step measured by the caller (the Airbyte connector)."""
    return StepResult(
        server_cpu_seconds=server_cpu_seconds,
        name=name,
        rows=rows,
        response_bytes=response_bytes,
        wall_seconds=process.wall_seconds,
        peak_rss_mb=process.peak_rss_mb,
        cpu_seconds=process.cpu_seconds,
        how=how,
    )
