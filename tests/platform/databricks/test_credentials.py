"""Temporary S3 credentials from a service credential reach delta-rs, rotate, and stay secret.

On Databricks, ``dbutils.credentials.getServiceCredentialsProvider`` returns a botocore
session; here a small stand-in with the same two calls plays it, against a real S3 API
(moto's standalone server).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from convex_cdc.core.errors import ConfigError, TargetError
from convex_cdc.core.secrets import redact_secrets
from convex_cdc.platform.databricks.credentials import ServiceCredential
from convex_cdc.platform.databricks.delta_read import read_table
from convex_cdc.platform.databricks.warehouse import Warehouse
from convex_cdc.platform.databricks.writer_table import WriterTable
from tests.fixtures.moto_s3 import S3Endpoint
from tests.platform.databricks.change_batches import SOURCE_NAME


@dataclass(frozen=True)
class Frozen:
    access_key: str
    secret_key: str
    token: str | None


@dataclass
class RotatingSession:
    """Stands in for the botocore session a service credential gives: each ``rotate()``
    is what botocore's refresh before expiry does."""

    access_key: str
    generation: int = 1
    fail: bool = False
    calls: list[str] = field(default_factory=list)

    def get_credentials(self) -> RotatingSession:
        return self

    def get_frozen_credentials(self) -> Frozen:
        self.calls.append("frozen")
        if self.fail:
            raise RuntimeError("AccessDenied: sts:AssumeRole")
        return Frozen(
            self.access_key,
            f"secret-key-generation-{self.generation}-do-not-log",
            f"session-token-generation-{self.generation}-do-not-log",
        )

    def rotate(self) -> None:
        self.generation += 1


def s3_warehouse(server: S3Endpoint, bucket: str) -> Warehouse:
    """An s3:// warehouse with no static keys at all: only the endpoint and region."""
    env = {"AWS_REGION": server.region, "AWS_ALLOW_HTTP": "true"}
    return Warehouse.from_uri(
        f"s3://{bucket}/lake", source_name=SOURCE_NAME, endpoint_url=server.url, env=env
    )


def test_temporary_credentials_with_their_session_token_replace_static_keys() -> None:
    static = Warehouse.from_uri(
        "s3://bucket/lake",
        source_name=SOURCE_NAME,
        env={"AWS_ACCESS_KEY_ID": "static-id", "AWS_SECRET_ACCESS_KEY": "static-secret"},
    )
    session = RotatingSession("ASIATEMPORARY")
    options = static.with_credentials(ServiceCredential("lake-writer", session)).options()
    assert options["AWS_ACCESS_KEY_ID"] == "ASIATEMPORARY"
    assert options["AWS_SECRET_ACCESS_KEY"] == "secret-key-generation-1-do-not-log"
    assert options["AWS_SESSION_TOKEN"] == "session-token-generation-1-do-not-log"
    assert "static-secret" not in options.values()


def test_credential_values_never_reach_a_message() -> None:
    session = RotatingSession("ASIATEMPORARY")
    ServiceCredential("lake-writer", session).storage_options()
    leaked = "boom secret-key-generation-1-do-not-log / session-token-generation-1-do-not-log"
    assert redact_secrets(leaked) == "boom *** / ***"
    assert "lake-writer" not in repr(
        Warehouse("s3://b/p", SOURCE_NAME).with_credentials(
            ServiceCredential("lake-writer", session)
        )
    )


def test_a_credential_that_cannot_be_obtained_is_a_target_error_naming_it() -> None:
    credential = ServiceCredential("lake-writer", RotatingSession("ASIA", fail=True))
    with pytest.raises(TargetError, match="service credential 'lake-writer': RuntimeError"):
        Warehouse("s3://b/p", SOURCE_NAME).with_credentials(credential).options()


@pytest.mark.s3
def test_writer_tables_reopen_with_rotated_credentials_and_keep_writing(
    s3_server: S3Endpoint, s3_bucket: str
) -> None:
    session = RotatingSession(s3_server.access_key)
    warehouse = s3_warehouse(s3_server, s3_bucket).with_credentials(
        ServiceCredential("lake-writer", session)
    )
    location = warehouse.join("bronze", "messages")
    schema = pa.schema([pa.field("n", pa.int64())])
    writer = WriterTable(
        location,
        warehouse,
        create=lambda: DeltaTable.create(location, schema, storage_options=warehouse.options()),
    )

    first = writer.get(create=True)
    assert first is not None and writer.get() is first  # kept while credentials hold
    write_deltalake(first, pa.table({"n": [1]}, schema=schema), mode="append")
    writer.committed()

    session.rotate()
    second = writer.get()
    assert second is not None and second is not first  # reopened with the new token
    write_deltalake(second, pa.table({"n": [2]}, schema=schema), mode="append")
    writer.committed()

    table = DeltaTable(location, storage_options=warehouse.options())
    assert sorted(read_table(table).column("n").to_pylist()) == [1, 2]


def test_extract_refuses_a_service_credential_for_a_local_warehouse(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "convex_cdc",
            "databricks",
            "extract",
            "--warehouse",
            str(tmp_path),
            "--url",
            "https://happy-animal-123.convex.cloud",
            "--service-credential",
            "lake-writer",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "CONVEX_DEPLOY_KEY": "prod:happy-animal-123|" + "ab" * 24},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --service-credential gives S3 credentials")


def test_a_service_credential_off_databricks_is_a_usage_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="lake-writer") as raised:
        ServiceCredential.from_databricks("lake-writer")
    assert raised.value.exit_code == 2
