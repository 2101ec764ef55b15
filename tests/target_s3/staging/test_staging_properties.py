"""Property: incremental staging == staging built once from scratch == a Python oracle."""

from __future__ import annotations

import base64
import math
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convex_cdc.target_s3.atomic_file import atomic_write_bytes
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging import materializer, segments
from convex_cdc.target_s3.staging.materializer import StagingMaterializer
from convex_cdc.target_s3.staging.reader import read_staging_table
from convex_cdc.target_s3.staging.state import StagingState, save_staging_state
from tests.target_s3.change_batches import ScriptedSync, doc, key, tombstone
from tests.target_s3.staging_checks import assert_only_listed_files, rows_by_id

IDS = ["a", "b", "c", "d", "e"]
TABLES = ["messages", "users"]

# Each field keeps one Convex type (a type change would widen incrementally but not from
# scratch, which is intended and covered elsewhere); fields may be missing or null.
FIELDS = {
    "n": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "s": st.one_of(st.none(), st.text(max_size=5)),
    "f": st.floats(allow_nan=False, width=64),
    "raw": st.binary(max_size=4),
}

field_values = st.fixed_dictionaries({}, optional=FIELDS)
upsert = st.tuples(st.just("upsert"), st.sampled_from(TABLES), st.sampled_from(IDS), field_values)
delete: st.SearchStrategy[tuple[str, str, str, dict[str, Any]]] = st.tuples(
    st.just("delete"), st.sampled_from(TABLES), st.sampled_from(IDS), st.just({})
)
delta_batches = st.lists(st.lists(st.one_of(upsert, delete), min_size=1, max_size=6), max_size=5)
snapshot_rows = st.lists(
    st.tuples(st.sampled_from(TABLES), st.sampled_from(IDS), field_values),
    max_size=8,
    unique_by=lambda row: (row[0], row[1]),
)


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    """export_json: bytes and non-finite floats are tagged."""
    encoded = dict(fields)
    if "f" in encoded and not math.isfinite(encoded["f"]):
        encoded["f"] = {"$float": base64.b64encode(struct.pack("<d", encoded["f"])).decode()}
    if "raw" in encoded:
        encoded["raw"] = {"$bytes": base64.b64encode(encoded["raw"]).decode()}
    return encoded


def _pages(values: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Snapshot values as list_snapshot returns them: a page holds one table."""
    pages = [[v for v in values if v["_table"] == table] for table in TABLES]
    return [page for page in pages if page] or [[]]


def _materialized(dest: Path, table: str) -> dict[str, dict[str, Any]]:
    rows = rows_by_id(dest, key(table), drop_nulls=True)
    for row in rows.values():
        del row["_creationTime"]
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshot=snapshot_rows, deltas=delta_batches)
def test_incremental_staging_equals_a_rebuild_and_the_oracle(
    snapshot: list[tuple[str, str, dict[str, Any]]],
    deltas: list[list[tuple[str, str, str, dict[str, Any]]]],
) -> None:
    oracle: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in TABLES}
    ts = 1_000
    snapshot_values = []
    for table, doc_id, fields in snapshot:
        ts += 1
        snapshot_values.append(doc(table, doc_id, ts, **_encode(fields)))
        oracle[table][doc_id] = {"_id": doc_id, "_ts": ts, **fields}
    delta_values = []
    for batch in deltas:
        values = []
        for op, table, doc_id, fields in batch:
            ts += 1
            if op == "delete":
                values.append(tombstone(table, doc_id, ts))
                oracle[table].pop(doc_id, None)
            else:
                values.append(doc(table, doc_id, ts, **_encode(fields)))
                oracle[table][doc_id] = {"_id": doc_id, "_ts": ts, **fields}
        delta_values.append(values)
    for rows in oracle.values():
        for row in rows.values():
            for name in [k for k, v in row.items() if v is None]:
                del row[name]

    with tempfile.TemporaryDirectory() as tmp:
        incremental, scratch = Path(tmp) / "incremental", Path(tmp) / "scratch"
        syncs = {dest: ScriptedSync(dest) for dest in (incremental, scratch)}
        for sync in syncs.values():
            sync.snapshot(_pages(snapshot_values), snapshot_ts=1_000_000)
            sync.delta([], cursor=1_000_000)  # keep a checkpoint even if nothing landed
        StagingMaterializer(DestinationLayout.at(incremental), rows_per_segment=1).materialize()
        for values in delta_values:
            for sync in syncs.values():
                sync.delta(values, cursor=ts + 1)
            StagingMaterializer(DestinationLayout.at(incremental), rows_per_segment=1).materialize()
        StagingMaterializer(DestinationLayout.at(scratch), rows_per_segment=1).materialize()

        for table in TABLES:
            assert _materialized(incremental, table) == oracle[table]
            assert _materialized(scratch, table) == oracle[table]
        assert_only_listed_files(incremental)
        assert_only_listed_files(scratch)


class Crash(Exception):
    """A simulated kill at one point of a materialize."""


@contextmanager
def _crash_at(step: int) -> Iterator[None]:
    """Raise :class:`Crash` at the ``step``-th durable write, state save or file deletion."""
    count = {"n": 0}

    def tick() -> None:
        count["n"] += 1
        if count["n"] == step:
            raise Crash

    real_unlink = Path.unlink

    def write(path: Path, data: bytes) -> None:
        tick()
        atomic_write_bytes(path, data)

    def save(path: Path, state: StagingState) -> None:
        tick()
        save_staging_state(path, state)

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".parquet":
            tick()
        real_unlink(self, missing_ok=missing_ok)

    with (
        patch.object(segments, "atomic_write_bytes", write),
        patch.object(materializer, "save_staging_state", save),
        patch.object(Path, "unlink", unlink),
    ):
        yield


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshot=snapshot_rows, deltas=delta_batches, crash_at=st.integers(1, 12))
def test_a_crash_anywhere_leaves_a_readable_staging_and_a_rerun_converges(
    snapshot: list[tuple[str, str, dict[str, Any]]],
    deltas: list[list[tuple[str, str, str, dict[str, Any]]]],
    crash_at: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        sync = ScriptedSync(dest)
        ts = 1_000
        values = []
        for table, doc_id, fields in snapshot:
            ts += 1
            values.append(doc(table, doc_id, ts, **_encode(fields)))
        sync.snapshot(_pages(values), snapshot_ts=1_000_000)
        for batch in deltas:
            values = []
            for op, table, doc_id, fields in batch:
                ts += 1
                values.append(
                    tombstone(table, doc_id, ts)
                    if op == "delete"
                    else doc(table, doc_id, ts, **_encode(fields))
                )
            sync.delta(values, cursor=ts + 1)
            with _crash_at(crash_at), suppress(Crash):
                StagingMaterializer(DestinationLayout.at(dest), rows_per_segment=1).materialize()
            for table in TABLES:  # whatever state is on disk names only existing files
                read_staging_table(DestinationLayout.at(dest), key(table))

        StagingMaterializer(DestinationLayout.at(dest), rows_per_segment=1).materialize()
        with tempfile.TemporaryDirectory() as other:
            clean = Path(other)
            if (dest / "raw_change_log").exists():
                shutil.copytree(dest / "raw_change_log", clean / "raw_change_log")
            shutil.copy(dest / "checkpoint.json", clean / "checkpoint.json")
            StagingMaterializer(DestinationLayout.at(clean), rows_per_segment=1).materialize()
            for table in TABLES:
                assert _materialized(dest, table) == _materialized(clean, table)
        assert_only_listed_files(dest)
