"""`sync --follow`, `status` and `demo`, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from convex_cdc.cli import cli
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout


def test_follow_keeps_landing_new_writes_and_stops_cleanly_on_sigterm(
    devserver_factory: Any, tmp_path: Path
) -> None:
    server = devserver_factory(seed="demo", docs=100)
    env = {**os.environ, "CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}
    process = subprocess.Popen(
        [sys.executable, "-m", "convex_cdc", "sync", "--dest", str(tmp_path), "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    store = FileCheckpointStore(DestinationLayout.at(tmp_path))
    try:
        ts = server.transact([{"op": "insert", "table": "late", "fields": {"n": 1}}])["ts"]
        deadline = time.monotonic() + 60
        while True:
            checkpoint = store.load()
            if checkpoint is not None and (checkpoint.consistent_as_of or 0) >= ts:
                break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the write never landed"
            time.sleep(0.2)
        assert list((tmp_path / "raw_change_log" / "late").glob("batch=*.parquet"))
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert b"sync:" in stdout
    assert server.key.encode() not in stdout + stderr


def test_status_reports_phase_lag_tables_and_last_publish(
    devserver_factory: Any, tmp_path: Path
) -> None:
    server = devserver_factory(seed="demo", docs=300)
    env = {"CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}
    runner = CliRunner()
    dest = str(tmp_path / "lake")
    for args in (
        ["sync", "--dest", dest],
        ["materialize", "--dest", dest],
        ["publish", "--dest", dest, "--to", str(tmp_path / "published")],
    ):
        assert runner.invoke(cli, args, env=env).exit_code == 0
    server.workload(20)

    result = runner.invoke(cli, ["status", "--dest", dest, "--json"], env=env)
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["phase"] == "data-sync"  # auto: the devserver offers Data Sync
    assert status["api"] == "data-sync"
    assert status["lag_source"] == "server"
    assert status["lag_seconds"] >= 0
    rows = {t["table"]: t["rows"] for t in status["staging"]["tables"]}
    assert sum(rows.values()) == 300
    assert status["last_publish"]["sequence"] == 1
    assert server.key not in result.output

    human = runner.invoke(cli, ["status", "--dest", dest, "--offline"], env=env)
    assert human.exit_code == 0
    assert "local clock" in human.output and "messages" in human.output


def test_demo_runs_the_whole_loop_and_says_where_things_went(tmp_path: Path) -> None:
    dest = tmp_path / "demo-lake"
    result = CliRunner().invoke(
        cli, ["demo", "--dest", str(dest), "--docs", "300", "--transactions", "60"]
    )
    assert result.exit_code == 0, result.output
    assert "staging matches the source" in result.output
    assert (dest / "published" / "manifest.json").exists()
    assert str(dest / "published" / "manifest.json") in result.output.replace("\n", "")
    # A second demo replaces its own earlier lake, but never a directory it did not make.
    again = CliRunner().invoke(
        cli, ["demo", "--dest", str(dest), "--docs", "50", "--transactions", "0"]
    )
    assert again.exit_code == 0, again.output
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "data.txt").write_text("keep me")
    refused = CliRunner().invoke(cli, ["demo", "--dest", str(foreign)])
    assert refused.exit_code != 0
    assert (foreign / "data.txt").read_text() == "keep me"
