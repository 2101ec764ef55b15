"""Commit one published table: the cheap way when the recorded state allows, else delta-rs.

:func:`~convex_cdc.target_s3.publish.delta_tables.commit_blind` writes the next log entry
of a table whose state the last publish recorded; when it cannot (a new schema, a table
that moved on, no record), :mod:`.delta_rs` reads the table and commits. The two are
chosen here so that neither module needs the other, and ``deltalake`` is loaded only when
delta-rs is needed (it is CPU work an ordinary publish does not need).
"""

from __future__ import annotations

from convex_cdc.target_s3.publish.delta_tables import (
    CHECKPOINT_INTERVAL,
    CommitStamp,
    KnownTable,
    TableOutcome,
    WantedTable,
    commit_blind,
)
from convex_cdc.target_s3.publish.object_store import PublishTarget


def commit_table(
    target: PublishTarget, wanted: WantedTable, stamp: CommitStamp, known: KnownTable | None
) -> TableOutcome:
    """Make the Delta table of ``wanted.directory`` hold exactly ``wanted``, in one commit.

    Args:
        target: the publish target the table lives in.
        wanted: the state the table must have (its entry in the new manifest).
        stamp: what the commit carries.
        known: the table's state as the newest manifest left it, if recorded; then the
            commit is written without reading the table, unless the table moved on.

    Returns:
        The table's version afterwards, and the commit (``None`` when the table already
        held that state: nothing was written).

    Raises:
        TargetError: the store failed, another writer committed concurrently, the table
            was committed for a newer manifest than this one, or its log is damaged.
    """
    location = target.delta_location(wanted.directory)
    outcome = commit_blind(target, wanted, stamp, known)
    if outcome is None:
        from convex_cdc.target_s3.publish import delta_rs

        return delta_rs.commit_after_reading(location, wanted, stamp)
    if outcome.commit is not None and (outcome.version + 1) % CHECKPOINT_INTERVAL == 0:
        # The same versions delta-rs's post-commit hook checkpoints at.
        from convex_cdc.target_s3.publish import delta_rs

        delta_rs.checkpoint(location)
    return outcome
