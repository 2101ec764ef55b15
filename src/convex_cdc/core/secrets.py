"""The process's secrets, so that none of them ever reaches a message, a log line or a file.

Whoever obtains a secret (the deploy key, the secret half of it, temporary S3 credentials
from a Databricks service credential) registers it here; the CLI's log filter and error
line, and the storage-error edges, replace every registered value with ``***``. This is
the second line of defence: no code formats a secret into a message on purpose.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Make sure ``secret`` is redacted from every message from now on (``None``/empty:
    nothing to do)."""
    if secret:
        with _lock:
            _secrets.add(secret)


def redact_secrets(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``.

    Longest first, so a key and a secret part of it are both hidden completely.
    """
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def has_secrets() -> bool:
    """Whether anything is registered (lets hot paths skip the work)."""
    return bool(_secrets)
