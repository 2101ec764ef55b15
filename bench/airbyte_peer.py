"""The peer: Airbyte's public ``airbyte-source-convex`` connector, in a venv of its own.

The connector pins ``airbyte-cdk==0.80.0`` and Python < 3.12, which must not meet
convex-cdc's dependencies, so it gets a separate virtual environment (created once, then
reused; a marker file names the installed version). ``discover`` produces the catalog
(not measured); the measured ``read`` syncs every stream in ``incremental`` mode with
``append_dedup`` and cursor ``_ts``, as a user would configure it, and the caller counts
the ``RECORD`` messages on its stdout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steps import StepContext, StepResult, from_process, walk_step

PEER_PACKAGE = "airbyte-source-convex"
PEER_VERSION = "0.4.51"
_RECORD = b'{"type": "RECORD"'
_INSTALL_TIMEOUT = 900


class PeerUnavailable(RuntimeError):
    """The connector could not be installed or did not run; the message says why."""


def _interpreter() -> str:
    """A Python the connector supports (>= 3.9, < 3.12)."""
    if (3, 9) <= sys.version_info[:2] < (3, 12):
        return sys.executable
    for name in ("python3.11", "python3.10", "python3.9"):
        found = shutil.which(name)
        if found:
            return found
    raise PeerUnavailable(f"{PEER_PACKAGE} needs Python 3.9-3.11 and none was found")


def ensure_peer(venv: Path) -> Path:
    """The connector's ``source-convex`` executable, installing it into ``venv`` if needed.

    Raises:
        PeerUnavailable: the venv or the install failed (the message names the reason).
    """
    executable = venv / "bin" / "source-convex"
    marker = venv / f".installed-{PEER_PACKAGE}-{PEER_VERSION}"
    if executable.exists() and marker.exists():
        return executable
    python = _interpreter()
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    steps = [
        (f"creating the venv {venv}", [python, "-m", "venv", "--clear", str(venv)]),
        (f"pip install {PEER_PACKAGE}=={PEER_VERSION}", [*pip, f"{PEER_PACKAGE}=={PEER_VERSION}"]),
    ]
    for what, argv in steps:
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PeerUnavailable(f"{what}: {exc}") from None
        if done.returncode != 0:
            errors = [ln for ln in done.stderr.splitlines() if "WARNING" not in ln]
            reason = (errors or ["no output"])[-1].strip()
            raise PeerUnavailable(f"{what} failed: {reason}")
    if not executable.exists():
        raise PeerUnavailable(f"the install did not create {executable}")
    marker.touch()
    return executable


def write_config(path: Path, url: str, key: str) -> None:
    """The connector's config (``deployment_url``, ``access_key``); the file is 0600."""
    path.write_text(json.dumps({"deployment_url": url, "access_key": key}))
    path.chmod(0o600)


def write_catalog(executable: Path, config: Path, catalog: Path, env: Mapping[str, str]) -> int:
    """Run ``discover`` and write a configured catalog of every stream; → stream count.

    Raises:
        PeerUnavailable: discover failed or returned no catalog.
    """
    done = subprocess.run(
        [str(executable), "discover", "--config", str(config)],
        capture_output=True,
        env=dict(env),
        timeout=300,
        check=False,
    )
    streams: list[dict[str, Any]] = []
    for line in done.stdout.splitlines():
        if not line.startswith(b"{"):
            continue
        message = json.loads(line)
        if message.get("type") == "CATALOG":
            streams = message["catalog"]["streams"]
    if done.returncode != 0 or not streams:
        tail = done.stdout.decode(errors="replace").splitlines()[-3:]
        raise PeerUnavailable(f"discover failed (exit {done.returncode}): {' | '.join(tail)}")
    configured = {
        "streams": [
            {
                "stream": stream,
                "sync_mode": "incremental",
                "destination_sync_mode": "append_dedup",
                "cursor_field": ["_ts"],
                "primary_key": [["_id"]],
            }
            for stream in streams
        ]
    }
    catalog.write_text(json.dumps(configured))
    return len(streams)


class RecordCounter:
    """Counts Airbyte ``RECORD`` messages in a stdout stream fed chunk by chunk."""

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0
        self.tail = b""
        """The stream's last few kB (the error trace, should the read fail)."""

    def __call__(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        # A marker split across two chunks is found once: the carried tail is shorter
        # than a marker, so it cannot hold a whole one by itself.
        carry = self.tail[-(len(_RECORD) - 1) :]
        self.records += (carry + chunk).count(_RECORD)
        self.tail = (self.tail + chunk)[-4096:]


def read_argv(executable: Path, config: Path, catalog: Path) -> list[str]:
    """The measured command line."""
    return [str(executable), "read", "--config", str(config), "--catalog", str(catalog)]


def peer_step(context: StepContext, url: str, key: str, venv: Path) -> tuple[StepResult, str]:
    """Install (or reuse) the connector, warm the devserver's json cache, measure ``read``.

    Returns the step and the note to print. ``response_bytes`` is taken from the
    ``json-tables`` walk that issues the same snapshot requests just before (the
    connector's own process cannot be probed); ``details`` holds that walk's row count,
    the rows the connector can see at all (root-component tables only).

    Raises:
        PeerUnavailable: anything that kept the connector from producing a result.
    """
    executable = ensure_peer(venv)
    folder = context.work / "peer"
    folder.mkdir(parents=True, exist_ok=True)
    config, catalog = folder / "config.json", folder / "catalog.json"
    write_config(config, url, key)
    try:
        streams = write_catalog(executable, config, catalog, context.env)
        warm = walk_step(context, "peer_json_walk", "json-tables")
        counter = RecordCounter()
        process, server_cpu = context.run(
            "peer", read_argv(executable, config, catalog), on_stdout=counter, check=False
        )
    finally:
        config.unlink(missing_ok=True)  # it holds the (throwaway) deploy key
    if process.returncode != 0:
        tail = counter.tail.decode(errors="replace").splitlines()[-2:]
        raise PeerUnavailable(f"read exited with {process.returncode}: {' | '.join(tail)}")
    step = from_process(
        "peer",
        process,
        rows=counter.records,
        response_bytes=warm.response_bytes,
        how="RECORD messages counted on stdout; bytes ≈ the same requests' json walk",
        server_cpu_seconds=server_cpu,
    )
    step.details = {
        "streams": streams,
        "root_table_rows": warm.rows,
        "stdout_mb": round(counter.bytes / 1e6, 1),
        "json_walk_rows_per_s": warm.rows_per_second and round(warm.rows_per_second),
    }
    note = f"{PEER_PACKAGE}=={PEER_VERSION}, {streams} streams (root component only)"
    return step, note
