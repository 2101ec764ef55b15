"""Partial files a killed publish left in a local target directory.

obstore's local store writes each object to ``<name>#<n>`` and renames it into place, so
a publish killed mid-write leaves ``part-….parquet#1`` (or ``….json#1``) behind. Its
listings skip such names (they are not valid object paths), so garbage collection never
sees them: they are found by walking the directory instead.

Only that exact pattern is touched, and only once older than a grace period. A publish
holds its destination's publish lock and a prefix has one owning destination
(:mod:`.ownership`), so no other publish writes there at the same time; the grace still
spares a copy of the same destination publishing from elsewhere.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Final

_PARTIAL: Final = re.compile(r".+\.(?:parquet|json)#\d+")
"""``<object name>#<counter>``: how obstore's local store names a write in progress."""


def is_partial_upload(name: str) -> bool:
    """Whether ``name`` is an unfinished local write of a file publish uploads."""
    return _PARTIAL.fullmatch(name) is not None


def sweep_partial_uploads(directory: Path, *, older_than: timedelta) -> list[str]:
    """Delete the partial uploads under ``directory`` older than ``older_than``.

    Returns:
        The deleted files, relative to ``directory`` and ``/``-separated.

    Raises:
        OSError: the directory cannot be walked or a file cannot be deleted.
    """
    cutoff = time.time() - older_than.total_seconds()
    removed = []
    for parent, _, names in os.walk(directory):
        for name in names:
            if not is_partial_upload(name):
                continue
            path = Path(parent) / name
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue  # a concurrent sweep or the writer's own clean-up was first
            removed.append(path.relative_to(directory).as_posix())
    return removed
