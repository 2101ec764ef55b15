"""Hash buckets of a staging table and their immutable, content-named files.

A document lives in bucket ``crc32(_id) % buckets`` of its table; each non-empty bucket
is one parquet file ``staging/<table-dir>/part-<bucket:04d>-<sha256[:16]>.parquet``,
sorted by ``_id``. A materialize rewrites only the buckets its events touch, so its cost
follows the number of changed rows (times the bucket size), not the table size.

Bucket-count policy: a table starts with the smallest power of two that keeps buckets at
or under :data:`ROWS_PER_BUCKET` rows for the rows it is first built with. It grows (to
the power of two that brings buckets back to the target) only when the average bucket
exceeds twice the target; growing rewrites the whole table, and because the count at
least doubles each time, that costs O(1) amortised per row. It never shrinks, so a table
that loses rows does not oscillate. A truncate-and-reload starts over.

Convex ids are random, so changes spread over all buckets: a bucket of ``n`` rows is left
alone by ``k`` random changes with probability ``(1 - 1/buckets)**k``, and a 1% change
of a large table touches every bucket whatever their size. Such a run rewrites the table
(one parquet decode + encode per row, several times cheaper than parsing its JSON).
Smaller buckets would only help batches of far fewer changes than buckets, at the price
of many small files for readers and publish.

Files are named by their content, so the same rows always give the same name (writing is
deterministic: one chunk per column, fixed writer options), a rewrite never replaces a
file in place, and a publish uploads only files it has not seen.

Writer options favour rewrite speed, since a materialize rewrites whole buckets: zstd at
level 1, dictionary encoding only for user columns (``_id``, ``_creationTime`` and
``_ts`` are nearly unique, so a dictionary is wasted work) and statistics only for the
system columns (hash buckets spread every user value range over all files, so min/max
per file would let a reader skip nothing).
"""

from __future__ import annotations

import hashlib
import io
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from convex_cdc.core.columns import SYSTEM_COLUMN_NAMES
from convex_cdc.core.errors import StateError
from convex_cdc.target_s3.atomic_file import atomic_write_bytes
from convex_cdc.target_s3.staging.state import StagingFile

ROWS_PER_BUCKET: Final = 100_000
"""Target rows per bucket file (~10-40 MB of parquet for typical documents)."""
GROWTH_FACTOR: Final = 2
"""Grow the bucket count once the average bucket holds this many times the target."""
STAGING_ROW_GROUP_ROWS: Final = 128 * 1024
STAGING_COMPRESSION: Final = "zstd"
STAGING_COMPRESSION_LEVEL: Final = 1

BUCKET_FILE_PATTERN: Final = re.compile(r"part-(\d{4,})-([0-9a-f]{16})\.parquet")


def buckets_for(rows: int, rows_per_bucket: int = ROWS_PER_BUCKET) -> int:
    """The smallest power of two of buckets holding ``rows`` at ``rows_per_bucket`` each."""
    buckets = 1
    while buckets * rows_per_bucket < rows:
        buckets *= 2
    return buckets


def needs_growth(rows: int, buckets: int, rows_per_bucket: int = ROWS_PER_BUCKET) -> bool:
    """Whether the average bucket has outgrown the target (see the module docstring)."""
    return rows > buckets * rows_per_bucket * GROWTH_FACTOR


def bucket_of(doc_id: str, buckets: int) -> int:
    """The bucket of one document id (stable across runs, platforms and versions)."""
    return zlib.crc32(doc_id.encode()) % buckets


def positions_by_bucket(ids: Iterable[str], buckets: int) -> dict[int, list[int]]:
    """Row positions grouped by bucket, for ids of *new* rows (a Python loop over them)."""
    groups: dict[int, list[int]] = {}
    crc32 = zlib.crc32
    for position, doc_id in enumerate(ids):
        groups.setdefault(crc32(doc_id.encode()) % buckets, []).append(position)
    return groups


def bucket_numbers(ids: pa.Array | pa.ChunkedArray, buckets: int) -> pa.Array:
    """:func:`bucket_of` of every id, as an int64 array (one CRC call per id, no other
    per-row Python)."""
    hashes = map(zlib.crc32, ids.cast(pa.binary()).to_pylist())
    if buckets & (buckets - 1) == 0:  # a power of two, as buckets_for gives
        return pc.bit_wise_and(pa.array(hashes, pa.int64()), buckets - 1)
    return pa.array([value % buckets for value in hashes], pa.int64())


def bucket_file_name(bucket: int, content_sha256: str) -> str:
    """``part-<bucket:04d>-<first 16 hex of the content hash>.parquet``."""
    return f"part-{bucket:04d}-{content_sha256[:16]}.parquet"


def write_bucket_file(root: Path, table_dir: Path, bucket: int, rows: pa.Table) -> StagingFile:
    """Write one bucket's rows durably under their content name and describe the file.

    ``rows`` must already be in their final order. If a file of that name exists it holds
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
    path = table_dir / bucket_file_name(bucket, digest)
    if not path.exists():
        atomic_write_bytes(path, data)
    return StagingFile(
        path=path.relative_to(root).as_posix(),
        bucket=bucket,
        rows=rows.num_rows,
        bytes=len(data),
        sha256=digest,
    )


def read_bucket_file(
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


def newest_ts(root: Path, file: StagingFile) -> int | None:
    """The highest ``_ts`` in one staging file, from its parquet statistics (``None`` if
    the file has none); reads only the footer."""
    try:
        metadata = pq.read_metadata(root / file.path)
        column = metadata.schema.names.index("_ts")
        highest: int | None = None
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(column).statistics
            if statistics is None or not statistics.has_min_max:
                return None
            highest = statistics.max if highest is None else max(highest, statistics.max)
    except (OSError, ValueError, pa.ArrowInvalid):
        return None  # the full read that follows reports a damaged file properly
    return highest


def sorted_by_id(rows: pa.Table) -> pa.Table:
    """``rows`` in ``_id`` order (the order of every bucket file)."""
    return rows.take(pc.sort_indices(rows, sort_keys=[("_id", "ascending")]))
