"""How close a destination's cursor is to falling out of the deployment's retention.

Convex keeps document history for a limited time (``DOCUMENT_RETENTION_DELAY``): 14 days
on Convex Cloud, 2 days on a default self-hosted backend. A cursor older than that is
refused (exit 5) and only ``sync --resnapshot`` goes on. The cursor's age is measured from
the Convex timestamp it stands at, which every sync moves on, even over empty pages; a
destination that is not synced ages until the window closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, assert_never
from urllib.parse import urlsplit

from convex_cdc.core.checkpoint import Checkpoint, DataSync, DeltaTail, InitialSnapshot

CLOUD_RETENTION_DAYS: Final = 14.0
"""Convex Cloud's document retention."""
SELF_HOSTED_RETENTION_DAYS: Final = 2.0
"""A self-hosted backend's default (``DOCUMENT_RETENTION_DELAY=172800``)."""
WARN_AT: Final = 0.5
"""Share of the window a cursor may use before ``status`` warns."""
ERROR_AT: Final = 0.9
"""Share of the window after which ``status`` says so as an error."""

_CLOUD_HOST_SUFFIX: Final = ".convex.cloud"
_SECONDS_PER_DAY: Final = 86_400
_NS_PER_SECOND: Final = 1_000_000_000

RetentionLevel = Literal["ok", "warning", "error"]


@dataclass(frozen=True, slots=True)
class RetentionCheck:
    """Where a cursor stands in the retention window, and what to tell the user."""

    retention_days: float
    cursor_ts: int
    """The Convex timestamp (ns) the cursor stands at."""
    cursor_age_seconds: float
    retention_left_seconds: float
    """Negative once the cursor is outside the window."""
    level: RetentionLevel
    message: str | None
    """``None`` when the level is ``ok``."""


def default_retention_days(deployment_url: str) -> float:
    """14 days for a ``*.convex.cloud`` deployment, the self-hosted 2 days otherwise (a
    Cloud deployment behind a custom domain is taken as self-hosted: it warns early)."""
    host = (urlsplit(deployment_url).hostname or "").lower()
    return CLOUD_RETENTION_DAYS if host.endswith(_CLOUD_HOST_SUFFIX) else SELF_HOSTED_RETENTION_DAYS


def cursor_ts(checkpoint: Checkpoint) -> int | None:
    """The Convex timestamp (ns) the checkpoint's cursor stands at, if known.

    A snapshot walk is pinned at its snapshot timestamp, a delta cursor is a timestamp,
    and a data sync is consistent at its cursor's timestamp; a data sync still
    snapshotting does not say (``None``).
    """
    position = checkpoint.position
    match position:
        case InitialSnapshot(snapshot=snapshot):
            return int(snapshot)
        case DeltaTail(cursor=cursor):
            return int(cursor)
        case DataSync(snapshot_ts=snapshot_ts):
            return snapshot_ts
        case _:
            assert_never(position)


def check_retention(*, cursor_at: int, now: int, retention_days: float) -> RetentionCheck:
    """Compare a cursor at ``cursor_at`` with the window at ``now`` (both Convex ns)."""
    window = retention_days * _SECONDS_PER_DAY
    age = max(now - cursor_at, 0) / _NS_PER_SECOND
    left = window - age
    days = f"{retention_days:g}-day"
    level: RetentionLevel = "ok"
    message = None
    if age >= window:
        level = "error"
        message = (
            f"the cursor is {describe_duration(age)} old, past this deployment's {days} "
            "retention: the next sync fails (exit 5); run sync --resnapshot"
        )
    elif age >= ERROR_AT * window:
        level = "error"
        message = (
            f"the cursor is {describe_duration(age)} old, only {describe_duration(left)} left "
            f"of this deployment's {days} retention: run sync now, and more often"
        )
    elif age >= WARN_AT * window:
        level = "warning"
        message = (
            f"the cursor is {describe_duration(age)} old, {describe_duration(left)} left of "
            f"this deployment's {days} retention: run sync more often"
        )
    return RetentionCheck(retention_days, cursor_at, round(age, 3), round(left, 3), level, message)


def describe_duration(seconds: float) -> str:
    """E.g. ``45 min``, ``26.5 h``, ``3.2 days``."""
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * _SECONDS_PER_DAY:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / _SECONDS_PER_DAY:.1f} days"
