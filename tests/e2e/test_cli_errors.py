"""What a user sees when `convex-cdc sync` cannot work: one line, the fix, never the key.

Runs the real console entry point as a subprocess against the devserver over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _sync(dest: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convex_cdc", "-vv", "sync", "--dest", str(dest), *extra],
        env={**os.environ, "CONVEX_CDC_API": "streaming-export", **env},  # legacy retention
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_wrong_key_names_the_problem_and_the_fix(devserver: Any, tmp_path: Path) -> None:
    wrong = "prod:someone-else|" + "cd" * 32
    result = _sync(tmp_path, {"CONVEX_URL": devserver.url, "CONVEX_DEPLOY_KEY": wrong})
    assert result.returncode == 4
    line = _error_line(result)
    assert "BadAdminKey" in line and "CONVEX_DEPLOY_KEY" in line and "Deploy keys" in line
    assert wrong not in result.stderr + result.stdout
    assert wrong.partition("|")[2] not in result.stderr + result.stdout
    assert not (tmp_path / "checkpoint.json").exists()


def test_an_expired_cursor_says_to_resnapshot(devserver_factory: Any, tmp_path: Path) -> None:
    server = devserver_factory(seed="demo", docs=50)
    env = {"CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}
    assert _sync(tmp_path, env).returncode == 0
    server.workload(5)
    server.settings(retention_seconds=0)  # every delta cursor is now out of retention
    result = _sync(tmp_path, env)
    assert result.returncode == 5
    line = _error_line(result)
    assert "InvalidWindowToReadDocuments" in line and "--resnapshot" in line
    assert server.key not in result.stderr + result.stdout
    server.settings(retention_seconds=3600)
    assert _sync(tmp_path, env, "--resnapshot").returncode == 0


def test_an_unreachable_server_fails_fast_with_one_line(tmp_path: Path) -> None:
    key = "prod:nowhere|" + "ef" * 32
    result = _sync(
        tmp_path,
        {
            "CONVEX_URL": f"http://127.0.0.1:{_closed_port()}",
            "CONVEX_DEPLOY_KEY": key,
            "CONVEX_CDC_MAX_RETRY_SECONDS": "1",
        },
    )
    assert result.returncode == 3
    line = _error_line(result)
    assert "could not reach" in line and "CONVEX_URL" in line
    assert key not in result.stderr + result.stdout


@pytest.mark.parametrize("missing", ["CONVEX_URL", "CONVEX_DEPLOY_KEY"])
def test_missing_settings_are_named(missing: str, tmp_path: Path) -> None:
    env = {"CONVEX_URL": "http://127.0.0.1:9", "CONVEX_DEPLOY_KEY": "prod:x|" + "0" * 32}
    env[missing] = ""
    result = _sync(tmp_path, env)
    assert result.returncode == 2
    assert missing in _error_line(result)
