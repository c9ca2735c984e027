"""merge.extents: cutting reads of a merged image into base / overlay / zero runs.

Every property test compares with ``merge_helpers.naive_merged``, a
bytearray built per pancbt.md "The merged image" from files made by the
independent encoder.  Boundaries are enumerated: extent edges, adjacent
extents, the base's end, ``disk_size``, past it, zero and one byte.
"""

from __future__ import annotations

import itertools
import random
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merge.extents import BASE, OVERLAY, ExtentMap, append_run
from merge.namespace import ZERO_FD, Run
from merge.pancbt import Extent, ExtentKind, read_pancbt
from tests.unit.merge_helpers import MIB, build, naive_merged


def emap_of(pancbt: bytes, base_size: int) -> ExtentMap:
    p = read_pancbt(lambda pos, n: pancbt[pos : pos + n], len(pancbt), "p")
    return ExtentMap(p.extents, p.header.disk_size, base_size)


def resolve(runs: list[Run], base: bytes, pancbt: bytes) -> bytes:
    """The bytes tagged runs stand for, from in-memory base and pancbt."""
    out = bytearray()
    for fd, pos, n in runs:
        assert n > 0
        if fd == BASE:
            assert pos + n <= len(base), "a base run past the base's end"
            out += base[pos : pos + n]
        elif fd == OVERLAY:
            assert pos >= 512 and pos + n <= len(pancbt)
            out += pancbt[pos : pos + n]
        else:
            assert fd == ZERO_FD and pos == 0
            out += bytes(n)
    return bytes(out)


def assert_coalesced(runs: list[Run]) -> None:
    for a, b in itertools.pairwise(runs):
        same = a.fd == b.fd and (a.fd == ZERO_FD or a.pos + a.length == b.pos)
        assert not same, f"{a} and {b} should be one run"


def check_read(base: bytes, pancbt: bytes, offset: int, count: int) -> None:
    emap = emap_of(pancbt, len(base))
    runs = emap.runs(offset, count)
    want = naive_merged(base, pancbt)[offset : offset + count]
    assert resolve(runs, base, pancbt) == want
    assert_coalesced(runs)


@st.composite
def images(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A base and a pancbt over it: random sizes, extents, adjacency, growth and shrinkage."""
    base = draw(st.binary(max_size=300))
    disk_size = draw(st.integers(0, 400))
    changes = []
    pos = 0
    while draw(st.booleans()):
        pos += draw(st.sampled_from([0, 0, 1, 2, 7, 30]))  # often adjacent
        length = draw(st.integers(1, 40))
        if pos + length > disk_size:
            break
        if draw(st.booleans()):
            changes.append((pos, draw(st.binary(min_size=length, max_size=length))))
        else:
            changes.append((pos, length))
        pos += length
    return base, build(changes, disk_size, base_size=len(base))


@given(images(), st.integers(0, 450), st.integers(0, 450))
@settings(max_examples=600, deadline=None)
def test_random_reads_match_naive_reference(img, offset: int, count: int) -> None:
    check_read(*img, offset, count)


@given(images())
@settings(max_examples=200, deadline=None)
def test_every_boundary(img) -> None:
    base, pancbt = img
    emap = emap_of(pancbt, len(base))
    edges = {0, len(base), emap.disk_size}
    p = read_pancbt(lambda pos, n: pancbt[pos : pos + n], len(pancbt), "p")
    for e in p.extents:
        edges |= {e.offset, e.offset + e.length}
    points = {max(0, x + d) for x in edges for d in (-1, 0, 1)}
    for x in points:
        for count in (0, 1, 2, 3, 64, 1000):
            check_read(base, pancbt, x, count)


def test_worked_example_read() -> None:
    """pancbt.md: 1 MiB at 1044480 is 4096 base, 4096 of the first extent, 1040384 base."""
    extents = [
        Extent(1048576, 4096, 512, ExtentKind.DATA),
        Extent(2097152, 65536, 0, ExtentKind.ZERO),
        Extent(11534336, 8192, 4608, ExtentKind.DATA),
    ]
    emap = ExtentMap(extents, 12582912, 10485760)
    assert emap.runs(1044480, MIB) == [
        Run(BASE, 1044480, 4096),
        Run(OVERLAY, 512, 4096),
        Run(BASE, 1052672, 1040384),
    ]


def test_worked_example_grown_tail() -> None:
    extents = [Extent(11534336, 8192, 4608, ExtentKind.DATA)]
    emap = ExtentMap(extents, 12582912, 10485760)
    # Past the base's 10 MiB: zeros, then the extent, then zeros to disk_size.
    assert emap.runs(10485760 - 10, 12582912) == [
        Run(BASE, 10485750, 10),
        Run(ZERO_FD, 0, 11534336 - 10485760),
        Run(OVERLAY, 4608, 8192),
        Run(ZERO_FD, 0, 12582912 - 11534336 - 8192),
    ]


@pytest.mark.parametrize(
    ("offset", "count", "want"),
    [
        (0, 0, []),
        (100, 0, []),
        (100, 1, [Run(ZERO_FD, 0, 1)]),  # the last byte (ZERO extent)
        (101, 1, []),  # at disk_size
        (500, 10, []),  # past disk_size
        (9, 1, [Run(BASE, 9, 1)]),  # the byte before the DATA extent
        (10, 1, [Run(OVERLAY, 512, 1)]),  # its first byte
        (19, 1, [Run(OVERLAY, 521, 1)]),  # its last byte
        (20, 1, [Run(OVERLAY, 522, 1)]),  # the adjacent DATA extent (contiguous data)
        (19, 2, [Run(OVERLAY, 521, 2)]),  # across the two: one run
        (30, 1, [Run(BASE, 30, 1)]),
        (49, 2, [Run(BASE, 49, 1), Run(ZERO_FD, 0, 1)]),  # the base ends at 50
        (95, 100, [Run(ZERO_FD, 0, 6)]),  # past the base, then a ZERO extent to the end
    ],
)
def test_edges(offset: int, count: int, want: list[Run]) -> None:
    extents = [
        Extent(10, 10, 512, ExtentKind.DATA),
        Extent(20, 10, 522, ExtentKind.DATA),
        Extent(98, 3, 0, ExtentKind.ZERO),
    ]
    assert ExtentMap(extents, 101, 50).runs(offset, count) == want


def test_shrunk_disk_reads_base_up_to_disk_size() -> None:
    emap = ExtentMap([], 10, 1000)
    assert emap.runs(0, 100) == [Run(BASE, 0, 10)]


def test_no_extents_no_base() -> None:
    assert ExtentMap([], 10, 0).runs(0, 100) == [Run(ZERO_FD, 0, 10)]
    assert ExtentMap([], 0, 0).runs(0, 100) == []


@pytest.mark.parametrize(
    "extents",
    [
        [Extent(5, 0, 0, ExtentKind.ZERO)],
        [Extent(5, 10, 0, ExtentKind.ZERO), Extent(14, 1, 0, ExtentKind.ZERO)],
        [Extent(5, 10, 0, ExtentKind.ZERO), Extent(1, 1, 0, ExtentKind.ZERO)],
        [Extent(95, 10, 0, ExtentKind.ZERO)],
        [Extent(5, 1, 0, 7)],
    ],
)
def test_invariants_are_checked(extents: list[Extent]) -> None:
    with pytest.raises(ValueError):
        ExtentMap(extents, 100, 100)


def test_negative_reads_refused() -> None:
    with pytest.raises(ValueError):
        ExtentMap([], 10, 10).runs(-1, 5)


def test_append_run_coalesces() -> None:
    out: list[Run] = []
    for run in [Run(3, 0, 5), Run(3, 5, 5), Run(ZERO_FD, 0, 1), Run(ZERO_FD, 0, 2), Run(3, 20, 1)]:
        append_run(out, run)
    assert out == [Run(3, 0, 10), Run(ZERO_FD, 0, 3), Run(3, 20, 1)]


def test_cheap_for_10000_extents_and_1_mib_reads() -> None:
    """Bisect, not scan: 2,000 reads of 1 MiB over 10,000 extents in well under a second."""
    rnd = random.Random(7)
    disk = 10 * 1024 * MIB
    starts = sorted(rnd.sample(range(0, disk // 4096), 10_000))
    extents = [
        Extent(
            s * 4096,
            4096,
            512 + i * 4096 if i % 2 else 0,
            ExtentKind.DATA if i % 2 else ExtentKind.ZERO,
        )
        for i, s in enumerate(starts)
    ]
    emap = ExtentMap(extents, disk, disk)
    offsets = [rnd.randrange(0, disk) for _ in range(2000)]
    t0 = time.perf_counter()
    total = 0
    for off in offsets:
        total += sum(r.length for r in emap.runs(off, MIB))
    elapsed = time.perf_counter() - t0
    assert total == sum(min(MIB, disk - o) for o in offsets)
    assert elapsed < 1.5, f"{elapsed:.2f}s"
    # The last extent costs no more to reach than the first.
    t0 = time.perf_counter()
    for _ in range(2000):
        emap.runs(disk - MIB, MIB)
    assert time.perf_counter() - t0 < 1.0


def test_a_prepared_map_costs_tens_of_bytes_an_extent() -> None:
    """A merge holds its map for as long as it is prepared (up to 64 a process): a
    pancbt of a million scattered changes is a million extents, ~113 MB as lists of
    int objects, ~25 MB as arrays of machine integers."""
    n = 20_000
    extents = [
        Extent(
            i * 8192 + 2**40, 4096, 512 + i * 4096, ExtentKind.DATA if i % 2 else ExtentKind.ZERO
        )
        for i in range(n)
    ]
    extents = [e if e.kind == ExtentKind.DATA else e._replace(data_offset=0) for e in extents]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        m = ExtentMap(extents, 2**41, 2**40)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(m) == n
    assert held < 40 * n, f"{held / n:.0f} bytes an extent"
