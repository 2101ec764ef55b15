"""One destination publishes to a prefix: ``<prefix>/owner.json`` says which.

Two destinations (two ``--dest`` directories, on one machine or two) that publish the
same deployment to one prefix would each move ``manifest.json`` to their own staging, so
readers would jump back and forth in time. Each destination therefore has an identity,
a random id kept in ``<dest>/destination_id`` (created by its first publish), and the
first publish to a prefix records that id, with the deployment URL, in ``owner.json``,
create-only, so of two destinations claiming an empty prefix at once exactly one wins.
Every later publish compares, before it writes anything, and another destination's is
refused with exit 2 (:class:`ConfigError`): it is a wrong ``--to`` for this destination,
not a busy one, so waiting (75) would never help.

A prefix published before ``owner.json`` existed is claimed by the next publish of its
deployment. If a destination is rebuilt from scratch (a new id) and should take over its
prefix, deleting ``owner.json`` hands the prefix to the next publisher.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Final

from convex_cdc.core.errors import ConfigError, StateError
from convex_cdc.target_s3.atomic_file import atomic_write_bytes
from convex_cdc.target_s3.io_errors import shorten
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.publish.object_store import PublishTarget

OWNER_PATH: Final = "owner.json"
"""Under the prefix: the destination that publishes there."""
OWNER_FORMAT: Final = "convex-cdc.prefix-owner"
DESTINATION_ID_FILE: Final = "destination_id"
"""Under ``--dest``: this destination's identity, one line of 32 hex digits."""

_ID: Final = re.compile(r"[0-9a-f]{32}")
_QUOTED: Final = 120


@dataclass(frozen=True, slots=True)
class PrefixOwner:
    """The destination that publishes to a prefix."""

    deployment_url: str
    destination_id: str

    def to_bytes(self) -> bytes:
        """As stored in ``owner.json``."""
        data = {
            "format": OWNER_FORMAT,
            "version": 1,
            "deployment_url": self.deployment_url,
            "destination_id": self.destination_id,
        }
        return (json.dumps(data, indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes, *, where: str) -> PrefixOwner:
        """Decode ``owner.json``.

        Raises:
            StateError: it is not an owner record this version reads.
        """
        try:
            data = json.loads(raw)
            if data.get("format") != OWNER_FORMAT or data.get("version") != 1:
                raise ValueError("not an owner record")
            owner = cls(str(data["deployment_url"]), str(data["destination_id"]))
        except (ValueError, UnicodeDecodeError, AttributeError, KeyError):
            raise StateError(
                f"{where} is not a convex-cdc owner record",
                hint=f"delete {where} (the next publish claims the prefix again), or check "
                "that this prefix is convex-cdc's",
            ) from None
        return owner


def destination_id(layout: DestinationLayout) -> str:
    """This destination's id, created on first use. Call it holding the publish lock.

    Raises:
        StateError: the id file exists but is damaged.
    """
    path = layout.root / DESTINATION_ID_FILE
    if not path.exists():
        atomic_write_bytes(path, (uuid.uuid4().hex + "\n").encode())
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if not _ID.fullmatch(text):
        raise StateError(
            f"{path} does not hold a destination id",
            hint=f"restore it from the destination_id in the owner.json of a prefix this "
            f"destination publishes to, or delete it (then delete that {OWNER_PATH} too)",
        )
    return text


def claim_prefix(target: PublishTarget, owner: PrefixOwner) -> None:
    """Make sure ``owner`` publishes to ``target``: record it if no one does yet.

    Raises:
        ConfigError: another destination (or deployment) owns the prefix.
        StateError: ``owner.json`` is damaged.
        TargetError: the target cannot be read or written.
    """
    where = target.url_of(OWNER_PATH)
    raw = target.get(OWNER_PATH)
    if raw is None:
        if target.put_if_absent(OWNER_PATH, owner.to_bytes()):
            return
        raw = target.get(OWNER_PATH)  # another destination claimed it a moment ago
        if raw is None:
            raise StateError(
                f"{where} appeared and vanished while this publish claimed the prefix",
                hint="another tool is changing this prefix; publish again",
            )
    found = PrefixOwner.from_bytes(raw, where=where)
    if found.destination_id == owner.destination_id:
        return
    raise ConfigError(
        f"{target.describe()} is published by another destination (id "
        f"{shorten(found.destination_id, 40)}, {shorten(found.deployment_url, _QUOTED)}); "
        f"this destination is {owner.destination_id}",
        hint=f"publish each destination to its own prefix; if this destination replaces "
        f"that one, delete {where}, then publish again",
    )
