#!/usr/bin/env python3
"""What a WRITE's map work costs as a file's map grows: ``instant.rangemap`` alone.

    .venv/bin/python bench/rangemap_micro.py
    .venv/bin/python bench/rangemap_micro.py --against /tmp/old/instant/rangemap.py

A map of N pieces (random 4 KiB pieces of a disk four times as large, as a
VM's random writes leave them), then 3,000 rounds of what one random 4 KiB
WRITE and one READ do to it: ``put`` on the writer's copy, ``apply`` of its
edits on a second copy (the read cache's), one ``overlapping`` (a 64 KiB
READ).  Each figure is the best of ``--repeat`` passes, in µs a round;
``--against`` times another ``rangemap.py`` (e.g. ``git show
REV:instant/rangemap.py``) in the same passes, alternating.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def rounds(mod: ModuleType, n: int, k: int) -> float:
    """µs a round on a map of ``n`` pieces."""
    rnd = random.Random(n)
    blocks = n * 4
    starts = sorted({rnd.randrange(blocks) for _ in range(n)})
    m = mod.RangeMap([mod.Piece(s * 4096, 4096, 1, i * 4096) for i, s in enumerate(starts)])
    copy = mod.RangeMap(list(m))
    pos = 1 << 40
    t = time.perf_counter()
    for _ in range(k):
        copy.apply(m.put(mod.Piece(rnd.randrange(blocks) * 4096, 4096, 1, pos)))
        pos += 4096
        m.overlapping(rnd.randrange(blocks) * 4096, 65536)
    return (time.perf_counter() - t) / k * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="*", default=[100, 3000, 50_000, 400_000])
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", type=Path, help="another rangemap.py, timed alongside")
    args = ap.parse_args()
    mods = {"this": load(REPO / "instant" / "rangemap.py", "rangemap_this")}
    if args.against:
        mods["against"] = load(args.against, "rangemap_against")
    for n in args.sizes:
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            for name, mod in mods.items():
                us = rounds(mod, n, args.rounds)
                best[name] = min(best.get(name, us), us)
        figures = ", ".join(f"{name} {us:.1f} µs" for name, us in best.items())
        print(f"{n:>9,} pieces: {figures} a round (put + apply + overlapping)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
