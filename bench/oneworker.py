#!/usr/bin/env python3
"""Server CPU per call end to end: one ``recovery-fs serve --workers 1`` on loopback.

    .venv/bin/python bench/oneworker.py --nfsload .cache/bench-full/nfsload
    .venv/bin/python bench/oneworker.py --trees /tmp/before,/tmp/after --rounds 4 \\
        --only getattr read_4k

Between ``bench/dispatch_micro.py`` (the dispatcher alone, in-process) and
``bench/run`` (both servers, every workload): one worker process, so one
connection's calls and one GIL, with the transport (record reader, reply
batching, ``sendmsg``) and libnfs's client (``bench/nfsload.c``, as
``bench/run`` builds it) on loopback.  Each figure is the server's CPU
(utime + stime from /proc/PID/stat, read before and after a timed run) per
100,000 calls, the median of ``--rounds``; with ``--trees`` the source
trees (e.g. ``git archive`` of two commits) take turns in each round, in
alternating order, so that a busy machine weighs on both alike.  The rate
(calls a second) is shown too, but on a shared machine it moves with the
load; the CPU per call moves much less.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PORT = 20711
MIB = 1 << 20

# name: nfsload's arguments (after --url), as bench/run's workloads of the same name
PLAIN, MERGED = "/plain/big.img", "/vm/disk-flat.vmdk"
WORKLOADS: dict[str, tuple[object, ...]] = {
    "getattr": ("--op", "getattr", "--path", PLAIN, "--inflight", 16),
    "read_4k": ("--op", "read", "--path", PLAIN, "--size", 4096, "--inflight", 16, "--random"),
    "lookup": ("--op", "lookup", "--path", "/big", "--names", "{names}", "--inflight", 16),
    "read_64k": ("--op", "read", "--path", PLAIN, "--size", 65536, "--inflight", 16, "--random"),
    "read_256k": ("--op", "read", "--path", PLAIN, "--size", 262144, "--inflight", 16, "--random"),
    "read_1m": ("--op", "read", "--path", PLAIN, "--size", MIB, "--inflight", 4),
    "read_1m_merged": ("--op", "read", "--path", MERGED, "--size", MIB, "--inflight", 4),
    "read_1m_4conns": ("--op", "read", "--path", PLAIN, "--size", MIB, "--inflight", 4,
                       "--conns", 4),
    "read_1m_merged_4conns": ("--op", "read", "--path", MERGED, "--size", MIB, "--inflight", 4,
                              "--conns", 4),
}  # fmt: skip


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of a process and its children (``--workers`` over 1:
    a supervisor and its workers), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    user, system = int(fields[11]), int(fields[12])
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            u, s = cpu_ticks(int(child))
            user, system = user + u, system + s
    return user, system


def start(
    tree: Path, storage: Path, state: Path, port: int, workers: int = 1
) -> subprocess.Popen[bytes]:
    """``recovery-fs serve --workers N`` from ``tree``; returns once it accepts."""
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    argv = [sys.executable, "-c", "import sys; from nfsd.cli import main; sys.exit(main())"]
    argv += ["serve", "--storage", str(storage), "--bind", "127.0.0.1", "--port", str(port)]
    argv += ["--no-portmap", "--state-dir", str(state), "--log-file", str(state / "log")]
    argv += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = open(state / "out", "wb")  # noqa: SIM115 (the server's, closed with it)
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{tree}: the server exited: see {state / 'out'}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            time.sleep(0.3)
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{tree}: the server did not start within 60 s")


def run(
    nfsload: Path, pid: int, port: int, args: list[str], seconds: float, *, url: str | None = None
) -> dict:
    """One timed nfsload run (of the read-only export, or ``url``): its result, and
    the server's user and system CPU seconds in it."""
    url = url or f"nfs://127.0.0.1/recover/images/?version=3&nfsport={port}&mountport={port}"
    before = cpu_ticks(pid)
    done = subprocess.run(
        [str(nfsload), "--url", url, *args, "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=False,
    )
    after = cpu_ticks(pid)
    if done.returncode != 0:
        raise SystemExit(f"nfsload {' '.join(args)}: {done.stderr.strip()}")
    out = json.loads(done.stdout)
    tick = os.sysconf("SC_CLK_TCK")
    out["user"] = (after[0] - before[0]) / tick
    out["sys"] = (after[1] - before[1]) / tick
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--storage", default=str(REPO / ".cache/bench-data-short/storage"))
    ap.add_argument("--nfsload", default=str(REPO / ".cache/bench-full/nfsload"))
    ap.add_argument("--trees", default=str(REPO), help="source trees to compare, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--port", type=int, default=PORT, help="a free TCP port of 127.0.0.1")
    ap.add_argument("--workers", type=int, default=1, help="the server's worker processes")
    ap.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="default: all")
    args = ap.parse_args()
    storage = Path(args.storage)
    names = storage.parent / "names.txt"
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    todo = args.only or list(WORKLOADS)
    results: dict[tuple[Path, str], list[dict]] = {(t, w): [] for t in trees for w in todo}
    with tempfile.TemporaryDirectory(prefix="oneworker-") as tmp:
        for r in range(args.rounds):
            for tree in trees if r % 2 == 0 else trees[::-1]:
                proc = start(tree, storage, Path(tmp) / "state", args.port, args.workers)
                try:
                    for w in todo:
                        wargs = [str(a).format(names=names) for a in WORKLOADS[w]]
                        load = partial(run, Path(args.nfsload), proc.pid, args.port, wargs)
                        load(0.5)  # warm the caches
                        results[tree, w].append(load(args.seconds))
                finally:
                    proc.terminate()
                    proc.wait()
    print(f"{'tree':40s} {'workload':16s}", "CPU s/100k  user us  sys us   calls/s  client us")
    for (tree, w), runs in results.items():
        per = [(x["user"] + x["sys"]) / x["ops"] * 1e5 for x in runs]
        user = statistics.median(x["user"] / x["ops"] * 1e6 for x in runs)
        system = statistics.median(x["sys"] / x["ops"] * 1e6 for x in runs)
        rate = statistics.median(x["ops"] / x["seconds"] for x in runs)
        client = statistics.median(x["client_cpu"] / x["ops"] * 1e6 for x in runs)
        print(
            f"{str(tree)[-40:]:40s} {w:16s} {statistics.median(per):10.3f} "
            f"{user:8.1f} {system:7.1f} {rate:9,.0f} {client:10.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
