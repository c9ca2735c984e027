#!/usr/bin/env python3
"""One fragmented session file written by two processes in turns.

    .venv/bin/python bench/foreign_writes.py --pieces 2000 10000 40000 100000

Two stores on one session directory, as two worker processes serving one
client's ``nconnect`` connections have: store A first makes random 4 KiB
writes to one file of a 16 GiB disk until its map holds ``--pieces``
pieces, then A and B take turns, 16 writes in flight each (a group), for
``--seconds`` or ``--writes``.  Each store's group follows a commit of the
other's: the cost of changing a map another process changed
(``instant/store.py``'s notes, "Writing a large file").  The session's
folder is made under ``--dir`` (default ``.cache/foreign-writes``) and
removed at the end.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from foreign_reads import burst, parser, two_stores  # noqa: E402  (A's random 4 KiB writes)


def main() -> int:
    ap = parser(__doc__, "foreign-writes")
    ap.add_argument("--pieces", type=int, nargs="+", default=[2000, 10_000, 40_000, 100_000])
    ap.add_argument("--seconds", type=float, default=3.0, help="of turns, at each size")
    ap.add_argument("--writes", type=int, default=4000, help="at most, at each size")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
