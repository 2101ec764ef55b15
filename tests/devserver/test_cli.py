"""``convex-cdc devserver`` as a process: the ready line, keys, flags and clean shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
from click.testing import CliRunner

from convex_cdc.cli import cli
from convex_cdc.core.errors import ConfigError
from tests.fixtures.devserver import start_devserver_process, stop_process


def _get(url: str, key: str, path: str) -> httpx.Response:
    return httpx.get(url + path, headers={"Authorization": f"Convex {key}"}, timeout=30)


def test_a_generated_key_is_printed_on_the_ready_line_and_sigterm_stops_it() -> None:
    env = {"CONVEX_DEPLOY_KEY": ""}
    process, url, key = start_devserver_process(env=env)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert key.startswith("dev:local-devserver|")
        assert len(key.split("|", 1)[1]) == 64
        assert _get(url, key, "/api/test_streaming_export_connection").status_code == 200
        assert _get(url, "wrong", "/api/test_streaming_export_connection").status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        stop_process(process)


def test_the_environment_key_is_used_and_not_printed() -> None:
    process, url, key = start_devserver_process(
        "--seed",
        "demo",
        "--docs",
        "150",
        "--snapshot-page-size",
        "7",
        env={"CONVEX_DEPLOY_KEY": "prod:x|secret"},
    )
    try:
        assert key == "prod:x|secret"
        page = _get(url, key, "/api/list_snapshot").json()
        assert 0 < len(page["values"]) <= 7
        # The bare secret part is accepted too, as Convex strips the deployment prefix.
        assert _get(url, "secret", "/api/test_streaming_export_connection").status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        stop_process(process)


def test_exactly_one_line_is_printed() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "convex_cdc", "devserver", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith(b"convex-cdc devserver ready url=http://")
        process.terminate()
        rest = process.stdout.read()
        assert rest == b""
        assert process.wait(timeout=20) == 0
    finally:
        stop_process(process)


def test_help_documents_every_flag() -> None:
    result = CliRunner().invoke(cli, ["devserver", "--help"])
    assert result.exit_code == 0
    for flag in (
        "--host",
        "--port",
        "--seed",
        "--docs",
        "--fail-rate",
        "--fault-seed",
        "--workload-seed",
        "--snapshot-page-size",
        "--deltas-row-limit",
        "--retention-seconds",
        "--disable-data-sync",
        "--data-sync-page-size",
        "--data-sync-page-bytes",
        "--data-sync-rows-read-limit",
        "--data-sync-by-id-freshness-seconds",
    ):
        assert flag in result.output


def test_data_sync_limits_that_cannot_work_are_refused_before_serving() -> None:
    args = ["devserver", "--data-sync-page-size", "10", "--data-sync-rows-read-limit", "5"]
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, ConfigError)
    assert "data_sync_rows_read_limit" in str(result.exception)


def test_disable_data_sync_serves_a_deployment_without_it() -> None:
    process, url, key = start_devserver_process(
        "--disable-data-sync", "--data-sync-page-size", "3", env={"CONVEX_DEPLOY_KEY": ""}
    )
    try:
        headers = {"Authorization": f"Convex {key}"}
        response = httpx.post(url + "/api/v1/data/sync", json={}, headers=headers, timeout=30)
        assert response.status_code == 404
        assert _get(url, key, "/api/list_snapshot").status_code == 200
        settings = _get(url, key, "/_devserver/settings").json()
        assert settings["data_sync_enabled"] is False
        assert settings["data_sync_page_size"] == 3
    finally:
        stop_process(process)
