"""Warehouse URIs, storage options and table directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from convex_cdc.core.errors import ConfigError, TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.warehouse import Warehouse, table_dir, table_key_from_dir


def test_a_local_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    warehouse = Warehouse.from_uri("lake")

    assert warehouse.root == str(tmp_path / "lake")
    assert warehouse.is_local and warehouse.options() == {}
    assert Warehouse.from_uri(f"file://{tmp_path}/x").root == str(tmp_path / "x")


def test_an_s3_uri_takes_credentials_from_the_standard_aws_variables() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AKIA123",
        "AWS_SECRET_ACCESS_KEY": "very-secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "UNRELATED": "x",
    }

    warehouse = Warehouse.from_uri("s3://bucket/some/prefix/", env=env)

    assert warehouse.root == "s3://bucket/some/prefix"
    assert warehouse.options() == {
        "AWS_ACCESS_KEY_ID": "AKIA123",
        "AWS_SECRET_ACCESS_KEY": "very-secret",
        "AWS_REGION": "eu-west-1",
    }
    assert "very-secret" not in repr(warehouse) and "very-secret" not in str(warehouse)
    assert warehouse.bronze(TableKey("", "messages")) == "s3://bucket/some/prefix/bronze/messages"


def test_an_http_endpoint_allows_plain_http() -> None:
    warehouse = Warehouse.from_uri("s3://bucket", endpoint_url="http://127.0.0.1:9000", env={})

    assert warehouse.options() == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
    }


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("gs://bucket/x", "unsupported warehouse scheme"),
        ("s3:///x", "names no bucket"),
        ("", "empty"),
    ],
)
def test_unusable_warehouse_uris_are_refused(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Warehouse.from_uri(uri, env={})


def test_table_directories_follow_the_s3_target_rule() -> None:
    assert table_dir(TableKey("", "messages")) == "messages"
    key = TableKey("waitlist/ratelimiter", "limits")
    assert table_dir(key) == "waitlist.ratelimiter.limits"
    assert table_key_from_dir("waitlist.ratelimiter.limits") == key


@pytest.mark.parametrize(
    "key",
    [TableKey("", "../etc"), TableKey("", "_system"), TableKey("a/../b", "t"), TableKey("", "a.b")],
)
def test_names_that_could_escape_the_warehouse_are_refused(key: TableKey) -> None:
    with pytest.raises(TargetError):
        table_dir(key)
