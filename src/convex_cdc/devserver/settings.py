"""The devserver's knobs, changeable at runtime through ``POST /_devserver/settings``.

Defaults are the open-source server's: 1024 documents per list_snapshot page, 128 log rows
per document_deltas page, 14 days of document retention, snapshots usable for 5 days, and
Data Sync pages of 16384 entries, 64 MiB of documents and 32768 log rows read, walking tables
by id only while the sync's timestamp is within 30 s of the latest.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DAY_SECONDS = 86_400.0
MIB = 1 << 20
FAULT_KINDS = ("500", "503", "429", "drop", "stall")


@dataclass
class DevServerSettings:
    """Every runtime knob. Read them through a :class:`SettingsBox` from request threads."""

    snapshot_page_size: int = 1024
    deltas_row_limit: int = 128
    retention_seconds: float = 14 * DAY_SECONDS
    snapshot_max_age_seconds: float = 5 * DAY_SECONDS
    fail_rate: float = 0.0
    stall_seconds: float = 2.0
    streaming_export_enabled: bool = True
    fault_kinds: tuple[str, ...] = field(default=FAULT_KINDS)
    data_sync_enabled: bool = True
    """False: the Data Sync routes answer 404, as on a deployment without them."""
    data_sync_page_size: int = 16384
    data_sync_page_bytes: int = 64 * MIB
    data_sync_rows_read_limit: int = 32768
    data_sync_by_id_freshness_seconds: float = 30.0

    def validate(self) -> DevServerSettings:
        """Check ranges; returns ``self``.

        Raises:
            ValueError: a knob is out of range.
        """
        if self.snapshot_page_size < 1 or self.deltas_row_limit < 1:
            raise ValueError("page sizes must be at least 1")
        if min(self.data_sync_page_size, self.data_sync_page_bytes) < 1:
            raise ValueError("data sync page limits must be at least 1")
        # A by-id page reads up to a page of rows, so the row budget must cover it.
        if self.data_sync_rows_read_limit < self.data_sync_page_size:
            raise ValueError("data_sync_rows_read_limit cannot be below data_sync_page_size")
        # With no freshness window a sync could never walk a table by id.
        if self.data_sync_by_id_freshness_seconds <= 0:
            raise ValueError("data_sync_by_id_freshness_seconds must be positive")
        if self.retention_seconds < 0 or self.snapshot_max_age_seconds < 0:
            raise ValueError("retention windows cannot be negative")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError("fail_rate is a probability between 0 and 1")
        if self.stall_seconds < 0:
            raise ValueError("stall_seconds cannot be negative")
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown or not self.fault_kinds:
            raise ValueError(f"fault_kinds must be a non-empty subset of {list(FAULT_KINDS)}")
        return self

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON object."""
        out = asdict(self)
        out["fault_kinds"] = list(self.fault_kinds)
        return out


_TYPES: dict[str, tuple[type, ...]] = {
    "snapshot_page_size": (int,),
    "deltas_row_limit": (int,),
    "retention_seconds": (int, float),
    "snapshot_max_age_seconds": (int, float),
    "fail_rate": (int, float),
    "stall_seconds": (int, float),
    "streaming_export_enabled": (bool,),
    "fault_kinds": (list, tuple),
    "data_sync_enabled": (bool,),
    "data_sync_page_size": (int,),
    "data_sync_page_bytes": (int,),
    "data_sync_rows_read_limit": (int,),
    "data_sync_by_id_freshness_seconds": (int, float),
}


def _coerce(name: str, value: Any) -> Any:
    expected: tuple[type, ...] = _TYPES[name]
    if isinstance(value, bool) and bool not in expected:
        raise ValueError(f"{name} must be a number")
    if not any(isinstance(value, kind) for kind in expected):
        raise ValueError(f"{name} has the wrong type")
    if name == "fault_kinds":
        if not all(isinstance(kind, str) for kind in value):
            raise ValueError("fault_kinds is a list of strings")
        return tuple(value)
    if float in expected:
        return float(value)
    return value


class SettingsBox:
    """Thread-safe holder: readers take an immutable copy, writers replace it whole."""

    def __init__(self, settings: DevServerSettings) -> None:
        self._lock = threading.Lock()
        self._current = settings.validate()

    @property
    def current(self) -> DevServerSettings:
        """The settings in force (do not mutate)."""
        return self._current

    def update(self, changes: Mapping[str, Any]) -> DevServerSettings:
        """Apply ``changes`` atomically (all or nothing).

        Raises:
            ValueError: an unknown knob, a wrong type or an out-of-range value.
        """
        names = {knob.name for knob in fields(DevServerSettings)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        coerced = {name: _coerce(name, value) for name, value in changes.items()}
        with self._lock:
            updated = DevServerSettings(**{**asdict(self._current), **coerced}).validate()
            self._current = updated
            return updated
