"""The S3/export target end to end, over real HTTP, into a local directory and real S3.

devserver (workload) → sync → more workload (deletes, a type change, a new table, a
component table with a root twin, edge values) → sync → materialize → publish to a
directory and to moto's S3 → a reader that follows only manifest.json gets exactly the
devserver's truth. Then: publishing again uploads nothing, verify passes, and verify
catches a tampered staging file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from click.testing import CliRunner

from convex_cdc.cli import cli
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.publish.reader import read_published
from convex_cdc.target_s3.staging.state import load_staging_state
from tests.e2e.cli_process import invoke_cli
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.fixtures.moto_s3 import S3Endpoint

EDGE_VALUES: dict[str, Any] = {
    "big": 2**53 + 1,
    "negative": -(2**63),
    "max": 2**63 - 1,
    "nan": {"$float": "AAAAAAAA+H8="},
    "inf": {"$float": "AAAAAAAA8H8="},
    "neg_zero": -0.0,
    "blob": {"$bytes": "ABCD"},
    "empty_blob": {"$bytes": ""},
    "nested": {"a": [1, 2.5, {"$bytes": "AQI="}], "b": {"c": None}},
    "nothing": None,
    "text": "héllo ✓",
}


def test_sync_materialize_publish_reproduces_the_source_exactly(
    devserver_factory: Any, tmp_path: Path, s3_env: S3Endpoint, s3_bucket: str
) -> None:
    server = devserver_factory(seed="demo", docs=800, snapshot_page_size=97, deltas_row_limit=40)
    dest = tmp_path / "lake"
    runner = CliRunner()

    invoke_cli(server, "sync", "--dest", str(dest))
    invoke_cli(server, "materialize", "--dest", str(dest))
    # A component table beside its root twin, edge values, deletes, the workload's type
    # change (transaction 40) and late table (transaction 10).
    ids = server.transact(
        [
            {"op": "insert", "table": "edge_values", "fields": EDGE_VALUES},
            {"op": "insert", "table": "edge_values", "fields": {"text": "short-lived"}},
            {"op": "insert", "component": "waitlist", "table": "users", "fields": {"x": 1}},
        ]
    )["ids"]
    server.transact([{"op": "delete", "table": "edge_values", "id": ids[1]}])
    server.workload(150)
    invoke_cli(server, "sync", "--dest", str(dest))
    invoke_cli(server, "materialize", "--dest", str(dest))

    local = tmp_path / "published"
    s3 = f"s3://{s3_bucket}/convex"
    invoke_cli(server, "publish", "--dest", str(dest), "--to", str(local))
    invoke_cli(server, "publish", "--dest", str(dest), "--to", s3)

    truth = server.truth()
    tables = {t["table"] for t in truth}
    assert {"attachments", "edge_values", "users"} <= tables  # late table, edge values
    assert any(t["component"] == "waitlist" and t["table"] == "users" for t in truth)
    for target in (str(local), s3):
        snapshot = read_published(target)
        declared = {
            TableKey(t.component, t.table): {c.name: c.type for c in t.columns}
            for t in snapshot.manifest.tables
        }
        compared = assert_tables_equal_truth(snapshot.tables, truth, declared=declared)
        assert compared == len(truth)
        widened = {(t.table, w.column) for t in snapshot.manifest.tables for w in t.widenings}
        assert ("tasks", "estimate") in widened  # int64 first, then strings

    # Nothing new: no upload, no new manifest.
    before = sorted(p.name for p in (local / "manifests").iterdir())
    result = invoke_cli(server, "publish", "--dest", str(dest), "--to", str(local))
    assert "nothing new" in result.output
    assert sorted(p.name for p in (local / "manifests").iterdir()) == before

    # verify: ok on the correct lake, then a tampered staging file is caught.
    result = invoke_cli(server, "verify", "--dest", str(dest))
    assert "ok" in result.output
    state = load_staging_state(DestinationLayout.at(dest).staging_state)
    assert state is not None
    messages = state.table(TableKey("", "messages"))
    assert messages is not None and messages.files
    path = dest / messages.files[0].path
    table = pq.read_table(path)
    bodies = table.column("body").to_pylist()
    bodies[0] = "tampered"
    pq.write_table(table.set_column(table.schema.get_field_index("body"), "body", [bodies]), path)
    tampered = runner.invoke(
        cli,
        ["verify", "--dest", str(dest)],
        env={"CONVEX_DEPLOY_KEY": server.key, "CONVEX_URL": server.url},
    )
    assert tampered.exit_code != 0
    assert "messages (1 differing rows)" in tampered.output
