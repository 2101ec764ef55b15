"""The devserver's own endpoints under ``/_devserver`` (not part of Convex's API).

* ``POST /_devserver/transaction`` — ``{"writes": [...]}`` applied as one transaction; field
  values in export_json encoding. → ``{"ts", "ids"}``. Bad input → 400, nothing applied.
* ``POST /_devserver/drop_table`` — ``{"component"?, "table"}``: drop a user table and its
  documents (no tombstones anywhere). → ``{"ts"}``. Unknown table → 400 ``TableNotFound``.
* ``POST /_devserver/replace_table`` — ``{"component"?, "table", "documents": [fields...]}``:
  an import with ``--replace`` (the table's documents swapped for new ones in a new tablet;
  the legacy log shows the new documents as inserts and nothing for the old ones).
  → ``{"ts", "ids"}``.
* ``GET /_devserver/truth[?ts=N]`` — one JSON line per live exported document at ``ts``
  (default: now): ``{"component","table","_id","_ts","_creationTime","fields"}``.
* ``POST /_devserver/workload?transactions=K`` — K more workload transactions.
* ``GET|POST /_devserver/settings`` — read or change runtime knobs.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import orjson

from convex_cdc.devserver.api_errors import ApiError
from convex_cdc.devserver.settings import SettingsBox
from convex_cdc.devserver.store import DocumentStore
from convex_cdc.devserver.value_encoding import InvalidExportValue, from_export_tree
from convex_cdc.devserver.writes import CommitResult, Delete, Insert, Replace, Write


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadDevserverRequest", message)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(body: bytes) -> Any:
    # The stdlib parser keeps integers of any size exact, so an out-of-range Int64 is
    # reported instead of silently becoming a float.
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"body is not JSON: {exc}") from None


def _string(write: dict[str, Any], key: str, default: str | None = None) -> str:
    value = write.get(key, default)
    if not isinstance(value, str):
        raise _bad(f"field {key!r} must be a string")
    return value


def _fields(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad("fields must be an object")
    try:
        return {key: from_export_tree(value, 1) for key, value in raw.items()}
    except InvalidExportValue as exc:
        raise _bad(f"invalid field value: {exc}") from None


def parse_writes(body: bytes) -> list[Write]:
    """The writes of a transaction request.

    Raises:
        ApiError: 400 for anything malformed.
    """
    parsed = _parse_json(body)
    if not isinstance(parsed, dict) or not isinstance(parsed.get("writes"), list):
        raise _bad('expected {"writes": [...]}')
    writes: list[Write] = []
    for raw in parsed["writes"]:
        if not isinstance(raw, dict):
            raise _bad("each write is an object")
        op = raw.get("op")
        table = _string(raw, "table")
        component = _string(raw, "component", "")
        if op == "delete":
            writes.append(Delete(table, _string(raw, "id"), component))
            continue
        if op not in ("insert", "replace"):
            raise _bad(f"unknown op {op!r}: expected insert, replace or delete")
        decoded = _fields(raw.get("fields"))
        if op == "insert":
            writes.append(Insert(table, decoded, component))
        else:
            writes.append(Replace(table, _string(raw, "id"), decoded, component))
    return writes


def transaction(store: DocumentStore, body: bytes) -> bytes:
    """Apply one transaction from the write API."""
    writes = parse_writes(body)
    try:
        result = store.commit(writes)
    except KeyError as exc:
        raise ApiError(400, "DocumentNotFound", str(exc.args[0] if exc.args else exc)) from None
    except ValueError as exc:
        raise ApiError(400, "InvalidWrite", str(exc)) from None
    return orjson.dumps({"ts": result.ts, "ids": result.ids})


def _table_request(body: bytes) -> tuple[dict[str, Any], str, str]:
    parsed = _parse_json(body)
    if not isinstance(parsed, dict):
        raise _bad('expected {"component": ..., "table": ...}')
    return parsed, _string(parsed, "component", ""), _string(parsed, "table")


def drop_table(store: DocumentStore, body: bytes, runner: WorkloadRunner) -> bytes:
    """Drop a user table (``{"component"?, "table"}``) → ``{"ts"}``."""
    _, component, table = _table_request(body)
    try:
        ts = store.drop_table(component, table)
        runner.forget(component, table)
    except KeyError as exc:
        raise ApiError(400, "TableNotFound", str(exc.args[0] if exc.args else exc)) from None
    except ValueError as exc:
        raise ApiError(400, "InvalidWrite", str(exc)) from None
    return orjson.dumps({"ts": ts})


def replace_table(store: DocumentStore, body: bytes, runner: WorkloadRunner) -> bytes:
    """Replace a table's documents, as an import (``{"component"?, "table", "documents"}``)
    → ``{"ts", "ids"}``."""
    parsed, component, table = _table_request(body)
    documents = parsed.get("documents")
    if not isinstance(documents, list):
        raise _bad("documents must be a list of field objects")
    decoded = [_fields(document) for document in documents]
    try:
        result = store.replace_table(component, table, decoded)
        runner.forget(component, table)
    except ValueError as exc:
        raise ApiError(400, "InvalidWrite", str(exc)) from None
    return orjson.dumps({"ts": result.ts, "ids": result.ids})


def truth(store: DocumentStore, ts: int | None) -> bytes:
    """The live exported documents at ``ts`` as JSON lines (export_json field values)."""
    lines = []
    for revision in store.live_documents(ts):
        assert revision.export is not None
        fields = orjson.loads(b"{" + revision.export + b"}")
        creation_time = fields.pop("_creationTime")
        del fields["_id"]
        table = revision.table
        lines.append(
            orjson.dumps(
                {
                    "component": table.component,
                    "table": table.name,
                    "_id": revision.id,
                    "_ts": revision.ts,
                    "_creationTime": creation_time,
                    "fields": fields,
                },
                option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE,
            )
        )
    return b"".join(lines)


class WorkloadUnavailable(RuntimeError):
    """``convex_cdc.devserver.workload`` is not importable."""


class WorkloadRunner:
    """One :class:`~convex_cdc.devserver.workload.Workload` per server, created lazily."""

    def __init__(self, store: DocumentStore, seed: int) -> None:
        self._store = store
        self._seed = seed
        self._lock = threading.Lock()
        self._workload: Any = None

    def _get(self) -> Any:
        if self._workload is None:
            try:
                from convex_cdc.devserver.workload import Workload
            except ImportError as exc:
                raise WorkloadUnavailable(f"the workload generator is unavailable: {exc}") from exc
            # The store gives documents back, so the workload keeps only their ids.
            self._workload = Workload(self._store, seed=self._seed, reader=self._store)
        return self._workload

    def populate(self, documents: int) -> None:
        """Create the initial dataset (``--seed demo``)."""
        with self._lock:
            self._get().populate(documents)

    def forget(self, component: str, table: str) -> None:
        """A table was dropped or replaced: the workload no longer knows its documents."""
        with self._lock:
            if self._workload is not None:
                self._workload.forget(component, table)

    def step(self, transactions: int) -> CommitResult | None:
        """Apply ``transactions`` more workload transactions."""
        with self._lock:
            result: CommitResult | None = self._get().step(transactions)
            return result


def workload(runner: WorkloadRunner, store: DocumentStore, transactions: int) -> bytes:
    """Run the workload generator for ``transactions`` transactions."""
    if transactions < 0:
        raise _bad("transactions cannot be negative")
    try:
        result = runner.step(transactions)
    except WorkloadUnavailable as exc:
        raise ApiError(501, "NotImplemented", str(exc)) from None
    ts = result.ts if result is not None else store.latest_ts
    return orjson.dumps({"ts": ts, "transactions": transactions})


def settings(box: SettingsBox, body: bytes | None) -> bytes:
    """Read (``body is None``) or change the runtime settings; echoes them."""
    if body is not None:
        changes = _parse_json(body)
        if not isinstance(changes, dict):
            raise _bad("settings are a JSON object")
        try:
            box.update(changes)
        except ValueError as exc:
            raise _bad(str(exc)) from None
    return orjson.dumps(box.current.to_json())
