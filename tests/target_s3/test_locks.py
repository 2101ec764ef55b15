"""One process per role and destination."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from convex_cdc.core.errors import DestinationBusy
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.locks import DestinationLock

HOLDER = """
import sys
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.locks import DestinationLock
with DestinationLock(DestinationLayout.at(sys.argv[1]), sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def _hold(dest: Path, role: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(dest), role],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=30)


def test_a_role_held_by_another_process_is_refused_naming_its_pid(tmp_path: Path) -> None:
    holder = _hold(tmp_path, "sync")
    try:
        expected = rf"another convex-cdc sync is running on .* \(pid {holder.pid}\)"
        with (
            pytest.raises(DestinationBusy, match=expected),
            DestinationLock(DestinationLayout.at(tmp_path), "sync"),
        ):
            pass
    finally:
        _release(holder)


def test_the_lock_is_free_again_once_the_holder_exits(tmp_path: Path) -> None:
    _release(_hold(tmp_path, "staging"))
    with DestinationLock(DestinationLayout.at(tmp_path), "staging") as lock:
        assert lock.path == tmp_path / ".locks" / "staging.lock"


def test_different_roles_do_not_block_each_other(tmp_path: Path) -> None:
    holder = _hold(tmp_path, "sync")
    try:
        with (
            DestinationLock(DestinationLayout.at(tmp_path), "staging"),
            DestinationLock(DestinationLayout.at(tmp_path), "publish"),
        ):
            pass
    finally:
        _release(holder)


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with (
        DestinationLock(DestinationLayout.at(tmp_path), "publish"),
        pytest.raises(DestinationBusy, match="another convex-cdc publish"),
    ):
        DestinationLock(DestinationLayout.at(tmp_path), "publish").acquire()
    with DestinationLock(DestinationLayout.at(tmp_path), "publish"):
        pass


def test_a_command_on_a_busy_destination_exits_75_with_one_line(tmp_path: Path) -> None:
    """A scheduler tells "skip this run" from "fix your flags" by the exit code alone."""
    holder = _hold(tmp_path, "staging")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "convex_cdc", "materialize", "--dest", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        _release(holder)
    assert result.returncode == DestinationBusy.exit_code == 75
    assert result.stderr.startswith("error: another convex-cdc staging is running")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
