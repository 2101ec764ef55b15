"""One process per role and destination."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from convex_cdc.core.errors import ConfigError
from convex_cdc.target_s3.locks import DestinationLock

HOLDER = """
import sys
from convex_cdc.target_s3.locks import DestinationLock
with DestinationLock(sys.argv[1], sys.argv[2]):
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
        with pytest.raises(ConfigError, match=expected), DestinationLock(tmp_path, "sync"):
            pass
    finally:
        _release(holder)


def test_the_lock_is_free_again_once_the_holder_exits(tmp_path: Path) -> None:
    _release(_hold(tmp_path, "staging"))
    with DestinationLock(tmp_path, "staging") as lock:
        assert lock.path == tmp_path / ".locks" / "staging.lock"


def test_different_roles_do_not_block_each_other(tmp_path: Path) -> None:
    holder = _hold(tmp_path, "sync")
    try:
        with DestinationLock(tmp_path, "staging"), DestinationLock(tmp_path, "publish"):
            pass
    finally:
        _release(holder)


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with (
        DestinationLock(tmp_path, "publish"),
        pytest.raises(ConfigError, match="another convex-cdc publish"),
    ):
        DestinationLock(tmp_path, "publish").acquire()
    with DestinationLock(tmp_path, "publish"):
        pass
