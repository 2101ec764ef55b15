"""Who is calling: the ``Authorization`` header, the ``adminKey`` parameter, ``Convex-Client``.

Reproduces docs/convex-export-api.md §3: ``Authorization: Convex <key>`` (scheme
case-insensitive) or, with no header, ``?adminKey=``; non-ASCII → 400
``HeaderParseFailure``; shorter than 7 characters → 400 ``InvalidHeaderFailure``; a wrong
key → 401 ``BadAdminKey``; an unknown scheme → 400 ``InvalidAdminKey``; no credentials →
the anonymous identity, rejected later (403 ``BadDeployKey``) by the permission check.
Like the server, the ``prod:``/``dev:`` deployment prefix (and ``preview:``/``project:``
prefixes) is stripped before comparing, so the bare secret part is accepted too.

Not reproduced: ``Bearer`` user JWTs are treated as anonymous (the real server validates them
and fails with 401 or 403); there is no key without ``deployment:data:view``, so 403
``OperationNotPermitted`` never occurs.
"""

from __future__ import annotations

import hmac
import secrets
from enum import Enum

from convex_cdc.devserver.api_errors import (
    ApiError,
    bad_admin_key,
    header_parse_failure,
    invalid_admin_key,
    invalid_header_failure,
)

_DEPLOYMENT_PREFIXES = ("prod:", "dev:", "preview:", "project:")


class Identity(Enum):
    """The identities the devserver distinguishes."""

    ADMIN = "admin"
    ANONYMOUS = "anonymous"


def generate_deploy_key() -> str:
    """A fresh key in Convex's ``dev:<deployment>|<hex>`` shape."""
    return f"dev:local-devserver|{secrets.token_hex(32)}"


def _secret_part(key: str) -> str:
    if key.startswith(_DEPLOYMENT_PREFIXES) and "|" in key:
        return key.split("|", 1)[1]
    return key


class KeyChecker:
    """Resolves a request's identity against the one configured deploy key."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("the deploy key cannot be empty")
        self._secret = _secret_part(key).encode()

    def _check(self, key: str) -> Identity:
        if key and hmac.compare_digest(_secret_part(key).encode(), self._secret):
            return Identity.ADMIN
        raise bad_admin_key()

    def resolve(self, authorization: str | None, admin_key_param: str | None) -> Identity:
        """The caller's identity.

        Raises:
            ApiError: an unusable header (400) or a wrong key (401).
        """
        if authorization is not None:
            if not authorization.isascii():
                raise header_parse_failure()
            if len(authorization) < 7:
                raise invalid_header_failure()
            scheme = authorization[:7].lower()
            if scheme == "convex ":
                return self._check(authorization[7:])
            if scheme == "bearer ":
                return Identity.ANONYMOUS
            raise invalid_admin_key()
        if admin_key_param is not None:
            return self._check(admin_key_param)
        return Identity.ANONYMOUS


def check_client_version(value: str | None) -> None:
    """The global ``Convex-Client`` check: ``<name>-<semver>``, so it needs a ``-``.

    Raises:
        ApiError: 400 ``InvalidClientVersion``.
    """
    if value is not None and "-" not in value:
        raise ApiError(
            400,
            "InvalidClientVersion",
            f"Invalid Convex-Client header {value!r}: expected <client-name>-<semver>",
        )
