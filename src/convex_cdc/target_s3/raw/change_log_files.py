"""Which raw change log files are committed, for publishing them.

A raw batch file is immutable once its batch is committed, i.e. once the checkpoint's
``batch_seq`` has reached it; a later batch may still be replayed (rewritten) after a
crash, so it is never published. Files are found through the batch indexes
(:mod:`.batch_index`), which name only complete files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from convex_cdc.core.errors import TargetError
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.raw.change_log import RawChangeLog

_BATCH_FILE: Final = re.compile(r"batch=(\d+)\.parquet")


@dataclass(frozen=True, slots=True)
class RawLogFile:
    """One committed raw change log file."""

    path: str
    """Relative to the destination root, e.g. ``raw_change_log/messages/batch=…parquet``."""
    batch: int
    rows: int


def committed_raw_files(
    layout: DestinationLayout, *, up_to_batch: int, after_batch: int = 0
) -> list[RawLogFile]:
    """The files of the completed batches ``after_batch < seq <= up_to_batch``, in order.

    Raises:
        TargetError: an index names a file that does not exist.
        StateError: an index cannot be parsed.
    """
    files: list[RawLogFile] = []
    for index in RawChangeLog(layout).committed_batches(after_batch, up_to_batch):
        for entry in sorted(index.tables, key=lambda e: e.dir):
            path = f"{layout.raw_change_log.name}/{entry.dir}/{entry.file}"
            if not (layout.root / path).is_file():
                raise TargetError(
                    f"raw batch {index.seq} lists {path}, which does not exist",
                    hint="restore raw_change_log from a backup, or publish without the raw "
                    "change log",
                )
            files.append(RawLogFile(path, index.seq, entry.rows))
    return files


def batch_of(path: str) -> int | None:
    """The batch sequence in a raw file path (``…/batch=<seq>.parquet``), if it is one."""
    match = _BATCH_FILE.fullmatch(path.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None
