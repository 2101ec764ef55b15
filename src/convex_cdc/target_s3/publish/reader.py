"""Read a published state the way another platform would: follow ``manifest.json`` only.

Loads the pointer manifest, fetches each table's files, checks every file's sha256 and
row count and each table's total, and returns one Arrow table per Convex table. It
never lists the prefix, so files of an unfinished publish are invisible to it. The
end-to-end tests use it to compare what was published with the source's truth.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from convex_cdc.core.errors import TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.io_errors import one_line
from convex_cdc.target_s3.publish.manifest import Manifest, ManifestFile, ManifestTable
from convex_cdc.target_s3.publish.object_store import PublishTarget, open_publish_target
from convex_cdc.target_s3.publish.remote_manifests import read_pointer


@dataclass(frozen=True, slots=True)
class PublishedSnapshot:
    """One published state: its manifest and the rows of every table."""

    manifest: Manifest
    tables: Mapping[TableKey, pa.Table]

    def table(self, key: TableKey | str) -> pa.Table:
        """One table's rows; ``key`` may be ``TableKey`` or its qualified name.

        Raises:
            KeyError: the manifest has no such table.
        """
        return self.tables[TableKey.parse(key) if isinstance(key, str) else key]


def read_published(to: str, *, endpoint_url: str | None = None) -> PublishedSnapshot:
    """Read every table of the state ``<to>/manifest.json`` describes, verified.

    Raises:
        TargetError: nothing is published there, a file is missing, or a file's digest or
            row count differs from the manifest (``ManifestFormatError`` for a manifest
            this version cannot read).
    """
    target = open_publish_target(to, endpoint_url=endpoint_url, create=False)
    manifest = read_pointer(target)
    if manifest is None:
        raise TargetError(
            f"nothing is published at {target.describe()} (no manifest.json)",
            hint="run `convex-cdc publish --to` with this URL first",
        )
    tables = {t.key: _read_table(target, t) for t in manifest.tables}
    return PublishedSnapshot(manifest, tables)


def _read_table(target: PublishTarget, table: ManifestTable) -> pa.Table:
    parts = [_read_file(target, f) for f in table.files]
    schema = pa.schema([pa.field(c.name, c.type.arrow, nullable=c.nullable) for c in table.columns])
    if not parts:
        return schema.empty_table()
    try:
        rows = pa.concat_tables(parts)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise TargetError(
            f"the files of table {table.key} do not share one schema",
            hint="every file of a table has the table's columns; publish again from a "
            "freshly materialized staging",
        ) from None
    if rows.num_rows != table.row_count:
        raise TargetError(
            f"table {table.key} has {rows.num_rows} rows in its files, the manifest says "
            f"{table.row_count}",
            hint="the published files are inconsistent with their manifest; publish again",
        )
    return rows


def _read_file(target: PublishTarget, file: ManifestFile) -> pa.Table:
    data = target.get(file.path)
    if data is None:
        raise TargetError(
            f"{target.url_of(file.path)} is named by the manifest but missing",
            hint="something deleted published files; publish again to restore them",
        )
    if len(data) != file.bytes or hashlib.sha256(data).hexdigest() != file.sha256:
        raise TargetError(
            f"{target.url_of(file.path)} does not match the size/sha256 in the manifest",
            hint="the object was changed after publishing; publish again",
        )
    try:
        rows = pq.read_table(io.BytesIO(data))
    except pa.ArrowException as exc:
        raise TargetError(
            f"{target.url_of(file.path)} is not a readable parquet file: {one_line(exc)}",
            hint="the object was changed after publishing; publish again",
        ) from exc
    if rows.num_rows != file.rows:
        raise TargetError(
            f"{target.url_of(file.path)} has {rows.num_rows} rows, the manifest says {file.rows}",
            hint="the published files are inconsistent with their manifest; publish again",
        )
    return rows
