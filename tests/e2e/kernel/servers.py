"""NFSv3 servers the kernel client (and later the benchmark) runs against.

Each is started inside the private namespace of `netns` (the caller enters it),
listens on 127.0.0.1, exports `/recover/images`, and is controlled only by the
PID of the process this module started:

- `RecoveryFs`: the server under test, `python -m nfsd.cli serve` of this
  repository. MOUNT and NFS share one port. With `portmap=True` it is started
  without `--no-portmap` and serves its own portmapper on port 111.
- `Ganesha`: nfs-ganesha with the VFS FSAL, the reference server (config of
  docs in peers.md). It needs rpcbind to start, so one is run beside it. It
  knows nothing of the recovery rules: export a tree that already looks like
  what recovery-fs presents (`storage.Layout.materialize`).

A server counts as started when it answers an RPC `NULL` call on each of its
programs (and on the portmapper when it serves one).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..support.procs import suspend_group
from ..support.server import null_call, recv_record

REPO = Path(__file__).resolve().parents[3]
EXPORT = "/recover/images"
PROG_PORTMAP, PROG_NFS, PROG_MOUNT = 100000, 100003, 100005


class ServerError(RuntimeError):
    pass


@dataclass
class ServerConfig:
    kind: str  # "recovery-fs" or "ganesha"
    storage: str
    workdir: str  # state, logs and config of the server live here
    port: int = 20490
    portmap: bool = False  # recovery-fs: also serve a portmapper on 111
    exports: str | None = None  # recovery-fs: the text of its exports file (None: the default)
    tls_dir: str | None = None  # recovery-fs: RPC-with-TLS from `recovery-fs tls init` files
    workers: int = 2  # recovery-fs: worker processes (2: the supervised path, on any machine)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ServerConfig:
        return cls(**d)


def rpc_null(port: int, prog: int, vers: int, host: str = "127.0.0.1", timeout: float = 2.0):
    """Call procedure 0 of (prog, vers) over TCP; raise OSError or ServerError if unanswered."""
    xid = random.getrandbits(32)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(null_call(xid, prog, vers))
        try:
            reply = recv_record(s)
        except EOFError as e:
            raise ServerError(f"NULL of program {prog} v{vers} on port {port}: {e}") from e
    if len(reply) < 24:
        raise ServerError(f"short RPC reply to NULL of {prog}/{vers} on {port}: {reply!r}")
    rxid, mtype, stat = struct.unpack(">3I", reply[:12])
    verf_len = struct.unpack(">I", reply[16:20])[0]
    off = 20 + verf_len + (-verf_len % 4)
    accept = struct.unpack(">I", reply[off : off + 4])[0] if stat == 0 else None
    if (rxid, mtype, stat, accept) != (xid, 1, 0, 0):
        raise ServerError(
            f"NULL of program {prog} v{vers} on port {port}: xid {rxid:#x} (sent {xid:#x}), "
            f"msg_type {mtype}, reply_stat {stat}, accept_stat {accept}"
        )


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path.name}: none)"
    return "\n".join(text.splitlines()[-lines:])


class Server:
    kind = ""
    # True when the server shows the storage as it is (no recovery rules).
    presents_storage_raw = False
    # True: the server runs in a process group of its own, so that `freeze`, `thaw`
    # and `kill` reach the supervisor and every worker at once.
    own_group = False

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.workdir = Path(config.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def nfs_port(self) -> int:
        return self.config.port

    @property
    def mount_port(self) -> int:
        return self.config.port

    @property
    def serves_portmap(self) -> bool:
        return self.config.portmap

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def log_files(self) -> list[Path]:
        return [self.workdir / f"{self.kind}.out"]

    def probes(self) -> list[tuple[int, int, int]]:
        """(port, program, version) that must answer NULL once started."""
        probes = [(self.nfs_port, PROG_NFS, 3), (self.mount_port, PROG_MOUNT, 3)]
        if self.serves_portmap:
            probes.append((111, PROG_PORTMAP, 2))
        return probes

    def start(self, timeout: float = 60.0) -> None:
        if self.proc and self.proc.poll() is None:
            raise ServerError(f"{self.kind} is already running (pid {self.proc.pid})")
        self.starts += 1
        out = open(self.workdir / f"{self.kind}.out", "ab")  # noqa: SIM115
        out.write(f"---- start {self.starts}: {' '.join(self.command())}\n".encode())
        out.flush()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=self.env(),
            start_new_session=self.own_group,
        )
        out.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc
        deadline = time.monotonic() + timeout
        pending = self.probes()
        last_error: Exception | None = None
        while pending:
            rc = self.proc.poll()
            if rc is not None:
                raise ServerError(f"{self.kind} exited with {rc} while starting\n{self.log_tail()}")
            try:
                rpc_null(*pending[0], timeout=2.0)
                pending.pop(0)
                continue
            except (OSError, ServerError) as e:
                last_error = e
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.kind} did not answer NULL on {pending[0]} within {timeout:.0f} s "
                    f"({last_error})\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL by PID, as a crash would end it (with `own_group`, every process of
        the server at the same instant)."""
        if self.proc and self.proc.poll() is None:
            if self.own_group:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def freeze(self) -> None:
        """SIGSTOP every process of the server (`own_group`): nothing more is answered
        until `thaw` or `kill`, so what is in flight now is in flight at a kill.
        Returns once every thread of each is stopped, not once the signal is sent."""
        assert self.own_group and self.proc, "freeze needs a server in its own group"
        suspend_group(self.proc.pid)

    def thaw(self) -> None:
        assert self.own_group and self.proc, "thaw needs a server in its own group"
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self, grace: float = 5.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, timeout: float = 60.0) -> None:
        self.kill()
        self.start(timeout)

    def set_exports(self, text: str) -> str:
        """Replace the exports file and apply it live; return what happened, for the events."""
        raise ServerError(f"{self.kind}: live exports changes are not driven by this harness")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"== {p.name}\n{_tail(p, lines)}" for p in self.log_files())


class RecoveryFs(Server):
    kind = "recovery-fs"

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(config)
        self.exports_file = self.workdir / "exports"
        if config.exports is not None:
            self.exports_file.write_text(config.exports)

    def command(self) -> list[str]:
        c = self.config
        cmd = [sys.executable, "-m", "nfsd.cli", "serve", "--storage", c.storage]
        cmd += ["--bind", "127.0.0.1", "--port", str(c.port)]
        cmd += ["--state-dir", str(self.workdir / "state")]
        cmd += ["--log-file", str(self.workdir / "recovery_fs.log")]
        if not c.portmap:
            cmd.append("--no-portmap")
        if c.exports is not None:
            cmd += ["--exports", str(self.exports_file)]
        if c.tls_dir is not None:
            d = Path(c.tls_dir)
            cmd += ["--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key")]
            cmd += ["--tls-client-ca", str(d / "ca.pem")]
        cmd += ["--workers", str(c.workers)]
        return cmd

    def set_exports(self, text: str) -> str:
        """Rewrite the exports file, then `recovery-fs exports reload` (as an administrator)."""
        self.exports_file.write_text(text)
        cmd = [sys.executable, "-m", "nfsd.cli", "exports", "reload"]
        cmd += ["--state-dir", str(self.workdir / "state")]
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=30, cwd=REPO, env=self.env(), check=False
        )
        said = " ".join((p.stdout + p.stderr).split())[:300]
        return f"exports reloaded rc={p.returncode}: {text.strip()!r} {said}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env

    def log_files(self) -> list[Path]:
        return [self.workdir / "recovery_fs.log", *super().log_files()]

    def workers(self) -> list[dict]:
        """The workers of the supervisor's status.json (written each second)."""
        try:
            return json.loads((self.workdir / "state" / "status.json").read_text())["workers"]
        except (OSError, ValueError, KeyError):
            return []

    def connection_pids(self) -> set[int]:
        """The processes holding established connections to the server's port (ss),
        by their PIDs in our PID namespace (ss reads the host's /proc)."""
        out = subprocess.run(
            ["ss", "-Htnp", "state", "established", f"( sport = :{self.config.port} )"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return {_own_pid(int(pid)) for pid in re.findall(r"pid=(\d+)", out)}

    def kill_worker(self, timeout: float = 5.0) -> str:
        """SIGKILL the worker holding a connection (the guest's), wait for its
        replacement; what happened, for the events."""
        rows = self.workers()
        holders = self.connection_pids()
        victim = next((w for w in rows if w["pid"] in holders), None)
        if victim is None:
            return f"worker kill: none of {rows} holds a connection ({holders})"
        os.kill(victim["pid"], signal.SIGKILL)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            now = next((w for w in self.workers() if w["index"] == victim["index"]), {})
            if now.get("pid") not in (None, victim["pid"]) and now.get("ready"):
                return (
                    f"worker {victim['index']} pid {victim['pid']} killed (it held a "
                    f"connection); replaced by pid {now['pid']} "
                    f"within {time.monotonic() - t0:.2f} s"
                )
            time.sleep(0.01)
        return f"worker {victim['index']} pid {victim['pid']} killed; not replaced in {timeout} s"


def _own_pid(pid: int) -> int:
    """``pid`` (the host's /proc numbering) in the innermost PID namespace (NSpid)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return pid
    m = re.search(r"^NSpid:\s+([\d\s]+)$", status, re.M)
    return int(m.group(1).split()[-1]) if m else pid


GANESHA_CONF = """\
NFS_CORE_PARAM {{ Protocols = 3; Bind_addr = 127.0.0.1; NFS_Port = {nfs}; MNT_Port = {mnt};
  NLM_Port = {nlm}; Rquota_Port = {rquota}; Enable_NLM = false; Enable_RQUOTA = false;
  Enable_UDP = false; mount_path_pseudo = true; }}
NFSV4 {{ RecoveryBackend = fs; RecoveryRoot = "{state}"; Graceless = true; }}
EXPORT {{ Export_Id = 1; Path = "{storage}"; Pseudo = {export}; Protocols = 3;
  Transports = TCP; Access_Type = RO; Squash = No_Root_Squash; SecType = sys;
  PrivilegedPort = false; FSAL {{ Name = VFS; }} }}
LOG {{ Default_Log_Level = EVENT; }}
NFS_KRB5 {{ Active_krb5 = false; }}
"""


class Ganesha(Server):
    """nfs-ganesha (NFS on `port`, MOUNT on `port + 1`) with an rpcbind beside it."""

    kind = "ganesha"
    presents_storage_raw = True

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(config)
        self.rpcbind: subprocess.Popen[bytes] | None = None
        state = self.workdir / "state"
        state.mkdir(exist_ok=True)
        p = config.port
        (self.workdir / "ganesha.conf").write_text(
            GANESHA_CONF.format(
                nfs=p,
                mnt=p + 1,
                nlm=p + 2,
                rquota=p + 3,
                state=state,
                storage=Path(config.storage).resolve(),
                export=EXPORT,
            )
        )

    @property
    def mount_port(self) -> int:
        return self.config.port + 1

    @property
    def serves_portmap(self) -> bool:
        return True  # rpcbind, which ganesha registers with

    def command(self) -> list[str]:
        w = self.workdir
        return [
            "ganesha.nfsd",
            "-F",
            "-f",
            str(w / "ganesha.conf"),
            "-L",
            str(w / "ganesha.log"),
            "-p",
            str(w / "ganesha.pid"),
            "-N",
            "NIV_EVENT",
        ]

    def log_files(self) -> list[Path]:
        return [self.workdir / "ganesha.log", *super().log_files()]

    def start(self, timeout: float = 60.0) -> None:
        if self.rpcbind is None:
            # rpcbind's socket lives in /run: a private tmpfs in the namespace.
            self.rpcbind = subprocess.Popen(
                ["rpcbind", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 10
            while True:
                try:
                    rpc_null(111, PROG_PORTMAP, 2)
                    break
                except (OSError, ServerError):
                    if time.monotonic() > deadline or self.rpcbind.poll() is not None:
                        raise ServerError("rpcbind did not start") from None
                    time.sleep(0.05)
        super().start(timeout)

    def stop(self, grace: float = 5.0) -> None:
        super().stop(grace)
        if self.rpcbind and self.rpcbind.poll() is None:
            self.rpcbind.kill()
            self.rpcbind.wait()


KINDS: dict[str, type[Server]] = {"recovery-fs": RecoveryFs, "ganesha": Ganesha}


def make(config: ServerConfig) -> Server:
    if config.kind == "balanced":  # two instances behind HAProxy (scale-out)
        from .balanced import Balanced

        return Balanced(config)
    try:
        return KINDS[config.kind](config)
    except KeyError:
        raise ServerError(f"unknown server kind {config.kind!r} (one of {list(KINDS)})") from None
