"""Click plumbing shared by every command that talks to a Convex deployment.

``@source_options`` adds ``--url`` (or ``CONVEX_URL``) and ``--deploy-key-env NAME``;
the deploy key itself is only ever read from the environment, so it never lands in
shell history or process listings. :func:`connect` turns those into a
:class:`~convex_cdc.core.client.ConvexClient` and registers the key with the log
redaction filter before anything can log it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

import click

from convex_cdc.core.client import ConvexClient
from convex_cdc.core.errors import ConfigError
from convex_cdc.core.retry import RetryPolicy
from convex_cdc.logs import register_secret

DEFAULT_KEY_ENV: Final = "CONVEX_DEPLOY_KEY"
URL_ENV: Final = "CONVEX_URL"
RETRY_BUDGET_ENV: Final = "CONVEX_CDC_MAX_RETRY_SECONDS"
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

F = TypeVar("F", bound=Callable[..., object])


def source_options(command: F) -> F:
    """Add ``--url`` and ``--deploy-key-env`` (passed as ``url`` and ``deploy_key_env``)."""
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


def connect(
    url: str | None,
    key_env: str = DEFAULT_KEY_ENV,
    *,
    retry: RetryPolicy | None = None,
    environ: Mapping[str, str] | None = None,
) -> ConvexClient:
    """A client for ``url`` using the deploy key in the environment variable ``key_env``.

    Raises:
        ConfigError: the URL or the key is missing or unusable, with the one-line fix.
    """
    env = os.environ if environ is None else environ
    if not _ENV_NAME.fullmatch(key_env):
        raise ConfigError(
            f"--deploy-key-env {key_env!r} is not an environment variable name",
            hint=f"name the variable that holds the key, e.g. --deploy-key-env {DEFAULT_KEY_ENV}",
        )
    if not url:
        raise ConfigError(
            "no deployment URL given",
            hint=f"pass --url https://<name>.convex.cloud or set {URL_ENV}",
        )
    key = env.get(key_env, "").strip()
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
    return ConvexClient(url, key, key_env=key_env, retry=retry)


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
