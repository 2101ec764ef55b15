"""Turn a Convex table into a directory name that cannot escape the destination.

Table and component names come from the server, so they are untrusted input. The
directory name is :func:`convex_cdc.core.names.table_dir_name` (the same in every
target): the table name for the root component, ``<component segments joined by
".">.<table>`` otherwise.

Every name is checked twice: first against the Convex identifier grammar (which already
excludes NUL, separators, ``..``, and non-ASCII lookalikes), then, as defence in depth,
the joined path is resolved and must stay inside the root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from convex_cdc.core import names
from convex_cdc.core.errors import TargetError
from convex_cdc.core.names import TableKey

MAX_DIR_NAME_BYTES: Final = 255
"""The usual file-name limit (ext4, APFS, NTFS)."""

RESERVED_DIR_NAMES: Final = frozenset({"_batches", "_state.json"})
"""Names the destination uses for itself next to table directories (see
:mod:`convex_cdc.target_s3.layout`)."""

_HINT: Final = (
    "this name did not come from a Convex deployment; check --url, and report it if it did"
)


def table_dir_name(key: TableKey) -> str:
    """The directory name of ``key``'s table, validated.

    Raises:
        TargetError: the table or component name is not a Convex identifier, the result is
            too long for a file name, or it is a name the destination reserves.
    """
    try:
        name = names.table_dir_name(key)
    except ValueError as exc:
        raise TargetError(str(exc), hint=_HINT) from None
    if len(name.encode()) > MAX_DIR_NAME_BYTES:
        raise TargetError(
            f"refusing table {_show(key.qualified)}: its directory name would be "
            f"{len(name.encode())} bytes, over the {MAX_DIR_NAME_BYTES}-byte file-name limit",
            hint="deselect this table, or shorten the component name",
        )
    if name in RESERVED_DIR_NAMES:
        raise TargetError(
            f"refusing table {_show(key.qualified)}: its directory name {name!r} is reserved "
            "by convex-cdc",
            hint="deselect this table, or rename the component",
        )
    return name


def resolve_table_dir(root: Path, key: TableKey) -> Path:
    """The directory of ``key``'s table under ``root``; creates nothing.

    Raises:
        TargetError: the name is not safe (see :func:`table_dir_name`) or the resolved path
            would leave ``root`` (for example through a symlink planted inside it).
    """
    name = table_dir_name(key)
    # Defence in depth: the grammar above already rules these out.
    if "\x00" in name or os.sep in name or (os.altsep and os.altsep in name) or name in {".", ".."}:
        raise TargetError(f"refusing table {_show(key.qualified)}: unsafe path", hint=_HINT)
    candidate = root / name
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(candidate))
    if real.parent != real_root:
        raise TargetError(
            f"refusing table {_show(key.qualified)}: {candidate} resolves to {real}, outside "
            f"{real_root}",
            hint="remove the symlink or stray entry from the destination directory",
        )
    return candidate


def _show(name: str, limit: int = 80) -> str:
    text = name if len(name) <= limit else name[:limit] + "…"
    return repr(text)
