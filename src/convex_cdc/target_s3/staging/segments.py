"""Creation-time segments of a staging table and their immutable, content-named files.

A table's rows are kept in ``_creationTime`` order, cut into segments of about
:data:`ROWS_PER_SEGMENT` rows; each segment is one parquet file
``staging/<table-dir>/part-<n:04d>-<sha256[:16]>.parquet``, sorted by
``(_creationTime, _id)``. Segments cover disjoint, consecutive ranges of creation time:
segment *i* holds the rows with ``first[i] <= _creationTime < first[i+1]`` (the first
segment also every lower or null creation time, the last every higher one), where
``first`` is each file's lowest creation time, recorded in the staging state.

Why creation time: it never changes for a document, so every version of a document lives
in the same segment, and applications update recent documents far more often than old
ones (chats, tasks, events): most changes land in the newest segments and the old ones
stay untouched. Hash buckets of ``_id`` spread every change over every file, because
Convex ids are random. New documents (the newest creation times) land in the last
segment, which grows and is split in two once it holds :data:`SPLIT_FACTOR` times the
target.

Files are named by their content, so the same rows always give the same name (writing is
deterministic: one chunk per column, fixed writer options), a rewrite never replaces a
file in place, and a publish uploads only files it has not seen. The ``<n>`` in the name
is the segment's position when the file was written; only the hash makes a name unique.

Writer options favour rewrite speed, since a change rewrites whole segments: zstd at level
1, dictionary encoding only for user columns (``_id``, ``_creationTime`` and ``_ts`` are
nearly unique, so a dictionary is wasted work) and statistics only for the system columns
(min/max ``_creationTime`` per file let a reader skip segments; user values are not
clustered).
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from convex_cdc.core.columns import SYSTEM_COLUMN_NAMES
from convex_cdc.core.errors import StateError
from convex_cdc.target_s3.atomic_file import atomic_write_bytes
from convex_cdc.target_s3.staging.state import StagingFile

ROWS_PER_SEGMENT: Final = 100_000
"""Target rows per segment file (~5-40 MB of parquet for typical documents)."""
SPLIT_FACTOR: Final = 2
"""A segment is cut into target-sized ones once it would hold this many times the target."""
STAGING_ROW_GROUP_ROWS: Final = 128 * 1024
STAGING_COMPRESSION: Final = "zstd"
STAGING_COMPRESSION_LEVEL: Final = 1

SEGMENT_FILE_PATTERN: Final = re.compile(r"part-(\d{4,})-([0-9a-f]{16})\.parquet")

CREATION_ORDER: Final = [("_creationTime", "ascending", "at_start"), ("_id", "ascending")]
"""The order of the rows of every segment file (nulls first)."""

Floats = npt.NDArray[np.float64]


def segment_file_name(number: int, content_sha256: str) -> str:
    """``part-<number:04d>-<first 16 hex of the content hash>.parquet``."""
    return f"part-{number:04d}-{content_sha256[:16]}.parquet"


def creation_times(column: pa.Array | pa.ChunkedArray) -> Floats:
    """A ``_creationTime`` column as float64 with nulls as ``-inf`` (they sort first)."""
    filled = pc.fill_null(column, -np.inf)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks() if filled.num_chunks != 1 else filled.chunk(0)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.float64)


def in_creation_order(rows: pa.Table) -> pa.Table:
    """``rows`` sorted by ``(_creationTime, _id)``, the order of every segment file."""
    order = pc.sort_indices(rows, sort_keys=CREATION_ORDER)
    return rows.take(order)


def segment_starts(files: tuple[StagingFile, ...]) -> Floats:
    """Where each segment after the first begins: rows with a creation time at or above
    ``starts[i]`` (and below ``starts[i+1]``) belong to segment ``i + 1``."""
    return np.array(
        [-np.inf if f.first_creation_time is None else f.first_creation_time for f in files[1:]],
        dtype=np.float64,
    )


def write_segment_file(root: Path, table_dir: Path, number: int, rows: pa.Table) -> StagingFile:
    """Write one segment's rows durably under their content name and describe the file.

    ``rows`` must already be in creation order. If a file of that name exists it holds
    these exact bytes (the name is their hash), so it is kept as it is.
    """
    buffer = io.BytesIO()
    names = rows.column_names
    pq.write_table(
        rows.combine_chunks(),
        buffer,
        compression=STAGING_COMPRESSION,
        compression_level=STAGING_COMPRESSION_LEVEL,
        row_group_size=STAGING_ROW_GROUP_ROWS,
        use_dictionary=[name for name in names if name not in SYSTEM_COLUMN_NAMES],
        write_statistics=[name for name in names if name in SYSTEM_COLUMN_NAMES],
    )
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = table_dir / segment_file_name(number, digest)
    if not path.exists():
        atomic_write_bytes(path, data)
    first = rows.column("_creationTime")[0].as_py() if rows.num_rows else None
    return StagingFile(
        path=path.relative_to(root).as_posix(),
        rows=rows.num_rows,
        bytes=len(data),
        sha256=digest,
        first_creation_time=first,
    )


def read_segment_file(
    root: Path, file: StagingFile, *, schema: pa.Schema, columns: list[str] | None = None
) -> pa.Table:
    """Read one listed staging file (optionally only some columns).

    Raises:
        StateError: the file is missing or does not have the table's columns (the
            staging directory was changed behind convex-cdc's back).
    """
    path = root / file.path
    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StateError(
            f"staging file {path} listed in the staging state cannot be read: {exc}",
            hint="delete the staging/ directory and run `convex-cdc materialize` to rebuild "
            "it from the raw change log",
        ) from None
    expected = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    if not table.schema.equals(expected, check_metadata=False):
        raise StateError(
            f"staging file {path} does not have the columns the staging state lists",
            hint="delete the staging/ directory and run `convex-cdc materialize` to rebuild it",
        )
    return table.replace_schema_metadata(None)
