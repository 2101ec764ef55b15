"""Turn the OS and pyarrow errors of local destination I/O into one-line ``TargetError``.

Each public entry point of this package (a sink, the materializer, publish, verify, the
readers) runs its work inside :func:`io_errors`, so a full disk, a read-only mount or a
file where a directory belongs never reaches the user as a traceback. Errors convex-cdc
raises on purpose pass through untouched; the original exception stays the ``__cause__``
for ``-vv`` logging.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import pyarrow as pa

from convex_cdc.core.errors import ConvexCdcError, TargetError

_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
_REFUSED: Final = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_LIMIT: Final = 300


def describe_os_error(exc: OSError) -> str:
    """``strerror (path)`` on one line, e.g. ``Permission denied (/lake/staging)``."""
    reason = exc.strerror or one_line(exc)
    return f"{reason} ({exc.filename})" if exc.filename else reason


def os_error_hint(exc: OSError, *, then: str) -> str:
    """The fix for ``exc``, ending with what to run afterwards (``then``)."""
    where = exc.filename or "the destination"
    if exc.errno in _FULL:
        return f"free disk space, then {then}"
    if exc.errno in _REFUSED:
        return f"make {where} writable by this user (or mount it read-write), then {then}"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and exc.filename:
        blocker = _file_in_the_way(Path(os.fsdecode(exc.filename)))
        if blocker is not None:
            return (
                f"{blocker} is a file where convex-cdc needs a directory: move it away, then {then}"
            )
    if exc.errno == errno.EISDIR:
        return f"{where} is a directory where convex-cdc needs a file: move it away, then {then}"
    return f"check the destination's disk and permissions, then {then}"


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing entry at or above ``path`` if it is not a directory."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s text, whitespace collapsed and cut short."""
    text = " ".join(str(exc).split("\n", 1)[0].split()) or type(exc).__name__
    return text if len(text) <= _LIMIT else text[:_LIMIT] + "…"


@contextmanager
def io_errors(what: str, *, then: str) -> Iterator[None]:
    """Run the block; an ``OSError`` or pyarrow error raised in it becomes a ``TargetError``.

    Usable as a decorator too. Nothing is retried or cleaned up here: callers already
    write atomically, so the destination is as it was before the failed step.

    Args:
        what: what the block does, completing "cannot …", e.g. ``"materialize /lake"``.
        then: what to run once the cause is fixed, e.g. ``"run materialize again"``.

    Raises:
        TargetError: the block raised an ``OSError`` (disk full, permissions, a read-only
            file system, a file where a directory belongs) or a pyarrow error.
    """
    try:
        yield
    except ConvexCdcError:
        raise
    except OSError as exc:
        raise TargetError(
            f"cannot {what}: {describe_os_error(exc)}", hint=os_error_hint(exc, then=then)
        ) from exc
    except pa.ArrowException as exc:
        raise TargetError(
            f"cannot {what}: {one_line(exc)}",
            hint=f"check that the destination's files were written by convex-cdc, then {then}",
        ) from exc


def shorten(text: str, limit: int = _LIMIT) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` characters with ``…``.

    For values a message quotes that someone else supplied (a server, a stored file, a
    flag): an error line stays readable however long the value is.
    """
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"
