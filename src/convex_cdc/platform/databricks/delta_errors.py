"""Turn delta-rs, pyarrow and OS errors into one-line ``ConvexCdcError`` at this package's edge.

delta-rs reports a damaged log, a failed scan or an unreachable store with its own
exception types (``deltalake.exceptions.DeltaError`` and subclasses, ``OSError`` for object
store I/O, ``pyarrow.ArrowInvalid`` for unreadable data files), whose text carries a
multi-line backtrace. Every public entry point of this package runs its Delta work inside
:func:`delta_errors`, so the CLI prints one line naming what failed and how to fix it; the
original exception stays the ``__cause__`` for ``-vv`` logging.

Which class:

* ``OSError`` (permissions, a full disk, an unreachable or refusing object store) →
  :class:`TargetError`;
* ``CommitFailedError`` (another writer committed first) → :class:`TargetError` naming the
  concurrent writer;
* a Delta error whose text says storage failed (delta-rs reports some of those, such as
  "Could not create local directory", as ``DeltaError``) → :class:`TargetError`;
* any other Delta or Arrow error → :class:`StateError` when the table is convex-cdc's own
  state (the control table, the spec log, silver progress and tombstones, all under
  ``_convex_cdc/``), else :class:`TargetError` (a bronze or silver table).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import pyarrow as pa
from deltalake.exceptions import CommitFailedError, DeltaError

from convex_cdc.core.errors import ConvexCdcError, StateError, TargetError, redact
from convex_cdc.core.secrets import redact_secrets

_LIMIT: Final = 300
_STORAGE_FAILURES: Final = (
    "Object Store error",
    "Generic LocalFileSystem error",
    "Could not create",
    "Permission denied",
    "Not a directory",
    "Is a directory",
    "No space left",
    "Read-only file system",
    "error sending request",
)
"""Texts delta-rs uses when storage (not the table's content) failed."""
_SECRET_VARIABLES: Final = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

IO_HINT: Final = (
    "check that the warehouse location exists and is writable, and for s3:// the AWS "
    "credentials and --endpoint-url, then run the command again"
)
CONFLICT_HINT: Final = (
    "run one convex-cdc process per source of a warehouse (the bundle's job has "
    "max_concurrent_runs: 1), then run the command again"
)
DATA_HINT: Final = (
    "the Delta table is damaged or was not written by convex-cdc: restore it with Delta time "
    "travel (RESTORE TABLE … TO VERSION AS OF …); a silver table can instead be deleted and "
    "rebuilt by `apply-silver`"
)
STATE_HINT: Final = (
    "convex-cdc's own table is damaged: restore it with Delta time travel (RESTORE TABLE … "
    "TO VERSION AS OF …), or extract into a fresh warehouse"
)


def delta_reason(exc: BaseException) -> str:
    """The first line of a delta-rs/pyarrow error, whitespace collapsed, credentials
    removed, cut short (delta-rs appends a backtrace on the following lines)."""
    text = " ".join(str(exc).split("\n", 1)[0].split()) or type(exc).__name__
    text = redact_secrets(redact(text, *(os.environ.get(name) for name in _SECRET_VARIABLES)))
    return text if len(text) <= _LIMIT else text[:_LIMIT] + "…"


@contextmanager
def delta_errors(what: str, *, state: bool = False, hint: str | None = None) -> Iterator[None]:
    """Run the block; a deltalake, pyarrow or OS error raised in it becomes one
    :class:`ConvexCdcError` line, ``cannot <what>: <first line of the cause>``.

    Usable as a decorator too. Errors convex-cdc raises on purpose pass through.

    Args:
        what: what the block does, completing "cannot …", e.g.
            ``"open the Delta table s3://lake/bronze/messages"``.
        state: the table is convex-cdc's own state: a damaged one is a
            :class:`StateError`.
        hint: the fix for a damaged table, instead of the default one.

    Raises:
        TargetError: storage refused or could not be reached, another writer committed
            first, or a bronze/silver table is damaged.
        StateError: one of convex-cdc's own tables is damaged (``state=True``).
    """
    try:
        yield
    except ConvexCdcError:
        raise
    except CommitFailedError as exc:
        raise TargetError(
            f"cannot {what}: another writer committed to the table first ({delta_reason(exc)})",
            hint=CONFLICT_HINT,
        ) from exc
    except OSError as exc:
        reason = exc.strerror or delta_reason(exc)
        if exc.filename:
            reason = f"{reason} ({exc.filename})"
        raise TargetError(f"cannot {what}: {reason}", hint=IO_HINT) from exc
    except (DeltaError, pa.ArrowException) as exc:
        reason = delta_reason(exc)
        if any(marker in reason for marker in _STORAGE_FAILURES):
            raise TargetError(f"cannot {what}: {reason}", hint=IO_HINT) from exc
        kind = StateError if state else TargetError
        default = STATE_HINT if state else DATA_HINT
        raise kind(f"cannot {what}: {reason}", hint=hint or default) from exc
