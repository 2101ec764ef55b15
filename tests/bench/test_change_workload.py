"""``bench/change_workload.py`` against a small devserver over real HTTP.

What the benchmark's delta relies on: the counts it reports are the changes the server
received, the ``recent`` workload puts its share of changes among each table's newest
documents by ``_creationTime``, and a seed gives the same changes on the same data.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.devserver import RunningDevServer, start_in_process

# bench/ is a folder of scripts, not a package: bench/run.py imports its modules by name too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from change_workload import ChangeSummary, change_documents

DOCS = 20_000
Factory = Callable[..., RunningDevServer]
Documents = dict[str, dict[str, Any]]


def _documents(server: RunningDevServer) -> Documents:
    return {document["_id"]: document for document in server.truth()}


def _newest(documents: Documents, window: float) -> set[str]:
    """Each table's newest ``window`` share of documents by ``_creationTime``."""
    tables: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for document in documents.values():
        tables.setdefault((document["component"], document["table"]), []).append(document)
    newest: set[str] = set()
    for rows in tables.values():
        rows.sort(key=lambda document: document["_creationTime"])
        keep = max(1, round(len(rows) * window))
        newest.update(document["_id"] for document in rows[-keep:])
    return newest


def _change(
    server: RunningDevServer, documents: Documents, **options: Any
) -> tuple[ChangeSummary, set[str], set[str]]:
    """Run the workload → (summary, deleted ids, updated ids), read back from the server."""
    summary = change_documents(server.url, server.key, expected_documents=len(documents), **options)
    after = _documents(server)
    deleted = set(documents) - set(after)
    updated = {
        doc_id
        for doc_id, document in after.items()
        if doc_id in documents and document["fields"] != documents[doc_id]["fields"]
    }
    return summary, deleted, updated


@pytest.fixture(scope="module")
def recent_run() -> tuple[ChangeSummary, Documents, set[str], set[str]]:
    server = start_in_process(seed="demo", docs=DOCS, workload_seed=4)
    try:
        before = _documents(server)
        summary, deleted, updated = _change(server, before, workload="recent", seed=3)
    finally:
        server.stop()
    return summary, before, deleted, updated


def test_recent_changes_the_requested_share_with_updates_and_deletes(
    recent_run: tuple[ChangeSummary, Documents, set[str], set[str]],
) -> None:
    summary, before, deleted, updated = recent_run
    changes = round(len(before) * 0.01)
    assert summary.workload == "recent"
    assert summary.sampled_from == len(before)
    assert summary.updates + summary.deletes == changes
    assert summary.deletes == round(changes / 3)
    assert (len(deleted), len(updated)) == (summary.deletes, summary.updates)
    assert summary.transactions == 1  # 200 writes, 500 per transaction


def test_recent_puts_nine_in_ten_changes_among_each_tables_newest_tenth(
    recent_run: tuple[ChangeSummary, Documents, set[str], set[str]],
) -> None:
    summary, before, deleted, updated = recent_run
    newest = _newest(before, 0.1)
    changed = deleted | updated
    assert summary.recent_documents == len(newest)
    assert summary.recent_changes == round(len(changed) * 0.9)
    assert len(changed & newest) == summary.recent_changes
    # Both groups are spread over the tables, not taken from one of them.
    tables = {(before[doc_id]["component"], before[doc_id]["table"]) for doc_id in changed}
    assert len(tables) >= 5


def test_uniform_changes_the_newest_documents_only_at_their_share(
    devserver_factory: Factory,
) -> None:
    server = devserver_factory(seed="demo", docs=DOCS, workload_seed=4)
    before = _documents(server)
    summary, deleted, updated = _change(server, before, workload="uniform", seed=3)
    changed = deleted | updated
    assert summary.workload == "uniform" and summary.recent_changes is None
    assert len(changed) == summary.updates + summary.deletes == round(len(before) * 0.01)
    assert len(changed & _newest(before, 0.1)) < 0.3 * len(changed)


def test_the_same_seed_changes_the_same_documents(devserver_factory: Factory) -> None:
    runs = []
    for seed in (5, 5, 6):
        server = devserver_factory(seed="demo", docs=2_000, workload_seed=9)
        before = _documents(server)
        _, deleted, updated = _change(server, before, workload="recent", seed=seed, fraction=0.05)
        runs.append((deleted, updated))
        server.stop()
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_a_short_group_gives_what_it_has_and_the_other_makes_up_the_rest(
    devserver_factory: Factory,
) -> None:
    server = devserver_factory(seed="demo", docs=500, workload_seed=1)
    before = _documents(server)
    # 50% of the documents, 90% of them "recent": more than the newest 10% hold.
    summary, deleted, updated = _change(server, before, workload="recent", fraction=0.5)
    newest = _newest(before, 0.1)
    assert summary.updates + summary.deletes == len(deleted | updated) == 250
    assert summary.recent_changes == len(newest) == len((deleted | updated) & newest)


def test_an_unknown_workload_or_share_is_refused(devserver: RunningDevServer) -> None:
    with pytest.raises(ValueError, match="workload"):
        change_documents(devserver.url, devserver.key, expected_documents=1, workload="hot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recent_share"):
        change_documents(devserver.url, devserver.key, expected_documents=1, recent_share=2.0)
