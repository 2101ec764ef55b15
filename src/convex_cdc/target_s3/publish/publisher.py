"""``convex-cdc publish``: copy staging (and optionally the raw change log) to an object store.

Steps, in an order that keeps every reader safe:

1. Refuse while the initial snapshot is incomplete: a half-walked snapshot is not a state
   the source ever had.
2. Read the target's manifests (the remote is the source of truth; publish may run from
   another machine), refuse a prefix another deployment or destination owns
   (:mod:`.ownership`), and build the new manifest from the staging state. If it
   describes the same state as the newest published one, only repair the pointer and
   collect garbage (step 6): nothing is uploaded.
3. Upload every file no kept manifest lists with the same sha256, create-only. An object
   already at that path (a crashed publish uploaded it) counts as the same file only if
   its content has the manifest's sha256; anything else is refused, so a manifest never
   lists a digest its object does not have.
4. Commit one Delta transaction per table whose files or columns changed, making each
   table's Delta file set exactly the new manifest's (:mod:`.delta_tables`); a table that
   left the manifest is committed empty. A re-run after a crash commits only what is
   still missing. Then record each table's Delta version (``delta_versions.json``), so
   the next publish commits without reading the tables.
5. Write ``manifests/<sequence>.json`` create-only (if it exists, another publisher won:
   fail, never overwrite), then the ``manifest.json`` pointer, forward only: it is
   replaced only if it still holds an older manifest (a compare-and-swap, see
   :meth:`~.object_store.PublishTarget.put_unless`). A crash before this point leaves
   manifest readers on the previous manifest, whose files are all still there.
6. Garbage-collect beyond the last ``keep`` manifests, keeping what Delta readers may
   still read (:mod:`.retention`), and, in a local directory, sweep the partial files a
   killed publish left (:mod:`.partial_uploads`). This runs after every publish, also
   one with nothing new, so what a killed GC left behind never stays.

A Delta table is atomic on its own; across tables, the manifest is the one consistent
cut (each Delta commit names its manifest sequence, see :mod:`.delta_tables`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.errors import ConfigError, TargetError
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.io_errors import io_errors, shorten
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.locks import DestinationLock
from convex_cdc.target_s3.publish.delta_tables import (
    CommitStamp,
    DeltaCommit,
    app_id_for,
    read_known_tables,
    wanted_table,
    write_known_tables,
)
from convex_cdc.target_s3.publish.manifest import (
    POINTER_PATH,
    Manifest,
    ManifestFile,
    ManifestFormatError,
    ManifestTable,
    NewerManifestVersion,
    content_identity,
    dumps_manifest,
    loads_manifest,
    numbered_path,
)
from convex_cdc.target_s3.publish.object_store import PublishTarget, open_publish_target
from convex_cdc.target_s3.publish.ownership import PrefixOwner, claim_prefix, destination_id
from convex_cdc.target_s3.publish.partial_uploads import sweep_partial_uploads
from convex_cdc.target_s3.publish.remote_manifests import RemoteManifests
from convex_cdc.target_s3.publish.retention import GarbageCollected, collect_garbage
from convex_cdc.target_s3.publish.table_commits import commit_table
from convex_cdc.target_s3.raw.change_log_files import batch_of, committed_raw_files
from convex_cdc.target_s3.staging.readiness import consistent_staging
from convex_cdc.target_s3.staging.state import StagingState

log = logging.getLogger(__name__)

DEFAULT_KEEP: Final = 10
DEFAULT_ORPHAN_GRACE: Final = timedelta(hours=1)
DEFAULT_DELTA_RETENTION: Final = timedelta(days=7)
"""How long a file a Delta version used stays after it left the table (Delta's default
``delta.deletedFileRetentionDuration``): a reader in the middle of a scan never loses it."""
_UPLOAD_WORKERS: Final = 8


@dataclass(frozen=True, slots=True)
class PublishEvent:
    """Progress of one publish, for a progress display."""

    stage: Literal["upload", "skip", "delta", "manifest", "delete"]
    """``upload``/``skip``: a data file was uploaded or already there; ``delta``: a table's
    Delta commit was made (``path`` is the table's directory); ``manifest``: the data is in
    place and the manifest is about to be written; ``delete``: GC removed a file."""
    path: str
    bytes: int = 0
    done: int = 0
    """Data files handled so far (``upload``/``skip`` only)."""
    total: int = 0
    """Data files in the new manifest (``upload``/``skip`` only)."""


PublishProgress = Callable[[PublishEvent], None]


@dataclass(frozen=True, slots=True)
class PublishReport:
    """What one publish did."""

    target: str
    sequence: int | None
    """The new manifest's sequence; ``None`` when there was nothing new to publish."""
    manifest_url: str | None
    """Where the new numbered manifest is (``manifest.json`` holds the same content)."""
    files_uploaded: int
    files_skipped: int
    bytes_uploaded: int
    files_deleted: int
    manifests_deleted: int
    elapsed_seconds: float
    current_sequence: int | None = None
    """The newest published sequence after this run (the existing one if nothing new)."""
    repaired_pointer: bool = False
    """``manifest.json`` lagged behind the newest numbered manifest and was brought up."""
    delta_commits: int = 0
    """Delta transactions committed (one per table that changed)."""

    @property
    def nothing_new(self) -> bool:
        """The staging state was already published; no file or manifest was written."""
        return self.sequence is None

    def summary(self) -> str:
        """One line for the CLI."""
        if self.sequence is None:
            removed = (
                f"; removed {self.files_deleted} old files and {self.manifests_deleted} old "
                "manifests"
                if self.files_deleted or self.manifests_deleted
                else ""
            )
            return (
                f"nothing new to publish to {self.target}: manifest "
                f"{self.current_sequence} already describes this staging state{removed}"
            )
        return (
            f"published manifest {self.sequence} to {self.target}: "
            f"{self.files_uploaded} files uploaded ({self.bytes_uploaded} bytes), "
            f"{self.files_skipped} unchanged, {self.delta_commits} Delta commits; removed "
            f"{self.files_deleted} old files and "
            f"{self.manifests_deleted} old manifests in {self.elapsed_seconds:.1f}s"
        )


def publish(
    layout: DestinationLayout,
    to: str,
    *,
    endpoint_url: str | None = None,
    keep: int = DEFAULT_KEEP,
    include_raw: bool = False,
    progress: PublishProgress | None = None,
    orphan_grace: timedelta = DEFAULT_ORPHAN_GRACE,
    delta: bool = True,
    delta_retention: timedelta = DEFAULT_DELTA_RETENTION,
) -> PublishReport:
    """Publish the staging tables of ``layout`` to ``to`` and write the manifest last.

    Args:
        layout: the destination (``--dest``) holding staging.
        to: ``s3://bucket/prefix``, ``file:///abs/dir`` or a local directory.
        endpoint_url: S3-compatible endpoint overriding ``AWS_ENDPOINT_URL``.
        keep: how many manifests (and the files they use) to keep.
        include_raw: also publish the committed raw change log files.
        progress: called for each file handled, before the manifest, and per deletion.
        orphan_grace: age after which files no manifest ever named are removed.
        delta: also keep each published table a Delta table (needs ``deltalake``).
        delta_retention: how long a file stays after it left a table's current Delta
            version (only with ``delta``).

    Raises:
        ConfigError: staging is missing or mid-snapshot, the target holds another
            deployment's data or another destination publishes there, or an option is
            invalid.
        DestinationBusy: another publish or materialize holds the destination's lock.
        TargetError: a file could not be read or uploaded, another publisher wrote the same
            manifest sequence first, or the target is unreachable. Readers still see the
            previous manifest.
        StateError: the staging state, the checkpoint, or a manifest publish cannot do
            without (the newest, or a damaged ``manifest.json`` with nothing to rebuild it
            from) is unusable.
    """
    started = time.monotonic()
    if keep < 1:
        raise ConfigError(f"--keep must be at least 1, not {keep}", hint="use --keep 1 or more")
    if delta_retention < timedelta(0):
        raise ConfigError("the Delta retention cannot be negative", hint="use 0 or more hours")
    commit_delta = _delta_committer() if delta else None
    target = open_publish_target(to, endpoint_url=endpoint_url)
    # The staging lock too: materialize deletes the files an older state listed as soon
    # as it has saved a new one, and publish must read a state whose files stay put.
    with (
        io_errors(f"publish {layout.staging}", then="publish again"),
        DestinationLock(layout, "publish"),
        DestinationLock(layout, "staging"),
    ):
        staging = _complete_staging(layout)
        # Only the raw change log needs it: it says which raw batches are committed.
        checkpoint = FileCheckpointStore(layout).load() if include_raw else None
        remote = RemoteManifests.load(target)
        latest = remote.latest()
        _ensure_same_source(latest, staging, target)
        claim_prefix(target, PrefixOwner(staging.deployment_url, destination_id(layout)))
        candidate, local = _build_manifest(layout, staging, checkpoint, latest, include_raw)

        def clean_up(newest: Manifest) -> GarbageCollected:
            gc = collect_garbage(
                remote,
                newest=newest,
                keep=keep,
                prefixes=("staging", "raw_change_log") if include_raw else ("staging",),
                orphan_grace=orphan_grace,
                delta_retention=delta_retention if delta else None,
                on_delete=(lambda p: progress(PublishEvent("delete", p))) if progress else None,
            )
            partial = _sweep_partial_uploads(target, orphan_grace)
            return replace(gc, files=gc.files + partial)

        if latest is not None and content_identity(candidate) == content_identity(latest):
            repaired = remote.pointer_is_stale() and _advance_pointer(target, latest)
            gc = clean_up(latest)
            return PublishReport(
                target=target.describe(),
                sequence=None,
                manifest_url=None,
                files_uploaded=0,
                files_skipped=sum(1 for _ in candidate.files()),
                bytes_uploaded=0,
                files_deleted=gc.files,
                manifests_deleted=gc.manifests,
                elapsed_seconds=time.monotonic() - started,
                current_sequence=latest.sequence,
                repaired_pointer=repaired,
            )
        if latest is not None and latest.consistent_as_of_ts > candidate.consistent_as_of_ts:
            log.warning(
                "the published state (ts %d) is newer than this staging (ts %d); publishing "
                "moves readers back in time",
                latest.consistent_as_of_ts,
                candidate.consistent_as_of_ts,
            )
        already = {f.path: f.sha256 for m in remote.kept(keep) for f in m.files()}
        uploaded, skipped, nbytes = _upload(
            target, list(candidate.files()), local, already, progress
        )
        manifest = replace(candidate, sequence=remote.latest_sequence + 1, published_at=_utc_now())
        commits = (
            commit_delta(target, latest, manifest, delta_retention)
            if commit_delta is not None
            else []
        )
        for commit in commits:
            if progress is not None:
                progress(PublishEvent("delta", commit.directory))
        _write_manifest(target, manifest, progress)
        gc = clean_up(manifest)
    return PublishReport(
        target=target.describe(),
        sequence=manifest.sequence,
        manifest_url=target.url_of(numbered_path(manifest.sequence)),
        files_uploaded=uploaded,
        files_skipped=skipped,
        bytes_uploaded=nbytes,
        files_deleted=gc.files,
        manifests_deleted=gc.manifests,
        elapsed_seconds=time.monotonic() - started,
        current_sequence=manifest.sequence,
        delta_commits=len(commits),
    )


DeltaCommitter = Callable[[PublishTarget, Manifest | None, Manifest, timedelta], list[DeltaCommit]]


def _delta_committer() -> DeltaCommitter:
    """:func:`_commit_delta_tables`, once ``deltalake`` is known to be installed."""
    if importlib.util.find_spec("deltalake") is None:
        raise ConfigError(
            "publishing Delta tables needs the deltalake package",
            hint="pip install 'convex-cdc[s3]' (it brings deltalake), or publish with --no-delta",
        )
    # Only looked up, not imported: an ordinary publish never loads it (see delta_tables).
    return _commit_delta_tables


def _commit_delta_tables(
    target: PublishTarget, latest: Manifest | None, manifest: Manifest, retention: timedelta
) -> list[DeltaCommit]:
    """One Delta commit per table whose Delta state differs from ``manifest``'s.

    Every table of the manifest is checked, not only the ones that changed since
    ``latest``: a publish that crashed between two tables' commits, or a target published
    before it had Delta tables, is brought up to date here.
    """
    stamp = CommitStamp(
        app_id=app_id_for(manifest.deployment_url),
        sequence=manifest.sequence,
        consistent_as_of_ts=manifest.consistent_as_of_ts,
        retention=retention,
    )
    wanted = [wanted_table(t) for t in manifest.tables]
    if latest is not None:
        wanted += [
            wanted_table(t, dropped=True) for t in latest.tables if manifest.table(t.key) is None
        ]
    # Where the previous publish left each table: then a commit is one create-only write
    # of the next log entry instead of opening the table (see delta_tables).
    known = read_known_tables(target, latest, stamp)
    # Tables are independent and each commit is one or a few small requests: run them
    # side by side so the Delta work follows the slowest table, not the number of tables.
    with ThreadPoolExecutor(max_workers=_UPLOAD_WORKERS, thread_name_prefix="delta") as pool:
        outcomes = list(
            pool.map(lambda t: commit_table(target, t, stamp, known.get(t.directory)), wanted)
        )
    write_known_tables(target, manifest, stamp, outcomes)
    commits = []
    for outcome in outcomes:
        commit = outcome.commit
        if commit is not None:
            log.info(
                "Delta commit %d of %s: +%d -%d files%s",
                commit.version,
                commit.directory,
                commit.added,
                commit.removed,
                ", new schema" if commit.schema_changed else "",
            )
            commits.append(commit)
    return commits


def _complete_staging(layout: DestinationLayout) -> StagingState:
    staging, _ = consistent_staging(layout, purpose="publish")
    return staging


def _ensure_same_source(
    latest: Manifest | None, staging: StagingState, target: PublishTarget
) -> None:
    if latest is not None and latest.deployment_url != staging.deployment_url:
        raise ConfigError(
            f"{target.describe()} holds data published from "
            f"{shorten(latest.deployment_url, 120)}, not {staging.deployment_url}",
            hint="publish each deployment to its own prefix",
        )


def _build_manifest(
    layout: DestinationLayout,
    staging: StagingState,
    checkpoint: Checkpoint | None,
    latest: Manifest | None,
    include_raw: bool,
) -> tuple[Manifest, dict[str, Path]]:
    """The manifest for the current staging (sequence 0) and each file's local path."""
    assert staging.consistent_as_of_ts is not None
    tables = tuple(
        ManifestTable(
            component=t.key.component,
            table=t.key.table,
            row_count=t.row_count,
            schema_fingerprint=t.schema_fingerprint,
            columns=t.columns,
            files=tuple(ManifestFile(f.path, f.rows, f.bytes, f.sha256) for f in t.files),
            widenings=t.widenings,
        )
        for t in sorted(staging.tables, key=lambda t: t.key)
    )
    raw: tuple[ManifestFile, ...] | None = None
    if include_raw:
        if checkpoint is None:
            raise ConfigError(
                f"no checkpoint in {layout.root}, so no raw batch is known to be committed",
                hint="run `convex-cdc sync` first, or publish without the raw change log",
            )
        raw = _raw_manifest_files(layout, checkpoint.batch_seq, latest)
    manifest = Manifest(
        sequence=0,
        published_at="",
        deployment_url=staging.deployment_url,
        consistent_as_of_ts=staging.consistent_as_of_ts,
        tables=tables,
        raw_change_log=raw,
    )
    return manifest, {f.path: layout.root / f.path for f in manifest.files()}


def _raw_manifest_files(
    layout: DestinationLayout, up_to_batch: int, latest: Manifest | None
) -> tuple[ManifestFile, ...]:
    """The committed raw files, reusing what the newest manifest already knows about them.

    Committed raw files never change, so entries already published are kept as they are
    (if the local file still has that size) and only batch indexes past the newest
    published batch are read: the cost follows the new batches, not the log's length.
    """
    files: list[ManifestFile] = []
    newest_published = 0
    for previous in (latest.raw_change_log or ()) if latest is not None else ():
        batch = batch_of(previous.path)
        if batch is None or batch > up_to_batch:
            continue  # not committed here: this copy of the log is behind the published one
        newest_published = max(newest_published, batch)
        local = layout.root / previous.path
        if not local.is_file():
            continue
        if local.stat().st_size == previous.bytes:
            files.append(previous)
        else:
            files.append(_describe_local(local, previous.path, previous.rows))
    for raw in committed_raw_files(layout, up_to_batch=up_to_batch, after_batch=newest_published):
        files.append(_describe_local(layout.root / raw.path, raw.path, raw.rows))
    return tuple(sorted(files, key=lambda f: (batch_of(f.path) or 0, f.path)))


def _describe_local(local: Path, path: str, rows: int) -> ManifestFile:
    data = local.read_bytes()
    return ManifestFile(path, rows, len(data), hashlib.sha256(data).hexdigest())


def _upload(
    target: PublishTarget,
    files: list[ManifestFile],
    local: dict[str, Path],
    already: dict[str, str],
    progress: PublishProgress | None,
) -> tuple[int, int, int]:
    """Upload what is not already published; returns (uploaded, skipped, bytes uploaded).

    ``already`` maps each path a kept manifest lists to the sha256 it lists: only the same
    path with the same digest is skipped without looking at the target.
    """
    uploaded = skipped = nbytes = done = 0
    todo = [f for f in files if already.get(f.path) != f.sha256]
    for f in files:
        if already.get(f.path) == f.sha256:
            skipped += 1
            done += 1
            if progress is not None:
                progress(PublishEvent("skip", f.path, f.bytes, done, len(files)))
    pool = ThreadPoolExecutor(max_workers=_UPLOAD_WORKERS, thread_name_prefix="publish")
    try:
        results = pool.map(lambda f: (f, _upload_one(target, f, local[f.path])), todo)
        for f, created in results:
            done += 1
            if created:
                uploaded += 1
                nbytes += f.bytes
            else:
                skipped += 1
            if progress is not None:
                stage: Literal["upload", "skip"] = "upload" if created else "skip"
                progress(PublishEvent(stage, f.path, f.bytes, done, len(files)))
    finally:
        # On a failure, uploads not yet started are dropped instead of run to completion.
        pool.shutdown(wait=True, cancel_futures=True)
    return uploaded, skipped, nbytes


def _upload_one(target: PublishTarget, file: ManifestFile, local: Path) -> bool:
    """Upload one immutable file create-only; ``False`` if the same file was already there."""
    try:
        data = local.read_bytes()
    except FileNotFoundError:
        raise TargetError(
            f"{local} is listed in the staging state but does not exist",
            hint="staging changed while publishing (a materialize ran?); publish again",
        ) from None
    if len(data) != file.bytes or hashlib.sha256(data).hexdigest() != file.sha256:
        raise TargetError(
            f"{local} does not match the size/sha256 its state records",
            hint="staging is damaged or changed while publishing; run `convex-cdc materialize`"
            " and publish again",
        )
    if target.put_if_absent(file.path, data):
        return True
    # Only content proves it is the same file: a name or a size can match by accident
    # (a raw batch rewritten after a lost checkpoint keeps its name, often its size).
    existing = target.get(file.path)
    if existing is not None and hashlib.sha256(existing).hexdigest() == file.sha256:
        return False
    raise TargetError(
        f"{target.url_of(file.path)} already exists with different content "
        f"({len(existing) if existing is not None else 'no'} bytes, sha256 differs from "
        f"{file.sha256[:16]}…)",
        hint="the published object and the local file disagree (another tool wrote into "
        "this prefix, or a local file was rewritten); publish to a prefix only convex-cdc "
        "uses, or restore the local file",
    )


def _write_manifest(
    target: PublishTarget, manifest: Manifest, progress: PublishProgress | None
) -> None:
    path = numbered_path(manifest.sequence)
    if progress is not None:
        progress(PublishEvent("manifest", path))
    body = dumps_manifest(manifest)
    if not target.put_if_absent(path, body):
        raise TargetError(
            f"another publisher already wrote {target.url_of(path)}; this publish stopped "
            "before changing manifest.json",
            hint="make sure only one publish runs per prefix, then publish again",
        )
    if not _advance_pointer(target, manifest):
        raise TargetError(
            f"{target.url_of(POINTER_PATH)} already points at a manifest newer than "
            f"{manifest.sequence}, so it was left as is ({target.url_of(path)} is written)",
            hint="another publisher writes to this prefix; publish each destination to its "
            "own prefix",
        )


def _advance_pointer(target: PublishTarget, manifest: Manifest) -> bool:
    """Point ``manifest.json`` at ``manifest`` unless it already holds this or a newer one.

    A damaged pointer is replaced (it is only a copy of the newest numbered manifest); a
    pointer from a newer convex-cdc is kept. Returns whether the pointer was written.
    """
    where = target.url_of(POINTER_PATH)

    def at_or_past(raw: bytes) -> bool:
        try:
            current = loads_manifest(raw, where=where)
        except NewerManifestVersion:
            return True
        except ManifestFormatError:
            return False
        return current.sequence >= manifest.sequence

    return target.put_unless(POINTER_PATH, dumps_manifest(manifest), keep=at_or_past)


def _sweep_partial_uploads(target: PublishTarget, grace: timedelta) -> int:
    directory = target.local_directory
    if directory is None:
        return 0  # S3 writes are atomic: a killed upload leaves nothing behind
    removed = sweep_partial_uploads(directory, older_than=grace)
    for path in removed:
        log.info("removed %s, left by a publish that was killed while writing it", path)
    return len(removed)


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
