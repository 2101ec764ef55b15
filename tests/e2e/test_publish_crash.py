"""SIGKILL ``publish`` right after it makes progress; Delta readers only ever see manifests.

The publish subprocess is killed after a randomly drawn number of new uploaded files,
Delta commits or numbered manifests (see :mod:`tests.e2e.kill_loop`: kills follow
observed progress, never a timer). Between runs the test reads every table's Delta table
(delta-rs and its own ``_delta_log`` replay). More workload is synced and materialized
only after a publish completed, so staging stays put while a killed publish is
repeated, as a scheduler's retry would.

Every read must equal the content one complete manifest gives that table (never a mix
of two), and after the last publish the Delta tables equal the devserver's truth.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from convex_cdc.cli import cli
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.publish.delta_tables import table_directory
from convex_cdc.target_s3.publish.object_store import open_publish_target
from convex_cdc.target_s3.publish.reader import read_published
from convex_cdc.target_s3.publish.remote_manifests import RemoteManifests, read_pointer
from convex_cdc.target_s3.staging.state import load_staging_state
from tests.e2e.kill_loop import Phase, ProgressSignal, files_in, kill_after_progress
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.fixtures.devserver import RunningDevServer
from tests.target_s3.publish.delta_readers import (
    canonical,
    manifest_rows,
    manifest_table,
    read_with_own_log_reader,
    read_with_query_builder,
)

Content = tuple[list[str], list[tuple[Any, ...]]]


@pytest.mark.slow
def test_killed_publishes_leave_delta_readers_on_complete_manifests(
    devserver_factory: Any, tmp_path: Path
) -> None:
    server: RunningDevServer = devserver_factory(seed="demo", docs=400, deltas_row_limit=40)
    dest, out = tmp_path / "lake", tmp_path / "published"
    runner = CliRunner()
    env = {"CONVEX_DEPLOY_KEY": server.key, "CONVEX_URL": server.url}

    def refresh() -> None:
        for command in ("sync", "materialize"):
            result = runner.invoke(cli, [command, "--dest", str(dest)], env=env)
            assert result.exit_code == 0, result.output

    refresh()
    reads: list[tuple[str, Content]] = []

    def read_delta_tables() -> None:
        target = open_publish_target(str(out))
        # A table exists once its first commit does (a kill may leave an empty log dir).
        first_commit = re.compile(f"{0:020d}\\.json")
        for found in files_in(out / "staging", first_commit, depth=2):
            directory = f"staging/{found.split('/')[0]}"
            via_delta_rs = canonical(read_with_query_builder(target, directory))
            assert canonical(read_with_own_log_reader(target, directory)) == via_delta_rs
            reads.append((directory, via_delta_rs))

    def staging_published() -> bool:
        pointer = read_pointer(open_publish_target(str(out))) if out.exists() else None
        staging = load_staging_state(DestinationLayout.at(dest).staging_state)
        assert staging is not None
        return pointer is not None and pointer.consistent_as_of_ts == staging.consistent_as_of_ts

    def phase() -> Phase:
        # Called before every run and after every kill: read between the runs.
        if out.exists():
            read_delta_tables()
        return "delta" if staging_published() else "snapshot"

    def more_changes() -> None:
        server.workload(20)
        refresh()

    signals = [
        ProgressSignal(
            "uploaded file",
            lambda: files_in(out / "staging", re.compile(r"part-.*\.parquet"), depth=1),
            most=3,
        ),
        ProgressSignal(
            "Delta commit",
            lambda: files_in(out / "staging", re.compile(r"\d{20}\.json"), depth=2),
            most=3,
        ),
        ProgressSignal(
            "numbered manifest",
            lambda: files_in(out / "manifests", re.compile(r"\d{12}\.json")),
            most=1,
        ),
    ]
    command = [
        sys.executable,
        "-m",
        "convex_cdc",
        "publish",
        "--dest",
        str(dest),
        "--to",
        str(out),
        "--keep",
        "1000",
    ]
    report = kill_after_progress(
        command,
        env={k: v for k, v in os.environ.items() if k != "CONVEX_DEPLOY_KEY"},
        signals=signals,
        phase=phase,
        more_changes=more_changes,
        key=server.key,
        seed=11,
        min_kills=12,
        min_per_phase=0,
        max_runs=80,
    )
    assert report.total >= 12 and report.finished_runs >= 1, report

    final = runner.invoke(cli, ["publish", "--dest", str(dest), "--to", str(out)], env=env)
    assert final.exit_code == 0, final.output
    read_delta_tables()

    # Every read equals what some complete manifest gives that table.
    target = open_publish_target(str(out))
    remote = RemoteManifests.load(target)
    contents: dict[str, set[str]] = {}
    for sequence in remote.sequences:
        manifest = remote.manifest(sequence)
        for directory in {d for d, _ in reads}:
            entry = manifest_table(manifest, directory)
            content = canonical(manifest_rows(target, entry)) if entry else ([], [])
            contents.setdefault(directory, set()).add(repr(content))
    assert len(remote.sequences) >= 3
    for number, (directory, content) in enumerate(reads):
        assert repr(content) in contents[directory], f"read {number} of {directory} is no manifest"

    # The final state equals the truth.
    manifest = read_published(str(out)).manifest
    declared = {t.key: {c.name: c.type for c in t.columns} for t in manifest.tables}
    tables = {t.key: read_with_query_builder(target, table_directory(t)) for t in manifest.tables}
    truth = server.truth()
    assert assert_tables_equal_truth(tables, truth, declared=declared) == len(truth)
