"""Publish destinations for the tests here: a local directory and moto's S3 (subprocess)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from convex_cdc.target_s3.publish.object_store import PublishTarget, open_publish_target
from tests.fixtures.moto_s3 import S3Endpoint


@dataclass(frozen=True)
class Where:
    """A publish destination and how to reach it."""

    url: str
    endpoint_url: str | None

    def target(self) -> PublishTarget:
        return open_publish_target(self.url, endpoint_url=self.endpoint_url)

    def names(self, prefix: str) -> set[str]:
        """Every object under ``prefix`` except the Delta logs."""
        return {o.path for o in self.target().list(prefix) if "/_delta_log/" not in o.path}


@pytest.fixture(params=["local", "s3"])
def where(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Where]:
    if request.param == "local":
        yield Where(str(tmp_path / "published"), None)
        return
    s3: S3Endpoint = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    yield Where(f"s3://{bucket}/lake", s3.url)
