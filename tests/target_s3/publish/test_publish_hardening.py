"""Publish under faults: a full target, damaged manifests, long foreign text, leaks, and
a second publisher on the same prefix (issue 12, items 7 and 8)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import obstore
import obstore.exceptions as obs_errors
import pytest

from convex_cdc.core.errors import ConfigError, StateError, TargetError
from convex_cdc.target_s3.layout import DestinationLayout
from convex_cdc.target_s3.publish.manifest import loads_manifest
from convex_cdc.target_s3.publish.object_store import PublishTarget, open_publish_target
from convex_cdc.target_s3.publish.ownership import DESTINATION_ID_FILE, OWNER_PATH
from convex_cdc.target_s3.publish.publisher import PublishEvent, PublishReport, publish
from convex_cdc.target_s3.publish.reader import read_published
from tests.fixtures.moto_s3 import S3Endpoint
from tests.target_s3.publish.conftest import Where
from tests.target_s3.publish.test_publish import USERS, messages, stage

LONG = 5_000
"""Longer than any message should ever quote."""
SHORT_ENOUGH = 1_000


def _publish(dest: Path, where: Where, **options: Any) -> PublishReport:
    layout = DestinationLayout.at(dest)
    return publish(layout, where.url, endpoint_url=where.endpoint_url, **options)


def _local(tmp_path: Path) -> Where:
    return Where(str(tmp_path / "out"), None)


def _pointer_sequence(where: Where) -> int:
    raw = where.target().get("manifest.json")
    assert raw is not None
    return loads_manifest(raw, where="manifest.json").sequence


# 1. A full target: say so, exit 7, one line; do not blame the URL, credentials, network.


def _failing_put(exc: BaseException) -> Callable[..., Any]:
    def put(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return put


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        obs_errors.GenericError(
            "Generic LocalFileSystem error: Unable to copy data to file: No space left on "
            "device (os error 28)\n\nDebug source:\nGeneric { ... }"
        ),
    ],
    ids=["oserror", "obstore-local"],
)
def test_a_full_target_says_no_space_and_blames_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    dest, where = tmp_path / "dest", _local(tmp_path)
    stage(dest)
    monkeypatch.setattr(obstore, "put", _failing_put(failure))

    with pytest.raises(TargetError) as err:
        _publish(dest, where)

    line = str(err.value)
    assert err.value.exit_code == 7
    assert "\n" not in line
    assert "no space left" in line and "free space" in line
    for blamed in ("credential", "network", "target URL"):
        assert blamed not in line


def test_a_store_that_refuses_the_write_is_named_not_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest, where = tmp_path / "dest", _local(tmp_path)
    stage(dest)
    refusal = obs_errors.GenericError(
        "Generic S3 error: Error performing PUT http://127.0.0.1:9000/lake/x in 3ms - Server "
        "returned non-2xx status code: 403 Forbidden: <Error><Code>ObjectLocked</Code>"
        + "<Message>"
        + "x" * LONG
        + "</Message></Error>"
    )
    monkeypatch.setattr(obstore, "put", _failing_put(refusal))

    with pytest.raises(TargetError) as err:
        _publish(dest, where)

    line = str(err.value)
    assert "the object store refused to write" in line and "HTTP 403 ObjectLocked" in line
    assert "network" not in line and "credential" not in line
    assert len(line) < SHORT_ENOUGH


# 2. Damaged manifests: consistent, never silent, never blocking what it need not block.


def test_a_damaged_pointer_is_rebuilt_from_the_newest_numbered_manifest_with_a_warning(
    tmp_path: Path, where: Where, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "dest"
    stage(dest)
    _publish(dest, where)
    stage(dest, tables={"users": USERS[:2]})
    _publish(dest, where)
    where.target().put("manifest.json", b'{"format": "convex-cdc.manif')

    with caplog.at_level(logging.WARNING):
        report = _publish(dest, where)

    assert report.nothing_new and report.repaired_pointer
    assert "manifest.json is not JSON" in caplog.text
    assert "rewrites it from" in caplog.text and "000000000002.json" in caplog.text
    assert read_published(where.url, endpoint_url=where.endpoint_url).manifest.sequence == 2


def test_a_damaged_pointer_with_nothing_to_rebuild_it_from_is_refused(tmp_path: Path) -> None:
    dest, where = tmp_path / "dest", _local(tmp_path)
    stage(dest)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_bytes(b"\x00garbage")

    with pytest.raises(StateError) as err:
        _publish(dest, where)

    assert err.value.exit_code == 6
    assert "manifest.json is not JSON" in str(err.value)
    assert "no numbered manifest" in str(err.value) and "delete it" in str(err.value)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == b"\x00garbage"


def test_a_pointer_from_a_newer_convex_cdc_is_never_overwritten(tmp_path: Path) -> None:
    dest, where = tmp_path / "dest", _local(tmp_path)
    stage(dest)
    _publish(dest, where)
    pointer = tmp_path / "out" / "manifest.json"
    newer = {**json.loads(pointer.read_bytes()), "version": 99}
    pointer.write_text(json.dumps(newer))
    stage(dest, tables={"users": USERS[:1]})

    with pytest.raises(StateError, match="upgrade convex-cdc") as err:
        _publish(dest, where)

    assert err.value.exit_code == 6
    assert json.loads(pointer.read_bytes())["version"] == 99


def test_a_damaged_older_manifest_does_not_block_publishing_and_leaves_when_not_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest, where = tmp_path / "dest", _local(tmp_path)
    first = stage(dest)
    _publish(dest, where)
    stage(dest, tables={"users": USERS[:3]})
    _publish(dest, where)
    (tmp_path / "out" / "manifests" / "000000000001.json").write_bytes(b"{damaged")
    first_files = {f.path for t in first.tables for f in t.files}
    stage(dest, tables={"users": USERS[:2]})

    with caplog.at_level(logging.WARNING):
        report = _publish(dest, where)  # keep 10: manifest 1 is still kept

    assert report.sequence == 3
    assert "000000000001.json is not JSON" in caplog.text
    # Its files are unknown, so no file may be collected while it is kept.
    assert first_files <= where.names("staging")

    stage(dest, tables={"messages": messages(7)})
    report = _publish(dest, where, keep=1, orphan_grace=timedelta(0), delta=False)

    assert report.sequence == 4
    assert where.names("manifests") == {"manifests/000000000004.json"}
    assert read_published(where.url).manifest.sequence == 4


# 3. Text a server, a stored file or a flag supplied is quoted cut short.


def test_foreign_text_in_publish_errors_is_cut_short(tmp_path: Path) -> None:
    dest, where = tmp_path / "dest", _local(tmp_path)
    stage(dest)
    with pytest.raises(ConfigError) as bad_url:
        publish(DestinationLayout.at(dest), "ftp" + "p" * LONG + "://host/x")
    assert len(str(bad_url.value)) < SHORT_ENOUGH

    other = tmp_path / "other"
    stage(other, deployment_url="https://" + "a" * LONG + ".convex.cloud")
    publish(DestinationLayout.at(other), where.url)
    with pytest.raises(ConfigError, match="holds data published from") as foreign:
        _publish(dest, where)
    assert len(str(foreign.value)) < SHORT_ENOUGH

    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "manifest.json").write_text(
        json.dumps({"format": "convex-cdc.manifest", "version": 1, "z" * LONG: 1})
    )
    with pytest.raises(StateError) as damaged:
        publish(DestinationLayout.at(dest), str(alone))
    assert len(str(damaged.value)) < SHORT_ENOUGH


# 4. Leaks: partial local files, and what a killed GC left.


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_partial_files_of_a_killed_local_publish_are_swept_after_the_grace(
    tmp_path: Path,
) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    stage(dest)
    table_dir = out / "staging" / "messages"
    table_dir.mkdir(parents=True)
    old = table_dir / "part-0001-00000000deadbeef.parquet#1"
    young = table_dir / "part-0002-00000000deadbeef.parquet#3"
    pointer_partial = out / "manifest.json#2"
    not_ours = table_dir / "notes#1"
    for path in (old, young, pointer_partial, not_ours):
        path.write_bytes(b"partial")
    for path in (old, pointer_partial, not_ours):
        _age(path, 7200)

    report = publish(DestinationLayout.at(dest), str(out))

    assert not old.exists() and not pointer_partial.exists()
    assert young.exists()  # a writer may still be at it
    assert not_ours.exists()  # not a name obstore gives a write in progress
    assert report.files_deleted == 2
    _age(young, 7200)
    again = publish(DestinationLayout.at(dest), str(out))
    assert again.nothing_new and not young.exists() and again.files_deleted == 1


class Killed(Exception):
    """Stands for SIGKILL in the middle of garbage collection."""


def test_a_publish_with_nothing_new_collects_what_a_killed_gc_left(
    tmp_path: Path, where: Where
) -> None:
    dest = tmp_path / "dest"
    first = stage(dest)
    _publish(dest, where, delta=False)
    second = stage(dest, tables={"messages": messages(45)})

    def kill_at_first_delete(event: PublishEvent) -> None:
        if event.stage == "delete":
            raise Killed

    with pytest.raises(Killed):
        _publish(dest, where, keep=1, delta=False, progress=kill_at_first_delete)
    stale = {f.path for t in first.tables for f in t.files} - {
        f.path for t in second.tables for f in t.files
    }
    assert stale and stale <= where.names("staging")  # orphans of the killed GC

    report = _publish(dest, where, keep=1, delta=False, orphan_grace=timedelta(0))

    assert report.nothing_new
    assert report.files_deleted == len(stale)
    assert where.names("staging") == {f.path for t in second.tables for f in t.files}


# 5. One destination per prefix; the pointer only moves forward.


def test_a_second_destination_is_refused_on_a_prefix_another_one_owns(
    tmp_path: Path, where: Where
) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    stage(ours)
    _publish(ours, where)
    pointer = where.target().get("manifest.json")
    stage(theirs, consistent_as_of_ts=500, tables={"users": USERS[:1]})

    with pytest.raises(ConfigError, match="published by another destination") as err:
        _publish(theirs, where)

    assert err.value.exit_code == 2
    assert OWNER_PATH in str(err.value) and "its own prefix" in str(err.value)
    assert where.target().get("manifest.json") == pointer
    assert where.names("manifests") == {"manifests/000000000001.json"}


def test_the_pointer_never_moves_back_to_an_older_manifest(
    tmp_path: Path, where: Where, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow publisher writes its pointer after a faster one moved it further."""
    slow, fast = tmp_path / "slow", tmp_path / "fast"
    stage(slow)
    _publish(slow, where)
    # The fast one is a copy of the same destination (say, restored on another host).
    shutil.copytree(slow, fast)
    stage(slow, tables={"users": USERS[:3]})
    stage(fast, tables={"users": USERS[:2]}, consistent_as_of_ts=2_000)

    put_if_absent = PublishTarget.put_if_absent
    overtaken = False

    def overtake_after_the_numbered_manifest(self: PublishTarget, path: str, data: bytes) -> bool:
        nonlocal overtaken
        created = put_if_absent(self, path, data)
        if path == "manifests/000000000002.json" and not overtaken:
            overtaken = True
            assert _publish(fast, where).sequence == 3
        return created

    monkeypatch.setattr(PublishTarget, "put_if_absent", overtake_after_the_numbered_manifest)

    with pytest.raises(TargetError, match="already points at a manifest newer than 2"):
        _publish(slow, where)

    assert overtaken
    assert _pointer_sequence(where) == 3


def test_a_conditional_replace_on_s3_never_overwrites_a_version_it_did_not_read(
    s3_server: S3Endpoint, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``If-Match`` on S3 (moto's server honours it); a local directory uses flock instead."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    target = open_publish_target(f"s3://{s3_bucket}/lake", endpoint_url=s3_server.url)
    target.put("pointer", b"1")
    decisions: list[bytes] = []

    def keep(current: bytes) -> bool:
        decisions.append(current)
        if len(decisions) == 1:
            target.put("pointer", b"3")  # another writer, between our read and our write
        return int(current) >= 2

    assert not target.put_unless("pointer", b"2", keep=keep)
    assert target.get("pointer") == b"3"
    assert decisions == [b"1", b"3"]


def test_a_destination_keeps_one_id_and_records_it_at_the_prefix(tmp_path: Path) -> None:
    dest, where = tmp_path / "dest", _local(tmp_path)
    stage(dest)
    _publish(dest, where)
    stage(dest, tables={"users": USERS[:1]})
    _publish(dest, where)

    destination_id = (dest / DESTINATION_ID_FILE).read_text().strip()
    owner = json.loads((tmp_path / "out" / OWNER_PATH).read_bytes())
    assert owner["destination_id"] == destination_id
    assert owner["deployment_url"] == "https://happy-animal-123.convex.cloud"
