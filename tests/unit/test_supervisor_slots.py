"""The supervisor's worker slots (``nfsd.service.supervisor``), without a server:
what its log says of a worker that dies, and why."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nfsd.service.supervisor import Supervisor
from tests.unit.test_cli import cfg


def test_a_failed_start_is_not_given_as_the_reason_of_a_later_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A start that failed (``Popen``: too many open files) leaves its reason on the
    slot; the worker started next, dying before it said anything, is logged with
    its own exit, not with that old reason."""
    sup = Supervisor(cfg(tmp_path, tmp_path, workers=2))
    sup.port = 1
    monkeypatch.setattr(sup, "_spec", lambda slot: {"listeners": []})
    calls = []

    def popen(args: list[str], control: object, listeners: list[int]) -> subprocess.Popen[bytes]:
        calls.append(args)
        if len(calls) == 1:
            raise OSError(24, "Too many open files")
        return subprocess.Popen([sys.executable, "-c", "pass"])  # dies, says nothing

    monkeypatch.setattr(sup, "_popen", popen)
    slot = sup.slots[0]
    with caplog.at_level(logging.WARNING, logger="recovery_fs.supervisor"):
        sup._replace(slot, time.monotonic())
        assert slot.proc is None and "Too many open files" in (slot.error or "")
        slot.not_before = 0.0
        sup._replace(slot, time.monotonic())
        assert slot.proc is not None
        slot.proc.wait(10)
        sup._replace(slot, time.monotonic())
    died = [r.getMessage() for r in caplog.records if "exited with status 0" in r.getMessage()]
    assert died and not any("Too many open files" in m for m in died), died
    if slot.proc is not None:
        slot.proc.wait(10)
    if slot.control is not None:
        slot.control.close()
