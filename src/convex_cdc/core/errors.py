"""Errors, split by what the caller can do next; the exit code is on the class.

::

    exit  class                             what the user does next
    ----  --------------------------------  -----------------------------------------------
     1    ConvexCdcError                    (base class; also unexpected failures)
     2    ├── ConfigError                   fix the flags, config file, environment or selection
     3    ├── SourceError                   check the deployment / network, then re-run
          │   ├── SourceUnavailable         network, 408, 429, 5xx outlasted the retry budget
          │   ├── MalformedResponse         the server broke the export contract: report it
          │   └── ConvexApiError            Convex answered 4xx {code, message}: never retried
     4    │       ├── AuthenticationError   fix the deploy key (wrong, missing, no permission)
     5    │       └── RetentionExpired      cursor or snapshot outside retention: --resnapshot
     6    ├── StateError                    local state (checkpoint, staging state, manifest,
          │                                 control table) is unusable: rebuild or restore it
     7    ├── TargetError                   the target could not write or read (disk full,
          │                                 permissions, object store, Delta): fix the target
    75    ├── DestinationBusy               another run holds the destination: skip this run
   143    ├── Stopped                       stopped on request (SIGTERM) before the work was
          │                                 done; what is durable is checkpointed: run again
          └── StepFailed                    wraps any of the above with the step and batch

A scheduler can therefore tell "skip this run" (75, like sysexits' ``EX_TEMPFAIL``)
from "fix your flags" (2) and "fix the target" (7) by the exit code alone.

Every message is one line that names the problem and the fix. No error ever carries
the deploy key: ``ConvexClient`` never formats it, and ``redact`` is applied to any
server-provided text before it reaches a message.
"""

from __future__ import annotations


class ConvexCdcError(Exception):
    """Base class of every error raised on purpose by convex-cdc."""

    #: Process exit code the CLI uses for this class of error.
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The problem and, when known, the fix, on one line."""
        text = " ".join(self.message.split())
        if self.hint:
            text = f"{text} — {' '.join(self.hint.split())}"
        return text


class ConfigError(ConvexCdcError):
    """The invocation is wrong: flags, config file, environment or selection."""

    exit_code = 2


class SourceError(ConvexCdcError):
    """Talking to the Convex deployment failed."""

    exit_code = 3


class SourceUnavailable(SourceError):
    """Transient failures (network, 408, 429, 5xx) outlasted the retry budget."""


class MalformedResponse(SourceError):
    """The server's answer does not follow the streaming-export contract."""

    def __init__(self, message: str, *, endpoint: str, hint: str | None = None) -> None:
        self.endpoint = endpoint
        super().__init__(
            f"{endpoint}: malformed response: {message}",
            hint=hint
            or "nothing was written and the checkpoint did not move; report this with the "
            "deployment's Convex version",
        )


class ConvexApiError(SourceError):
    """Convex answered with a 4xx ``{code, message}`` body. Never retried."""

    def __init__(
        self,
        *,
        endpoint: str,
        status: int,
        code: str,
        server_message: str,
        hint: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.server_message = server_message
        super().__init__(f"{endpoint}: HTTP {status} {code}: {server_message}", hint=hint)


class AuthenticationError(ConvexApiError):
    """401/403: the deploy key is wrong, missing, for another deployment or lacks permission."""

    exit_code = 4


class RetentionExpired(ConvexApiError):
    """The delta cursor or snapshot is older than the deployment keeps history."""

    exit_code = 5


class StateError(ConvexCdcError):
    """Stored state cannot be used: a checkpoint, staging state, manifest or control table
    that is corrupt, foreign, from a newer version, or inconsistent with the others."""

    exit_code = 6


class TargetError(ConvexCdcError):
    """A target could not write or read (disk full, permissions, a bad name, an object
    store or Delta failure...)."""

    exit_code = 7


class DestinationBusy(ConvexCdcError):
    """Another process holds the lock this run needs: skip this run, or wait."""

    exit_code = 75


class Stopped(ConvexCdcError):
    """A stop was requested (SIGTERM) before the run was done: every batch up to where it
    stopped is durable and checkpointed, and the next run resumes from there.

    128 + SIGTERM, what a shell reports for a process SIGTERM ended: a scheduler sees a
    stop, not a success (the destination is behind) and not a failure to fix.
    """

    exit_code = 143


class StepFailed(ConvexCdcError):
    """Names the pipeline step (and batch) that failed; the cause is ``__cause__``."""

    def __init__(self, *, step: str, cause: ConvexCdcError, batch_seq: int | None = None) -> None:
        self.step = step
        self.batch_seq = batch_seq
        self.cause = cause
        self.exit_code = cause.exit_code
        where = f"{step} (batch {batch_seq})" if batch_seq is not None else step
        super().__init__(f"{where} failed: {cause.message}", hint=cause.hint)


def redact(text: str, *secrets: str | None) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
