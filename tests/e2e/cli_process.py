"""The CLI run against a devserver: in this process (:func:`invoke_cli`) or as a user runs
it, in its own process (:func:`run_cli`); and the one error line it must print."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from click.testing import CliRunner, Result

from convex_cdc.cli import cli
from tests.fixtures.devserver import RunningDevServer


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


def invoke_cli(server: RunningDevServer, *args: str) -> Result:
    """The CLI in this process against ``server``; asserts it succeeded and never printed
    the deploy key."""
    result = CliRunner().invoke(
        cli, list(args), env={"CONVEX_DEPLOY_KEY": server.key, "CONVEX_URL": server.url}
    )
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    assert server.key not in result.output
    return result
