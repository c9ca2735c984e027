"""Stopping a server's process for a test, and knowing it is stopped.

``kill(pid, SIGSTOP)`` returns once the signal is queued, not once the
process has stopped: one of its threads takes the signal and then stops the
others, each as it next runs.  On a busy host (two cores, CI) that is
milliseconds, in which the loop thread can still accept a connection the
test meant for another worker, which then waits for the SIGCONT (the CI
failure of ``test_a_reload_while_a_worker_starts_succeeds_and_reaches_it``,
reproduced here with two busy loops: 7 failures in 15 runs).  So a test that
steers clients by stopping processes waits until every thread of each is in
the stopped state (``T`` in ``/proc/PID/task/TID/stat``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

STOP_TIMEOUT = 10.0


def stat_fields(path: Path) -> list[str] | None:
    """The fields of a ``/proc`` ``stat`` file after the command's name (the state
    first, then the parent, the process group...); None once it is gone."""
    try:
        return path.read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _states(pid: int) -> list[str]:
    """The scheduler state of each thread of ``pid`` (empty once it is gone)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []
    found = (stat_fields(task / "stat") for task in tasks)
    return [fields[0] for fields in found if fields is not None]  # None: a thread ended


def is_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped by a signal (``T``)."""
    states = _states(pid)
    return bool(states) and all(s == "T" for s in states)


def suspend(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGSTOP ``pid`` and return once every thread of it is stopped."""
    os.kill(pid, signal.SIGSTOP)
    _wait_stopped(lambda: [pid], f"pid {pid}", timeout)


def suspend_group(pgid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGSTOP the process group ``pgid`` and return once every thread of every
    process in it is stopped."""
    os.killpg(pgid, signal.SIGSTOP)
    _wait_stopped(lambda: group_members(pgid), f"process group {pgid}", timeout)


def _wait_stopped(pids: Callable[[], list[int]], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(is_stopped(pid) for pid in pids()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not stopped within {timeout} s")
        time.sleep(0.002)


def group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` (from ``/proc``; zombies left out)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(entry / "stat")
            if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members
