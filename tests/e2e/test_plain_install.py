"""A plain ``pip install convex-cdc`` (no extras): the local loop runs, and the commands
that need an extra say which one, in one line, with exit code 2.

The optional packages are installed in the test environment, so each command runs in a
subprocess where importing them fails as on a plain install (``sys.modules[name] = None``
from a ``sitecustomize``), against a devserver over real HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.devserver import RunningDevServer

BLOCKED = ("obstore", "deltalake")
SITECUSTOMIZE = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # import fails with ModuleNotFoundError, as without the extra
"""


@pytest.fixture
def plain(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    shim = tmp_path / "plain-install"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(shim), str(root), os.environ.get("PYTHONPATH", "")])

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "convex_cdc", *args],
            env={**os.environ, "PYTHONPATH": path, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    return run


def test_the_shim_blocks_the_optional_packages(
    plain: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = plain("--version")
    assert result.returncode == 0, result.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import obstore"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        check=False,
    )
    assert probe.returncode == 0  # installed here; only the shim hides it


def test_the_local_loop_runs_without_extras(
    plain: Callable[..., subprocess.CompletedProcess[str]],
    devserver_factory: Callable[..., RunningDevServer],
    tmp_path: Path,
) -> None:
    server = devserver_factory(seed="demo", docs=200)
    env = {"CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}
    dest = str(tmp_path / "lake")

    help_text = plain("--help")
    assert help_text.returncode == 0, help_text.stderr
    for name in ("sync", "materialize", "publish", "status", "inspect", "databricks"):
        assert name in help_text.stdout
    assert "pip install 'convex-cdc[s3]'" in help_text.stdout  # publish says what it needs

    for args in (
        ["sync", "--dest", dest],
        ["materialize", "--dest", dest],
        ["status", "--dest", dest],
        ["verify", "--dest", dest],
        ["inspect"],
    ):
        result = plain(*args, env=env)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        assert "error" not in result.stderr, result.stderr
    assert (tmp_path / "lake" / "checkpoint.json").exists()


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["publish", "--dest", "{dest}", "--to", "{dest}/published"], "s3"),
        (["run", "--dest", "{dest}", "--to", "{dest}/published"], "s3"),
        (["databricks", "extract", "--warehouse", "{dest}/warehouse"], "databricks"),
        (["databricks", "apply-silver", "--warehouse", "{dest}/warehouse"], "databricks"),
    ],
)
def test_a_command_that_needs_an_extra_names_it(
    plain: Callable[..., subprocess.CompletedProcess[str]],
    args: list[str],
    extra: str,
    tmp_path: Path,
) -> None:
    env = {"CONVEX_URL": "http://127.0.0.1:9", "CONVEX_DEPLOY_KEY": "prod:x|" + "ab" * 24}
    result = plain(*(a.format(dest=tmp_path) for a in args), env=env)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"pip install 'convex-cdc[{extra}]'" in errors[0]
    assert "Traceback" not in result.stderr
