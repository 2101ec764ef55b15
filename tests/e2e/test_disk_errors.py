"""A full disk, a read-only destination and a busy one: one `error:` line and its exit code.

The full disk is a tiny tmpfs the test mounts (root only; skipped with the reason
otherwise), sized so the raw change log fits and staging does not; after the test makes
room, the next `materialize` recovers. The read-only destination is that tmpfs remounted
read-only as root, or a directory without write permission otherwise (permissions do
not stop root).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.locks import DestinationLock
from tests.e2e.cli_process import one_error_line, run_cli


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


def _synced(tmp_path: Path, server: Any) -> Path:
    dest = tmp_path / "synced"
    env = {"CONVEX_URL": server.url, "CONVEX_DEPLOY_KEY": server.key}
    result = run_cli("sync", "--dest", str(dest), env=env)
    assert result.returncode == 0, result.stderr
    return dest


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_materialize_on_a_full_disk_is_one_line_and_the_next_run_recovers(
    devserver_factory: Any, tmp_path: Path, tmpfs: Path
) -> None:
    server = devserver_factory(seed="demo", docs=400)
    synced = _synced(tmp_path, server)
    # Room for the raw change log and a little more, not for staging.
    needed = _size(synced) + 256 * 1024
    _mount("-o", f"remount,size={needed}", str(tmpfs))
    dest = tmpfs / "lake"
    shutil.copytree(synced, dest)
    filler = tmpfs / "filler"
    free = shutil.disk_usage(tmpfs).free
    filler.write_bytes(b"\0" * max(free - 16 * 1024, 0))

    full = run_cli("materialize", "--dest", str(dest))
    assert full.returncode == 7, full.stderr
    line = one_error_line(full)
    assert "No space left on device" in line and "free disk space" in line

    filler.unlink()  # room again: the next run recovers
    _mount("-o", f"remount,size={needed * 4}", str(tmpfs))
    recovered = run_cli("materialize", "--dest", str(dest))
    assert recovered.returncode == 0, recovered.stderr
    assert "consistent as of" in recovered.stdout


@pytest.fixture
def read_only_dest(devserver_factory: Any, tmp_path: Path, request: Any) -> Iterator[Path]:
    """A synced destination nothing can write to."""
    server = devserver_factory(seed="demo", docs=50)
    synced = _synced(tmp_path, server)
    if os.geteuid() == 0:
        where = request.getfixturevalue("tmpfs")
        _mount("-o", "remount,size=4m", str(where))
        shutil.copytree(synced, where / "lake")
        _mount("-o", "remount,ro", str(where))
        yield where / "lake"
        return
    for path in [synced, *synced.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield synced
    for path in [synced, *synced.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.mark.parametrize("command", ["sync", "materialize"])
def test_any_command_on_a_read_only_destination_is_one_line(
    read_only_dest: Path, command: str
) -> None:
    result = run_cli(
        command, "--dest", str(read_only_dest),
        env={"CONVEX_URL": "http://127.0.0.1:9", "CONVEX_DEPLOY_KEY": "x:y|" + "ab" * 20},
    )  # fmt: skip
    assert result.returncode == 7, result.stderr
    line = one_error_line(result)
    assert "lock" in line and ("Read-only file system" in line or "Permission denied" in line)


def test_a_busy_sync_exits_75(tmp_path: Path) -> None:
    with DestinationLock(DestinationLayout.at(tmp_path), "sync"):
        result = run_cli(
            "sync", "--dest", str(tmp_path),
            env={"CONVEX_URL": "http://127.0.0.1:9", "CONVEX_DEPLOY_KEY": "x:y|" + "ab" * 20},
        )  # fmt: skip
    assert result.returncode == 75, result.stderr
    assert f"pid {os.getpid()}" in one_error_line(result)
