#!/usr/bin/env python3
"""A fragmented session file read by one process while another writes it.

    .venv/bin/python bench/foreign_reads.py --pieces 200000

Two stores on one session directory, as two worker processes (or a server
and ``instant export``) have: store A makes random 4 KiB writes to one file
(a VM's), store B reads it.  Every ``--every`` writes, B's GETATTR
(``Store.size``) and 1 MiB READ (``Store.runs``) just after one of A's
commits are timed: the cost of following a map another process changed
(``instant/store.py``'s notes, "Reading").  The session's folder is made
under ``--dir`` (default ``.cache/foreign-reads``) and removed at the end.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from instant.store import Store  # noqa: E402
from merge.namespace import Run  # noqa: E402

BASE = 1 << 34  # a 16 GiB disk
BLOCK = bytes(4096)


def no_base(offset: int, count: int) -> list[Run]:
    return []


def burst(a: Store, rnd: random.Random, k: int) -> None:
    """``k`` random 4 KiB writes in flight at once; back when all are durable."""
    left, ended = [k], threading.Event()

    def done(_: object) -> None:
        left[0] -= 1
        if not left[0]:
            ended.set()

    for _ in range(k):
        a.write_async(1, rnd.randrange(BASE // 4096) * 4096, BLOCK, BASE, done=done)
    ended.wait(600)


@contextmanager
def two_stores(folder: Path) -> Iterator[tuple[Store, Store]]:
    """Two stores on one new session folder, as two processes; the folder removed after."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    a, b = Store(folder, clean=False), Store(folder, clean=False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()
        shutil.rmtree(folder, ignore_errors=True)


def parser(doc: str | None, folder: str) -> argparse.ArgumentParser:
    """A bench's arguments: its ``doc`` as the help, ``--dir`` (default ``.cache/folder``)."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", type=Path, default=REPO / ".cache" / folder)
    return ap


def main() -> int:
    ap = parser(__doc__, "foreign-reads")
    ap.add_argument("--pieces", type=int, default=200_000, help="random writes in all")
    ap.add_argument("--every", type=int, default=50_000, help="writes between two timings")
    args = ap.parse_args()
    rnd = random.Random(1)
    with two_stores(args.dir) as (a, b):
        written = 0
        while written < args.pieces:
            burst(a, rnd, 2000)
            written += 2000
            if written % args.every and written < args.pieces:
                continue
            timings = []
            for _ in range(2):
                a.write(1, rnd.randrange(BASE // 4096) * 4096, BLOCK, BASE)
                t0 = time.perf_counter()
                b.size(1, BASE)
                t1 = time.perf_counter()
                b.runs(1, rnd.randrange(BASE // 4096) * 4096, 1 << 20, no_base, BASE)
                timings.append((t1 - t0, time.perf_counter() - t1))
            (s1, r1), (s2, r2) = timings
            print(
                f"{written:>9,} writes: B's GETATTR {s1 * 1e3:7.1f} ms and READ {r1 * 1e3:6.1f} ms"
                f" after A's commit; after the next {s2 * 1e3:7.1f} and {r2 * 1e3:6.1f} ms",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
