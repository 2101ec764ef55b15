"""``status`` compares the cursor's age with the deployment's retention: quiet below half
of the window, a warning from half on, an error line from 90% on (and past it)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner

from convex_cdc.cli import cli
from convex_cdc.core.checkpoint import (
    Checkpoint,
    DataSync,
    DataSyncCursor,
    DeltaCursor,
    DeltaTail,
    Position,
    SourceIdentity,
)
from convex_cdc.core.retention import check_retention, default_retention_days
from convex_cdc.target_s3.checkpoint_file import FileCheckpointStore
from convex_cdc.target_s3.layout import DestinationLayout

SELF_HOSTED: Final = "https://convex.example.internal"
CLOUD: Final = "https://happy-animal-123.convex.cloud"
HOUR: Final = 3600 * 1_000_000_000


def destination(tmp_path: Path, *, url: str, age_hours: float, data_sync: bool = False) -> Path:
    """A destination whose checkpoint's cursor stands ``age_hours`` before now."""
    dest = tmp_path / "lake"
    dest.mkdir()
    cursor_at = time.time_ns() - round(age_hours * HOUR)
    position: Position = (
        DataSync(DataSyncCursor("ab12"), "upToDate", cursor_at, "sync-1")
        if data_sync
        else DeltaTail(DeltaCursor(cursor_at))
    )
    checkpoint = Checkpoint(SourceIdentity.from_url(url), position, batch_seq=3)
    FileCheckpointStore(DestinationLayout.at(dest)).save(checkpoint)
    return dest


def status(dest: Path, *args: str, env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    runner = CliRunner()
    base = ["status", "--dest", str(dest), "--offline", *args]
    as_json = runner.invoke(cli, [*base, "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    human = runner.invoke(cli, base, env=env)
    assert human.exit_code == 0, human.output
    return json.loads(as_json.output), " ".join(human.output.split())


def test_a_fresh_cursor_gets_no_warning(tmp_path: Path) -> None:
    shown, text = status(destination(tmp_path, url=SELF_HOSTED, age_hours=3))

    assert shown["retention_days"] == 2
    assert 3 * 3600 <= shown["cursor_age_seconds"] < 3 * 3600 + 60
    assert shown["retention_left_seconds"] == pytest.approx(
        2 * 86_400 - shown["cursor_age_seconds"], abs=1
    )
    assert shown["retention_warning"] is None
    assert "retention 2 days; cursor 3.0 h old, 45.0 h left" in text
    assert "warning" not in text and "error" not in text


def test_a_cursor_past_half_the_window_gets_a_warning(tmp_path: Path) -> None:
    shown, text = status(destination(tmp_path, url=SELF_HOSTED, age_hours=30))

    assert shown["retention_warning"]["level"] == "warning"
    assert 17.9 * 3600 < shown["retention_left_seconds"] <= 18 * 3600
    assert (
        "warning: the cursor is 30.0 h old, 18.0 h left of this deployment's 2-day "
        "retention: run sync more often" in text
    )


def test_a_cursor_past_90_percent_of_the_window_gets_an_error_line(tmp_path: Path) -> None:
    shown, text = status(destination(tmp_path, url=SELF_HOSTED, age_hours=45, data_sync=True))

    assert shown["retention_warning"]["level"] == "error"
    assert "error: the cursor is 45.0 h old, only 3.0 h left" in text
    assert "run sync now, and more often" in text


def test_a_cursor_past_the_window_says_the_next_sync_needs_a_resnapshot(tmp_path: Path) -> None:
    shown, text = status(destination(tmp_path, url=SELF_HOSTED, age_hours=50))

    assert shown["retention_left_seconds"] < 0
    assert "past this deployment's 2-day retention" in text and "--resnapshot" in text


def test_cloud_deployments_keep_14_days_and_the_window_is_configurable(
    tmp_path: Path,
) -> None:
    dest = destination(tmp_path, url=CLOUD, age_hours=45)
    shown, _ = status(dest)
    assert shown["retention_days"] == 14 and shown["retention_warning"] is None

    shown, text = status(dest, "--retention-days", "3.5")
    assert shown["retention_days"] == 3.5 and shown["retention_warning"]["level"] == "warning"
    assert "3.5-day retention" in text
    shown, _ = status(dest, env={"CONVEX_CDC_RETENTION_DAYS": "2"})
    assert shown["retention_warning"]["level"] == "error"


def test_a_data_sync_still_snapshotting_is_aged_from_its_last_save(tmp_path: Path) -> None:
    dest = tmp_path / "lake"
    dest.mkdir()
    layout = DestinationLayout.at(dest)
    position = DataSync(DataSyncCursor("ab12"), "snapshotting", None, "sync-1")
    FileCheckpointStore(layout).save(Checkpoint(SourceIdentity.from_url(SELF_HOSTED), position, 1))
    saved_at = time.time() - 40 * 3600
    os.utime(layout.checkpoint, (saved_at, saved_at))

    shown, _ = status(dest)

    assert 40 * 3600 <= shown["cursor_age_seconds"] < 40 * 3600 + 60
    assert shown["retention_warning"]["level"] == "warning"


def test_the_default_window_follows_the_deployment_url() -> None:
    assert default_retention_days(CLOUD) == 14
    assert default_retention_days("https://HAPPY-animal-123.Convex.Cloud/") == 14
    assert default_retention_days("http://127.0.0.1:3210") == 2
    assert default_retention_days("https://convex.cloud.example.com") == 2


def test_a_cursor_from_the_future_is_not_older_than_zero() -> None:
    check = check_retention(cursor_at=10 * HOUR, now=9 * HOUR, retention_days=2)
    assert check.cursor_age_seconds == 0 and check.level == "ok"
