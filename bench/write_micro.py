#!/usr/bin/env python3
"""What a session WRITE costs the server in Python: CPU per call, in-process, no socket.

    .venv/bin/python bench/write_micro.py                       # every figure
    .venv/bin/python bench/write_micro.py --only rpc_4k --profile

A session over an in-memory base (one 64 MiB file), its overlay in a
folder on the real disk (``--dir``, default ``.cache/write-micro``: fsync
costs what it costs there).  Figures, each the median of ``--repeat`` passes:

* ``ns_4k``:  ``--threads`` threads (16: the benchmark's calls in flight)
  each making random 4 KiB writes through ``SessionNamespace.write``;
* ``rpc_4k``: the same as encoded WRITE3 calls (FILE_SYNC, AUTH_SYS)
  through ``Dispatcher.dispatch``, as the server's worker threads call it;
* ``rpc_1m``: sequential 1 MiB WRITEs, 4 threads, through the dispatcher;
* ``srv_4k``: the server's shape: one *loop* thread dispatching each call
  inline (``inline=True``) while fewer than ``--threads`` are in flight,
  handing what raises WouldBlock to 8 *worker* threads, a deferred reply
  (``Reply.later``) counted in flight until it resolves (on the store's
  committer thread).  The other figures wait for a deferred reply in the
  calling thread (``nfsd.rpc.settle``), as a client would.

CPU is the process's (``getrusage``, user + system: every thread, the group
commit's leaders included) divided by the calls; wall time and the
store's groups are printed beside it.  The machine is shared: compare
CPU, not wall time, and alternate runs before and after a change.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import queue
import random
import resource
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nfsd.rpc import WouldBlock  # noqa: E402
from tests.proto.calls import call  # noqa: E402
from tests.proto.fakens import FakeNamespace  # noqa: E402
from tests.proto.sessionclient import SessionCaller  # noqa: E402
from xdr import nfs3  # noqa: E402
from xdr.nfs3 import NFS3Packer  # noqa: E402

DISK = 64 << 20
PEER = "127.0.0.1:40123"


def setup(folder: Path) -> tuple[SessionCaller, nfs3.nfs_fh3, int]:
    shutil.rmtree(folder, ignore_errors=True)
    base = FakeNamespace({("vm",): None, ("vm", "disk-flat.vmdk"): bytes(DISK)})
    c = SessionCaller(base, folder / "state")
    c.start("s1", {"web01": ("vm",)})
    root = c.session_root("s1")
    d = c.lookup(root, b"web01").resok.object
    fh = c.lookup(d, b"disk-flat.vmdk").resok.object
    fid = c.getattr(fh).resok.obj_attributes.fileid
    return c, fh, fid


def in_threads(
    work: list[list[Callable[[], object]]], profiles: list[cProfile.Profile] | None = None
) -> tuple[float, float, float]:
    """Run each list in its own thread; (process CPU s, of which system s, wall s);
    each thread profiled into ``profiles`` when given."""
    start = threading.Barrier(len(work) + 1)

    def body(items: list[Callable[[], object]]) -> None:
        prof = None
        if profiles is not None:
            prof = cProfile.Profile(time.thread_time)  # CPU, not waits
            profiles.append(prof)
        start.wait()
        if prof is not None:
            prof.enable()
        for f in items:
            f()
        if prof is not None:
            prof.disable()

    ts = [threading.Thread(target=body, args=(w,)) for w in work]
    for t in ts:
        t.start()
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    start.wait()
    for t in ts:
        t.join()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    sys_s = r1.ru_stime - r0.ru_stime
    return r1.ru_utime - r0.ru_utime + sys_s, sys_s, time.monotonic() - w0


def write_record(fh: nfs3.nfs_fh3, offset: int, data: bytes, xid: int) -> bytes:
    p = NFS3Packer()
    p.pack_WRITE3args(nfs3.WRITE3args(fh, offset, len(data), nfs3.FILE_SYNC, data))
    return call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_WRITE, p.get_buffer(), xid=xid)


def figures(c: SessionCaller, fh: nfs3.nfs_fh3, fid: int, args: argparse.Namespace):
    rnd = random.Random(7)
    session = c.manager.by_key(c.manager.decode(fh.data)[0])
    ns = session.ns
    block = bytes(rnd.getrandbits(8) for _ in range(4096))
    xid = [rnd.getrandbits(31)]

    def dispatch(rec: bytes) -> Callable[[], object]:
        def f() -> None:
            reply = c.dispatcher.dispatch(rec, PEER, "tcp")
            assert reply is not None
            later = getattr(reply, "later", None)  # none before deferred replies
            if later is not None:
                reply = later.wait(60)
                assert reply is not None
            reply.free()

        return f

    def ns_4k() -> list[list[Callable[[], object]]]:
        offs = [rnd.randrange(DISK // 4096) * 4096 for _ in range(args.calls)]
        per = [offs[i :: args.threads] for i in range(args.threads)]
        return [[lambda o=o: ns.write(fid, o, block) for o in p] for p in per]

    def rpc_4k() -> list[list[Callable[[], object]]]:
        out = []
        for _ in range(args.threads):
            recs = []
            for _i in range(args.calls // args.threads):
                xid[0] += 1
                recs.append(write_record(fh, rnd.randrange(DISK // 4096) * 4096, block, xid[0]))
            out.append([dispatch(r) for r in recs])
        return out

    mib = bytes(1 << 20)
    pos = [0]

    def rpc_1m() -> list[list[Callable[[], object]]]:
        out: list[list[Callable[[], object]]] = [[] for _ in range(4)]
        for i in range(args.calls_1m):
            xid[0] += 1
            out[i % 4].append(dispatch(write_record(fh, pos[0] % DISK, mib, xid[0])))
            pos[0] += 1 << 20
        return out

    def srv_4k() -> list[list[Callable[[], object]]]:
        recs = []
        for _i in range(args.calls):
            xid[0] += 1
            recs.append(write_record(fh, rnd.randrange(DISK // 4096) * 4096, block, xid[0]))
        return [[partial(served, c, recs, args.threads)]]

    return {"ns_4k": (ns_4k, args.calls), "rpc_4k": (rpc_4k, args.calls),
            "rpc_1m": (rpc_1m, args.calls_1m), "srv_4k": (srv_4k, args.calls)}  # fmt: skip


def served(c: SessionCaller, recs: list[bytes], inflight: int, workers: int = 8) -> None:
    """``recs`` served as the server does (see ``srv_4k``), on this thread as its loop."""
    slots = threading.Semaphore(inflight)
    work: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def complete(reply: object) -> None:
        assert reply is not None
        later = getattr(reply, "later", None)
        if later is None:
            reply.free()  # type: ignore[attr-defined]
            slots.release()
            return

        def sent(done: object) -> None:
            done.result().free()  # type: ignore[attr-defined]
            slots.release()

        later.then(sent)

    def worker() -> None:
        while (rec := work.get()) is not None:
            complete(c.dispatcher.dispatch(rec, PEER, "tcp"))

    ts = [threading.Thread(target=worker) for _ in range(workers)]
    for t in ts:
        t.start()
    for rec in recs:
        slots.acquire()
        try:
            reply = c.dispatcher.dispatch(rec, PEER, "tcp", True)
        except WouldBlock:
            work.put(rec)
            continue
        complete(reply)
    for _ in range(inflight):
        slots.acquire()
    for _ in ts:
        work.put(None)
    for t in ts:
        t.join()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", type=Path, default=REPO / ".cache" / "write-micro")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--calls", type=int, default=3200, help="4 KiB writes a pass")
    ap.add_argument("--calls-1m", type=int, default=128, help="1 MiB writes a pass")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", nargs="*", help="figures to measure (default: all)")
    ap.add_argument("--profile", action="store_true", help="cProfile one pass of each figure")
    ap.add_argument("--sort", default="tottime", help="the profile's order (pstats key)")
    args = ap.parse_args()
    c, fh, fid = setup(args.dir)
    store = c.manager.by_key(c.manager.decode(fh.data)[0]).ns.store
    try:
        for name, (make, n) in figures(c, fh, fid, args).items():
            if args.only and name not in args.only:
                continue
            in_threads(make())  # warm up: the log, the caches
            if args.profile:
                profs: list[cProfile.Profile] = []
                in_threads(make(), profs)
                pstats.Stats(*profs).sort_stats(args.sort).print_stats(45)
                continue
            cpus, syss, walls, groups = [], [], [], []
            for _ in range(args.repeat):
                work = make()
                g0 = store.stats.groups
                cpu, sys_s, wall = in_threads(work)
                cpus.append(cpu / n * 1e6)
                syss.append(sys_s / n * 1e6)
                walls.append(wall / n * 1e6)
                groups.append((store.stats.groups - g0) / n)
            runs = " ".join(f"{x:.0f}" for x in cpus)
            print(
                f"{name:8s} CPU {statistics.median(cpus):8.1f} µs a call (runs {runs}; "
                f"system {statistics.median(syss):.0f}), wall {statistics.median(walls):.0f} µs, "
                f"{statistics.median(groups):.3f} groups a call",
                flush=True,
            )
    finally:
        c.manager.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
