"""The namespace's hot path, timed in-process: generous bounds (three times the targets).

Targets (``bench/namespace_micro.py`` measures them on the demo storage):
``getattr`` of a path already looked up ≤ 5 µs whatever it is (plain, link,
merged chain), ``open`` + ``runs`` + close of a merged image ≤ 10 µs, a
lookup in a 10,000-entry folder ≤ 5 µs, its listing again ≤ 50 µs and the
same object.  Each figure is the best of five runs, so a busy machine rarely
fails them; they are marked ``slow`` all the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from merge.stack import build_stack
from tests.unit.merge_helpers import KIB, write_link
from tests.unit.test_namespace_rules import backups

pytestmark = pytest.mark.slow

BIG = 10_000


def per_call(fn: Callable[[], object], n: int) -> float:
    """Best of five runs of ``n`` calls, in µs per call."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("speed") / "storage"
    backups(root, 4, size=256 * KIB)  # d03's flat: link -> merged -> link -> merged -> link ...
    write_link(root / "links" / "one.json", "/d00/web01/web01-flat.vmdk")
    for i in range(15):
        write_link(root / "links" / f"l{i}.json", f"l{i + 1}")
    write_link(root / "links" / "l15.json", "/d00/web01/web01-flat.vmdk")  # l0: 16 links deep
    big = root / "big"
    big.mkdir()
    for i in range(BIG):
        os.close(os.open(big / f"f{i:05d}", os.O_CREAT | os.O_WRONLY, 0o644))
    return root


def test_getattr_of_any_path_already_looked_up(root: Path) -> None:
    stack = build_stack(str(root))
    ns = stack.top
    paths = [
        ("d00", "web01", "web01-flat.vmdk"),
        ("d01", "web01", "web01.vmx"),
        ("links", "one"),
        ("links", "l0"),
        ("d03", "web01", "web01-flat.vmdk"),
        ("d03", "web01"),
    ]
    for path in paths:
        ns.getattr(path)
        us = per_call(lambda p=path: ns.getattr(p), 5000)
        assert us <= 15, (path, us)
    stack.close()


def test_read_of_a_merged_image(root: Path) -> None:
    stack = build_stack(str(root))
    ns = stack.top
    path = ("d03", "web01", "web01-flat.vmdk")
    size = ns.getattr(path).size
    offsets = iter(range(0, 1 << 62, 4096))

    def read() -> None:
        with ns.open(path) as r:
            r.runs(next(offsets) % (size - 4096), 4096)

    read()
    us = per_call(read, 5000)
    assert us <= 30, us
    stack.close()


def test_a_folder_of_10000_entries(root: Path) -> None:
    stack = build_stack(str(root))
    ns = stack.top
    t0 = time.perf_counter()
    first = ns.readdir(("big",))
    assert len(first) == BIG and time.perf_counter() - t0 < 1.0
    names = iter(range(1 << 62))
    for i in range(BIG):
        ns.getattr(("big", f"f{i:05d}"))
    us = per_call(lambda: ns.getattr(("big", f"f{next(names) % BIG:05d}")), 5000)
    assert us <= 15, us
    us = per_call(lambda: ns.readdir(("big",)), 500)
    assert us <= 150, us
    assert ns.readdir(("big",)) is first
    stack.close()
