"""Starting the server in the background, stopping it, asking its status.

Design notes
------------
``recovery-fs start`` runs ``python -m nfsd.cli serve ... --ready-fd N`` in
a new session, stdin and stdout on ``/dev/null``, and waits on two pipes:

=============  ===============================================================
pipe           carries
=============  ===============================================================
ready (fd N)   one JSON line once the server listens: ``{"ok": true,
               "status": {...}}``, or ``{"ok": false, "error": ..., "code":
               ...}`` when start-up failed
stderr         anything the child prints before it is ready (a traceback);
               once ready, the child points its stderr at ``/dev/null``
=============  ===============================================================

Then the parent checks that the server answers an RPC NULL on its port,
and only then says "started".  No fork in a process that may hold threads,
no double fork: the new session is enough for a server that opens no
terminal.

``stop`` sends SIGTERM to the PID of the pid file (only while its lock is
held, so never to a stranger reusing the PID), waits for the lock to be
released (the process has exited), and after ``timeout`` sends SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nfsd
from nfsd.service.state import StateDir, pid_alive
from nfsd.transport.rpcclient import RpcClient, RpcError

NFS_PROGRAM = 100003
NFS_V3 = 3


@dataclass
class Started:
    """What ``start`` learnt: ``error`` is None on success."""

    pid: int
    status: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    code: int = 0


def _read_until(fds: dict[int, bytearray], ready_fd: int, deadline: float) -> bool:
    """Read both pipes until the ready pipe has a full line or closes (True),
    or the deadline passes (False)."""
    open_fds = set(fds)
    while time.monotonic() < deadline:
        readable, _, _ = select.select(
            list(open_fds), [], [], max(0.0, deadline - time.monotonic())
        )
        for fd in readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                if fd == ready_fd:
                    return True
            else:
                fds[fd] += chunk
        if b"\n" in fds[ready_fd]:
            return True
    return False


def spawn(serve_args: list[str], timeout: float) -> Started:
    """Start ``serve`` with ``serve_args`` in the background; wait until it is ready."""
    # The child imports this very nfsd, wherever it came from (cwd is "/").
    root = str(Path(nfsd.__file__).resolve().parent.parent)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    ready_r, ready_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nfsd.cli", "serve", *serve_args, "--ready-fd", str(ready_w)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_w,
            pass_fds=(ready_w,),
            start_new_session=True,
            cwd="/",
            env=env,
        )
    finally:
        os.close(ready_w)
        os.close(err_w)
    buffers = {ready_r: bytearray(), err_r: bytearray()}
    try:
        ended = _read_until(buffers, ready_r, time.monotonic() + timeout)
    finally:
        os.close(ready_r)
        os.close(err_r)
    line = bytes(buffers[ready_r]).split(b"\n", 1)[0]
    stderr = bytes(buffers[err_r]).decode(errors="replace").strip()
    if line:
        try:
            report = json.loads(line)
        except ValueError:
            report = {"ok": False, "error": f"unreadable start-up report {line!r}", "code": 1}
        if report.get("ok"):
            return Started(proc.pid, status=report.get("status", {}))
        proc.wait(10)
        return Started(proc.pid, error=str(report.get("error")), code=int(report.get("code", 1)))
    if not ended:
        _terminate(proc)
        return Started(
            proc.pid,
            error=f"the server did not become ready within {timeout:g} s; stopped it",
            code=1,
        )
    try:
        code = proc.wait(10)
    except subprocess.TimeoutExpired:
        _terminate(proc)
        code = proc.returncode
    detail = f":\n{stderr}" if stderr else ""
    return Started(
        proc.pid, error=f"the server exited during start-up (exit code {code}){detail}", code=1
    )


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def local_address(bind: str) -> str:
    """An address of this host reaching a server bound to ``bind``."""
    if bind == "0.0.0.0":
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def answers(host: str, port: int, timeout: float = 5.0) -> str | None:
    """None if NFS v3 NULL is answered on ``host:port`` over TCP, else why not."""
    try:
        with RpcClient(host, port, timeout=timeout) as c:
            result = c.call(NFS_PROGRAM, NFS_V3, 0)
    except RpcError as e:
        return str(e)
    return None if result.ok else f"NULL answered with status {result.reply_stat}/{result.stat}"


@dataclass
class Stopped:
    """What ``stop`` did: pid None when nothing was running."""

    pid: int | None
    killed: bool = False
    still_running: bool = False


def _wait_released(state: StateDir, deadline: float) -> bool:
    """Wait until no server holds the state directory; True if none does."""
    while time.monotonic() < deadline:
        if state.running_pid() is None:
            return True
        time.sleep(0.05)
    return state.running_pid() is None


def stop(state: StateDir, timeout: float) -> Stopped:
    """SIGTERM the server of ``state``, wait, SIGKILL after ``timeout``."""
    pid = state.running_pid()
    if pid is None:
        state.remove_stale()
        return Stopped(None)
    if pid == 0:  # it has just locked the file and not yet written its PID
        time.sleep(0.5)
        pid = state.running_pid()
        if not pid:
            return Stopped(None) if pid is None else Stopped(0, still_running=True)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_released(state, time.monotonic() + timeout):
        return Stopped(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    released = _wait_released(state, time.monotonic() + 5.0)
    if released:
        state.remove_stale()
    return Stopped(pid, killed=True, still_running=not released and pid_alive(pid))
