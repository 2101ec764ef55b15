"""``convex-cdc verify``: compare staging with a fresh snapshot of the source, row by row.

No checkpoint is involved: the source is walked with ``list_snapshot`` (pinned at the
first page's timestamp, as the orchestrator does) and every row on both sides is reduced
to a hash of its ``export_json`` document — user fields and ``_creationTime``, without
``_id`` and metadata, null fields dropped (staging cannot tell a missing field from a
null one). Typed staging values are turned back into ``export_json`` by
``core.type_mapping.json_text_column`` (the conversion a widening to ``json`` uses), so a
row hashes the same on both sides exactly when it holds the same values (NaN, -0.0,
bytes and Int64 extremes included).

The walk sees the source *now*; staging is consistent as of its own timestamp. Writes
in between show up as differences, unless the walk is pinned at staging's timestamp
(``at_ts``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from convex_cdc.core.errors import MalformedResponse
from convex_cdc.core.events import events_from_values
from convex_cdc.core.names import TableKey
from convex_cdc.core.selection import Selection
from convex_cdc.core.source import SnapshotPage, Source
from convex_cdc.core.type_mapping import json_text_column
from convex_cdc.target_s3.io_errors import io_errors
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.reader import staging_table_schema
from convex_cdc.target_s3.staging.readiness import consistent_staging
from convex_cdc.target_s3.staging.segments import read_segment_file
from convex_cdc.target_s3.staging.state import StagingTable

_NOT_HASHED: Final = ("_id", "_ts")
_EXAMPLES: Final = 5

RowHashes = dict[str, bytes]
"""``_id`` → digest of the row's ``export_json`` document."""


@dataclass(frozen=True, slots=True)
class TableComparison:
    """How one table's staging rows compare with the source's."""

    key: TableKey
    source_rows: int
    staging_rows: int
    only_in_source: int = 0
    only_in_staging: int = 0
    changed: int = 0
    duplicated_in_staging: int = 0
    """Extra rows for an ``_id`` that staging holds more than once."""
    staging_state_rows: int | None = None
    """The row count the staging state records (``None``: the table is not in staging)."""
    examples: tuple[str, ...] = ()
    """A few of the differing ``_id`` values, for a first look."""

    @property
    def differing_rows(self) -> int:
        """Rows missing on one side, changed, or duplicated."""
        return (
            self.only_in_source + self.only_in_staging + self.changed + self.duplicated_in_staging
        )

    @property
    def ok(self) -> bool:
        """Staging holds exactly the source's rows, and its state counts them right."""
        counted = self.staging_state_rows in (None, self.staging_rows)
        return self.differing_rows == 0 and counted

    def describe(self) -> str:
        """One line, e.g. ``messages: 1 differing row (1 changed)``."""
        if self.ok:
            return f"{self.key}: ok ({self.source_rows} rows)"
        parts = [
            f"{n} {what}"
            for n, what in (
                (self.only_in_source, "only in source"),
                (self.only_in_staging, "only in staging"),
                (self.changed, "changed"),
                (self.duplicated_in_staging, "duplicated in staging"),
            )
            if n
        ]
        plural = "" if self.differing_rows == 1 else "s"
        text = f"{self.key}: {self.differing_rows} differing row{plural}"
        if parts:
            text += f" ({', '.join(parts)})"
        if self.staging_state_rows not in (None, self.staging_rows):
            text += (
                f"; the staging state counts {self.staging_state_rows} rows, its files hold "
                f"{self.staging_rows}"
            )
        if self.examples:
            text += f"; e.g. {', '.join(self.examples)}"
        return text


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The comparison of every table."""

    tables: tuple[TableComparison, ...]
    source_snapshot_ts: int
    """The timestamp the source was walked at."""
    staging_consistent_as_of_ts: int
    elapsed_seconds: float = 0.0
    source_pages: int = 0

    @property
    def ok(self) -> bool:
        """Every table matches."""
        return all(t.ok for t in self.tables)

    @property
    def differing_tables(self) -> tuple[TableComparison, ...]:
        """The tables that do not match."""
        return tuple(t for t in self.tables if not t.ok)

    def table(self, key: TableKey | str) -> TableComparison:
        """One table's comparison.

        Raises:
            KeyError: neither side has the table.
        """
        wanted = TableKey.parse(key) if isinstance(key, str) else key
        for table in self.tables:
            if table.key == wanted:
                return table
        raise KeyError(str(wanted))

    def summary(self) -> str:
        """One line for the CLI."""
        if self.ok:
            rows = sum(t.source_rows for t in self.tables)
            return f"staging matches the source: {len(self.tables)} tables, {rows} rows"
        worse = self.differing_tables
        text = "staging differs from the source in " + "; ".join(t.describe() for t in worse)
        if self.source_snapshot_ts > self.staging_consistent_as_of_ts:
            text += (
                f" (the source was read at ts {self.source_snapshot_ts}, staging is "
                f"consistent as of ts {self.staging_consistent_as_of_ts}: writes in between "
                "also show up here; sync and materialize, then verify again)"
            )
        return text


def verify(
    layout: DestinationLayout,
    source: Source,
    *,
    selection: Selection | None = None,
    at_ts: int | None = None,
) -> VerifyReport:
    """Compare every staging table of ``layout`` with a fresh snapshot of ``source``.

    Args:
        layout: the destination holding staging.
        source: the Convex deployment (or any :class:`Source`).
        selection: the selection ``sync`` uses, so both sides cover the same tables.
        at_ts: walk the source at this timestamp (e.g. staging's
            ``consistent_as_of_ts``) instead of now.

    Raises:
        ConfigError: staging is missing or mid-snapshot.
        SourceError: the source cannot be walked.
        StateError: the staging state or a file it lists is unusable.
        TargetError: staging cannot be read (permissions, a file where a directory
            belongs).
    """
    with io_errors(f"verify {layout.staging}", then="run verify again"):
        return _verify(layout, source, selection=selection, at_ts=at_ts)


def _verify(
    layout: DestinationLayout,
    source: Source,
    *,
    selection: Selection | None,
    at_ts: int | None,
) -> VerifyReport:
    started = time.monotonic()
    staging, consistent_as_of_ts = consistent_staging(layout, purpose="verify")
    walked = _SourceWalk(source, selection, at_ts)
    source_hashes = walked.row_hashes()
    comparisons = []
    staging_tables = {t.key: t for t in staging.tables}
    for key in sorted(set(source_hashes) | set(staging_tables)):
        comparisons.append(
            _compare(key, source_hashes.get(key, {}), layout.root, staging_tables.get(key))
        )
    return VerifyReport(
        tables=tuple(comparisons),
        source_snapshot_ts=walked.snapshot_ts,
        staging_consistent_as_of_ts=consistent_as_of_ts,
        elapsed_seconds=time.monotonic() - started,
        source_pages=walked.pages,
    )


def document_hash(document: Mapping[str, Any]) -> bytes:
    """The digest both sides are compared by (keys sorted, canonical JSON)."""
    return hashlib.blake2b(
        orjson.dumps(document, option=orjson.OPT_SORT_KEYS), digest_size=16
    ).digest()


@dataclass(slots=True)
class _SourceWalk:
    source: Source
    selection: Selection | None
    at_ts: int | None
    snapshot_ts: int = 0
    pages: int = 0
    _hashes: dict[TableKey, RowHashes] = field(default_factory=dict)

    def row_hashes(self) -> dict[TableKey, RowHashes]:
        for page in self._pages():
            events = events_from_values(
                page.values,
                kind="snapshot",
                batch_seq=0,
                snapshot_ts=page.snapshot,
                endpoint="list_snapshot",
                consume_values=True,  # the page is this walk's own and its values not reused
            )
            columns = [events.column(n).to_pylist() for n in ("_component", "_table", "_id")]
            for component, table, doc_id, text in zip(
                *columns, events.column("document").to_pylist(), strict=True
            ):
                document = orjson.loads(text)
                hashed = {k: v for k, v in document.items() if v is not None and k != "_id"}
                self._hashes.setdefault(TableKey(component, table), {})[doc_id] = document_hash(
                    hashed
                )
        return self._hashes

    def _pages(self) -> Iterator[SnapshotPage]:
        page = self.source.list_snapshot(snapshot=self.at_ts, cursor=None, selection=self.selection)
        pinned = page.snapshot
        self.snapshot_ts = pinned
        while True:
            if page.snapshot != pinned:
                raise MalformedResponse(
                    f"list_snapshot answered snapshot {page.snapshot} for a walk pinned at "
                    f"{pinned}",
                    endpoint="list_snapshot",
                )
            self.pages += 1
            yield page
            if not page.has_more:
                return
            page = self.source.list_snapshot(
                snapshot=pinned, cursor=page.cursor, selection=self.selection
            )


def _compare(
    key: TableKey, source: RowHashes, root: Path, table: StagingTable | None
) -> TableComparison:
    staging: RowHashes = {}
    staging_rows = 0
    duplicated: set[str] = set()
    if table is not None:
        for doc_id, digest in _staging_row_hashes(root, table):
            staging_rows += 1
            if doc_id in staging:
                duplicated.add(doc_id)
            staging[doc_id] = digest
    only_source = source.keys() - staging.keys()
    only_staging = staging.keys() - source.keys()
    changed = {i for i in source.keys() & staging.keys() if source[i] != staging[i]}
    differing = sorted(only_source | only_staging | changed | duplicated)
    return TableComparison(
        key=key,
        source_rows=len(source),
        staging_rows=staging_rows,
        only_in_source=len(only_source),
        only_in_staging=len(only_staging),
        changed=len(changed),
        duplicated_in_staging=staging_rows - len(staging),
        staging_state_rows=table.row_count if table is not None else None,
        examples=tuple(differing[:_EXAMPLES]),
    )


def _staging_row_hashes(root: Path, table: StagingTable) -> Iterator[tuple[str, bytes]]:
    """``(_id, digest)`` of every staging row, one segment file at a time."""
    schema = staging_table_schema(table)
    hashed = [c for c in table.columns if c.name not in _NOT_HASHED]
    names = [c.name for c in hashed]
    loads = orjson.loads
    for file in table.files:
        rows = read_segment_file(root, file, schema=schema)
        # Typed values back to export_json, via the same conversion a widening uses.
        texts = [json_text_column(rows.column(c.name), c.type).to_pylist() for c in hashed]
        for position, doc_id in enumerate(rows.column("_id").to_pylist()):
            document = {
                name: loads(column[position])
                for name, column in zip(names, texts, strict=True)
                if column[position] is not None
            }
            yield doc_id, document_hash(document)
