"""Data Sync end to end, over real HTTP: the devserver's ``/api/v1/data/sync`` → sync →
materialize → publish → a reader of the manifest gets exactly ``/_devserver/truth``.

The workload has deletes, a type change, a table created later, a table replaced by an
import (which only Data Sync sees: it arrives as a truncate) and a table selected only in a
later run (which the data sync walks by itself). A legacy destination is switched over
without reading anything again, and ``--api auto`` falls back to the legacy pair where the
deployment has no Data Sync.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from convex_cdc.cli import cli
from convex_cdc.core.errors import ConvexCdcError
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.publish.reader import read_published
from tests.e2e.cli_process import invoke_cli
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.fixtures.devserver import RunningDevServer


def refused(runner: CliRunner, server: RunningDevServer, *args: str) -> ConvexCdcError:
    """The error a command ends with (the CLI prints it as one line, exiting with its code)."""
    result = runner.invoke(
        cli, list(args), env={"CONVEX_DEPLOY_KEY": server.key, "CONVEX_URL": server.url}
    )
    assert isinstance(result.exception, ConvexCdcError), result.output
    assert server.key not in result.exception.one_line()
    return result.exception


def published_equals_truth(server: RunningDevServer, target: Path) -> int:
    snapshot = read_published(str(target))
    declared = {
        TableKey(t.component, t.table): {c.name: c.type for c in t.columns}
        for t in snapshot.manifest.tables
    }
    truth = server.truth()
    compared = assert_tables_equal_truth(snapshot.tables, truth, declared=declared)
    assert compared == len(truth)
    return compared


def replace_table(server: RunningDevServer, table: str, documents: list[dict[str, Any]]) -> None:
    server.client.post(
        "/_devserver/replace_table", json={"table": table, "documents": documents}
    ).raise_for_status()


def test_a_data_sync_lands_imports_new_selections_and_changes_exactly(
    devserver_factory: Any, tmp_path: Path
) -> None:
    server = devserver_factory(seed="demo", docs=600)
    server.settings(data_sync_page_size=50)
    dest, published = tmp_path / "lake", tmp_path / "published"

    result = invoke_cli(server, "sync", "--dest", str(dest), "--exclude", "tasks")
    assert "data-sync API" in result.output
    server.workload(120)  # updates, deletes, a type change, a table created later
    replace_table(server, "users", [{"name": "imported", "n": 1}, {"name": "also", "n": 2}])
    invoke_cli(server, "sync", "--dest", str(dest))  # tasks is selected from now on
    invoke_cli(server, "materialize", "--dest", str(dest))
    invoke_cli(server, "publish", "--dest", str(dest), "--to", str(published))

    assert published_equals_truth(server, published) > 300
    names = {t["table"] for t in server.truth()}
    assert {"tasks", "users"} <= names
    checkpoint = FileCheckpointStore(DestinationLayout.at(dest)).load()
    assert checkpoint is not None and checkpoint.api == "data-sync"
    status = invoke_cli(server, "status", "--dest", str(dest))
    assert "data-sync" in status.output


def test_a_legacy_destination_switches_over_and_reads_only_what_changed(
    devserver_factory: Any, tmp_path: Path
) -> None:
    server = devserver_factory(seed="demo", docs=400)
    dest, published = tmp_path / "lake", tmp_path / "published"
    runner = CliRunner()
    invoke_cli(server, "sync", "--dest", str(dest), "--api", "streaming-export")
    ids = server.transact(
        [{"op": "insert", "table": "late", "fields": {"x": i}} for i in range(3)]
    )["ids"]
    server.transact([{"op": "delete", "table": "late", "id": ids[0]}])

    result = invoke_cli(server, "sync", "--dest", str(dest), "--api", "data-sync")

    assert "switched this destination to Data Sync" in result.output
    assert "4 change events (1 deletes)" in result.output  # nothing of the 400 again
    invoke_cli(server, "materialize", "--dest", str(dest))
    invoke_cli(server, "publish", "--dest", str(dest), "--to", str(published))
    published_equals_truth(server, published)
    back = refused(runner, server, "sync", "--dest", str(dest), "--api", "streaming-export")
    assert back.exit_code == 2 and "follows a data sync" in back.one_line()


@pytest.mark.parametrize("api", ["auto", "data-sync"])
def test_without_data_sync_auto_uses_the_legacy_pair_and_data_sync_says_why_not(
    devserver_factory: Any, tmp_path: Path, api: str
) -> None:
    server = devserver_factory(seed="demo", docs=100, data_sync_enabled=False)
    runner = CliRunner()

    if api == "auto":
        result = invoke_cli(server, "sync", "--dest", str(tmp_path / "lake"), "--api", api)
        assert "streaming-export API" in result.output
    else:
        error = refused(runner, server, "sync", "--dest", str(tmp_path / "lake"), "--api", api)
        assert error.exit_code == 3 and "does not offer Data Sync" in error.one_line()
