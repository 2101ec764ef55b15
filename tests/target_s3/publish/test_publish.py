"""Publishing staging to a local directory and to S3 (moto subprocess), manifest last."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from convex_cdc.core.errors import ConfigError, DestinationBusy, TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.core.orchestrator import run_sync
from convex_cdc.devserver.writes import Replace
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.locks import DestinationLock
from convex_cdc.target_s3.publish.manifest import loads_manifest
from convex_cdc.target_s3.publish.publisher import PublishEvent, publish
from convex_cdc.target_s3.publish.reader import read_published
from convex_cdc.target_s3.raw.batch_index import BatchIndex, BatchTableEntry, dumps_batch_index
from convex_cdc.target_s3.raw.change_log import RawChangeLogSink
from convex_cdc.target_s3.staging.materializer import StagingMaterializer
from convex_cdc.target_s3.staging.reader import read_staging_table
from convex_cdc.target_s3.staging.state import StagingState, load_staging_state
from tests.core.in_process_convex import InProcessConvex
from tests.fixtures.moto_s3 import S3Endpoint
from tests.target_s3.handmade_staging import write_checkpoint, write_staging
from tests.target_s3.publish.conftest import Where


def messages(n: int, *, edited: dict[int, str] | None = None) -> list[dict[str, Any]]:
    edited = edited or {}
    return [
        {
            "_id": f"m{i:04d}",
            "_creationTime": 1_700_000_000_000.5 + i,
            "_ts": 100 + i,
            "author": f"user{i % 7}",
            "body": edited.get(i, f"hello {i}"),
            "likes": i * 3,
            "score": [0.5, None, float(i)][i % 3],
            "tags": {"n": i} if i % 2 else None,
        }
        for i in range(n)
    ]


USERS = [
    {
        "_id": f"u{i}",
        "_creationTime": 1_600_000_000_000.0,
        "_ts": 9,
        "name": f"n{i}",
        "pic": {"$bytes": "AAEC"},
    }
    for i in range(5)
]


def stage(dest: Path, **overrides: Any) -> StagingState:
    tables = {
        "messages": messages(40),
        "users": USERS,
        "waitlist/entries": [{"_id": "w1", "email": "a@b"}],
    }
    tables.update(overrides.pop("tables", {}))
    return write_staging(dest, tables, segments=4, **overrides)


def local_rows(dest: Path, state: StagingState, qualified: str) -> pa.Table:
    table = next(t for t in state.tables if t.key.qualified == qualified)
    return pa.concat_tables([pq.read_table(dest / f.path) for f in table.files])


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("_id")


def test_first_publish_uploads_everything_and_readers_see_exactly_staging(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    state = stage(dest)
    report = publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url)

    files = [f for t in state.tables for f in t.files]
    assert report.sequence == 1
    assert report.files_uploaded == len(files)
    assert report.bytes_uploaded == sum(f.bytes for f in files)
    assert report.files_skipped == 0
    assert report.manifest_url is not None and report.manifest_url.endswith(
        "manifests/000000000001.json"
    )
    published = read_published(where.url, endpoint_url=where.endpoint_url)
    assert published.manifest.sequence == 1
    assert published.manifest.consistent_as_of_ts == state.consistent_as_of_ts
    assert set(published.tables) == {t.key for t in state.tables}
    for table in state.tables:
        expected = local_rows(dest, state, table.key.qualified)
        assert by_id(published.table(table.key)).equals(by_id(expected))
    assert where.names("") >= {"manifest.json", "manifests/000000000001.json"}
    pointer = where.target().get("manifest.json")
    assert pointer == where.target().get("manifests/000000000001.json")


def test_publishing_again_with_nothing_new_uploads_and_writes_nothing(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    stage(dest)
    publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url)
    before = {o.path: o.last_modified for o in where.target().list("")}

    again = publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url)

    assert again.nothing_new
    assert again.sequence is None and again.current_sequence == 1
    assert again.files_uploaded == 0 and again.bytes_uploaded == 0
    assert "nothing new" in again.summary()
    assert {o.path: o.last_modified for o in where.target().list("")} == before


def test_a_staging_change_uploads_only_changed_files_and_gc_follows_keep(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    first = stage(dest)
    publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url, keep=2)
    first_files = {f.path for t in first.tables for f in t.files}

    second = stage(dest, tables={"messages": messages(40, edited={3: "edited"})})
    changed = {f.path for t in second.tables for f in t.files} - first_files
    assert len(changed) == 1  # one row in one bucket of one table
    report = publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url, keep=2)
    assert report.sequence == 2
    assert report.files_uploaded == 1
    assert report.files_skipped == len(first_files) - 1
    assert report.files_deleted == 0  # manifest 1 is still kept
    assert first_files <= where.names("staging")

    third = stage(dest, tables={"messages": messages(41, edited={3: "edited"})})
    report = publish(
        DestinationLayout.at(dest),
        where.url,
        endpoint_url=where.endpoint_url,
        keep=2,
        delta_retention=timedelta(0),  # Delta readers need nothing older (see below)
    )
    assert report.sequence == 3
    assert report.manifests_deleted == 1
    assert where.names("manifests") == {
        "manifests/000000000002.json",
        "manifests/000000000003.json",
    }
    second_files = {f.path for t in second.tables for f in t.files}
    third_files = {f.path for t in third.tables for f in t.files}
    assert where.names("staging") == second_files | third_files
    assert report.files_deleted == len(first_files - second_files - third_files) > 0
    published = read_published(where.url, endpoint_url=where.endpoint_url)
    assert published.table("messages").num_rows == 41
    assert "edited" in pc.unique(published.table("messages").column("body")).to_pylist()


def test_a_concurrent_publisher_that_took_the_sequence_makes_publish_fail_cleanly(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    stage(dest)
    publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url)
    pointer_before = where.target().get("manifest.json")
    stage(dest, tables={"users": USERS[:3]})

    def other_publisher_wins(event: PublishEvent) -> None:
        if event.stage == "manifest":
            where.target().put_if_absent("manifests/000000000002.json", b'{"theirs": true}')

    with pytest.raises(TargetError, match=r"another publisher already wrote .*000000000002\.json"):
        publish(
            DestinationLayout.at(dest),
            where.url,
            endpoint_url=where.endpoint_url,
            progress=other_publisher_wins,
        )

    assert where.target().get("manifest.json") == pointer_before
    assert where.target().get("manifests/000000000002.json") == b'{"theirs": true}'


def test_a_crash_before_the_manifest_leaves_readers_on_the_previous_complete_state(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    first = stage(dest)
    publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url)
    first_messages = local_rows(dest, first, "messages")
    stage(dest, tables={"messages": messages(60)})

    class Crash(Exception):
        pass

    def crash_before_manifest(event: PublishEvent) -> None:
        if event.stage == "manifest":
            raise Crash

    with pytest.raises(Crash):
        publish(
            DestinationLayout.at(dest),
            where.url,
            endpoint_url=where.endpoint_url,
            progress=crash_before_manifest,
        )

    published = read_published(where.url, endpoint_url=where.endpoint_url)
    assert published.manifest.sequence == 1
    assert by_id(published.table("messages")).equals(by_id(first_messages))
    # The next publish completes the job without uploading the new files twice.
    retry = publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url)
    assert retry.sequence == 2
    assert retry.files_uploaded == 0
    assert (
        read_published(where.url, endpoint_url=where.endpoint_url).table("messages").num_rows == 60
    )


def test_publish_refuses_while_the_initial_snapshot_is_incomplete(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(ConfigError, match="no staging yet"):
        publish(DestinationLayout.at(dest), str(tmp_path / "out"))
    stage(dest, consistent_as_of_ts=None)
    with pytest.raises(ConfigError, match="half-walked snapshot") as err:
        publish(DestinationLayout.at(dest), str(tmp_path / "out"))
    assert "convex-cdc sync" in str(err.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_publishing_to_a_missing_bucket_is_a_clear_one_line_error(
    tmp_path: Path, s3_server: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    dest = tmp_path / "dest"
    stage(dest)
    with pytest.raises(TargetError, match="bucket 'not-created' does not exist") as err:
        publish(DestinationLayout.at(dest), "s3://not-created/lake", endpoint_url=s3_server.url)
    assert "\n" not in str(err.value)


def test_a_prefix_holding_another_deployment_is_refused(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    stage(tmp_path / "a")
    publish(DestinationLayout.at(tmp_path / "a"), out)
    stage(tmp_path / "b", deployment_url="https://other-deployment-9.convex.cloud")
    with pytest.raises(ConfigError, match="holds data published from https://happy-animal"):
        publish(DestinationLayout.at(tmp_path / "b"), out)


def test_a_pointer_left_behind_by_a_crash_is_repaired(tmp_path: Path) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    stage(dest)
    publish(DestinationLayout.at(dest), str(out))
    stage(dest, tables={"users": USERS[:2]})
    publish(DestinationLayout.at(dest), str(out))
    # As if the publisher died after manifests/2 and before the pointer.
    (out / "manifest.json").write_bytes((out / "manifests" / "000000000001.json").read_bytes())

    report = publish(DestinationLayout.at(dest), str(out))

    assert report.nothing_new and report.repaired_pointer
    assert read_published(str(out)).manifest.sequence == 2


def test_a_damaged_staging_file_is_never_published(tmp_path: Path) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    state = stage(dest)
    victim = dest / state.tables[0].files[0].path
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    with pytest.raises(TargetError, match="does not match the size/sha256"):
        publish(DestinationLayout.at(dest), str(out))
    assert not (out / "manifest.json").exists()


def test_orphans_of_a_failed_publish_are_removed_only_after_the_grace_period(
    tmp_path: Path,
) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    stage(dest)
    orphan = out / "staging" / "messages" / "part-9999-0000000000000000.parquet"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left by a crashed publish")

    publish(DestinationLayout.at(dest), str(out))
    assert orphan.exists()  # young: a concurrent publisher may be about to name it
    stage(dest, tables={"users": USERS[:1]})
    report = publish(DestinationLayout.at(dest), str(out), orphan_grace=timedelta(0))
    assert not orphan.exists()
    assert report.files_deleted >= 1


def _write_raw_batch(dest: Path, batch: int, table: str, rows: int) -> None:
    """One committed-looking raw batch: its table file, then its index."""
    name = f"batch={batch:012d}.parquet"
    path = dest / "raw_change_log" / table / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"_id": [f"{table}{batch}-{i}" for i in range(rows)]}), path)
    index = BatchIndex(
        seq=batch,
        kind="delta",
        snapshot_ts=None,
        wire_format="export_json",
        tables=(BatchTableEntry(TableKey("", table), table, name, rows, 0, 1, 2),),
        checkpoint=write_checkpoint(dest, batch_seq=batch),
    )
    index_path = dest / "raw_change_log" / "_batches" / f"{batch:012d}.json"
    index_path.parent.mkdir(parents=True, exist_ok=True)
    index_path.write_bytes(dumps_batch_index(index))


def test_the_raw_change_log_is_published_up_to_the_committed_batch(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    stage(dest)
    for batch in (1, 2, 3):
        _write_raw_batch(dest, batch, "messages", rows=batch)
    write_checkpoint(dest, batch_seq=2)  # batch 3 may still be replayed: not committed

    publish(
        DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url, include_raw=True
    )

    manifest = read_published(where.url, endpoint_url=where.endpoint_url).manifest
    raw = manifest.raw_change_log
    assert raw is not None
    assert [(f.path, f.rows) for f in raw] == [
        ("raw_change_log/messages/batch=000000000001.parquet", 1),
        ("raw_change_log/messages/batch=000000000002.parquet", 2),
    ]
    target = where.target()
    for f in raw:
        data = target.get(f.path)
        assert data is not None and pq.read_table(io.BytesIO(data)).num_rows == f.rows
    assert where.names("raw_change_log") == {f.path for f in raw}

    write_checkpoint(dest, batch_seq=3)
    report = publish(
        DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url, include_raw=True
    )
    assert report.sequence == 2 and report.files_uploaded == 1


def test_keep_must_be_positive(tmp_path: Path) -> None:
    stage(tmp_path / "dest")
    with pytest.raises(ConfigError, match="--keep must be at least 1"):
        publish(DestinationLayout.at(tmp_path / "dest"), str(tmp_path / "out"), keep=0)


def test_the_pointer_is_a_full_copy_of_the_numbered_manifest(tmp_path: Path) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    stage(dest)
    publish(DestinationLayout.at(dest), str(out))
    manifest = loads_manifest((out / "manifest.json").read_bytes(), where="pointer")
    data = json.loads((out / "manifest.json").read_bytes())
    assert data["format"] == "convex-cdc.manifest" and data["version"] == 1
    assert [t["table"] for t in data["tables"]] == ["messages", "users", "entries"]
    assert manifest.table(manifest.tables[2].key) is not None
    assert manifest.tables[2].component == "waitlist"
    assert all(f.path.startswith("staging/waitlist.entries/") for f in manifest.tables[2].files)


def test_a_staging_built_by_the_real_pipeline_publishes_only_what_changed(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    convex = InProcessConvex(snapshot_page_size=50)
    ids = [convex.insert("messages", {"body": f"m{i}", "n": i}) for i in range(200)]
    convex.insert("users", {"name": "ada", "pic": b"\x00\xff"})
    layout = DestinationLayout.at(dest)
    sink, store = RawChangeLogSink(layout), FileCheckpointStore(layout)
    run_sync(convex, sink, store)
    StagingMaterializer(layout, rows_per_segment=16).materialize()
    publish(layout, where.url, endpoint_url=where.endpoint_url, include_raw=True)
    before = load_staging_state(dest / "staging" / "_state.json")

    convex.transact([Replace("messages", ids[7], {"body": "edited", "n": 7})])
    run_sync(convex, sink, store)
    StagingMaterializer(layout, rows_per_segment=16).materialize()
    report = publish(layout, where.url, endpoint_url=where.endpoint_url, include_raw=True)

    after = load_staging_state(dest / "staging" / "_state.json")
    assert before is not None and after is not None
    new_files = {f.path for t in after.tables for f in t.files} - {
        f.path for t in before.tables for f in t.files
    }
    assert report.files_uploaded == len(new_files) + 1  # + the new raw batch
    published = read_published(where.url, endpoint_url=where.endpoint_url)
    assert published.manifest.consistent_as_of_ts == after.consistent_as_of_ts
    for table in after.tables:
        assert published.table(table.key).equals(
            read_staging_table(DestinationLayout.at(dest), table.key)
        )


def test_only_one_publish_runs_per_destination(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    stage(dest)
    with (
        DestinationLock(DestinationLayout.at(dest), "publish"),
        pytest.raises(DestinationBusy, match="another convex-cdc publish is running"),
    ):
        publish(DestinationLayout.at(dest), str(tmp_path / "out"))
    assert publish(DestinationLayout.at(dest), str(tmp_path / "out")).sequence == 1


def test_files_a_recent_delta_version_used_outlive_keep(tmp_path: Path) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    first = stage(dest)
    publish(DestinationLayout.at(dest), str(out), keep=1)
    stage(dest, tables={"messages": messages(40, edited={3: "edited"})})
    report = publish(DestinationLayout.at(dest), str(out), keep=1)
    # Manifest 1 is beyond --keep 1, but manifest 2 (which removed its files from the Delta
    # tables) is younger than the retention: a Delta reader may still be reading them.
    assert report.manifests_deleted == 0 and report.files_deleted == 0
    assert {f.path for t in first.tables for f in t.files} <= {
        str(p.relative_to(out)) for p in (out / "staging").rglob("*.parquet")
    }
    stage(dest, tables={"messages": messages(41, edited={3: "edited"})})
    report = publish(DestinationLayout.at(dest), str(out), keep=1, delta_retention=timedelta(0))
    assert report.manifests_deleted == 2
    assert report.files_deleted > 0
    assert sorted(p.name for p in (out / "manifests").iterdir()) == ["000000000003.json"]
    assert (out / "staging" / "messages" / "_delta_log" / "00000000000000000000.json").exists()
