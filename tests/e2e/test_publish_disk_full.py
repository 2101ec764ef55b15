"""`convex-cdc publish` to a local directory on a full disk: one line that says so, exit 7.

The full disk is a tiny tmpfs the test mounts (root only; skipped with the reason
otherwise), filled up before publishing. After the test makes room, the next publish
completes and readers see the published state.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from convex_cdc.core.errors import TargetError
from convex_cdc.target_s3.publish.reader import read_published
from tests.target_s3.handmade_staging import write_staging


def _convex_cdc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convex_cdc", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An empty tmpfs of 64 KiB at a fresh directory (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny filesystem needs root")
    where = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; return it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_publish_to_a_full_directory_says_no_space_and_the_next_run_recovers(
    tmp_path: Path, tmpfs: Path
) -> None:
    dest = tmp_path / "dest"
    docs = [{"_id": f"m{i}", "_creationTime": 1.0, "_ts": 10, "body": f"x{i}"} for i in range(50)]
    write_staging(dest, {"messages": docs})
    out = tmpfs / "published"
    out.mkdir()
    filler = _fill(tmpfs)

    result = _convex_cdc("publish", "--dest", str(dest), "--to", str(out))

    assert result.returncode == TargetError.exit_code == 7, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "no space left" in lines[0] and "free space" in lines[0]
    for blamed in ("credential", "network", "target URL"):
        assert blamed not in lines[0]
    assert not (out / "manifest.json").exists()

    filler.unlink()
    again = _convex_cdc("publish", "--dest", str(dest), "--to", str(out))

    assert again.returncode == 0, again.stderr
    assert read_published(str(out)).table("messages").num_rows == 50
