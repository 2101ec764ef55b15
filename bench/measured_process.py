"""One benchmark step as a child process: wall seconds, CPU seconds and peak RSS.

The child is reaped with ``os.wait4``, whose ``ru_maxrss`` is the child's own peak
resident set (kB on Linux), so each step's memory is measured alone, without psutil.
Output goes to log files, or (``on_stdout``) is streamed to the caller in chunks so a
large stream (the Airbyte connector's records) is counted without being stored.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ProcessResult:
    """How one child process ran."""

    argv: tuple[str, ...]
    returncode: int
    wall_seconds: float
    user_seconds: float
    system_seconds: float
    peak_rss_mb: float
    stdout_path: Path
    stderr_path: Path

    @property
    def cpu_seconds(self) -> float:
        """User plus system CPU time."""
        return self.user_seconds + self.system_seconds

    def stdout(self) -> str:
        """The child's standard output (empty when it was streamed to ``on_stdout``)."""
        return self.stdout_path.read_text(errors="replace")

    def stderr_tail(self, lines: int = 15) -> str:
        """The last lines of the child's standard error, for failure messages."""
        text = self.stderr_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class StepFailed(RuntimeError):
    """A measured child process exited with a non-zero status."""


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_prefix: Path,
    cwd: Path | None = None,
    on_stdout: Callable[[bytes], None] | None = None,
    check: bool = True,
) -> ProcessResult:
    """Run ``argv`` to completion and measure it.

    Args:
        argv: the command line.
        env: the child's complete environment.
        log_prefix: ``<prefix>.stdout`` / ``<prefix>.stderr`` receive the child's output.
        cwd: the child's working directory.
        on_stdout: if given, the child's stdout is piped and handed over chunk by chunk
            instead of being written to the log file.
        check: raise :class:`StepFailed` on a non-zero exit status.

    Raises:
        StepFailed: the child failed and ``check`` is set (the message holds its stderr).
    """
    log_prefix.parent.mkdir(parents=True, exist_ok=True)
    stdout_path = log_prefix.with_name(log_prefix.name + ".stdout")
    stderr_path = log_prefix.with_name(log_prefix.name + ".stderr")
    with stdout_path.open("wb") as out_file, stderr_path.open("wb") as err_file:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if on_stdout is not None else out_file,
            stderr=err_file,
        )
        try:
            if on_stdout is not None:
                pipe = process.stdout
                assert isinstance(pipe, io.BufferedReader)
                while chunk := pipe.read1(_CHUNK):
                    on_stdout(chunk)
                pipe.close()
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if process.returncode is None:  # interrupted: never leave the child behind
                stop_process(process)
    result = ProcessResult(
        argv=tuple(argv),
        returncode=process.returncode,
        wall_seconds=wall,
        user_seconds=usage.ru_utime,
        system_seconds=usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )
    if check and result.returncode != 0:
        raise StepFailed(
            f"{' '.join(argv[:4])} ... exited with {result.returncode}:\n{result.stderr_tail()}"
        )
    return result


def stop_process(process: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_seconds``; reaps the process. Idempotent."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
