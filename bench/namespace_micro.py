#!/usr/bin/env python3
"""Micro-benchmarks of the namespace's hot path, in-process (no server, no RPC).

    python3 bench/namespace_micro.py                 # every figure, in µs
    python3 bench/namespace_micro.py --startup       # and start-up on 100,000 files
    python3 bench/namespace_micro.py --profile       # cProfile of 5,000 READs
    python3 bench/namespace_micro.py --storage DIR   # reuse a tree made earlier
    python3 -m cProfile -s tottime bench/namespace_micro.py --storage DIR --reads 5000

The storage is the demo's (``recovery-fs demo``) plus ``big/``, a folder of
10,000 empty files and one SmartMotion link, made once in ``--storage``
(default: a temporary folder).  Each figure calls the namespace as the
server does for one NFS call:

==================  ======================================================
figure              calls
==================  ======================================================
getattr             ``getattr(path)`` (GETATTR, LOOKUP, and each call's
                    post-op attributes), the path already looked up
read                ``getattr(path)``, then ``open(path)``, ``runs(offset,
                    4096)`` and close: one READ of 4 KiB
lookup-in-10k       ``getattr(("big", name))``, names in turn
lookup, expired     the same, each answer past rule 8's ttl (nothing changed)
readdir-10k         ``readdir(("big",))`` again (must be the same object,
                    also once listed again after the ttl)
first readdir-10k   ``readdir(("big",))`` on a new namespace (the files'
                    inodes are in the kernel's cache, as on a running
                    server)
==================  ======================================================

Targets (the brief of the namespace speed work): getattr ≤ 5 µs, read ≤ 10 µs
(without the getattr: ``open`` + ``runs`` + close), lookup-in-10k ≤ 5 µs,
readdir-10k ≤ 50 µs, start-up < 1 s.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from merge.demo import make_demo
from merge.stack import build_stack

MERGED = ("latest", "web01", "web01-flat.vmdk")  # link -> merged -> link -> merged -> base
PATHS = {
    "plain": ("2026-11-20T0100", "web01", "web01.vmx"),
    "plain via symlink": ("latest", "web01", "web01.vmx"),
    "link (1 hop)": ("problems", "deep", "link-16"),
    "link (16 hops)": ("problems", "deep", "link-01"),
    "merged (1 level)": ("2026-11-21T0100", "web01", "web01-flat.vmdk"),
    "merged chain": MERGED,
    "directory": ("latest", "web01"),
}
BIG = 10_000


def make_storage(root: Path, startup: bool) -> None:
    if not (root / ".recovery-fs-demo").exists():
        make_demo(root)
    big = root / "big"
    if not big.exists():
        tmp = root / ".big-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for i in range(BIG):
            os.close(os.open(tmp / f"file-{i:05d}.vmdk", os.O_CREAT | os.O_WRONLY, 0o644))
        (tmp / "a-link.json").write_text('{"smartmotion": 1, "target": "file-00000.vmdk"}')
        tmp.rename(big)
    if startup and not (root.parent / "many").exists():
        tmp = root.parent / ".many-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for d in range(100):
            folder = tmp / f"vm{d:03d}"
            folder.mkdir(parents=True)
            for i in range(1000):
                os.close(os.open(folder / f"f{i:04d}", os.O_CREAT | os.O_WRONLY, 0o644))
        tmp.rename(root.parent / "many")


def per_call(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``n`` calls, in µs per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def expired_lookup_us(root: Path, names: list[str], rounds: int = 3) -> float:
    """µs of a ``getattr`` in ``big/`` whose kept answer expired (rule 8's ttl), nothing changed.

    A clock moved by hand: every name is looked up once, then the clock is
    moved past the ttl and each is looked up again (the best of ``rounds``).
    """
    now = [0.0]
    stack = build_stack(str(root), clock=lambda: now[0])
    ns = stack.top
    ns.readdir(("big",))
    for name in names:
        ns.getattr(("big", name))
    best = float("inf")
    for _ in range(rounds):
        now[0] += 1.5
        t0 = time.process_time()
        for name in names:
            ns.getattr(("big", name))
        best = min(best, (time.process_time() - t0) / len(names))
    stack.close()
    return best * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--storage", type=Path, help="where the trees are (made if missing)")
    ap.add_argument("--startup", action="store_true", help="also start-up on 100,000 files")
    ap.add_argument("--profile", action="store_true", help="cProfile 5,000 READs of 4 KiB")
    ap.add_argument(
        "--reads", type=int, metavar="N", help="only N READs of 4 KiB (for python3 -m cProfile)"
    )
    args = ap.parse_args()
    scratch = None
    if args.storage is None:
        scratch = tempfile.mkdtemp(prefix="ns-micro-")
        args.storage = Path(scratch) / "storage"
    root = args.storage.resolve()
    root.mkdir(parents=True, exist_ok=True)
    make_storage(root, args.startup)
    try:
        run(root, args)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch)
    return 0


def run(root: Path, args: argparse.Namespace) -> None:
    stack = build_stack(str(root))
    ns = stack.top
    rnd = random.Random(1)
    if args.reads:
        size = ns.getattr(MERGED).size
        t0 = time.perf_counter()
        for _ in range(args.reads):
            ns.getattr(MERGED)
            with ns.open(MERGED) as r:
                r.runs(rnd.randrange(0, size - 4096) & ~4095, 4096)
        print(f"{args.reads} READs: {(time.perf_counter() - t0) / args.reads * 1e6:.2f} µs each")
        stack.close()
        return

    def show(what: str, us: float, target: float | None = None) -> None:
        mark = "" if target is None else ("  ok" if us <= target else f"  > {target:g}")
        print(f"{what:34s} {us:10.2f} µs{mark}")

    for what, path in PATHS.items():
        ns.getattr(path)
        show(f"getattr {what}", per_call(lambda p=path: ns.getattr(p), 20_000), 5)

    size = ns.getattr(MERGED).size
    offsets = [rnd.randrange(0, size - 4096) & ~4095 for _ in range(1024)]
    it = iter(range(1 << 62))

    def open_runs(path=MERGED) -> None:
        with ns.open(path) as r:
            r.runs(offsets[next(it) & 1023], 4096)

    def read(path=MERGED) -> None:
        ns.getattr(path)
        open_runs(path)

    open_runs()
    show("open+runs+close merged chain", per_call(open_runs, 20_000), 10)
    show("READ (getattr+open+runs) merged", per_call(read, 20_000))
    plain = PATHS["plain"]
    show("READ (getattr+open+runs) plain", per_call(lambda: read(plain), 20_000))

    names = [f"file-{i:05d}.vmdk" for i in range(BIG)]
    t0 = time.perf_counter()
    first = ns.readdir(("big",))
    cold = time.perf_counter() - t0
    for name in names:
        ns.getattr(("big", name))
    k = iter(range(1 << 62))
    lookup = lambda: ns.getattr(("big", names[next(k) % BIG]))  # noqa: E731
    show("getattr lookup-in-10k", per_call(lookup, 20_000), 5)
    again = ns.readdir(("big",))
    show("readdir-10k cached", per_call(lambda: ns.readdir(("big",)), 2_000), 50)
    time.sleep(1.1)  # past the ttl: listed again, nothing changed
    t0 = time.perf_counter()
    later = ns.readdir(("big",))
    show("readdir-10k after the ttl (rescan)", (time.perf_counter() - t0) * 1e6)
    same = again is first and later is first
    print(f"{'  same object while unchanged':34s} {same!s:>10}")
    colds = []
    for _ in range(5):
        s2 = build_stack(str(root))
        t0 = time.perf_counter()
        s2.top.readdir(("big",))
        colds.append(time.perf_counter() - t0)
        s2.close()
    show("first readdir-10k (best of 5)", min(colds) * 1e6)
    print(f"{'  (first of this process)':34s} {cold * 1e6:10.2f} µs")

    show("getattr lookup-in-10k, answer expired", expired_lookup_us(root, names))

    if args.startup:
        many = root.parent / "many"
        t0 = time.perf_counter()
        s3 = build_stack(str(many))
        s3.top.readdir(())
        s3.top.getattr(("vm042", "f0042"))
        show("start-up 100,000 files", (time.perf_counter() - t0) * 1e6, 1e6)
        s3.close()

    if args.profile:
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(5000):
            read()
        prof.disable()
        print(f"\n5,000 READs under cProfile: {time.perf_counter() - t0:.3f} s")
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    stack.close()


if __name__ == "__main__":
    sys.exit(main())
