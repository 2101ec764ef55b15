"""The servers a benchmark run talks to, each in its own process.

* :class:`DevserverProcess` — ``python -m convex_cdc devserver --seed demo --docs N``; a
  separate process so the server never shares a GIL with the measured client.
* :class:`MotoProcess` — moto's standalone S3 server (as ``tests/fixtures/moto_s3.py``
  starts it), the target of ``publish``.

Both are stopped by :meth:`stop` (SIGTERM, then SIGKILL), which the caller registers on
an ``ExitStack`` so nothing is left running after an error or Ctrl-C.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from measured_process import stop_process

_READY = re.compile(r"^convex-cdc devserver ready url=(\S+)(?: key=(\S+))?$")

S3_ACCESS_KEY = "bench"
S3_SECRET_KEY = "bench-secret"  # noqa: S105 - moto accepts any credentials
S3_REGION = "us-east-1"


class ServerFailed(RuntimeError):
    """A server process did not start."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _peak_rss_mb(pid: int) -> float | None:
    """``VmHWM`` of a running process (its peak resident set so far), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process, from ``/proc/<pid>/stat``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class ServerMeter:
    """CPU a server process spent between :meth:`mark` and :meth:`since_mark`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._mark: float | None = None

    def mark(self) -> None:
        """Remember the server's CPU time now."""
        self._mark = _cpu_seconds(self.pid)

    def since_mark(self) -> float | None:
        """Server CPU seconds since the last :meth:`mark` (``None`` if unknown)."""
        now = _cpu_seconds(self.pid)
        if now is None or self._mark is None:
            return None
        return now - self._mark


@dataclass
class DevserverProcess:
    """A running devserver and how long it took to populate."""

    url: str
    key: str
    docs: int
    populate_seconds: float
    process: subprocess.Popen[bytes] = field(repr=False)

    @classmethod
    def start(cls, *, docs: int, log_dir: Path, name: str = "devserver") -> DevserverProcess:
        """Start a devserver with ``docs`` demo documents and wait for its ready line.

        Raises:
            ServerFailed: it exited before becoming ready.
        """
        log_dir.mkdir(parents=True, exist_ok=True)
        stderr_path = log_dir / f"{name}.stderr"
        env = {k: v for k, v in os.environ.items() if k != "CONVEX_DEPLOY_KEY"}
        argv = [sys.executable, "-m", "convex_cdc", "devserver", "--seed", "demo"]
        argv += ["--docs", str(docs), "--port", "0"]
        started = time.perf_counter()
        with stderr_path.open("wb") as err:
            process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
            )
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode(errors="replace").strip()
            process.stdout.close()
            match = _READY.match(line)
            if match is None or match.group(2) is None:
                raise ServerFailed(
                    f"the devserver did not become ready ({line!r}):\n{_tail(stderr_path)}"
                )
        except BaseException:
            stop_process(process)
            raise
        return cls(
            url=match.group(1),
            key=match.group(2),
            docs=docs,
            populate_seconds=time.perf_counter() - started,
            process=process,
        )

    def peak_rss_mb(self) -> float | None:
        """The server's peak RSS so far (read from /proc while it runs)."""
        return _peak_rss_mb(self.process.pid)

    def meter(self) -> ServerMeter:
        """Measures the server's CPU time during a step."""
        return ServerMeter(self.process.pid)

    def env(self) -> dict[str, str]:
        """``CONVEX_URL`` and ``CONVEX_DEPLOY_KEY`` for a convex-cdc child process, on the
        legacy pair: the floor and the peer read the deployment through it too."""
        return {
            "CONVEX_URL": self.url,
            "CONVEX_DEPLOY_KEY": self.key,
            "CONVEX_CDC_API": "streaming-export",
        }

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        stop_process(self.process)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoProcess:
    """moto's standalone S3 server on a free loopback port."""

    url: str
    process: subprocess.Popen[bytes] = field(repr=False)

    @classmethod
    def start(cls, *, log_dir: Path) -> MotoProcess:
        """Start ``moto_server`` and wait until it answers.

        Raises:
            ServerFailed: it is not installed or did not answer within 30 s.
        """
        moto = Path(sys.executable).with_name("moto_server")
        if not moto.exists():
            raise ServerFailed(f"{moto} not found: install the dev extras (make bench does)")
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / "moto.log"
        port = _free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MOTO_CALL_RESET_API": "false"},
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise ServerFailed(f"moto_server did not start:\n{_tail(log)}") from None
                    time.sleep(0.1)
        except BaseException:
            stop_process(process)
            raise
        return cls(url=url, process=process)

    def create_bucket(self, name: str) -> None:
        """Create a bucket (moto accepts an unsigned ``PUT /<bucket>``)."""
        request = urllib.request.Request(f"{self.url}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def env(self) -> Mapping[str, str]:
        """The standard AWS variables that point convex-cdc at this server."""
        return {
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_REGION": S3_REGION,
            "AWS_DEFAULT_REGION": S3_REGION,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ALLOW_HTTP": "true",
        }

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        stop_process(self.process)
