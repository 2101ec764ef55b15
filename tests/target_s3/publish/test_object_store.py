"""The publish target: local directories and S3 (moto subprocess) behave the same."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from convex_cdc.core.errors import ConfigError, TargetError
from convex_cdc.target_s3.publish.object_store import PublishTarget, open_publish_target
from tests.fixtures.moto_s3 import S3Endpoint


@pytest.fixture(params=["local", "s3"])
def target(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PublishTarget]:
    if request.param == "local":
        yield open_publish_target(str(tmp_path / "published" / "lake"))
        return
    s3: S3Endpoint = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    yield open_publish_target(f"s3://{bucket}/lake/v1", endpoint_url=s3.url)


def test_put_if_absent_creates_once_and_never_overwrites(target: PublishTarget) -> None:
    assert target.put_if_absent("staging/t/part-1.parquet", b"first") is True
    assert target.put_if_absent("staging/t/part-1.parquet", b"second!") is False
    assert target.get("staging/t/part-1.parquet") == b"first"


def test_put_replaces_and_get_of_a_missing_object_is_none(target: PublishTarget) -> None:
    target.put("manifest.json", b"one")
    target.put("manifest.json", b"two")
    assert target.get("manifest.json") == b"two"
    assert target.get("nope.json") is None
    assert target.head("nope.json") is None


def test_list_is_recursive_and_relative_to_the_prefix(target: PublishTarget) -> None:
    target.put("staging/a/1.parquet", b"1")
    target.put("staging/b/22.parquet", b"22")
    target.put("manifests/000000000001.json", b"{}")
    listed = {(o.path, o.size) for o in target.list("staging")}
    assert listed == {("staging/a/1.parquet", 1), ("staging/b/22.parquet", 2)}
    assert target.list("raw_change_log") == []


def test_delete_is_idempotent(target: PublishTarget) -> None:
    target.put("staging/a/1.parquet", b"1")
    target.delete(["staging/a/1.parquet", "staging/a/never-existed.parquet"])
    target.delete(["staging/a/1.parquet"])
    assert target.list("staging") == []


def test_a_plain_path_is_created_and_described_as_a_file_url(tmp_path: Path) -> None:
    where = tmp_path / "new" / "dir"
    target = open_publish_target(str(where))
    assert where.is_dir()
    assert target.describe() == where.as_uri()
    same = open_publish_target(where.as_uri())
    same.put("x", b"1")
    assert (where / "x").read_bytes() == b"1"


def test_a_missing_bucket_is_one_clear_line(
    s3_server: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    target = open_publish_target("s3://no-such-bucket-here/lake", endpoint_url=s3_server.url)
    with pytest.raises(TargetError, match="bucket 'no-such-bucket-here' does not exist") as err:
        target.get("manifest.json")
    message = str(err.value)
    assert "\n" not in message
    assert "create the bucket" in message
    assert s3_server.secret_key not in message.replace("s3://", "")


def test_an_unreachable_endpoint_is_a_network_error_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = open_publish_target("s3://lake/p", endpoint_url=f"http://127.0.0.1:{port}")
    with pytest.raises(TargetError, match="cannot reach the object store") as err:
        target.put("x", b"1")
    assert "very-secret-value" not in str(err.value)
    assert "\n" not in str(err.value)


def test_describe_shows_the_endpoint_but_no_credentials() -> None:
    target = open_publish_target("s3://lake/prefix/", endpoint_url="http://user:pw@minio:9000")
    assert target.describe() == "s3://lake/prefix (endpoint http://minio:9000)"


@pytest.mark.parametrize(
    ("url", "endpoint", "match"),
    [
        ("gs://bucket/x", None, "unsupported scheme 'gs'"),
        ("s3:///prefix", None, "names no bucket"),
        ("/tmp/somewhere", "http://localhost:9000", "only applies to s3://"),
        ("file://host/dir", None, "not an absolute file:// URL"),
        ("s3://AKIAKEY:s3cr3t@lake/x", None, "credentials do not belong in an s3:// URL"),
    ],
)
def test_bad_target_urls_are_config_errors(url: str, endpoint: str | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        open_publish_target(url, endpoint_url=endpoint)
    assert "s3cr3t" not in str(err.value)
