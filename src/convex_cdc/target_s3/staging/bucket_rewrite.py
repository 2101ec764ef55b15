"""One bucket's rewrite: its listed rows, minus the ids new events won, plus the new rows.

Pure Arrow work (read, filter, concatenate, sort, encode), which releases the GIL, so the
materializer runs several of these in a thread pool while it parses the next bucket's
documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from convex_cdc.core.columns import UserColumns, conform
from convex_cdc.target_s3.staging.buckets import read_bucket_file, sorted_by_id, write_bucket_file
from convex_cdc.target_s3.staging.state import StagingFile


@dataclass(frozen=True, slots=True)
class RewrittenBucket:
    """What :meth:`BucketRewrite.run` wrote."""

    file: StagingFile | None
    """``None``: the bucket is empty now."""
    deleted: int
    """Rows of the old file that a winning delete removed."""


@dataclass(frozen=True, slots=True)
class BucketRewrite:
    """One bucket's new file: its listed rows, minus the ids new events won, plus the new
    rows, all brought to ``columns`` and sorted by ``_id``. Arrow work only (no GIL)."""

    root: Path
    table_dir: Path
    bucket: int
    old_file: StagingFile | None
    old_schema: pa.Schema
    old_columns: UserColumns
    columns: UserColumns
    won: pa.Table | None = None
    """``_id`` and ``_deleted`` of the new events that won."""
    new_rows: pa.Table | None = None
    """Typed rows of the winning upserts."""
    typed_with: UserColumns | None = None
    """The columns ``new_rows`` have (``columns`` unless a later bucket changed them)."""

    def run(self) -> RewrittenBucket:
        """Write the bucket's new file."""
        parts: list[pa.Table] = []
        deleted = 0
        if self.old_file is not None:
            rows = read_bucket_file(self.root, self.old_file, schema=self.old_schema)
            rows = conform(rows, self.old_columns, self.columns)
            if self.won is not None:
                ids = rows.column("_id")
                gone = pc.is_in(ids, value_set=self.won.column("_id").combine_chunks())
                won_deletes = self.won.filter(self.won.column("_deleted")).column("_id")
                if len(won_deletes):
                    deleted = _count(pc.is_in(ids.filter(gone), won_deletes.combine_chunks()))
                rows = rows.filter(pc.invert(gone))
            parts.append(rows)
        if self.new_rows is not None:
            typed_with = self.columns if self.typed_with is None else self.typed_with
            new_rows = self.new_rows
            if typed_with != self.columns:
                new_rows = conform(new_rows, typed_with, self.columns)
            parts.append(new_rows)
        parts = [part for part in parts if part.num_rows]
        if not parts:
            return RewrittenBucket(None, deleted)
        # Each part is sorted by _id already (files are; new rows come in _id order).
        rows = parts[0] if len(parts) == 1 else sorted_by_id(pa.concat_tables(parts))
        return RewrittenBucket(
            write_bucket_file(self.root, self.table_dir, self.bucket, rows), deleted
        )


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)
