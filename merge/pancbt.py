"""The ``-pancbt.vmdk`` format, version 1 (``shared/spec/pancbt.md``): one schema, a
strict reader and a streaming writer.

Design notes
------------
The file is described once, declaratively, with ``construct``:

==============  =========================================================
schema          what it is
==============  =========================================================
``HEADER``      the 512-byte header; ``header_crc`` is a ``Checksum`` over
                the 508 bytes before it, so building computes it and
                parsing verifies it
``EXTENT``      one 32-byte extent entry
``ENTRIES``     ``extent_count`` entries (compiled: 10,000 in ~15 ms), the
                writer's; the reader unpacks the same 32 bytes with one
                ``struct`` format (``_ENTRY``, checked against ``EXTENT`` by
                the tests): 1.6 µs an entry, checks included, against ~33
                through construct (300,000 entries: 0.5 s, not 10 s)
``TABLE``       the entries' raw bytes and ``table_crc``, a ``Checksum``
                (built by the writer; the reader checks the CRC as it goes)
==============  =========================================================

The reader (:func:`read_pancbt`) checks every rule of "What a valid file is"
and raises :class:`PancbtError` naming the rule and the storage path.  It
never trusts a length: the table is read only once rule 3 has shown that
``table_offset + 32 × extent_count + 4`` lies inside the file, and then
:data:`TABLE_CHUNK` entries at a time, each chunk added to a running CRC
and its entries checked before the next is read; so a claimed count never
sizes an allocation.  Memory is the extents kept (what a valid table of
that count needs) and one chunk, never the table's bytes: a sparse file
whose header claims 2**32 - 1 entries (a 128 GiB table of zeros) fails at
its first entry, without reading the rest.  All arithmetic is on Python's
unbounded integers, so an ``offset + length`` past 2**64 is simply too
large.

Rules are checked in this order, and the first failure is reported: header
rules 1, 2, 3, then rule 7 for the header's reserved bytes, then each extent
in file order with rules 4, 5, 6, 7, then the table CRC (rule 1), and last
rule 8 when the caller gave the base's actual size.  (The CRC last, as it
can only be known once every entry is read: checking it first would read a
corrupt header's whole claimed table before rejecting anything.)

Where the spec is silent (choices, also listed in ``docs/namespace-notes.md``):

* a file shorter than the 512-byte header fails rule 1 (no valid magic);
* "reserved bytes are zero" (rule 7) covers the header's 196 reserved bytes
  as well as each entry's 4;
* ``base_hint`` is never validated: undecodable UTF-8 is shown with
  replacement characters, and the writer truncates it at a character
  boundary to fit 256 bytes;
* the writer refuses (``ValueError``) changes it could not write as a valid
  file: unsorted, overlapping, empty or past ``disk_size``.
"""

from __future__ import annotations

import enum
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, BinaryIO, NamedTuple

from construct import Array as CArray
from construct import (
    Bytes,
    Checksum,
    ChecksumError,
    Const,
    ConstError,
    ConstructError,
    Default,
    Int16ul,
    Int32ul,
    Int64ul,
    RawCopy,
    Struct,
    this,
)

MAGIC = b"PANCBT\0\0"
VERSION = 1
HEADER_SIZE = 512
EXTENT_SIZE = 32
CRC_SIZE = 4
MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 64 * 1024 * 1024
BASE_HINT_SIZE = 256


def crc32(data: bytes, start: int = 0) -> int:
    """CRC-32 (ISO-HDLC), as ``zlib.crc32`` computes it: the format's only checksum
    (``start``: the CRC of the bytes before ``data``, for a running one)."""
    return zlib.crc32(data, start)


# --- the schema -----------------------------------------------------------

HEADER_FIELDS = Struct(
    "magic" / Const(MAGIC),
    "version" / Default(Int16ul, VERSION),
    "flags" / Default(Int16ul, 0),
    "header_size" / Default(Int32ul, HEADER_SIZE),
    "disk_size" / Int64ul,
    "base_size" / Default(Int64ul, 0),
    "block_size" / Int32ul,
    "extent_count" / Int32ul,
    "table_offset" / Int64ul,
    "created" / Default(Int64ul, 0),
    "base_hint" / Default(Bytes(BASE_HINT_SIZE), bytes(BASE_HINT_SIZE)),
    "reserved" / Default(Bytes(196), bytes(196)),
)

HEADER = Struct(
    "fields" / RawCopy(HEADER_FIELDS),
    "header_crc" / Checksum(Int32ul, crc32, this.fields.data),
)

EXTENT = Struct(
    "offset" / Int64ul,
    "length" / Int64ul,
    "data_offset" / Int64ul,
    "kind" / Int32ul,
    "reserved" / Default(Int32ul, 0),
)

ENTRIES = CArray(this.extent_count, EXTENT)
_ENTRIES_FAST = ENTRIES.compile()  # the writer's

# The reader's view of one EXTENT: the same 32 bytes as one ``struct`` format
# (tests/unit/test_pancbt_format.py builds entries with EXTENT and reads them
# with this), because a table of 300,000 entries parsed through construct's
# Containers took ~10 s, the server's loop held (a first LOOKUP of the image).
_ENTRY = struct.Struct("<QQQII")  # offset, length, data_offset, kind, reserved
assert _ENTRY.size == EXTENT.sizeof()

TABLE = Struct(
    "entries" / Bytes(this._.extent_count * EXTENT_SIZE),
    "table_crc" / Checksum(Int32ul, crc32, this.entries),
)

assert HEADER.sizeof() == HEADER_SIZE and EXTENT.sizeof() == EXTENT_SIZE


class ExtentKind(enum.IntEnum):
    """The ``kind`` of an extent entry."""

    DATA = 1
    ZERO = 2


class PancbtError(Exception):
    """A pancbt file breaks rule ``rule`` of pancbt.md "What a valid file is"."""

    def __init__(self, rule: int, path: str, message: str) -> None:
        super().__init__(f"{path}: pancbt rule {rule}: {message}")
        self.rule = rule
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Header:
    """The header fields, as read (``header_crc`` already verified)."""

    version: int
    flags: int
    header_size: int
    disk_size: int
    base_size: int
    block_size: int
    extent_count: int
    table_offset: int
    created: int
    base_hint: bytes = field(repr=False)
    reserved: bytes = field(repr=False)

    @property
    def hint(self) -> str:
        """``base_hint`` up to its first NUL, decoded leniently (never used to find the base)."""
        return self.base_hint.split(b"\0", 1)[0].decode("utf-8", "replace")


class Extent(NamedTuple):
    """One extent entry: ``length`` bytes at ``offset`` of the merged image."""

    offset: int
    length: int
    data_offset: int
    kind: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class Pancbt:
    """A validated pancbt file: its header, its extents in order, and its size."""

    header: Header
    extents: tuple[Extent, ...]
    file_size: int

    @property
    def data_bytes(self) -> int:
        return sum(e.length for e in self.extents if e.kind == ExtentKind.DATA)

    @property
    def zero_bytes(self) -> int:
        return sum(e.length for e in self.extents if e.kind == ExtentKind.ZERO)


# --- reading ----------------------------------------------------------------

Pread = Callable[[int, int], bytes]
"""``pread(pos, n)``: up to ``n`` bytes at ``pos`` (fewer only at end of file)."""


TABLE_CHUNK = 2048
"""Extent entries read, checksummed and checked at a time (64 KiB)."""


def read_pancbt(pread: Pread, file_size: int, path: str, base_size: int | None = None) -> Pancbt:
    """Read and validate a whole pancbt file.

    ``file_size`` is the file's size (from ``fstat`` of the open file);
    ``base_size`` the base image's actual size, for rule 8, or ``None`` when
    no base is at hand (``pancbt inspect``).  Raises :class:`PancbtError`.
    """
    header = parse_header(pread(0, HEADER_SIZE), file_size, path)
    extents = read_table(pread, header, file_size, path)
    pancbt = Pancbt(header, extents, file_size)
    if base_size is not None:
        check_base_size(pancbt, base_size, path)
    return pancbt


def parse_header(raw: bytes, file_size: int, path: str) -> Header:
    """Rules 1, 2, 3 and the header's part of rule 7, from the first 512 bytes."""
    if file_size < HEADER_SIZE or len(raw) < HEADER_SIZE:
        raise PancbtError(1, path, f"{file_size} bytes: shorter than the {HEADER_SIZE}-byte header")
    try:
        parsed = HEADER.parse(raw[:HEADER_SIZE])
    except ConstError:
        raise PancbtError(1, path, f"magic is {raw[:8]!r}, not {MAGIC!r}") from None
    except ChecksumError:
        raise PancbtError(1, path, "header_crc does not match bytes 0 to 507") from None
    except ConstructError as e:  # pragma: no cover - 512 bytes always parse
        raise PancbtError(1, path, f"unreadable header: {e}") from None
    f = parsed.fields.value
    h = Header(**{k.name: f[k.name] for k in fields(Header)})
    # Rule 1: magic (above), version, flags, header_size, header_crc (above).
    if h.version != VERSION:
        raise PancbtError(1, path, f"version is {h.version}, not {VERSION}")
    if h.flags != 0:
        raise PancbtError(1, path, f"unknown flags {h.flags:#06x}")
    if h.header_size != HEADER_SIZE:
        raise PancbtError(1, path, f"header_size is {h.header_size}, not {HEADER_SIZE}")
    # Rule 2: a power of two from 512 to 64 MiB.
    bs = h.block_size
    if not (MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE and bs & (bs - 1) == 0):
        raise PancbtError(2, path, f"block_size {bs} is not a power of two from 512 to 64 MiB")
    # Rule 3: the table and its CRC inside the file, after the header.
    if h.table_offset < HEADER_SIZE:
        raise PancbtError(3, path, f"table_offset {h.table_offset} is inside the header")
    table_end = h.table_offset + h.extent_count * EXTENT_SIZE + CRC_SIZE
    if table_end > file_size:
        raise PancbtError(
            3,
            path,
            f"{h.extent_count} extents at {h.table_offset} end at {table_end}, "
            f"past the end of the {file_size}-byte file",
        )
    # Rule 7, header part: reserved bytes are zero.
    if any(h.reserved):
        raise PancbtError(7, path, "the header's reserved bytes 312 to 507 are not zero")
    return h


def read_table(pread: Pread, header: Header, file_size: int, path: str) -> tuple[Extent, ...]:
    """Rules 4, 5, 6 and 7 for each entry in order, then the table CRC (rule 1):
    :data:`TABLE_CHUNK` entries read at a time, none read past a bad one."""
    extents: list[Extent] = []
    crc = 0
    pos = header.table_offset
    for first in range(0, header.extent_count, TABLE_CHUNK):
        count = min(TABLE_CHUNK, header.extent_count - first)
        raw = _read_table_part(pread, pos, count * EXTENT_SIZE, path)
        crc = crc32(raw, crc)
        check_entries(_ENTRY.iter_unpack(raw), first, header, file_size, path, extents)
        pos += len(raw)
    if Int32ul.parse(_read_table_part(pread, pos, CRC_SIZE, path)) != crc:
        raise PancbtError(1, path, "table_crc does not match the extent entries")
    return tuple(extents)


def _read_table_part(pread: Pread, pos: int, n: int, path: str) -> bytes:
    raw = pread(pos, n)
    if len(raw) != n:
        raise PancbtError(3, path, "the table ends past the end of the file (did it shrink?)")
    return raw


def check_entries(  # noqa: PLR0917
    entries: Iterable[tuple[int, int, int, int, int]],
    first: int,
    header: Header,
    file_size: int,
    path: str,
    extents: list[Extent],
) -> None:
    """Rules 4, 5, 6 and 7 for ``entries`` (``(offset, length, data_offset, kind,
    reserved)``, the first is entry ``first``), each one after those already in
    ``extents``, to which it is added.  The valid case is a few comparisons an
    entry (~1 µs); which rule failed is worked out only for an entry that fails
    one (:func:`_entry_error`)."""
    disk_size = header.disk_size
    prev_end = extents[-1].end if extents else 0
    append = extents.append
    data, zero = int(ExtentKind.DATA), int(ExtentKind.ZERO)
    for i, (offset, length, data_offset, kind, reserved) in enumerate(entries, first):
        end = offset + length
        if (
            (offset < prev_end and i)
            or length < 1
            or end > disk_size
            or reserved
            or not (
                (kind == data and data_offset >= HEADER_SIZE and data_offset + length <= file_size)
                or (kind == zero and data_offset == 0)
            )
        ):
            raise _entry_error(
                i, (offset, length, data_offset, kind, reserved), prev_end, header, file_size, path
            )
        append(Extent(offset, length, data_offset, kind))
        prev_end = end


def _entry_error(  # noqa: PLR0917
    i: int,
    entry: tuple[int, int, int, int, int],
    prev_end: int,
    header: Header,
    file_size: int,
    path: str,
) -> PancbtError:
    """The first rule entry ``i`` breaks, in the order rules 4, 5, 6, 7."""
    offset, length, data_offset, kind, reserved = entry
    where = f"extent {i} ({offset}+{length})"
    if i and offset < prev_end:  # rule 4
        return PancbtError(4, path, f"{where} starts before the previous one ends at {prev_end}")
    if length < 1:  # rule 5
        return PancbtError(5, path, f"{where} is empty")
    if offset + length > header.disk_size:
        return PancbtError(5, path, f"{where} ends past disk_size {header.disk_size}")
    if kind == ExtentKind.DATA:  # rule 6
        if data_offset < HEADER_SIZE:
            return PancbtError(6, path, f"{where}: data_offset {data_offset} < 512")
        if data_offset + length > file_size:
            why = f"{where}: data at {data_offset} ends past the {file_size}-byte file"
            return PancbtError(6, path, why)
    elif kind == ExtentKind.ZERO and data_offset != 0:
        return PancbtError(6, path, f"{where}: ZERO extent with data_offset {data_offset}")
    if kind not in (ExtentKind.DATA, ExtentKind.ZERO):  # rule 7
        return PancbtError(7, path, f"{where}: kind {kind} is neither 1 (DATA) nor 2 (ZERO)")
    assert reserved != 0, "an entry that breaks no rule"
    return PancbtError(7, path, f"{where}: reserved bytes are not zero")


def check_base_size(pancbt: Pancbt, base_size: int, path: str) -> None:
    """Rule 8: when ``base_size`` ≠ 0 the base must be exactly that long."""
    want = pancbt.header.base_size
    if want not in (0, base_size):
        raise PancbtError(8, path, f"the base is {base_size} bytes, base_size says {want}")


# --- writing ----------------------------------------------------------------


class DataChange(NamedTuple):
    """New bytes at ``offset`` of the merged image (a DATA extent)."""

    offset: int
    data: bytes


class ZeroChange(NamedTuple):
    """``length`` bytes at ``offset`` that read as zeros (a ZERO extent)."""

    offset: int
    length: int


Change = DataChange | ZeroChange

_SPOOL_MEMORY = 1 << 20  # table bytes kept in memory before the spool goes to disk
_ENTRY_BATCH = 4096


def pack_header(**fields: Any) -> bytes:
    """The 512 header bytes (``header_crc`` computed); omitted fields take their default."""
    return bytes(HEADER.build({"fields": {"value": fields}}))


def pack_entries(extents: Iterable[Extent | tuple[int, int, int, int]]) -> bytes:
    """Extent entries, 32 bytes each, reserved bytes zero."""
    rows = [
        {"offset": o, "length": n, "data_offset": d, "kind": k, "reserved": 0}
        for o, n, d, k in extents
    ]
    return bytes(_ENTRIES_FAST.build(rows, extent_count=len(rows)))


def pack_table(extents: Iterable[Extent | tuple[int, int, int, int]]) -> bytes:
    """A whole table: the entries, then ``table_crc``."""
    entries = pack_entries(extents)
    return bytes(TABLE.build({"entries": entries}, extent_count=len(entries) // EXTENT_SIZE))


def encode_base_hint(text: str) -> bytes:
    """``text`` as UTF-8, cut at a character boundary to fit, NUL-padded to 256 bytes."""
    raw = text.encode("utf-8", "replace")[:BASE_HINT_SIZE]
    raw = raw.decode("utf-8", "ignore").encode("utf-8")
    return raw.ljust(BASE_HINT_SIZE, b"\0")


def write_pancbt(
    out: BinaryIO,
    *,
    disk_size: int,
    block_size: int,
    changes: Iterable[Change],
    base_size: int = 0,
    created: int = 0,
    base_hint: str = "",
) -> Header:
    """Stream a pancbt file into ``out`` (seekable, written from offset 0).

    Data first, then the table, then the header, as pancbt.md's worked
    example lays it out.  ``changes`` is consumed lazily and must be sorted
    and non-overlapping; adjacent changes of one kind are coalesced into one
    extent.  Memory stays bounded: DATA bytes go straight to ``out`` and the
    table is spooled (to disk past 1 MiB) until the data is all written.
    Returns the header written.
    """
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise ValueError(f"block_size {block_size} is not a power of two from 512 to 64 MiB")
    out.seek(0)
    out.write(bytes(HEADER_SIZE))
    pos = HEADER_SIZE  # where the next DATA byte goes
    with _TableSpool() as table:
        pending: Extent | None = None
        for change in changes:
            length = len(change.data) if isinstance(change, DataChange) else change.length
            kind = ExtentKind.DATA if isinstance(change, DataChange) else ExtentKind.ZERO
            start = change.offset
            if length < 1 or start < 0 or start + length > disk_size:
                raise ValueError(f"change {start}+{length} is empty or outside disk_size")
            if pending is not None and start < pending.end:
                raise ValueError(f"change at {start} is before the end of the previous one")
            if isinstance(change, DataChange):
                out.write(change.data)
            if pending is not None and pending.kind == kind and pending.end == start:
                pending = pending._replace(length=pending.length + length)  # coalesce
            else:
                if pending is not None:
                    table.add(pending)
                pending = Extent(start, length, pos if kind == ExtentKind.DATA else 0, kind)
            if kind == ExtentKind.DATA:
                pos += length
        if pending is not None:
            table.add(pending)
        table_offset = pos
        table.copy_to(out)
        count = table.count
    fields = {
        "disk_size": disk_size,
        "base_size": base_size,
        "block_size": block_size,
        "extent_count": count,
        "table_offset": table_offset,
        "created": created,
        "base_hint": encode_base_hint(base_hint),
    }
    raw = pack_header(**fields)
    out.seek(0)
    out.write(raw)
    out.seek(0, 2)
    return parse_header(raw, table_offset + count * EXTENT_SIZE + CRC_SIZE, "(written)")


class _TableSpool:
    """Extent entries written so far, their count and running ``table_crc``."""

    def __init__(self) -> None:
        self._file: Any = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115
        self._batch: list[Extent] = []
        self.count = 0
        self.crc = 0

    def __enter__(self) -> _TableSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def add(self, extent: Extent) -> None:
        self._batch.append(extent)
        if len(self._batch) >= _ENTRY_BATCH:
            self._flush()

    def _flush(self) -> None:
        raw = pack_entries(self._batch)
        self._file.write(raw)
        self.crc = zlib.crc32(raw, self.crc)
        self.count += len(self._batch)
        self._batch = []

    def copy_to(self, out: BinaryIO) -> None:
        """Append the entries, then ``table_crc``, at ``out``'s position."""
        self._flush()
        self._file.seek(0)
        shutil.copyfileobj(self._file, out, 1 << 20)
        out.write(Int32ul.build(self.crc))
