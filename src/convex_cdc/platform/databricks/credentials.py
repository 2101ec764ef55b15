"""Temporary S3 credentials for delta-rs from a Unity Catalog service credential.

Serverless job compute on Databricks has no instance profile, and delta-rs cannot use
Unity Catalog external locations, so the extractor needs AWS credentials of its own. The
preferred source is a Unity Catalog *service credential* (an IAM role registered in the
metastore, DBR 16.2+): ``dbutils.credentials.getServiceCredentialsProvider(name)`` gives
a botocore session whose credentials are temporary (access key, secret key and session
token) and refresh themselves before they expire. Static keys from a secret scope stay the
fallback (``--secret-scope``, see :func:`.extractor.load_secret_scope`).

delta-rs takes credentials as storage options when a table is opened, so
:meth:`ServiceCredential.storage_options` is asked again each time a table is opened,
and the extractor's long-lived writer tables are reopened when the credentials change
(:mod:`.writer_table`). Every credential value is registered as a secret, so it can never
appear in an error line or a log.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from convex_cdc.core.errors import ConfigError, TargetError
from convex_cdc.core.secrets import register_secret


class CredentialSource(Protocol):
    """Supplies current S3 credentials as delta-rs storage options."""

    def storage_options(self) -> dict[str, str]:
        """``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and, for temporary credentials,
        ``AWS_SESSION_TOKEN``: valid for a while from now.

        Raises:
            TargetError: the credentials cannot be obtained.
        """
        ...


class ServiceCredential:
    """AWS credentials from a botocore-style session (``get_credentials()`` returning an
    object with ``get_frozen_credentials()``), refreshed by botocore before expiry.

    Build it with :meth:`from_databricks` on Databricks; tests pass any such session.

    Args:
        name: the service credential's name (for messages).
        session: the botocore session ``getServiceCredentialsProvider`` returned.
    """

    def __init__(self, name: str, session: Any) -> None:
        self.name = name
        self._session = session
        self._lock = threading.Lock()

    @classmethod
    def from_databricks(cls, name: str) -> ServiceCredential:
        """The service credential ``name`` of this Databricks workspace.

        Raises:
            ConfigError: not running on Databricks (no ``dbutils``), or the runtime is
                older than 16.2 (no service credentials), or ``name`` is unknown.
        """
        try:
            from databricks.sdk.runtime import dbutils
        except ImportError:
            raise ConfigError(
                f"--service-credential {name} only works on Databricks",
                hint="off Databricks, give S3 credentials through the AWS_* environment "
                "variables (or an instance profile)",
            ) from None
        try:
            session = dbutils.credentials.getServiceCredentialsProvider(name)
        except Exception as exc:  # the runtime's own error types are not importable here
            raise ConfigError(
                f"cannot use the service credential {name!r}: {type(exc).__name__}",
                hint="check the name, that the job's principal has ACCESS on it, and that "
                "the runtime is DBR 16.2 or newer (serverless environment 2+)",
            ) from None
        return cls(name, session)

    def storage_options(self) -> dict[str, str]:
        """The current temporary credentials (botocore refreshes them before expiry).

        Raises:
            TargetError: botocore could not obtain or refresh them.
        """
        with self._lock:  # botocore's refresh is not meant to run twice at once
            try:
                frozen = self._session.get_credentials().get_frozen_credentials()
            except Exception as exc:  # botocore raises many unrelated types
                raise TargetError(
                    f"cannot get S3 credentials from the service credential {self.name!r}: "
                    f"{type(exc).__name__}",
                    hint="check the IAM role behind the service credential and its trust "
                    "policy, then run the job again",
                ) from None
        options = {
            "AWS_ACCESS_KEY_ID": frozen.access_key,
            "AWS_SECRET_ACCESS_KEY": frozen.secret_key,
        }
        if frozen.token:
            options["AWS_SESSION_TOKEN"] = frozen.token
        register_secret(frozen.secret_key)
        register_secret(frozen.token)
        return options
