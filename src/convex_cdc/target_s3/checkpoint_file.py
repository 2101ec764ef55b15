"""The S3/export target's checkpoint store: ``<dest>/checkpoint.json``.

The file is replaced atomically and durably (temp → fsync → rename → fsync dir), so a
crash leaves either the previous checkpoint or the new one, never a mix. A file that is
corrupt, foreign or from a newer convex-cdc is an error, never a silent reset: resetting
would re-snapshot and hide the damage.
"""

from __future__ import annotations

import errno

from convex_cdc.core.checkpoint import Checkpoint
from convex_cdc.core.checkpoint_json import dumps_checkpoint, loads_checkpoint
from convex_cdc.core.errors import StateError, TargetError
from convex_cdc.target_s3.atomic_file import atomic_write_bytes
from convex_cdc.target_s3.layout import DestinationLayout


class FileCheckpointStore:
    """A :class:`~convex_cdc.core.sink.CheckpointStore` backed by ``layout.checkpoint``."""

    def __init__(self, layout: DestinationLayout) -> None:
        self.path = layout.checkpoint

    def load(self) -> Checkpoint | None:
        """The saved checkpoint, ``None`` if the file does not exist.

        Raises:
            StateError: the file is unreadable, corrupt, not a convex-cdc checkpoint,
                or written by a newer version.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(
                f"cannot read {self.path}: {exc.strerror or exc}",
                hint="fix the file's permissions",
            ) from None
        return loads_checkpoint(raw, where=str(self.path))

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the checkpoint atomically and durably.

        Raises:
            TargetError: the write failed (the previous checkpoint is left intact).
        """
        try:
            atomic_write_bytes(self.path, dumps_checkpoint(checkpoint))
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise TargetError(
                f"could not save the checkpoint {self.path}: {exc.strerror or exc}",
                hint=("free disk space" if full else "fix the destination's permissions")
                + ", then run sync again; the previous checkpoint is intact and the last "
                "batch will be replayed harmlessly",
            ) from exc
