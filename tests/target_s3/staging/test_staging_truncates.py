"""Property: with a data sync's truncates, incremental staging == a rebuild == an oracle.

The oracle applies each batch the way the contract says: a table the batch truncates loses
everything from earlier batches, then the batch's rows apply (upserts and deletes, the
newest ``_ts`` per ``_id`` winning). After a truncate a table's timestamps may start lower
than before (a table replaced by an import), which staging must not hold against the new
rows. A table is listed once any batch named it, with zero rows if nothing is left.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convex_cdc.core.checkpoint import SyncStatus
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.materializer import StagingMaterializer
from tests.target_s3.change_batches import doc, key, tombstone
from tests.target_s3.data_sync_script import ScriptedDataSync
from tests.target_s3.staging.test_staging_properties import Crash, _crash_at
from tests.target_s3.staging_checks import assert_only_listed_files, rows_by_id, state_of

IDS = ["a", "b", "c", "d"]
TABLES = ["messages", "users", "empty"]

Op = tuple[str, str, str, int]
"""``(upsert|delete, table, _id, n)``."""


@dataclass(frozen=True)
class Page:
    truncates: tuple[str, ...]
    rewind: int
    """Where the truncated tables' timestamps start again (below what they had)."""
    ops: tuple[Op, ...]
    status: SyncStatus
    materialize_after: bool


op = st.tuples(
    st.sampled_from(["upsert", "upsert", "delete"]),
    st.sampled_from(TABLES[:2]),
    st.sampled_from(IDS),
    st.integers(-5, 5),
)
page = st.builds(
    Page,
    truncates=st.lists(st.sampled_from(TABLES), unique=True, max_size=2).map(tuple),
    rewind=st.integers(1, 50),
    ops=st.lists(op, max_size=6).map(tuple),
    status=st.sampled_from(["snapshotting", "stale", "upToDate"]),
    materialize_after=st.booleans(),
)
pages = st.lists(page, min_size=1, max_size=6)


def _script(pages: list[Page]) -> Iterator[tuple[Page, list[dict[str, Any]]]]:
    """Each page with its values, timestamps increasing per table except after a truncate."""
    clock = dict.fromkeys(TABLES, 1_000)
    for number, p in enumerate(pages):
        for table in p.truncates:
            clock[table] = p.rewind + number  # lower than anything before: a new table
        values = []
        for kind, table, doc_id, n in p.ops:
            clock[table] += 1
            values.append(
                tombstone(table, doc_id, clock[table])
                if kind == "delete"
                else doc(table, doc_id, clock[table], n=n)
            )
        yield p, values


def _oracle(pages: list[Page]) -> dict[str, dict[str, int]]:
    """Per listed table: ``_id`` → ``n``."""
    tables: dict[str, dict[str, int]] = {}
    for p in pages:
        for table in p.truncates:
            tables[table] = {}
        for kind, table, doc_id, n in p.ops:
            rows = tables.setdefault(table, {})
            if kind == "delete":
                rows.pop(doc_id, None)
            else:
                rows[doc_id] = n
    return tables


def _staging(dest: Path) -> dict[str, dict[str, int]]:
    return {
        t.key.table: {i: row["n"] for i, row in rows_by_id(dest, t.key).items()}
        for t in state_of(dest).tables
    }


def _write(dest: Path, pages: list[Page], *, materialize: bool) -> None:
    sync = ScriptedDataSync(dest)
    sync.cold_start()
    for p, values in _script(pages):
        sync.page(values, truncates=[key(t) for t in p.truncates], status=p.status)
        if materialize and p.materialize_after:
            StagingMaterializer(DestinationLayout.at(dest), rows_per_segment=1).materialize()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages=pages)
def test_truncates_applied_incrementally_equal_a_rebuild_and_the_oracle(
    pages: list[Page],
) -> None:
    expected = _oracle(pages)
    with tempfile.TemporaryDirectory() as tmp:
        incremental, scratch = Path(tmp) / "incremental", Path(tmp) / "scratch"
        _write(incremental, pages, materialize=True)
        StagingMaterializer(DestinationLayout.at(incremental), rows_per_segment=1).materialize()
        scratch.mkdir()
        if (incremental / "raw_change_log").exists():
            shutil.copytree(incremental / "raw_change_log", scratch / "raw_change_log")
        shutil.copy(incremental / "checkpoint.json", scratch / "checkpoint.json")
        StagingMaterializer(DestinationLayout.at(scratch), rows_per_segment=1).materialize()

        assert _staging(incremental) == expected
        assert _staging(scratch) == expected
        consistent = None if pages[-1].status == "snapshotting" else state_of(scratch)
        assert state_of(incremental).consistent_as_of_ts == (
            consistent.consistent_as_of_ts if consistent is not None else None
        )
        # One batch per step: every truncate lands at a step boundary.
        StagingMaterializer(
            DestinationLayout.at(scratch), rows_per_segment=1, max_events_per_step=1, rebuild=True
        ).materialize()
        assert _staging(scratch) == expected
        assert_only_listed_files(incremental)
        assert_only_listed_files(scratch)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages=pages, crash_at=st.integers(1, 10))
def test_a_crash_while_applying_truncates_converges_on_a_rerun(
    pages: list[Page], crash_at: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        sync = ScriptedDataSync(dest)
        sync.cold_start()
        for p, values in _script(pages):
            sync.page(values, truncates=[key(t) for t in p.truncates], status=p.status)
            with _crash_at(crash_at), suppress(Crash):
                StagingMaterializer(DestinationLayout.at(dest), rows_per_segment=1).materialize()
        StagingMaterializer(DestinationLayout.at(dest), rows_per_segment=1).materialize()
        assert _staging(dest) == _oracle(pages)
        assert_only_listed_files(dest)
