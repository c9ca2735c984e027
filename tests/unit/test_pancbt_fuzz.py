"""Fuzzing the pancbt reader: random and mutated files.

Whatever the bytes, the reader returns a valid file or raises PancbtError:
no other exception, no hang (hypothesis' deadline), no allocation sized by
a claimed count.  What it accepts satisfies every rule, and an extent map
can always be built on it.
"""

from __future__ import annotations

import struct
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merge.extents import ExtentMap
from merge.pancbt import HEADER_SIZE, ExtentKind, Pancbt, PancbtError, read_pancbt
from tests.unit.merge_helpers import DATA, ZERO, build, encode

FUZZ = settings(max_examples=400, deadline=500, suppress_health_check=[HealthCheck.too_slow])


def try_parse(raw: bytes, base_size: int | None) -> Pancbt | None:
    try:
        p = read_pancbt(lambda pos, n: raw[pos : pos + n], len(raw), "/s/f-pancbt.vmdk", base_size)
    except PancbtError as e:
        assert 1 <= e.rule <= 8
        return None
    check_accepted(p, raw, base_size)
    return p


def check_accepted(p: Pancbt, raw: bytes, base_size: int | None) -> None:
    """Every rule, checked again independently on what the reader accepted."""
    h = p.header
    assert raw[:8] == b"PANCBT\0\0" and (h.version, h.flags, h.header_size) == (1, 0, 512)
    assert struct.unpack_from("<I", raw, 508)[0] == zlib.crc32(raw[:508])
    assert h.block_size & (h.block_size - 1) == 0 and 512 <= h.block_size <= 64 << 20
    end = h.table_offset + 32 * h.extent_count
    assert h.table_offset >= 512 and end + 4 <= len(raw)
    assert struct.unpack_from("<I", raw, end)[0] == zlib.crc32(raw[h.table_offset : end])
    prev = 0
    for e in p.extents:
        assert e.offset >= prev and e.length >= 1 and e.offset + e.length <= h.disk_size
        if e.kind == ExtentKind.DATA:
            assert e.data_offset >= 512 and e.data_offset + e.length <= len(raw)
        else:
            assert e.kind == ExtentKind.ZERO and e.data_offset == 0
        prev = e.offset + e.length
    if base_size is not None and h.base_size:
        assert h.base_size == base_size
    ExtentMap(p.extents, h.disk_size, base_size or 0)


@given(st.binary(max_size=2048), st.none() | st.integers(0, 2**64))
@FUZZ
def test_random_bytes(raw: bytes, base_size: int | None) -> None:
    try_parse(raw, base_size)


@given(st.binary(min_size=HEADER_SIZE - 8, max_size=1024))
@FUZZ
def test_random_bytes_after_a_good_magic(tail: bytes) -> None:
    try_parse(b"PANCBT\0\0" + tail, None)


def seeds() -> st.SearchStrategy[bytes]:
    return st.sampled_from(
        [
            build([(100, b"abcd"), (200, 50), (300, b"\xff" * 40)], 10_000, base_size=5000),
            build([], 1),
            build([(0, 1), (1, b"x"), (2, 1)], 3),
            encode([(0, 4, 548, DATA)], b"", disk_size=10, table_offset=512) + b"wxyz",
            encode([(5, 5, 0, ZERO)], disk_size=2**64 - 1, block_size=64 << 20),
        ]
    )


@given(seeds(), st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=8))
@FUZZ
def test_mutated_valid_files(seed: bytes, flips: list[tuple[int, int]]) -> None:
    raw = bytearray(seed)
    for pos, value in flips:
        raw[pos % len(raw)] = value
    try_parse(bytes(raw), 5000)


@given(
    seeds(),
    st.integers(0, 127),
    st.sampled_from(["<B", "<H", "<I", "<Q"]),
    st.integers(0, 2**64 - 1),
    st.booleans(),
)
@FUZZ
def test_mutated_fields_with_checksums_fixed(
    seed: bytes, at: int, fmt: str, value: int, in_table: bool
) -> None:
    """Mutations that pass the CRCs, so the deeper rules are reached."""
    raw = bytearray(seed)
    table_offset, count = (
        struct.unpack_from("<QI", raw, 40)[0],
        struct.unpack_from("<I", raw, 36)[0],
    )
    width = struct.calcsize(fmt)
    value &= (1 << (8 * width)) - 1
    if in_table and count:
        pos = table_offset + at % (32 * count - width + 1)
    else:
        pos = at % (508 - width + 1)
    struct.pack_into(fmt, raw, pos, value)
    table_offset, count = struct.unpack_from("<Q", raw, 40)[0], struct.unpack_from("<I", raw, 36)[0]
    struct.pack_into("<I", raw, 508, zlib.crc32(bytes(raw[:508])))
    end = table_offset + 32 * count
    if end + 4 <= len(raw):
        struct.pack_into("<I", raw, end, zlib.crc32(bytes(raw[table_offset:end])))
    try_parse(bytes(raw), None)


@given(seeds(), st.integers(0, 4096))
@FUZZ
def test_truncated_and_extended_files(seed: bytes, cut: int) -> None:
    try_parse(seed[: cut % (len(seed) + 1)], None)
    try_parse(seed + bytes(cut), None)


def test_short_reads_are_a_rule_3_error() -> None:
    """A file that shrinks while being read: the reader never trusts the size it was told."""
    raw = build([(0, b"abc")], 10)
    try:
        read_pancbt(lambda pos, n: raw[pos : pos + n][: max(0, 530 - pos)], len(raw), "p")
    except PancbtError as e:
        assert e.rule == 3
    else:  # pragma: no cover
        raise AssertionError("accepted a short table")
