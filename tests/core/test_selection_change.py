"""A changed ``--include/--exclude`` between runs is never silently mixed in: the legacy
API refuses it before anything is fetched, a data sync takes it (the server walks newly
selected tables), ``--resnapshot`` rebuilds with it, and an older checkpoint adopts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from convex_cdc.core.checkpoint import Checkpoint, DataSync, DeltaTail
from convex_cdc.core.checkpoint_json import dumps_checkpoint
from convex_cdc.core.errors import ConfigError
from convex_cdc.core.orchestrator import SyncOptions, run_sync
from convex_cdc.core.selection import Selection
from convex_cdc.core.selection_fingerprint import selection_fingerprint
from convex_cdc.devserver.writes import Insert
from tests.core.crash_harness import DurableSink, MemoryCheckpointStore
from tests.core.in_process_convex import InProcessConvex

ONLY_MESSAGES = Selection.from_patterns(include=["messages"])
WITHOUT_USERS = Selection.from_patterns(exclude=["users"])
ONLY_MESSAGES_WIRE = {"_other": "excl", "": {"_other": "excl", "messages": {"_other": "incl"}}}
LEGACY = SyncOptions(api="streaming-export")
DATA_SYNC = SyncOptions(api="data-sync", batch_rows=2)


@dataclass
class Destination:
    deployment: InProcessConvex
    sink: DurableSink
    store: MemoryCheckpointStore

    def sync(
        self, selection: Selection | None, *, base: SyncOptions = LEGACY, resnapshot: bool = False
    ) -> Checkpoint:
        options = replace(base, selection=selection, resnapshot=resnapshot)
        report = run_sync(self.deployment, self.sink, self.store, options)
        assert report.checkpoint is not None
        return report.checkpoint

    def saved(self) -> Checkpoint:
        checkpoint = self.store.load()
        assert checkpoint is not None
        return checkpoint


def destination() -> Destination:
    deployment = InProcessConvex(data_sync_page_size=2, snapshot_page_size=2)
    for i in range(3):
        deployment.insert("messages", {"n": i})
        deployment.insert("users", {"n": i})
    return Destination(deployment, DurableSink(), MemoryCheckpointStore())


def tables(sink: DurableSink) -> set[str]:
    return {table for (_, table, _) in sink.state()}


# --- the fingerprint ------------------------------------------------------------------------


def test_one_selection_spelled_two_ways_has_one_fingerprint() -> None:
    assert selection_fingerprint(None) == selection_fingerprint(Selection.everything())
    assert selection_fingerprint(
        Selection.from_patterns(include=["users.email", "messages", "users"], exclude=["x"])
    ) == selection_fingerprint(
        Selection.from_patterns(include=["users", "messages", "users.email"], exclude=["x"])
    )
    assert selection_fingerprint(Selection.from_wire(ONLY_MESSAGES_WIRE)) == selection_fingerprint(
        ONLY_MESSAGES
    )
    assert selection_fingerprint(None).startswith("sha256:")
    assert selection_fingerprint(ONLY_MESSAGES) != selection_fingerprint(None)
    assert selection_fingerprint(WITHOUT_USERS) != selection_fingerprint(
        Selection.from_patterns(exclude=["users.n"])
    )


# --- the legacy API -------------------------------------------------------------------------


@dataclass
class RecordingStore(MemoryCheckpointStore):
    saved_checkpoints: list[Checkpoint] = field(default_factory=list)

    def save(self, checkpoint: Checkpoint) -> None:
        self.saved_checkpoints.append(checkpoint)
        super().save(checkpoint)


@pytest.mark.parametrize("options", [LEGACY, DATA_SYNC], ids=lambda o: o.api)
def test_a_new_destination_records_its_selection_with_its_first_save(
    options: SyncOptions,
) -> None:
    d = destination()
    store = d.store = RecordingStore()

    d.sync(WITHOUT_USERS, base=options)

    assert store.saved_checkpoints
    fingerprint = selection_fingerprint(WITHOUT_USERS)
    assert all(s.selection_fingerprint == fingerprint for s in store.saved_checkpoints)


def test_a_legacy_destination_refuses_another_selection_before_fetching_anything() -> None:
    d = destination()
    d.sync(WITHOUT_USERS)
    d.deployment.insert("messages", {"n": 99})
    raw, files, calls = d.store.raw, dict(d.sink.files), len(d.deployment.calls)

    with pytest.raises(ConfigError) as refused:
        d.sync(None)

    assert refused.value.exit_code == 2
    line = refused.value.one_line()
    assert "differs from the one this destination was built with" in line
    assert "--resnapshot" in line and "previous --include/--exclude" in line
    assert d.deployment.calls[calls:] == []  # nothing fetched
    assert d.store.raw == raw and d.sink.files == files  # nothing written


def test_a_legacy_destination_takes_the_same_selection_in_another_spelling() -> None:
    d = destination()
    d.sync(Selection.from_patterns(include=["messages", "users"], exclude=["users.n"]))
    d.deployment.insert("users", {"n": 7})

    d.sync(Selection.from_patterns(include=["users", "messages"], exclude=["users.n"]))

    assert d.saved().position == DeltaTail(d.deployment.latest_ts)  # type: ignore[arg-type]


def test_a_resnapshot_rebuilds_a_legacy_destination_with_the_new_selection() -> None:
    d = destination()
    d.sync(WITHOUT_USERS)
    with pytest.raises(ConfigError):
        d.sync(None)

    checkpoint = d.sync(None, resnapshot=True)

    assert checkpoint.selection_fingerprint == selection_fingerprint(None)
    assert d.saved().selection_fingerprint == selection_fingerprint(None)
    assert d.sink.state() == d.deployment.truth()
    d.deployment.insert("users", {"n": 8})
    d.sync(None)  # the new selection is the destination's own now
    assert d.sink.state() == d.deployment.truth()


def test_a_checkpoint_from_before_fingerprints_adopts_the_selection_it_is_given() -> None:
    d = destination()
    d.sync(ONLY_MESSAGES)
    d.store.raw = dumps_checkpoint(replace(d.saved(), selection_fingerprint=None))
    d.deployment.insert("messages", {"n": 9})

    d.sync(ONLY_MESSAGES)

    assert d.saved().selection_fingerprint == selection_fingerprint(ONLY_MESSAGES)
    assert d.sink.state() == d.deployment.truth(ONLY_MESSAGES_WIRE)
    with pytest.raises(ConfigError, match="--resnapshot"):
        d.sync(None)


def test_a_quiet_legacy_destination_still_moves_its_cursor() -> None:
    """An empty document_deltas page's cursor is stored too (retention never strands it)."""
    d = destination()
    d.sync(ONLY_MESSAGES)
    before = d.saved()
    d.deployment.transact([Insert("users", {"n": 10})])  # not selected: an empty page

    d.sync(ONLY_MESSAGES)

    after = d.saved()
    assert after.batch_seq == before.batch_seq
    assert after.position == DeltaTail(d.deployment.latest_ts)  # type: ignore[arg-type]
    assert after.consistent_as_of != before.consistent_as_of


# --- Data Sync ------------------------------------------------------------------------------


def test_a_data_sync_takes_a_new_selection_and_walks_the_newly_selected_table() -> None:
    d = destination()
    d.sync(ONLY_MESSAGES, base=DATA_SYNC)
    assert tables(d.sink) == {"messages"}

    checkpoint = d.sync(None, base=DATA_SYNC)

    assert checkpoint.selection_fingerprint == selection_fingerprint(None)
    assert d.saved().selection_fingerprint == selection_fingerprint(None)
    assert [r["_table"] for r in d.sink.rows() if r["_op"] == "truncate"].count("users") == 1
    assert d.sink.state() == d.deployment.truth()
    d.sink.assert_exactly_once()


def test_a_table_a_data_sync_no_longer_selects_keeps_its_rows() -> None:
    d = destination()
    d.sync(None, base=DATA_SYNC)
    users = {key for key in d.sink.state() if key[1] == "users"}
    d.deployment.insert("users", {"n": 11})

    d.sync(ONLY_MESSAGES, base=DATA_SYNC)

    assert {key for key in d.sink.state() if key[1] == "users"} == users
    assert d.saved().selection_fingerprint == selection_fingerprint(ONLY_MESSAGES)


def test_a_legacy_destination_switches_to_data_sync_only_with_its_own_selection() -> None:
    """The cursor conversion counts every table selected now as synced, so switching with
    a wider selection would leave the newly selected table without its rows."""
    d = destination()
    d.sync(ONLY_MESSAGES)
    with pytest.raises(ConfigError, match="switch this destination to Data Sync") as refused:
        d.sync(None, base=DATA_SYNC)
    assert refused.value.exit_code == 2
    assert isinstance(d.saved().position, DeltaTail)

    d.sync(ONLY_MESSAGES, base=DATA_SYNC)  # switched, nothing read again
    assert isinstance(d.saved().position, DataSync)
    d.sync(None, base=DATA_SYNC)  # now the server walks users by itself

    assert d.sink.state() == d.deployment.truth()
