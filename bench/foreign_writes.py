#!/usr/bin/env python3
"""One fragmented session file written by two processes in turns.

    .venv/bin/python bench/foreign_writes.py --pieces 2000 10000 40000 100000

Two stores on one session directory, as two worker processes serving one
client's ``nconnect`` connections have: store A first makes random 4 KiB
writes to one file of a 16 GiB disk until its map holds ``--pieces``
pieces, then A and B take turns, 16 writes in flight each (a group), for
``--seconds`` or ``--writes``.  Each store's group follows a commit of the
other's: the cost of changing a map another process changed
(``instant/store.py``'s notes, "Writing a large file").  With ``--alone
SECONDS``, then A and B each write alone, one after the other, in two
halves of that time (a client that moved to another worker, or a restart:
a partial entry, swept whole meanwhile), with the process's CPU a write
(``getrusage``, steadier than the rate on a shared machine).  The session's
folder is made under ``--dir`` (default ``.cache/foreign-writes``) and
removed at the end.
"""

from __future__ import annotations

import random
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from foreign_reads import burst, parser, two_stores  # noqa: E402  (A's random 4 KiB writes)

from instant.store import Store  # noqa: E402


def main() -> int:
    ap = parser(__doc__, "foreign-writes")
    ap.add_argument("--pieces", type=int, nargs="+", default=[2000, 10_000, 40_000, 100_000])
    ap.add_argument("--seconds", type=float, default=3.0, help="of turns, at each size")
    ap.add_argument("--writes", type=int, default=4000, help="at most, at each size")
    ap.add_argument("--alone", type=float, default=0.0, help="seconds of each store alone")
    args = ap.parse_args()
    rnd = random.Random(1)
    with two_stores(args.dir) as (a, b):
        written = 0
        for target in sorted(args.pieces):
            while written < target:
                burst(a, rnd, 2000)
                written += 2000
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < args.seconds and n < args.writes:
                burst(a, rnd, 16)
                burst(b, rnd, 16)
                n += 32
            dt = time.perf_counter() - t0
            written += n
            print(f"{target:>9,} pieces: A and B in turns, 16 writes each: {n / dt:8,.0f} writes/s")
            for name, s in (("B", b), ("A", a)) if args.alone else ():
                for half in ("first", "second"):
                    rate, cpu, n = alone(s, rnd, args.alone / 2)
                    written += n
                    print(
                        f"{target:>9,} pieces: {name} alone, {half} half: {rate:8,.0f} writes/s,"
                        f" {cpu:6.1f} µs of CPU a write"
                    )
    return 0


def alone(s: Store, rnd: random.Random, seconds: float) -> tuple[float, float, int]:
    """``s`` writing alone, 16 at a time, for ``seconds``: rate, CPU µs a write, writes."""
    r0, t0, n = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        burst(s, rnd, 16)
        n += 16
    dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return n / dt, cpu / n * 1e6, n


if __name__ == "__main__":
    sys.exit(main())
