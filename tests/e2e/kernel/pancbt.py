"""The tests' own writer, reader and naive merge of `-pancbt.vmdk` files.

Written from docs (pancbt.md, version 1) with `struct` alone, and deliberately
sharing nothing with the server's `merge/` package: the expected bytes of
every merged image come from here, so a bug in the server's reader or merge
cannot hide by appearing on both sides of a comparison.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"PANCBT\0\0"
HEADER = struct.Struct("<8sHHIQQIIQQ256s196sI")  # 512 bytes, CRC last
ENTRY = struct.Struct("<QQQII")  # 32 bytes
DATA, ZERO = 1, 2
assert HEADER.size == 512 and ENTRY.size == 32


@dataclass(frozen=True)
class Change:
    """One extent as the writer sees it: DATA with its bytes, or ZERO."""

    offset: int
    length: int
    data: bytes | None = None  # None: a ZERO extent

    @property
    def kind(self) -> int:
        return ZERO if self.data is None else DATA


def encode(
    disk_size: int,
    changes: list[Change],
    *,
    base_size: int = 0,
    block_size: int = 4096,
    created: int = 1795000000,
    base_hint: str = "",
    table_first: bool = False,
    reverse_data: bool = False,
) -> bytes:
    """A valid pancbt file. The table goes after the data, or right after the header
    (`table_first`); `reverse_data` stores the extents' bytes in reverse order."""
    for c in changes:
        if c.data is not None and len(c.data) != c.length:
            raise ValueError(f"change at {c.offset}: {len(c.data)} bytes for length {c.length}")
    table_len = ENTRY.size * len(changes) + 4
    data_start = 512 + (table_len if table_first else 0)
    order = [c for c in changes if c.data is not None]
    if reverse_data:
        order.reverse()
    data_offsets: dict[int, int] = {}
    blob = bytearray()
    for c in order:
        data_offsets[id(c)] = data_start + len(blob)
        blob += c.data or b""
    entries = b"".join(
        ENTRY.pack(c.offset, c.length, data_offsets.get(id(c), 0), c.kind, 0) for c in changes
    )
    table = entries + struct.pack("<I", zlib.crc32(entries))
    table_offset = 512 if table_first else 512 + len(blob)
    hint = base_hint.encode().ljust(256, b"\0")
    fields = (MAGIC, 1, 0, 512, disk_size, base_size, block_size, len(changes), table_offset)
    head = HEADER.pack(*fields, created, hint, b"\0" * 196, 0)[:508]
    header = head + struct.pack("<I", zlib.crc32(head))
    body = table + bytes(blob) if table_first else bytes(blob) + table
    return header + body


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    data_offset: int
    kind: int


@dataclass(frozen=True)
class Parsed:
    disk_size: int
    base_size: int
    extents: tuple[Extent, ...]


class Invalid(ValueError):
    pass


def parse(data: bytes) -> Parsed:
    """Check every rule of "What a valid file is" except the base size (rule 8)."""
    if len(data) < 512:
        raise Invalid("shorter than the header")
    (magic, version, flags, hsize, disk_size, base_size, block_size, count, table_offset) = (
        HEADER.unpack(data[:512])[:9]
    )
    header_crc = struct.unpack("<I", data[508:512])[0]
    if magic != MAGIC or version != 1 or flags != 0 or hsize != 512:
        raise Invalid("rule 1: magic, version, flags or header_size")
    if zlib.crc32(data[:508]) != header_crc:
        raise Invalid("rule 1: header_crc")
    if block_size & (block_size - 1) or not 512 <= block_size <= 64 << 20:
        raise Invalid("rule 2: block_size")
    table_end = table_offset + ENTRY.size * count
    if table_offset < 512 or table_end + 4 > len(data):
        raise Invalid("rule 3: table outside the file")
    entries = data[table_offset:table_end]
    if zlib.crc32(entries) != struct.unpack("<I", data[table_end : table_end + 4])[0]:
        raise Invalid("rule 1: table_crc")
    extents = []
    end = 0
    for i in range(count):
        off, length, doff, kind, reserved = ENTRY.unpack_from(entries, i * ENTRY.size)
        if extents and off < end:
            raise Invalid("rule 4: extents unsorted or overlapping")
        if length < 1 or off + length > disk_size:
            raise Invalid("rule 5: extent length or end")
        if kind == DATA and (doff < 512 or doff + length > len(data)):
            raise Invalid("rule 6: DATA outside the file")
        if kind == ZERO and doff != 0:
            raise Invalid("rule 6: ZERO with a data_offset")
        if kind not in (DATA, ZERO) or reserved != 0:
            raise Invalid("rule 7: kind or reserved")
        extents.append(Extent(off, length, doff, kind))
        end = off + length
    return Parsed(disk_size, base_size, tuple(extents))


def naive_merge(base: bytes, pancbt: bytes) -> bytes:
    """The merged image, straight from "The merged image" of pancbt.md."""
    p = parse(pancbt)
    if p.base_size and p.base_size != len(base):
        raise Invalid("rule 8: base size differs from base_size")
    out = bytearray(p.disk_size)
    keep = min(len(base), p.disk_size)
    out[:keep] = base[:keep]
    for e in p.extents:
        if e.kind == DATA:
            out[e.offset : e.offset + e.length] = pancbt[e.data_offset : e.data_offset + e.length]
        else:
            out[e.offset : e.offset + e.length] = bytes(e.length)
    return bytes(out)


def apply_changes(base: bytes, disk_size: int, changes: list[Change]) -> bytes:
    """The disk the writer meant: base resized to disk_size, then the changes written.
    A second, simpler derivation that `naive_merge` of the encoded file must agree with."""
    disk = bytearray(base[:disk_size]) + bytearray(max(0, disk_size - len(base)))
    for c in changes:
        disk[c.offset : c.offset + c.length] = c.data if c.data is not None else bytes(c.length)
    return bytes(disk)
