"""The benchmark's delta: change a fixed share of the documents through the write API.

``POST /_devserver/workload`` plays an application (mostly inserts), so it does not give
"1% of the documents changed". Instead, a seeded sample of existing documents is drawn
from one ``list_snapshot`` walk (reservoir sampling, so memory holds only the sample);
about two thirds are replaced with one field changed and the rest deleted, through
``POST /_devserver/transaction`` in transactions of ``transaction_size`` writes.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

_SYSTEM_PREFIX = "_"


@dataclass(frozen=True)
class ChangeSummary:
    """What :func:`change_documents` did."""

    sampled_from: int
    updates: int
    deletes: int
    transactions: int
    seconds: float


def _sample(client: httpx.Client, count: int, rng: random.Random) -> tuple[list[Any], int]:
    """``count`` documents drawn uniformly from a full snapshot walk, and the walk's size."""
    chosen: list[Any] = []
    seen = 0
    body: dict[str, Any] = {"snapshot": None, "cursor": None, "format": "export_json"}
    while True:
        response = client.post("/api/list_snapshot", json=body)
        response.raise_for_status()
        page = orjson.loads(response.content)
        for value in page["values"]:
            seen += 1
            if len(chosen) < count:
                chosen.append(value)
            else:
                slot = rng.randrange(seen)
                if slot < count:
                    chosen[slot] = value
        if not page["hasMore"]:
            return chosen, seen
        body = {**body, "snapshot": page["snapshot"], "cursor": page["cursor"]}


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
        delete_share: share of the changed documents that are deleted.
        transaction_size: writes per transaction.
        seed: seeds the sample and the update/delete split.

    Raises:
        httpx.HTTPStatusError: the devserver refused a request.
    """
    started = time.perf_counter()
    rng = random.Random(seed)
    count = max(1, round(expected_documents * fraction))
    headers = {"Authorization": f"Convex {key}", "Convex-Client": "convex-cdc-bench-0.1.0"}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        chosen, seen = _sample(client, count, rng)
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
    )
