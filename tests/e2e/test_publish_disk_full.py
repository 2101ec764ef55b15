"""`convex-cdc publish` to a local directory on a full disk: one line that says so, exit 7.

The full disk is a tiny tmpfs the test mounts (root only; skipped with the reason
otherwise), filled up before publishing. After the test makes room, the next publish
completes and readers see the published state.
"""

from __future__ import annotations

from pathlib import Path

from convex_cdc.core.errors import TargetError
from convex_cdc.target_s3.publish.reader import read_published
from tests.e2e.cli_process import run_cli
from tests.fixtures.tiny_filesystem import fill
from tests.target_s3.handmade_staging import write_staging


def test_publish_to_a_full_directory_says_no_space_and_the_next_run_recovers(
    tmp_path: Path, tmpfs: Path
) -> None:
    dest = tmp_path / "dest"
    docs = [{"_id": f"m{i}", "_creationTime": 1.0, "_ts": 10, "body": f"x{i}"} for i in range(50)]
    write_staging(dest, {"messages": docs})
    out = tmpfs / "published"
    out.mkdir()
    filler = fill(tmpfs)

    result = run_cli("publish", "--dest", str(dest), "--to", str(out))

    assert result.returncode == TargetError.exit_code == 7, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "no space left" in lines[0] and "free space" in lines[0]
    for blamed in ("credential", "network", "target URL"):
        assert blamed not in lines[0]
    assert not (out / "manifest.json").exists()

    filler.unlink()
    again = run_cli("publish", "--dest", str(dest), "--to", str(out))

    assert again.returncode == 0, again.stderr
    assert read_published(str(out)).table("messages").num_rows == 50
