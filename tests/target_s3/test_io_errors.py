"""Local I/O failures of the S3/export target become one TargetError line with a fix."""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow as pa
import pytest

from convex_cdc.core.errors import StateError, TargetError
from convex_cdc.target_s3.io_errors import io_errors


def _raise(exc: BaseException) -> None:
    with io_errors("write /lake/x", then="run sync again"):
        raise exc


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.ENOSPC, "free disk space, then run sync again"),
        (errno.EDQUOT, "free disk space"),
        (errno.EACCES, "make /lake/x/f writable by this user"),
        (errno.EROFS, "mount it read-write"),
        (errno.EIO, "check the destination's disk and permissions, then run sync again"),
    ],
)
def test_an_os_error_names_the_file_and_the_fix(code: int, hint: str) -> None:
    with pytest.raises(TargetError) as caught:
        _raise(OSError(code, "it failed", "/lake/x/f"))

    line = caught.value.one_line()
    assert line.startswith("cannot write /lake/x: it failed (/lake/x/f) — ")
    assert hint in line
    assert isinstance(caught.value.__cause__, OSError)


def test_a_file_where_a_directory_belongs_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "staging"
    blocker.write_text("x")

    with (
        pytest.raises(TargetError, match=f"{blocker} is a file where convex-cdc needs a dir"),
        io_errors("materialize", then="run materialize again"),
    ):
        (blocker / "_state.json").read_bytes()


def test_a_pyarrow_error_is_a_target_error_on_one_line() -> None:
    with pytest.raises(TargetError, match=r"^cannot write /lake/x: bad parquet — check"):
        _raise(pa.ArrowInvalid("bad parquet\nmore detail"))


def test_errors_raised_on_purpose_pass_through() -> None:
    error = StateError("the state is damaged", hint="rebuild it")
    with pytest.raises(StateError) as caught:
        _raise(error)
    assert caught.value is error


def test_other_exceptions_are_left_to_the_cli() -> None:
    with pytest.raises(KeyError):
        _raise(KeyError("a bug"))
