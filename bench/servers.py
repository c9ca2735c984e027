"""The two servers of the benchmarks, side by side in one private namespace.

Shared by ``bench/run`` (throughput) and ``bench/soak`` (hostile load):

* ``enter_namespace()`` is the set-up of a process that runs as PID 1 of
  ``unshare --net --mount --pid --fork --kill-child``: lo up, 127.0.0.2/8 and
  ::127.0.0.2/128 on it, tmpfs on /run, a fresh /proc, and ``rpcbind -f``
  (ganesha registers with it at start);
* ``ganesha()`` and ``recovery()`` describe each server on fixed ports of
  that namespace; ``NfsServer`` starts one, waits for its NULL reply, and
  stops exactly the process it started;
* ``proc_tree``, ``cpu_seconds``, ``rss_mb``, ``peak_rss_mb``: a server's
  process tree read from /proc (the namespace's own).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.support.server import ping  # noqa: E402

HOST = "127.0.0.1"
GANESHA_NFS, GANESHA_MNT = 12049, 12050
RECOVERY_PORT = 12249
GANESHA, RECOVERY = "ganesha", "recovery-fs"


def enter_namespace() -> subprocess.Popen:
    """Network, /run, /proc and rpcbind of a fresh namespace; returns rpcbind."""
    for cmd in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", "127.0.0.2/8", "dev", "lo"],
        ["ip", "addr", "add", "::127.0.0.2/128", "dev", "lo"],
        ["mount", "-t", "tmpfs", "tmpfs", "/run"],
        ["mount", "-t", "proc", "proc", "/proc"],
    ):
        subprocess.run(cmd, check=True)
    rpcbind = subprocess.Popen(["rpcbind", "-f"])
    for _ in range(200):
        if os.path.exists("/run/rpcbind.sock"):
            break
        time.sleep(0.01)
    return rpcbind


def proc_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc (this namespace's)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += [c for c, p in parent.items() if p == pid]
    return tree


def cpu_seconds(root: int) -> float:
    """utime + stime of the process tree under ``root`` (fields 14, 15 of stat)."""
    total = 0
    for pid in proc_tree(root):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(root: int) -> float:
    """VmHWM summed over the process tree, in MB (10^6 bytes)."""
    return _status_sum(root, "VmHWM:") * 1024 / 1e6


def rss_mb(root: int) -> float:
    """VmRSS summed over the process tree, in MB (10^6 bytes): the resident set now."""
    return _status_sum(root, "VmRSS:") * 1024 / 1e6


def open_fds(root: int) -> int:
    """Descriptors open in the process tree under ``root``."""
    total = 0
    for pid in proc_tree(root):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total


def threads(root: int) -> int:
    """Threads of the process tree under ``root``."""
    return int(_status_sum(root, "Threads:"))


def _status_sum(root: int, key: str) -> int:
    total = 0
    for pid in proc_tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


@dataclass
class NfsServer:
    name: str
    argv: list[str]
    nfs_port: int
    mount_port: int
    logdir: Path
    proc: subprocess.Popen | None = None
    startup: float = 0.0
    failure: str = ""
    out: IO[bytes] | None = field(default=None, repr=False)

    def url(self, path: str = "") -> str:
        return (
            f"nfs://{HOST}/recover/images/{path}"
            f"?version=3&nfsport={self.nfs_port}&mountport={self.mount_port}"
        )

    def start(self, timeout: float = 60) -> bool:
        self.out = open(self.logdir / f"{self.name}.out", "ab")  # noqa: SIM115
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=self.out, stderr=subprocess.STDOUT)
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                self.out.flush()
                tail = (self.logdir / f"{self.name}.out").read_text(errors="replace")[-1500:]
                self.failure = f"exited with status {self.proc.returncode} while starting: {tail}"
                return False
            if ping(HOST, self.nfs_port, 0.5):
                self.startup = time.monotonic() - t0
                return True
            time.sleep(0.002)
        self.failure = f"no NULL reply within {timeout} s"
        self.stop()
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        if self.out:
            self.out.close()
            self.out = None


def ganesha(tree: Path, work: Path, *, udp: bool = False, access: str = "RO") -> NfsServer:
    """nfs-ganesha (VFS) exporting ``tree`` as /recover/images, TCP (and UDP).

    ``access`` is the export's Access_Type: RO, or RW for the write benchmark.
    """
    state = work / "ganesha-state"
    state.mkdir(parents=True, exist_ok=True)
    conf = work / "ganesha.conf"
    transports = "TCP, UDP" if udp else "TCP"
    conf.write_text(
        f"""NFS_CORE_PARAM {{ Protocols = 3; Bind_addr = {HOST}; NFS_Port = {GANESHA_NFS};
  MNT_Port = {GANESHA_MNT}; NLM_Port = 12051; Rquota_Port = 12052; Enable_NLM = false;
  Enable_RQUOTA = false; Enable_UDP = {"true" if udp else "false"}; mount_path_pseudo = true; }}
NFSV4 {{ RecoveryBackend = fs; RecoveryRoot = {state}; Graceless = true; }}
EXPORT {{ Export_Id = 1; Path = {tree}; Pseudo = /recover/images; Protocols = 3;
  Transports = {transports}; Access_Type = {access}; Squash = No_Root_Squash; SecType = sys;
  PrivilegedPort = false; FSAL {{ Name = VFS; }} }}
LOG {{ Default_Log_Level = EVENT; }}
NFS_KRB5 {{ Active_krb5 = false; }}
"""
    )
    argv = ["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(work / "ganesha.log")]
    argv += ["-p", str(work / "ganesha.pid"), "-N", "NIV_EVENT"]
    return NfsServer(GANESHA, argv, GANESHA_NFS, GANESHA_MNT, work)


def recovery(
    command: list[str], storage: Path, work: Path, extra: tuple[str, ...] = ()
) -> NfsServer:
    """``recovery-fs serve`` on ``storage`` (``extra``: further options, e.g. --exports)."""
    state = work / "recovery-fs-state"
    state.mkdir(parents=True, exist_ok=True)
    argv = [*command, "serve", "--storage", str(storage), "--bind", HOST]
    argv += ["--port", str(RECOVERY_PORT), "--no-portmap", "--state-dir", str(state)]
    argv += ["--log-file", str(work / "recovery-fs.log"), *extra]
    return NfsServer(RECOVERY, argv, RECOVERY_PORT, RECOVERY_PORT, work)
