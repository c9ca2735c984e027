#!/usr/bin/env python3
"""What a session's READ costs the server in Python, against the read-only export's.

    .venv/bin/python bench/session_micro.py --storage .cache/bench-data-short/storage
    .venv/bin/python bench/session_micro.py --storage DIR --profile ses_read_4k_unwritten

In-process, no socket (as ``bench/dispatch_micro.py``): a session of the
storage's ``vm`` folder is made in a temporary state directory, its merged
image's first ``--rewrite`` MiB rewritten (1 MiB writes), then each figure
is the median of ``--repeat`` passes of thread CPU µs per call, the figures
taking turns (so that their ratios, printed against the first, hold on a
busy machine):

=========================  =================================================
figure                     calls
=========================  =================================================
ro_read_1m / ro_read_4k    READ of the read-only export's merged image,
                           through the dispatcher (the bytes past the
                           rewritten part)
ses_read_1m_unwritten      the same bytes through the session
ses_read_1m_rewritten      READ of the rewritten part through the session
ses_read_4k_*              the same, 4 KiB at random 4 KiB offsets
ro_getattr / ses_getattr   GETATTR of the image
ses_lookup, ses_access     LOOKUP of the image in its folder, ACCESS of it
*_read_*_alone             the READs as the loop serving one connection
                           alone serves them (``CallContext.alone``: inline)
ns_ro_read_4k              the namespace alone: ``getattr``, ``open``,
ns_ses_read_4k_*           ``runs(offset, 4096)``, close (no bytes copied)
=========================  =================================================

The figures are CPU time of the calling thread, steadier than a throughput
on a busy machine; alternate before/after runs and compare medians.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.dispatch_micro import run  # noqa: E402
from merge.stack import build_namespace  # noqa: E402
from tests.proto.calls import call  # noqa: E402
from tests.proto.sessionclient import SessionCaller  # noqa: E402
from xdr import nfs3  # noqa: E402
from xdr.nfs3 import NFS3Packer  # noqa: E402

PEER = "127.0.0.1:40123"
MIB = 1 << 20


def _encode(rnd: random.Random, proc: int, pack: Callable[[NFS3Packer], None]) -> bytes:
    p = NFS3Packer()
    pack(p)
    return call(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer(), xid=rnd.getrandbits(32))


def _reads(rnd: random.Random, fh: nfs3.nfs_fh3, offsets: list[int], count: int) -> list[bytes]:
    return [
        _encode(
            rnd, nfs3.NFSPROC3_READ, lambda p, o=o: p.pack_READ3args(nfs3.READ3args(fh, o, count))
        )
        for o in offsets
    ]


def run_ns(read: Callable[[int], None], offsets: list[int]) -> float:
    t0 = time.thread_time()
    for o in offsets:
        read(o)
    return (time.thread_time() - t0) / len(offsets) * 1e6


def opcodes(fn: Callable[[], float]) -> Counter[str]:
    """The Python opcodes one pass of ``fn`` runs, by function (``sys.settrace``):
    a count a busy machine does not move, unlike a time; it leaves out what C
    does (system calls, sqlite, the extensions)."""
    counts: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: object) -> Callable[..., object]:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            where = "/".join(code.co_filename.rsplit("/", 2)[-2:])
            counts[f"{where}:{code.co_firstlineno} {code.co_name}"] += 1
        return trace

    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(None)
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--storage", required=True, help="bench/run's storage folder")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--rewrite", type=int, default=16, help="MiB rewritten at the start")
    ap.add_argument("--only", nargs="*", help="figures to measure (default: all)")
    ap.add_argument("--profile", help="cProfile this figure instead")
    ap.add_argument("--top", type=int, default=40, help="functions listed by --opcodes")
    ap.add_argument(
        "--opcodes", help="count the Python opcodes a call of this figure runs, by function"
    )
    args = ap.parse_args()
    base = build_namespace(str(Path(args.storage)))
    rnd = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="session-micro-") as tmp:
        c = SessionCaller(base, Path(tmp) / "state", peer=PEER)
        c.start("m", {"vm": ("vm",)})
        ro = c.walk("vm", "disk-flat.vmdk")
        ses_dir = c.lookup(c.session_root("m"), b"vm").resok.object
        ses = c.lookup(ses_dir, b"disk-flat.vmdk").resok.object
        size = c.getattr(ro).resok.obj_attributes.size
        s = next(iter(c.manager._by_key.values()))
        fid = s.ns.resolve(("vm", "disk-flat.vmdk"))
        pattern = bytes(rnd.getrandbits(8) for _ in range(4096)) * 256
        for i in range(args.rewrite):
            s.ns.write(fid, i * MIB, pattern)
        lo = args.rewrite * MIB
        mibs = [lo + (i % ((size - lo) // MIB)) * MIB for i in range(128)]
        rw_mibs = [(i % args.rewrite) * MIB for i in range(128)]
        blocks = [lo + rnd.randrange((size - lo) // 4096) * 4096 for _ in range(2000)]
        rw_blocks = [rnd.randrange(lo // 4096) * 4096 for _ in range(2000)]

        def get(fh: nfs3.nfs_fh3) -> list[bytes]:
            args = nfs3.GETATTR3args(fh)
            return [_encode(rnd, nfs3.NFSPROC3_GETATTR, lambda p: p.pack_GETATTR3args(args))] * 2000

        figures: dict[str, Callable[[], float]] = {}
        calls: dict[str, int] = {}  # a pass's calls, by figure
        for name, recs in {
            "ro_read_1m": _reads(rnd, ro, mibs, MIB),
            "ses_read_1m_unwritten": _reads(rnd, ses, mibs, MIB),
            "ses_read_1m_rewritten": _reads(rnd, ses, rw_mibs, MIB),
            "ro_read_4k": _reads(rnd, ro, blocks, 4096),
            "ses_read_4k_unwritten": _reads(rnd, ses, blocks, 4096),
            "ses_read_4k_rewritten": _reads(rnd, ses, rw_blocks, 4096),
            "ro_getattr": get(ro),
            "ses_getattr": get(ses),
            "ses_lookup": [
                _encode(
                    rnd,
                    nfs3.NFSPROC3_LOOKUP,
                    lambda p: p.pack_LOOKUP3args(
                        nfs3.LOOKUP3args(nfs3.diropargs3(ses_dir, b"disk-flat.vmdk"))
                    ),
                )
            ]
            * 2000,
            "ses_access": [
                _encode(
                    rnd,
                    nfs3.NFSPROC3_ACCESS,
                    lambda p: p.pack_ACCESS3args(nfs3.ACCESS3args(ses, 0x3F)),
                )
            ]
            * 2000,
        }.items():
            figures[name] = lambda recs=recs: run(c.dispatcher, recs, True)
            calls[name] = len(recs)
            if "_read_" in name:
                figures[name + "_alone"] = lambda recs=recs: run(
                    c.dispatcher, recs, True, alone=True
                )
                calls[name + "_alone"] = len(recs)
        path = ("vm", "disk-flat.vmdk")

        def ro_read(o: int) -> None:
            base.getattr(path)
            with base.open(path) as r:
                r.runs(o, 4096)

        def ses_read(o: int) -> None:
            s.ns.getattr(fid)
            with s.ns.open(fid) as r:
                r.runs(o, 4096)

        figures["ns_ro_read_4k"] = lambda: run_ns(ro_read, blocks)
        figures["ns_ses_read_4k_unwritten"] = lambda: run_ns(ses_read, blocks)
        figures["ns_ses_read_4k_rewritten"] = lambda: run_ns(ses_read, rw_blocks)
        calls.update(dict.fromkeys(("ns_ro_read_4k", "ns_ses_read_4k_unwritten"), len(blocks)))
        calls["ns_ses_read_4k_rewritten"] = len(rw_blocks)
        if args.opcodes:
            fn = figures[args.opcodes]
            fn()  # warm
            per_pass = calls[args.opcodes]
            counts = opcodes(fn)
            total = sum(counts.values())
            print(f"{args.opcodes}: {total / per_pass:.0f} opcodes a call")
            for where, n in counts.most_common(args.top):
                print(f"{n / per_pass:8.1f}  {where}")
            c.manager.close()
            return 0
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(lambda: [figures[args.profile]() for _ in range(args.repeat)])
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
            c.manager.close()
            return 0
        names = [n for n in figures if not args.only or n in args.only]
        for name in names:
            figures[name]()  # warm
        runs: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.repeat):  # in turns: a busy machine weighs on each alike
            for name in names:
                runs[name].append(figures[name]())
        first = statistics.median(runs[names[0]])
        for name in names:
            mid = statistics.median(runs[name])
            print(
                f"{name:26s} {mid:8.1f} µs a call (best {min(runs[name]):.1f};"
                f" {mid / first:.3f}× the first)"
            )
        c.manager.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
