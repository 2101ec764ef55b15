"""Logging set-up for the CLI: plain lines, and no secret ever reaches a handler."""

from __future__ import annotations

import logging
import sys
from typing import Final

_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_secrets: set[str] = set()


class SecretRedactingFilter(logging.Filter):
    """Replaces every registered secret in a record's rendered message with ``***``.

    convex-cdc never formats the deploy key into a message on purpose; this filter is the
    second line of defence against a library (or a server echo) that does.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def register_secret(secret: str | None) -> None:
    """Make sure ``secret`` is redacted from every log line from now on."""
    if secret:
        _secrets.add(secret)


def redact_secrets(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``.

    Longest first, so a key and a secret part of it are both hidden completely.
    """
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def configure_logging(verbosity: int = 0) -> None:
    """Log to stderr: warnings by default, info with ``-v``, debug with ``-vv``."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(SecretRedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO; keep that for -vv only.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
