"""Boot the Linux kernel NFS client in QEMU against a server under test.

Host side (pytest): `run_guest(...)` writes the run's initrd (the cached base
plus a small archive with the scenario), a spec file, and starts this module
again inside `netns.wrap` (`python -m <package>.guest --inside SPEC`). Inside
the namespace the runner starts the server, boots QEMU with two serial ports
(console and results), and follows the results port: the guest writes
`KEY value` lines there. A line whose key names an action in the spec (for
example `READING_STARTED` -> restart the server) triggers that action on the
host side, in a thread, so the timestamps of later lines stay true. The runner
always ends QEMU after `timeout` seconds; the host side kills `unshare` (and so
the whole namespace) if even that does not happen. The outcome (result lines
with host timestamps, events, timeouts, server log tails) is written to
`outcome.json` in the run directory and returned as a `GuestResult`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import assets, netns, rpctrace, servers

HERE = Path(__file__).resolve().parent
SH = HERE / "sh"
GUEST_HOST_ADDR = "10.0.2.2"  # the namespace's loopback, as the guest sees it
MEMORY_MB = 512


def choose_accel() -> str:
    """KVM only where the CPU shows vmx/svm and the KVM is not the paravirtual kvm_pvm."""
    forced = os.environ.get("KERNEL_E2E_ACCEL")
    if forced:
        return forced
    try:
        flags = set(re.findall(r"\b(vmx|svm)\b", Path("/proc/cpuinfo").read_text()))
    except OSError:
        flags = set()
    if (
        flags
        and os.access("/dev/kvm", os.R_OK | os.W_OK)
        and not Path("/sys/module/kvm_pvm").exists()
    ):
        return "kvm"
    return "tcg,thread=multi"


def qemu_command(kernel: Path, initrd: Path, run_dir: Path, accel: str) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-nodefaults",
        "-no-user-config",
        "-accel",
        accel,
        "-smp",
        "1",
        "-m",
        str(MEMORY_MB),
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{run_dir / 'console.log'}",
        "-serial",
        f"file:{run_dir / 'results.log'}",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        "console=ttyS0 panic=-1 loglevel=6",
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0",
    ]


# ---------------------------------------------------------------- host side


@dataclass
class GuestResult:
    run_dir: Path
    lines: list[tuple[float, str]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    timed_out: bool = False
    error: str | None = None
    qemu_rc: int | None = None
    server_log: str = ""
    server_rc: int | None = None  # set when the server had died before the runner stopped it
    wall_s: float = 0.0
    rpc: dict = field(default_factory=dict)  # rpctrace.Tracer.summary()

    # -- reading results
    def values(self, key: str) -> list[str]:
        out = []
        for _, line in self.lines:
            k, _, rest = line.partition(" ")
            if k == key:
                out.append(rest)
        return out

    def one(self, key: str) -> str | None:
        v = self.values(key)
        return v[-1] if v else None

    def time_of(self, key: str) -> float | None:
        for t, line in self.lines:
            if line.partition(" ")[0] == key:
                return t
        return None

    def event_time(self, prefix: str) -> float | None:
        for t, text in self.events:
            if text.startswith(prefix):
                return t
        return None

    @property
    def completed(self) -> bool:
        return self.one("END") is not None and not self.timed_out and not self.error

    def console_tail(self, n: int = 40) -> str:
        try:
            text = (self.run_dir / "console.log").read_bytes().decode(errors="replace")
        except OSError:
            return "(no console.log)"
        return "\n".join(text.replace("\r", "").splitlines()[-n:])

    def console_lines(self, pattern: str) -> list[str]:
        try:
            text = (self.run_dir / "console.log").read_bytes().decode(errors="replace")
        except OSError:
            return []
        return [ln for ln in text.replace("\r", "").splitlines() if re.search(pattern, ln)]

    def context(self) -> str:
        """What to show when an assertion about this run fails."""
        kept = assets.CACHE / "runs"
        parts = [f"run directory: {self.run_dir} (logs also kept below {kept})"]
        if self.error:
            parts.append(f"runner error: {self.error}")
        if self.timed_out:
            steps = self.values("STEP")
            parts.append(
                f"HOST TIMEOUT: QEMU killed after {self.wall_s:.0f} s; "
                f"the guest's last step: {steps[-1] if steps else '(none)'}"
            )
        if self.server_rc is not None:
            parts.append(f"the server had exited with {self.server_rc} during the run")
        parts.append("events: " + "; ".join(f"{t:.2f}s {e}" for t, e in self.events))
        parts.append(self.rpc_report())
        parts.append("last result lines:\n" + "\n".join(ln for _, ln in self.lines[-15:]))
        parts.append("console tail:\n" + self.console_tail())
        parts.append("server log tail:\n" + self.server_log)
        return "\n".join(parts)

    def rpc_report(self, most: int = 25) -> str:
        """What the RPC tracer saw: calls per procedure, error replies, unanswered calls."""
        if not self.rpc:
            return "rpc trace: none"
        out = ["rpc calls: " + ", ".join(f"{k} {v}" for k, v in self.rpc["counts"].items())]
        for title, key in (
            ("error replies", "errors"),
            ("unanswered calls", "unanswered"),
            ("retransmitted calls", "retransmitted"),
        ):
            items = self.rpc.get(key, [])
            if items:
                out.append(f"rpc {title} ({len(items)}, see {self.run_dir / 'rpc.log'}):")
                out += [f"  {x}" for x in items[:most]]
        out += [f"rpc capture: {x}" for x in self.rpc.get("lost", [])]
        return "\n".join(out)

    def require_completed(self) -> None:
        if not self.completed:
            raise AssertionError("the guest run did not complete\n" + self.context())


def guest_files(scenario: str, params: dict[str, str | int], data: dict[str, bytes]) -> dict:
    """The per-run archive: lib.sh, the scenario script, params.sh and data files."""
    files = {
        "lib.sh": (SH / "lib.sh").read_bytes(),
        "scenario.sh": (SH / f"{scenario}.sh").read_bytes(),
        "params.sh": "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in params.items()).encode(),
    }
    files.update(data)
    return files


def run_guest(
    *,
    scenario: str,
    server: servers.ServerConfig,
    run_dir: Path,
    params: dict[str, str | int],
    data: dict[str, bytes] | None = None,
    actions: dict[str, dict] | None = None,
    timeout: float = 300.0,
    deadline_after: dict[str, float] | None = None,
    kernel_assets: assets.Assets | None = None,
) -> GuestResult:
    """Run one guest boot with `scenario` (sh/<scenario>.sh) against `server`.

    `actions`: guest line key -> {"do": "restart_server" | "kill_server", "delay": s,
    "in_flight": "READ"}, {"do": "set_exports", "text": EXPORTS} (rewrite + reload) or
    {"do": "connections"} (an event naming the workers that hold the guest's connections).
    `timeout`: seconds for the whole boot; `deadline_after`: key -> seconds, a shorter
    host timeout counted from that guest line."""
    run_dir.mkdir(parents=True, exist_ok=True)
    a = kernel_assets or assets.prepare()
    initrd = assets.scenario_initrd(
        a.initramfs, guest_files(scenario, params, data or {}), run_dir / "initrd.img"
    )
    spec = {
        "kernel": str(a.kernel),
        "initrd": str(initrd),
        "run_dir": str(run_dir),
        "timeout": timeout,
        "accel": choose_accel(),
        "server": server.to_dict(),
        "actions": actions or {},
        "deadline_after": deadline_after or {},
    }
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    outcome_path = run_dir / "outcome.json"
    outcome_path.unlink(missing_ok=True)
    package_root = HERE.parents[len(__package__.split(".")) - 1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(package_root), str(assets.REPO), env.get("PYTHONPATH")])
    )
    cmd = netns.wrap([sys.executable, "-m", f"{__package__}.guest", "--inside", str(spec_path)])
    started = time.monotonic()
    with open(run_dir / "runner.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait(timeout + 60)
            host_killed = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # --kill-child: the namespace dies with it
            proc.wait()
            host_killed = True
    _keep_artifacts(run_dir, server.kind, scenario)
    result = GuestResult(run_dir=run_dir, wall_s=time.monotonic() - started)
    if outcome_path.exists():
        o = json.loads(outcome_path.read_text())
        result.lines = [(t, ln) for t, ln in o["lines"]]
        result.events = [(t, e) for t, e in o["events"]]
        result.timed_out = o["timed_out"]
        result.error = o["error"]
        result.qemu_rc = o["qemu_rc"]
        result.server_log = o["server_log"]
        result.server_rc = o["server_rc"]
        result.rpc = o.get("rpc") or {}
    else:
        result.timed_out = host_killed
        runner_log = (run_dir / "runner.log").read_text(errors="replace")[-3000:]
        result.error = (
            f"the namespace runner {'was killed by the host timeout' if host_killed else 'ended'}"
            f" (rc {proc.returncode}) without an outcome; its output:\n{runner_log}"
        )
    return result


def _keep_artifacts(run_dir: Path, kind: str, scenario: str) -> None:
    """Copy the logs of the run to .cache/kernel-guest/runs/KIND/SCENARIO (the last run)."""
    dest = assets.CACHE / "runs" / kind / scenario
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for p in run_dir.rglob("*"):
        if p.is_file() and p.suffix in (".log", ".json", ".out", ".cmd", ".conf", ".sh", ".pcap"):
            target = dest / p.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)


# ---------------------------------------------------------------- inside the namespace


class _Runner:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.run_dir = Path(spec["run_dir"])
        self.t0 = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.events: list[tuple[float, str]] = []
        self.server = servers.make(servers.ServerConfig.from_dict(spec["server"]))
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.tracer: rpctrace.Tracer | None = None

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def event(self, text: str) -> None:
        with self.lock:
            self.events.append((self.now(), text))

    def action(self, name: str, spec: dict) -> None:
        try:
            time.sleep(float(spec.get("delay", 0)))
            what = spec["do"]
            if what == "restart_server":
                pid = self.server.proc.pid if self.server.proc else None
                inflight = self._wait_in_flight(spec.get("in_flight"))
                self.event(f"server kill pid {pid}{inflight}")
                self.server.kill()
                self.event("server killed")
                time.sleep(float(spec.get("down", 0)))
                self.server.start()
                self.event(
                    f"server started pid {self.server.proc.pid if self.server.proc else None}"
                )
            elif what == "set_exports":
                self.event(f"exports set: {spec['text'].strip()!r}")
                self.event(self.server.set_exports(spec["text"]))
            elif what == "kill_instance":
                self.event(f"backend connections {self.server.backend_connections()}")  # type: ignore[attr-defined]
                inflight = self._wait_in_flight(spec.get("in_flight"))
                self.event(f"instance kill{inflight}")
                self.event(self.server.kill_instance(spec.get("name", "a")))  # type: ignore[attr-defined]
            elif what == "kill_worker":
                inflight = self._wait_in_flight(spec.get("in_flight"))
                self.event(f"worker kill{inflight}")
                self.event(self.server.kill_worker())  # type: ignore[attr-defined]
            elif what == "connections":
                held = self.server.connection_pids()  # type: ignore[attr-defined]
                pids = sorted(w["pid"] for w in self.server.workers() if w["pid"] in held)  # type: ignore[attr-defined]
                self.event(f"connections held by workers {' '.join(map(str, pids))}")
            elif what == "kill_server":
                self.event("server kill")
                self.server.kill()
                self.event("server killed")
            else:
                self.event(f"action error: unknown action {what!r}")
        except Exception as e:
            self.event(f"action error ({name}): {e}")

    def _wait_in_flight(self, proc: str | None, limit: float = 3.0) -> str:
        """With the tracer, wait (up to `limit` s) until a `proc` call is unanswered."""
        if not proc or self.tracer is None:
            return ""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            xids = self.tracer.outstanding(proc)
            if xids:
                return f" with {proc} in flight: xid {', '.join(xids)}"
            time.sleep(0.0005)
        return f" (no {proc} seen in flight within {limit} s)"

    def follow(self, qemu: subprocess.Popen[bytes], deadline: float) -> bool:
        """Collect result lines until QEMU exits; True when the deadline ended it."""
        path = self.run_dir / "results.log"
        pending = b""
        fired: set[str] = set()
        fh = None
        while True:
            done = qemu.poll() is not None
            if fh is None and path.exists():
                fh = open(path, "rb")  # noqa: SIM115
            if fh is not None:
                pending += fh.read()
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    line = raw.decode(errors="replace").replace("\r", "").strip()
                    if not line:
                        continue
                    with self.lock:
                        self.lines.append((self.now(), line))
                    key = line.partition(" ")[0]
                    after = self.spec.get("deadline_after", {}).get(key)
                    if after is not None:
                        deadline = min(deadline, time.monotonic() + float(after))
                        self.event(f"host timeout now {after} s after {key}")
                    act = self.spec["actions"].get(key)
                    if act and key not in fired:
                        fired.add(key)
                        self.event(f"action {act['do']} on {key}")
                        t = threading.Thread(target=self.action, args=(key, act), daemon=True)
                        t.start()
                        self.threads.append(t)
            if done:
                if fh is not None:
                    tail = (pending + fh.read()).decode(errors="replace").replace("\r", "")
                    for line in filter(None, (x.strip() for x in tail.split("\n"))):
                        self.lines.append((self.now(), line))
                    fh.close()
                return False
            if time.monotonic() > deadline:
                if fh is not None:
                    fh.close()
                return True
            time.sleep(0.02)

    def run(self) -> dict:
        outcome: dict = {"timed_out": False, "error": None, "qemu_rc": None, "server_rc": None}
        try:
            netns.setup()
            if os.environ.get("KERNEL_E2E_TRACE", "1") != "0":
                ports = {self.server.nfs_port, self.server.mount_port, 111}
                try:
                    pcap = self.run_dir / "rpc.pcap" if os.environ.get("KERNEL_E2E_PCAP") else None
                    self.tracer = rpctrace.Tracer(ports, self.run_dir / "rpc.log", self.t0, pcap)
                except OSError as e:
                    self.event(f"rpc tracer unavailable: {e}")
            self.server.start()
            self.event(f"server started pid {self.server.proc.pid if self.server.proc else None}")
        except Exception as e:
            outcome["error"] = f"setup failed: {e}"
            return outcome
        for name in ("console.log", "results.log"):
            (self.run_dir / name).unlink(missing_ok=True)
        cmd = qemu_command(
            Path(self.spec["kernel"]), Path(self.spec["initrd"]), self.run_dir, self.spec["accel"]
        )
        (self.run_dir / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
        with open(self.run_dir / "qemu.out", "wb") as qout:
            qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qout, stderr=qout)
        self.event(f"qemu started pid {qemu.pid} accel {self.spec['accel']}")
        timed_out = self.follow(qemu, time.monotonic() + float(self.spec["timeout"]))
        if timed_out:
            self.event("host timeout: killing qemu")
            qemu.kill()
        outcome["qemu_rc"] = qemu.wait()
        outcome["timed_out"] = timed_out
        self.event(f"qemu exited {outcome['qemu_rc']}")
        for t in self.threads:
            t.join(60)
        if self.server.proc is not None:
            outcome["server_rc"] = self.server.proc.poll()
        self.server.stop()
        return outcome

    def main(self) -> None:
        outcome = self.run()
        if self.tracer is not None:
            self.tracer.stop()
            outcome["rpc"] = self.tracer.summary()
        outcome["lines"] = self.lines
        outcome["events"] = self.events
        outcome["server_log"] = self.server.log_tail()
        qemu_out = self.run_dir / "qemu.out"
        if qemu_out.exists() and qemu_out.stat().st_size:
            outcome["server_log"] += "\n== qemu.out\n" + qemu_out.read_text(errors="replace")
        (self.run_dir / "outcome.json").write_text(json.dumps(outcome, indent=1))


def _inside(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    _Runner(spec).main()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--inside":
        sys.exit(_inside(sys.argv[2]))
    print("usage: python -m ...guest --inside SPEC.json (the harness runs this)", file=sys.stderr)
    sys.exit(2)
