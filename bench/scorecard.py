"""The benchmark's output: the step table, the ratios against the targets, the BENCH line.

Every ratio says how it is computed; a target is PASS or MISS, or ``n/a`` when a step it
needs was skipped. The ``BENCH {json}`` line (always the last line) holds every figure.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from steps import StepResult

STEP_COLUMNS = (
    "step",
    "rows",
    "rows/s",
    "resp MB",
    "MB/s",
    "wall s",
    "cpu s",
    "inner s",
    "RSS MB",
    "server cpu s",
)


@dataclass(frozen=True)
class Check:
    """One ratio with its target (``key`` names it in the BENCH line)."""

    key: str
    name: str
    value: float | None
    target: str
    passed: bool | None
    how: str

    def to_json(self) -> dict[str, Any]:
        """As plain JSON values."""
        value = None if self.value is None else round(self.value, 4)
        return {
            "name": self.name,
            "value": value,
            "target": self.target,
            "pass": self.passed,
            "how": self.how,
        }


@dataclass(frozen=True)
class RssBaseline:
    """The steps' peak RSS of an earlier run with fewer documents, read from its BENCH json."""

    docs: int
    peak_rss_mb: dict[str, float]

    @classmethod
    def load(cls, path: Path) -> RssBaseline:
        """Read a ``--json-out`` file (or a saved ``BENCH {json}`` line) of another run."""
        text = path.read_text().strip().removeprefix("BENCH ")
        document = json.loads(text)
        steps = document["steps"]
        return cls(
            docs=int(document["docs"]),
            peak_rss_mb={name: float(step["peak_rss_mb"]) for name, step in steps.items()},
        )


@dataclass
class BenchRun:
    """Everything one run measured."""

    docs: int
    steps: dict[str, StepResult] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    peer: str = "skipped (--skip-peer)"
    rss_check_docs: int | None = None
    peer_docs: int | None = None
    rss_baseline: RssBaseline | None = None
    """Peak RSS of the steps of an earlier, smaller run (``--rss-baseline``)."""
    error: str | None = None
    """Why the run stopped early (the figures up to then are still reported)."""

    def rate(self, step: str) -> float | None:
        """A step's rows/s, if it ran and has rows."""
        result = self.steps.get(step)
        return None if result is None else result.rows_per_second


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def _bound(key: str, name: str, value: float | None, bound: str, how: str) -> Check:
    """A check of ``value`` against ``bound`` (``">= 0.70"`` or ``"<= 400"``)."""
    op, limit = bound.split()
    passed = None
    if value is not None:
        passed = value >= float(limit) if op == ">=" else value <= float(limit)
    return Check(key, name, value, bound, passed, how)


def _inner(step: StepResult | None) -> float | None:
    return None if step is None else step.inner_seconds


def _cpu_per_row(step: StepResult | None) -> float | None:
    if step is None or step.cpu_seconds is None or not step.rows:
        return None
    return step.cpu_seconds / step.rows


def checks(run: BenchRun) -> list[Check]:
    """The targets of issues 5 and 13, evaluated on this run."""
    steps = run.steps
    sync = steps.get("sync_snapshot")
    rss = None if sync is None else sync.peak_rss_mb
    small = steps.get("sync_snapshot_rss_check")
    full = steps.get("materialize_full")
    return [
        _bound(
            "sync_vs_floor",
            "sync/floor rows/s",
            _ratio(run.rate("sync_snapshot"), run.rate("floor")),
            ">= 0.85",
            "sync snapshot rows/s over the floor walk's rows/s (wall clock, same rows)",
        ),
        _bound(
            "sync_vs_peer",
            f"sync/peer rows/s ({run.peer_docs or 0:,} docs)",
            _ratio(run.rate("sync_snapshot_peer_check"), run.rate("peer")),
            ">= 10",
            "sync snapshot rows/s over the Airbyte connector's rows/s, same devserver",
        ),
        _bound(
            "sync_cpu_vs_peer",
            f"peer/sync CPU per row ({run.peer_docs or 0:,} docs)",
            _ratio(
                _cpu_per_row(steps.get("peer")), _cpu_per_row(steps.get("sync_snapshot_peer_check"))
            ),
            ">= 20",
            "user+system CPU per row of each whole process (start-up included), same devserver",
        ),
        _bound(
            "sync_peak_rss_mb",
            f"sync peak RSS MB ({run.docs:,} docs)",
            rss,
            "<= 400",
            "ru_maxrss of the sync process (os.wait4)",
        ),
        _bound(
            "sync_rss_growth",
            f"sync RSS {run.docs:,} / {run.rss_check_docs or 0:,} docs",
            _ratio(rss, None if small is None else small.peak_rss_mb),
            "<= 1.10",
            "peak RSS of the snapshot sync at both sizes (memory must not grow with size)",
        ),
        _bound(
            "materialize_recent_vs_full",
            "materialize incremental/full time, recent-heavy 1%",
            _ratio(_inner(steps.get("materialize_incremental_recent")), _inner(full)),
            "<= 0.05",
            "the materializer's own elapsed time (MaterializeReport), process start excluded",
        ),
        _bound(
            "materialize_incremental_vs_full",
            "materialize incremental/full time, uniform 1%",
            _ratio(_inner(steps.get("materialize_incremental")), _inner(full)),
            "<= 0.15",
            "the materializer's own elapsed time (MaterializeReport), process start excluded",
        ),
        _bound(
            "apply_silver_recent_rows_per_s",
            "apply-silver incremental rows/s, recent-heavy 1%",
            run.rate("apply_silver_incremental_recent"),
            ">= 50000",
            "bronze rows read over the process's wall time",
        ),
        _peak_rss_check(steps),
        _rss_growth_check(run),
        _publish_check(steps),
        _publish_check(steps, "_recent"),
        *(_delta_overhead_check(steps, phase) for phase in ("full", "incremental")),
        _bound(
            "devserver_vs_sync",
            "devserver/sync rows/s",
            _ratio(run.rate("devserver"), run.rate("sync_snapshot")),
            ">= 1.5",
            "raw page fetch rows/s over sync rows/s: the server is not the bottleneck",
        ),
    ]


def _peak_rss_check(steps: dict[str, StepResult]) -> Check:
    measured = {
        name: step.peak_rss_mb
        for name, step in steps.items()
        if name not in ("devserver", "floor", "peer", "peer_json_walk")
    }
    worst = max(measured, key=lambda name: measured[name]) if measured else None
    return _bound(
        "peak_rss_mb",
        f"highest peak RSS MB of a convex-cdc step ({worst})",
        None if worst is None else measured[worst],
        "<= 1024",
        "ru_maxrss of each convex-cdc step process (os.wait4); the highest one",
    )


_SIZED_STEPS = ("sync_", "materialize_", "publish_", "extract_", "apply_silver_")
"""Steps whose work grows with ``--docs`` (the fixed-size checks and walks excluded)."""


def _rss_growth_check(run: BenchRun) -> Check:
    """The worst step's peak RSS over the same step's in the smaller baseline run."""
    baseline = run.rss_baseline
    ratios = {}
    if baseline is not None and baseline.docs < run.docs:
        ratios = {
            name: step.peak_rss_mb / baseline.peak_rss_mb[name]
            for name, step in run.steps.items()
            if name.startswith(_SIZED_STEPS)
            and not name.endswith(("_rss_check", "_peer_check", "warmup"))
            and baseline.peak_rss_mb.get(name)
        }
    worst = max(ratios, key=lambda name: ratios[name]) if ratios else None
    sizes = "no --rss-baseline" if baseline is None else f"{run.docs:,} / {baseline.docs:,} docs"
    return _bound(
        "rss_growth_vs_baseline",
        f"peak RSS growth, {sizes} ({worst})",
        None if worst is None else ratios[worst],
        "<= 1.20",
        "each step's peak RSS over the same step's in the --rss-baseline run; the highest ratio",
    )


def _publish_check(steps: dict[str, StepResult], suffix: str = "") -> Check:
    key = f"publish_incremental{suffix}"
    publish = steps.get(key)
    changed = steps.get(f"materialize_incremental{suffix}")
    if publish is None or changed is None:
        return Check(key, f"{key} files", None, "only changed", None, "")
    uploaded = publish.details.get("files_uploaded", 0)
    total = publish.details.get("files_total", 0)
    written = changed.details.get("files_written", 0)
    megabytes = publish.details.get("bytes_uploaded", 0) / 1e6
    return Check(
        key,
        f"{key} files ({uploaded}/{total}, {megabytes:,.1f} MB)",
        uploaded / total if total else None,
        "only changed",
        uploaded <= written,
        f"share of the manifest's files uploaded; PASS when no more than the {written} "
        "files the incremental materialize wrote",
    )


def _delta_overhead_check(steps: dict[str, StepResult], phase: str) -> Check:
    with_delta = steps.get(f"publish_{phase}")
    without = steps.get(f"publish_{phase}_no_delta")
    extra = None
    if with_delta is not None and without is not None:
        extra = _ratio(
            (with_delta.inner_seconds or with_delta.wall_seconds)
            - (without.inner_seconds or without.wall_seconds),
            without.inner_seconds or without.wall_seconds,
        )
    return _bound(
        f"publish_{phase}_delta_overhead",
        f"publish {phase}: extra time of the Delta commits",
        extra,
        "<= 0.20",
        "(publish - publish --no-delta) / publish --no-delta, each the command's own elapsed "
        "time (PublishReport), same staging, fresh prefixes",
    )


def machine() -> dict[str, Any]:
    """CPU, memory, Python and load, to read the figures against."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_mb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_mb": memory_mb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _fmt(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _step_note(step: StepResult) -> str:
    details = step.details
    if "files_uploaded" in details:
        return (
            f"{details['files_uploaded']}/{details['files_total']} files uploaded, "
            f"{details['bytes_uploaded'] / 1e6:,.1f} MB"
        )
    if "files_written" in details:
        return f"{details['files_written']} files written"
    if "root_table_rows" in details:
        return f"of {details['root_table_rows']:,} root-table rows"
    if "pages" in details:
        return f"{details['pages']:,} pages"
    if "expected_rows" in details:
        return f"expected {details['expected_rows']:,}"
    return ""


def render(run: BenchRun, bench_json: dict[str, Any]) -> None:
    """Print the step table, the checks and the BENCH line to stdout."""
    width = max(180, shutil.get_terminal_size((180, 40)).columns)
    console = Console(width=width, highlight=False, soft_wrap=False)
    table = Table(title=f"convex-cdc bench: {run.docs:,} documents")
    for column in STEP_COLUMNS:
        table.add_column(column, justify="left" if column == "step" else "right", no_wrap=True)
    table.add_column("notes")
    for step in run.steps.values():
        mb = None if step.response_bytes is None else step.response_bytes / 1e6
        table.add_row(
            step.name,
            _fmt(step.rows),
            _fmt(step.rows_per_second),
            _fmt(mb, 1),
            _fmt(step.mb_per_second, 1),
            _fmt(step.wall_seconds, 2),
            _fmt(step.cpu_seconds, 2),
            _fmt(step.inner_seconds, 2),
            _fmt(step.peak_rss_mb),
            _fmt(step.server_cpu_seconds, 2),
            _step_note(step),
        )
    console.print(table)
    hows: dict[str, list[str]] = {}
    for step in run.steps.values():
        if step.how:
            hows.setdefault(step.how, []).append(step.name)
    for how, names in hows.items():
        console.print(f"how: {', '.join(names)}: {how}")
    targets = Table(title="targets")
    for column in ("check", "value", "target", "result", "how"):
        targets.add_column(column, justify="right" if column == "value" else "left")
    for check in checks(run):
        result = {True: "PASS", False: "MISS", None: "n/a"}[check.passed]
        targets.add_row(check.name, _fmt(check.value, 3), check.target, result, check.how)
    console.print(targets)
    console.print(f"peer: {run.peer}")
    for key, value in run.setup.items():
        console.print(f"setup: {key} = {value}")
    for note in run.notes:
        console.print(f"note: {note}")
    if run.error is not None:
        console.print(f"error: the run stopped early: {run.error.splitlines()[0]}")
    print("BENCH " + _dumps(bench_json), flush=True)


def bench_json(run: BenchRun) -> dict[str, Any]:
    """Every figure of the run as one JSON document."""
    return {
        "docs": run.docs,
        "error": run.error,
        "rss_check_docs": run.rss_check_docs,
        "peer_docs": run.peer_docs,
        "rss_baseline_docs": None if run.rss_baseline is None else run.rss_baseline.docs,
        "steps": {name: step.to_json() for name, step in run.steps.items()},
        "checks": {check.key: check.to_json() for check in checks(run)},
        "peer": run.peer,
        "setup": run.setup,
        "notes": run.notes,
        "machine": machine(),
    }


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, default=str)
