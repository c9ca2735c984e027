"""An independent writer and a naive reader of ``-pancbt.vmdk`` files.

Written from ``shared/spec/pancbt.md`` alone, with ``struct`` and ``zlib``:
nothing here imports the project's ``merge`` package, so the tests and the
benchmark can compute the bytes a merged image must have without trusting the
code under test.

=================  ======================================================
function           what it does
=================  ======================================================
``build``          bytes of a valid pancbt file: header, DATA bytes, table
``merge_into``     write base + overlay into an open file, extent by
                   extent (the spec's "merged image", done the slow way)
``merged_bytes``   the same for small images held in memory
=================  ======================================================

An extent is given to ``build`` as ``(offset, data)`` for DATA or
``(offset, length)`` with an ``int`` length for ZERO.  Adjacent DATA extents
are coalesced, as the spec asks of a writer.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from typing import BinaryIO

MAGIC = b"PANCBT\0\0"
HEADER = struct.Struct("<8sHHIQQIIQQ256s196x")  # 508 bytes, then header_crc
ENTRY = struct.Struct("<QQQII")
DATA, ZERO = 1, 2
HEADER_SIZE = 512


def _coalesce(extents: list[tuple[int, bytes | int]]) -> list[tuple[int, bytes | int]]:
    out: list[tuple[int, bytes | int]] = []
    for offset, what in sorted(extents, key=lambda e: e[0]):
        if out and isinstance(what, bytes) and isinstance(out[-1][1], bytes):
            prev_off, prev = out[-1]
            if prev_off + len(prev) == offset:
                out[-1] = (prev_off, prev + what)
                continue
        out.append((offset, what))
    return out


def build(
    extents: list[tuple[int, bytes | int]],
    disk_size: int,
    *,
    base_size: int = 0,
    block_size: int = 4096,
    created: int = 1_795_000_000,
    base_hint: str = "",
) -> bytes:
    """A pancbt file: header, then the DATA bytes, then the table and its CRC."""
    data = bytearray()
    entries = bytearray()
    for offset, what in _coalesce(extents):
        if isinstance(what, int):
            entries += ENTRY.pack(offset, what, 0, ZERO, 0)
        else:
            entries += ENTRY.pack(offset, len(what), HEADER_SIZE + len(data), DATA, 0)
            data += what
    table_offset = HEADER_SIZE + len(data)
    header = HEADER.pack(
        MAGIC,
        1,
        0,
        HEADER_SIZE,
        disk_size,
        base_size,
        block_size,
        len(entries) // ENTRY.size,
        table_offset,
        created,
        base_hint.encode(),
    )
    header += struct.pack("<I", zlib.crc32(header))
    return header + bytes(data) + bytes(entries) + struct.pack("<I", zlib.crc32(entries))


def _extents(pancbt: bytes) -> tuple[int, list[tuple[int, int, int, int]]]:
    """disk_size and the (offset, length, data_offset, kind) entries, checked naively."""
    fields = HEADER.unpack_from(pancbt)
    magic, version, flags, header_size, disk_size = fields[:5]
    count, table_offset = fields[7], fields[8]
    if (magic, version, flags, header_size) != (MAGIC, 1, 0, HEADER_SIZE):
        raise ValueError("not a version 1 pancbt header")
    table = pancbt[table_offset : table_offset + ENTRY.size * count]
    (crc,) = struct.unpack_from("<I", pancbt, table_offset + len(table))
    if crc != zlib.crc32(table):
        raise ValueError("table_crc mismatch")
    return disk_size, [e[:4] for e in ENTRY.iter_unpack(table)]


def merge_into(out: BinaryIO, base: BinaryIO, pancbt: bytes) -> int:
    """Write the merged image to ``out`` (positioned at 0); return its size."""
    disk_size, entries = _extents(pancbt)
    shutil.copyfileobj(base, out, 1 << 20)
    out.truncate(disk_size)  # a shrunk disk: cut
    end = out.seek(0, io.SEEK_END)
    out.write(bytes(disk_size - end))  # a grown disk: zeros past the base
    for offset, length, data_offset, kind in entries:
        out.seek(offset)
        if kind == DATA:
            out.write(pancbt[data_offset : data_offset + length])
        else:
            out.write(bytes(length))
    return disk_size


def merged_bytes(base: bytes, pancbt: bytes) -> bytes:
    """The merged image of a small base and overlay, in memory."""
    out = io.BytesIO()
    merge_into(out, io.BytesIO(base), pancbt)
    return out.getvalue()
