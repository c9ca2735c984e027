#!/usr/bin/env python3
"""A session's CPU per call end to end: one ``recovery-fs serve --workers 1``, one session.

    .venv/bin/python bench/session_oneworker.py
    .venv/bin/python bench/session_oneworker.py --trees /tmp/before,/tmp/after --rounds 4

What ``bench/instant_bench --full`` measures against ganesha, taken apart for
one worker process (one connection's calls, one GIL) so that a change to the
session's WRITE or READ path can be measured before and after:

* ``rand_write_4k``: random 4 KiB FILE_SYNC WRITEs, 16 in flight, to the
  session's plain disk (``instant_bench``'s ``rand_write_4k``);
* ``read_unwritten``: sequential 1 MiB READs, 4 in flight, of the merged
  image's second half (never written), through the read-only export and
  through the session, one after the other in the same server: their ratio
  is ``instant_bench``'s ``read_unwritten`` target (≥ 0.9×).

Each figure is the server's CPU (utime + stime from /proc/PID/stat, read
before and after a timed run) per call, the median of ``--rounds``; with
``--trees`` the source trees (e.g. ``git archive`` of two commits) take
turns in each round, in alternating order, so that a busy machine weighs on
both alike.  On a shared machine the rates move with the load; the CPU a
call and the READ ratio (both servers' runs side by side) move less.  The
data is ``instant_bench``'s (``--data``): run ``bench/instant_bench
--short`` (or ``--full``) once first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.oneworker import run, start  # noqa: E402

PORT = 20713
MIB = 1 << 20
SESSION = "bench1"
PLAIN, MERGED = "/vm/data-flat.vmdk", "/vm/disk-flat.vmdk"


def one_round(tree: Path, args: argparse.Namespace, state: Path) -> dict[str, dict]:
    """A server from ``tree``, a session of the VM folder, each workload once."""
    storage = Path(args.data) / "storage"
    proc = start(tree, storage, state, args.port, args.workers)
    try:
        cli = [sys.executable, "-c", "import sys; from nfsd.cli import main; sys.exit(main())"]
        cli += ["instant", "start", "--storage", str(storage), "--state-dir", str(state)]
        subprocess.run(
            [*cli, "--name", SESSION, "vm"],
            cwd=tree,
            env=dict(os.environ, PYTHONPATH=str(tree)),
            check=True,
            capture_output=True,
        )
        query = f"?version=3&nfsport={args.port}&mountport={args.port}"
        ro = f"nfs://127.0.0.1/recover/images/{query}"
        session = f"nfs://127.0.0.1/recover/instant/{SESSION}/{query}"
        exe = Path(args.nfsload)
        half = (storage / MERGED.lstrip("/")).stat().st_size // 2 // MIB * MIB
        write = ["--op", "write", "--path", PLAIN, "--size", "4096", "--inflight", "16"]
        write += ["--random", "--stable", "2"]
        read = ["--op", "read", "--path", MERGED, "--size", str(MIB), "--inflight", "4"]
        read += ["--offset", str(half), "--bytes", str(half)]
        load = partial(run, exe, proc.pid, args.port)
        load(write, 1, url=session)  # warm: the session's log, its map
        out = {"rand_write_4k": load(write, args.seconds, url=session)}
        load(read, 1, url=ro)  # warm: the page cache, the base's reader
        out["read_ro"] = load(read, args.seconds, url=ro)
        out["read_session"] = load(read, args.seconds, url=session)
        return out
    finally:
        proc.terminate()
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default=str(REPO / ".cache/bench-writes-data-short"))
    ap.add_argument("--nfsload", help="bench/nfsload.c built (default: built here)")
    ap.add_argument("--trees", default=str(REPO), help="source trees to compare, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--port", type=int, default=PORT, help="a free TCP port of 127.0.0.1")
    ap.add_argument("--workers", type=int, default=1, help="the server's worker processes")
    args = ap.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    results: dict[Path, list[dict[str, dict]]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="session-oneworker-") as tmp:
        if args.nfsload is None:
            args.nfsload = str(Path(tmp) / "nfsload")
            cc = ["gcc", "-O2", "-Wall", "-o", args.nfsload, str(REPO / "bench/nfsload.c")]
            subprocess.run([*cc, "-lnfs"], check=True)
        for r in range(args.rounds):
            for tree in trees if r % 2 == 0 else trees[::-1]:
                results[tree].append(one_round(tree, args, Path(tmp) / "state"))

    def per_call(runs: list[dict], key: str) -> str:
        user = statistics.median(x[key]["user"] / x[key]["ops"] * 1e6 for x in runs)
        system = statistics.median(x[key]["sys"] / x[key]["ops"] * 1e6 for x in runs)
        return f"{user:6.1f} + {system:5.1f} µs"

    print(f"{'tree':32s} {'WRITEs/s':>9s} {'CPU a WRITE':>18s}  "
          f"{'READ ro / session MB/s':>23s} {'ratio':>6s} {'CPU a READ ro':>18s} "
          f"{'CPU a READ session':>18s}")  # fmt: skip
    for tree, runs in results.items():
        writes = statistics.median(
            x["rand_write_4k"]["ops"] / x["rand_write_4k"]["seconds"] for x in runs
        )

        def mbs(x: dict) -> float:
            return x["bytes"] / x["seconds"] / 1e6

        ro = statistics.median(mbs(x["read_ro"]) for x in runs)
        session = statistics.median(mbs(x["read_session"]) for x in runs)
        ratios = sorted(mbs(x["read_session"]) / mbs(x["read_ro"]) for x in runs)
        print(
            f"{str(tree)[-32:]:32s} {writes:9,.0f} {per_call(runs, 'rand_write_4k'):>18s}  "
            f"{ro:10,.0f} / {session:10,.0f} {statistics.median(ratios):5.2f}× "
            f"{per_call(runs, 'read_ro'):>18s} {per_call(runs, 'read_session'):>18s}"
        )
        print(f"{'':32s} READ ratios of the rounds: {', '.join(f'{r:.2f}' for r in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
