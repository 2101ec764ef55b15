"""Tables dropped at the source on the S3/export target: drop rows in the raw change log
and its index, the table gone from staging (state and files), the manifest and the
published Delta table; a table created again later is a new table.

Synced by the real orchestrator from the devserver's store in process, into the real raw
sink and checkpoint file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from deltalake import DeltaTable

from convex_cdc.core.names import TableKey
from convex_cdc.core.orchestrator import SyncOptions, run_sync
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.publish.publisher import publish
from convex_cdc.target_s3.publish.reader import read_published
from convex_cdc.target_s3.raw.change_log import RawChangeLog, RawChangeLogSink
from convex_cdc.target_s3.staging.materializer import MaterializeReport, StagingMaterializer
from tests.core.in_process_convex import InProcessConvex
from tests.target_s3.staging_checks import assert_only_listed_files, state_of

USERS, ENTRIES = TableKey("", "users"), TableKey("waitlist", "entries")
APIS = pytest.mark.parametrize("api", ["streaming-export", "data-sync"])


def deployment() -> InProcessConvex:
    convex = InProcessConvex(snapshot_page_size=2, delta_row_limit=2, data_sync_page_size=2)
    for i in range(3):
        convex.insert("messages", {"body": f"m{i}"})
    for name in ("ada", "bob", "cy"):
        convex.insert("users", {"name": name})
    convex.insert("entries", {"email": "e@x.io"}, "waitlist")
    return convex


def sync(convex: InProcessConvex, dest: Path, api: str, *, resnapshot: bool = False) -> None:
    layout = DestinationLayout.at(dest)
    options = SyncOptions(api=api, batch_rows=3, resnapshot=resnapshot)  # type: ignore[arg-type]
    run_sync(convex, RawChangeLogSink(layout), FileCheckpointStore(layout), options)


def materialize(dest: Path) -> MaterializeReport:
    return StagingMaterializer(DestinationLayout.at(dest), rows_per_segment=2).materialize()


def row_counts(convex: InProcessConvex) -> dict[TableKey, int]:
    return dict(Counter(TableKey(c, t) for c, t, _ in convex.truth()))


def staged_counts(dest: Path) -> dict[TableKey, int]:
    return {t.key: t.row_count for t in state_of(dest).tables}


@APIS
def test_a_dropped_table_leaves_staging_the_manifest_and_the_delta_table(
    tmp_path: Path, api: str
) -> None:
    dest, to = tmp_path / "dest", tmp_path / "lake"
    convex = deployment()
    sync(convex, dest, api)
    materialize(dest)
    publish(DestinationLayout.at(dest), str(to))
    assert (dest / "staging" / "users").is_dir()

    convex.drop_table("users")
    convex.drop_table("entries", "waitlist")
    sync(convex, dest, api)

    raw = RawChangeLog(DestinationLayout.at(dest))
    (drop_batch,) = [
        index for seq in raw.batch_numbers() if (index := raw.batch(seq)) and index.drops(USERS)
    ]
    assert drop_batch.drops(ENTRIES)
    assert {(t.key, t.rows, t.drops, t.min_ts) for t in drop_batch.tables} == {
        (USERS, 1, 1, 0),
        (ENTRIES, 1, 1, 0),
    }
    rows = raw.read_table_batches(USERS, [drop_batch.seq]).to_pylist()
    assert [(r["_op"], r["_id"], r["_ts"], r["document"]) for r in rows] == [("drop", "", 0, None)]

    report = materialize(dest)
    assert report.tables_dropped == ["users", "waitlist/entries"]
    assert staged_counts(dest) == row_counts(convex) == {TableKey("", "messages"): 3}
    assert not (dest / "staging" / "users").exists()
    assert_only_listed_files(dest)

    publish(DestinationLayout.at(dest), str(to))
    published = read_published(str(to))
    assert [t.key for t in published.manifest.tables] == [TableKey("", "messages")]
    assert published.table("messages").num_rows == 3
    # The table that left the manifest is committed empty: readers of it see no rows.
    assert DeltaTable(str(to / "staging" / "users")).to_pyarrow_table().num_rows == 0


@APIS
def test_a_table_created_again_after_its_drop_starts_afresh(tmp_path: Path, api: str) -> None:
    dest = tmp_path / "dest"
    convex = deployment()
    sync(convex, dest, api)
    materialize(dest)
    convex.drop_table("users")
    sync(convex, dest, api)
    convex.insert("users", {"name": "new", "age": 3})
    sync(convex, dest, api)

    materialize(dest)  # the drop and the new table in one run

    assert staged_counts(dest) == row_counts(convex)
    users = state_of(dest).table(USERS)
    assert users is not None and users.row_count == 1
    assert "age" in {c.name for c in users.columns}
    assert_only_listed_files(dest)


@APIS
def test_staging_built_in_one_run_equals_staging_built_batch_by_batch(
    tmp_path: Path, api: str
) -> None:
    convex = deployment()
    steps = tmp_path / "steps"
    sync(convex, steps, api)
    materialize(steps)
    convex.drop_table("users")
    sync(convex, steps, api)
    materialize(steps)

    rebuilt = StagingMaterializer(
        DestinationLayout.at(steps), rows_per_segment=2, rebuild=True
    ).materialize()

    assert rebuilt.tables_dropped == ["users"]
    assert staged_counts(steps) == row_counts(convex)
    assert_only_listed_files(steps)


@APIS
def test_a_resnapshot_of_a_deployment_whose_tables_were_all_dropped_empties_staging(
    tmp_path: Path, api: str
) -> None:
    dest = tmp_path / "dest"
    convex = deployment()
    sync(convex, dest, api)
    materialize(dest)
    for table in ("messages", "users"):
        convex.drop_table(table)
    convex.drop_table("entries", "waitlist")

    sync(convex, dest, api, resnapshot=True)
    materialize(dest)

    assert state_of(dest).tables == ()
    assert_only_listed_files(dest)
