"""Independent readers of a published table's Delta table, and what they must equal.

* :func:`read_with_deltalake` — ``DeltaTable.to_pyarrow_table`` through a *native* pyarrow
  filesystem (deltalake's own Python filesystem handler aborts the interpreter at exit,
  see docs/delta-lake-notes.md §3);
* :func:`read_with_query_builder` — delta-rs's DataFusion scan;
* :func:`read_with_own_log_reader` — this module's replay of the ``_delta_log`` JSON
  commits (add minus remove, the last ``metaData``'s schema), reading the parquet files
  with pyarrow: no Delta library involved at all.

:func:`manifest_rows` reads what a manifest says the table holds, and :func:`canonical`
turns a table into comparable rows (sorted by ``_id``, floats by their bits).
"""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, QueryBuilder

from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.publish.delta_tables import SEQUENCE_KEY
from convex_cdc.target_s3.publish.manifest import Manifest, ManifestTable
from convex_cdc.target_s3.publish.object_store import PublishTarget

_PLAIN = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}


def open_delta(target: PublishTarget, directory: str, version: int | None = None) -> DeltaTable:
    """The Delta table of ``directory`` (relative to the target), at ``version``."""
    location = target.delta_location(directory)
    return DeltaTable(location.uri, version=version, storage_options=location.storage_options)


def native_filesystem(target: PublishTarget, directory: str) -> pafs.FileSystem:
    """A pyarrow filesystem rooted at the table's directory (local or S3 from AWS_*)."""
    location = target.delta_location(directory)
    if target.bucket is None:
        return pafs.SubTreeFileSystem(location.uri, pafs.LocalFileSystem())
    endpoint = urlsplit(os.environ["AWS_ENDPOINT_URL"])
    s3 = pafs.S3FileSystem(
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ["AWS_REGION"],
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme,
    )
    return pafs.SubTreeFileSystem(location.uri.removeprefix("s3://"), s3)


def read_with_deltalake(
    target: PublishTarget, directory: str, version: int | None = None
) -> pa.Table:
    """``DeltaTable(...).to_pyarrow_table()`` with a native filesystem."""
    table = open_delta(target, directory, version)
    return plain(table.to_pyarrow_table(filesystem=native_filesystem(target, directory)))


def read_with_query_builder(
    target: PublishTarget, directory: str, version: int | None = None
) -> pa.Table:
    """``SELECT *`` through delta-rs's ``QueryBuilder``."""
    table = open_delta(target, directory, version)
    batches = QueryBuilder().register("t", table).execute("SELECT * FROM t")
    return plain(pa.RecordBatchReader.from_stream(batches).read_all())


@dataclass
class LogReplay:
    """A table's state after replaying its JSON commits up to one version."""

    version: int
    files: dict[str, int] = field(default_factory=dict)
    """File name → size."""
    fields: list[dict[str, Any]] = field(default_factory=list)
    """The schema's fields, from the last ``metaData`` action."""
    commits: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Version → its ``commitInfo``."""
    transactions: dict[str, int] = field(default_factory=dict)
    """App id → the last ``txn`` version."""
    protocol: dict[str, Any] = field(default_factory=dict)


def replay_log(target: PublishTarget, directory: str, version: int | None = None) -> LogReplay:
    """Replay ``_delta_log/<version>.json`` from 0, in order: add, then remove wins."""
    log_dir = f"{directory}/_delta_log"
    versions = sorted(
        int(name.rsplit("/", 1)[1].split(".")[0])
        for name in (o.path for o in target.list(log_dir))
        if name.endswith(".json") and name.rsplit("/", 1)[1].split(".")[0].isdigit()
    )
    assert versions and versions[0] == 0, f"{log_dir}: commits {versions}"
    assert versions == list(range(len(versions))), f"{log_dir}: a gap in {versions}"
    last = versions[-1] if version is None else version
    replay = LogReplay(last)
    for v in range(last + 1):
        body = target.get(f"{log_dir}/{v:020d}.json")
        assert body is not None
        adds, removes = {}, set()
        for line in body.decode().splitlines():
            action = json.loads(line)
            if "add" in action:
                adds[action["add"]["path"]] = action["add"]["size"]
            elif "remove" in action:
                removes.add(action["remove"]["path"])
            elif "metaData" in action:
                replay.fields = json.loads(action["metaData"]["schemaString"])["fields"]
            elif "commitInfo" in action:
                replay.commits[v] = action["commitInfo"]
            elif "txn" in action:
                replay.transactions[action["txn"]["appId"]] = action["txn"]["version"]
            elif "protocol" in action:
                replay.protocol = action["protocol"]
        # The protocol forbids a path in both lists of one commit; check it holds.
        assert not (set(adds) & removes), f"{log_dir}/{v}: a path both added and removed"
        for path in removes:
            replay.files.pop(path, None)
        replay.files.update(adds)
    return replay


def read_with_own_log_reader(
    target: PublishTarget, directory: str, version: int | None = None
) -> pa.Table:
    """The table as the JSON log says: its files read with pyarrow, its schema's columns."""
    replay = replay_log(target, directory, version)
    names = [f["name"] for f in replay.fields]
    parts = []
    for path, size in sorted(replay.files.items()):
        data = target.get(f"{directory}/{path}")
        assert data is not None, f"{directory}/{path} is in the Delta log but missing"
        assert len(data) == size
        parts.append(pq.read_table(io.BytesIO(data)).select(names))
    if not parts:
        return pa.schema([]).empty_table()
    return pa.concat_tables(parts)


def version_of_sequence(replay: LogReplay, sequence: int) -> int | None:
    """The Delta version equal to manifest ``sequence``: the last committed for it or before."""
    matching = [v for v, info in replay.commits.items() if info.get(SEQUENCE_KEY, -1) <= sequence]
    return max(matching, default=None)


def manifest_rows(target: PublishTarget, table: ManifestTable) -> pa.Table:
    """The rows ``table``'s manifest entry names, in the Delta schema's columns."""
    names = [c.name for c in table.columns if c.type is not ColumnType.NULL]
    parts = []
    for f in table.files:
        data = target.get(f.path)
        assert data is not None
        parts.append(pq.read_table(io.BytesIO(data)).select(names))
    return pa.concat_tables(parts) if parts else pa.schema([]).empty_table()


def manifest_table(manifest: Manifest, directory: str) -> ManifestTable | None:
    """The entry of ``manifest`` whose files live in ``directory``, if any."""
    from convex_cdc.target_s3.publish.delta_tables import table_directory

    return next((t for t in manifest.tables if table_directory(t) == directory), None)


def plain(table: pa.Table) -> pa.Table:
    """View types cast to plain ones, so tables from every reader compare alike."""
    schema = pa.schema(
        [pa.field(f.name, _PLAIN.get(f.type, f.type), f.nullable) for f in table.schema]
    )
    return table.cast(schema)


def canonical(table: pa.Table) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows sorted by ``_id``, floats by their bits (NaN, -0.0 exact)."""
    if table.num_rows == 0:
        return [], []
    rows = [tuple(_exact(row[name]) for name in table.column_names) for row in table.to_pylist()]
    return list(table.column_names), sorted(rows, key=lambda r: str(r[0]))


def _exact(value: Any) -> Any:
    return ("float", struct.pack("<d", value)) if isinstance(value, float) else value
