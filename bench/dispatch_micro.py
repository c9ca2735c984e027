#!/usr/bin/env python3
"""What one NFS call costs the server in Python: records through the dispatcher, in-process.

    .venv/bin/python bench/dispatch_micro.py --storage .cache/bench-data-short/storage
    .venv/bin/python bench/dispatch_micro.py --storage DIR --profile read_4k
    .venv/bin/python bench/dispatch_micro.py --storage DIR --listing [--profile x]

No socket and no client: each figure is the best of ``--repeat`` passes of
``--calls`` records (already encoded, AUTH_SYS, as libnfs sends them)
through ``Dispatcher.dispatch`` as the transport's loop calls it (``inline``
for the quick calls), the reply's buffer released.  This is the part of a
call the GIL serialises, so on one connection it caps the calls a second
(1 / µs per call); the benchmark (``bench/run``) measures the rest.  Used to
measure each hot-path change before and after on a busy machine: the
figures are CPU time of one thread, much steadier than a throughput.

``lookup_expired``: LOOKUPs of names whose kept answers are past rule 8's
ttl (the namespace's clock moved between passes), as a client looking up
random names of a large folder makes them.  ``--listing``: the server CPU
of whole READDIRPLUS listings of ``big/`` paged as ``nfs-ls`` pages them:
the first on a fresh namespace, a repeated one, and the first on a second
process that finds the listing another one shared (``merge.shared``) and
the READDIRPLUS entries that one encoded (``nfsd.programs.shared_encodings``),
and one 2.5 s and one 120 s after the last (the namespace's clock moved: the
benchmark's rounds, nothing changed meanwhile).
Each figure is the best and the median of ``--repeat``; with ``--freeze``,
``gc.freeze()`` once a namespace is built, as a worker does once started.

The storage is ``bench/run``'s (``plain/big.img``, ``vm/disk-flat.vmdk``
with its pancbt, ``big/`` of 10,000 entries).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from merge.stack import build_namespace  # noqa: E402
from nfsd.rpc import Dispatcher, WouldBlock  # noqa: E402
from tests.proto.calls import call, parse  # noqa: E402
from tests.proto.nfsclient import Caller  # noqa: E402
from xdr import nfs3  # noqa: E402
from xdr.nfs3 import NFS3Packer, NFS3Unpacker  # noqa: E402

PEER = "127.0.0.1:40123"


def records(caller: Caller, names: list[str]) -> dict[str, tuple[list[bytes], bool]]:
    """Encoded calls of each figure, and whether the loop serves them inline."""
    plain, merged = caller.walk("plain", "big.img"), caller.walk("vm", "disk-flat.vmdk")
    big = caller.walk("big")
    rnd = random.Random(7)
    size = caller.getattr(plain).resok.obj_attributes.size

    def encode(proc: int, pack: Callable[[NFS3Packer], None]) -> bytes:
        p = NFS3Packer()
        pack(p)
        return call(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer(), xid=rnd.getrandbits(32))

    def read(fh: nfs3.nfs_fh3, offset: int, count: int) -> bytes:
        return encode(
            nfs3.NFSPROC3_READ, lambda p: p.pack_READ3args(nfs3.READ3args(fh, offset, count))
        )

    n = 2000
    blocks = size // 4096
    mib = size // (1 << 20)
    return {
        "null": ([call(nfs3.NFS_PROGRAM, 3, 0)] * n, True),
        "getattr": (
            [encode(nfs3.NFSPROC3_GETATTR, lambda p: p.pack_GETATTR3args(nfs3.GETATTR3args(plain)))]
            * n,
            True,
        ),
        "access": (
            [
                encode(
                    nfs3.NFSPROC3_ACCESS,
                    lambda p: p.pack_ACCESS3args(nfs3.ACCESS3args(plain, 0x3F)),
                )
            ]
            * n,
            True,
        ),
        "lookup": (
            [
                encode(
                    nfs3.NFSPROC3_LOOKUP,
                    lambda p, nm=nm: p.pack_LOOKUP3args(
                        nfs3.LOOKUP3args(nfs3.diropargs3(big, nm.encode()))
                    ),
                )
                for nm in rnd.choices(names, k=n)
            ],
            True,
        ),
        "read_4k": ([read(plain, rnd.randrange(blocks) * 4096, 4096) for _ in range(n)], True),
        "read_1m_plain": ([read(plain, (i % mib) << 20, 1 << 20) for i in range(256)], False),
        "read_1m_merged": ([read(merged, (i % mib) << 20, 1 << 20) for i in range(256)], False),
    }


def run(dispatcher: Dispatcher, recs: list[bytes], inline: bool, alone: bool = False) -> float:
    """µs per call over one pass of ``recs`` (thread CPU time), inline first if asked as
    the loop does (``alone``: as the loop serving one connection)."""
    t0 = time.thread_time()
    for rec in recs:
        try:
            reply = dispatcher.dispatch(rec, PEER, "tcp", inline, alone=alone)
        except WouldBlock:  # not in the page cache: a worker serves it, as in the server
            reply = dispatcher.dispatch(rec, PEER, "tcp")
        if reply is None:
            raise SystemExit("a call got no reply")
        if reply.release:
            reply.release()
    return (time.thread_time() - t0) / len(recs) * 1e6


def lookup_expired_us(storage: Path, names: list[str], repeat: int) -> float:
    """µs of a LOOKUP in ``big/`` whose answer expired (rule 8's ttl), nothing changed.

    The namespace's clock is moved past the ttl before each pass over the
    names (each looked up once a pass): the case of a client looking up
    random names of a large folder faster than the ttl brings them back.
    """
    moved = [0.0]
    caller = Caller(build_namespace(str(storage), clock=lambda: time.monotonic() + moved[0]))
    big = caller.walk("big")
    recs = []
    for i, name in enumerate(names):
        p = NFS3Packer()
        p.pack_LOOKUP3args(nfs3.LOOKUP3args(nfs3.diropargs3(big, name.encode())))
        recs.append(call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_LOOKUP, p.get_buffer(), xid=i + 7))
    run(caller.dispatcher, recs, True)  # every answer kept, every handle made once
    best = float("inf")
    for _ in range(repeat):
        moved[0] += 1.5
        best = min(best, run(caller.dispatcher, recs, True))
    return best


def other_worker_ms(storage: Path) -> tuple[float, float]:
    """Server CPU (ms) of the first listing of ``big/`` in one process that shares its
    listings (``merge.shared``), then in a second one that finds it there."""
    with tempfile.TemporaryDirectory() as folder:
        first = Caller(build_namespace(str(storage), shared_listings=folder))
        started()
        a = _list_all(first, first.walk("big")) * 1e3
        other = Caller(build_namespace(str(storage), shared_listings=folder))
        started()
        return a, _list_all(other, other.walk("big")) * 1e3


def rounds_ms(storage: Path, later: float) -> float:
    """Server CPU (ms) of a listing of ``big/`` ``later`` seconds after the last one, as
    in the benchmark's rounds: nothing changed meanwhile (the namespace's clock moved
    on; its folder watch, ``merge.watch``, set by the listing before)."""
    moved = [0.0]
    caller = Caller(build_namespace(str(storage), clock=lambda: time.monotonic() + moved[0]))
    started()
    big = caller.walk("big")
    for _ in range(2):  # the first scan, then one watched
        _list_all(caller, big)
        moved[0] += 1.5
    moved[0] += later - 1.5
    return _list_all(caller, big) * 1e3


FREEZE = [False]  # --freeze


def started() -> None:
    """What a worker does once started (``nfsd.service.worker``), if ``--freeze``."""
    if FREEZE[0]:
        gc.freeze()


def listing_ms(storage: Path, repeated: int = 0, prof: cProfile.Profile | None = None) -> float:
    """Server CPU (ms) of one whole listing of ``big/`` by READDIRPLUS, as nfs-ls pages it.

    A fresh namespace each time: the first listing after start-up, the
    storage's inodes in the kernel's cache (as on a running server).  With
    ``repeated``, that many listings are made first and the next is timed.
    """
    caller = Caller(build_namespace(str(storage)))
    started()
    big = caller.walk("big")
    for _ in range(repeated):
        _list_all(caller, big)
    return _list_all(caller, big, prof) * 1e3


def _list_all(caller: Caller, fh: nfs3.nfs_fh3, prof: cProfile.Profile | None = None) -> float:
    """Seconds of thread CPU the dispatcher spent on one listing of ``fh`` (profiled if asked)."""
    cookie, verf, spent, xid = 0, b"\0" * 8, 0.0, 1
    while True:
        p = NFS3Packer()
        p.pack_READDIRPLUS3args(nfs3.READDIRPLUS3args(fh, cookie, verf, 8192, 32768))
        xid += 1
        rec = call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READDIRPLUS, p.get_buffer(), xid=xid)
        if prof is not None:
            prof.enable()
        t0 = time.thread_time()
        try:
            reply = caller.dispatcher.dispatch(rec, PEER, "tcp", True)
        except WouldBlock:
            reply = caller.dispatcher.dispatch(rec, PEER, "tcp")
        spent += time.thread_time() - t0
        if prof is not None:
            prof.disable()
        assert reply is not None
        u = NFS3Unpacker(parse(reply.parts).body)
        res = u.unpack_READDIRPLUS3res()
        assert res.status == nfs3.NFS3_OK, res.status
        verf = res.resok.cookieverf
        cookie = res.resok.reply.entries[-1].cookie
        if res.resok.reply.eof:
            return spent


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--storage", required=True, help="bench/run's storage folder")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", nargs="*", help="figures to measure (default: all)")
    ap.add_argument("--profile", help="cProfile this figure instead")
    ap.add_argument(
        "--listing", action="store_true", help="only the listings of big/ (first, repeated)"
    )
    ap.add_argument(
        "--freeze", action="store_true", help="gc.freeze() once a namespace is built (a worker's)"
    )
    args = ap.parse_args()
    FREEZE[0] = args.freeze
    storage = Path(args.storage)
    if args.listing:
        if args.profile:
            prof = cProfile.Profile()  # the server's part only
            for _ in range(args.repeat):
                listing_ms(storage, 0, prof)
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
            return 0
        first = [listing_ms(storage) for _ in range(args.repeat)]
        again = [listing_ms(storage, 1) for _ in range(args.repeat)]
        print(f"listing first    {min(first):8.1f} ms (best of {args.repeat}; all {first})")
        print(f"listing repeated {min(again):8.1f} ms")
        pairs = [other_worker_ms(storage) for _ in range(args.repeat)]
        print(f"listing first, sharing its listings   {min(p[0] for p in pairs):8.1f} ms")
        print(f"listing first on another worker       {min(p[1] for p in pairs):8.1f} ms")
        soon = [rounds_ms(storage, 2.5) for _ in range(args.repeat)]
        late = [rounds_ms(storage, 120.0) for _ in range(args.repeat)]
        for label, ms in (
            ("first", first),
            ("repeated", again),
            ("first, sharing", [p[0] for p in pairs]),
            ("first on another worker", [p[1] for p in pairs]),
            ("2.5 s after the last", soon),
            ("120 s after the last", late),
        ):
            print(f"median: listing {label:24s} {statistics.median(ms):8.1f} ms")
        return 0
    caller = Caller(build_namespace(str(storage)))
    names = [p.name for p in (storage / "big").iterdir()][:2000]
    recs = records(caller, names)
    if args.profile:
        todo, inline = recs[args.profile]
        prof = cProfile.Profile()
        prof.runcall(lambda: [run(caller.dispatcher, todo, inline) for _ in range(args.repeat)])
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return 0
    if not args.only or "lookup_expired" in args.only:
        us = lookup_expired_us(storage, names, args.repeat)
        print(f"{'lookup_expired':16s} {us:8.1f} µs a call")
    for key, (todo, inline) in recs.items():
        if args.only and key not in args.only:
            continue
        run(caller.dispatcher, todo[:50], inline)  # warm the caches
        best = min(run(caller.dispatcher, todo, inline) for _ in range(args.repeat))
        print(f"{key:16s} {best:8.1f} µs a call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
