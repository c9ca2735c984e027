"""Record marking (RFC 5531 §11): random fragmentation, caps, framing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfsd.transport.record import LAST_FRAGMENT, RecordReader, RecordTooLarge, frame


def encode(record: bytes, cuts: list[int]) -> bytes:
    """``record`` as fragments split at ``cuts``."""
    bounds = sorted({c for c in cuts if 0 < c < len(record)})
    pieces = [record[a:b] for a, b in zip([0, *bounds], [*bounds, len(record)], strict=True)]
    out = b""
    for i, piece in enumerate(pieces):
        last = LAST_FRAGMENT if i == len(pieces) - 1 else 0
        out += struct.pack(">I", last | len(piece)) + piece
    return out


@given(
    records=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    chunks=st.lists(st.integers(1, 50) | st.integers(51, 700), min_size=1, max_size=20),
    as_view=st.booleans(),
)
def test_any_fragmentation_and_any_chunking_gives_back_the_records(
    records: list[bytes], cuts: list[int], chunks: list[int], as_view: bool
) -> None:
    """``as_view``: handed over as the server does, a view of one buffer that
    the next read overwrites: records cut straight from it must be copies."""
    stream = b"".join(encode(r, cuts) for r in records)
    reader = RecordReader()
    scratch = bytearray(700)
    got: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        piece = stream[pos : pos + chunks[i % len(chunks)]]
        if as_view:
            scratch[: len(piece)] = piece
            got += reader.feed(memoryview(scratch)[: len(piece)])
            scratch[:] = b"\xee" * len(scratch)
        else:
            got += reader.feed(piece)
        pos += len(piece)
        i += 1
    assert got == records
    assert reader.pending == 0


def test_a_claimed_2_gib_fragment_is_refused_at_once() -> None:
    reader = RecordReader(max_record=1 << 20)
    with pytest.raises(RecordTooLarge):
        reader.feed(struct.pack(">I", LAST_FRAGMENT | 0x7FFFFFFF) + b"x")


def test_many_small_fragments_adding_up_past_the_cap_are_refused() -> None:
    reader = RecordReader(max_record=1000)
    with pytest.raises(RecordTooLarge):
        for _ in range(20):
            reader.feed(struct.pack(">I", 100) + b"y" * 100)


def test_memory_held_is_what_arrived_not_what_was_claimed() -> None:
    reader = RecordReader(max_record=1 << 20)
    assert reader.feed(struct.pack(">I", LAST_FRAGMENT | 500_000) + b"z" * 10) == []
    assert reader.pending == 14


def test_frame_prefixes_one_last_fragment_header() -> None:
    parts = frame([b"abcd", memoryview(b"efgh")])
    assert parts[0] == struct.pack(">I", LAST_FRAGMENT | 8)
    assert RecordReader().feed(b"".join(bytes(p) for p in parts)) == [b"abcdefgh"]


def test_zero_length_fragments_without_end_are_refused_at_the_fragment_cap() -> None:
    reader = RecordReader(max_fragments=100)
    with pytest.raises(RecordTooLarge, match="fragments"):
        reader.feed(b"\0\0\0\0" * 100)


def test_one_byte_fragments_are_held_as_their_bytes() -> None:
    reader = RecordReader()
    record = bytes(range(256)) * 8
    stream = b"".join(struct.pack(">I", 1) + record[i : i + 1] for i in range(len(record) - 1))
    assert reader.feed(stream) == []
    assert reader.pending == len(record) - 1
    assert reader.feed(struct.pack(">I", LAST_FRAGMENT | 1) + record[-1:]) == [record]
    assert reader.pending == 0
