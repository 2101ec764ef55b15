"""The bench's RSS growth target against a smaller run (10M within 1.2x of 1M)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# bench/ is a folder of scripts, not a package: bench/run.py imports its modules by name too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from scorecard import BenchRun, RssBaseline, bench_json
from steps import StepResult


def step(name: str, rss_mb: float) -> StepResult:
    return StepResult(name=name, rows=10, response_bytes=None, wall_seconds=1.0, peak_rss_mb=rss_mb)


def saved_run(path: Path, docs: int, rss: dict[str, float]) -> Path:
    small = BenchRun(docs=docs, steps={name: step(name, mb) for name, mb in rss.items()})
    path.write_text("BENCH " + json.dumps(bench_json(small)))
    return path


def test_the_worst_step_growth_over_the_smaller_run_is_the_figure(tmp_path: Path) -> None:
    baseline = saved_run(
        tmp_path / "1m.json",
        1_000_000,
        {"sync_snapshot": 200, "materialize_full": 600, "floor": 40, "apply_silver_full": 400},
    )
    run = BenchRun(
        docs=10_000_000,
        steps={
            "sync_snapshot": step("sync_snapshot", 210),
            "materialize_full": step("materialize_full", 780),  # 1.3x: the worst
            "floor": step("floor", 400),  # a fixed-cost walk, not a convex-cdc step
            "apply_silver_full": step("apply_silver_full", 440),
            "extract_full": step("extract_full", 900),  # not in the baseline: no ratio
        },
    )
    run.rss_baseline = RssBaseline.load(baseline)

    check = bench_json(run)["checks"]["rss_growth_vs_baseline"]

    assert check["value"] == 1.3
    assert check["pass"] is False
    assert "materialize_full" in check["name"] and "10,000,000 / 1,000,000" in check["name"]


def test_without_a_baseline_the_growth_target_is_not_judged() -> None:
    run = BenchRun(docs=1_000, steps={"sync_snapshot": step("sync_snapshot", 100)})

    check = bench_json(run)["checks"]["rss_growth_vs_baseline"]

    assert check["value"] is None and check["pass"] is None
    assert "no --rss-baseline" in check["name"]
