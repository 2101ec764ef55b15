"""SIGTERM during the snapshot walk stops `sync` and `run` promptly, with exit 143.

`sync` runs as a subprocess against an out-of-process devserver; the test waits until it
sees batches land (batch indexes in the destination), then sends SIGTERM. The process must
end within seconds, with exit code 143 (`Stopped`) and one `error:` line saying where it
stopped, never "caught up"; its checkpoint covers exactly the batches that landed, and the
next run resumes to a staging equal to the server's truth. `run` stopped the same way
never goes on to materialize.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest

from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.raw.change_log import RawChangeLog
from convex_cdc.target_s3.staging.materializer import StagingMaterializer
from convex_cdc.target_s3.staging.reader import read_staging_table
from convex_cdc.target_s3.staging.state import load_staging_state
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.fixtures.devserver import start_devserver_process, stop_process

STALL_SECONDS: Final = 120.0
"""A sync that lands nothing for this long is hung: the test fails instead of waiting."""
STOP_WITHIN_SECONDS: Final = 10.0
"""Generous for a loaded machine; an ignored SIGTERM runs the whole walk (far longer)."""


@pytest.fixture
def server() -> Iterator[tuple[str, str]]:
    process, url, key = start_devserver_process(
        "--seed", "demo", "--docs", "6000", "--snapshot-page-size", "20"
    )
    yield url, key
    stop_process(process)


def _sigterm_after_batches(command: list[str], dest: Path, env: dict[str, str], batches: int
                           ) -> tuple[subprocess.CompletedProcess[str], float]:  # fmt: skip
    """Start ``command``, SIGTERM it once ``batches`` batch indexes landed; its result and
    how long it took to exit after the signal."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log = RawChangeLog(DestinationLayout.at(dest))
    last_change, seen = time.monotonic(), 0
    try:
        while len(numbers := log.batch_numbers()) < batches:
            assert process.poll() is None, f"ended before the signal: {process.communicate()}"
            if len(numbers) != seen:
                last_change, seen = time.monotonic(), len(numbers)
            assert time.monotonic() - last_change < STALL_SECONDS, "sync landed nothing"
            time.sleep(0.01)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), took


def _env(url: str, key: str) -> dict[str, str]:
    # The legacy walk: its phases are what the stop message names.
    return {
        **os.environ,
        "CONVEX_URL": url,
        "CONVEX_DEPLOY_KEY": key,
        "CONVEX_CDC_API": "streaming-export",
    }


@pytest.mark.timeout(600)
def test_sigterm_mid_walk_stops_sync_with_143_and_the_next_run_resumes(
    server: tuple[str, str], tmp_path: Path
) -> None:
    url, key = server
    dest = tmp_path / "lake"
    command = [sys.executable, "-m", "convex_cdc", "sync", "--dest", str(dest),
               "--batch-rows", "20"]  # fmt: skip
    result, took = _sigterm_after_batches(command, dest, _env(url, key), batches=3)

    assert result.returncode == 143, result.stderr
    assert took < STOP_WITHIN_SECONDS, f"took {took:.1f}s to stop"
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "stopped on request during the snapshot walk" in errors[0]
    assert "snapshot walk at" in errors[0] and "run sync again" in errors[0]
    assert "caught up" not in result.stdout + result.stderr
    layout = DestinationLayout.at(dest)
    checkpoint = FileCheckpointStore(layout).load()
    assert checkpoint is not None and checkpoint.phase == "snapshot"
    # The batch in flight landed and was checkpointed; nothing beyond it was written.
    assert RawChangeLog(layout).batch_numbers()[-1] == checkpoint.batch_seq
    assert f"batches up to {checkpoint.batch_seq} " in errors[0]

    resumed = subprocess.run(
        [sys.executable, "-m", "convex_cdc", "sync", "--dest", str(dest)],
        env=_env(url, key), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "caught up" in resumed.stdout
    StagingMaterializer(layout).materialize()
    with httpx.Client(base_url=url, headers={"Authorization": f"Convex {key}"}) as control:
        truth = [json.loads(line) for line in control.get("/_devserver/truth").content.splitlines()]
    state = load_staging_state(layout.staging_state)
    assert state is not None
    tables = {t.key: read_staging_table(layout, t.key) for t in state.tables}
    declared = {t.key: {c.name: c.type for c in t.columns} for t in state.tables}
    assert assert_tables_equal_truth(tables, truth, declared=declared) == 6000


@pytest.mark.timeout(600)
def test_sigterm_mid_walk_stops_run_before_materialize(
    server: tuple[str, str], tmp_path: Path
) -> None:
    url, key = server
    dest = tmp_path / "lake"
    command = [sys.executable, "-m", "convex_cdc", "run", "--dest", str(dest),
               "--batch-rows", "20"]  # fmt: skip
    result, took = _sigterm_after_batches(command, dest, _env(url, key), batches=2)
    assert result.returncode == 143, result.stderr
    assert took < STOP_WITHIN_SECONDS, f"took {took:.1f}s to stop"
    assert "stopped on request during the snapshot walk" in result.stderr
    assert "materialize" not in result.stdout
    assert not (dest / "staging").exists()
