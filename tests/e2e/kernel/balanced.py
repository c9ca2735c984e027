"""Two recovery-fs instances behind Debian's HAProxy, for the kernel client (scale-out).

The runner's private network namespace (``netns``) holds QEMU and HAProxy;
each instance runs in a namespace of its own, reached over a veth pair::

    guest --(QEMU NAT)--> 127.0.0.1:PORT  HAProxy (TCP mode, send-proxy-v2)
                              ├── 10.200.1.1 ─veth─ 10.200.1.2:2049  instance a (rfs-a)
                              └── 10.200.2.1 ─veth─ 10.200.2.2:2049  instance b (rfs-b)

Both instances serve the same storage with the same ``--secret-file``, each
with ``--proxy-from`` its side of the veth and an exports list admitting
only 127.0.0.1 (the guest as HAProxy names it: the PROXY header is what
lets it in).  ``kill_instance`` kills one instance's whole process group
with SIGKILL, as a host dying would; ``backend_connections`` counts
HAProxy's connections to each (``ss``), to see nconnect's spread.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from .servers import REPO, Server, ServerError

INSTANCES = {"a": 1, "b": 2}
BACKEND_PORT = 2049
HAPROXY_CFG = """\
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    option redispatch
    retries 3
frontend nfs
    bind 127.0.0.1:{port}
    default_backend recovery
backend recovery
    balance roundrobin
{servers}
"""
SERVER_LINE = (
    "    server rfs-{name} 10.200.{i}.2:{bport} check inter 500 fall 1 rise 1 "
    "send-proxy-v2 check-send-proxy"
)


def _ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if p.returncode != 0 and "File exists" not in p.stderr:
        raise ServerError(f"ip {' '.join(args)}: {p.stderr.strip()}")


class Balanced(Server):
    kind = "balanced"

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.instances: dict[str, subprocess.Popen[bytes]] = {}
        self.secret = self.workdir / "secret"
        if not self.secret.exists():
            self.secret.write_text(os.urandom(32).hex() + "\n")
        self.exports_file = self.workdir / "exports"
        self.exports_file.write_text(config.exports or "/recover/images 127.0.0.1(insecure)\n")

    def command(self) -> list[str]:
        cfg = self.workdir / "haproxy.cfg"
        lines = [SERVER_LINE.format(name=n, i=i, bport=BACKEND_PORT) for n, i in INSTANCES.items()]
        cfg.write_text(HAPROXY_CFG.format(port=self.config.port, servers="\n".join(lines)))
        return ["haproxy", "-db", "-f", str(cfg)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env

    def _network(self) -> None:
        for name, i in INSTANCES.items():
            ns, host_if = f"rfs-{name}", f"veth-{name}"
            if Path(f"/run/netns/{ns}").exists():
                continue
            _ip("netns", "add", ns)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("addr", "add", f"10.200.{i}.1/24", "dev", host_if)
            _ip("link", "set", host_if, "up")
            for args in (
                ("addr", "add", f"10.200.{i}.2/24", "dev", "eth0"),
                ("link", "set", "eth0", "up"),
                ("link", "set", "lo", "up"),
            ):
                _ip("-n", ns, *args)

    def _instance_command(self, name: str, i: int) -> list[str]:
        d = self.workdir / name
        return [
            *("ip", "netns", "exec", f"rfs-{name}"),
            *(sys.executable, "-m", "nfsd.cli", "serve", "--storage", self.config.storage),
            *("--bind", f"10.200.{i}.2", "--port", str(BACKEND_PORT), "--no-portmap"),
            *("--state-dir", str(d / "state"), "--log-file", str(d / "recovery_fs.log")),
            *("--exports", str(self.exports_file), "--secret-file", str(self.secret)),
            *("--proxy-from", f"10.200.{i}.1", "--workers", "2"),
        ]

    def start(self, timeout: float = 60.0) -> None:
        self._network()
        for name, i in INSTANCES.items():
            d = self.workdir / name
            d.mkdir(exist_ok=True)
            (d / "state" / "status.json").unlink(missing_ok=True)
            out = open(d / "recovery-fs.out", "ab")  # noqa: SIM115
            self.instances[name] = subprocess.Popen(
                self._instance_command(name, i),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.env(),
                start_new_session=True,  # a process group: killed whole, as a host dies
            )
            out.close()
        deadline = time.monotonic() + timeout
        for name, proc in self.instances.items():
            status = self.workdir / name / "state" / "status.json"
            while not status.exists():  # written once every worker serves
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ServerError(f"instance {name} did not start\n{self.log_tail()}")
                time.sleep(0.05)
        super().start(timeout)  # HAProxy; ready when NULL answers through it

    def kill_instance(self, name: str = "a") -> str:
        """SIGKILL instance ``name``'s supervisor and workers at once."""
        proc = self.instances[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"instance {name} killed (process group {proc.pid})"

    def backend_connections(self) -> dict[str, int]:
        """HAProxy's established connections to each instance."""
        out = subprocess.run(
            ["ss", "-Htn", "state", "established", f"( dport = :{BACKEND_PORT} )"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return {
            name: len(re.findall(rf"10\.200\.{i}\.2:{BACKEND_PORT}\b", out))
            for name, i in INSTANCES.items()
        }

    def stop(self, grace: float = 5.0) -> None:
        super().stop(grace)
        for proc in self.instances.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(grace + 10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    def log_files(self) -> list[Path]:
        return [
            *(self.workdir / n / "recovery_fs.log" for n in INSTANCES),
            *(self.workdir / n / "recovery-fs.out" for n in INSTANCES),
            *super().log_files(),
        ]
