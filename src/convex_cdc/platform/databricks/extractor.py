"""The extractor job: run the core sync against the bronze sink and the control table.

``convex-cdc databricks extract`` calls :func:`extract`; a Databricks job runs the same
command through the wheel entry point ``convex-cdc-databricks-extract``
(:func:`convex_cdc.cli.databricks_extract`), whose arguments are those of ``databricks
extract``. On Databricks the deploy key (and, if the compute has no instance profile, S3
credentials) come from a secret scope (``--secret-scope``), never from job parameters.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Final

from convex_cdc.core.checkpoint import SourceIdentity
from convex_cdc.core.errors import ConfigError
from convex_cdc.core.orchestrator import SyncObserver, SyncOptions, SyncReport, run_sync
from convex_cdc.core.secrets import register_secret
from convex_cdc.core.source import Source
from convex_cdc.platform.databricks.bronze import BronzeSink
from convex_cdc.platform.databricks.control_table import DeltaCheckpointStore
from convex_cdc.platform.databricks.delta_errors import delta_errors
from convex_cdc.platform.databricks.table_spec import TableSpecStore
from convex_cdc.platform.databricks.warehouse import Warehouse

log = logging.getLogger(__name__)

SECRET_KEYS: Final = {
    "deploy-key": None,  # → the variable named by --deploy-key-env
    "aws-access-key-id": "AWS_ACCESS_KEY_ID",
    "aws-secret-access-key": "AWS_SECRET_ACCESS_KEY",
    "aws-session-token": "AWS_SESSION_TOKEN",
}
"""Keys read from ``--secret-scope`` (missing ones are skipped) → environment variables.
Static S3 keys are the fallback for compute without a service credential; a session token
is passed on when the scope holds temporary keys."""


@dataclass(frozen=True, slots=True)
class ExtractResult:
    """What one ``extract`` run did."""

    sync: SyncReport
    bronze_commits: int
    bronze_rows: int
    skipped_appends: int
    """Table appends skipped because bronze already held the batch (replays)."""
    reconciled: bool
    """The control table lagged bronze by one batch and was caught up at start-up."""


def extract(
    source: Source,
    warehouse: Warehouse,
    options: SyncOptions | None = None,
    *,
    observer: SyncObserver | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> ExtractResult:
    """Land ``source`` in ``warehouse``'s bronze tables until caught up (or, following, forever).

    ``warehouse`` names the source the deployment is stored as; a source name that already
    replicates another deployment is refused before anything is fetched.

    Raises:
        ConvexCdcError: as :func:`~convex_cdc.core.orchestrator.run_sync` raises; a Delta
            or storage failure is a ``TargetError`` (a ``StateError`` for the control
            table), never a deltalake exception.
    """
    identity = SourceIdentity.from_url(source.deployment_url)
    with delta_errors(f"extract into {warehouse}"):
        specs = TableSpecStore(warehouse)
        sink = BronzeSink(warehouse, identity, specs=specs)
        store = DeltaCheckpointStore(warehouse, identity, specs=specs)
        report = run_sync(
            source, sink, store, options, observer=observer, should_stop=should_stop, sleep=sleep
        )
    return ExtractResult(
        sync=report,
        bronze_commits=sink.commits,
        bronze_rows=sink.rows,
        skipped_appends=sink.skipped,
        reconciled=store.reconciled,
    )


def load_secret_scope(
    scope: str, *, deploy_key_env: str, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Copy the known keys of a Databricks secret scope into environment variables.

    Only works on Databricks (``dbutils``); returns the variable names that were set.
    Values are never logged.

    Raises:
        ConfigError: not running on Databricks (``databricks.sdk.runtime`` is missing).
    """
    try:
        from databricks.sdk.runtime import dbutils
    except ImportError:
        raise ConfigError(
            f"--secret-scope {scope} needs Databricks: databricks.sdk.runtime is not available",
            hint=f"off Databricks, drop --secret-scope and set {deploy_key_env} in the environment",
        ) from None

    env = os.environ if environ is None else environ
    done: list[str] = []
    for key, variable in SECRET_KEYS.items():
        try:
            value = dbutils.secrets.get(scope=scope, key=key)
        except Exception:  # a missing key is fine: only the deploy key is required
            log.debug("secret scope %s has no %s", scope, key)
            continue
        name = variable or deploy_key_env
        if variable != "AWS_ACCESS_KEY_ID":  # the key id names an identity, not a secret
            register_secret(value)
        env[name] = value
        done.append(name)
    return done
