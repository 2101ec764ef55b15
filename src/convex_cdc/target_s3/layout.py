"""Where everything lives under a ``--dest`` directory (the S3/export target).

::

    <dest>/
      checkpoint.json                        the source checkpoint (FileCheckpointStore)
      raw_change_log/
        <table-dir>/batch=<seq:012d>.parquet one file per table per batch (append-only)
        _batches/<seq:012d>.json             batch index, written after the batch's files
      staging/
        <table-dir>/part-<bucket>-<hash>.parquet   current state, content-named
        _state.json                          staging state (StagingState)
      last_publish.json                      what the last `publish` did (for `status`)
      .locks/                                one lock file per role (sync, staging, publish)

``<table-dir>`` is the table name for the root component and ``<component>.<table>``
(component path segments joined with ``.``) otherwise; see :mod:`.table_paths`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DestinationLayout:
    """Paths of one destination directory.

    Each command builds one with :meth:`at` from ``--dest`` and hands the object to every
    sink, store, lock and stage it uses, so all of them agree on one absolute root.
    """

    root: Path

    @classmethod
    def at(cls, dest: str | Path) -> DestinationLayout:
        """The layout rooted at ``dest`` (made absolute once, here)."""
        return cls(Path(dest).expanduser().absolute())

    @property
    def checkpoint(self) -> Path:
        """The checkpoint file."""
        return self.root / "checkpoint.json"

    @property
    def raw_change_log(self) -> Path:
        """Root of the append-only raw change log."""
        return self.root / "raw_change_log"

    @property
    def batch_index(self) -> Path:
        """Directory of per-batch index files."""
        return self.raw_change_log / "_batches"

    @property
    def staging(self) -> Path:
        """Root of the current-state staging tables."""
        return self.root / "staging"

    @property
    def staging_state(self) -> Path:
        """The staging state file."""
        return self.staging / "_state.json"

    @property
    def last_publish(self) -> Path:
        """Record of the last publish, read by ``status``."""
        return self.root / "last_publish.json"

    @property
    def locks(self) -> Path:
        """Directory of lock files."""
        return self.root / ".locks"
