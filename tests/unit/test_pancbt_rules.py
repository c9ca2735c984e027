"""pancbt.md "What a valid file is": one test per rule, every way to break it.

Hostile files are made by the independent encoder (``merge_helpers.encode``)
with one field lying at a time; each must fail with exactly the rule that
field breaks, and the error must name the storage path.
"""

from __future__ import annotations

import tracemalloc

import pytest

from merge.pancbt import PancbtError, read_pancbt
from tests.unit.merge_helpers import DATA, ZERO, build, encode, patch_header

PATH = "/storage/2026-11-21T0100/web01/web01-pancbt.vmdk"


def parse(raw: bytes, base_size: int | None = None):
    return read_pancbt(lambda pos, n: raw[pos : pos + n], len(raw), PATH, base_size)


def rule_of(raw: bytes, base_size: int | None = None) -> int:
    with pytest.raises(PancbtError) as e:
        parse(raw, base_size)
    assert e.value.path == PATH and PATH in str(e.value)
    assert f"rule {e.value.rule}" in str(e.value)
    return e.value.rule


def valid(**kw) -> bytes:
    """A valid file with a DATA and a ZERO extent, fields overridable."""
    kw.setdefault("disk_size", 10_000)
    return encode([(100, 4, 512, DATA), (200, 50, 0, ZERO)], b"abcd", **kw)


def test_the_base_file_is_valid() -> None:
    assert len(parse(valid(), base_size=0).extents) == 2


# --- rule 1: magic, version, flags, header_size, header_crc, table_crc ---


@pytest.mark.parametrize(
    "fields",
    [
        {"magic": b"PANCBT\0\1"},
        {"magic": b"pancbt\0\0"},
        {"version": 0},
        {"version": 2},
        {"flags": 1},
        {"flags": 0x8000},
        {"header_size": 511},
        {"header_size": 1024},
        {"header_crc": 0},
    ],
)
def test_rule_1_header(fields) -> None:
    assert rule_of(valid(**fields)) == 1


def test_rule_1_header_crc_covers_every_byte() -> None:
    raw = bytearray(valid())
    raw[56] ^= 1  # inside base_hint: no other rule looks at it
    assert rule_of(bytes(raw)) == 1


def test_rule_1_table_crc() -> None:
    assert rule_of(valid(table_crc=12345)) == 1
    raw = bytearray(valid())
    raw[-4 - 64] ^= 1  # the first entry's offset 100 -> 101: still a valid entry
    assert rule_of(bytes(raw)) == 1


@pytest.mark.parametrize("size", [0, 1, 8, 511])
def test_rule_1_shorter_than_a_header(size: int) -> None:
    assert rule_of(valid()[:size]) == 1


# --- rule 2: block_size ---


@pytest.mark.parametrize("bs", [0, 1, 256, 511, 513, 1000, 4095, 3 << 20, 128 << 20, 2**32 - 1])
def test_rule_2_block_size(bs: int) -> None:
    assert rule_of(valid(block_size=bs)) == 2


@pytest.mark.parametrize("bs", [512, 4096, 65536, 1 << 20, 64 << 20])
def test_rule_2_good_block_sizes(bs: int) -> None:
    parse(valid(block_size=bs))


# --- rule 3: table placement ---


@pytest.mark.parametrize("table_offset", [0, 100, 508, 511])
def test_rule_3_table_offset_inside_header(table_offset: int) -> None:
    raw = patch_header(encode([], disk_size=1), 40, "<Q", table_offset)
    assert rule_of(raw) == 3


def test_rule_3_table_past_end_of_file() -> None:
    raw = valid()
    assert rule_of(raw[:-1]) == 3  # the CRC is cut
    assert rule_of(raw[:-40]) == 3  # an entry is cut


def test_rule_3_table_offset_past_the_file() -> None:
    for table_offset in (len(valid()) - 3, 2**64 - 1):
        assert rule_of(patch_header(valid(), 40, "<Q", table_offset)) == 3


def test_rule_3_huge_claimed_count_allocates_nothing() -> None:
    raw = encode([], disk_size=10, extent_count=2**32 - 1)  # claims a 128 GiB table
    tracemalloc.start()
    try:
        assert rule_of(raw) == 3
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_huge_claimed_table_inside_the_file_is_read_a_chunk_at_a_time() -> None:
    """A sparse file as long as its header claims: its table of zeros fails at
    its first entry, read with its chunk, and never whole (or 3x, as it was)."""
    count = 1 << 20  # a 32 MiB table
    head = encode([], disk_size=10, extent_count=count, table_offset=512)[:512]
    size = 512 + 32 * count + 4
    asked: list[int] = []

    def pread(pos: int, n: int) -> bytes:
        asked.append(n)
        return head[pos : pos + n] if pos < 512 else bytes(min(n, size - pos))

    tracemalloc.start()
    try:
        with pytest.raises(PancbtError) as e:
            read_pancbt(pread, size, PATH)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.rule == 5 and "extent 0 " in e.value.message
    assert max(asked) <= 64 * 1024 and sum(asked) <= 512 + 64 * 1024
    assert peak < 1 << 20


def test_rule_3_table_may_sit_anywhere_after_the_header() -> None:
    # Table at 512, its data after it at 548: "anywhere after the header".
    raw = encode([(0, 4, 548, DATA)], b"", disk_size=10, table_offset=512) + b"wxyz"
    assert parse(raw).extents[0].data_offset == 548


# --- rule 4: sorted, non-overlapping ---


def test_rule_4_unsorted() -> None:
    raw = encode([(200, 10, 0, ZERO), (100, 10, 0, ZERO)], disk_size=1000)
    assert rule_of(raw) == 4


def test_rule_4_overlapping() -> None:
    raw = encode([(100, 10, 0, ZERO), (109, 10, 0, ZERO)], disk_size=1000)
    assert rule_of(raw) == 4


def test_rule_4_same_offset() -> None:
    raw = encode([(100, 10, 0, ZERO), (100, 10, 0, ZERO)], disk_size=1000)
    assert rule_of(raw) == 4


def test_rule_4_adjacent_extents_are_accepted() -> None:
    raw = encode(
        [(100, 10, 0, ZERO), (110, 4, 512, DATA), (114, 1, 0, ZERO)], b"abcd", disk_size=1000
    )
    assert len(parse(raw).extents) == 3


# --- rule 5: length and disk_size ---


def test_rule_5_empty_extent() -> None:
    assert rule_of(encode([(100, 0, 0, ZERO)], disk_size=1000)) == 5


def test_rule_5_past_disk_size() -> None:
    assert rule_of(encode([(995, 6, 0, ZERO)], disk_size=1000)) == 5


def test_rule_5_ends_exactly_at_disk_size() -> None:
    parse(encode([(994, 6, 0, ZERO)], disk_size=1000))


def test_rule_5_offset_plus_length_overflowing_64_bits() -> None:
    raw = encode([(2**64 - 1, 2, 0, ZERO)], disk_size=2**64 - 1)
    assert rule_of(raw) == 5
    raw = encode([(2**63, 2**63, 0, ZERO)], disk_size=2**64 - 1)  # wraps to 0 in 64 bits
    assert rule_of(raw) == 5


# --- rule 6: where the bytes are ---


def test_rule_6_data_inside_the_header() -> None:
    assert rule_of(encode([(0, 4, 511, DATA)], b"abcd", disk_size=10)) == 6
    assert rule_of(encode([(0, 4, 0, DATA)], b"abcd", disk_size=10)) == 6


def test_rule_6_data_past_end_of_file() -> None:
    raw = encode([(0, 4, 10**6, DATA)], b"abcd", disk_size=10)
    assert rule_of(raw) == 6
    raw = encode([(0, 4, 2**64 - 2, DATA)], b"abcd", disk_size=10)  # overflows 64 bits
    assert rule_of(raw) == 6


def test_rule_6_data_may_end_exactly_at_end_of_file() -> None:
    # The table first, then the data as the file's last bytes.
    raw = encode([(0, 4, 548, DATA)], b"", disk_size=10, table_offset=512) + b"wxyz"
    parse(raw)


def test_rule_6_zero_extent_with_data_offset() -> None:
    assert rule_of(encode([(0, 4, 512, ZERO)], b"abcd", disk_size=10)) == 6


# --- rule 7: kind and reserved bytes ---


@pytest.mark.parametrize("kind", [0, 3, 255, 2**32 - 1])
def test_rule_7_unknown_kind(kind: int) -> None:
    assert rule_of(encode([(0, 4, 0, kind)], disk_size=10)) == 7


def test_rule_7_entry_reserved_bytes() -> None:
    assert rule_of(encode([(0, 4, 0, ZERO, 1)], disk_size=10)) == 7


def test_rule_7_header_reserved_bytes() -> None:
    assert rule_of(valid(reserved=b"\1" + bytes(195))) == 7


# --- rule 8: the base's actual size ---


def test_rule_8_base_size_mismatch() -> None:
    raw = build([(0, b"x")], 100, base_size=50)
    assert rule_of(raw, base_size=51) == 8
    assert rule_of(raw, base_size=0) == 8
    parse(raw, base_size=50)


def test_rule_8_zero_means_not_checked() -> None:
    raw = build([(0, b"x")], 100, base_size=0)
    parse(raw, base_size=12345)


def test_rule_8_skipped_without_a_base() -> None:
    parse(build([(0, b"x")], 100, base_size=50), base_size=None)


# --- order: the first rule broken is the one named ---


def test_header_rules_come_before_table_rules() -> None:
    raw = encode([(200, 10, 0, 9), (100, 0, 0, ZERO)], disk_size=10, block_size=3)
    assert rule_of(raw) == 2


def test_each_extent_in_file_order() -> None:
    raw = encode([(0, 4, 0, 9), (0, 0, 0, ZERO)], disk_size=10)  # extent 0: rule 7 first
    assert rule_of(raw) == 7


def test_extent_rules_before_the_table_crc() -> None:
    """The CRC is known only once the whole table is read: a bad entry is named first."""
    raw = encode([(0, 4, 0, ZERO), (2, 4, 0, ZERO)], disk_size=10, table_crc=1)
    assert rule_of(raw) == 4


@pytest.mark.parametrize("count", [2047, 2048, 2049, 4097])
def test_tables_across_chunks(count: int) -> None:
    """Entries checked a chunk (2,048) at a time: the order across chunk edges."""
    extents = [(2 * i, 1, 0, ZERO) for i in range(count)]
    assert parse(encode(extents, disk_size=2 * count)).extents == tuple(extents)
    for at in sorted({min(2048, count - 1), count - 1}):  # a second chunk's first, the last
        unsorted = [*extents[:at], (0, 1, 0, ZERO), *extents[at + 1 :]]
        with pytest.raises(PancbtError) as e:
            parse(encode(unsorted, disk_size=2 * count))
        assert e.value.rule == 4 and e.value.message.startswith(f"extent {at} ")
    past = [*extents[:-1], (2 * count, 1, 0, ZERO)]
    assert rule_of(encode(past, disk_size=2 * count)) == 5
