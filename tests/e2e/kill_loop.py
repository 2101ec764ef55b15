"""Kill a command with SIGKILL at random moments, across the snapshot and delta phases.

Shared by the crash tests of ``sync`` and ``databricks extract``: the command runs as a
subprocess against an out-of-process devserver and is killed after a random delay,
again and again, until enough kills landed in both phases. While the target is in the
delta phase, more workload lands before each run so every run has changes to extract.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable

import httpx


def kill_at_random_moments(
    command: list[str],
    *,
    env: dict[str, str],
    phase: Callable[[], str],
    control: httpx.Client,
    key: str,
    seed: int,
    min_kills: int = 20,
    min_per_phase: int = 5,
    delay_seconds: tuple[float, float] = (0.3, 1.6),
) -> dict[str, int]:
    """Run and SIGKILL ``command`` until the kill quota is met; returns kills per phase.

    ``phase()`` reads the target's checkpoint: ``none``, ``snapshot`` or ``delta``. A run
    that ends before its kill must exit 0; the key must never appear on stderr.
    """
    rng = random.Random(seed)
    kills = {"snapshot": 0, "delta": 0}
    attempts = 0
    while sum(kills.values()) < min_kills or min(kills.values()) < min_per_phase:
        attempts += 1
        assert attempts < 200, f"could not place the kills: {kills}"
        current = phase()
        if current == "delta":
            control.post("/_devserver/workload", params={"transactions": 60}).raise_for_status()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(*delay_seconds))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills["delta" if current == "delta" else "snapshot"] += 1
        _, stderr = process.communicate(timeout=60)
        text = stderr.decode(errors="replace")
        assert key not in text
        assert process.returncode in (0, -signal.SIGKILL), text[-2000:]
    return kills
