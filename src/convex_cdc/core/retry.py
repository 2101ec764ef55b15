"""Retrying transient failures: which ones, how long, and how the budget ends.

Only failures that say nothing about the request itself are retried: no usable response
(connection refused or reset, timeouts, a body cut off mid-way) and HTTP 408, 429 and
5xx. Everything else is final on the first answer. Retries back off exponentially with
jitter, honour ``Retry-After`` when the server sends one, and stop at whichever comes
first of ``max_attempts`` and ``max_seconds``; then :class:`SourceUnavailable` says what
went wrong last.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import NoReturn, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type

from convex_cdc.core.errors import SourceUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before a transient failure becomes :class:`SourceUnavailable`."""

    max_attempts: int = 8
    """Attempts in total, the first one included."""
    max_seconds: float = 300.0
    """No attempt starts later than this after the first one."""
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_seconds < 0 or self.initial_backoff_seconds < 0:
            raise ValueError("retry durations cannot be negative")


class TransientFailure(Exception):
    """One attempt failed in a way worth retrying. Internal to the client; never escapes."""

    def __init__(self, problem: str, *, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry_after = retry_after


def is_transient_status(status: int) -> bool:
    """408, 429 and every 5xx: the server may answer differently if asked again."""
    return status in (408, 429) or 500 <= status <= 599


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def call_with_retries(
    attempt: Callable[[], T],
    *,
    policy: RetryPolicy,
    endpoint: str,
    target: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``attempt`` until it returns, raises a non-transient error, or the budget ends.

    Args:
        attempt: one try; raises :class:`TransientFailure` for anything worth retrying.
        policy: the budget.
        endpoint: what is being called, for log lines (``list_snapshot``).
        target: what to name in the final error (``https://x.convex.cloud/api/...``);
            never carries a query string or a secret.
        sleep: injectable for tests.

    Raises:
        SourceUnavailable: the budget ran out; the message names the last problem.
    """

    def backoff(state: RetryCallState) -> float:
        # Exponential growth plus up to one initial step of jitter, so that clients
        # that failed together do not retry together.
        exponential = policy.initial_backoff_seconds * 2.0 ** (state.attempt_number - 1)
        jitter = random.uniform(0, policy.initial_backoff_seconds)
        return min(exponential + jitter, policy.max_backoff_seconds)

    def remaining(state: RetryCallState) -> float:
        return policy.max_seconds - (state.seconds_since_start or 0.0)

    def wait(state: RetryCallState) -> float:
        failure = _failure(state)
        if failure is not None and failure.retry_after is not None:
            return failure.retry_after  # the server said when; sooner is pointless
        return max(0.0, min(backoff(state), remaining(state)))

    def stop(state: RetryCallState) -> bool:
        return (
            state.attempt_number >= policy.max_attempts
            or state.upcoming_sleep > remaining(state)
            or remaining(state) <= 0
        )

    def before_sleep(state: RetryCallState) -> None:
        failure = _failure(state)
        log.warning(
            "%s: %s (attempt %d of %d), retrying in %.1f s",
            endpoint,
            failure.problem if failure is not None else "failed",
            state.attempt_number,
            policy.max_attempts,
            state.upcoming_sleep,
        )

    def give_up(state: RetryCallState) -> NoReturn:
        failure = _failure(state)
        problem = failure.problem if failure is not None else "failed"
        elapsed = state.seconds_since_start or 0.0
        if (
            failure is not None
            and failure.retry_after is not None
            and state.upcoming_sleep > remaining(state)
        ):
            problem += f" (the server asked to retry after {failure.retry_after:.0f} s)"
        raise SourceUnavailable(
            f"could not reach {target} after {state.attempt_number} attempt"
            f"{'s' if state.attempt_number != 1 else ''} in {elapsed:.1f} s: {problem}",
            hint="check --url/CONVEX_URL and the network; the next run resumes from the "
            "last checkpoint",
        ) from failure

    retrying = Retrying(
        sleep=sleep,
        stop=stop,
        wait=wait,
        retry=retry_if_exception_type(TransientFailure),
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )
    return retrying(attempt)


def _failure(state: RetryCallState) -> TransientFailure | None:
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return None
    exc = outcome.exception()
    return exc if isinstance(exc, TransientFailure) else None
