"""Logging set-up for the CLI: plain lines, and no secret ever reaches a handler."""

from __future__ import annotations

import logging
import sys
from typing import Final

from convex_cdc.core.secrets import has_secrets, redact_secrets, register_secret

__all__ = ["SecretRedactingFilter", "configure_logging", "redact_secrets", "register_secret"]

_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class SecretRedactingFilter(logging.Filter):
    """Replaces every registered secret in a record's rendered message with ``***``.

    convex-cdc never formats the deploy key into a message on purpose; this filter is the
    second line of defence against a library (or a server echo) that does.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not has_secrets():
            return True
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


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
