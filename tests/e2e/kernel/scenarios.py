"""The guest scenarios of the kernel-client tests, and how their results are judged.

Each `run_*` function boots the guest once (sh/<scenario>.sh) against a fresh
server over the shared storage and returns a `Run`: the guest's result lines
plus what the host expected. The `problems_*` functions turn a run into a list
of precise, human-readable discrepancies (empty when all is well), so that an
assertion message names every wrong file, range and error the guest saw.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import assets, guest, servers, storage
from .storage import Check, Layout

EXPORT = servers.EXPORT
PORT = 20490  # any port: the namespace is private
# For slow machines: every boot's host timeout is multiplied by this.
TIMEOUT_SCALE = float(os.environ.get("KERNEL_E2E_TIMEOUT_SCALE", "1"))
SMALL_CHECK_PATHS = {
    "tree/one.txt",
    "tree/names/with space.txt",
    "tree/sizes/s131073.bin",
    "backups/2026-11-22T0100/web01/web01-flat.vmdk",
    "backups/2026-11-22T0100/db01/db01-flat.vmdk",
}


@dataclass
class Env:
    """What every scenario needs: the kernel, the storage and which server to run."""

    assets: assets.Assets
    layout: Layout
    kind: str  # servers.KINDS
    exported: Path  # the directory the server serves
    work: Path  # run directories go below


@dataclass
class Run:
    name: str
    result: guest.GuestResult
    server: servers.Server
    checks: list[Check] = field(default_factory=list)

    def fail(self, what: str, problems: list[str]) -> str:
        shown = problems[:40]
        more = f"\n... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        return (
            f"{self.name} against {self.server.kind}: {what}: {len(problems)} problem(s)\n"
            + "\n".join(shown)
            + more
            + "\n\n"
            + self.result.context()
        )


def _server(
    env: Env, run_dir: Path, *, portmap: bool = False, exports: str | None = None
) -> servers.Server:
    cfg = servers.ServerConfig(
        kind=env.kind,
        storage=str(env.exported),
        workdir=str(run_dir / "server"),
        port=PORT,
        portmap=portmap,
        exports=exports,
    )
    return servers.make(cfg)


def explicit_mount_options(server: servers.Server) -> str:
    """Both ports given: no portmapper is asked. Deliberately without `noacl`."""
    return (
        f"vers=3,proto=tcp,port={server.nfs_port},mountport={server.mount_port},"
        "mountproto=tcp,nolock"
    )


def _checks_file(checks: list[Check]) -> bytes:
    lines = [
        f"{c.id} {'-' if c.offset is None else c.offset} {c.length} {c.path}\n" for c in checks
    ]
    return "".join(lines).encode()


def _run(
    env: Env,
    name: str,
    scenario: str,
    *,
    portmap: bool = False,
    exports: str | None = None,
    mount_options: str | None = None,
    mount_extra: str = "",
    checks: list[Check] | None = None,
    params: dict | None = None,
    data: dict[str, bytes] | None = None,
    actions: dict | None = None,
    timeout: float = 300,
    deadline_after: dict[str, float] | None = None,
) -> Run:
    run_dir = env.work / name
    server = _server(env, run_dir, portmap=portmap, exports=exports)
    checks = checks or []
    p = {
        "SERVER": guest.GUEST_HOST_ADDR,
        "EXPORT": EXPORT,
        "MOUNT_OPTS": (mount_options or explicit_mount_options(server)) + mount_extra,
        "MOUNT_TIMEOUT": 90,
        **(params or {}),
    }
    files = {"checks.txt": _checks_file(checks), **(data or {})}
    result = guest.run_guest(
        scenario=scenario,
        server=server.config,
        run_dir=run_dir,
        params=p,
        data=files,
        actions=actions,
        timeout=timeout * TIMEOUT_SCALE,
        deadline_after=deadline_after,
        kernel_assets=env.assets,
    )
    return Run(name, result, server, checks)


def run_main(env: Env) -> Run:
    """Explicit ports, no noacl: throughput, the whole tree, contents, hidden names, writes."""
    checks = env.layout.checks()
    hidden = "".join(f"{h}\n" for h in env.layout.hidden).encode()
    return _run(
        env,
        "main",
        "main",
        checks=checks,
        params={
            "THROUGHPUT_FILE": storage.STREAM,
            "RO_FILE": "tree/sizes/s4097.bin",
            "RO_EMPTY_DIR": "tree/emptydir",
        },
        data={"hidden.txt": hidden},
        timeout=420,
    )


def run_portmap(env: Env) -> Run:
    """Server with its own portmapper; the guest mounts with no port options."""
    checks = env.layout.checks(paths=SMALL_CHECK_PATHS)
    return _run(
        env,
        "portmap",
        "portmap",
        portmap=True,
        mount_options="vers=3,nolock",
        checks=checks,
        timeout=240,
    )


def run_restart(env: Env, delay: float = 0.1) -> Run:
    """Kill -9 and restart the server during a long read: `delay` s after the guest
    starts it, as soon as a READ is in flight (seen by the RPC tracer)."""
    checks = env.layout.checks(paths=SMALL_CHECK_PATHS)
    return _run(
        env,
        "restart",
        "restart",
        checks=checks,
        params={"RESTART_FILE": storage.RESTART},
        actions={"READING_STARTED": {"do": "restart_server", "delay": delay, "in_flight": "READ"}},
        timeout=300,
    )


def run_worker_kill(env: Env, delay: float = 0.1) -> Run:
    """Kill -9 one worker process of the supervised server during a long read
    (the restart boot's guest script; the supervisor replaces the worker)."""
    checks = env.layout.checks(paths=SMALL_CHECK_PATHS)
    return _run(
        env,
        "worker-kill",
        "restart",
        checks=checks,
        params={"RESTART_FILE": storage.RESTART},
        actions={"READING_STARTED": {"do": "kill_worker", "delay": delay, "in_flight": "READ"}},
        timeout=300,
    )


BALANCED_IMAGE = "backups/2026-11-21T0100/big01/big01-flat.vmdk"


def balanced_storage(root: Path) -> storage.Layout:
    """A storage of its own for the scale-out boot: one large merged image
    (96 MiB base, changes spliced in) over a SmartMotion link, and a few files."""
    b = storage._Builder(root)
    r = random.Random("balanced")
    base = r.randbytes(96 * storage.MiB)
    b.passthrough("backups/2026-11-20T0100/big01/big01-flat.vmdk", base, "chain")
    changes = [
        storage.Change(0, 4096, r.randbytes(4096)),
        storage.Change(17 * storage.MiB + 5, 300 * storage.KiB, r.randbytes(300 * storage.KiB)),
        storage.Change(60 * storage.MiB, 8 * storage.MiB, r.randbytes(8 * storage.MiB)),
        storage.Change(95 * storage.MiB, 2 * storage.MiB, r.randbytes(2 * storage.MiB)),
    ]
    b.merged(
        "backups/2026-11-21T0100/big01",
        "big01",
        base,
        97 * storage.MiB,
        changes,
        link=("big01-flat.vmdk.json", "../../2026-11-20T0100/big01/big01-flat.vmdk", {}),
        base_size=96 * storage.MiB,
    )
    for i in range(20):
        b.passthrough(f"tree/f{i:02}.txt", f"file {i}\n".encode())
    for d in sorted(b.layout.dirs):
        (root / d).mkdir(parents=True, exist_ok=True)
    return b.layout


def run_balanced(env: Env) -> tuple[Run, storage.Layout]:
    """Two instances behind HAProxy; the guest mounts the balanced address with
    nconnect=4 and reads the large merged image; instance a is killed with
    SIGKILL mid-read (the restart boot's guest script: list, read, list)."""
    run_dir = env.work / "balanced"
    layout = balanced_storage(run_dir / "storage")
    benv = dataclasses.replace(env, kind="balanced", exported=run_dir / "storage", layout=layout)
    server = _server(benv, run_dir)
    checks = layout.checks()
    return (
        _run(
            benv,
            "balanced",
            "restart",
            checks=checks,
            mount_options=explicit_mount_options(server) + ",nconnect=4,hard",
            params={"RESTART_FILE": BALANCED_IMAGE},
            actions={"READING_STARTED": {"do": "kill_instance", "delay": 0.2, "in_flight": "READ"}},
            timeout=300,
        ),
        layout,
    )


def run_hang(env: Env, hang: float = 12) -> Run:
    """Harness self-test: the server is killed for good under a hard mount; the host
    ends the boot `hang` seconds after the kill."""
    return _run(
        env,
        "hang",
        "hang",
        params={"RESTART_FILE": storage.RESTART},
        actions={"KILL_SERVER": {"do": "kill_server"}},
        deadline_after={"KILL_SERVER": hang},
        timeout=180,
    )


# The guest's calls reach the server from 127.0.0.1 with an unprivileged source port
# (QEMU's user networking NATs them): allowing it takes `127.0.0.1(insecure)`.
ACCESS_ALLOW = f"# the guest, through QEMU's NAT\n{EXPORT} 127.0.0.1(insecure)\n"
ACCESS_DENY = f"# anyone but the guest\n{EXPORT} 10.9.9.9(insecure) 127.0.0.2(insecure)\n"
ACCESS_READ_FIRST = "tree/sizes/s131073.bin"  # read while allowed, again after drop_caches
ACCESS_READ_LATER = "tree/sizes/s4097.bin"  # first read after the revocation
ACCESS_SETTLE = 5  # seconds the guest waits after REVOKE_ME for the host's reload


def run_access(env: Env) -> Run:
    """One boot, three phases: a mount refused (not listed); allowed after a reload (the
    guest retries); revoked by a reload while mounted: reads, a listing, a new mount."""
    return _run(
        env,
        "access",
        "access",
        exports=ACCESS_DENY,
        params={
            "READ_FIRST": ACCESS_READ_FIRST,
            "READ_LATER": ACCESS_READ_LATER,
            "SETTLE": ACCESS_SETTLE,
            "ALLOW_TRIES": 20,
            "MOUNT_TIMEOUT": 30,
        },
        actions={
            "ALLOW_ME": {"do": "set_exports", "text": ACCESS_ALLOW},
            "REVOKE_ME": {"do": "set_exports", "text": ACCESS_DENY},
        },
        timeout=180,
    )


REFUSED_MOUNT = ("Permission denied", "access denied")
REFUSED_MOUNT_SECONDS = 10.0


def _mount_refusal_problems(label: str, line: str | None) -> list[str]:
    if line is None:
        return [f"{label}: no mount attempt (the guest stopped before it)"]
    rc, t0, t1, *msg = line.split(" ")
    said = " ".join(msg)
    problems = []
    if rc == "rc=0":
        problems.append(f"{label}: the mount succeeded: {line}")
    elif not any(m in said for m in REFUSED_MOUNT):
        want = " or ".join(REFUSED_MOUNT)
        problems.append(f"{label}: failed, but not as refused ({want}): {line}")
    if float(t1) - float(t0) > REFUSED_MOUNT_SECONDS:
        problems.append(f"{label}: took {float(t1) - float(t0):.1f} s (a hang, not a refusal)")
    return problems


def _reads(run: Run) -> dict[str, list[str]]:
    """ACCESS_READ lines: label -> [rc=N, bytes=N, sha256, message...]."""
    return {v.split(" ")[0]: v.split(" ")[1:] for v in run.result.values("ACCESS_READ")}


def access_refused_problems(run: Run) -> list[str]:
    """Not listed: the first mount fails with "Permission denied", at once."""
    r = run.result
    mounts = [v.split(" ", 1) for v in r.values("ACCESS_MOUNT")]
    first = next((rest for label, rest in mounts if label == "refused"), None)
    problems = _mount_refusal_problems("mount while not listed", first)
    again = next((rest for label, rest in mounts if label == "again"), None)
    problems += _mount_refusal_problems("mount after the revocation", again)
    problems += [f"guest: {e}" for e in r.values("ERROR")]
    return problems


def _reload_times(run: Run) -> list[float]:
    """Host times at which each `exports reload` had returned 0."""
    return [t for t, e in run.result.events if e.startswith("exports reloaded rc=0")]


def access_allowed_problems(run: Run, layout: Layout) -> list[str]:
    """Allowed by a reload: the guest's retried mount succeeds and reads the right bytes."""
    r = run.result
    reloads = _reload_times(run)
    problems = [] if reloads else [f"no successful exports reload: events {r.events}"]
    allowed = [v for v in r.values("ACCESS_MOUNT") if v.startswith("allowed ")]
    if not allowed or not allowed[-1].startswith("allowed rc=0 "):
        problems.append(f"mount after the reload that allows the guest: {allowed[-1:]}")
    elif reloads and r.time_of("MOUNTINFO") is not None and r.time_of("MOUNTINFO") < reloads[0]:
        problems.append("mounted before the host's reload allowed it")
    before = _reads(run).get("before")
    exp = layout.files[ACCESS_READ_FIRST]
    if before is None or before[:3] != ["rc=0", f"bytes={exp.size}", exp.sha256()]:
        problems.append(f"{ACCESS_READ_FIRST} while allowed: {before}; expected {exp.sha256()}")
    return problems


# A reply to one of these, NFS3_OK, after the revocation: the server served a revoked client.
SERVED = ("-> NFS3_OK", "-> MNT3_OK")


def access_revoked_problems(run: Run, layout: Layout) -> tuple[list[str], list[str]]:
    """(problems, what the guest saw) once revoked: reads and listing fail, no data, no
    call after the reload served (from the RPC trace)."""
    r = run.result
    reloads = _reload_times(run)
    start = r.time_of("REVOKED_START")
    if len(reloads) < 2 or start is None:
        return [f"no revocation happened: reloads at {reloads}, REVOKED_START at {start}"], []
    problems = []
    if start < reloads[1]:
        problems.append(f"the guest read at {start:.2f} s, before the reload ({reloads[1]:.2f} s)")
    reads = _reads(run)
    seen = []
    for label, path in (("unread", ACCESS_READ_LATER), ("dropped", ACCESS_READ_FIRST)):
        got = reads.get(label)
        seen.append(f"{label} {path}: {' '.join(got or ['not tried'])}")
        if got is None:
            problems.append(f"{path} ({label}): not tried (the guest stopped before it)")
        elif got[0] == "rc=0" or got[1] != "bytes=0":
            problems.append(f"{path} ({label}) after the revocation: {' '.join(got)}")
    ls = r.one("ACCESS_LS") or "not tried"
    seen.append(f"ls: {ls}")
    if not ls.startswith("rc=") or ls.startswith("rc=0"):
        problems.append(f"ls of the export after the revocation: {ls}")
    names = {p.split("/")[0] for p in layout.files}
    if any(f" {n}" in f" {ls.split(' ', 1)[-1]}" for n in names):
        problems.append(f"names listed after the revocation: {ls}")
    log = run.result.run_dir / "rpc.log"
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            t = float(line.split(None, 1)[0])
            if t > reloads[1] and any(s in line for s in SERVED) and " NULL(" not in line:
                problems.append(f"served after the revocation: {line}")
    elif os.environ.get("KERNEL_E2E_TRACE", "1") != "0":
        problems.append(f"no RPC trace ({log}): cannot tell what the server answered")
    problems += [f"unanswered: {c}" for c in r.rpc.get("unanswered", [])]
    problems += [f"guest: {e}" for e in r.values("ERROR")]
    return problems, seen


# ---------------------------------------------------------------- judging


def _serverless(run: Run) -> list[tuple[float, float]]:
    """The spans with no server: from each kill to the next start."""
    spans, down = [], None
    for t, e in run.result.events:
        if e.startswith("server kill"):
            down = t if down is None else down
        elif e.startswith("server started") and down is not None:
            spans.append((down, t))
            down = None
    return spans


def rpc_problems(run: Run) -> list[str]:
    """Calls the server never answered, and error replies no scenario asks for.

    A call sent while no server ran (between a kill and the restart) has
    nobody to answer it; the client retries on a new connection.
    """
    rpc = run.result.rpc
    spans = _serverless(run)

    def sent_while_down(line: str) -> bool:
        try:
            t = float(line.split(maxsplit=1)[0])
        except (IndexError, ValueError):
            return False
        return any(a <= t <= b for a, b in spans)

    out = [f"unanswered: {c}" for c in rpc.get("unanswered", []) if not sent_while_down(c)]
    out += [f"error reply: {c}" for c in rpc.get("errors", [])]
    return out


def mount_problems(run: Run, *, explicit: bool) -> list[str]:
    r = run.result
    mount = r.one("MOUNT")
    if mount is None or not mount.startswith("ok"):
        return [f"mount failed: MOUNT {mount}"]
    info = r.one("MOUNTINFO") or ""
    problems = []
    opts = info.split(" ")[3].split(",") if len(info.split(" ")) > 3 else []
    if "vers=3" not in opts:
        problems.append(f"not an NFSv3 mount: {info}")
    if "noacl" in opts:
        problems.append(f"mounted with noacl: {info}")
    if explicit:
        for want in (f"port={run.server.nfs_port}", f"mountport={run.server.mount_port}"):
            if want not in opts:
                problems.append(f"{want} missing from the mount options: {info}")
    return problems


@dataclass
class Entry:
    kind: str
    size: int
    mode: int
    inode: int
    path: str


def entries(run: Run, key: str = "ENTRY") -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for v in run.result.values(key):
        kind, size, mode, inode, path = v.split("|", 4)
        rel = path[2:] if path.startswith("./") else "." if path == "." else path
        out[rel] = Entry(kind, int(size), int(mode, 8), int(inode), rel)
    return out


def listing_problems(run: Run, layout: Layout, key: str = "ENTRY") -> list[str]:
    r = run.result
    listed = [v for v in r.values("LISTED") if v.startswith(f"{key} ")]
    if not listed:
        return ["the guest never finished listing the tree"]
    problems = [f"listing error: {e}" for e in r.values("LISTERR")]
    if listed != [f"{key} rc=0"]:
        problems.append(f"find in the guest failed: LISTED {listed}")
    seen = entries(run, key)
    for d in sorted(layout.dirs):
        e = seen.get(d)
        if e is None:
            problems.append(f"missing directory: {d}")
        elif e.kind != "directory":
            problems.append(f"{d}: a {e.kind}, expected a directory")
    for rel, exp in sorted(layout.files.items()):
        e = seen.get(rel)
        if e is None:
            problems.append(f"missing file: {rel}")
        elif e.kind not in ("regular file", "regular empty file"):
            problems.append(f"{rel}: a {e.kind}, expected a regular file")
        elif e.size != exp.size:
            problems.append(f"{rel}: size {e.size}, expected {exp.size}")
    for rel in sorted(set(seen) - layout.dirs - set(layout.files)):
        problems.append(f"unexpected entry: {rel} ({seen[rel].kind}, {seen[rel].size} bytes)")
    for rel, e in sorted(seen.items()):
        if e.mode & 0o222:
            problems.append(f"{rel}: mode {e.mode:o} has write permission bits")
    by_inode: dict[int, list[str]] = {}
    for rel, e in seen.items():
        by_inode.setdefault(e.inode, []).append(rel)
    for ino, paths in sorted(by_inode.items()):
        if len(paths) > 1:
            problems.append(f"file id {ino} shared by {sorted(paths)}")
    return problems


def check_problems(run: Run, groups: set[str] | None = None) -> tuple[list[str], int, int]:
    """(problems, files compared, bytes compared) for the run's checks in `groups`."""
    r = run.result
    got = {}
    for v in r.values("SHA"):
        cid, _, sha = v.partition(" ")
        got[cid] = sha.strip()
    errs = {}
    for v in r.values("READERR"):
        cid, _, msg = v.partition(" ")
        errs[cid] = msg
    problems = []
    files: set[str] = set()
    nbytes = 0
    for c in run.checks:
        if groups and c.group not in groups:
            continue
        where = "whole file" if c.offset is None else f"bytes {c.offset}+{c.length}"
        if c.id in errs:
            problems.append(f"{c.path} ({where}): read error in the guest: {errs[c.id]}")
        elif c.id not in got:
            problems.append(f"{c.path} ({where}): not checked (the guest stopped before it)")
        elif got[c.id] != c.sha256:
            problems.append(
                f"{c.path} ({where}): sha256 {got[c.id][:16]}..., expected {c.sha256[:16]}..."
            )
        else:
            files.add(c.path)
            nbytes += c.nbytes
    return problems, len(files), nbytes


def lookup_problems(run: Run, layout: Layout) -> list[str]:
    problems = []
    seen = set()
    for v in run.result.values("LOOKUP"):
        rc, path, msg = v.split("|", 2)
        seen.add(path)
        if rc == "0" or "No such file or directory" not in msg:
            problems.append(f"{path}: lookup gave rc {rc}: {msg!r}; expected No such file")
    for h in layout.hidden:
        if h not in seen:
            problems.append(f"{h}: lookup not tried (the guest stopped before it)")
    return problems


EROFS = ("Read-only file system",)
# Opening an existing file for writing: the Linux client asks ACCESS first and fails
# the open with EACCES when the server grants no MODIFY/EXTEND (as knfsd and ganesha
# do on read-only exports); no write RPC is ever sent. Either answer refuses it.
EROFS_OR_EACCES = ("Read-only file system", "Permission denied")
READ_ONLY_OPS = {
    "touch-existing": EROFS,
    "touch-new": EROFS,
    "create-new": EROFS,
    "append-existing": EROFS_OR_EACCES,
    "truncate-existing": EROFS_OR_EACCES,
    "mkdir": EROFS,
    "rm": EROFS,
    "rmdir": EROFS,
    "rename": EROFS,
    "chmod": EROFS,
    "symlink": EROFS,
    "hardlink": EROFS,
}


def read_only_problems(run: Run, layout: Layout, ro_file: str) -> list[str]:
    problems = []
    refused = {}
    for v in run.result.values("REFUSED"):
        name, _, rest = v.partition(" ")
        refused[name] = rest
    for op, allowed in READ_ONLY_OPS.items():
        rest = refused.get(op)
        if rest is None:
            problems.append(f"{op}: not tried")
        elif rest.startswith("rc=0") or not any(a in rest for a in allowed):
            problems.append(f"{op}: {rest!r}; expected it to fail with {' or '.join(allowed)}")
    after = run.result.values("AFTER")
    exp = layout.files[ro_file]
    size_line = next((a for a in after if a.startswith("size ")), "")
    if not size_line.startswith(f"size {exp.size} "):
        problems.append(f"{ro_file} after the attempts: {size_line!r}, expected size {exp.size}")
    if "new-" in size_line or "renamed" in size_line:
        problems.append(f"a write attempt left an entry: {size_line!r}")
    sha_line = next((a for a in after if a.startswith("sha ")), "")
    if sha_line != f"sha {exp.sha256()}":
        problems.append(f"{ro_file} changed: {sha_line!r}")
    return problems


def throughput(run: Run) -> dict | None:
    v = run.result.one("THROUGHPUT")
    if not v:
        return None
    size, t0, t1, *records = v.split(" ")
    secs = max(float(t1) - float(t0), 0.01)
    return {
        "file": storage.STREAM,
        "bytes": int(size),
        "seconds": round(secs, 2),
        "MB_per_s": round(int(size) / secs / 1e6, 1),
        "MiB_per_s": round(int(size) / secs / (1 << 20), 1),
        "dd": " ".join(records),
    }


def guest_timings(run: Run) -> dict:
    """Boot, mount and total times in the guest (its uptime) and on the host."""
    r = run.result

    def up(key: str) -> float | None:
        v = r.one(key)
        try:
            return float(v.split(" ")[-1]) if v else None
        except ValueError:
            return None

    mount_t = r.time_of("MOUNT")
    return {
        "host_wall_s": round(r.wall_s, 1),
        "guest_network_up_s": up("NETWORK"),
        "host_mounted_at_s": mount_t,
        "guest_end_s": up("END"),
    }


def write_results(kind: str, section: str, data: dict) -> Path:
    """Merge `data` into .cache/kernel-guest/results.json under [kind][section]."""
    path = assets.CACHE / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    entry = doc.setdefault(kind, {})
    entry[section] = data
    entry["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return path
