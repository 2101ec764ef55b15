"""The manifests already stored under a publish target: the remote is the source of truth.

Publish may run from another machine than the previous one, so what was published is
learnt from the target itself: the ``manifest.json`` pointer and the numbered
``manifests/<sequence>.json`` files. The newest numbered manifest wins over a stale
pointer (a publisher that crashed between writing the two leaves exactly that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from convex_cdc.core.errors import TargetError
from convex_cdc.target_s3.publish.manifest import (
    MANIFESTS_DIR,
    POINTER_PATH,
    Manifest,
    loads_manifest,
    numbered_path,
    sequence_of,
)
from convex_cdc.target_s3.publish.object_store import PublishTarget


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

    @classmethod
    def load(cls, target: PublishTarget) -> RemoteManifests:
        """Read the pointer and list the numbered manifests (two requests)."""
        pointer = read_pointer(target)
        remote = cls(target, pointer, list_sequences(target))
        if pointer is not None:
            remote._cache[pointer.sequence] = pointer
        return remote

    @property
    def latest_sequence(self) -> int:
        """The highest sequence published so far (0 if none)."""
        pointed = self.pointer.sequence if self.pointer is not None else 0
        return max((*self.sequences, pointed))

    def latest(self) -> Manifest | None:
        """The newest published manifest, whether or not the pointer names it yet."""
        if not self.sequences or (
            self.pointer is not None and self.pointer.sequence >= self.sequences[-1]
        ):
            return self.pointer
        return self.manifest(self.sequences[-1])

    def pointer_is_stale(self) -> bool:
        """A numbered manifest is newer than the one ``manifest.json`` holds."""
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
        """The newest ``keep`` numbered manifests (and the pointer's), newest first."""
        kept = [self.manifest(s) for s in reversed(self.sequences[-keep:])]
        if self.pointer is not None and self.pointer.sequence not in self.sequences[-keep:]:
            kept.append(self.pointer)
        return kept
