"""The hypervisor scenario, run inside a private network namespace.

QEMU's NFS driver (libnfs, Debian's ``qemu-block-extra``) has no port
options: it asks the portmapper on 111 and talks NFS on 2049. So recovery-fs
runs on those ports, with its own portmapper, inside ``netns.wrap`` (its
loopback is the namespace's; nothing clashes with the host's ports, and
everything dies with the namespace). The host side (``run``) writes a spec,
starts ``python -m <this module> SPEC`` in the namespace and reads
``outcome.json`` back. Inside, in order:

1. the server starts (2 workers, portmapper, an exports file admitting
   127.0.0.1), ``recovery-fs instant start --name ir1`` of the day-2 folder;
   the session is used once ``nfs-ls`` (libnfs) lists it;
2. boot ``write``: QEMU boots the VM with ``-drive file=nfs://127.0.0.1/
   recover/instant/ir1/vm1/vm1-flat.vmdk``; its /sbin/init reports the
   files, writes new ones, syncs and reboots (``-no-reboot``: QEMU exits);
   when it says ``WRITING`` the server is SIGKILLed (as soon as the RPC
   tracer sees a WRITE unanswered) and started again;
3. boot ``verify``: a second QEMU on the same session finds them;
4. ``instant export ir1`` (the host side checks that image), ``instant stop
   ir1``, ``instant start --name ir2`` of the same folder;
5. boot ``fresh`` on ir2: the disk is the backup again.

Each boot has a host timeout; every step is an event with its time.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..kernel import netns, rpctrace, servers
from .assets import RDINIT

PORT = 2049
VM_MEMORY_MB = 256
# `secure` (the default): run as root, libnfs binds a port below 1024, as ESXi does.
EXPORTS = "/recover/images 127.0.0.1\n"
CLIENTS = "127.0.0.1"
# How long the RPC tracer may take to see a reply already sent (loopback, a thread).
CAPTURE_DRAIN = 0.1


@dataclass
class Boot:
    step: str
    session: str
    lines: list[str] = field(default_factory=list)  # the guest's `KEY value` lines
    qemu_rc: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    console_tail: str = ""

    def values(self, key: str) -> list[str]:
        return [rest for ln in self.lines for k, _, rest in [ln.partition(" ")] if k == key]


@dataclass
class Outcome:
    boots: list[Boot] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    error: str | None = None
    rpc: dict = field(default_factory=dict)
    server_log: str = ""
    disk_sha: dict[str, str] = field(default_factory=dict)  # session -> its disk before a boot

    def boot(self, step: str) -> Boot | None:
        return next((b for b in self.boots if b.step == step), None)

    def event_texts(self) -> list[str]:
        return [e for _, e in self.events]


@dataclass(frozen=True)
class Spec:
    kernel: str
    initramfs: str
    storage: str
    folder: str  # the session's PATH
    work: str
    accel: str
    boot_timeout: float


def disk_url(session: str, vm: str) -> str:
    """The libnfs URL QEMU opens: it mounts the folder and opens the file in it."""
    return f"nfs://127.0.0.1/recover/instant/{session}/{vm}/{vm}-flat.vmdk"


def qemu_command(spec: Spec, boot_dir: Path, step: str, session: str) -> list[str]:
    append = (
        f"console=ttyS0 panic=-1 loglevel=4 rdinit={RDINIT} hv_step={step} hv_session={session}"
    )
    return [
        "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-accel", spec.accel,
        "-smp", "1", "-m", str(VM_MEMORY_MB), "-display", "none", "-no-reboot",
        "-serial", f"file:{boot_dir / 'console.log'}",
        "-serial", f"file:{boot_dir / 'results.log'}",
        "-kernel", spec.kernel, "-initrd", spec.initramfs, "-append", append,
        "-drive", f"file={disk_url(session, 'vm1')},format=raw,if=virtio",
    ]  # fmt: skip


def _read(path: Path) -> str:
    """A log QEMU may not have written (it fails before opening its serial files)."""
    try:
        return path.read_bytes().decode(errors="replace").replace("\r", "")
    except OSError:
        return ""


class _Inside:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.work = Path(spec.work)
        self.t0 = time.monotonic()
        self.out = Outcome()
        self.server = servers.RecoveryFs(
            servers.ServerConfig(
                kind="recovery-fs",
                storage=spec.storage,
                workdir=str(self.work / "server"),
                port=PORT,
                portmap=True,
                exports=EXPORTS,
            )
        )
        self.server.own_group = True
        self.state = self.work / "server" / "state"
        self.tracer: rpctrace.Tracer | None = None

    def event(self, text: str) -> None:
        self.out.events.append((round(time.monotonic() - self.t0, 3), text))

    def cli(self, *args: str) -> str:
        """``recovery-fs ARGS --state-dir STATE`` as an administrator; its output."""
        cmd = [sys.executable, "-m", "nfsd.cli", *args, "--state-dir", str(self.state)]
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, cwd=servers.REPO,
            env=self.server.env(), check=False,
        )  # fmt: skip
        said = " ".join((p.stdout + p.stderr).split())
        self.event(f"recovery-fs {' '.join(args)}: rc={p.returncode} {said[:300]}")
        if p.returncode != 0:
            raise RuntimeError(f"recovery-fs {' '.join(args)} failed ({p.returncode}): {said}")
        return p.stdout

    def listed(self, session: str) -> bool:
        """Does libnfs's nfs-ls (through the portmapper, as QEMU goes) list the session's VM?"""
        url = f"nfs://127.0.0.1/recover/instant/{session}/vm1/"
        p = subprocess.run(["nfs-ls", url], capture_output=True, text=True, timeout=20, check=False)
        return p.returncode == 0 and "vm1-flat.vmdk" in p.stdout

    def disk_sha256(self, session: str) -> str:
        """sha256 of the session's disk read whole with libnfs's nfs-cat."""
        p = subprocess.run(
            ["nfs-cat", disk_url(session, "vm1")], capture_output=True, timeout=60, check=False
        )
        if p.returncode != 0:
            raise RuntimeError(f"nfs-cat of {session}'s disk failed: {p.stderr.decode()[-300:]}")
        digest = hashlib.sha256(p.stdout).hexdigest()
        self.event(f"{session}'s disk read by nfs-cat: {len(p.stdout)} bytes, sha256 {digest}")
        return digest

    def wait_listed(self, session: str, limit: float = 15.0) -> None:
        t = time.monotonic()
        while not self.listed(session):
            if time.monotonic() - t > limit:
                raise RuntimeError(f"session {session} not listed by nfs-ls within {limit} s")
            time.sleep(0.2)
        self.event(f"session {session} served (nfs-ls) after {time.monotonic() - t:.2f} s")

    def kill_on(self, key: str, results: Path, qemu: subprocess.Popen[bytes]) -> None:
        """(A thread.) When the guest says ``key``, SIGKILL the server with a WRITE in
        flight if the tracer sees one within 3 s, and start it again at once."""
        while qemu.poll() is None:
            if any(ln.startswith(key) for ln in _read(results).splitlines()):
                break
            time.sleep(0.02)
        else:
            return
        inflight = ""
        deadline = time.monotonic() + 3
        while self.tracer is not None and time.monotonic() < deadline:
            if self.tracer.outstanding("WRITE"):
                # Stopped, the server answers nothing more; once the capture has
                # drained, the WRITEs still unanswered are those the kill will cut.
                # (Killed at once, the server sometimes answered the WRITE first.)
                self.server.freeze()
                time.sleep(CAPTURE_DRAIN)
                xids = self.tracer.outstanding("WRITE")
                if xids:
                    inflight = f" with WRITE in flight: xid {', '.join(xids)}"
                    break
                self.server.thaw()
            time.sleep(0.0005)
        self.event(f"server kill on {key}{inflight}")
        self.server.kill()
        self.event("server killed")
        self.server.start()
        self.event("server started again")

    def boot(self, step: str, session: str, kill_on: str | None = None) -> Boot:
        b = Boot(step=step, session=session)
        self.out.boots.append(b)
        d = self.work / f"boot-{step}"
        d.mkdir(parents=True, exist_ok=True)
        cmd = qemu_command(self.spec, d, step, session)
        (d / "qemu.cmd").write_text(" ".join(cmd) + "\n")
        self.event(f"boot {step} on {session}")
        t = time.monotonic()
        with open(d / "qemu.log", "wb") as log:
            q = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            killer = None
            if kill_on:
                args = (kill_on, d / "results.log", q)
                killer = threading.Thread(target=self.kill_on, args=args, daemon=True)
                killer.start()
            try:
                b.qemu_rc = q.wait(self.spec.boot_timeout)
            except subprocess.TimeoutExpired:
                q.send_signal(signal.SIGKILL)
                q.wait()
                b.timed_out = True
            if killer is not None:
                killer.join(60)
        b.seconds = round(time.monotonic() - t, 2)
        b.lines = [ln.strip() for ln in _read(d / "results.log").splitlines() if ln.strip()]
        qemu_said = _read(d / "qemu.log").strip()
        tail = _read(d / "console.log").splitlines()[-25:]
        b.console_tail = "\n".join([*tail, f"qemu: {qemu_said[-800:]}"])
        self.event(f"boot {step} ended: rc={b.qemu_rc} timed_out={b.timed_out} {b.seconds} s")
        return b

    def run(self) -> Outcome:
        try:
            netns.setup()
            try:
                self.tracer = rpctrace.Tracer({PORT, 111}, self.work / "rpc.log", self.t0)
            except OSError as e:
                self.event(f"rpc tracer unavailable: {e}")
            self.server.start()
            self.event("server started")
            self._scenario()
        except Exception as e:  # reported, with the events so far
            self.out.error = f"{type(e).__name__}: {e}"
        finally:
            self.server.stop()
            if self.tracer is not None:
                self.tracer.stop()
                self.out.rpc = self.tracer.summary()
            self.out.server_log = self.server.log_tail(30)
        return self.out

    def open_session(self, name: str) -> None:
        """``instant start`` of the folder; wait until served; read its disk whole."""
        s = self.spec
        self.cli("instant", "start", "--storage", s.storage, "--name", name, "--clients", CLIENTS,
                 s.folder)  # fmt: skip
        self.wait_listed(name)
        self.out.disk_sha[name] = self.disk_sha256(name)

    def stop_session(self, name: str, limit: float = 5.0) -> None:
        """``instant stop``; wait (up to ``limit`` s) until nfs-ls no longer lists it."""
        self.cli("instant", "stop", name)
        t = time.monotonic()
        while self.listed(name) and time.monotonic() - t < limit:
            time.sleep(0.2)
        gone = not self.listed(name)
        self.event(f"{name} gone after stop: {gone} ({time.monotonic() - t:.2f} s)")

    def _scenario(self) -> None:
        self.open_session("ir1")
        if not self._ok(self.boot("write", "ir1", kill_on="WRITING")):
            return
        if not self._ok(self.boot("verify", "ir1")):
            return
        self.cli("instant", "export", "ir1", "--to", str(self.work / "exported"))
        self.stop_session("ir1")
        self.open_session("ir2")
        self.boot("fresh", "ir2")

    @staticmethod
    def _ok(b: Boot) -> bool:
        return not b.timed_out and bool(b.values("END"))


def run(spec: Spec, timeout: float) -> Outcome:
    """Host side: run the scenario in a fresh namespace; its outcome."""
    work = Path(spec.work)
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(asdict(spec), indent=1))
    out_path = work / "outcome.json"
    out_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(servers.REPO), env.get("PYTHONPATH")]))
    cmd = netns.wrap([sys.executable, "-m", __name__, str(spec_path)])
    with open(work / "runner.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=servers.REPO
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # --kill-child: the namespace goes with it
            proc.wait()
    if not out_path.exists():
        said = (work / "runner.log").read_text(errors="replace")[-3000:]
        return Outcome(
            error=f"the namespace runner ended (rc {proc.returncode}) with no outcome:\n{said}"
        )
    o = json.loads(out_path.read_text())
    boots = [Boot(**b) for b in o.pop("boots")]
    return Outcome(boots=boots, **{**o, "events": [tuple(e) for e in o["events"]]})


def main(argv: list[str]) -> int:
    spec = Spec(**json.loads(Path(argv[0]).read_text()))
    outcome = _Inside(spec).run()
    (Path(spec.work) / "outcome.json").write_text(json.dumps(asdict(outcome), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
