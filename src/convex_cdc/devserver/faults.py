"""Fault injection for ``/api/*`` requests: errors, throttling, dropped bodies and stalls.

Each export request independently draws a fault with probability ``fail_rate``; the kind is
chosen uniformly from ``fault_kinds``. Faults never change data: errors answer before any
work, a dropped connection sends the real response's headers (full ``Content-Length``) and
part of its body, then closes the socket, and a stall sleeps before answering normally.
The draws come from one seeded RNG, so a given seed and request sequence repeat exactly.
"""

from __future__ import annotations

import random
import threading
from enum import Enum

from convex_cdc.devserver.api_errors import ApiError, internal_server_error


class Fault(Enum):
    """What to do to one request."""

    INTERNAL_ERROR = "500"
    UNAVAILABLE = "503"
    RATE_LIMITED = "429"
    DROP = "drop"
    STALL = "stall"


class FaultInjector:
    """Seeded, thread-safe fault draws."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def draw(self, rate: float, kinds: tuple[str, ...]) -> Fault | None:
        """A fault for one request, or ``None`` (always ``None`` when ``rate`` is 0)."""
        if rate <= 0.0:
            return None
        with self._lock:
            if self._rng.random() >= rate:
                return None
            return Fault(self._rng.choice(kinds))


def fault_error(fault: Fault) -> ApiError | None:
    """The error answer of a fault that replaces the response, if it is one."""
    if fault is Fault.INTERNAL_ERROR:
        return internal_server_error()
    if fault is Fault.UNAVAILABLE:
        return ApiError(503, "ServiceUnavailable", "The service is temporarily unavailable.")
    if fault is Fault.RATE_LIMITED:
        return ApiError(429, "RateLimited", "Too many requests. Slow down and retry later.")
    return None
