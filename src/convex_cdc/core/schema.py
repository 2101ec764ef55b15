"""Schema fetch and fingerprinting.

``json_schemas`` describes the *inferred* shape of each table's current data, so it is
a hint, not a contract: columns appear in data before any schema shows them. convex-cdc
records a fingerprint per table at the start of every run (in the checkpoint, in raw
file metadata and in the manifest) so consumers can tell when a table's shape moved.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from convex_cdc.core.errors import AuthenticationError, ConvexApiError
from convex_cdc.core.names import TableKey
from convex_cdc.core.source import Source

log = logging.getLogger(__name__)


def table_fingerprint(schema: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON (sorted keys, no spaces) of one table's schema."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def schema_fingerprints(by_component: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``TableKey.qualified`` → fingerprint for a ``byComponent=true`` json_schemas answer."""
    return {
        TableKey(component, table).qualified: table_fingerprint(schema)
        for component, tables in by_component.items()
        for table, schema in tables.items()
    }


def fetch_schema_fingerprints(source: Source) -> dict[str, str] | None:
    """Fetch json_schemas and fingerprint every table; ``None`` if the server cannot say.

    Convex answers 400 for some schemas (``UnsupportedSchemaForExport`` and friends).
    That must not stop a sync, which types columns from the data anyway, so it is logged
    and the run goes on without fingerprints. Authentication errors still propagate.
    """
    try:
        return schema_fingerprints(source.json_schemas())
    except AuthenticationError:
        raise
    except ConvexApiError as exc:
        log.warning("json_schemas unavailable, continuing without fingerprints: %s", exc.code)
        return None
