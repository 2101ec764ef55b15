"""Garbage collection after a publish: keep the last N manifests and the files they use.

Runs only after the new manifest and the pointer are in place. Order matters for a crash
at any point: numbered manifests that fell out of the window go first, then the data
files no kept manifest refers to. A file any kept manifest names is never deleted.

A file that no manifest we know of ever named is an orphan: a publish crashed after
uploading it, or a concurrent publisher is uploading it right now and is about to name
it. Orphans are therefore deleted only once they are older than a grace period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from convex_cdc.core.errors import ConvexCdcError
from convex_cdc.target_s3.publish.manifest import Manifest, numbered_path
from convex_cdc.target_s3.publish.object_store import PublishTarget
from convex_cdc.target_s3.publish.remote_manifests import RemoteManifests, list_sequences

log = logging.getLogger(__name__)

DATA_PREFIXES = ("staging", "raw_change_log")
"""Top-level directories of data files under a publish target."""


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
    on_delete: Callable[[str], None] | None = None,
) -> GarbageCollected:
    """Delete manifests beyond the newest ``keep`` and the data files only they used.

    Args:
        remote: the target's manifests as read before publishing (used as a cache).
        newest: the manifest this publish just wrote.
        keep: how many numbered manifests to keep (at least 1).
        prefixes: data directories to sweep (``staging``, and ``raw_change_log`` when the
            raw change log is published).
        orphan_grace: how old a never-referenced file must be before it is deleted.
        on_delete: called with each deleted path.

    Raises:
        TargetError: the target refused a list or a delete (the published state is intact).
    """
    target: PublishTarget = remote.target
    sequences = list_sequences(target)
    if sequences and sequences[-1] > newest.sequence:
        # Another publisher is ahead of us; its GC knows its own files, ours may not.
        return GarbageCollected(skipped_reason="a newer manifest exists")
    kept_sequences = set(sequences[-keep:]) | {newest.sequence}
    try:
        kept = [newest] + [remote.manifest(s) for s in kept_sequences if s != newest.sequence]
    except ConvexCdcError as exc:
        log.warning("garbage collection skipped: a kept manifest is unreadable: %s", exc)
        return GarbageCollected(skipped_reason="a kept manifest is unreadable")
    referenced = frozenset().union(*(m.paths() for m in kept))

    dropped = [s for s in sequences if s not in kept_sequences]
    once_referenced: set[str] = set()
    for sequence in dropped:
        try:
            once_referenced |= remote.manifest(sequence).paths()
        except ConvexCdcError as exc:
            log.warning("manifest %d is unreadable, deleting it anyway: %s", sequence, exc)
    dropped_paths = [numbered_path(s) for s in dropped]
    _delete(target, dropped_paths, on_delete)

    cutoff = datetime.now(UTC) - orphan_grace
    garbage = [
        info.path
        for prefix in prefixes
        for info in target.list(prefix)
        if info.path not in referenced
        and (info.path in once_referenced or info.last_modified < cutoff)
    ]
    _delete(target, garbage, on_delete)
    return GarbageCollected(files=len(garbage), manifests=len(dropped_paths))


def _delete(
    target: PublishTarget, paths: list[str], on_delete: Callable[[str], None] | None
) -> None:
    target.delete(paths)
    if on_delete is not None:
        for path in paths:
            on_delete(path)
