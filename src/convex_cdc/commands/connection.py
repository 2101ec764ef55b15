"""Click plumbing shared by every command that talks to a Convex deployment.

``@source_options`` adds ``--url`` (or ``CONVEX_URL``) and ``--deploy-key-env NAME``;
the deploy key itself is only ever read from the environment, so it never lands in
shell history or process listings. It also adds the limits on one request,
``--request-timeout`` and ``--max-response-mb``, which reach :func:`connect` through
the click context (so a command's own signature does not change). :func:`connect` turns
all that into a :class:`~convex_cdc.core.client.ConvexClient` and registers the key with
the log redaction filter before anything can log it.

A ``--deploy-key-env`` value (or ``deploy_key_env`` in the config file) that is not a
variable name is never echoed: it is most likely the key itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import click

from convex_cdc.core.client import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_REQUEST_TIMEOUT_SECONDS,
    ConvexClient,
)
from convex_cdc.core.errors import ConfigError
from convex_cdc.core.retry import RetryPolicy
from convex_cdc.logs import register_secret

DEFAULT_KEY_ENV: Final = "CONVEX_DEPLOY_KEY"
URL_ENV: Final = "CONVEX_URL"
RETRY_BUDGET_ENV: Final = "CONVEX_CDC_MAX_RETRY_SECONDS"
REQUEST_TIMEOUT_ENV: Final = "CONVEX_CDC_REQUEST_TIMEOUT"
MAX_RESPONSE_ENV: Final = "CONVEX_CDC_MAX_RESPONSE_MB"
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_CONVENTIONAL_ENV_NAME: Final = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_LIMITS_KEY: Final = "convex_cdc.request_limits"
_MB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """How long one request may take, and how large its answer may be."""

    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    max_response_mb: float = DEFAULT_MAX_RESPONSE_BYTES / _MB


def key_env_problem(name: str) -> str | None:
    """Why ``name`` cannot be the name of the deploy key's variable (``None`` if it can).

    The message never quotes ``name``: a value that is not a variable name is most
    likely the key itself.
    """
    if _ENV_NAME.fullmatch(name):
        return None
    return (
        "expects the name of the environment variable that holds the deploy key (like "
        f"{DEFAULT_KEY_ENV}), not the key; the value given is not a variable name and is "
        "not shown, in case it is the key"
    )


F = TypeVar("F", bound=Callable[..., object])


def source_options(command: F) -> F:
    """Add ``--url`` and ``--deploy-key-env`` (passed as ``url`` and ``deploy_key_env``),
    and ``--request-timeout`` / ``--max-response-mb`` (kept for :func:`connect`)."""
    command = click.option(
        "--max-response-mb",
        type=click.FloatRange(min=1),
        default=DEFAULT_MAX_RESPONSE_BYTES / _MB,
        show_default=True,
        envvar=MAX_RESPONSE_ENV,
        expose_value=False,
        callback=_remember_limit,
        metavar="MB",
        help="Refuse a Convex answer larger than this (nothing is written) "
        f"[env: {MAX_RESPONSE_ENV}].",
    )(command)
    command = click.option(
        "--request-timeout",
        type=click.FloatRange(min=1),
        default=DEFAULT_REQUEST_TIMEOUT_SECONDS,
        show_default=True,
        envvar=REQUEST_TIMEOUT_ENV,
        expose_value=False,
        callback=_remember_limit,
        metavar="SECONDS",
        help="Abandon (and retry) a request that has not been answered in full after this "
        f"long, e.g. a server that drips its answer [env: {REQUEST_TIMEOUT_ENV}].",
    )(command)
    command = click.option(
        "--deploy-key-env",
        "deploy_key_env",
        default=DEFAULT_KEY_ENV,
        show_default=True,
        metavar="NAME",
        help="Environment variable holding the deploy key (the key is never a flag value).",
    )(command)
    command = click.option(
        "--url",
        envvar=URL_ENV,
        metavar="URL",
        help=f"Deployment URL, e.g. https://happy-animal-123.convex.cloud [env: {URL_ENV}].",
    )(command)
    return command


def _remember_limit(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if param.name is not None:
        ctx.meta.setdefault(_LIMITS_KEY, {})[param.name] = value


def request_limits() -> RequestLimits:
    """The limits given to the running command (the defaults outside a command)."""
    ctx = click.get_current_context(silent=True)
    given = ctx.meta.get(_LIMITS_KEY, {}) if ctx is not None else {}
    return RequestLimits(**given)


def connect(
    url: str | None,
    key_env: str = DEFAULT_KEY_ENV,
    *,
    retry: RetryPolicy | None = None,
    environ: Mapping[str, str] | None = None,
    limits: RequestLimits | None = None,
) -> ConvexClient:
    """A client for ``url`` using the deploy key in the environment variable ``key_env``.

    ``limits``: default, what ``--request-timeout`` and ``--max-response-mb`` said.

    Raises:
        ConfigError: the URL or the key is missing or unusable, with the one-line fix.
    """
    env = os.environ if environ is None else environ
    problem = key_env_problem(key_env)
    if problem is not None:
        register_secret(key_env.strip())  # should it reach a log line anyway
        raise ConfigError(
            f"--deploy-key-env {problem}",
            hint=f"export {DEFAULT_KEY_ENV}=<the key> and leave --deploy-key-env out, or "
            "pass the variable's name",
        )
    if not url:
        raise ConfigError(
            "no deployment URL given",
            hint=f"pass --url https://<name>.convex.cloud or set {URL_ENV}",
        )
    key = env.get(key_env, "").strip()
    if not key and not _CONVENTIONAL_ENV_NAME.fullmatch(key_env):
        # A lower-case name that is not set could be a key that happens to look like a
        # name: say what is wrong without quoting it.
        register_secret(key_env)
        raise ConfigError(
            "the variable named by --deploy-key-env is not set (its name is not shown: "
            "it could be a key)",
            hint=f"pass the name of the variable that holds the key, e.g. {DEFAULT_KEY_ENV}; "
            "convex-cdc never takes the key as a flag",
        )
    if not key:
        raise ConfigError(
            f"the deploy key environment variable {key_env} is not set",
            hint=f"export {key_env}=<a deploy key from the Convex dashboard → Settings → "
            "Deploy keys>; convex-cdc never takes the key as a flag",
        )
    register_secret(key)
    secret_half = key.partition("|")[2]
    if len(secret_half) >= 12:
        register_secret(secret_half)
    if retry is None:
        retry = RetryPolicy(max_seconds=_retry_budget(env))
    limits = limits or request_limits()
    return ConvexClient(
        url,
        key,
        key_env=key_env,
        retry=retry,
        request_timeout=limits.request_timeout,
        max_response_bytes=int(limits.max_response_mb * _MB),
    )


def _retry_budget(env: Mapping[str, str]) -> float:
    """``CONVEX_CDC_MAX_RETRY_SECONDS``: how long transient failures may be retried."""
    raw = env.get(RETRY_BUDGET_ENV, "").strip()
    if not raw:
        return RetryPolicy().max_seconds
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise ConfigError(
            f"{RETRY_BUDGET_ENV}={raw!r} is not a number of seconds",
            hint=f"e.g. {RETRY_BUDGET_ENV}=60",
        )
    return seconds
