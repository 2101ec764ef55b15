"""Warehouse URIs, storage options, the per-source layout and table directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from convex_cdc.core.errors import ConfigError, TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.source_name import SourceName
from convex_cdc.platform.databricks.warehouse import Warehouse, table_dir, table_key_from_dir

APP = SourceName("app")


def test_a_local_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    warehouse = Warehouse.from_uri("lake", source_name=APP)

    assert warehouse.root == str(tmp_path / "lake")
    assert warehouse.is_local and warehouse.options() == {}
    assert Warehouse.from_uri(f"file://{tmp_path}/x", source_name=APP).root == str(tmp_path / "x")


def test_an_s3_uri_takes_credentials_from_the_standard_aws_variables() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AKIA123",
        "AWS_SECRET_ACCESS_KEY": "very-secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "UNRELATED": "x",
    }

    warehouse = Warehouse.from_uri("s3://bucket/some/prefix/", source_name=APP, env=env)

    assert warehouse.root == "s3://bucket/some/prefix"
    assert warehouse.options() == {
        "AWS_ACCESS_KEY_ID": "AKIA123",
        "AWS_SECRET_ACCESS_KEY": "very-secret",
        "AWS_REGION": "eu-west-1",
    }
    assert "very-secret" not in repr(warehouse) and "very-secret" not in str(warehouse)
    assert (
        warehouse.bronze(TableKey("", "messages")) == "s3://bucket/some/prefix/app/bronze/messages"
    )


def test_every_table_of_a_source_lives_under_its_own_directory() -> None:
    """Two deployments with the same tables share no location (nothing can collide)."""
    key = TableKey("waitlist", "users")
    prod = Warehouse.from_uri("s3://bucket/lake", source_name=SourceName("prod_app"), env={})
    staging = Warehouse.from_uri("s3://bucket/lake", source_name=SourceName("staging"), env={})

    def locations(warehouse: Warehouse) -> set[str]:
        return {
            warehouse.bronze(key),
            warehouse.silver(key),
            warehouse.tombstones(key),
            warehouse.checkpoints,
            warehouse.table_specs,
            warehouse.silver_progress,
        }

    assert {location.rsplit("/lake/", 1)[1] for location in locations(prod)} == {
        "prod_app/bronze/waitlist.users",
        "prod_app/silver/waitlist.users",
        "prod_app/_convex_cdc/silver_tombstones/waitlist.users",
        "prod_app/_convex_cdc/checkpoints",
        "prod_app/_convex_cdc/table_specs",
        "prod_app/_convex_cdc/silver_progress",
    }
    assert not locations(prod) & locations(staging)
    assert str(prod) == prod.location == "s3://bucket/lake/prod_app"


def test_an_http_endpoint_allows_plain_http() -> None:
    warehouse = Warehouse.from_uri(
        "s3://bucket", source_name=APP, endpoint_url="http://127.0.0.1:9000", env={}
    )

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
        Warehouse.from_uri(uri, source_name=APP, env={})


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
