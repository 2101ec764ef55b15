"""Published tables as Delta tables, end to end over real HTTP, a local directory and S3.

devserver (workload with deletes, a type change and a table created later) → sync →
materialize → publish to a directory and to moto's S3 (a subprocess), several rounds.
After every publish, each table's Delta table read three independent ways (deltalake's
``to_pyarrow_table``, delta-rs's ``QueryBuilder``, and the test's own ``_delta_log`` JSON
replay) equals the manifest's files and ``/_devserver/truth``, value for value; Polars'
``read_delta`` too when Polars is installed. At the end every Delta version equals the
manifest it was committed for (time travel), and a publish with nothing new commits
nothing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.publish.delta_tables import table_directory
from convex_cdc.target_s3.publish.manifest import Manifest
from convex_cdc.target_s3.publish.object_store import PublishTarget, open_publish_target
from convex_cdc.target_s3.publish.reader import read_published
from convex_cdc.target_s3.publish.remote_manifests import RemoteManifests
from tests.e2e.cli_process import invoke_cli
from tests.e2e.lake_truth import assert_tables_equal_truth
from tests.fixtures.moto_s3 import S3Endpoint
from tests.target_s3.publish.delta_readers import (
    canonical,
    manifest_rows,
    manifest_table,
    read_with_deltalake,
    read_with_own_log_reader,
    read_with_query_builder,
    replay_log,
    version_of_sequence,
)

Reader = Callable[[PublishTarget, str], pa.Table]
READERS: dict[str, Reader] = {
    "deltalake.to_pyarrow_table": read_with_deltalake,
    "deltalake.QueryBuilder": read_with_query_builder,
    "own _delta_log reader": read_with_own_log_reader,
}
HAS_POLARS = importlib.util.find_spec("polars") is not None


def read_with_polars(target: PublishTarget, directory: str) -> pa.Table:
    import polars as pl

    location = target.delta_location(directory)
    frame = pl.read_delta(location.uri, storage_options=location.storage_options or None)
    return frame.to_arrow()


def check_target(to: str, truth: list[dict[str, Any]], directories: set[str]) -> Manifest:
    """Every reader of every Delta table equals the manifest's files and the truth."""
    target = open_publish_target(to, create=False)
    manifest = read_published(to).manifest
    declared = {t.key: {c.name: c.type for c in t.columns} for t in manifest.tables}
    readers = dict(READERS)
    if HAS_POLARS:
        readers["polars.read_delta"] = read_with_polars
    for name, reader in readers.items():
        tables: dict[TableKey, pa.Table] = {}
        for directory in sorted(directories):
            entry = manifest_table(manifest, directory)
            got = reader(target, directory)
            if entry is None:
                assert got.num_rows == 0, f"{name}: dropped {directory} is not empty"
                continue
            assert canonical(got) == canonical(manifest_rows(target, entry)), (name, directory)
            tables[entry.key] = got
        compared = assert_tables_equal_truth(tables, truth, declared=declared)
        assert compared == len(truth), name
    return manifest


def test_delta_tables_follow_every_publish_and_equal_the_truth(
    devserver_factory: Any, tmp_path: Path, s3_env: S3Endpoint, s3_bucket: str
) -> None:
    server = devserver_factory(seed="demo", docs=600, snapshot_page_size=97, deltas_row_limit=40)
    dest = tmp_path / "lake"
    targets = (str(tmp_path / "published"), f"s3://{s3_bucket}/convex")
    directories: set[str] = set()
    widened = False
    for transactions in (0, 25, 30, 50, 60):
        if transactions:
            server.workload(transactions)
        invoke_cli(server, "sync", "--dest", str(dest))
        invoke_cli(server, "materialize", "--dest", str(dest))
        truth = server.truth()
        for to in targets:
            result = invoke_cli(server, "publish", "--dest", str(dest), "--to", to)
            assert "Delta commits" in result.output
            manifest = read_published(to).manifest
            directories |= {table_directory(t) for t in manifest.tables}
            check_target(to, truth, directories)
            widened |= any(w.column == "estimate" for t in manifest.tables for w in t.widenings)
    tables = {t.table for t in read_published(targets[0]).manifest.tables}
    assert "attachments" in tables  # created after the first publish
    assert widened  # tasks.estimate: int64, then strings

    for to in targets:
        target = open_publish_target(to, create=False)
        estimate = next(
            f for f in replay_log(target, "staging/tasks").fields if f["name"] == "estimate"
        )
        assert estimate["type"] == "string"
        assert_time_travel(target, directories)
        # Nothing new: no Delta commit, no manifest, nothing written at all.
        before = {o.path: o.last_modified for o in target.list("")}
        result = invoke_cli(server, "publish", "--dest", str(dest), "--to", to)
        assert "nothing new" in result.output
        assert {o.path: o.last_modified for o in target.list("")} == before
        assert server.key.encode() not in b"".join(
            target.get(o.path) or b"" for o in target.list("") if "_delta_log" in o.path
        )


def assert_time_travel(target: PublishTarget, directories: set[str]) -> None:
    """Delta version N of each table equals the content of the manifest it names."""
    remote = RemoteManifests.load(target)
    assert len(remote.sequences) >= 5
    for directory in sorted(directories):
        replay = replay_log(target, directory)
        for sequence in remote.sequences:
            entry = manifest_table(remote.manifest(sequence), directory)
            version = version_of_sequence(replay, sequence)
            if version is None:
                assert entry is None, (directory, sequence)
                continue
            got = canonical(read_with_deltalake(target, directory, version))
            assert canonical(read_with_own_log_reader(target, directory, version)) == got
            want = canonical(manifest_rows(target, entry)) if entry is not None else ([], [])
            assert got == want, (directory, sequence, version)


def test_null_only_columns_stay_out_of_the_delta_schema_until_typed(
    devserver_factory: Any, tmp_path: Path
) -> None:
    server = devserver_factory()
    dest, out = tmp_path / "lake", tmp_path / "published"
    server.transact([{"op": "insert", "table": "notes", "fields": {"a": "x", "b": None}}])
    for step in range(2):
        invoke_cli(server, "sync", "--dest", str(dest))
        invoke_cli(server, "materialize", "--dest", str(dest))
        invoke_cli(server, "publish", "--dest", str(dest), "--to", str(out))
        manifest = check_target(str(out), server.truth(), {"staging/notes"})
        columns = {c.name: c.type for c in manifest.tables[0].columns}
        fields = {
            f["name"] for f in replay_log(open_publish_target(str(out)), "staging/notes").fields
        }
        if step == 0:
            assert columns["b"] is ColumnType.NULL and "b" not in fields
            server.transact([{"op": "insert", "table": "notes", "fields": {"b": 2}}])
        else:
            assert columns["b"] is ColumnType.INT64 and "b" in fields
