"""Which Convex API follows a source: Data Sync, or the legacy streaming-export pair.

``--api auto`` (the CLI default) takes Data Sync where the deployment offers it and the
legacy ``list_snapshot``/``document_deltas`` pair where it does not (an older self-hosted
backend answers 404, a Convex Cloud plan without Data Sync refuses it). A destination
keeps the API it is following: one that follows a data sync stays on it, and a legacy
destination switches to Data Sync only when asked or when ``auto`` finds it available,
through the server's cursor conversion (nothing is read again).
"""

from __future__ import annotations

from typing import Literal

from convex_cdc.core.checkpoint import Checkpoint, DataSync
from convex_cdc.core.errors import ConfigError
from convex_cdc.core.source import DataSyncSource, Source

Api = Literal["data-sync", "streaming-export"]
ApiChoice = Literal["auto", "data-sync", "streaming-export"]


def choose_api(
    requested: ApiChoice, checkpoint: Checkpoint | None, source: Source, *, resnapshot: bool
) -> Api:
    """The API this run follows ``source`` with.

    Raises:
        ConfigError: ``streaming-export`` asked for a destination that follows a data sync
            (without ``--resnapshot``), or ``data-sync`` asked of a source that cannot.
        AuthenticationError: probing for Data Sync was refused for the key.
    """
    follows_data_sync = checkpoint is not None and isinstance(checkpoint.position, DataSync)
    if requested == "streaming-export":
        if follows_data_sync and not resnapshot:
            raise ConfigError(
                "this destination follows a data sync; --api streaming-export cannot continue it",
                hint="leave --api at auto (or pass --api data-sync), or pass --resnapshot to "
                "start over with the legacy API",
            )
        return "streaming-export"
    if not isinstance(source, DataSyncSource):
        if requested == "data-sync" or follows_data_sync:
            raise ConfigError(
                "this source cannot follow a deployment with Data Sync",
                hint="pass --api streaming-export (with --resnapshot for a data-sync destination)",
            )
        return "streaming-export"
    if requested == "data-sync" or follows_data_sync:
        return "data-sync"
    return "data-sync" if source.data_sync_available() else "streaming-export"
