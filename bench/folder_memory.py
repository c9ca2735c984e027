#!/usr/bin/env python3
"""What one worker holds for a big folder both looked up and listed, in-process.

    .venv/bin/python bench/folder_memory.py --storage .cache/bench-data-short/storage
    .venv/bin/python bench/folder_memory.py --storage DIR --top 15 [--listing-only]

The bench's order (``bench/run``): every name of ``big/`` looked up through
the dispatcher (LOOKUP, as ``nfsload --op lookup`` sends them), then the
folder listed by READDIRPLUS as ``nfs-ls`` pages it; three rounds, the
namespace's clock moved past rule 8's ttl between them (each round finds
every answer expired, as a client coming back after a second does).  The
figures are what is still allocated after each round (``tracemalloc``,
bytes per name of the folder), the process's VmRSS growth, and the thread
CPU of each round's LOOKUPs and listing (meaningful with ``--no-trace``); ``--top``
adds the largest holders by source line after the last round.  Used to
measure a cut in the namespace caches before and after, in a fresh process
each run.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.dispatch_micro import _list_all as list_all  # noqa: E402
from bench.dispatch_micro import run  # noqa: E402
from merge.stack import build_namespace  # noqa: E402
from tests.proto.calls import call  # noqa: E402
from tests.proto.nfsclient import Caller  # noqa: E402
from xdr import nfs3  # noqa: E402
from xdr.nfs3 import NFS3Packer  # noqa: E402


def vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def lookups(big: nfs3.nfs_fh3, names: list[str]) -> list[bytes]:
    recs = []
    for i, name in enumerate(names):
        p = NFS3Packer()
        p.pack_LOOKUP3args(nfs3.LOOKUP3args(nfs3.diropargs3(big, name.encode())))
        recs.append(call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_LOOKUP, p.get_buffer(), xid=i + 7))
    return recs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("--listing-only", action="store_true", help="no LOOKUPs")
    ap.add_argument("--no-trace", action="store_true", help="VmRSS only (tracing costs memory)")
    args = ap.parse_args()
    names = sorted(p.name for p in (args.storage / "big").iterdir())
    moved = [0.0]
    caller = Caller(build_namespace(str(args.storage), clock=lambda: time.monotonic() + moved[0]))
    big = caller.walk("big")
    recs = [] if args.listing_only else lookups(big, names)
    gc.collect()
    gc.freeze()  # as a worker once started
    if not args.no_trace:
        tracemalloc.start(1)
    base = tracemalloc.get_traced_memory()[0] if not args.no_trace else 0
    rss0 = vm_rss_kib()
    for rnd in range(args.rounds):
        lookup_us = run(caller.dispatcher, recs, True) if recs else 0.0
        listing_s = list_all(caller, big)
        gc.collect()
        held = (tracemalloc.get_traced_memory()[0] - base) if not args.no_trace else 0
        print(
            f"round {rnd + 1}: traced {held / 2**20:6.2f} MiB ({held / len(names):6.0f} B a name)"
            f"  VmRSS +{(vm_rss_kib() - rss0) / 1024:6.2f} MiB"
            f"  CPU: LOOKUP {lookup_us:5.1f} us, listing {listing_s * 1e3:6.1f} ms"
        )
        moved[0] += 1.5
    if args.top and not args.no_trace:
        snap = tracemalloc.take_snapshot()
        for stat in snap.statistics("lineno")[: args.top]:
            print(f"  {stat.size / len(names):7.0f} B/name  {stat.count:7d}  {stat.traceback}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
