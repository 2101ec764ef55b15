"""Durable file replacement: temp file → fsync → rename → fsync(directory).

A rename alone is atomic but not durable: after a power loss the directory entry may
point at an empty file. Flushing the file and then its directory makes the new content
survive a crash, which is what lets a checkpoint advance safely after a write.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (new names, renames) to disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` with what ``write`` writes to a file object, atomically and durably.

    The temporary file lives next to ``path`` (same filesystem, so the rename is atomic)
    and is removed if ``write`` fails, so a crash or a full disk never leaves a partial
    file under the final name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""

    def write(handle: BinaryIO) -> None:
        handle.write(data)

    atomic_write(path, write)


_TEMP_NAME: Final = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")
"""What :func:`atomic_write` names its temporary files (``tempfile.mkstemp`` with our
prefix and suffix): ``.<final name>.<8 random characters>.tmp``."""


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one :func:`atomic_write` gives a temporary file."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_temp_files(directory: Path) -> int:
    """Delete the temporary files a killed :func:`atomic_write` left in ``directory``.

    Only regular files named as :func:`atomic_write` names them are touched, never
    anything else. Call it only while holding the lock of whoever writes there. Returns
    how many were deleted.
    """
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for entry in entries:
        if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed
