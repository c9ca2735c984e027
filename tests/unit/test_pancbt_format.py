"""merge.pancbt: the schema, the reader on valid files, the streaming writer.

The reader is checked against files made by the independent ``struct``
encoder of ``merge_helpers``; the writer's output is decoded by the
independent decoder.  pancbt.md's worked example is reproduced exactly.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merge import pancbt
from merge.pancbt import (
    EXTENT,
    HEADER,
    HEADER_SIZE,
    DataChange,
    Extent,
    ExtentKind,
    PancbtError,
    ZeroChange,
    pack_table,
    read_pancbt,
    write_pancbt,
)
from tests.unit.merge_helpers import DATA, MIB, ZERO, build, decode, encode, naive_merged


def parse(raw: bytes, base_size: int | None = None, path: str = "/s/x-pancbt.vmdk"):
    return read_pancbt(lambda pos, n: raw[pos : pos + n], len(raw), path, base_size)


# --- pancbt.md, "Worked example" -------------------------------------------------------

EXAMPLE_A = bytes(range(256)) * 16  # 4096 bytes at 1 MiB
EXAMPLE_B = bytes(reversed(range(256))) * 32  # 8192 bytes in the grown tail


def worked_example() -> bytes:
    out = io.BytesIO()
    write_pancbt(
        out,
        disk_size=12582912,
        base_size=10485760,
        block_size=4096,
        changes=[
            DataChange(1048576, EXAMPLE_A),
            ZeroChange(2097152, 65536),
            DataChange(11534336, EXAMPLE_B),
        ],
        created=1_795_000_000,
        base_hint="2026-11-20T0100/web01/web01-flat.vmdk",
    )
    return out.getvalue()


def test_worked_example_layout_exactly() -> None:
    raw = worked_example()
    fields = struct.unpack_from("<8sHHIQQIIQQ", raw)
    assert fields == (
        b"PANCBT\0\0", 1, 0, 512, 12582912, 10485760, 4096, 3, 12800, 1_795_000_000,
    )  # fmt: skip
    assert raw[312:508] == bytes(196)
    assert struct.unpack_from("<I", raw, 508)[0] == zlib.crc32(raw[:508])
    table = raw[12800 : 12800 + 96]
    assert list(struct.iter_unpack("<QQQII", table)) == [
        (1048576, 4096, 512, DATA, 0),
        (2097152, 65536, 0, ZERO, 0),
        (11534336, 8192, 4608, DATA, 0),
    ]
    assert struct.unpack_from("<I", raw, 12800 + 96)[0] == zlib.crc32(table)
    assert len(raw) == 12800 + 96 + 4
    assert raw[512:4608] == EXAMPLE_A and raw[4608:12800] == EXAMPLE_B


def test_worked_example_reads_back() -> None:
    p = parse(worked_example(), base_size=10485760)
    assert p.header.disk_size == 12582912 and p.header.table_offset == 12800
    assert p.header.hint == "2026-11-20T0100/web01/web01-flat.vmdk"
    assert p.extents == (
        Extent(1048576, 4096, 512, ExtentKind.DATA),
        Extent(2097152, 65536, 0, ExtentKind.ZERO),
        Extent(11534336, 8192, 4608, ExtentKind.DATA),
    )
    assert (p.data_bytes, p.zero_bytes) == (12288, 65536)


def test_worked_example_from_independent_encoder() -> None:
    raw = build(
        [(1048576, EXAMPLE_A), (2097152, 65536), (11534336, EXAMPLE_B)],
        12582912,
        base_size=10485760,
    )
    assert parse(raw, 10485760).header.table_offset == 12800


# --- the schema --------------------------------------------------------------------------


def test_schema_sizes_and_checksums() -> None:
    assert HEADER.sizeof() == HEADER_SIZE and EXTENT.sizeof() == 32
    raw = HEADER.build(
        {
            "fields": {
                "value": {"disk_size": 1, "block_size": 512, "extent_count": 0, "table_offset": 512}
            }
        }
    )
    assert raw[:8] == b"PANCBT\0\0" and struct.unpack_from("<HHI", raw, 8) == (1, 0, 512)
    assert struct.unpack_from("<I", raw, 508)[0] == zlib.crc32(raw[:508])


def test_empty_table_is_just_a_crc_of_zero_bytes() -> None:
    assert pack_table([]) == struct.pack("<I", 0)
    raw = encode([], disk_size=100)
    assert len(raw) == 516 and parse(raw).extents == ()


def test_pack_table_matches_independent_layout() -> None:
    extents = [(0, 10, 512, 1), (10, 5, 0, 2)]
    want = b"".join(struct.pack("<QQQII", *e, 0) for e in extents)
    assert pack_table(extents) == want + struct.pack("<I", zlib.crc32(want))


# --- the writer --------------------------------------------------------------------------


def write(changes, disk_size: int, **kw) -> bytes:
    out = io.BytesIO()
    write_pancbt(
        out, disk_size=disk_size, block_size=kw.pop("block_size", 4096), changes=changes, **kw
    )
    return out.getvalue()


def test_writer_coalesces_adjacent_changes_of_one_kind() -> None:
    raw = write(
        [
            DataChange(0, b"a" * 10),
            DataChange(10, b"b" * 5),
            ZeroChange(15, 5),
            ZeroChange(20, 5),
            DataChange(25, b"c"),
            DataChange(30, b"d"),
        ],
        100,
    )
    _, entries = decode(raw)
    assert entries == [
        (0, 15, 512, DATA),
        (15, 10, 0, ZERO),
        (25, 1, 527, DATA),
        (30, 1, 528, DATA),
    ]
    assert raw[512:529] == b"a" * 10 + b"b" * 5 + b"cd"


@pytest.mark.parametrize(
    "changes",
    [
        [DataChange(10, b"x"), DataChange(5, b"y")],  # unsorted
        [DataChange(0, b"xx"), DataChange(1, b"y")],  # overlapping
        [ZeroChange(0, 0)],  # empty
        [DataChange(99, b"xy")],  # past disk_size
        [ZeroChange(-1, 2)],
    ],
)
def test_writer_refuses_what_it_could_not_write_validly(changes) -> None:
    with pytest.raises(ValueError):
        write(changes, 100)


@pytest.mark.parametrize("block_size", [0, 256, 1000, 128 * MIB])
def test_writer_refuses_bad_block_size(block_size: int) -> None:
    with pytest.raises(ValueError):
        write([], 100, block_size=block_size)


def test_writer_spools_large_tables_to_disk() -> None:
    changes = [ZeroChange(i * 2, 1) for i in range(50_000)]  # 1.6 MB of table
    raw = write(changes, 100_000)
    p = parse(raw)
    assert len(p.extents) == 50_000 and p.extents[-1] == Extent(99_998, 1, 0, ExtentKind.ZERO)


def test_base_hint_is_truncated_at_a_character_boundary() -> None:
    raw = write([], 10, base_hint="é" * 200)  # 400 bytes of UTF-8
    hint = parse(raw).header.hint
    assert hint == "é" * 128


def test_base_hint_undecodable_is_not_a_rule() -> None:
    raw = encode([], disk_size=10, base_hint=b"\xff\xfe bad")
    assert parse(raw).header.hint.endswith(" bad")


change_lists = st.lists(
    st.tuples(
        st.integers(0, 64),  # gap before
        st.one_of(st.binary(min_size=1, max_size=40), st.integers(1, 40)),
    ),
    max_size=12,
)


@given(change_lists, st.integers(0, 50))
@settings(max_examples=200, deadline=None)
def test_writer_round_trips_through_independent_decoder(spec, tail: int) -> None:
    changes = []
    pos = 0
    for gap, what in spec:
        pos += gap
        if isinstance(what, bytes):
            changes.append(DataChange(pos, what))
            pos += len(what)
        else:
            changes.append(ZeroChange(pos, what))
            pos += what
    disk_size = pos + tail
    raw = write(changes, disk_size)
    base = bytes(range(256)) * 2
    # The file says what the changes said: same merged image as the naive encoder's.
    naive = build(
        [(c.offset, c.data if isinstance(c, DataChange) else c.length) for c in changes], disk_size
    )
    assert naive_merged(base, raw) == naive_merged(base, naive)
    parsed = parse(raw)
    assert parsed.header.extent_count == len(parsed.extents) <= len(changes)


def test_reader_names_rule_and_path() -> None:
    with pytest.raises(PancbtError) as e:
        parse(b"nope", path="/storage/d/x-pancbt.vmdk")
    assert e.value.rule == 1 and e.value.path == "/storage/d/x-pancbt.vmdk"
    assert "/storage/d/x-pancbt.vmdk" in str(e.value) and "rule 1" in str(e.value)


_u64, _u32 = st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)


@settings(max_examples=300)
@given(st.lists(st.tuples(_u64, _u64, _u64, _u32, _u32), max_size=20))
def test_the_readers_struct_reads_what_the_schema_builds(entries: list) -> None:
    """The reader unpacks the table with ``_ENTRY`` (speed), not the ``EXTENT``
    schema: the same fields from the same bytes, whatever their values."""
    raw = b"".join(
        EXTENT.build(dict(offset=o, length=n, data_offset=d, kind=k, reserved=r))
        for o, n, d, k, r in entries
    )
    assert list(pancbt._ENTRY.iter_unpack(raw)) == entries
