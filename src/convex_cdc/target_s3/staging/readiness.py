"""Whether staging holds a state the source had, and if not, why: what publish and verify
refuse with.

A staging without a consistent timestamp is mid-snapshot (the source never had a
half-walked snapshot: sync must finish the walk), mid-way through a data sync's walk
(status ``snapshotting``: sync must go on until the server reports a consistent state),
or behind a checkpoint that is already consistent (a materialize failed or was killed
after its first step: materialize again). They need different fixes, so the message
tells them apart by the checkpoint.
"""

from __future__ import annotations

from convex_cdc.core.checkpoint import Checkpoint, DataSync
from convex_cdc.core.errors import ConfigError
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.staging.state import StagingState, load_staging_state


def consistent_staging(layout: DestinationLayout, *, purpose: str) -> tuple[StagingState, int]:
    """The staging state of ``layout`` and the source timestamp it is consistent as of.

    Args:
        layout: the destination.
        purpose: what the caller would do with it, completing "nothing to …", e.g.
            ``"publish"``.

    Raises:
        ConfigError: there is no staging yet, the snapshot walk is incomplete, the data
            sync is still snapshotting, or staging is behind a consistent checkpoint (each
            with its own fix).
        StateError: the staging state or the checkpoint is unusable.
    """
    staging = load_staging_state(layout.staging_state)
    if staging is not None and staging.consistent_as_of_ts is not None:
        return staging, staging.consistent_as_of_ts
    checkpoint = FileCheckpointStore(layout).load()
    why, fix = _not_consistent(staging, checkpoint)
    raise ConfigError(f"nothing to {purpose} from {layout.root}: {why}", hint=fix)


def _not_consistent(staging: StagingState | None, checkpoint: Checkpoint | None) -> tuple[str, str]:
    """Why a staging without a consistent timestamp is so, and the fix."""
    if checkpoint is not None and checkpoint.consistent_as_of is not None:
        if staging is None:
            return "no staging yet", "run `convex-cdc materialize`"
        return (
            "staging is behind the checkpoint (it holds raw batches up to "
            f"{staging.last_applied_batch}; the last materialize did not finish)",
            "run `convex-cdc materialize` to finish it",
        )
    if checkpoint is not None and isinstance(checkpoint.position, DataSync):
        return (
            "the data sync is still snapshotting; what landed so far is not a state the "
            "source ever had",
            "run `convex-cdc sync` until it reports a consistent state (stale or upToDate), "
            "then `materialize`",
        )
    why = (
        "no staging yet"
        if staging is None
        else "the initial snapshot is incomplete; a half-walked snapshot is not a state "
        "the source ever had"
    )
    return why, "run `convex-cdc sync` until the snapshot completes, then `materialize`"
