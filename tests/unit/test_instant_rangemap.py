"""instant.rangemap against a naive model: a bytearray per file, and the base limit rule."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instant.rangemap import FileState, Piece, RangeMap, unchanged_runs
from merge.namespace import ZERO_FD, Run

BLOCK = 4096
BASE = bytes((i * 7 + 3) % 251 + 1 for i in range(3 * BLOCK + 100))  # never zero
BASE_FD = 1000

# Offsets at and around every block and sub-block (512) boundary of a few blocks.
_edges = [b * 512 + d for b in range(4 * BLOCK // 512 + 1) for d in (-1, 0, 1)]
offsets = st.one_of(st.sampled_from([e for e in _edges if e >= 0]), st.integers(0, 4 * BLOCK))
lengths = st.one_of(
    st.sampled_from([1, 511, 512, 513, BLOCK - 1, BLOCK, BLOCK + 1]), st.integers(1, 9000)
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), offsets, lengths),
        st.tuples(st.just("truncate"), offsets, st.just(0)),
    ),
    max_size=25,
)


class Model:
    """The file as bytes, with the rule that a truncated base byte never returns."""

    def __init__(self) -> None:
        self.data = bytearray(BASE)

    def write(self, off: int, data: bytes) -> None:
        if off > len(self.data):
            self.data.extend(bytes(off - len(self.data)))
        self.data[off : off + len(data)] = data

    def truncate(self, size: int) -> None:
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(bytes(size - len(self.data)))


def _base(offset: int, count: int) -> list[Run]:
    end = min(offset + count, len(BASE))
    return [Run(BASE_FD, offset, end - offset)] if offset < end else []


def _read(state: FileState, logs: dict[int, bytearray], offset: int, count: int) -> bytes:
    out = bytearray()
    for r in state.runs(offset, count, _base, lambda log: log):
        if r.fd == ZERO_FD:
            out += bytes(r.length)
        elif r.fd == BASE_FD:
            out += BASE[r.pos : r.pos + r.length]
        else:
            out += logs[r.fd][r.pos : r.pos + r.length]
            assert r.pos + r.length <= len(logs[r.fd])
    return bytes(out)


@contextmanager
def chunks_of(load: int) -> Iterator[None]:
    """Maps made and changed meanwhile cut into chunks of ``load`` to ``2 * load``
    pieces: a few pieces then cross chunks, as a map of thousands does."""
    saved = RangeMap.LOAD
    RangeMap.LOAD = load
    try:
        yield
    finally:
        RangeMap.LOAD = saved


loads = st.sampled_from([2, 3, 8, 16, 512])


def check_chunks(m: RangeMap) -> None:
    """The chunks' bookkeeping: none empty, none past twice the load, none but the
    last under a quarter of it, each one's starts and first start its own, the
    count, and the pieces sorted apart."""
    chunks, starts, firsts = m._chunks, m._starts, m._firsts
    assert len(chunks) == len(starts) == len(firsts)
    assert all(chunks) and all(len(c) <= 2 * RangeMap.LOAD for c in chunks)
    assert all(len(c) >= RangeMap.LOAD // 4 for c in chunks[:-1]), [len(c) for c in chunks]
    assert starts == [[p.start for p in c] for c in chunks]
    assert firsts == [s[0] for s in starts]
    assert len(m) == sum(map(len, chunks))
    assert all(a.end <= b.start and a.length > 0 for a, b in pairwise(m))


@settings(max_examples=300, deadline=None)
@given(ops, st.data(), loads)
def test_file_state_reads_as_the_model(
    script: list[tuple[str, int, int]], data: st.DataObject, load: int
) -> None:
    with chunks_of(load):
        _file_state_reads_as_the_model(script, data)


def _file_state_reads_as_the_model(script: list[tuple[str, int, int]], data: st.DataObject) -> None:
    state = FileState(len(BASE), len(BASE))
    logs = {1: bytearray(), 2: bytearray()}
    model = Model()
    for i, (op, off, n) in enumerate(script):
        if op == "write":
            log = 1 + i % 2
            payload = bytes([(i % 250) + 1]) * n
            pos = len(logs[log])
            logs[log] += payload
            state.write(Piece(off, n, log, pos))
            model.write(off, payload)
        else:
            state.truncate(off)
            model.truncate(off)
        assert state.size == len(model.data)
        check_chunks(state.map)
    assert _read(state, logs, 0, 1 << 20) == bytes(model.data)
    for _ in range(5):
        off = data.draw(offsets)
        n = data.draw(st.integers(0, 3 * BLOCK))
        assert _read(state, logs, off, n) == bytes(model.data[off : off + n])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(offsets, lengths), max_size=30), offsets, st.integers(0, 3 * BLOCK), loads
)
def test_overlapping_is_every_piece_the_window_touches(
    writes: list[tuple[int, int]], start: int, n: int, load: int
) -> None:
    """``overlapping`` against a scan of every piece: windows before the first
    piece, after the last (answered without a bisect), between and across
    chunks, and empty ones."""
    with chunks_of(load):
        m = RangeMap()
        for i, (off, length) in enumerate(writes):
            m.put(Piece(off, length, 1 + i % 2, i * 10_000))
        want = [p for p in m if p.start < start + n and p.end > start]
        assert m.overlapping(start, start + n) == want


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(BASE) + BLOCK), offsets, st.integers(0, 3 * BLOCK))
def test_unchanged_runs_are_a_fresh_file_states(size: int, offset: int, count: int) -> None:
    """What a store answers for a file no write ever changed, without a FileState,
    is what an empty one (as loaded for such a file) answers."""
    want = FileState(size, size).runs(offset, count, _base, lambda log: log)
    assert unchanged_runs(size, offset, count, _base) == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(offsets, lengths, st.booleans()), max_size=30), loads)
def test_edits_replayed_on_a_copy_give_the_same_map(
    script: list[tuple[int, int, bool]], load: int
) -> None:
    """What the read cache does: apply the writer's edits to its own copy."""
    with chunks_of(load):
        a, b = RangeMap(), RangeMap()
        pos = 0
        for off, n, cut in script:
            edits = a.cut(off) if cut else a.put(Piece(off, n, 1, pos))
            pos += n
            b.apply(edits)
            assert list(a) == list(b)
            check_chunks(a)
            check_chunks(b)
        assert list(RangeMap(list(a))) == list(a)  # a map made from its pieces
        check_chunks(RangeMap(list(a)))


@pytest.mark.parametrize("load", [2, 5, 16, 512])
def test_many_random_small_writes_and_truncates_keep_a_flat_model(load: int) -> None:
    """Thousands of pieces over many chunks, against a plain sorted list of them
    (the map before it held chunks) and a copy that follows by its edits."""
    rnd = random.Random(load)
    with chunks_of(load):
        m, copy = RangeMap(), RangeMap()
        flat: list[Piece] = []
        for i in range(4000):
            if rnd.random() < 0.01:
                size = rnd.randrange(1 << 22)
                edits = m.cut(size)
                flat = [p if p.end <= size else Piece(p.start, size - p.start, p.log, p.pos)
                        for p in flat if p.start < size]  # fmt: skip
            else:
                piece = Piece(rnd.randrange(1 << 10) * BLOCK + rnd.choice((0, 512)), BLOCK, 1, i)
                edits = m.put(piece)
                flat = _flat_put(flat, piece)
            copy.apply(edits)
            if i % 97 == 0:
                assert list(m) == flat == list(copy)
                check_chunks(m)
                check_chunks(copy)
        assert list(m) == flat == list(copy) and len(m) > 40


def _flat_put(flat: list[Piece], piece: Piece) -> list[Piece]:
    """``piece`` over a sorted list of pieces (no joining: positions never continue)."""
    out = []
    for p in flat:
        if p.end <= piece.start or p.start >= piece.end:
            out.append(p)
            continue
        if p.start < piece.start:
            out.append(Piece(p.start, piece.start - p.start, p.log, p.pos))
        if p.end > piece.end:
            out.append(Piece(piece.end, p.end - piece.end, p.log, p.pos + piece.end - p.start))
    out.append(piece)
    return sorted(out)


def test_a_sequential_writer_stays_one_piece() -> None:
    m = RangeMap()
    for i in range(1000):
        m.put(Piece(i * BLOCK, BLOCK, 7, 100 + i * BLOCK))
    assert list(m) == [Piece(0, 1000 * BLOCK, 7, 100)]


def test_a_piece_continuing_the_last_of_the_chunk_before_is_joined_to_it() -> None:
    """The piece before a write may end the previous chunk, however many there are."""
    with chunks_of(2):  # pieces end to end, none continuing the one before (its log)
        m = RangeMap([Piece(i * 10, 10, 1 + i % 2, 1000 * i) for i in range(40)])
        for first in list(m._firsts[1:]):  # each chunk's first start
            before = next(p for p in reversed(list(m)) if p.start < first)
            assert before.end == first
            m.put(Piece(first, 3, before.log, before.pos + before.length))
            assert next(p for p in m if p.start == before.start).length == before.length + 3
            check_chunks(m)
        m = RangeMap()
        for i in range(100):
            m.put(Piece(i * BLOCK, BLOCK, 7, 100 + i * BLOCK))
        assert list(m) == [Piece(0, 100 * BLOCK, 7, 100)]


def test_truncated_and_regrown_reads_zeros_not_the_base() -> None:
    state = FileState(len(BASE), len(BASE))
    state.truncate(10)
    state.truncate(len(BASE))
    assert _read(state, {}, 0, 20) == BASE[:10] + bytes(10)
    state.write(Piece(BLOCK, 1, 1, 0))  # a write past the limit does not bring the base back
    assert _read(state, {1: bytearray(b"x")}, BLOCK - 2, 4) == b"\0\0x\0"


@pytest.mark.parametrize("window", [(0, 100), (BLOCK, 2 * BLOCK), (len(BASE) - 50, 40)])
def test_a_base_read_short_ends_in_zeros(window: tuple[int, int]) -> None:
    """A base that gives fewer bytes than asked (its runs end early) reads as zeros
    after them: with no piece in the window (the base's runs returned as they
    are) and with one (each gap between pieces)."""
    offset, count = window
    short = len(BASE) - 2 * BLOCK  # the base's runs end here, below base_limit

    def base(o: int, n: int) -> list[Run]:
        end = min(o + n, short)
        return [Run(BASE_FD, o, end - o)] if o < end else []

    def read(state: FileState) -> bytes:
        out = bytearray()
        for r in state.runs(offset, count, base, lambda log: log):
            assert r.length > 0
            out += bytes(r.length) if r.fd == ZERO_FD else BASE[r.pos : r.pos + r.length]
        return bytes(out)

    want = bytes(BASE[:short]) + bytes(len(BASE) - short)
    state = FileState(len(BASE), len(BASE))
    assert read(state) == want[offset : offset + count]
    state.write(Piece(offset, 1, 0, 0))  # a piece of log 0, whose bytes are BASE's own
    assert read(state) == BASE[0:1] + want[offset + 1 : offset + count]


def test_a_small_write_maps_only_its_bytes() -> None:
    """No copy-up: a 4 KiB write in the middle of a big file adds one 4 KiB piece."""
    state = FileState(1 << 30, 1 << 30)
    edits = state.write(Piece(5 * BLOCK + 100, BLOCK, 1, 0))
    assert edits.added == [Piece(5 * BLOCK + 100, BLOCK, 1, 0)] and state.map.bytes == BLOCK
