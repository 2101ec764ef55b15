"""The staging materializer: current state, incremental, restart-safe, replay-safe."""

from __future__ import annotations

import json
import logging
import pathlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from convex_cdc.core.errors import DestinationBusy, StateError
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.locks import DestinationLock
from convex_cdc.target_s3.raw.change_log import RawChangeLog, RawChangeLogSink
from convex_cdc.target_s3.staging import materializer
from convex_cdc.target_s3.staging.materializer import MaterializeProgress, StagingMaterializer
from convex_cdc.target_s3.staging.reader import read_staging_table
from tests.target_s3.change_batches import ScriptedSync, doc, key, tombstone
from tests.target_s3.staging_checks import (
    assert_only_listed_files,
    rows_by_id,
    staging_files,
    state_of,
)

MESSAGES = key("messages")
USERS = key("users")


def _bodies(dest: Path) -> dict[str, str]:
    return {i: r["body"] for i, r in rows_by_id(dest, MESSAGES).items()}


def _messages(count: int, ts: int = 10) -> list[dict[str, object]]:
    return [doc("messages", f"m{n:03d}", ts + n, body=f"v{ts}") for n in range(count)]


def test_upserts_and_deletes_become_one_current_row_per_id(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot(
        [[doc("messages", "m1", 10, body="a"), doc("messages", "m2", 11, body="b")]],
        snapshot_ts=50,
    )
    sync.delta(
        [
            doc("messages", "m1", 60, body="a2"),
            doc("messages", "m3", 61, body="c"),
            doc("messages", "m1", 62, body="a3"),
            tombstone("messages", "m2", 63),
            tombstone("messages", "never-existed", 64),
        ]
    )
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()

    assert _bodies(tmp_path) == {"m1": "a3", "m3": "c"}
    assert rows_by_id(tmp_path, MESSAGES)["m1"]["_ts"] == 62
    assert report.batches_applied == 2 and report.tables_changed == ["messages"]
    assert report.consistent_as_of_ts == 64
    state = state_of(tmp_path)
    assert state.last_applied_batch == 2 and state.consistent_as_of_ts == 64
    assert state.snapshot_ts == 50
    assert state.tables[0].row_count == 2 and state.tables[0].last_batch == 2
    assert_only_listed_files(tmp_path)


def test_deletes_reach_staging_in_a_later_run(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10, body="a"), doc("users", "u1", 11)]], snapshot_ts=50)
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    sync.delta([tombstone("messages", "m1", 60), tombstone("users", "u1", 61)])
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()

    assert report.rows_deleted == 2 and report.rows_upserted == 0
    assert rows_by_id(tmp_path, MESSAGES) == {} and rows_by_id(tmp_path, USERS) == {}
    assert [t.row_count for t in state_of(tmp_path).tables] == [0, 0]
    assert_only_listed_files(tmp_path)


def test_the_highest_ts_wins_even_when_events_arrive_out_of_order(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10, body="snap")]], snapshot_ts=50)
    sync.delta([doc("messages", "m1", 300, body="newest"), doc("messages", "m1", 250, body="old")])
    sync.delta([doc("messages", "m1", 200, body="older, later batch")], cursor=300)
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert _bodies(tmp_path) == {"m1": "newest"}

    # Also against what an earlier run already put in staging.
    sync.delta([doc("messages", "m1", 100, body="stale"), tombstone("messages", "m1", 120)])
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert _bodies(tmp_path) == {"m1": "newest"}
    assert report.files_written == 0 and report.rows_deleted == 0


def test_batches_beyond_the_saved_checkpoint_are_not_applied_until_committed(
    tmp_path: Path,
) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10, body="a")]], snapshot_ts=50)
    page = [doc("messages", "m1", 60, body="b")]
    sync.delta(page, commit=False)  # written, but the checkpoint save "crashed"
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert _bodies(tmp_path) == {"m1": "a"}
    assert report.last_applied_batch == 1 and report.consistent_as_of_ts == 50

    sync.delta(page)  # the orchestrator replays the page and commits it
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert _bodies(tmp_path) == {"m1": "b"}
    assert state_of(tmp_path).last_applied_batch == 2


def test_staging_is_not_consistent_until_the_snapshot_walk_completes(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    pages = [[doc("messages", "m1", 10)], [doc("messages", "m2", 11)]]
    sync.snapshot(pages, snapshot_ts=50)
    # Rewind the checkpoint to "first page durable, walk incomplete".
    index = RawChangeLog(DestinationLayout.at(tmp_path)).batch(1)
    assert index is not None
    sync.store.save(index.checkpoint)
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert report.consistent_as_of_ts is None
    assert list(rows_by_id(tmp_path, MESSAGES)) == ["m1"]

    last = RawChangeLog(DestinationLayout.at(tmp_path)).batch(2)
    assert last is not None
    sync.store.save(last.checkpoint)
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert report.consistent_as_of_ts == 50
    assert sorted(rows_by_id(tmp_path, MESSAGES)) == ["m1", "m2"]


def test_an_empty_delta_page_moves_consistent_as_of_without_touching_files(
    tmp_path: Path,
) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10)]], snapshot_ts=50)
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    before = staging_files(tmp_path)
    sync.delta([], cursor=90)  # no events: no batch, but the cursor moved
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert report.consistent_as_of_ts == 90 and report.batches_applied == 0
    assert state_of(tmp_path).consistent_as_of_ts == 90
    assert staging_files(tmp_path) == before


def test_a_new_snapshot_walk_truncates_and_reloads_every_table(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot(
        [[doc("messages", "m1", 10, body="a"), doc("messages", "m2", 11, body="b")],
         [doc("users", "u1", 12)]],
        snapshot_ts=50,
    )  # fmt: skip
    sync.delta([doc("messages", "m3", 60, body="c")])
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()

    # --resnapshot: the new walk no longer has m2, m3 or the users table.
    sync.snapshot(
        [[doc("messages", "m1", 400, body="a2"), doc("messages", "m4", 401, body="d")]],
        snapshot_ts=500,
    )
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()

    assert report.full_rebuild
    assert _bodies(tmp_path) == {"m1": "a2", "m4": "d"}
    state = state_of(tmp_path)
    assert [t.key for t in state.tables] == [MESSAGES]
    assert state.snapshot_ts == 500 and state.consistent_as_of_ts == 500
    assert not (tmp_path / "staging" / "users").exists()
    assert_only_listed_files(tmp_path)


def test_a_new_walk_among_pending_batches_discards_everything_before_it(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10, body="a")]], snapshot_ts=50)
    sync.delta([doc("messages", "m2", 60, body="b"), doc("users", "u1", 61)])
    sync.snapshot([[doc("messages", "m9", 400, body="z")]], snapshot_ts=500)
    sync.delta([doc("messages", "m10", 600, body="y")])
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert _bodies(tmp_path) == {"m9": "z", "m10": "y"}
    assert [t.key for t in state_of(tmp_path).tables] == [MESSAGES]


def _aged(count: int, ts: int = 10) -> list[dict[str, object]]:
    """Documents ``m000``… created in id order (as an application inserts them)."""
    return [
        doc("messages", f"m{n:03d}", ts + n, body=f"v{ts}", _creationTime=1_000.0 + n)
        for n in range(count)
    ]


def test_an_incremental_run_rewrites_only_the_segments_it_touches(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([_aged(64)], snapshot_ts=1_000)
    materializer = StagingMaterializer(DestinationLayout.at(tmp_path), rows_per_segment=4)
    materializer.materialize()
    before = staging_files(tmp_path)
    assert len(state_of(tmp_path).tables[0].files) == 16

    # An update of an old document, a delete of another one, and a new document.
    sync.delta(
        [
            doc("messages", "m007", 2_000, body="changed", _creationTime=1_007.0),
            tombstone("messages", "m030", 2_001),
            doc("messages", "n001", 2_002, body="new", _creationTime=5_000.0),
        ]
    )
    report = materializer.materialize()
    after = staging_files(tmp_path)

    removed, added = set(before) - set(after), set(after) - set(before)
    # m004-m007, m028-m031 and the newest segment (m060-m063 + n001): three of sixteen.
    assert len(removed) == 3 and len(added) == 3
    assert report.files_written == 3 and report.files_removed == 3
    assert report.rows_upserted == 2 and report.rows_deleted == 1
    assert {p: after[p] for p in set(after) & set(before)} == {
        p: before[p] for p in set(after) & set(before)
    }
    bodies = _bodies(tmp_path)
    assert bodies["m007"] == "changed" and bodies["n001"] == "new" and "m030" not in bodies
    assert len(bodies) == 64
    assert_only_listed_files(tmp_path)


def test_every_segment_file_is_in_creation_order_and_the_ranges_do_not_overlap(
    tmp_path: Path,
) -> None:
    sync = ScriptedSync(tmp_path)
    # Ids in random order against creation time, as Convex ids are.
    sync.snapshot([_messages(40)], snapshot_ts=1_000)
    materializer = StagingMaterializer(DestinationLayout.at(tmp_path), rows_per_segment=4)
    materializer.materialize()
    sync.delta([doc("messages", f"m{n:03d}", 2_000 + n, body="x") for n in range(0, 40, 3)])
    materializer.materialize()
    (table,) = state_of(tmp_path).tables
    previous_last = None
    for file in table.files:
        times = pq.read_table(tmp_path / file.path).column("_creationTime").to_pylist()
        assert times == sorted(times) and file.first_creation_time == times[0]
        if previous_last is not None:
            assert times[0] > previous_last
        previous_last = times[-1]
    assert len(rows_by_id(tmp_path, MESSAGES)) == 40


def test_a_replayed_raw_batch_changes_nothing(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([_messages(20)], snapshot_ts=1_000)
    batch = sync.delta(
        [doc("messages", "m003", 2_000, body="x"), tombstone("messages", "m004", 2_001)]
    )
    assert batch is not None
    materializer = StagingMaterializer(DestinationLayout.at(tmp_path), rows_per_segment=4)
    materializer.materialize()
    before = staging_files(tmp_path)
    state_before = state_of(tmp_path)

    RawChangeLogSink(DestinationLayout.at(tmp_path)).write(
        batch
    )  # the orchestrator replays after a crash
    report = materializer.materialize()
    assert staging_files(tmp_path) == before
    assert report.files_written == 0 and report.batches_applied == 0
    assert state_of(tmp_path).tables == state_before.tables


def test_the_same_batches_give_byte_identical_files_whether_replayed_or_not(
    tmp_path: Path,
) -> None:
    for name, replay in (("once", False), ("replayed", True)):
        sync = ScriptedSync(tmp_path / name)
        sync.snapshot([_messages(20)], snapshot_ts=1_000)
        page = [doc("messages", "m003", 2_000, body="x"), tombstone("messages", "m004", 2_001)]
        if replay:  # written, not committed (a crash before the checkpoint), then again
            sync.delta(page, commit=False)
        # The same materialize runs in both: segment boundaries follow what each run saw.
        StagingMaterializer(DestinationLayout.at(tmp_path / name), rows_per_segment=4).materialize()
        sync.delta(page)
        StagingMaterializer(DestinationLayout.at(tmp_path / name), rows_per_segment=4).materialize()
    once = {p.removeprefix("staging/"): b for p, b in staging_files(tmp_path / "once").items()}
    replayed = staging_files(tmp_path / "replayed")
    assert once == {p.removeprefix("staging/"): b for p, b in replayed.items()}


def test_small_steps_give_the_same_staging_as_one_big_step(tmp_path: Path) -> None:
    for name in ("steps", "one"):
        sync = ScriptedSync(tmp_path / name)
        sync.snapshot([_messages(10), [doc("users", "u1", 30)]], snapshot_ts=1_000)
        sync.delta([doc("messages", "m001", 2_000, body="x"), tombstone("users", "u1", 2_001)])
        sync.delta([doc("messages", "m002", 3_000, body="y"), doc("users", "u2", 3_001)])
    StagingMaterializer(
        DestinationLayout.at(tmp_path / "steps"), rows_per_segment=4, max_events_per_step=1
    ).materialize()
    StagingMaterializer(DestinationLayout.at(tmp_path / "one"), rows_per_segment=4).materialize()
    for table in (MESSAGES, USERS):
        assert (
            read_staging_table(DestinationLayout.at(tmp_path / "steps"), table)
            .sort_by("_id")
            .equals(
                read_staging_table(DestinationLayout.at(tmp_path / "one"), table).sort_by("_id")
            )
        )
    assert state_of(tmp_path / "steps").consistent_as_of_ts == 3_001


def test_a_column_first_seen_in_a_later_chunk_reaches_every_file_of_the_run(
    tmp_path: Path,
) -> None:
    values = [doc("messages", f"m{n:03d}", 10 + n, body=f"b{n}", score=n) for n in range(15)]
    # Only the last rows bring a new field and a second type for "score" (→ json).
    values.append(doc("messages", "m015", 30, body="b15", score="high", late=True))
    for name, rows_per_segment in (("segments", 1), ("one", 1_000)):
        ScriptedSync(tmp_path / name).snapshot([values], snapshot_ts=1_000)
        StagingMaterializer(
            DestinationLayout.at(tmp_path / name), rows_per_segment=rows_per_segment
        ).materialize()

    assert len(state_of(tmp_path / "segments").tables[0].files) == 16
    table = read_staging_table(DestinationLayout.at(tmp_path / "segments"), MESSAGES)
    assert table.equals(read_staging_table(DestinationLayout.at(tmp_path / "one"), MESSAGES))
    rows = rows_by_id(tmp_path / "segments", MESSAGES)
    assert rows["m003"]["score"] == "3" and rows["m015"]["score"] == '"high"'
    assert rows["m003"]["late"] is None and rows["m015"]["late"] is True
    assert_only_listed_files(tmp_path / "segments")  # no file of the first pass is left


def test_a_growing_segment_is_split_and_every_row_is_kept(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([_aged(4)], snapshot_ts=1_000)
    materializer = StagingMaterializer(DestinationLayout.at(tmp_path), rows_per_segment=2)
    materializer.materialize()
    assert len(state_of(tmp_path).tables[0].files) == 1  # 4 rows: not above 2 * 2
    for step in range(3):  # new documents arrive at the newest end
        sync.delta(
            [
                doc("messages", f"n{step}{n:02d}", 2_000 + n, body="new", _creationTime=5e3 + n)
                for n in range(10 * step, 10 * step + 10)
            ]
        )
        materializer.materialize()
    (table,) = state_of(tmp_path).tables
    assert table.row_count == 34
    assert all(file.rows <= 2 * 2 for file in table.files)  # never above the split point
    assert len(rows_by_id(tmp_path, MESSAGES)) == 34
    assert_only_listed_files(tmp_path)


class PowerCut(Exception):
    pass


def test_a_crash_before_the_state_save_leaves_the_old_state_and_a_rerun_converges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    for dest in (crashed, clean):
        sync = ScriptedSync(dest)
        sync.snapshot([_messages(16)], snapshot_ts=1_000)
        StagingMaterializer(DestinationLayout.at(dest), rows_per_segment=4).materialize()
        sync.delta([doc("messages", "m001", 2_000, body="x"), tombstone("messages", "m002", 2_001)])
    old_state = state_of(crashed)

    def cut(*args: object) -> None:
        raise PowerCut

    monkeypatch.setattr(materializer, "save_staging_state", cut)
    with pytest.raises(PowerCut):
        StagingMaterializer(DestinationLayout.at(crashed), rows_per_segment=4).materialize()
    monkeypatch.undo()
    assert state_of(crashed) == old_state  # still names only files that exist
    assert rows_by_id(crashed, MESSAGES)["m001"]["body"] == "v10"

    StagingMaterializer(DestinationLayout.at(crashed), rows_per_segment=4).materialize()
    StagingMaterializer(DestinationLayout.at(clean), rows_per_segment=4).materialize()
    assert staging_files(crashed).keys() == {
        p.replace("clean", "crashed") for p in staging_files(clean)
    }
    assert state_of(crashed).tables == state_of(clean).tables
    assert_only_listed_files(crashed)


def test_a_crash_before_old_files_are_deleted_is_cleaned_up_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([_messages(16)], snapshot_ts=1_000)
    StagingMaterializer(DestinationLayout.at(tmp_path), rows_per_segment=4).materialize()
    sync.delta([doc("messages", "m001", 2_000, body="x")])
    real_unlink = pathlib.Path.unlink

    def cut(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".parquet":
            raise PowerCut
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", cut)
    with pytest.raises(PowerCut):
        StagingMaterializer(DestinationLayout.at(tmp_path), rows_per_segment=4).materialize()
    monkeypatch.undo()
    assert rows_by_id(tmp_path, MESSAGES)["m001"]["body"] == "x"  # the new state is saved

    report = StagingMaterializer(DestinationLayout.at(tmp_path), rows_per_segment=4).materialize()
    assert report.files_removed == 1 and report.batches_applied == 0
    assert_only_listed_files(tmp_path)


def test_reading_a_table_staging_does_not_have_gives_an_empty_table(tmp_path: Path) -> None:
    empty = read_staging_table(DestinationLayout.at(tmp_path), MESSAGES)
    assert empty.num_rows == 0 and empty.schema.names == ["_id", "_creationTime", "_ts"]
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 10, body="a")]], snapshot_ts=50)
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    sync.delta([tombstone("messages", "m1", 60)])
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    gone = read_staging_table(DestinationLayout.at(tmp_path), MESSAGES)
    assert gone.num_rows == 0 and gone.schema.names == ["_id", "_creationTime", "_ts", "body"]


def test_progress_is_reported_per_table(tmp_path: Path) -> None:
    ScriptedSync(tmp_path).snapshot(
        [[doc("messages", "m1", 1)], [doc("users", "u1", 2)]], snapshot_ts=5
    )
    seen: list[MaterializeProgress] = []
    StagingMaterializer(DestinationLayout.at(tmp_path), progress=seen.append).materialize()
    assert [(p.table, p.batches_total) for p in seen] == [(MESSAGES, 2), (USERS, 2)]


def test_without_a_checkpoint_there_is_nothing_to_materialize(tmp_path: Path) -> None:
    report = StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert report.batches_applied == 0 and not (tmp_path / "staging").exists()


def test_a_second_materialize_on_the_same_destination_is_refused(tmp_path: Path) -> None:
    ScriptedSync(tmp_path).snapshot([[doc("messages", "m1", 1)]], snapshot_ts=5)
    with (
        DestinationLock(DestinationLayout.at(tmp_path), "staging"),
        pytest.raises(DestinationBusy, match="another convex-cdc staging is running"),
    ):
        StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()


def test_staging_built_from_another_deployment_is_refused(tmp_path: Path) -> None:
    ScriptedSync(tmp_path).snapshot([[doc("messages", "m1", 1)]], snapshot_ts=5)
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    state_file = tmp_path / "staging" / "_state.json"
    state_file.write_text(state_file.read_text().replace("happy-animal-123", "other-place-9"))
    with pytest.raises(StateError, match="other-place-9"):
        StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()


def test_staging_ahead_of_the_checkpoint_is_refused(tmp_path: Path) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([[doc("messages", "m1", 1)]], snapshot_ts=5)
    restored = sync.checkpoint  # a "backup" taken before the next batch
    sync.delta([doc("messages", "m2", 10)])
    StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()
    assert restored is not None
    sync.store.save(restored)
    with pytest.raises(StateError, match="beyond the checkpoint's 1"):
        StagingMaterializer(DestinationLayout.at(tmp_path)).materialize()


def test_a_staging_of_the_hash_bucket_layout_is_rebuilt_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sync = ScriptedSync(tmp_path)
    sync.snapshot([_messages(12)], snapshot_ts=1_000)
    layout = DestinationLayout.at(tmp_path)
    StagingMaterializer(layout, rows_per_segment=4).materialize()
    expected = read_staging_table(layout, MESSAGES).sort_by("_id")
    # The state as the hash-bucket layout wrote it (version 1: buckets, no segments).
    state = json.loads(layout.staging_state.read_text())
    state["version"] = 1
    del state["layout"]
    for table in state["tables"]:
        table["buckets"] = len(table["files"])
        for number, file in enumerate(table["files"]):
            file["bucket"] = number
            del file["first_creation_time"]
    layout.staging_state.write_text(json.dumps(state))

    sync.delta([doc("messages", "m003", 2_000, body="x")])
    with caplog.at_level(logging.INFO, logger="convex_cdc"):
        report = StagingMaterializer(layout, rows_per_segment=4).materialize()

    assert "hash buckets of _id" in caplog.text and "rebuilding" in caplog.text
    assert json.loads(layout.staging_state.read_text())["version"] == 2
    assert state_of(tmp_path).layout == "creation-time-segments"
    assert report.full_rebuild and report.files_written >= 1
    rows = read_staging_table(layout, MESSAGES).sort_by("_id")
    assert rows.num_rows == expected.num_rows
    assert _bodies(tmp_path)["m003"] == "x"
    assert_only_listed_files(tmp_path)
