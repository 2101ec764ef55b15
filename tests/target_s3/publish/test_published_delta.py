"""Every published table is also a Delta table whose file set is exactly the manifest's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from deltalake.transaction import CommitProperties, RemoveAction, Transaction

from convex_cdc.core.columns import ColumnSpec
from convex_cdc.core.errors import TargetError
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.publish import delta_rs
from convex_cdc.target_s3.publish.delta_tables import (
    CONSISTENT_AS_OF_KEY,
    SEQUENCE_KEY,
    VERSIONS_PATH,
    app_id_for,
    delta_schema,
    schema_string,
    table_directory,
)
from convex_cdc.target_s3.publish.manifest import Manifest
from convex_cdc.target_s3.publish.publisher import PublishEvent, publish
from convex_cdc.target_s3.publish.reader import read_published
from convex_cdc.target_s3.publish.remote_manifests import RemoteManifests
from tests.target_s3.handmade_staging import DEPLOYMENT, write_staging
from tests.target_s3.publish.conftest import Where
from tests.target_s3.publish.delta_readers import (
    canonical,
    manifest_rows,
    manifest_table,
    open_delta,
    read_with_deltalake,
    read_with_own_log_reader,
    read_with_query_builder,
    replay_log,
    version_of_sequence,
)
from tests.target_s3.publish.test_publish import USERS, messages, stage


def assert_delta_equals_manifest(where: Where, manifest: Manifest, directories: set[str]) -> None:
    """Every reader of every table's Delta table sees exactly the manifest's rows."""
    target = where.target()
    for directory in sorted(directories):
        entry = manifest_table(manifest, directory)
        replay = replay_log(target, directory)
        assert replay.commits[replay.version][SEQUENCE_KEY] <= manifest.sequence
        if entry is None:  # dropped: an empty table
            assert replay.files == {}
            assert read_with_query_builder(target, directory).num_rows == 0
            continue
        assert set(replay.files) == {f.path.rsplit("/", 1)[1] for f in entry.files}
        want = canonical(manifest_rows(target, entry))
        for reader in (read_with_deltalake, read_with_query_builder, read_with_own_log_reader):
            assert canonical(reader(target, directory)) == want, (reader.__name__, directory)
        assert open_delta(target, directory).transaction_version(app_id_for(DEPLOYMENT)) == max(
            int(info[SEQUENCE_KEY]) for info in replay.commits.values() if SEQUENCE_KEY in info
        )


def assert_time_travel(where: Where, directories: set[str]) -> None:
    """Each kept manifest N equals the Delta version committed for N (or last before it)."""
    target = where.target()
    remote = RemoteManifests.load(target)
    for directory in sorted(directories):
        replay = replay_log(target, directory)
        for sequence in remote.sequences:
            manifest = remote.manifest(sequence)
            entry = manifest_table(manifest, directory)
            version = version_of_sequence(replay, sequence)
            if version is None:  # the table did not exist yet
                assert entry is None
                continue
            got = canonical(read_with_deltalake(target, directory, version))
            assert canonical(read_with_own_log_reader(target, directory, version)) == got
            want = canonical(manifest_rows(target, entry)) if entry is not None else ([], [])
            assert got == want, (directory, sequence, version)


def directories_of(*manifests: Manifest) -> set[str]:
    return {table_directory(t) for m in manifests for t in m.tables}


def test_each_publish_commits_delta_tables_equal_to_the_manifest_with_evolution(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    layout = DestinationLayout.at(dest)
    stage(dest)
    report = publish(layout, where.url, endpoint_url=where.endpoint_url)
    assert report.delta_commits == 3
    first = read_published(where.url, endpoint_url=where.endpoint_url).manifest
    seen = directories_of(first)
    assert_delta_equals_manifest(where, first, seen)

    # A new column, a widened one (likes: int64 → JSON text), deletes, a new table, and
    # the component table dropped.
    changed = messages(30)
    for i, row in enumerate(changed):
        row["mood"] = "ok" if i % 2 else None
        if i == 5:
            row["likes"] = {"many": True}
    state = write_staging(
        dest,
        {"messages": changed, "users": USERS, "late": [{"_id": "l1", "n": 1.5}]},
        segments=4,
    )
    assert {t.key.qualified for t in state.tables} == {"messages", "users", "late"}
    report = publish(layout, where.url, endpoint_url=where.endpoint_url)
    second = read_published(where.url, endpoint_url=where.endpoint_url).manifest
    assert report.delta_commits == 3  # messages (new schema), late (new), entries (dropped)
    seen |= directories_of(second)
    assert_delta_equals_manifest(where, second, seen)
    messages_log = replay_log(where.target(), "staging/messages")
    assert {f["name"]: f["type"] for f in messages_log.fields}["likes"] == "string"
    assert "mood" in {f["name"] for f in messages_log.fields}
    info = messages_log.commits[messages_log.version]
    assert info[SEQUENCE_KEY] == 2
    assert info[CONSISTENT_AS_OF_KEY] == second.consistent_as_of_ts
    assert json.loads(info["userMetadata"])["manifest_sequence"] == 2
    assert messages_log.protocol == {"minReaderVersion": 1, "minWriterVersion": 2}

    write_staging(
        dest,
        {"messages": changed[:20], "users": USERS, "late": [{"_id": "l1", "n": 1.5}]},
        segments=4,
    )
    publish(layout, where.url, endpoint_url=where.endpoint_url)
    third = read_published(where.url, endpoint_url=where.endpoint_url).manifest
    assert_delta_equals_manifest(where, third, seen)
    assert_time_travel(where, seen)


def test_nothing_new_writes_no_delta_commit_and_no_manifest(tmp_path: Path, where: Where) -> None:
    dest = tmp_path / "dest"
    stage(dest)
    publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url)
    before = {o.path: o.last_modified for o in where.target().list("")}
    again = publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url)
    assert again.nothing_new and again.delta_commits == 0
    assert {o.path: o.last_modified for o in where.target().list("")} == before


class Crash(Exception):
    pass


def crash_at(stage_name: str, *, after: int = 1) -> Any:
    seen = []

    def progress(event: PublishEvent) -> None:
        if event.stage == stage_name:
            seen.append(event)
            if len(seen) >= after:
                raise Crash

    return progress


def test_a_rerun_after_a_crash_before_the_manifest_commits_nothing_twice(tmp_path: Path) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    layout = DestinationLayout.at(dest)
    stage(dest)
    publish(layout, str(out))
    stage(dest, tables={"messages": messages(50), "users": USERS[:2]})
    with pytest.raises(Crash):
        publish(layout, str(out), progress=crash_at("manifest"))
    where = Where(str(out), None)
    # The Delta tables already hold the unpublished state; the manifest does not.
    assert read_published(str(out)).manifest.sequence == 1
    assert read_with_query_builder(where.target(), "staging/messages").num_rows == 50

    retry = publish(layout, str(out))
    assert retry.sequence == 2 and retry.delta_commits == 0
    manifest = read_published(str(out)).manifest
    assert_delta_equals_manifest(where, manifest, directories_of(manifest))
    assert_time_travel(where, directories_of(manifest))


def test_a_rerun_after_staging_moved_on_commits_the_difference(tmp_path: Path) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    layout = DestinationLayout.at(dest)
    stage(dest)
    publish(layout, str(out))
    stage(dest, tables={"messages": messages(50)})
    with pytest.raises(Crash):  # after the first table's commit
        publish(layout, str(out), progress=crash_at("delta"))
    stage(dest, tables={"messages": messages(55), "users": USERS[:1]})
    retry = publish(layout, str(out))
    assert retry.sequence == 2 and retry.delta_commits == 2
    where = Where(str(out), None)
    manifest = read_published(str(out)).manifest
    assert_delta_equals_manifest(where, manifest, directories_of(manifest))
    # Both messages commits were made for manifest 2; the last one equals it.
    replay = replay_log(where.target(), "staging/messages")
    assert [info[SEQUENCE_KEY] for info in replay.commits.values()] == [1, 2, 2]
    assert_time_travel(where, directories_of(manifest))


def test_the_delta_log_is_checkpointed_and_every_json_commit_is_kept(tmp_path: Path) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    layout = DestinationLayout.at(dest)
    for n in range(12):
        stage(dest, tables={"messages": messages(10 + n)})
        publish(layout, str(out), keep=3)
    log_dir = out / "staging" / "messages" / "_delta_log"
    assert [p.name for p in log_dir.glob("*.checkpoint.parquet")] == [
        f"{9:020d}.checkpoint.parquet"
    ]
    assert (log_dir / "_last_checkpoint").is_file()
    assert len(list(log_dir.glob("*.json"))) == 12
    where = Where(str(out), None)
    manifest = read_published(str(out)).manifest
    assert_delta_equals_manifest(where, manifest, directories_of(manifest))
    assert_time_travel(where, directories_of(manifest))


def test_a_target_published_before_delta_gets_its_tables_with_the_next_change(
    tmp_path: Path,
) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    layout = DestinationLayout.at(dest)
    stage(dest)
    publish(layout, str(out), delta=False)
    assert not list(out.rglob("_delta_log"))
    stage(dest, tables={"users": USERS[:2]})
    report = publish(layout, str(out))
    assert report.delta_commits == 3  # every table, not only the changed one
    manifest = read_published(str(out)).manifest
    assert_delta_equals_manifest(Where(str(out), None), manifest, directories_of(manifest))


def test_a_delta_table_committed_for_a_newer_manifest_is_refused(tmp_path: Path) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    layout = DestinationLayout.at(dest)
    stage(dest)
    publish(layout, str(out))
    stage(dest, tables={"users": USERS[:2]})
    publish(layout, str(out))
    for path in (out / "manifests").iterdir():  # the manifests vanish, the tables stay
        path.unlink()
    (out / "manifest.json").unlink()
    with pytest.raises(TargetError, match="committed for manifest 2, newer than the manifest 1"):
        publish(layout, str(out))


def test_an_existing_object_counts_as_the_same_file_only_by_its_content(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    state = stage(dest)
    victim = state.tables[0].files[0]
    data = (dest / victim.path).read_bytes()
    # Same name and size, other content: left by another tool (or a rewritten file).
    where.target().put(victim.path, bytes(reversed(data)))
    with pytest.raises(TargetError, match="already exists with different content"):
        publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url)
    assert where.target().get("manifest.json") is None
    where.target().put(victim.path, data)  # the same content is the same file
    report = publish(DestinationLayout.at(dest), where.url, endpoint_url=where.endpoint_url)
    assert report.sequence == 1 and report.files_skipped >= 1
    read_published(where.url, endpoint_url=where.endpoint_url)  # checks every sha256


def test_a_rewritten_raw_batch_never_gets_a_digest_its_object_lacks(tmp_path: Path) -> None:
    from tests.target_s3.publish.test_publish import _write_raw_batch

    dest, out = tmp_path / "dest", tmp_path / "out"
    layout = DestinationLayout.at(dest)
    stage(dest)
    _write_raw_batch(dest, 1, "messages", rows=3)
    publish(layout, str(out), include_raw=True)
    published = out / "raw_change_log" / "messages" / f"batch={1:012d}.parquet"
    before = published.read_bytes()

    # The local batch is rewritten (a lost checkpoint) with other content and size, and
    # staging moved on, so there is something new to publish.
    _write_raw_batch(dest, 1, "messages", rows=5)
    assert (dest / "raw_change_log/messages" / published.name).read_bytes() != before
    stage(dest, tables={"users": USERS[:1]})
    with pytest.raises(TargetError, match="already exists with different content"):
        publish(layout, str(out), include_raw=True)
    assert read_published(str(out)).manifest.sequence == 1
    assert published.read_bytes() == before
    manifest = read_published(str(out)).manifest
    assert manifest.raw_change_log is not None
    assert pq.read_table(published).num_rows == manifest.raw_change_log[0].rows == 3


def never_read(*args: Any) -> Any:
    raise AssertionError("the Delta table was opened although its state is on record")


def test_tables_on_record_are_committed_without_reading_them(
    tmp_path: Path, where: Where, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "dest"
    layout = DestinationLayout.at(dest)
    stage(dest)
    monkeypatch.setattr(delta_rs, "commit_after_reading", never_read)
    monkeypatch.setattr(delta_rs, "checkpoint", never_read)
    assert publish(layout, where.url, endpoint_url=where.endpoint_url).delta_commits == 3
    entries = [{"_id": "w2", "email": "c@d"}]
    stage(dest, tables={"messages": messages(45), "waitlist/entries": entries})
    report = publish(layout, where.url, endpoint_url=where.endpoint_url)
    assert report.delta_commits == 2  # users is unchanged
    manifest = read_published(where.url, endpoint_url=where.endpoint_url).manifest
    assert_delta_equals_manifest(where, manifest, directories_of(manifest))
    assert_time_travel(where, directories_of(manifest))
    record = json.loads(where.target().get(VERSIONS_PATH) or b"")
    assert record["manifest_sequence"] == 2
    assert record["tables"] == {
        "staging/messages": 1,
        "staging/users": 0,
        "staging/waitlist.entries": 1,
    }


def test_a_table_moved_on_since_the_record_is_read_and_brought_to_the_manifest(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    layout = DestinationLayout.at(dest)
    stage(dest)
    publish(layout, where.url, endpoint_url=where.endpoint_url)
    # A publish killed after committing users for manifest 2 (here: one file less), whose
    # staging then went back to the published users.
    users = open_delta(where.target(), "staging/users")
    gone = users.file_uris()[0].rsplit("/", 1)[1]
    size = next(f.bytes for f in manifest_table_of(where, "staging/users").files if gone in f.path)
    users.create_write_transaction(
        [RemoveAction(gone, True, 0, size, {})],
        "append",
        users.schema(),
        commit_properties=CommitProperties(
            app_transactions=[Transaction(app_id_for(DEPLOYMENT), 2)]
        ),
    )
    stage(dest, tables={"messages": messages(45)})
    report = publish(layout, where.url, endpoint_url=where.endpoint_url)
    assert report.delta_commits == 2  # messages, and users back to the manifest's files
    manifest = read_published(where.url, endpoint_url=where.endpoint_url).manifest
    assert_delta_equals_manifest(where, manifest, directories_of(manifest))


def test_a_record_of_another_state_is_not_trusted(tmp_path: Path) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    layout = DestinationLayout.at(dest)
    stage(dest)
    publish(layout, str(out))
    stage(dest, tables={"users": USERS[:3]})
    publish(layout, str(out), delta=False)  # the Delta tables stay at manifest 1
    stage(dest, tables={"users": USERS[:2]})
    assert publish(layout, str(out)).delta_commits == 1
    (out / VERSIONS_PATH).write_text("{not json")
    stage(dest, tables={"users": USERS[:1]})
    assert publish(layout, str(out)).delta_commits == 1
    manifest = read_published(str(out)).manifest
    assert_delta_equals_manifest(Where(str(out), None), manifest, directories_of(manifest))


def test_the_schema_string_written_directly_is_the_one_delta_rs_writes() -> None:
    from deltalake import Schema

    columns = tuple(ColumnSpec(f"c_{t.value}", t, i % 2 == 0) for i, t in enumerate(ColumnType))
    assert schema_string(columns) == Schema.from_arrow(delta_schema(columns)).to_json()


def manifest_table_of(where: Where, directory: str) -> Any:
    manifest = read_published(where.url, endpoint_url=where.endpoint_url).manifest
    return manifest_table(manifest, directory)
