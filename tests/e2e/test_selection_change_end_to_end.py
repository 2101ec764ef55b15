"""A changed ``--include/--exclude`` over real HTTP, as a user meets it: the legacy API
refuses it with exit 2 and one line naming ``--resnapshot`` (the real console entry point
as a subprocess), and ``--resnapshot`` then lands exactly the new selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout
from tests.fixtures.devserver import RunningDevServer


def convex_cdc(server: RunningDevServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONVEX_DEPLOY_KEY": server.key, "CONVEX_URL": server.url}
    return subprocess.run(
        [sys.executable, "-m", "convex_cdc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_legacy_destination_refuses_a_widened_selection_then_resnapshots_with_it(
    devserver_factory: Any, tmp_path: Path
) -> None:
    server = devserver_factory(seed="demo", docs=200)
    dest = tmp_path / "lake"
    legacy = ("sync", "--dest", str(dest), "--api", "streaming-export")
    first = convex_cdc(server, *legacy, "--exclude", "tasks")
    assert first.returncode == 0, first.stderr
    checkpoint_file = DestinationLayout.at(dest).checkpoint
    before = checkpoint_file.read_bytes()

    refused = convex_cdc(server, *legacy)

    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, refused.stderr
    assert "differs from the one this destination was built with" in errors[0]
    assert "--resnapshot" in errors[0]
    assert server.key not in refused.stderr + refused.stdout
    assert checkpoint_file.read_bytes() == before  # nothing written

    rebuilt = convex_cdc(server, *legacy, "--resnapshot")
    assert rebuilt.returncode == 0, rebuilt.stderr
    materialized = convex_cdc(server, "materialize", "--dest", str(dest))
    assert materialized.returncode == 0, materialized.stderr
    checkpoint = FileCheckpointStore(DestinationLayout.at(dest)).load()
    assert checkpoint is not None and checkpoint.selection_fingerprint is not None
    status = convex_cdc(server, "status", "--dest", str(dest), "--offline", "--json")
    staged = {t["table"]: t["rows"] for t in json.loads(status.stdout)["staging"]["tables"]}
    truth = Counter(row["table"] for row in server.truth())
    assert staged["tasks"] == truth["tasks"] > 0
    assert sum(staged.values()) == sum(truth.values())
