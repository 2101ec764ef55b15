"""The staging materializer: raw change log → current-state parquet, incrementally.

A run applies the raw batches with ``state.last_applied_batch < seq <= checkpoint.batch_seq``
(later batches are not committed yet: their checkpoint was never saved). A snapshot batch
of a walk staging has not seen (``snapshot_ts`` differs from the state's) means
truncate-and-reload: every table is emptied before that batch and the ones after it.
A data-sync batch that truncates a table empties that one table before its rows of the
batch are applied (:mod:`.truncates`); a batch that drops a table (it left the source)
removes it from staging, state and files (:mod:`.drops`). ``consistent_as_of_ts`` is
the checkpoint's ``consistent_as_of`` once every committed batch is applied (``None``
while the snapshot walk is incomplete, or while a data sync is snapshotting).

Batches are applied in steps of at most ``max_events_per_step`` events, which bounds
memory. Each step follows one order, so a crash anywhere leaves a state that names only
existing files and a re-run converges:

1. write the step's new segment files (durable, content-named, never in place);
2. save the new state atomically (it lists only those and the untouched files);
3. delete the files no longer listed.

Files a crashed run wrote but never listed are removed at the start of the next run.

The raw batches applied must have no hole (:mod:`~convex_cdc.target_s3.raw.history`) and
each file must match its index; staging files the state lists must exist with the size it
records. A listed file that is missing or of another size (damaged behind convex-cdc's
back) makes the run rebuild staging from the raw change log, as ``rebuild=True`` does.
Memory does not grow with a step's size (events are typed in chunks and spilled, see
:mod:`.merge`), so steps are large: a step rewrites each touched segment once, and a bulk
load split over several steps would rewrite the segments it filled again.

Staging written with the earlier layout (hash buckets of ``_id``, a version 1 state) is
rebuilt from the raw change log on the next run, with a log line saying so.

A run holds the destination's ``staging`` lock. Old files disappear right after a state
save, so a reader that copies files listed in a state (publish) should hold that lock too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Final, Literal

import pyarrow as pa

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.columns import Widening
from convex_cdc.core.errors import StateError
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.io_errors import io_errors
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.locks import DestinationLock
from convex_cdc.target_s3.raw.batch_index import BatchIndex
from convex_cdc.target_s3.raw.change_log import RawChangeLog
from convex_cdc.target_s3.raw.history import ensure_checkpointed_batch_exists, ensure_contiguous
from convex_cdc.target_s3.staging.drops import ends_dropped
from convex_cdc.target_s3.staging.merge import (
    EVENT_COLUMNS,
    WORK_DIR_PREFIX,
    TableUpdate,
    apply_table_events,
    empty_table,
)
from convex_cdc.target_s3.staging.segments import ROWS_PER_SEGMENT, SEGMENT_FILE_PATTERN
from convex_cdc.target_s3.staging.state import (
    SEGMENT_LAYOUT,
    StagingState,
    StagingTable,
    load_staging_state,
    save_staging_state,
)
from convex_cdc.target_s3.staging.truncates import last_truncating, rows_after_truncate
from convex_cdc.target_s3.table_paths import resolve_table_dir

log = logging.getLogger(__name__)

MAX_EVENTS_PER_STEP: Final = 10_000_000
"""Raw events applied per step. Memory per step grows only with its deletes (``_id`` and
``_ts``, ~60 bytes each) and the creation times of its upserts (8 bytes each); the typed
rows are spilled to disk."""
TABLE_THREADS: Final = 2
"""Tables of a step applied at once."""

_TEMP_FILE: Final = re.compile(r"\..*\.tmp")
"""Temporary files (atomic writes) a killed run may leave in a table directory."""


@dataclass(frozen=True, slots=True)
class MaterializeProgress:
    """Reported after each table of each step."""

    table: TableKey
    batches_applied: int
    batches_total: int


@dataclass(slots=True)
class MaterializeReport:
    """What one materialize run did."""

    batches_applied: int = 0
    last_applied_batch: int = 0
    tables_changed: list[str] = field(default_factory=list)
    rows_upserted: int = 0
    rows_deleted: int = 0
    files_written: int = 0
    files_removed: int = 0
    full_rebuild: bool = False
    """A new snapshot walk (or the first one) rebuilt every table."""
    tables_truncated: list[str] = field(default_factory=list)
    """Tables a data sync truncated (emptied, then built again from the rows after it)."""
    tables_dropped: list[str] = field(default_factory=list)
    """Tables dropped at the source, now gone from staging."""
    damaged_files: list[str] = field(default_factory=list)
    """Listed staging files found missing or of another size; staging was rebuilt."""
    widenings: list[tuple[str, Widening]] = field(default_factory=list)
    """``(qualified table, widening)`` recorded by this run."""
    consistent_as_of_ts: int | None = None
    api: Literal["streaming-export", "data-sync"] | None = None
    """The API the checkpoint follows the source with (``None``: no checkpoint yet)."""
    elapsed_seconds: float = 0.0


class StagingMaterializer:
    """Builds ``layout.staging`` from ``layout.raw_change_log`` up to the saved checkpoint.

    Args:
        layout: the destination.
        rows_per_segment: target rows per staging file.
        max_events_per_step: raw events applied per step (bounds memory).
        progress: called after each table of each step.
        rebuild: build staging again from the raw change log, whatever it holds now.
    """

    def __init__(
        self,
        layout: DestinationLayout,
        *,
        rows_per_segment: int = ROWS_PER_SEGMENT,
        max_events_per_step: int = MAX_EVENTS_PER_STEP,
        progress: Callable[[MaterializeProgress], None] | None = None,
        rebuild: bool = False,
    ) -> None:
        self.layout = layout
        self.rebuild = rebuild
        self.rows_per_segment = rows_per_segment
        self.max_events_per_step = max_events_per_step
        self.progress = progress
        self.raw = RawChangeLog(layout)

    def materialize(self) -> MaterializeReport:
        """Apply every committed raw batch staging does not hold yet.

        Holds the ``staging`` lock of the destination while it runs.

        Raises:
            DestinationBusy: another materialize holds the staging lock.
            StateError: the checkpoint, a batch index, the staging state or a staging
                file is unusable, staging belongs to another deployment, the raw batches
                to apply have a hole, or a raw file is missing or does not match its index.
            TargetError: a raw file is unreadable, or the disk refused a read or a write
                (the staging state still lists only complete files).
        """
        started = time.monotonic()
        with (
            io_errors(f"materialize {self.layout.staging}", then="run materialize again"),
            DestinationLock(self.layout, "staging"),
        ):
            report = self._run()
        report.elapsed_seconds = time.monotonic() - started
        return report

    def _run(self) -> MaterializeReport:
        report = MaterializeReport()
        checkpoint = FileCheckpointStore(self.layout).load()
        state = load_staging_state(self.layout.staging_state)
        if checkpoint is None:
            return _finish(report, state)
        report.api = checkpoint.api
        _check_compatible(state, checkpoint, self.layout.staging_state)
        report.files_removed += self._remove_unlisted_files(state)
        ensure_checkpointed_batch_exists(self.raw, checkpoint)

        obsolete: list[str] = []
        if state is not None:
            report.damaged_files = self._damaged_files(state, by_content=self.rebuild)
            for relative in report.damaged_files:
                # Files are content-named: a rebuild writing the same rows would keep a
                # damaged file of that name.
                (self.layout.root / relative).unlink(missing_ok=True)
            old_layout = state.layout != SEGMENT_LAYOUT
            if self.rebuild or report.damaged_files or old_layout:
                # Built again from the walk's first batch on; the state's files go once
                # the first step's state no longer lists them.
                obsolete = [f.path for t in state.tables for f in t.files]
                state = None
                if old_layout:
                    log.info(
                        "staging was laid out in hash buckets of _id by an earlier convex-cdc; "
                        "rebuilding it from the raw change log in creation-time segments"
                    )
                else:
                    log.info("rebuilding staging from the raw change log")
        after = state.last_applied_batch if state is not None else 0
        batches = self.raw.committed_batches(after, checkpoint.batch_seq)
        tables = {t.key: t for t in state.tables} if state is not None else {}
        snapshot_ts = state.snapshot_ts if state is not None else None
        reload_from = _reload_point(batches, snapshot_ts)
        if reload_from is not None:
            report.full_rebuild = True
            batches = batches[reload_from:]
            snapshot_ts = batches[0].snapshot_ts
            obsolete += [f.path for t in tables.values() for f in t.files]
            tables = {}
            log.info("snapshot walk at ts=%s: (re)building every staging table", snapshot_ts)
        # What came before the walk staging is (re)built from does not matter to it.
        ensure_contiguous(self.raw, batches, after=None if reload_from is not None else after)

        steps = list(_steps(batches, self.max_events_per_step))
        for number, step in enumerate(steps):
            keys = sorted({t.key for index in step for t in index.tables})
            for key in [key for key in keys if ends_dropped(step, key)]:
                keys.remove(key)
                dropped = tables.pop(key, None)
                if dropped is not None:
                    obsolete.extend(f.path for f in dropped.files)
                for names in (report.tables_dropped, report.tables_changed):
                    if key.qualified not in names:
                        names.append(key.qualified)
            for key, update in self._apply_tables(keys, tables, step):
                tables[key] = update.table
                obsolete.extend(update.obsolete)
                report.files_written += len(update.written)
                report.rows_upserted += update.upserted
                report.rows_deleted += update.deleted
                report.widenings.extend((key.qualified, w) for w in update.widenings)
                if update.truncated and key.qualified not in report.tables_truncated:
                    report.tables_truncated.append(key.qualified)
                if (update.changed or update.truncated) and (
                    key.qualified not in report.tables_changed
                ):
                    report.tables_changed.append(key.qualified)
                if self.progress is not None:
                    self.progress(MaterializeProgress(key, report.batches_applied, len(batches)))
            report.batches_applied += len(step)
            done = number == len(steps) - 1
            state = StagingState(
                deployment_url=checkpoint.source.deployment_url,
                # Once every committed batch is applied, numbers skipped below the
                # checkpoint's count are settled too.
                last_applied_batch=checkpoint.batch_seq if done else step[-1].seq,
                snapshot_ts=snapshot_ts,
                consistent_as_of_ts=(
                    checkpoint.consistent_as_of if done else step[-1].checkpoint.consistent_as_of
                ),
                updated_at=_now(),
                tables=tuple(tables[k] for k in sorted(tables)),
            )
            report.files_removed += self._commit(state, obsolete)
            obsolete = []

        if not steps:
            # No new batch, but empty pages may have moved the checkpoint forward (and a
            # source with no documents at all still has a consistent, empty staging).
            base = state or StagingState(
                deployment_url=checkpoint.source.deployment_url,
                last_applied_batch=0,
                snapshot_ts=checkpoint.snapshot_started_at,
                consistent_as_of_ts=None,
                updated_at="",
            )
            settled = replace(
                base,
                last_applied_batch=checkpoint.batch_seq,
                consistent_as_of_ts=checkpoint.consistent_as_of,
            )
            if settled != state:
                state = replace(settled, updated_at=_now())
                save_staging_state(self.layout.staging_state, state)
        report.tables_changed.sort()
        report.tables_truncated.sort()
        report.tables_dropped.sort()
        return _finish(report, state)

    def _apply_tables(
        self,
        keys: Sequence[TableKey],
        tables: Mapping[TableKey, StagingTable],
        step: Sequence[BatchIndex],
    ) -> Iterator[tuple[TableKey, TableUpdate]]:
        """Apply the step to each table, a few tables at once, yielding in ``keys`` order.

        Parsing holds the GIL but reading, merging and writing parquet does not, so one
        table's files are written while the next one's documents are parsed. All tables
        are done (or failed) before the step's state is saved.
        """
        with ThreadPoolExecutor(TABLE_THREADS, thread_name_prefix="materialize") as pool:
            pending = [(key, pool.submit(self._apply, key, tables.get(key), step)) for key in keys]
            for key, future in pending:
                yield key, future.result()

    def _apply(
        self, key: TableKey, current: StagingTable | None, step: Sequence[BatchIndex]
    ) -> TableUpdate:
        table_dir = resolve_table_dir(self.layout.staging, key)
        indexes = [index for index in step if index.entry(key) is not None]
        # A truncate starts the table again: what it held, and the step's batches before
        # the last truncating one, no longer count.
        restart = last_truncating(indexes, key)
        forgotten: list[str] = []
        if restart is not None:
            indexes = indexes[restart:]
            forgotten = [f.path for f in current.files] if current is not None else []
            current = None
        if current is None:
            current = empty_table(key, table_dir.name)
        update = apply_table_events(
            self.layout.root,
            table_dir,
            current,
            self._events(key, indexes, truncated=restart is not None),
            batch=indexes[-1].seq,
            schema_fingerprint=step[-1].checkpoint.schema_fingerprints.get(key.qualified),
            rows_per_segment=self.rows_per_segment,
        )
        if restart is not None:
            update.truncated = True
            listed = {f.path for f in update.table.files}
            update.obsolete = sorted(
                set(update.obsolete) | {path for path in forgotten if path not in listed}
            )
        return update

    def _events(
        self, key: TableKey, indexes: Sequence[BatchIndex], *, truncated: bool
    ) -> Iterator[pa.Table]:
        """The table's rows of each batch in turn (one batch in memory at a time); after a
        truncate (which opens the first batch), only the rows that follow it."""
        columns = EVENT_COLUMNS if not truncated else [*EVENT_COLUMNS, "_op"]
        for position, index in enumerate(indexes):
            events = self.raw.read_table_batches(key, [index], columns=columns)
            yield rows_after_truncate(events) if truncated and position == 0 else events

    def _commit(self, state: StagingState, obsolete: Sequence[str]) -> int:
        """Save ``state``, then delete the files it no longer lists. Returns files deleted."""
        save_staging_state(self.layout.staging_state, state)
        listed = {f.path for t in state.tables for f in t.files}
        removed = 0
        for relative in obsolete:
            if relative in listed or not _is_segment_file_path(relative):
                continue
            path = self.layout.root / relative
            if path.exists():
                path.unlink()
                removed += 1
            _remove_if_empty(path.parent)
        return removed

    def _damaged_files(self, state: StagingState, *, by_content: bool) -> list[str]:
        """Listed files that are missing or not of the size the state records (a stat per
        file: what publish would otherwise refuse, found before anything builds on it);
        ``by_content``: or whose sha256 differs (reads every file)."""
        damaged = []
        for table in state.tables:
            for file in table.files:
                if not _is_segment_file_path(file.path):
                    continue  # a damaged state never touches anything outside staging
                path = self.layout.root / file.path
                try:
                    intact = path.stat().st_size == file.bytes and (
                        not by_content or _sha256_of(path) == file.sha256
                    )
                except FileNotFoundError:
                    intact = False
                if not intact:
                    damaged.append(file.path)
        if damaged:
            log.warning(
                "staging files missing or damaged (%s); rebuilding staging from the raw change log",
                ", ".join(damaged[:3]) + (" …" if len(damaged) > 3 else ""),
            )
        return damaged

    def _remove_unlisted_files(self, state: StagingState | None) -> int:
        """Delete what a crashed run wrote but never listed (and empty table dirs)."""
        root = self.layout.staging
        if not root.is_dir():
            return 0
        listed = {f.path for t in state.tables for f in t.files} if state is not None else set()
        removed = 0
        for entry in root.iterdir():
            if entry.name.startswith("._state.json.") and entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)
            if entry.name.startswith(WORK_DIR_PREFIX) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)  # an interrupted run's spilled rows
                continue
            if not entry.is_dir() or entry.is_symlink():
                continue
            for path in entry.iterdir():
                relative = path.relative_to(self.layout.root).as_posix()
                own = SEGMENT_FILE_PATTERN.fullmatch(path.name) or _TEMP_FILE.fullmatch(path.name)
                if own and relative not in listed and path.is_file():
                    path.unlink()
                    removed += 1
            _remove_if_empty(entry)
        if removed:
            log.info("removed %d staging files left by an interrupted materialize", removed)
        return removed


def _check_compatible(state: StagingState | None, checkpoint: Checkpoint, where: Path) -> None:
    if state is None:
        return
    if state.deployment_url != checkpoint.source.deployment_url:
        raise StateError(
            f"{where} was built from {state.deployment_url}, but the checkpoint belongs to "
            f"{checkpoint.source.deployment_url}",
            hint="delete the staging/ directory and run `convex-cdc materialize` to rebuild it",
        )
    if state.last_applied_batch > checkpoint.batch_seq:
        raise StateError(
            f"{where} holds raw batches up to {state.last_applied_batch}, beyond the "
            f"checkpoint's {checkpoint.batch_seq} (was the checkpoint restored from a backup?)",
            hint="delete the staging/ directory and run `convex-cdc materialize` to rebuild it",
        )


def _reload_point(batches: Sequence[BatchIndex], snapshot_ts: int | None) -> int | None:
    """Position of the last batch that starts a snapshot walk staging has not seen."""
    point = None
    for position, index in enumerate(batches):
        if index.kind == "snapshot" and index.snapshot_ts != snapshot_ts:
            point, snapshot_ts = position, index.snapshot_ts
    return point


def _steps(batches: Sequence[BatchIndex], max_events: int) -> Iterator[list[BatchIndex]]:
    """Consecutive groups of batches with at most ``max_events`` events (at least one)."""
    step: list[BatchIndex] = []
    events = 0
    for index in batches:
        if step and events + index.rows > max_events:
            yield step
            step, events = [], 0
        step.append(index)
        events += index.rows
    if step:
        yield step


def _is_segment_file_path(relative: str) -> bool:
    """``staging/<dir>/part-….parquet`` and nothing else (a damaged state never deletes
    anything outside staging)."""
    parts = PurePosixPath(relative).parts
    return (
        len(parts) == 3
        and parts[0] == "staging"
        and parts[1] not in {"", ".", ".."}
        and SEGMENT_FILE_PATTERN.fullmatch(parts[2]) is not None
    )


def _remove_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (or already gone)
        directory.rmdir()


def _finish(report: MaterializeReport, state: StagingState | None) -> MaterializeReport:
    if state is not None:
        report.last_applied_batch = state.last_applied_batch
        report.consistent_as_of_ts = state.consistent_as_of_ts
    return report


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
