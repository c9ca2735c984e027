"""instant._native (instant/_native.c): a map's pieces kept out of the cyclic collector.

``put`` is ``RangeMap.put``'s common case (a window in one chunk that stays
within its bounds), compared with the Python method put by put below.

``untrack`` takes a tuple off the collector's lists only when no reference
cycle can go through it: every field an int, and no instance dict.  Every
piece that enters a ``RangeMap`` (built whole, put, applied from another
copy's edits, relocated, cut) is untracked, so the collector's work no
longer grows with a map's pieces; the map reads the same either way (its
model tests run on both, ``RECOVERY_FS_PURE=1`` giving the twin).
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from typing import NamedTuple

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from instant import rangemap
from instant.rangemap import Edits, Piece, RangeMap
from tests.unit.test_instant_rangemap import check_chunks, chunks_of, loads

native = pytest.importorskip("instant._native")


def tracked(m: RangeMap) -> int:
    return sum(gc.is_tracked(p) for p in m)


class WithDict(tuple):
    pass


class Pair(NamedTuple):
    a: object
    b: object


def test_only_tuples_of_ints_without_a_dict_are_untracked() -> None:
    gc.disable()  # a collection untracks a plain tuple of ints by itself
    try:
        only_tuples_of_ints_untracked()
    finally:
        gc.enable()


def only_tuples_of_ints_untracked() -> None:
    piece = Piece(1, 2, 3, 4)
    plain = tuple([5, 6])  # made at run time: tracked until a collection
    with_list = Pair(1, [])
    with_str = Pair(1, "x")
    with_dict = WithDict((1, 2))
    big = Piece(1 << 62, (1 << 63) - 1, 0, -(1 << 70))  # ints of any size
    items = [piece, plain, with_list, with_str, with_dict, big, [1, 2], {"a": [1]}]
    assert all(gc.is_tracked(x) for x in items)
    native.untrack(items)
    assert not gc.is_tracked(piece) and not gc.is_tracked(plain) and not gc.is_tracked(big)
    assert gc.is_tracked(with_list) and gc.is_tracked(with_str) and gc.is_tracked(with_dict)
    assert gc.is_tracked(items[6]) and gc.is_tracked(items[7])
    native.untrack(tuple(items))  # a tuple of them too; twice is nothing
    native.untrack([])
    with pytest.raises(TypeError):
        native.untrack(5)
    assert piece.end == 3 and big == (1 << 62, (1 << 63) - 1, 0, -(1 << 70))


def test_an_untracked_piece_is_freed_by_its_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """No leak: the reference count frees what the collector no longer sees."""
    monkeypatch.setattr(rangemap, "_untrack", native.untrack)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            m = RangeMap([Piece(i * 10, 5, 1, i) for i in range(20_000)])
            assert tracked(m) == 0
            del m
        assert tracemalloc.get_traced_memory()[0] - base < 1_000_000  # a map of them: ~2 MB
    finally:
        tracemalloc.stop()


def test_every_piece_entering_a_map_is_untracked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rangemap, "_untrack", native.untrack)  # as without RECOVERY_FS_PURE
    monkeypatch.setattr(RangeMap, "LOAD", 8)  # many chunks, cut and joined
    rnd = random.Random(3)
    m = RangeMap([Piece(i * 100, 50, 1, i * 50) for i in range(300)])
    copy = RangeMap(list(m))
    assert tracked(m) == 0
    for _ in range(500):
        start = rnd.randrange(0, 40_000)
        op = rnd.random()
        if op < 0.7:
            edits = m.put(Piece(start, rnd.randrange(1, 400), rnd.randrange(1, 4), start))
        elif op < 0.9:
            edits = m.relocate(start, 300, (1, start), (9, start * 2))
        else:
            edits = m.cut(start + 20_000)
        copy.apply(Edits(edits.removed, [Piece(*p) for p in edits.added]))  # fresh objects
        assert tracked(m) == 0 and tracked(copy) == 0
        assert list(m) == list(copy)


def test_the_collector_no_longer_walks_a_maps_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The objects the collector tracks grow by the map's chunks, not its pieces."""
    monkeypatch.setattr(rangemap, "_untrack", native.untrack)
    gc.collect()
    before = len(gc.get_objects())
    m = RangeMap([Piece(i * 8192, 4096, 1, i * 4096) for i in range(100_000)])
    for i in range(2_000):
        m.put(Piece(i * 8192 + 100, 5000, 2, i))
    assert len(gc.get_objects()) - before < 1_000  # ~200 chunks and their starts
    assert len(m) > 100_000


def _snapshot(m: RangeMap) -> tuple:
    return ([list(c) for c in m._chunks], [list(s) for s in m._starts], list(m._firsts), len(m))


writes = st.lists(
    st.tuples(st.integers(0, 4000), st.integers(1, 600), st.integers(0, 2), st.booleans()),
    max_size=60,
)
"""Writes (offset, length, log, whether it continues its log's last piece)."""


def _python_put(m: RangeMap, piece: Piece) -> Edits:
    """``m.put(piece)`` by the Python method alone."""
    native_put = rangemap._put_native  # None in a pure run: the Python method anyway
    rangemap._put_native = None
    try:
        return m.put(piece)
    finally:
        rangemap._put_native = native_put


@settings(max_examples=300, deadline=None)
@given(writes, loads)
def test_the_c_put_is_the_python_put(writes: list[tuple[int, int, int, bool]], load: int) -> None:
    """``_native.put`` against the Python method, put by put, on two copies of a map:
    the same Edits and the same chunks, starts, firsts and count after each; when
    it leaves a put to Python (a window over two chunks, a chunk to cut or join),
    it changed nothing.  Pieces that continue their log's last are joined."""
    native_put = native.put
    with chunks_of(load):
        c_map, py_map = RangeMap(), RangeMap()
        ends: dict[int, int] = {}  # log -> where its next piece goes
        for offset, length, log, continues in writes:
            pos = ends.get(log, 0) + (0 if continues else 7)
            ends[log] = pos + length
            piece = Piece(offset, length, log, pos)
            want = _python_put(py_map, piece)
            before = _snapshot(c_map)
            got = native_put(c_map, piece, RangeMap.LOAD, Piece, Edits)
            if got is None:
                assert _snapshot(c_map) == before
                got = _python_put(c_map, piece)
            assert type(got) is Edits and got == want
            assert all(type(p) is Piece for p in got.added)
            assert _snapshot(c_map) == _snapshot(py_map)
            check_chunks(c_map)


def test_the_c_put_serves_a_vms_random_writes() -> None:
    """Random 4 KiB writes to a large map (chunks of 512 to 1,024 pieces): the C
    put serves nearly all of them (it is not a fallback that never runs)."""
    native_put = native.put
    rng = random.Random(5)
    m = RangeMap([Piece(b * 8192, 4096, 1, b * 4096) for b in range(20_000)])
    served = 0
    for k in range(5_000):
        piece = Piece(rng.randrange(40_000) * 4096, 4096, 2, k * 4096 + 7)
        got = native_put(m, piece, RangeMap.LOAD, Piece, Edits)
        served += got is not None
        if got is None:
            m.put(piece)
    check_chunks(m)
    assert served > 4_900


def _python_apply(m: RangeMap, edits: Edits) -> None:
    """``m.apply(edits)`` by the Python method alone."""
    native_apply = rangemap._apply_native  # None in a pure run: the Python method anyway
    rangemap._apply_native = None
    try:
        m.apply(edits)
    finally:
        rangemap._apply_native = native_apply


@settings(max_examples=300, deadline=None)
@given(writes, loads)
def test_the_c_apply_is_the_python_apply(
    writes: list[tuple[int, int, int, bool]], load: int
) -> None:
    """Each put's edits applied to two copies of the map, one by ``_native.apply``
    (its steps, then the Python method from where they stopped) and one by the
    Python method alone: the same chunks, starts, firsts and count after each,
    and the pieces of the map the edits came from."""
    with chunks_of(load):
        source, c_map, py_map = RangeMap(), RangeMap(), RangeMap()
        ends: dict[int, int] = {}
        for offset, length, log, continues in writes:
            pos = ends.get(log, 0) + (0 if continues else 7)
            ends[log] = pos + length
            edits = source.put(Piece(offset, length, log, pos))
            _python_apply(py_map, edits)
            r, a = native.apply(c_map, list(edits.removed), list(edits.added), RangeMap.LOAD, Piece)
            assert 0 <= r <= len(edits.removed) and 0 <= a <= len(edits.added)
            assert a == 0 or r == len(edits.removed)  # in the method's order
            _python_apply(c_map, Edits(edits.removed[r:], edits.added[a:]))
            assert _snapshot(c_map) == _snapshot(py_map)
            assert list(c_map) == list(source)
            check_chunks(c_map)


def test_the_c_apply_serves_a_vms_random_writes() -> None:
    """A large map following another copy's random 4 KiB writes: the C steps make
    nearly all of them."""
    rng = random.Random(6)
    start = [Piece(b * 8192, 4096, 1, b * 4096) for b in range(20_000)]
    source, copy = RangeMap(start), RangeMap(start)
    steps = made = 0
    for k in range(5_000):
        edits = source.put(Piece(rng.randrange(40_000) * 4096, 4096, 2, k * 4096 + 7))
        r, a = native.apply(copy, list(edits.removed), list(edits.added), RangeMap.LOAD, Piece)
        _python_apply(copy, Edits(edits.removed[r:], edits.added[a:]))
        steps += len(edits.removed) + len(edits.added)
        made += r + a
    assert list(copy) == list(source)
    check_chunks(copy)
    assert made > 0.98 * steps


def test_the_c_apply_leaves_a_chunk_to_join_or_drop_to_python() -> None:
    """Removals that empty a chunk piece by piece: the C steps stop where a chunk
    falls under a quarter of the load (joined to the next) and the maps agree."""
    with chunks_of(8):
        pieces = [Piece(b * 10, 5, 1, b * 5) for b in range(40)]
        c_map, py_map = RangeMap(pieces), RangeMap(pieces)
        assert len(c_map._chunks) > 2
        stopped = 0
        for p in pieces[:25]:
            edits = Edits([p.start], [])
            _python_apply(py_map, edits)
            r, _ = native.apply(c_map, [p.start], [], RangeMap.LOAD, Piece)
            stopped += r == 0
            _python_apply(c_map, Edits(edits.removed[r:], []))
            assert _snapshot(c_map) == _snapshot(py_map)
            check_chunks(c_map)
        assert stopped >= 2  # the joins, made by Python


_EDGE = st.sampled_from([0, 1, 5, 10, 2**62, 2**63 - 5, 2**63 - 1, 2**63, -5, -(2**63), 2**64])
_VALUE = st.one_of(_EDGE, st.integers(-(2**64), 2**64))


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(_VALUE, _VALUE, st.integers(0, 1), _VALUE), min_size=1, max_size=3),
    st.tuples(_VALUE, _VALUE, st.integers(0, 1), _VALUE),
)
# The probe's cases: a log position whose sum wraps to the next piece's (a false
# join), two lengths whose sum wraps (a negative length), a cut from far below.
@example([(0, 10, 1, 2**63 - 5)], (10, 5, 1, -(2**63) + 5))
@example([(-100, 100, 1, 0)], (0, 2**63 - 1, 1, 100))
@example([(-(2**63), 100, 1, 0)], (2**62, 1, 1, 100))
@example([(-(2**63), 2**63 + 10, 1, 0)], (5, 10, 1, 7))
def test_the_c_put_at_the_ends_of_64_bits_is_the_python_put(
    held: list[tuple[int, int, int, int]], new: tuple[int, int, int, int]
) -> None:
    """Values and their sums at and past the 64-bit limits (a piece's end, the join
    of two, a cut's offset): the C put gives the Python put's answer or leaves the
    put to it, never a wrapped-around number (found by a probe: a join over
    2**63 made a piece of negative length)."""
    try:
        pieces = [Piece(*p) for p in held]
        c_map, py_map = RangeMap(pieces), RangeMap(pieces)
    except ValueError:  # overlapping or empty: not a map
        return
    piece = Piece(*new)
    try:
        want: Edits | Exception = _python_put(py_map, piece)
    except Exception as e:  # the same failure is expected of both
        want = e
    got = native.put(c_map, piece, RangeMap.LOAD, Piece, Edits)
    if got is None:
        try:
            got = _python_put(c_map, piece)
        except Exception as e:
            got = e
    if isinstance(want, Exception):
        assert type(got) is type(want)
    else:
        assert got == want
    assert _snapshot(c_map) == _snapshot(py_map)


class _Eq(Piece):
    """A piece whose comparison runs Python code (it could change the map under C)."""

    def __eq__(self, other: object) -> bool:
        return tuple.__eq__(self, other)

    __hash__ = tuple.__hash__


def test_wrong_types_and_tampered_maps_never_crash_the_c_code() -> None:
    """Found by a probe: struct sequences passed as Piece (their own layout and
    dealloc), entries that are not pieces inside a window, and pieces whose
    comparison or deletion runs Python code crashed or misled the C code.  Now
    the types are checked and anything but exactly Piece is left to Python."""
    import os
    import time

    m = RangeMap([Piece(0, 10, 1, 0), Piece(10, 10, 1, 10), Piece(20, 10, 1, 20)])
    for bad_type in (time.struct_time, os.stat_result, tuple, int):
        with pytest.raises(TypeError):
            native.put(m, Piece(5, 1, 2, 0), RangeMap.LOAD, bad_type, Edits)
        with pytest.raises(TypeError):
            native.put(m, Piece(5, 1, 2, 0), RangeMap.LOAD, Piece, bad_type)
        with pytest.raises(TypeError):
            native.apply(m, [], [], RangeMap.LOAD, bad_type)
    before = _snapshot(m)
    assert native.put(m, (5, 1, 2, 0), RangeMap.LOAD, Piece, Edits) is None  # a plain tuple
    assert native.put(m, _Eq(5, 1, 2, 0), RangeMap.LOAD, Piece, Edits) is None
    for odd in ([1, 2, 3], object(), None, (), _Eq(10, 10, 1, 10)):
        t = RangeMap([Piece(0, 10, 1, 0), Piece(10, 10, 1, 10), Piece(20, 10, 1, 20)])
        t._chunks[0][1] = odd  # type: ignore[call-overload]
        assert native.put(t, Piece(5, 20, 2, 0), RangeMap.LOAD, Piece, Edits) is None
        assert native.apply(t, [10], [], RangeMap.LOAD, Piece) == (0, 0)
    assert native.apply(m, [], [(40, 1, 2, 0)], RangeMap.LOAD, Piece) == (0, 0)
    assert native.apply(m, [], [_Eq(40, 1, 2, 0)], RangeMap.LOAD, Piece) == (0, 0)
    assert _snapshot(m) == before
