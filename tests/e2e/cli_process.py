"""The CLI run as a user runs it (its own process), and the one error line it must print."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m convex_cdc ARGS`` with this environment plus ``env``; never raises on
    a non-zero exit (the tests assert the code)."""
    return subprocess.run(
        [sys.executable, "-m", "convex_cdc", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The only ``error:`` line; fails on a traceback or a second error line."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]
