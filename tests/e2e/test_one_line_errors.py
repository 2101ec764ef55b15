"""What a user sees when a target, its state or the machine fails: one line, no traceback.

Runs the real console entry point as a subprocess (``python -m convex_cdc``) against
targets damaged on purpose: a garbage Delta log, a file where a directory belongs, a
port already taken. The faults work as root too (permissions would not stop root). The
last tests call ``cli.main`` in-process to check the last-resort handler for unexpected
exceptions.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from convex_cdc import cli
from convex_cdc.commands import status as status_command
from convex_cdc.logs import register_secret
from convex_cdc.platform.databricks.bronze import BronzeSink
from convex_cdc.platform.databricks.control_table import DeltaCheckpointStore
from convex_cdc.platform.databricks.silver import apply_silver
from convex_cdc.platform.databricks.warehouse import Warehouse
from tests.e2e.cli_process import one_error_line
from tests.e2e.cli_process import run_cli as _run_cli
from tests.platform.databricks.change_batches import SOURCE, SOURCE_NAME, batch, doc

KEY = "prod:target-errors|" + "ab" * 32


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _run_cli(*args, env=env, timeout=120)


def _damage_delta_log(table: Path) -> None:
    logs = sorted((table / "_delta_log").glob("*.json"))
    assert logs, f"{table} has no Delta log"
    for path in logs:
        path.write_text("garbage{{\n")


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    """A warehouse with bronze, silver, a control table and a spec log."""
    target = Warehouse.from_uri(str(tmp_path / "warehouse"), source_name=SOURCE_NAME)
    landed = batch(1, [doc("messages", "a", 10, text="hi"), doc("messages", "b", 11, text="yo")])
    BronzeSink(target, SOURCE).write(landed)
    DeltaCheckpointStore(target, SOURCE).save(landed.checkpoint)
    apply_silver(target)
    return target


@pytest.mark.parametrize(
    ("damaged", "exit_code", "names"),
    [
        ("bronze/messages", 7, "bronze/messages"),
        ("silver/messages", 7, "silver/messages"),
        ("_convex_cdc/checkpoints", 6, "_convex_cdc/checkpoints"),
        ("_convex_cdc/table_specs", 6, "_convex_cdc/table_specs"),
    ],
)
def test_apply_silver_on_a_damaged_delta_log_prints_one_line(
    warehouse: Warehouse, damaged: str, exit_code: int, names: str
) -> None:
    _damage_delta_log(Path(warehouse.location) / damaged)

    result = run_cli(
        "databricks", "apply-silver", "--warehouse", warehouse.root, "--source", SOURCE_NAME
    )

    assert result.returncode == exit_code, result.stderr
    line = one_error_line(result)
    assert names in line and "Json error" in line and "time travel" in line
    assert "   0: " not in line  # delta-rs's backtrace stays out of the message


def test_the_cause_of_a_target_error_is_logged_with_vv(warehouse: Warehouse) -> None:
    _damage_delta_log(Path(warehouse.location) / "bronze/messages")

    result = run_cli(
        "-vv", "databricks", "apply-silver", "--warehouse", warehouse.root, "--source", SOURCE_NAME
    )

    assert result.returncode == 7
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" in result.stderr and "DeltaError" in result.stderr


def test_extract_on_a_damaged_control_table_is_a_state_error(warehouse: Warehouse) -> None:
    _damage_delta_log(Path(warehouse.location) / "_convex_cdc/checkpoints")

    result = run_cli(
        "databricks",
        "extract",
        "--warehouse",
        warehouse.root,
        "--source",
        SOURCE_NAME,
        "--url",
        "http://127.0.0.1:9",  # never contacted: the checkpoint is read first
        env={"CONVEX_DEPLOY_KEY": KEY},
    )

    assert result.returncode == 6, result.stderr
    line = one_error_line(result)
    assert "_convex_cdc/checkpoints" in line
    assert KEY not in result.stderr + result.stdout


def test_render_into_a_file_prints_one_line(warehouse: Warehouse, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")

    result = run_cli(
        "databricks", "render", "--warehouse", warehouse.root, "--out", str(blocker / "out"),
        "--source", SOURCE_NAME, "--warehouse-location", "s3://lake/convex",
    )  # fmt: skip

    assert result.returncode == 7, result.stderr
    assert "--out" in one_error_line(result)


def test_publish_to_a_path_under_a_file_prints_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")

    result = run_cli("publish", "--dest", str(tmp_path / "dest"), "--to", str(blocker / "out"))

    assert result.returncode == 7, result.stderr
    assert str(blocker / "out") in one_error_line(result)


def test_materialize_with_a_file_where_staging_belongs_prints_one_line(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "staging").write_text("not a directory")

    result = run_cli("materialize", "--dest", str(dest))

    assert result.returncode == 7, result.stderr
    line = one_error_line(result)
    assert "Not a directory" in line
    assert f"{dest / 'staging'} is a file where convex-cdc needs a directory" in line


def test_sync_into_a_path_under_a_file_prints_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")

    result = run_cli("sync", "--dest", str(blocker / "dest"), env={"CONVEX_DEPLOY_KEY": KEY})

    assert result.returncode == 7, result.stderr
    assert str(blocker / "dest") in one_error_line(result)


def test_status_with_a_file_where_staging_belongs_prints_one_line(tmp_path: Path) -> None:
    (tmp_path / "staging").write_text("not a directory")

    result = run_cli("status", "--dest", str(tmp_path), "--offline")

    assert result.returncode == 7, result.stderr
    assert "Not a directory" in one_error_line(result)


def test_a_devserver_port_already_taken_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_cli("devserver", "--port", str(port))

    assert result.returncode == 2, result.stderr
    assert "Address already in use" in one_error_line(result)


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError(f"boom\nwith key {KEY}")


def test_an_unexpected_exception_is_one_line_and_exit_code_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    register_secret(KEY)
    monkeypatch.setattr(status_command, "collect_status", _boom)

    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--dest", str(tmp_path), "--offline"])

    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.splitlines()
    assert lines == [
        "error: unexpected RuntimeError: boom with key *** — this is a bug; run with -v for "
        "the traceback and report it"
    ]


def test_an_unexpected_exception_logs_its_traceback_with_v(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    register_secret(KEY)
    monkeypatch.setattr(status_command, "collect_status", _boom)

    with pytest.raises(SystemExit) as exited:
        cli.main(["-v", "status", "--dest", str(tmp_path), "--offline"])

    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err
    assert KEY not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
