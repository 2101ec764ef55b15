"""One process per role and destination: ``<dest>/.locks/<role>.lock`` held with flock.

``flock`` locks vanish with the process that holds them, so a crash never leaves a stale
lock behind and the lock files themselves can stay on disk forever. The holder writes its
pid into the file so that the refusal can say who holds it.

Roles: ``sync`` (writes the raw change log and the checkpoint), ``staging`` (the
materializer), ``publish``. Different roles may run side by side.
"""

from __future__ import annotations

import fcntl
import os
from types import TracebackType
from typing import Literal

from convex_cdc.core.errors import DestinationBusy
from convex_cdc.target_s3.io_errors import io_errors
from convex_cdc.target_s3.layout import DestinationLayout

LockRole = Literal["sync", "staging", "publish"]


class DestinationLock:
    """Exclusive, non-blocking lock of one role on one destination (a context manager).

    Locks belong to an open file, so even the same process cannot take the same role
    twice at once.

    Args:
        layout: the destination whose ``.locks/<role>.lock`` is taken.
        role: which lock.
    """

    def __init__(self, layout: DestinationLayout, role: LockRole) -> None:
        self.dest = layout.root
        self.role = role
        self.path = layout.locks / f"{role}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            DestinationBusy: another process (or another lock object) holds it.
            TargetError: the lock file cannot be created (permissions, a read-only or full
                disk, a file where the destination directory should be).
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.role} lock on {self.dest} is already held by this object")
        with io_errors(f"take the {self.role} lock {self.path}", then="run the command again"):
            self._fd = self._take()

    def _take(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder is not None else "pid unknown"
            raise DestinationBusy(
                f"another convex-cdc {self.role} is running on {self.dest} ({who})",
                hint="wait for it to finish or stop it; two at once would corrupt the destination",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)  # closing the descriptor also drops the lock
            raise
        return fd

    def release(self) -> None:
        """Give the lock up (a no-op if it is not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> DestinationLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
