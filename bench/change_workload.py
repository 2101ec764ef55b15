"""The benchmark's delta: change a fixed share of the documents through the write API.

``POST /_devserver/workload`` plays an application (mostly inserts), so it does not give
"1% of the documents changed". Instead, a seeded sample of existing documents is drawn
from ``list_snapshot`` walks (reservoir sampling, so memory holds only the sample); about
two thirds are replaced with one field changed and the rest deleted, through
``POST /_devserver/transaction`` in transactions of ``transaction_size`` writes.

Two workloads choose the documents:

* ``uniform`` — every live document equally likely (one walk);
* ``recent`` — how chat, task and event tables change: ``recent_share`` (90%) of the
  changes fall among each table's newest ``recent_window`` (10%) of documents by
  ``_creationTime``, the rest uniformly among the older ones. A first walk keeps only each
  table's creation times (8 bytes a document, in an ``array``) to find its cutoff; a
  second walk, pinned to the same snapshot, samples the two groups.

Only the HTTP API is used (no devserver internals), so any server that has it works.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

_SYSTEM_PREFIX = "_"

Workload = Literal["uniform", "recent"]
TableKey = tuple[str, str]
"""``(component, table)``."""


@dataclass(frozen=True)
class ChangeSummary:
    """What :func:`change_documents` did."""

    sampled_from: int
    """Live documents in the walked snapshot."""
    updates: int
    deletes: int
    transactions: int
    seconds: float
    workload: str = "uniform"
    recent_changes: int | None = None
    """``recent``: changes among each table's newest ``recent_window`` of documents."""
    recent_documents: int | None = None
    """``recent``: how many documents that newest group held."""


class _Reservoir:
    """A uniform sample of ``size`` items from a stream of unknown length."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size = size
        self.items: list[Any] = []
        self.seen = 0
        self._rng = rng

    def offer(self, item: Any) -> None:
        self.seen += 1
        if self.size == 0:
            return
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item


def _walk(client: httpx.Client, snapshot: int | None = None) -> Iterator[tuple[int, list[Any]]]:
    """Every page of a ``list_snapshot`` walk as ``(snapshot, values)``.

    Pinned at ``snapshot`` when given (the server's latest otherwise, then kept for the
    whole walk, as the API requires).
    """
    body: dict[str, Any] = {"snapshot": snapshot, "cursor": None, "format": "export_json"}
    while True:
        response = client.post("/api/list_snapshot", json=body)
        response.raise_for_status()
        page = orjson.loads(response.content)
        yield page["snapshot"], page["values"]
        if not page["hasMore"]:
            return
        body = {**body, "snapshot": page["snapshot"], "cursor": page["cursor"]}


def _table_of(value: dict[str, Any]) -> TableKey:
    return value.get("_component", ""), value["_table"]


def _sample_uniform(client: httpx.Client, count: int, rng: random.Random) -> tuple[list[Any], int]:
    """``count`` documents drawn uniformly from a full snapshot walk, and the walk's size."""
    reservoir = _Reservoir(count, rng)
    for _, values in _walk(client):
        for value in values:
            reservoir.offer(value)
    return reservoir.items, reservoir.seen


def _creation_cutoffs(
    client: httpx.Client, window: float
) -> tuple[int, dict[TableKey, float], int, int]:
    """One walk: its snapshot, each table's smallest ``_creationTime`` among its newest
    ``window`` share of documents, how many documents those groups hold in all, and how
    many the walk saw."""
    times: dict[TableKey, array[float]] = {}
    snapshot = 0
    for page_snapshot, values in _walk(client):
        snapshot = page_snapshot  # the same on every page: the walk is pinned
        for value in values:
            key = _table_of(value)
            column = times.get(key)
            if column is None:
                column = times[key] = array("d")
            column.append(value["_creationTime"])
    cutoffs: dict[TableKey, float] = {}
    newest = 0
    for key, column in times.items():
        # Creation times are unique within a table, so the newest k are exactly those at
        # or above the k-th largest.
        k = max(1, round(len(column) * window))
        cutoffs[key] = heapq.nlargest(k, column)[-1]
        newest += k
    return snapshot, cutoffs, newest, sum(map(len, times.values()))


def _sample_recent(
    client: httpx.Client,
    count: int,
    rng: random.Random,
    *,
    share: float,
    window: float,
) -> tuple[list[Any], int, int, int]:
    """``count`` documents, ``share`` of them among each table's newest ``window``.

    Returns the sample, how many of it are recent, the walk's size and the recent group's
    size. A group smaller than its quota gives all it has and the other makes up the rest.
    """
    snapshot, cutoffs, recent_size, total = _creation_cutoffs(client, window)
    count = min(count, total)
    recent_quota = min(round(count * share), recent_size)
    recent_quota = max(recent_quota, count - (total - recent_size))
    recent, older = _Reservoir(recent_quota, rng), _Reservoir(count - recent_quota, rng)
    # The same snapshot again, so the groups are those the first walk measured.
    for _, values in _walk(client, snapshot):
        for value in values:
            is_recent = value["_creationTime"] >= cutoffs[_table_of(value)]
            (recent if is_recent else older).offer(value)
    return recent.items + older.items, len(recent.items), total, recent_size


def _edited(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with one value changed, its type kept (the first string, else a float)."""
    changed = dict(fields)
    for name in sorted(changed):
        if isinstance(changed[name], str):
            changed[name] = changed[name] + " (edited)"
            return changed
    for name in sorted(changed):
        value = changed[name]
        if isinstance(value, float) and math.isfinite(value):
            changed[name] = value + 1.0
            return changed
    return changed  # nothing simple to change: the replace still writes a new revision


def _write(value: dict[str, Any], delete: bool) -> dict[str, Any]:
    write: dict[str, Any] = {
        "table": value["_table"],
        "component": value.get("_component", ""),
        "id": value["_id"],
    }
    if delete:
        return {**write, "op": "delete"}
    fields = {k: v for k, v in value.items() if not k.startswith(_SYSTEM_PREFIX)}
    return {**write, "op": "replace", "fields": _edited(fields)}


def change_documents(
    url: str,
    key: str,
    *,
    fraction: float = 0.01,
    expected_documents: int,
    workload: Workload = "uniform",
    recent_share: float = 0.9,
    recent_window: float = 0.1,
    delete_share: float = 1 / 3,
    transaction_size: int = 500,
    seed: int = 7,
) -> ChangeSummary:
    """Replace or delete ``fraction`` of the live documents (at least one).

    Args:
        url: the devserver's base URL.
        key: its deploy key.
        fraction: share of the documents to change.
        expected_documents: how many documents the snapshot holds (sizes the sample).
        workload: ``uniform`` (any document) or ``recent`` (``recent_share`` of the
            changes among each table's newest ``recent_window`` by ``_creationTime``).
        recent_share: ``recent``: share of the changes among the newest documents.
        recent_window: ``recent``: share of each table's documents that count as newest.
        delete_share: share of the changed documents that are deleted.
        transaction_size: writes per transaction.
        seed: seeds the sample and the update/delete split.

    Raises:
        ValueError: an unknown workload, or a share outside 0..1.
        httpx.HTTPStatusError: the devserver refused a request.
    """
    if workload not in ("uniform", "recent"):
        raise ValueError(f"unknown workload {workload!r}: expected uniform or recent")
    for name, share in (("recent_share", recent_share), ("recent_window", recent_window)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {share}")
    started = time.perf_counter()
    rng = random.Random(seed)
    count = max(1, round(expected_documents * fraction))
    headers = {"Authorization": f"Convex {key}", "Convex-Client": "convex-cdc-bench-0.1.0"}
    recent_changes = recent_documents = None
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        if workload == "recent":
            chosen, recent_changes, seen, recent_documents = _sample_recent(
                client, count, rng, share=recent_share, window=recent_window
            )
        else:
            chosen, seen = _sample_uniform(client, count, rng)
        rng.shuffle(chosen)
        deletes = round(len(chosen) * delete_share)
        writes = [_write(value, i < deletes) for i, value in enumerate(chosen)]
        rng.shuffle(writes)
        transactions = 0
        for start in range(0, len(writes), transaction_size):
            batch = writes[start : start + transaction_size]
            response = client.post(
                "/_devserver/transaction", content=orjson.dumps({"writes": batch})
            )
            response.raise_for_status()
            transactions += 1
    return ChangeSummary(
        sampled_from=seen,
        updates=len(writes) - deletes,
        deletes=deletes,
        transactions=transactions,
        seconds=time.perf_counter() - started,
        workload=workload,
        recent_changes=recent_changes,
        recent_documents=recent_documents,
    )
