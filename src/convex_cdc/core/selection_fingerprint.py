"""The fingerprint of a run's selection, and what a changed one means for a destination.

A checkpoint records the fingerprint of the selection its data was extracted with (see
:attr:`~convex_cdc.core.checkpoint.Checkpoint.selection_fingerprint`). The fingerprint is
taken from the canonical Convex selection object, so two spellings of one selection
(patterns in another order, ``incl`` for ``included``, no selection for "everything") are
the same selection.

A run with another selection is never silently mixed in:

* a destination followed with Data Sync takes it: the server sends a truncate for each
  newly selected table and walks it; a deselected table keeps its rows;
* a legacy destination (``list_snapshot``/``document_deltas``) refuses it: those
  endpoints would deliver only the future changes of a newly selected table. This holds
  for a legacy destination switched to Data Sync in the same run too, because the cursor
  conversion counts every table selected *now* as already synced.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from convex_cdc.core.checkpoint import Checkpoint, DataSync
from convex_cdc.core.errors import ConfigError
from convex_cdc.core.selection import Selection

SelectionChange = Literal["new", "unchanged", "adopted", "changed"]
"""``new``: a new destination or ``--resnapshot``; ``adopted``: the checkpoint predates
selection fingerprints; ``changed``: a data sync takes another selection."""


def selection_fingerprint(selection: Selection | None) -> str:
    """``sha256:<hex>`` of the canonical selection object (``None`` is everything)."""
    wire = (selection if selection is not None else Selection.everything()).to_wire()
    text = json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def selection_change(
    checkpoint: Checkpoint | None,
    fingerprint: str,
    *,
    resnapshot: bool,
    switching_to_data_sync: bool = False,
) -> SelectionChange:
    """How this run's selection (``fingerprint``) relates to the destination's.

    ``switching_to_data_sync``: the run moves a legacy destination to Data Sync (only
    changes the advice given when it refuses).

    Raises:
        ConfigError: a legacy destination built with another selection.
    """
    if checkpoint is None or resnapshot:
        return "new"
    recorded = checkpoint.selection_fingerprint
    if recorded is None:
        return "adopted"
    if recorded == fingerprint:
        return "unchanged"
    if isinstance(checkpoint.position, DataSync):
        return "changed"
    way_out = (
        "run once more with the previous --include/--exclude to switch this destination to "
        "Data Sync, which then walks newly selected tables by itself; or pass --resnapshot"
        if switching_to_data_sync
        else "run with the previous --include/--exclude, or pass --resnapshot to rebuild "
        "this destination with the new selection"
    )
    raise ConfigError(
        "the selection (--include/--exclude) differs from the one this destination was "
        "built with; the streaming-export API would deliver only future changes of newly "
        "selected tables and columns",
        hint=way_out,
    )
