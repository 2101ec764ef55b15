"""Data-sync batches on the S3/export target: raw change log, staging, publish, status.

Batches are built as the orchestrator builds them (truncate rows first, then the page's
values; ``kind="data-sync"``; a ``DataSync`` checkpoint) and written with the real raw
sink (:mod:`tests.target_s3.data_sync_script`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from convex_cdc.cli import cli, main
from convex_cdc.commands.status import collect_status
from convex_cdc.core.errors import ConfigError, StateError
from convex_cdc.core.events import Op
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.publish.manifest import loads_manifest
from convex_cdc.target_s3.publish.publisher import publish
from convex_cdc.target_s3.raw.batch_index import dumps_batch_index, loads_batch_index
from convex_cdc.target_s3.raw.change_log import RawChangeLog
from convex_cdc.target_s3.raw.history import ensure_checkpointed_batch_exists
from convex_cdc.target_s3.staging.materializer import MaterializeReport, StagingMaterializer
from convex_cdc.target_s3.staging.reader import read_staging_table
from convex_cdc.target_s3.staging.readiness import consistent_staging
from tests.target_s3.change_batches import ScriptedSync, doc, key, tombstone
from tests.target_s3.data_sync_script import ScriptedDataSync
from tests.target_s3.staging_checks import assert_only_listed_files, rows_by_id, state_of

MESSAGES, USERS, EMPTY = key("messages"), key("users"), key("empty", "waitlist")


def materialize(dest: Path, *, max_events_per_step: int = 500_000) -> MaterializeReport:
    return StagingMaterializer(
        DestinationLayout.at(dest), rows_per_segment=2, max_events_per_step=max_events_per_step
    ).materialize()


def fields_of(dest: Path, table: str) -> dict[str, dict[str, object]]:
    """Staging rows without nulls, ``_creationTime`` or ``_ts``: what the documents said."""
    rows = rows_by_id(dest, key(table), drop_nulls=True)
    return {
        i: {k: v for k, v in r.items() if k not in ("_creationTime", "_ts")}
        for i, r in rows.items()
    }


# --- raw change log ---------------------------------------------------------------------


def test_the_index_records_data_sync_batches_and_their_truncates(tmp_path: Path) -> None:
    sync = ScriptedDataSync(tmp_path)
    sync.cold_start()
    batch = sync.page([doc("messages", "m1", 10, body="hi")], truncates=[MESSAGES, EMPTY])
    assert batch is not None

    index = RawChangeLog(sync.layout).batch(batch.seq)
    assert index is not None and index.kind == "data-sync" and index.snapshot_ts is None
    messages, empty = index.entry(MESSAGES), index.entry(EMPTY)
    assert messages is not None and empty is not None
    assert (messages.rows, messages.deletes, messages.truncates) == (2, 0, 1)
    assert (messages.min_ts, messages.max_ts) == (0, 10)
    assert (empty.rows, empty.deletes, empty.truncates, empty.min_ts, empty.max_ts) == (
        1,
        0,
        1,
        0,
        0,
    )
    assert index.truncates(EMPTY) and not index.truncates(USERS)
    assert loads_batch_index(dumps_batch_index(index), where="test") == index

    rows = RawChangeLog(sync.layout).read_table_batches(MESSAGES, [batch.seq]).to_pylist()
    assert [(r["_op"], r["_id"], r["_ts"], r["_deleted"]) for r in rows] == [
        (Op.TRUNCATE.value, "", 0, False),
        (Op.UPSERT.value, "m1", 10, False),
    ]
    assert rows[0]["document"] is None
    # A legacy batch's index is what it always was: no "truncates" key.
    legacy = ScriptedSync(tmp_path / "legacy")
    legacy.snapshot([[doc("messages", "m1", 10)]], snapshot_ts=100)
    raw = (tmp_path / "legacy" / "raw_change_log" / "_batches" / f"{1:012d}.json").read_text()
    assert "truncates" not in raw


def test_a_data_sync_batch_written_again_is_kept_and_another_one_refused(tmp_path: Path) -> None:
    sync = ScriptedDataSync(tmp_path)
    sync.cold_start()
    batch = sync.page([doc("messages", "m1", 10)], truncates=[MESSAGES], commit=False)
    assert batch is not None
    sync.sink.write(batch)  # the same batch again: left as it is

    other = ScriptedDataSync(tmp_path)
    other.checkpoint, other.sync_id = sync.checkpoint, sync.sync_id
    with pytest.raises(StateError, match="already holds other changes"):
        other.page([doc("messages", "m1", 10), doc("messages", "m2", 11)], truncates=[MESSAGES])


def test_a_cold_start_after_a_data_sync_skips_a_number_a_lost_index_is_damage(
    tmp_path: Path,
) -> None:
    sync = ScriptedDataSync(tmp_path)
    sync.cold_start()
    sync.page([doc("messages", "m1", 10)], truncates=[MESSAGES], status="upToDate")
    sync.cold_start()  # cursor expired, say: the checkpoint counts a skipped number
    assert sync.checkpoint is not None
    raw = RawChangeLog(sync.layout)
    assert raw.batch(sync.checkpoint.batch_seq) is None
    ensure_checkpointed_batch_exists(raw, sync.checkpoint)
    sync.page([], status="snapshotting")  # a first page with nothing in it
    ensure_checkpointed_batch_exists(raw, sync.checkpoint)
    materialize(tmp_path)

    sync.page([doc("messages", "m2", 20)], truncates=[MESSAGES])
    sync.page([doc("messages", "m3", 30)], status="upToDate")
    (sync.layout.batch_index / f"{sync.checkpoint.batch_seq:012d}.json").unlink()
    with pytest.raises(StateError, match="is missing"):
        ensure_checkpointed_batch_exists(raw, sync.checkpoint)


# --- staging ----------------------------------------------------------------------------


def test_a_truncate_replaces_a_table_rows_and_columns_and_leaves_the_others(
    tmp_path: Path,
) -> None:
    sync = ScriptedDataSync(tmp_path)
    sync.cold_start()
    sync.page(
        [doc("messages", f"m{i}", 10 + i, body=f"v{i}", old=i) for i in range(5)]
        + [doc("users", "u1", 9, name="ada")],
        truncates=[MESSAGES, USERS],
        status="upToDate",
    )
    materialize(tmp_path)
    files_before = {f.path for f in state_of(tmp_path).table(MESSAGES).files}  # type: ignore[union-attr]

    # The table was replaced by an import: older timestamps, other fields, fewer rows.
    sync.page([doc("messages", "m1", 2, body="new"), doc("messages", "x", 3, fresh=True)],
              truncates=[MESSAGES], status="upToDate")  # fmt: skip
    report = materialize(tmp_path)

    assert report.tables_truncated == ["messages"]
    assert fields_of(tmp_path, "messages") == {
        "m1": {"_id": "m1", "body": "new"},
        "x": {"_id": "x", "fresh": True},
    }
    assert fields_of(tmp_path, "users") == {"u1": {"_id": "u1", "name": "ada"}}
    table = state_of(tmp_path).table(MESSAGES)
    assert table is not None and table.row_count == 2
    assert {c.name for c in table.columns} == {"_id", "_creationTime", "_ts", "body", "fresh"}
    listed = {f.path for f in table.files}
    assert not (files_before - listed) & {
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")
    }
    assert_only_listed_files(tmp_path)


def test_a_truncate_of_a_table_never_seen_lists_an_empty_table(tmp_path: Path) -> None:
    sync = ScriptedDataSync(tmp_path)
    sync.cold_start()
    sync.page(truncates=[EMPTY], status="upToDate", snapshot_ts=50)
    report = materialize(tmp_path)

    table = state_of(tmp_path).table(EMPTY)
    assert table is not None
    assert (table.row_count, table.files, table.last_batch) == (0, (), 1)
    assert read_staging_table(DestinationLayout.at(tmp_path), EMPTY).num_rows == 0
    assert report.tables_truncated == ["waitlist/empty"] == report.tables_changed
    assert report.consistent_as_of_ts == 50
    assert_only_listed_files(tmp_path)


def test_deletes_after_a_truncate_and_of_unknown_ids_are_harmless(tmp_path: Path) -> None:
    sync = ScriptedDataSync(tmp_path)
    sync.cold_start()
    sync.page([doc("messages", "a", 10), doc("messages", "b", 11)], truncates=[MESSAGES])
    materialize(tmp_path)
    sync.page(
        [doc("messages", "c", 3), tombstone("messages", "a", 4), tombstone("messages", "zz", 5)],
        truncates=[MESSAGES],
    )
    sync.page([tombstone("messages", "c", 6), tombstone("users", "nobody", 7)], status="stale")
    materialize(tmp_path)

    assert fields_of(tmp_path, "messages") == {}
    assert fields_of(tmp_path, "users") == {}
    assert state_of(tmp_path).table(MESSAGES).row_count == 0  # type: ignore[union-attr]
    assert_only_listed_files(tmp_path)


def test_a_truncate_and_the_rows_before_it_in_one_run_equal_two_runs(tmp_path: Path) -> None:
    one, two, steps = tmp_path / "one", tmp_path / "two", tmp_path / "steps"
    for dest in (one, two, steps):
        sync = ScriptedDataSync(dest)
        sync.cold_start()
        sync.page([doc("messages", i, 100 + n, n=n) for n, i in enumerate("abcde")],
                  truncates=[MESSAGES])  # fmt: skip
        if dest == two:
            materialize(dest)
        sync.page([doc("messages", "b", 1, n=-1), tombstone("messages", "c", 2)],
                  truncates=[MESSAGES])  # fmt: skip
        sync.page([doc("messages", "f", 3, n=6)], status="upToDate")
    materialize(one)
    materialize(two)
    materialize(steps, max_events_per_step=1)
    expected = {"b": {"_id": "b", "n": -1}, "f": {"_id": "f", "n": 6}}
    for dest in (one, two, steps):
        assert fields_of(dest, "messages") == expected
        assert_only_listed_files(dest)


def test_a_legacy_history_switched_to_data_sync_keeps_tables_it_does_not_truncate(
    tmp_path: Path,
) -> None:
    legacy = ScriptedSync(tmp_path)
    legacy.snapshot([[doc("messages", "m1", 10)], [doc("users", "u1", 11)]], snapshot_ts=100)
    legacy.delta([doc("messages", "m2", 120)], cursor=130)
    materialize(tmp_path)

    sync = ScriptedDataSync(tmp_path)
    sync.convert()
    assert consistent_staging(DestinationLayout.at(tmp_path), purpose="publish")[1] == 130
    sync.page([doc("users", "u9", 5)], truncates=[USERS], status="upToDate", snapshot_ts=200)
    materialize(tmp_path)
    assert set(fields_of(tmp_path, "messages")) == {"m1", "m2"}
    assert set(fields_of(tmp_path, "users")) == {"u9"}
    assert state_of(tmp_path).consistent_as_of_ts == 200

    with_rebuild = StagingMaterializer(DestinationLayout.at(tmp_path), rebuild=True)
    with_rebuild.materialize()
    assert set(fields_of(tmp_path, "users")) == {"u9"}
    assert set(fields_of(tmp_path, "messages")) == {"m1", "m2"}


# --- publish, verify, status ------------------------------------------------------------


def test_publish_is_refused_while_the_data_sync_is_snapshotting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest, published = tmp_path / "lake", tmp_path / "published"
    layout = DestinationLayout.at(dest)
    sync = ScriptedDataSync(dest)
    sync.cold_start()
    sync.page([doc("messages", "m1", 10)], truncates=[MESSAGES, EMPTY])
    main(["materialize", "--dest", str(dest)])  # materialize may run
    said = " ".join(capsys.readouterr().out.split())
    assert "the data sync truncated messages, waitlist/empty" in said
    assert "the data sync is still snapshotting; run sync until it reports a consistent" in said
    assert state_of(dest).consistent_as_of_ts is None

    for purpose in ("publish", "verify"):
        with pytest.raises(ConfigError, match="data sync is still snapshotting") as refused:
            consistent_staging(layout, purpose=purpose)
        assert refused.value.exit_code == 2
    with pytest.raises(ConfigError, match="data sync is still snapshotting"):
        publish(layout, str(published), delta=False)
    with pytest.raises(SystemExit) as exited:
        main(["publish", "--dest", str(dest), "--to", str(published), "--no-delta"])
    assert exited.value.code == 2
    assert "still snapshotting" in capsys.readouterr().err

    sync.page([doc("messages", "m2", 11)], status="stale", snapshot_ts=11)
    # Consistent at the checkpoint, not yet in staging: materialize first.
    with pytest.raises(ConfigError, match="staging is behind the checkpoint"):
        publish(layout, str(published), delta=False)
    materialize(dest)
    result = publish(layout, str(published), delta=False)
    assert result.sequence == 1
    manifest = loads_manifest((published / "manifest.json").read_bytes(), where="test")
    assert manifest.consistent_as_of_ts == 11
    tables = {t.table: (t.row_count, len(t.files)) for t in manifest.tables}
    assert tables == {"messages": (2, tables["messages"][1]), "empty": (0, 0)}

    sync.page([doc("messages", "m3", 12)], status="upToDate", snapshot_ts=12)
    materialize(dest)
    assert publish(layout, str(published), delta=False).sequence == 2


def test_status_shows_the_api_and_the_data_sync_state(tmp_path: Path) -> None:
    layout = DestinationLayout.at(tmp_path)
    sync = ScriptedDataSync(tmp_path)
    sync.cold_start()
    sync.page([doc("messages", "m1", 10)], truncates=[MESSAGES])
    materialize(tmp_path)

    status = collect_status(layout, url=None, deploy_key_env="NO_SUCH_KEY", ask_server=False)
    assert (status["phase"], status["api"]) == ("data-sync", "data-sync")
    assert status["data_sync"] == {
        "status": "snapshotting",
        "sync_id": "sync-1",
        "consistent_as_of_ts": None,
    }
    assert status["consistent_as_of_ts"] is None and status["lag_seconds"] is None

    sync.page([], status="upToDate", snapshot_ts=1_700_000_000_000_000_000)
    status = collect_status(layout, url=None, deploy_key_env="NO_SUCH_KEY", ask_server=False)
    assert status["data_sync"]["status"] == "upToDate"
    assert status["data_sync"]["consistent_as_of_ts"] == 1_700_000_000_000_000_000
    assert status["lag_seconds"] > 0 and status["lag_source"].startswith("local clock")

    shown = CliRunner().invoke(cli, ["status", "--dest", str(tmp_path), "--offline"])
    assert shown.exit_code == 0, shown.output
    shown_text = " ".join(shown.output.split())  # the console wraps long lines
    assert "data-sync: upToDate, sync sync-1, consistent as of 2023-11-14" in shown_text
    as_json = CliRunner().invoke(cli, ["status", "--dest", str(tmp_path), "--offline", "--json"])
    assert json.loads(as_json.output)["api"] == "data-sync"

    legacy = tmp_path / "legacy"
    ScriptedSync(legacy).snapshot([[doc("messages", "m1", 10)]], snapshot_ts=100)
    status = collect_status(
        DestinationLayout.at(legacy), url=None, deploy_key_env="NO_SUCH_KEY", ask_server=False
    )
    assert (status["api"], status["data_sync"]) == ("streaming-export", None)
