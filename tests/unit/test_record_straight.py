"""Large fragments received straight into their record's buffer
(``RecordReader.space`` / ``filled``), as the server's loop does, mixed with
``feed``: the same records, the same ``pending`` as when they were
reassembled by copying, memory that grows only with what arrived, and a
record (or a view of it, a WRITE's data) never overwritten by what comes
after it."""

from __future__ import annotations

import random
import struct
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from nfsd.transport.record import LAST_FRAGMENT, STRAIGHT_MIN, RecordReader

BIG = 3 * STRAIGHT_MIN


def fragments(record: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({c for c in cuts if 0 < c < len(record)})
    pieces = [record[a:b] for a, b in zip([0, *bounds], [*bounds, len(record)], strict=True)]
    return [
        struct.pack(">I", (LAST_FRAGMENT if i == len(pieces) - 1 else 0) | len(p)) + p
        for i, p in enumerate(pieces)
    ]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    sizes=st.lists(st.integers(0, 40) | st.integers(STRAIGHT_MIN - 8, BIG), min_size=1, max_size=5),
    cut_fractions=st.lists(st.floats(0, 1), max_size=3),
    reads=st.lists(st.integers(1, 100) | st.integers(1000, 2 * STRAIGHT_MIN), min_size=1),
)
def test_straight_receive_gives_the_records_and_pending_of_the_copying_reader(
    seed: int, sizes: list[int], cut_fractions: list[float], reads: list[int]
) -> None:
    rng = random.Random(seed)
    records = [rng.randbytes(n) for n in sizes]
    stream = b""
    # After each stream offset that ends a fragment: how many header bytes of
    # the record being received are not counted as pending (complete fragments).
    ends: list[tuple[int, bool]] = []
    for r in records:
        for frag in fragments(r, [int(f * len(r)) for f in cut_fractions]):
            stream += frag
            ends.append((len(stream), bool(struct.unpack(">I", frag[:4])[0] & LAST_FRAGMENT)))
    reader = RecordReader()
    scratch = bytearray(2 * STRAIGHT_MIN)
    got: list[bytes | bytearray] = []
    views: list[memoryview] = []
    pos = 0
    i = 0
    while pos < len(stream):
        want = reads[i % len(reads)]
        i += 1
        space = reader.space()
        if space is not None:  # what the server does: recv_into the record's buffer
            with space:
                n = min(want, len(space), len(stream) - pos)
                space[:n] = stream[pos : pos + n]
            new = reader.filled(n)
        else:
            n = min(want, len(scratch), len(stream) - pos)
            scratch[:n] = stream[pos : pos + n]
            new = reader.feed(memoryview(scratch)[:n])
            scratch[:n] = b"\xee" * n  # the next read overwrites the server's buffer
        pos += n
        got += new
        views += [memoryview(r) for r in new]  # as a WRITE's data holds its record
        # pending = bytes of the record begun, less the headers of its complete fragments
        begun = max([e for e, last in ends if e <= pos and last], default=0)
        headers = sum(4 for e, last in ends if begun < e <= pos and not last)
        assert reader.pending == pos - begun - headers
        assert reader.begun == (pos > begun)
        # never allocated much beyond what arrived
        assert len(reader._part) <= 2 * (pos - begun) + STRAIGHT_MIN
    assert got == records
    assert [bytes(v) for v in views] == records
    assert reader.pending == 0
    assert all(type(r) is bytes for r in got if len(r) < STRAIGHT_MIN)


def receive_one(reader: RecordReader, record: bytes, first: int, step: int) -> list:
    """``record`` as one fragment: ``first`` bytes fed, the rest received
    straight, ``step`` bytes a read; the records completed."""
    stream = struct.pack(">I", LAST_FRAGMENT | len(record)) + record
    got = reader.feed(stream[:first])
    pos = first
    while (space := reader.space()) is not None:
        with space:
            n = min(len(space), step)
            space[:n] = stream[pos : pos + n]
        pos += n
        got += reader.filled(n)
    return got


def test_a_record_and_a_view_of_it_survive_the_next_records() -> None:
    """The record buffer of a large record is handed out, never reused."""
    one = bytes([1]) * (2 * STRAIGHT_MIN)
    two = bytes([2]) * (2 * STRAIGHT_MIN)
    reader = RecordReader()
    got: list[bytes | bytearray] = []
    for record in (one, two, one, two):
        got += receive_one(reader, record, 100, 5000)
    assert [type(r) for r in got] == [bytearray] * 4
    data = memoryview(got[0])[40:]
    assert len({id(r) for r in got}) == 4
    assert bytes(data) == one[40:]
    assert got == [one, two, one, two]


def test_a_claimed_large_fragment_allocates_only_as_its_bytes_arrive() -> None:
    reader = RecordReader(max_record=1 << 20)
    tracemalloc.start()
    try:
        assert reader.feed(struct.pack(">I", LAST_FRAGMENT | 1_000_000) + b"z" * 10) == []
        space = reader.space()
        assert space is not None
        with space:
            assert len(space) <= STRAIGHT_MIN
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * STRAIGHT_MIN
    assert reader.pending == 14  # the header and what arrived, as before
