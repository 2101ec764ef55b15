"""Source names: which Convex deployment a part of a warehouse and a bundle belongs to.

One warehouse can hold several deployments. Each gets a *source name* that is both a path
segment (``<warehouse>/<source>/...``) and part of Unity Catalog and bundle names
(``convex_<source>_bronze``, ``convex_cdc_<source>_extract``), so it is restricted to
what is safe in all of them: lowercase ASCII letters, digits and ``_``, starting with a
letter, at most 64 characters. Unity Catalog folds names to lower case, so allowing upper
case would let ``Prod`` and ``prod`` be two directories but one schema.

Without ``--source`` the name is derived from the deployment URL: a Convex Cloud
deployment is named by its first host label (``https://happy-animal-123.convex.cloud`` →
``happy_animal_123``), any other deployment by its host and port made safe
(``http://127.0.0.1:3210`` → ``host_127_0_0_1_3210``). Two URLs can derive the same name;
the control table records the URL a name was first used for, and a second deployment under
the same name is refused (:mod:`.control_table`), never mixed in.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, NewType
from urllib.parse import urlsplit

from convex_cdc.core.errors import ConfigError

SourceName = NewType("SourceName", str)
"""A validated source name (see the module docstring)."""

MAX_LENGTH: Final = 64
_VALID: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_UNSAFE_RUN: Final = re.compile(r"[^a-z0-9]+")
_CONVEX_CLOUD: Final = ".convex.cloud"
_DIGEST_LENGTH: Final = 8

CHANGE_FEEDS: Final = frozenset({"bronze", "s3-export"})
"""What ``render --source`` meant before it named the deployment: now ``render --feed``."""
RESERVED: Final = frozenset({"bronze", "silver"})
"""Layer names: a source named like one would read as a layer in ``<warehouse>/<source>/``
paths, and ``bronze`` was ``render``'s change feed before ``--feed``."""

_RULE: Final = "lowercase letters, digits and _, starting with a letter, at most 64 characters"


def parse_source_name(text: str, *, flag: str = "--source") -> SourceName:
    """Validate a source name given by the user.

    Raises:
        ConfigError: ``text`` is not a source name (the message names ``flag`` and the rule).
    """
    if text in CHANGE_FEEDS:
        raise ConfigError(
            f"{flag} {text} names a change feed, but {flag} names the deployment now",
            hint=f"for `databricks render` pass --feed {text}; pass {flag} NAME ({_RULE}) or "
            "leave it out to derive the name from --url",
        )
    if text in RESERVED:
        raise ConfigError(
            f"{flag} {text!r} is reserved (a warehouse layer name)",
            hint=f"choose another name: {_RULE}",
        )
    if not _VALID.fullmatch(text):
        raise ConfigError(
            f"{flag} {text!r} is not a source name", hint=f"use {_RULE}, e.g. prod_app"
        )
    return SourceName(text)


def source_name_from_url(url: str) -> SourceName:
    """The default source name of the deployment at ``url`` (see the module docstring).

    Names longer than 64 characters keep their first 55 and end in ``_`` and 8 hex digits
    of the URL's SHA-256, so long host names still give different names.

    Raises:
        ConfigError: ``url`` has no host (or an unusable port) to derive a name from.
    """
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
        host = ""
    if not host:
        raise ConfigError(
            f"cannot derive a source name from the URL {url!r}",
            hint="pass --source NAME, or a deployment URL such as https://<name>.convex.cloud",
        )
    if host.endswith(_CONVEX_CLOUD):
        text = host.split(".", 1)[0]
    else:
        text = host if port is None else f"{host}_{port}"
    name = _UNSAFE_RUN.sub("_", text).strip("_")
    if not name[:1].isalpha():
        name = f"host_{name}".rstrip("_")
    if name in RESERVED:
        name = f"{name}_host"
    if len(name) > MAX_LENGTH:
        digest = hashlib.sha256(url.strip().rstrip("/").encode()).hexdigest()[:_DIGEST_LENGTH]
        name = f"{name[: MAX_LENGTH - _DIGEST_LENGTH - 1].rstrip('_')}_{digest}"
    return parse_source_name(name)


def resolve_source_name(given: str | None, url: str | None, *, command: str) -> SourceName:
    """``--source`` when given, else the name derived from ``url``.

    Raises:
        ConfigError: ``given`` is not a source name, ``url`` cannot be named, or neither
            was given.
    """
    if given:
        return parse_source_name(given)
    if url:
        return source_name_from_url(url)
    raise ConfigError(
        f"`{command}` needs to know which deployment (source) of the warehouse to use",
        hint="pass --source NAME (the one `databricks extract` used), or --url URL / "
        "CONVEX_URL to derive it",
    )
