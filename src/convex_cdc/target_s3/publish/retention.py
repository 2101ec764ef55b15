"""Garbage collection after a publish: keep the last N manifests and the files they use.

Runs only after the new manifest and the pointer are in place. Order matters for a crash
at any point: numbered manifests that fell out of the window go first, then the data
files no kept manifest refers to. A file any kept manifest names is never deleted.

A file that no manifest we know of ever named is an orphan: a publish crashed after
uploading it, or a concurrent publisher is uploading it right now and is about to name
it. Orphans are therefore deleted only once they are older than a grace period.

With Delta tables (:mod:`.delta_tables`), a file must also outlive every Delta version
within the retention that still references it, so a Delta reader in the middle of a scan,
or one travelling back within the retention, never misses a file. Every Delta version is
committed for a manifest, and a file leaves a table's Delta state at the latest in the
commit for the manifest after the last one naming it. So a manifest beyond ``keep`` is
dropped (and the files only it names become garbage) only once its *successor* was
published more than the retention ago. Delta logs (``_delta_log/``) are never swept:
they are the tables' history, and delta-rs checkpoints them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from convex_cdc.core.errors import ConvexCdcError
from convex_cdc.target_s3.publish.manifest import (
    MANIFESTS_DIR,
    Manifest,
    ManifestFormatError,
    numbered_path,
    sequence_of,
)
from convex_cdc.target_s3.publish.object_store import PublishTarget
from convex_cdc.target_s3.publish.remote_manifests import RemoteManifests

log = logging.getLogger(__name__)

DATA_PREFIXES = ("staging", "raw_change_log")
"""Top-level directories of data files under a publish target."""
DELTA_LOG_SEGMENT = "_delta_log"
"""A path with this directory in it belongs to a Delta table's log, never garbage."""


@dataclass(frozen=True, slots=True)
class GarbageCollected:
    """What one GC pass deleted."""

    files: int = 0
    manifests: int = 0
    skipped_reason: str | None = None


def collect_garbage(
    remote: RemoteManifests,
    *,
    newest: Manifest,
    keep: int,
    prefixes: tuple[str, ...],
    orphan_grace: timedelta,
    delta_retention: timedelta | None = None,
    on_delete: Callable[[str], None] | None = None,
) -> GarbageCollected:
    """Delete manifests beyond the newest ``keep`` and the data files only they used.

    Cheap when there is nothing to collect (one listing of the manifests and one per data
    prefix), so it also runs after a publish that had nothing new: what a GC killed
    half-way left behind is collected by the next publish, whatever it publishes.

    Args:
        remote: the target's manifests as read before publishing (used as a cache).
        newest: the manifest this publish just wrote (or the current one).
        keep: how many numbered manifests to keep (at least 1).
        prefixes: data directories to sweep (``staging``, and ``raw_change_log`` when the
            raw change log is published).
        orphan_grace: how old a never-referenced file must be before it is deleted.
        delta_retention: with Delta tables, how long ago a manifest's successor must have
            been published before the manifest may be dropped.
        on_delete: called with each deleted path.

    Raises:
        TargetError: the target refused a list or a delete (the published state is intact).
    """
    target: PublishTarget = remote.target
    stored = {
        sequence: info.last_modified
        for info in target.list(MANIFESTS_DIR)
        if (sequence := sequence_of(info.path)) is not None
    }
    sequences = tuple(sorted(stored))
    if sequences and sequences[-1] > newest.sequence:
        # Another publisher is ahead of us; its GC knows its own files, ours may not.
        return GarbageCollected(skipped_reason="a newer manifest exists")
    kept_sequences = set(sequences[-keep:]) | {newest.sequence}
    try:
        if delta_retention is not None:
            kept_sequences |= _within_delta_retention(
                remote, newest, delta_retention, kept_sequences, stored
            )
    except ConvexCdcError as exc:
        log.warning("garbage collection skipped: %s", exc)
        return GarbageCollected(skipped_reason="a manifest could not be read")
    dropped = [s for s in sequences if s not in kept_sequences]
    cutoff = datetime.now(UTC) - orphan_grace
    listed = [
        info
        for prefix in prefixes
        for info in target.list(prefix)
        if DELTA_LOG_SEGMENT not in info.path.split("/")
    ]
    current = newest.paths()
    if not dropped and all(info.path in current for info in listed):
        return GarbageCollected()  # the common case: nothing to read, nothing to delete

    kept = [newest]
    unreadable: list[ManifestFormatError] = []
    try:
        for sequence in kept_sequences - {newest.sequence}:
            try:
                kept.append(remote.manifest(sequence))
            except ManifestFormatError as damage:
                unreadable.append(damage)
    except ConvexCdcError as exc:
        log.warning("garbage collection skipped: a kept manifest is unreadable: %s", exc)
        return GarbageCollected(skipped_reason="a kept manifest is unreadable")
    referenced = frozenset().union(*(m.paths() for m in kept))

    once_referenced: set[str] = set()
    for sequence in dropped:
        try:
            once_referenced |= remote.manifest(sequence).paths()
        except ConvexCdcError as exc:
            log.warning("manifest %d is unreadable, deleting it anyway: %s", sequence, exc)
    dropped_paths = [numbered_path(s) for s in dropped]
    _delete(target, dropped_paths, on_delete)
    if unreadable:
        # Its files are unknown, so any file may be one of them: none is deleted until it
        # falls out of the kept manifests (then its files are orphans, swept by age).
        log.warning(
            "old data files kept: %s; restore or delete it to collect them now",
            unreadable[0].message,
        )
        return GarbageCollected(
            manifests=len(dropped_paths), skipped_reason="a kept manifest is unreadable"
        )

    garbage = [
        info.path
        for info in listed
        if info.path not in referenced
        and (info.path in once_referenced or info.last_modified < cutoff)
    ]
    _delete(target, garbage, on_delete)
    return GarbageCollected(files=len(garbage), manifests=len(dropped_paths))


def _within_delta_retention(
    remote: RemoteManifests,
    newest: Manifest,
    retention: timedelta,
    kept: set[int],
    stored: dict[int, datetime],
) -> set[int]:
    """The manifests beyond ``keep`` whose successor is younger than ``retention``.

    Walks from the oldest: publish times grow with the sequence, so the first manifest
    whose successor is too young ends the walk (every later one is kept too), and the
    cost follows the manifests about to be dropped, not the whole history.
    """
    cutoff = datetime.now(UTC) - retention
    ordered = [*(s for s in sorted(stored) if s != newest.sequence), newest.sequence]
    for index, sequence in enumerate(ordered[:-1]):
        if sequence in kept:
            break
        successor = ordered[index + 1]
        if _published_at(remote, successor, newest, stored) > cutoff:
            return {s for s in ordered[index:] if s not in kept}
    return set()


def _published_at(
    remote: RemoteManifests, sequence: int, newest: Manifest, stored: dict[int, datetime]
) -> datetime:
    """When manifest ``sequence`` was published: its ``published_at``; for an unreadable
    manifest, when its object was stored; for an unreadable time, now (kept longer)."""
    if sequence == newest.sequence:
        manifest = newest
    else:
        try:
            manifest = remote.manifest(sequence)
        except ManifestFormatError:
            return stored.get(sequence, datetime.now(UTC))
    try:
        return datetime.strptime(manifest.published_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC)


def _delete(
    target: PublishTarget, paths: list[str], on_delete: Callable[[str], None] | None
) -> None:
    target.delete(paths)
    if on_delete is not None:
        for path in paths:
            on_delete(path)
