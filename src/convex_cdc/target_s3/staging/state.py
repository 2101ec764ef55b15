"""Staging state: what the staging tables hold and up to which raw batch.

Stored as ``staging/_state.json`` (see :mod:`.layout`), replaced atomically after the
files it lists are durable, so it never names a file that does not exist. Publish and
verify read staging only through this state.

Version 2 lays tables out in creation-time segments (:mod:`.segments`). A version 1
state (hash buckets of ``_id``, the layout before segments) is still read, so
publish and verify keep working on it, but its ``layout`` says so and the next
materialize rebuilds staging from the raw change log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from convex_cdc.core.columns import ColumnSpec, Widening
from convex_cdc.core.errors import StateError
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.atomic_file import atomic_write_bytes

STATE_FORMAT: Final = "convex-cdc.staging-state"
STATE_VERSION: Final = 2
SEGMENT_LAYOUT: Final = "creation-time-segments"
"""The layout of a version 2 state: :mod:`.segments`."""
ID_BUCKET_LAYOUT: Final = "id-hash-buckets"
"""The layout of a version 1 state: rows in ``crc32(_id)`` buckets (rebuilt on materialize)."""


@dataclass(frozen=True, slots=True)
class StagingFile:
    """One immutable, content-named parquet file of a staging table."""

    path: str
    """Relative to the destination root, e.g. ``staging/messages/part-0003-<hash>.parquet``."""
    rows: int
    bytes: int
    sha256: str
    first_creation_time: float | None = None
    """The lowest ``_creationTime`` in the file: where its segment begins (``None``: null,
    or a version 1 state, which has no segments)."""


@dataclass(frozen=True, slots=True)
class StagingTable:
    """Current state of one Convex table in staging."""

    key: TableKey
    dir: str
    row_count: int
    last_batch: int
    columns: tuple[ColumnSpec, ...]
    files: tuple[StagingFile, ...]
    """In creation-time order (segment order)."""
    schema_fingerprint: str | None = None
    widenings: tuple[Widening, ...] = ()


@dataclass(frozen=True, slots=True)
class StagingState:
    """Everything staging holds, and the raw batch / Convex timestamp it reflects."""

    deployment_url: str
    last_applied_batch: int
    snapshot_ts: int | None
    """The snapshot walk the staging was built from (a new one means truncate-and-reload)."""
    consistent_as_of_ts: int | None
    """Convex timestamp at which every table equals the source; ``None`` mid-snapshot."""
    updated_at: str
    tables: tuple[StagingTable, ...] = field(default_factory=tuple)
    layout: str = SEGMENT_LAYOUT
    """How the files are cut (:data:`SEGMENT_LAYOUT`; :data:`ID_BUCKET_LAYOUT` for a state
    written before segments, which materialize rebuilds)."""

    def table(self, key: TableKey) -> StagingTable | None:
        """The state of one table, if staging has it."""
        return next((t for t in self.tables if t.key == key), None)


def state_to_json(state: StagingState) -> dict[str, Any]:
    """The state as a JSON-ready dict."""
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "layout": state.layout,
        "source": {"deployment_url": state.deployment_url},
        "last_applied_batch": state.last_applied_batch,
        "snapshot_ts": state.snapshot_ts,
        "consistent_as_of_ts": state.consistent_as_of_ts,
        "updated_at": state.updated_at,
        "tables": [
            {
                "component": t.key.component,
                "table": t.key.table,
                "dir": t.dir,
                "row_count": t.row_count,
                "last_batch": t.last_batch,
                "schema_fingerprint": t.schema_fingerprint,
                "columns": [c.to_json() for c in t.columns],
                "files": [
                    {
                        "path": f.path,
                        "rows": f.rows,
                        "bytes": f.bytes,
                        "sha256": f.sha256,
                        "first_creation_time": f.first_creation_time,
                    }
                    for f in t.files
                ],
                "widenings": [w.to_json() for w in t.widenings],
            }
            for t in sorted(state.tables, key=lambda t: t.key)
        ],
    }


def state_from_json(data: Any, *, where: str) -> StagingState:
    """Decode a staging state strictly.

    Raises:
        StateError: the file is not a staging state this version understands.
    """
    try:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}")
        version = data["version"]
        if version not in (1, STATE_VERSION):
            raise ValueError(f"unsupported version {version!r}")
        layout = ID_BUCKET_LAYOUT if version == 1 else data["layout"]
        if layout not in (ID_BUCKET_LAYOUT, SEGMENT_LAYOUT):
            raise ValueError(f"unknown layout {layout!r}")
        tables = tuple(
            StagingTable(
                key=TableKey(t["component"], t["table"]),
                dir=t["dir"],
                row_count=int(t["row_count"]),
                last_batch=int(t["last_batch"]),
                schema_fingerprint=t.get("schema_fingerprint"),
                columns=tuple(
                    ColumnSpec(c["name"], ColumnType(c["type"]), bool(c["nullable"]))
                    for c in t["columns"]
                ),
                files=tuple(
                    StagingFile(
                        path=f["path"],
                        rows=int(f["rows"]),
                        bytes=int(f["bytes"]),
                        sha256=f["sha256"],
                        first_creation_time=_optional_float(f.get("first_creation_time")),
                    )
                    for f in t["files"]
                ),
                widenings=tuple(
                    Widening(
                        w["column"], ColumnType(w["from"]), ColumnType(w["to"]), int(w["batch"])
                    )
                    for w in t.get("widenings", [])
                ),
            )
            for t in data["tables"]
        )
        return StagingState(
            deployment_url=data["source"]["deployment_url"],
            last_applied_batch=int(data["last_applied_batch"]),
            snapshot_ts=data["snapshot_ts"],
            consistent_as_of_ts=data["consistent_as_of_ts"],
            updated_at=data["updated_at"],
            tables=tables,
            layout=layout,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise StateError(
            f"{where} is not a usable staging state: {exc}",
            hint="delete the staging/ directory and run `convex-cdc materialize` to rebuild "
            "it from the raw change log",
        ) from None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def load_staging_state(path: Path) -> StagingState | None:
    """Read the state file; ``None`` if staging was never built."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        raise StateError(
            f"{path} is corrupt (not JSON)",
            hint="delete the staging/ directory and run `convex-cdc materialize` to rebuild it",
        ) from None
    return state_from_json(data, where=str(path))


def save_staging_state(path: Path, state: StagingState) -> None:
    """Replace the state file atomically and durably."""
    payload = json.dumps(state_to_json(state), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(path, payload.encode())
