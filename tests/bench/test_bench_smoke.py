"""``bench/run.py`` end to end on a tiny dataset: the table and a complete BENCH line.

No timing is asserted (speed is measured by ``make bench``, not by tests); what is checked
is that every step ran, reported its figures, and that the figures agree with the data
the run created (every document walked, every change seen by the delta steps).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = 2000
SNAPSHOT_STEPS = ("devserver", "floor", "sync_snapshot", "extract_full")
STEPS = (
    *SNAPSHOT_STEPS,
    "materialize_full",
    "publish_full",
    "publish_full_no_delta",
    "apply_silver_full",
    "sync_delta",
    "materialize_incremental",
    "publish_incremental",
    "publish_incremental_no_delta",
    "extract_delta",
    "apply_silver_incremental",
    "sync_delta_recent",
    "materialize_incremental_recent",
    "publish_incremental_recent",
    "publish_incremental_no_delta_recent",
    "extract_delta_recent",
    "apply_silver_incremental_recent",
    "sync_snapshot_rss_check",
)
CHECKS = (
    "sync_vs_floor",
    "sync_vs_peer",
    "sync_peak_rss_mb",
    "sync_rss_growth",
    "sync_cpu_vs_peer",
    "materialize_recent_vs_full",
    "materialize_incremental_vs_full",
    "apply_silver_recent_rows_per_s",
    "peak_rss_mb",
    "publish_incremental",
    "publish_incremental_recent",
    "publish_full_delta_overhead",
    "publish_incremental_delta_overhead",
    "devserver_vs_sync",
    "rss_growth_vs_baseline",
)


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.databricks
def test_bench_runs_every_step_and_prints_a_complete_bench_line(tmp_path: Path) -> None:
    json_out = tmp_path / "bench.json"
    keep = tmp_path / "work"
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--docs", str(DOCS), "--skip-peer"]
    done = subprocess.run(
        [*argv, "--keep-dir", str(keep), "--json-out", str(json_out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("BENCH {"), lines[-3:]
    bench = json.loads(lines[-1].removeprefix("BENCH "))
    assert bench == json.loads(json_out.read_text())
    assert bench["error"] is None

    table = "\n".join(lines[:-1])
    for heading in ("rows/s", "MB/s", "wall s", "RSS MB"):
        assert heading in table
    for name in STEPS:
        assert name in table, name
    assert "peer: skipped" in table

    steps = bench["steps"]
    assert set(steps) == set(STEPS)
    for name, step in steps.items():
        assert step["wall_s"] > 0, name
        assert step["peak_rss_mb"] > 0, name
        if name.startswith("publish"):
            assert step["files_uploaded"] >= 1 and step["files_total"] >= step["files_uploaded"]
            # Shown: the median of five publishes, each to its own prefixes.
            samples = step["samples_inner_s"]
            assert len(samples) == 5 and all(s > 0 for s in samples), name
            assert step["inner_s"] == sorted(samples)[2], name
        else:
            assert step["rows"] > 0 and step["rows_per_s"] > 0, name
    for name in SNAPSHOT_STEPS:
        assert steps[name]["rows"] == DOCS, name
        assert steps[name]["response_mb"] > 0 and steps[name]["mb_per_s"] > 0, name
    assert steps["materialize_full"]["rows"] == DOCS
    assert steps["apply_silver_full"]["rows"] == DOCS

    changed = DOCS // 100
    for suffix in ("", "_recent"):
        assert steps[f"sync_delta{suffix}"]["expected_rows"] == changed
        for name in ("sync_delta", "extract_delta", "materialize_incremental"):
            assert steps[name + suffix]["rows"] == changed, name + suffix
    assert bench["rss_check_docs"] == DOCS // 4
    assert steps["sync_snapshot_rss_check"]["rows"] == DOCS // 4

    assert set(bench["checks"]) == set(CHECKS)
    # The peer was skipped, and no --rss-baseline was given.
    unjudged = {"sync_vs_peer", "sync_cpu_vs_peer", "rss_growth_vs_baseline"}
    for key in unjudged:
        assert bench["checks"][key]["pass"] is None, key
    for key in set(CHECKS) - unjudged:
        assert isinstance(bench["checks"][key]["value"], float), key
        assert bench["checks"][key]["pass"] in (True, False), key
    assert bench["machine"]["cpu_count"] >= 1
    assert bench["setup"]["devserver_start_s"] >= 0
