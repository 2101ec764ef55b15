"""Checkpoint transitions, serialisation and strict loading."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.core.checkpoint import (
    ONE_PAGE_BATCHES,
    BatchLimits,
    Checkpoint,
    DataSync,
    DataSyncCursor,
    DeltaCursor,
    DeltaTail,
    InitialSnapshot,
    PendingDelta,
    SnapshotCursor,
    SnapshotTs,
    SourceIdentity,
    after_data_sync_page,
    after_delta_page,
    after_snapshot_page,
    begin_data_sync,
    begin_snapshot,
    data_sync_from_delta_tail,
    ensure_same_source,
    with_pending_delta,
    with_schema_fingerprints,
)
from convex_cdc.core.checkpoint_json import checkpoint_to_json, dumps_checkpoint, loads_checkpoint
from convex_cdc.core.errors import StateError
from convex_cdc.core.names import TableKey

SOURCE = SourceIdentity.from_url("https://happy-animal-123.convex.cloud/")
S = 1_755_820_800_123_456_789  # above 2**53, as real timestamps are
MESSAGES = TableKey("", "messages")
ENTRIES = TableKey("waitlist", "entries")


def pinned() -> Checkpoint:
    return begin_snapshot(None, source=SOURCE, snapshot=S)


def in_delta(batch_seq: int = 4, cursor: int = S) -> Checkpoint:
    return dataclasses.replace(
        pinned(), position=DeltaTail(DeltaCursor(cursor)), batch_seq=batch_seq
    )


# --- transitions --------------------------------------------------------------------------


def test_pinning_a_walk_starts_at_its_timestamp_with_no_cursor_and_no_batches() -> None:
    checkpoint = pinned()
    assert checkpoint.position == InitialSnapshot(SnapshotTs(S), None)
    assert checkpoint.batch_seq == 0 and checkpoint.snapshot_started_at == S
    assert checkpoint.phase == "snapshot" and checkpoint.consistent_as_of is None
    assert checkpoint.source.deployment_url == "https://happy-animal-123.convex.cloud"


def test_a_snapshot_page_with_more_to_come_keeps_the_walk_and_moves_the_cursor() -> None:
    following = after_snapshot_page(pinned(), cursor='{"id":"a"}', has_more=True, tables=[MESSAGES])
    assert following.position == InitialSnapshot(SnapshotTs(S), SnapshotCursor('{"id":"a"}'))
    assert following.batch_seq == 1 and following.tables_seen == {"messages"}
    assert following.consistent_as_of is None


def test_an_empty_snapshot_page_moves_the_cursor_but_not_the_batch_number() -> None:
    following = after_snapshot_page(pinned(), cursor="next-table", has_more=True, tables=[])
    assert following.batch_seq == 0
    assert following.position == InitialSnapshot(SnapshotTs(S), SnapshotCursor("next-table"))


def test_the_last_snapshot_page_hands_off_to_deltas_at_the_snapshot_timestamp() -> None:
    walking = after_snapshot_page(pinned(), cursor="c", has_more=True, tables=[MESSAGES])
    done = after_snapshot_page(walking, cursor=None, has_more=False, tables=[ENTRIES])
    assert done.position == DeltaTail(DeltaCursor(S))
    assert done.consistent_as_of == S and done.phase == "delta"
    assert done.batch_seq == 2 and done.tables_seen == {"messages", "waitlist/entries"}


def test_snapshot_pages_only_follow_a_pinned_walk_and_carry_a_cursor_when_more_follow() -> None:
    with pytest.raises(ValueError, match="pinned"):
        after_snapshot_page(in_delta(), cursor=None, has_more=False)
    with pytest.raises(ValueError, match="cursor"):
        after_snapshot_page(pinned(), cursor=None, has_more=True)


def test_a_delta_page_stores_the_server_cursor_even_when_it_moves_backwards() -> None:
    forward = after_delta_page(in_delta(cursor=S), cursor=S + 10, tables=[MESSAGES])
    assert forward.position == DeltaTail(DeltaCursor(S + 10)) and forward.batch_seq == 5
    backwards = after_delta_page(forward, cursor=S + 3, tables=[])
    assert backwards.position == DeltaTail(DeltaCursor(S + 3)) and backwards.batch_seq == 5


def test_delta_pages_only_follow_a_completed_snapshot() -> None:
    with pytest.raises(ValueError, match="completed snapshot"):
        after_delta_page(pinned(), cursor=S + 1)


def test_a_pending_delta_records_the_batch_end_without_moving_the_position() -> None:
    before = in_delta(batch_seq=4)
    pending = with_pending_delta(before, batch_seq=5, end_cursor=S + 99)
    assert pending.position == before.position and pending.batch_seq == 4
    assert pending.pending == PendingDelta(5, DeltaCursor(S + 99))
    done = after_delta_page(pending, cursor=S + 99, tables=[MESSAGES])
    assert done.pending is None and done.batch_seq == 5
    with pytest.raises(ValueError, match="delta"):
        with_pending_delta(pinned(), batch_seq=1, end_cursor=S)


def test_a_resnapshot_keeps_counting_and_never_reuses_a_batch_that_may_be_in_flight() -> None:
    previous = with_schema_fingerprints(
        dataclasses.replace(in_delta(batch_seq=7), tables_seen=frozenset({"messages"})),
        {"messages": "sha256:ab"},
    )
    # Batch 8 may be durable already (written, then a crash before its save), pending or not:
    # the new walk's first batch is 9.
    for before in (previous, with_pending_delta(previous, batch_seq=8, end_cursor=S + 5)):
        restarted = begin_snapshot(before, source=SOURCE, snapshot=S + 1000)
        assert restarted.batch_seq == 8
        assert restarted.pending is None
        assert restarted.position == InitialSnapshot(SnapshotTs(S + 1000), None)
        assert restarted.snapshot_started_at == S + 1000
        assert restarted.tables_seen == {"messages"}
        assert restarted.schema_fingerprints == {"messages": "sha256:ab"}
    walking = begin_snapshot(None, source=SOURCE, snapshot=S)
    assert begin_snapshot(walking, source=SOURCE, snapshot=S + 1).batch_seq == 1


def test_each_checkpoint_records_how_the_batch_after_it_is_cut() -> None:
    small, large = BatchLimits(rows=10, document_bytes=100, pages=2), BatchLimits(rows=99)
    walk = begin_snapshot(None, source=SOURCE, snapshot=S, batch_limits=small)
    assert walk.batch_limits == small  # the walk's first batch
    same = after_snapshot_page(walk, cursor="c", has_more=True, tables=[MESSAGES])
    assert same.batch_limits == small  # unchanged unless given
    moved = after_snapshot_page(walk, cursor="c", has_more=True, batch_limits=large)
    assert moved.batch_limits == large
    done = after_delta_page(in_delta(), cursor=S + 1, batch_limits=small)
    assert done.batch_limits == small
    # Saves before a batch (fingerprints, a pending end) keep the limits it is cut with.
    assert with_schema_fingerprints(moved, {"m": "sha256:1"}).batch_limits == large
    assert with_pending_delta(done, batch_seq=5, end_cursor=S + 2).batch_limits == small
    with pytest.raises(ValueError, match="positive"):
        BatchLimits(rows=0)


def test_a_new_data_sync_starts_snapshotting_without_a_cursor_and_skips_a_batch_number() -> None:
    started = begin_data_sync(in_delta(batch_seq=4), source=SOURCE)
    assert started.position == DataSync(None, "snapshotting", None)
    assert started.batch_seq == 5  # batch 5 may be half-written: the sync starts at 6
    assert started.phase == "data-sync" and started.api == "data-sync"
    assert started.consistent_as_of is None


def test_a_data_sync_page_stores_its_cursor_and_is_consistent_only_once_walked() -> None:
    started = begin_data_sync(None, source=SOURCE)
    walking = after_data_sync_page(
        started,
        cursor="0a",
        status="snapshotting",
        snapshot_ts=None,
        sync_id="s",
        tables=[MESSAGES],
    )
    assert (walking.batch_seq, walking.consistent_as_of) == (1, None)
    quiet = after_data_sync_page(
        walking, cursor="0b", status="upToDate", snapshot_ts=S, sync_id="s"
    )
    assert quiet.batch_seq == 1  # no events, no batch: only the cursor moved
    assert quiet.position == DataSync(DataSyncCursor("0b"), "upToDate", S, "s")
    assert quiet.consistent_as_of == S
    with pytest.raises(ValueError, match="snapshotTs"):
        after_data_sync_page(walking, cursor="0c", status="stale", snapshot_ts=None, sync_id="s")
    with pytest.raises(ValueError, match="data sync"):
        after_data_sync_page(in_delta(), cursor="0c", status="stale", snapshot_ts=S, sync_id="s")


def test_a_settled_delta_tail_converts_to_a_data_sync_consistent_at_its_cursor() -> None:
    converted = data_sync_from_delta_tail(in_delta(batch_seq=7), cursor="beef")
    assert converted.position == DataSync(DataSyncCursor("beef"), "stale", S)
    assert converted.batch_seq == 7 and converted.consistent_as_of == S
    with pytest.raises(ValueError, match="delta tail"):
        data_sync_from_delta_tail(pinned(), cursor="beef")


def test_a_pending_batch_that_never_landed_whole_keeps_its_number_out_of_the_data_sync() -> None:
    pending = with_pending_delta(in_delta(batch_seq=4), batch_seq=5, end_cursor=S + 1)
    converted = data_sync_from_delta_tail(pending, cursor="beef")
    assert converted.pending is None
    assert converted.batch_seq == 5  # the next batch is 6: batch 5 may be half-written
    assert converted.position == DataSync(DataSyncCursor("beef"), "stale", S)


def test_a_version_2_checkpoint_still_loads() -> None:
    data = checkpoint_to_json(in_delta())
    data["version"] = 2
    del data["selection_fingerprint"]
    assert loads_checkpoint(json.dumps(data).encode()) == in_delta()
    data["selection_fingerprint"] = None
    with pytest.raises(StateError, match="unknown fields"):
        loads_checkpoint(json.dumps(data).encode())


def test_fingerprints_can_be_recorded_without_moving_the_position() -> None:
    checkpoint = with_schema_fingerprints(in_delta(), {"messages": "sha256:01"})
    assert checkpoint.schema_fingerprints == {"messages": "sha256:01"}
    assert checkpoint.position == in_delta().position


def test_table_keys_round_trip_through_their_qualified_name() -> None:
    for key in (MESSAGES, ENTRIES, TableKey("a/b", "t")):
        assert TableKey.parse(key.qualified) == key
    assert str(ENTRIES) == "waitlist/entries"


def test_a_checkpoint_of_another_deployment_is_refused() -> None:
    ensure_same_source(pinned(), SourceIdentity.from_url(SOURCE.deployment_url + "/"), where="x")
    with pytest.raises(StateError, match="belongs to https://happy-animal-123"):
        ensure_same_source(pinned(), SourceIdentity("https://other.convex.cloud"), where="x")


# --- serialisation ------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
qualified = st.builds(
    lambda c, t: TableKey(c, t).qualified, st.sampled_from(["", "wl", "a/b"]), names
)
timestamps = st.integers(0, 2**63 - 1)
positions = st.one_of(
    st.builds(
        InitialSnapshot,
        timestamps.map(SnapshotTs),
        st.one_of(st.none(), st.text(max_size=40).map(SnapshotCursor)),
    ),
    st.builds(DeltaTail, timestamps.map(DeltaCursor)),
    st.builds(
        lambda cursor, ts, sync_id, up_to_date: DataSync(
            cursor,
            "snapshotting" if ts is None else ("upToDate" if up_to_date else "stale"),
            ts,
            sync_id,
        ),
        st.one_of(st.none(), st.from_regex(r"[0-9a-f]{1,40}", fullmatch=True).map(DataSyncCursor)),
        st.one_of(st.none(), timestamps),
        st.one_of(st.none(), st.text(max_size=20)),
        st.booleans(),
    ),
)
checkpoints = st.builds(
    Checkpoint,
    source=st.builds(
        SourceIdentity, st.sampled_from(["https://a.convex.cloud", "http://127.0.0.1:3210"])
    ),
    position=positions,
    batch_seq=st.integers(0, 2**40),
    schema_fingerprints=st.dictionaries(qualified, st.text(max_size=20), max_size=4),
    tables_seen=st.frozensets(qualified, max_size=5),
    snapshot_started_at=st.one_of(st.none(), timestamps),
    pending=st.one_of(
        st.none(), st.builds(PendingDelta, st.integers(0, 2**40), timestamps.map(DeltaCursor))
    ),
    batch_limits=st.builds(
        BatchLimits, st.integers(1, 2**40), st.integers(1, 2**40), st.integers(1, 2**20)
    ),
    selection_fingerprint=st.one_of(st.none(), st.text(max_size=20)),
)


@settings(max_examples=150, deadline=None)
@given(checkpoints)
def test_every_checkpoint_survives_a_json_round_trip_exactly(checkpoint: Checkpoint) -> None:
    raw = dumps_checkpoint(checkpoint)
    assert loads_checkpoint(raw) == checkpoint
    assert dumps_checkpoint(loads_checkpoint(raw)) == raw  # canonical bytes


def test_the_serialised_form_is_the_documented_json() -> None:
    checkpoint = after_snapshot_page(pinned(), cursor="c1", has_more=True, tables=[ENTRIES])
    assert checkpoint_to_json(checkpoint) == {
        "format": "convex-cdc.checkpoint",
        "version": 3,
        "source": {"deployment_url": "https://happy-animal-123.convex.cloud"},
        "position": {"InitialSnapshot": {"snapshot": S, "cursor": "c1"}},
        "batch_seq": 1,
        "schema_fingerprints": {},
        "tables_seen": ["waitlist/entries"],
        "snapshot_started_at": S,
        "pending": None,
        "batch_limits": {"rows": 16384, "document_bytes": 64 * 1024 * 1024, "pages": 512},
        "selection_fingerprint": None,
    }
    assert json.loads(dumps_checkpoint(checkpoint))["position"]["InitialSnapshot"]["snapshot"] == S


def _valid() -> dict[str, object]:
    return checkpoint_to_json(with_pending_delta(in_delta(), batch_seq=5, end_cursor=S + 1))


def _mutated(**changes: object) -> bytes:
    data = _valid()
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (_mutated(extra=1), "unknown fields"),
        (_mutated(deploy_key="prod:x|abc"), "unknown fields"),
        (_mutated(source={"deployment_url": "https://a", "deploy_key": "k"}), "source must be"),
        (_mutated(source={"deployment_url": ""}), "deployment_url"),
        (_mutated(format="something-else"), "format is"),
        (_mutated(version="1"), "integer version"),
        (_mutated(version=True), "integer version"),
        (_mutated(version=0), "unknown version"),
        (_mutated(batch_seq="3"), "batch_seq"),
        (_mutated(batch_seq=-1), "batch_seq"),
        (_mutated(batch_seq=False), "batch_seq"),
        (_mutated(batch_seq=KeyError), "missing field"),
        (_mutated(position=KeyError), "missing field"),
        (_mutated(position={"DeltaTail": {"cursor": "17"}}), "DeltaTail"),
        (_mutated(position={"DeltaTail": {"cursor": 1.5}}), "DeltaTail"),
        (_mutated(position={"DeltaTail": {"cursor": 1, "x": 2}}), "DeltaTail"),
        (_mutated(position={"InitialSnapshot": {"snapshot": 1}}), "InitialSnapshot"),
        (_mutated(position={"InitialSnapshot": {"snapshot": 1, "cursor": 5}}), "InitialSnapshot"),
        (_mutated(position={"DeltaTail": {"cursor": 1}, "InitialSnapshot": {}}), "position must"),
        (_mutated(position={"Deltas": {"cursor": 1}}), "unknown position"),
        (_mutated(schema_fingerprints={"t": 1}), "schema_fingerprints"),
        (_mutated(tables_seen="messages"), "tables_seen"),
        (_mutated(snapshot_started_at="now"), "snapshot_started_at"),
        (_mutated(pending={"batch_seq": 1}), "pending"),
        (_mutated(pending={"batch_seq": 1, "end_cursor": "2"}), "pending"),
        (_mutated(batch_limits=KeyError), "missing field"),
        (_mutated(batch_limits=None), "batch_limits"),
        (_mutated(batch_limits={"rows": 1, "document_bytes": 1}), "batch_limits"),
        (_mutated(batch_limits={"rows": 0, "document_bytes": 1, "pages": 1}), "batch_limits"),
        (_mutated(batch_limits={"rows": 1, "document_bytes": 1, "pages": True}), "batch_limits"),
        (_mutated(version=1), "unknown fields"),  # version 1 had no batch_limits
        (b"[]", "expected a JSON object"),
    ],
)
def test_a_checkpoint_that_is_not_exactly_right_is_refused_not_reset(
    raw: bytes, problem: str
) -> None:
    with pytest.raises(StateError, match=problem) as caught:
        loads_checkpoint(raw, where="dest/checkpoint.json")
    assert "dest/checkpoint.json" in str(caught.value)
    assert caught.value.hint  # names the fix


def test_a_checkpoint_from_a_newer_convex_cdc_asks_for_an_upgrade() -> None:
    with pytest.raises(StateError, match="newer convex-cdc") as caught:
        loads_checkpoint(_mutated(version=4))
    assert caught.value.hint == "upgrade convex-cdc"


def test_a_version_1_checkpoint_loads_with_the_one_page_batches_that_version_wrote() -> None:
    """After an upgrade, the first batch may replay one the old version half-wrote, a
    single page: it must be cut the same way."""
    data = _valid()
    del data["batch_limits"], data["selection_fingerprint"]
    data["version"] = 1
    loaded = loads_checkpoint(json.dumps(data).encode())
    assert loaded.batch_limits == ONE_PAGE_BATCHES
    assert loaded == dataclasses.replace(
        loads_checkpoint(json.dumps(_valid()).encode()), batch_limits=ONE_PAGE_BATCHES
    )


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"\xff\xfe\x00", b"null", b"[" * 100_000, b'{"a":' * 50_000, b"NaN"],
    ids=["empty", "truncated", "not-utf8", "null", "deep-array", "deep-object", "nan"],
)
def test_corrupt_bytes_are_a_checkpoint_error(raw: bytes) -> None:
    with pytest.raises(StateError):
        loads_checkpoint(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300)
    | st.builds(lambda b, i: b[:i], st.just(dumps_checkpoint(pinned())), st.integers(0, 300))
)
def test_arbitrary_bytes_either_load_or_raise_a_checkpoint_error(raw: bytes) -> None:
    try:
        loaded = loads_checkpoint(raw)
    except StateError:
        return
    assert loaded == pinned()  # only the complete file can load, and then exactly


def test_no_field_of_a_checkpoint_can_hold_a_key() -> None:
    """The checkpoint's shape has no room for credentials: the loader refuses extra fields
    (above) and these are all the fields there are."""
    assert {f.name for f in dataclasses.fields(Checkpoint)} == {
        "source",
        "position",
        "batch_seq",
        "schema_fingerprints",
        "tables_seen",
        "snapshot_started_at",
        "pending",
        "batch_limits",
        "selection_fingerprint",
    }
    assert {f.name for f in dataclasses.fields(DataSync)} == {
        "cursor",
        "status",
        "snapshot_ts",
        "sync_id",
    }
    assert {f.name for f in dataclasses.fields(SourceIdentity)} == {"deployment_url"}
    assert {f.name for f in dataclasses.fields(BatchLimits)} == {"rows", "document_bytes", "pages"}
    assert set(_valid()) == {
        "format",
        "version",
        "source",
        "position",
        "batch_seq",
        "schema_fingerprints",
        "tables_seen",
        "snapshot_started_at",
        "pending",
        "batch_limits",
        "selection_fingerprint",
    }
