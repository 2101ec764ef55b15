"""The manifests already stored under a publish target: the remote is the source of truth.

Publish may run from another machine than the previous one, so what was published is
learnt from the target itself: the ``manifest.json`` pointer and the numbered
``manifests/<sequence>.json`` files. The newest numbered manifest wins over a stale
pointer (a publisher that crashed between writing the two leaves exactly that).

Damaged manifests, decided once for every case:

* ``manifest.json`` is by contract a full copy of the newest numbered manifest, written
  after it. If it cannot be read, readers are already broken, and the numbered manifest
  restores it exactly: publish warns and rewrites it from there (as for a stale pointer).
  Refused (exit 6) instead when there is no readable numbered manifest to rebuild it
  from, or the pointer was written by a newer convex-cdc (never overwritten).
* The newest numbered manifest, when the pointer does not already hold it, is the
  published state: if it is unreadable, publish refuses (exit 6) naming it.
* An older numbered manifest only protects its files from garbage collection. If it is
  unreadable, publishing goes on with a warning; GC keeps every file while it is among
  the kept manifests (its files are unknown), and deletes it once it falls out of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from convex_cdc.core.errors import StateError, TargetError
from convex_cdc.target_s3.publish.manifest import (
    MANIFESTS_DIR,
    POINTER_PATH,
    Manifest,
    ManifestFormatError,
    NewerManifestVersion,
    loads_manifest,
    numbered_path,
    sequence_of,
)
from convex_cdc.target_s3.publish.object_store import PublishTarget

log = logging.getLogger(__name__)


def read_pointer(target: PublishTarget) -> Manifest | None:
    """The manifest ``manifest.json`` points readers at, or ``None`` if nothing was published.

    Raises:
        ManifestFormatError: the pointer is not a manifest this version reads.
        TargetError: the target cannot be read.
    """
    raw = target.get(POINTER_PATH)
    if raw is None:
        return None
    return loads_manifest(raw, where=target.url_of(POINTER_PATH))


def list_sequences(target: PublishTarget) -> tuple[int, ...]:
    """The sequences of the numbered manifests stored under the target, ascending."""
    found = (sequence_of(info.path) for info in target.list(MANIFESTS_DIR))
    return tuple(sorted(s for s in found if s is not None))


@dataclass(slots=True)
class RemoteManifests:
    """The pointer and numbered manifests of one target, read lazily and cached."""

    target: PublishTarget
    pointer: Manifest | None
    sequences: tuple[int, ...]
    _cache: dict[int, Manifest] = field(default_factory=dict)
    pointer_damaged: bool = False
    """``manifest.json`` exists but cannot be read; :meth:`latest` rebuilds it."""

    @classmethod
    def load(cls, target: PublishTarget) -> RemoteManifests:
        """Read the pointer and list the numbered manifests (two requests).

        Raises:
            StateError: the pointer is unreadable and cannot be rebuilt, or was written by
                a newer convex-cdc (``NewerManifestVersion``).
            TargetError: the target cannot be read.
        """
        sequences = list_sequences(target)
        try:
            pointer = read_pointer(target)
        except NewerManifestVersion:
            raise
        except ManifestFormatError as damage:
            if not sequences:
                raise StateError(
                    f"{damage.message}, and no numbered manifest is there to rebuild it from",
                    hint=f"restore {target.url_of(POINTER_PATH)} from a backup, or delete it "
                    "if nothing convex-cdc published lives under this prefix; then publish "
                    "again",
                ) from None
            log.warning(
                "%s; publish rewrites it from %s",
                damage.message,
                target.url_of(numbered_path(sequences[-1])),
            )
            return cls(target, None, sequences, pointer_damaged=True)
        remote = cls(target, pointer, sequences)
        if pointer is not None:
            remote._cache[pointer.sequence] = pointer
        return remote

    @property
    def latest_sequence(self) -> int:
        """The highest sequence published so far (0 if none)."""
        pointed = self.pointer.sequence if self.pointer is not None else 0
        return max((*self.sequences, pointed))

    def latest(self) -> Manifest | None:
        """The newest published manifest, whether or not the pointer names it yet.

        Raises:
            StateError: the newest numbered manifest, which the pointer does not hold, is
                unreadable.
            TargetError: it cannot be read.
        """
        if not self.sequences or (
            self.pointer is not None and self.pointer.sequence >= self.sequences[-1]
        ):
            return self.pointer
        newest = self.sequences[-1]
        where = self.target.url_of(numbered_path(newest))
        try:
            return self.manifest(newest)
        except ManifestFormatError as damage:
            raise StateError(
                f"{damage.message}; it is the newest published manifest, so publish cannot "
                "tell what is published",
                hint=f"restore it from a backup, or delete {where} (the next publish writes "
                "that sequence again from staging)",
            ) from None

    def pointer_is_stale(self) -> bool:
        """``manifest.json`` is missing, damaged or older than the newest numbered manifest."""
        return bool(self.sequences) and (
            self.pointer is None or self.pointer.sequence < self.sequences[-1]
        )

    def manifest(self, sequence: int) -> Manifest:
        """One numbered manifest (read once, then cached).

        Raises:
            ManifestFormatError: it is not a manifest this version reads.
            TargetError: it cannot be read (or vanished).
        """
        cached = self._cache.get(sequence)
        if cached is not None:
            return cached
        path = numbered_path(sequence)
        raw = self.target.get(path)
        if raw is None:
            raise TargetError(
                f"{self.target.url_of(path)} vanished while publishing",
                hint="another publisher is cleaning up this prefix; publish again",
            )
        manifest = loads_manifest(raw, where=self.target.url_of(path))
        self._cache[sequence] = manifest
        return manifest

    def kept(self, keep: int) -> list[Manifest]:
        """The readable ones of the newest ``keep`` numbered manifests (and the pointer's),
        newest first; an unreadable one is left out with a warning (it only saves uploads).
        """
        kept = []
        for sequence in reversed(self.sequences[-keep:]):
            try:
                kept.append(self.manifest(sequence))
            except ManifestFormatError as damage:
                log.warning("%s; publishing goes on without it", damage.message)
        if self.pointer is not None and self.pointer.sequence not in self.sequences[-keep:]:
            kept.append(self.pointer)
        return kept
