"""delta-rs, pyarrow and OS errors become one ConvexCdcError line at the package's edge."""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake.exceptions import CommitFailedError, DeltaError, DeltaProtocolError

from convex_cdc.core.errors import ConvexCdcError, DestinationBusy, StateError, TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.platform.databricks.delta_errors import delta_errors
from convex_cdc.platform.databricks.delta_read import open_table
from convex_cdc.platform.databricks.silver import read_silver
from convex_cdc.platform.databricks.warehouse import Warehouse

BACKTRACE = "\n   0: <unknown>\n   1: start_thread\n"


def _translated(exc: BaseException, *, state: bool = False) -> ConvexCdcError:
    with pytest.raises(ConvexCdcError) as caught, delta_errors("read the table t", state=state):
        raise exc
    assert caught.value.__cause__ is exc
    return caught.value


@pytest.mark.parametrize(
    ("exc", "state", "kind", "words"),
    [
        (DeltaError("Kernel error: Json error" + BACKTRACE), False, TargetError, "time travel"),
        (DeltaError("Kernel error: Json error" + BACKTRACE), True, StateError, "fresh warehouse"),
        (DeltaProtocolError("invalid log" + BACKTRACE), True, StateError, "time travel"),
        (pa.ArrowInvalid("Parquet error: bad footer"), False, TargetError, "damaged"),
        (OSError(errno.EACCES, "Permission denied", "/w/t"), True, TargetError, "writable"),
        (DeltaError("Could not create local directory: /w/t"), True, TargetError, "writable"),
        (CommitFailedError("conflict" + BACKTRACE), False, TargetError, "one convex-cdc"),
    ],
)
def test_each_failure_maps_to_its_class_on_one_line(
    exc: BaseException, state: bool, kind: type[ConvexCdcError], words: str
) -> None:
    error = _translated(exc, state=state)

    assert type(error) is kind
    line = error.one_line()
    assert line.startswith("cannot read the table t: ")
    assert words in line
    assert "<unknown>" not in line and "\n" not in line


def test_aws_secrets_in_delta_text_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")

    error = _translated(DeltaError("Generic S3 error: signature s3cr3t-value rejected"))

    assert "s3cr3t-value" not in error.one_line() and "***" in error.one_line()


def test_errors_raised_on_purpose_pass_through() -> None:
    busy = DestinationBusy("another extractor", hint="skip this run")
    with pytest.raises(DestinationBusy) as caught, delta_errors("save"):
        raise busy
    assert caught.value is busy


def test_open_table_on_a_damaged_log_names_the_table(warehouse: Warehouse) -> None:
    location = warehouse.join("_convex_cdc", "checkpoints")
    log = Path(location) / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json").write_text("garbage{{\n")

    with pytest.raises(StateError, match=r"open the Delta table .*_convex_cdc/checkpoints"):
        open_table(location, warehouse)


def test_read_silver_on_a_damaged_log_is_a_target_error(warehouse: Warehouse) -> None:
    key = TableKey("", "messages")
    log = Path(warehouse.silver(key)) / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json").write_text("garbage{{\n")

    with pytest.raises(TargetError, match="silver/messages: Kernel error"):
        read_silver(warehouse, key)


def test_only_tables_under_the_control_directory_are_state(warehouse: Warehouse) -> None:
    assert warehouse.holds_state(warehouse.checkpoints)
    assert warehouse.holds_state(warehouse.tombstones(TableKey("", "messages")))
    assert not warehouse.holds_state(warehouse.bronze(TableKey("", "messages")))
    assert not warehouse.holds_state(warehouse.join("_convex_cdc_other", "x"))
