"""Starting ``recovery-fs serve`` for end-to-end tests, and a raw RPC NULL.

``null_call`` builds an ONC-RPC call record by hand (RFC 5531, record
marking of RFC 5531 §11) so that readiness and liveness are checked without
the project's own XDR code.  ``Server`` runs the real command line on
127.0.0.1 and stops exactly the process it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

NFS_PROGRAM, NFS_V3 = 100003, 3
MOUNT_PROGRAM, MOUNT_V3 = 100005, 3


def null_call(xid: int, program: int = NFS_PROGRAM, version: int = NFS_V3) -> bytes:
    """One record: CALL of procedure 0 with AUTH_NONE credentials and verifier."""
    body = struct.pack(">IIIIIIIIII", xid, 0, 2, program, version, 0, 0, 0, 0, 0)
    return struct.pack(">I", 0x80000000 | len(body)) + body


def recv_record(sock: socket.socket) -> bytes:
    """One whole record (all fragments); raises EOFError when the peer closes."""
    out = b""
    while True:
        (marker,) = struct.unpack(">I", _recv_exact(sock, 4))
        out += _recv_exact(sock, marker & 0x7FFFFFFF)
        if marker & 0x80000000:
            return out


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def ping(host: str, port: int, timeout: float = 1.0, program: int = NFS_PROGRAM) -> bool:
    """True when a NULL call to ``program`` v3 gets an accepted, successful reply."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(null_call(0x51F0, program))
            reply = recv_record(sock)
    except (OSError, EOFError):
        return False
    # xid, REPLY, MSG_ACCEPTED, verf flavor, verf length, SUCCESS
    return reply[:8] == struct.pack(">II", 0x51F0, 1) and reply[8:24] == bytes(16)


def wait_until_serving(host: str, port: int, deadline: float, proc: subprocess.Popen) -> float:
    """Poll NULL until it answers; return the time it did.  Bounded by ``deadline``."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before answering")
        if ping(host, port, timeout=0.5):
            return time.monotonic()
        time.sleep(0.005)
    raise TimeoutError(f"no NULL reply on {host}:{port} before the deadline")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recovery_fs_command() -> list[str] | None:
    """The ``recovery-fs`` console script beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name("recovery-fs")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("recovery-fs")
    return [found] if found else None


class Server:
    """``recovery-fs serve`` on ``host``:``port`` over ``storage``, until ``stop()``."""

    def __init__(
        self,
        storage: Path,
        workdir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        args: tuple[str, ...] = (),
        portmap: bool = False,
    ) -> None:
        """``args`` are added to ``serve``'s (``--exports FILE``, ``--udp``); ``portmap``
        leaves out ``--no-portmap`` (only inside a private network namespace)."""
        command = recovery_fs_command()
        if command is None:
            raise FileNotFoundError("no recovery-fs command (pip install -e .)")
        self.host, self.port = host, port or free_port()
        self.state = workdir / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "recovery-fs.log"
        self.output = open(workdir / "recovery-fs.out", "wb")  # noqa: SIM115
        self.argv = [
            *command,
            "serve",
            "--storage",
            str(storage),
            "--bind",
            host,
            "--port",
            str(self.port),
            *([] if portmap else ["--no-portmap"]),
            "--state-dir",
            str(self.state),
            "--log-file",
            str(self.log),
            # the supervised path (a supervisor and two worker processes) on any
            # machine, unless the test asks for another number
            *([] if "--workers" in args else ["--workers", "2"]),
            *args,
        ]
        self.command = command
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=self.output, stderr=subprocess.STDOUT)
        try:
            self.ready = (
                wait_until_serving(host, self.port, self.started + 60, self.proc) - self.started
            )
        except BaseException:
            self.stop()
            raise

    def url(self, path: str = "") -> str:
        """A libnfs URL of ``path`` (relative to the export), both ports given."""
        return (
            f"nfs://{self.host}/recover/images/{path}"
            f"?version=3&nfsport={self.port}&mountport={self.port}"
        )

    def exports(self, action: str) -> subprocess.CompletedProcess[str]:
        """``recovery-fs exports ACTION --state-dir`` of this server (``reload``, ``show``)."""
        argv = [*self.command, "exports", action, "--state-dir", str(self.state)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    def diagnostics(self) -> str:
        """The server's output and log, for an assertion message."""
        parts = []
        for f in (self.output.name, self.log):
            if os.path.exists(f):
                parts.append(f"--- {f}\n{Path(f).read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.output.close()
