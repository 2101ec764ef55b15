"""Kill a command with SIGKILL right after it makes observable progress, in both phases.

Shared by the crash tests of ``sync`` and ``databricks extract``: the command runs as a
subprocess against an out-of-process devserver and is killed again and again until
enough kills landed in both the snapshot walk and the delta phase. While the target is
in the delta phase, more workload lands before each run so every run has changes to
extract.

Why progress and not a timer: a kill after a random delay lands wherever the process
happens to be when the delay ends. On a loaded machine that is mostly interpreter
start-up, so kills did nothing, the snapshot walk advanced slowly or not at all, and the
loop needed more and more attempts. Here every kill waits for a write the test can see
(a new file, a new Delta commit, a changed checkpoint) and fires as soon as the loop
notices it, so a kill lands just after that write, inside or between batches, however
slow the machine is, and the number of runs does not depend on the machine's speed.
Which write, and how many of them to wait for, is drawn from a seeded RNG per run.

Nothing waits on a clock for correctness: a run that writes nothing new for
:data:`STALL_SECONDS` fails the test with the command's stderr instead of hanging.

The phase a kill counts for is read from the target's checkpoint after the process is
dead, which is the checkpoint it held at the moment of the kill: the phase the next run
resumes in. A checkpoint that does not exist yet means the first snapshot batch.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

Phase = Literal["none", "snapshot", "delta"]

POLL_SECONDS: Final = 0.005
"""How often the loop looks for progress. Only how soon a kill follows the write it waits
for depends on this, never whether the test passes."""

STALL_SECONDS: Final = 180.0
"""A run that writes nothing new for this long is hung: the test fails and says so."""


@dataclass(frozen=True, slots=True)
class ProgressSignal:
    """Durable things a command writes, seen from outside: a kill can wait for them.

    ``marks()`` names what exists now (file names, commit versions, a checkpoint's bytes);
    a name not seen before in the run is one step of progress. A run waiting on this
    signal is killed after between 1 and ``most`` new names appeared.
    """

    name: str
    marks: Callable[[], Iterable[str]]
    most: int


@dataclass(frozen=True, slots=True)
class KillPlan:
    """Kill after ``count`` new marks of ``signal`` appeared since the run started."""

    signal: ProgressSignal
    count: int


@dataclass(slots=True)
class KillReport:
    """What the loop did: kills per phase and per signal, and runs that ended on their own."""

    per_phase: dict[str, int]
    per_signal: dict[str, int]
    finished_runs: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Kills over both phases."""
        return sum(self.per_phase.values())


def files_in(directory: Path, name: re.Pattern[str], *, depth: int = 0) -> list[str]:
    """Paths (relative to ``directory``) of files whose name fully matches ``name``.

    With ``depth=1`` the files sit one directory level further down (a table directory
    per table); directories that do not exist yet hold nothing. Cheap enough to call
    every poll, unlike a recursive glob.
    """
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    if depth == 0:
        return [e.name for e in entries if name.fullmatch(e.name)]
    return [
        f"{e.name}/{found}"
        for e in entries
        if e.is_dir()
        for found in files_in(Path(e.path), name, depth=depth - 1)
    ]


def kill_after_progress(
    command: list[str],
    *,
    env: dict[str, str],
    signals: list[ProgressSignal],
    phase: Callable[[], Phase],
    more_changes: Callable[[], None],
    key: str,
    seed: int,
    min_kills: int = 20,
    min_per_phase: int = 5,
    max_runs: int = 60,
) -> KillReport:
    """Run and SIGKILL ``command`` until the kill quota is met.

    Each run waits for a randomly drawn :class:`KillPlan`. A run that ends before its
    plan fired must exit 0 and counts no kill; ``more_changes()`` is called before every
    run that starts in the delta phase. The deploy key must never appear on stderr.

    Raises:
        AssertionError: a run failed, leaked the key, or made no progress for
            :data:`STALL_SECONDS`; or ``max_runs`` runs did not place the kills (each
            kill follows progress, so this means the command stopped advancing).
    """
    rng = random.Random(seed)
    report = KillReport(
        per_phase={"snapshot": 0, "delta": 0}, per_signal={s.name: 0 for s in signals}
    )
    started = time.monotonic()
    runs = 0
    while report.total < min_kills or min(report.per_phase.values()) < min_per_phase:
        runs += 1
        assert runs <= max_runs, f"{max_runs} runs did not place the kills: {report}"
        if phase() == "delta":
            more_changes()
        chosen = rng.choice(signals)
        plan = KillPlan(chosen, rng.randint(1, chosen.most))
        if _run_and_kill(command, env=env, plan=plan, key=key):
            # The process is dead, so the checkpoint is the one it held when killed.
            report.per_phase["delta" if phase() == "delta" else "snapshot"] += 1
            report.per_signal[chosen.name] += 1
        else:
            report.finished_runs += 1
    report.seconds = time.monotonic() - started
    return report


def _run_and_kill(command: list[str], *, env: dict[str, str], plan: KillPlan, key: str) -> bool:
    """Run ``command`` and SIGKILL it as soon as ``plan`` fired → whether it was killed.

    stderr goes to a file, not a pipe: nobody reads a pipe while the loop polls, and a
    full pipe would block the command and look like a hang.
    """
    with tempfile.TemporaryFile() as stderr:
        seen = set(plan.signal.marks())
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        outcome = _watch(process, plan, seen)
        if process.poll() is None:  # stalled (a second SIGKILL to a killed run is harmless)
            process.kill()
        process.wait(timeout=60)
        stderr.seek(0)
        text = stderr.read().decode(errors="replace")
    assert key not in text, "the deploy key appeared on stderr"
    assert outcome != "stalled", (
        f"no new {plan.signal.name} for {STALL_SECONDS:.0f} s while waiting for "
        f"{plan.count}: {' '.join(command)}\n{text[-2000:]}"
    )
    if outcome == "killed" and process.returncode == -signal.SIGKILL:
        return True
    assert process.returncode == 0, f"exit {process.returncode}: {text[-2000:]}"
    return False


def _watch(
    process: subprocess.Popen[bytes], plan: KillPlan, seen: set[str]
) -> Literal["killed", "exited", "stalled"]:
    """Poll for new marks until ``plan.count`` appeared (then SIGKILL) or the run ends."""
    new = 0
    last_progress = time.monotonic()
    while process.poll() is None:
        fresh = set(plan.signal.marks()) - seen
        if fresh:
            seen |= fresh
            new += len(fresh)
            last_progress = time.monotonic()
        if new >= plan.count:
            process.send_signal(signal.SIGKILL)
            return "killed"
        if time.monotonic() - last_progress > STALL_SECONDS:
            return "stalled"
        time.sleep(POLL_SECONDS)
    return "exited"
