"""The publish manifest: which immutable files make up one consistent published state.

``<prefix>/manifest.json`` always holds a full copy of the newest manifest, which is
also kept as ``<prefix>/manifests/<sequence:012d>.json``. A reader
that follows ``manifest.json`` sees only complete sets of files, because publish writes
the manifest after every file it names. Paths are relative to the prefix.

Example (``manifest_to_json`` output; lists cut)::

    {
      "format": "convex-cdc.manifest",
      "version": 1,
      "sequence": 17,
      "published_at": "2026-11-26T10:00:00Z",
      "source": {"deployment_url": "https://happy-animal-123.convex.cloud"},
      "consistent_as_of_ts": 1764151200000000000,
      "tables": [
        {"component": "", "table": "messages", "row_count": 120034,
         "schema_fingerprint": "sha256:…",
         "columns": [{"name": "_id", "type": "string", "nullable": false}, …],
         "files": [{"path": "staging/messages/part-0003-….parquet", "rows": 60017,
                    "bytes": 5123456, "sha256": "…"}],
         "widenings": [{"column": "score", "from": "int64", "to": "json", "batch": 42}]}
      ],
      "raw_change_log": {"files": [{"path": "raw_change_log/messages/batch=….parquet", …}]}
    }

``raw_change_log`` is present only when the raw change log is published too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from convex_cdc.core.columns import ColumnSpec, Widening
from convex_cdc.core.errors import StateError
from convex_cdc.core.names import TableKey
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.io_errors import shorten

MANIFEST_FORMAT: Final = "convex-cdc.manifest"
MANIFEST_VERSION: Final = 1
POINTER_PATH: Final = "manifest.json"
"""The manifest readers follow: a full copy of the newest numbered manifest."""
MANIFESTS_DIR: Final = "manifests"

_NUMBERED: Final = re.compile(r"manifests/(\d{12})\.json")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


_QUOTED: Final = 120
"""Longest piece of a stored manifest a message quotes: a manifest may come from anywhere."""


class ManifestFormatError(StateError):
    """A stored manifest is not one this version of convex-cdc can read (exit 6)."""


class NewerManifestVersion(ManifestFormatError):
    """A stored manifest was written by a newer convex-cdc: never overwrite it, upgrade."""


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One immutable data file, relative to the prefix."""

    path: str
    rows: int
    bytes: int
    sha256: str
    """Lowercase hex digest of the file's bytes."""


@dataclass(frozen=True, slots=True)
class ManifestTable:
    """One Convex table's current state as a set of parquet files."""

    component: str
    table: str
    row_count: int
    schema_fingerprint: str | None
    columns: tuple[ColumnSpec, ...]
    files: tuple[ManifestFile, ...]
    widenings: tuple[Widening, ...] = ()

    @property
    def key(self) -> TableKey:
        """The table's key."""
        return TableKey(self.component, self.table)


@dataclass(frozen=True, slots=True)
class Manifest:
    """One published, consistent state of every table."""

    sequence: int
    published_at: str
    """UTC, ISO 8601 with a ``Z`` suffix."""
    deployment_url: str
    consistent_as_of_ts: int
    """Convex timestamp (ns) at which every table equals the source's state."""
    tables: tuple[ManifestTable, ...]
    raw_change_log: tuple[ManifestFile, ...] | None = None
    """Committed raw change log files, when they are published too."""

    def table(self, key: TableKey) -> ManifestTable | None:
        """One table's entry, if the manifest has it."""
        return next((t for t in self.tables if t.key == key), None)

    def files(self) -> Iterator[ManifestFile]:
        """Every data file the manifest refers to."""
        for table in self.tables:
            yield from table.files
        yield from self.raw_change_log or ()

    def paths(self) -> frozenset[str]:
        """The paths of every data file the manifest refers to."""
        return frozenset(f.path for f in self.files())


def numbered_path(sequence: int) -> str:
    """Where the manifest with ``sequence`` is kept: ``manifests/<sequence:012d>.json``."""
    return f"{MANIFESTS_DIR}/{sequence:012d}.json"


def sequence_of(path: str) -> int | None:
    """The sequence of a numbered manifest path, ``None`` for any other path."""
    match = _NUMBERED.fullmatch(path)
    return int(match.group(1)) if match else None


def manifest_to_json(manifest: Manifest) -> dict[str, Any]:
    """The manifest as a JSON-ready dict, in the documented key order."""
    data: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "sequence": manifest.sequence,
        "published_at": manifest.published_at,
        "source": {"deployment_url": manifest.deployment_url},
        "consistent_as_of_ts": manifest.consistent_as_of_ts,
        "tables": [
            {
                "component": t.component,
                "table": t.table,
                "row_count": t.row_count,
                "schema_fingerprint": t.schema_fingerprint,
                "columns": [c.to_json() for c in t.columns],
                "files": [_file_to_json(f) for f in t.files],
                "widenings": [w.to_json() for w in t.widenings],
            }
            for t in manifest.tables
        ],
    }
    if manifest.raw_change_log is not None:
        data["raw_change_log"] = {"files": [_file_to_json(f) for f in manifest.raw_change_log]}
    return data


def dumps_manifest(manifest: Manifest) -> bytes:
    """The manifest as indented UTF-8 JSON bytes, as stored."""
    return (json.dumps(manifest_to_json(manifest), indent=2) + "\n").encode()


def content_identity(manifest: Manifest) -> str:
    """A digest of everything but ``sequence`` and ``published_at``.

    Two manifests with the same identity describe the same published state, so a
    publish whose manifest has the identity of the current one has nothing new.
    """
    data = manifest_to_json(manifest)
    del data["sequence"], data["published_at"]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def loads_manifest(raw: bytes, *, where: str) -> Manifest:
    """Parse stored manifest bytes strictly.

    Raises:
        ManifestFormatError: not JSON, not a manifest, an unknown version or a bad field.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ManifestFormatError(
            f"{where} is not JSON",
            hint="restore it from manifests/<sequence>.json, or delete it and publish again",
        ) from None
    return manifest_from_json(data, where=where)


_TOP_LEVEL: Final = frozenset(
    {
        "format",
        "version",
        "sequence",
        "published_at",
        "source",
        "consistent_as_of_ts",
        "tables",
        "raw_change_log",
    }
)
_TABLE_KEYS: Final = frozenset(
    {"component", "table", "row_count", "schema_fingerprint", "columns", "files", "widenings"}
)


def manifest_from_json(data: object, *, where: str) -> Manifest:
    """Decode a manifest strictly: unknown formats, versions or fields are refused.

    Raises:
        ManifestFormatError: naming the first problem.
    """
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ManifestFormatError(
            f"{where} is not a convex-cdc manifest",
            hint=f'check the publish URL; a convex-cdc manifest has "format": "{MANIFEST_FORMAT}"',
        )
    version = data.get("version")
    if version != MANIFEST_VERSION:
        newer = isinstance(version, int) and version > MANIFEST_VERSION
        error = NewerManifestVersion if newer else ManifestFormatError
        raise error(
            f"{where} has manifest version {shorten(repr(version), _QUOTED)}; this convex-cdc "
            f"reads version {MANIFEST_VERSION}",
            hint="upgrade convex-cdc" if newer else "the manifest is damaged; publish again",
        )
    try:
        _only(data, _TOP_LEVEL, "the manifest")
        source = data["source"]
        _only(source, frozenset({"deployment_url"}), "source")
        raw = data.get("raw_change_log")
        if raw is not None:
            _only(raw, frozenset({"files"}), "raw_change_log")
        return Manifest(
            sequence=_int(data["sequence"], "sequence"),
            published_at=_str(data["published_at"], "published_at"),
            deployment_url=_str(source["deployment_url"], "source.deployment_url"),
            consistent_as_of_ts=_int(data["consistent_as_of_ts"], "consistent_as_of_ts"),
            tables=tuple(_table_from_json(t) for t in _list(data["tables"], "tables")),
            raw_change_log=(
                tuple(_file_from_json(f) for f in _list(raw["files"], "raw_change_log.files"))
                if raw is not None
                else None
            ),
        )
    except KeyError as missing:
        raise ManifestFormatError(
            f"{where} is missing field {shorten(str(missing), _QUOTED)}",
            hint="the manifest is damaged; publish again",
        ) from None
    except (TypeError, ValueError) as exc:
        raise ManifestFormatError(
            f"{where} is not a valid manifest: {shorten(str(exc), _QUOTED)}",
            hint="the manifest is damaged; publish again",
        ) from None


def _file_to_json(f: ManifestFile) -> dict[str, Any]:
    return {"path": f.path, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256}


def _table_from_json(t: object) -> ManifestTable:
    _only(t, _TABLE_KEYS, "a table entry")
    assert isinstance(t, dict)
    fingerprint = t["schema_fingerprint"]
    if fingerprint is not None:
        fingerprint = _str(fingerprint, "schema_fingerprint")
    return ManifestTable(
        component=_str(t["component"], "component"),
        table=_str(t["table"], "table"),
        row_count=_int(t["row_count"], "row_count"),
        schema_fingerprint=fingerprint,
        columns=tuple(
            ColumnSpec(_str(c["name"], "column name"), ColumnType(c["type"]), _bool(c["nullable"]))
            for c in _list(t["columns"], "columns")
        ),
        files=tuple(_file_from_json(f) for f in _list(t["files"], "files")),
        widenings=tuple(
            Widening(
                _str(w["column"], "widening column"),
                ColumnType(w["from"]),
                ColumnType(w["to"]),
                _int(w["batch"], "widening batch"),
            )
            for w in _list(t.get("widenings", []), "widenings")
        ),
    )


def _file_from_json(f: object) -> ManifestFile:
    _only(f, frozenset({"path", "rows", "bytes", "sha256"}), "a file entry")
    assert isinstance(f, dict)
    path = _str(f["path"], "path")
    # A manifest may come from anywhere: never let it point outside the prefix.
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"file path {path!r} is not a plain relative path")
    sha = _str(f["sha256"], "sha256")
    if not _SHA256_HEX.fullmatch(sha):
        raise ValueError(f"sha256 of {path!r} is not a lowercase hex digest")
    return ManifestFile(path, _int(f["rows"], "rows"), _int(f["bytes"], "bytes"), sha)


def _only(value: object, allowed: frozenset[str], what: str) -> None:
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be an object")
    unknown = set(value) - allowed
    if unknown:
        raise ValueError(f"{what} has unknown fields {sorted(unknown)}")


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{what} must be a non-negative integer")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("nullable must be a boolean")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{what} must be a list")
    return value
