"""Record marking for RPC over TCP (RFC 5531 §11), sans IO.

A record is one RPC message sent as one or more fragments, each preceded
by a 4-byte big-endian header: the top bit marks the last fragment, the
other 31 bits give the fragment's length.

=================  ==========================================================
state              what the reader holds
=================  ==========================================================
``_buf``           bytes received and not yet consumed
``_part``          the fragments of the record being assembled (last bit
                   unset), joined as they arrive: its length is checked
                   against ``max_record``
``_count``         how many fragments it holds, checked against
                   ``max_fragments``
``_need``          bytes of a large fragment (``STRAIGHT_MIN`` or more) not
                   yet received: they go straight into ``_part``
``_free``          bytes at the end of ``_part`` allocated for them and not
                   yet filled (``_part`` grows as they arrive)
``_last``          whether that fragment ends the record
=================  ==========================================================

A large fragment (a 1 MiB WRITE) is not built by concatenation: once its
header is read, its bytes are received straight into the record's buffer
(:meth:`RecordReader.space`, then :meth:`RecordReader.filled`), and the
complete record is that buffer, handed out as it is (a ``bytearray``
never touched again by the reader: a fresh one starts the next record, so
a view of a record, such as a WRITE's data, stays valid for as long as it
is held).  Smaller records are ``bytes``.  The buffer grows as the bytes
arrive, at most doubling (never more than ``STRAIGHT_MIN`` past twice what
arrived, never past the fragment): what a header claims is still not
allocated up front, and ``pending`` counts only what arrived.

With nothing held from before, the complete records of one last fragment
each are cut in one C call (``nfsd._fastcall.cut_records``, whose twin is
:func:`cut_records_py`); the loop of :meth:`RecordReader.feed` takes what
it stops at (a fragment that does not end its record, a large or
incomplete one, one too large), as it does every record without the
extension.

A client can claim up to 2 GiB per fragment and chain fragments forever:
the reader never allocates what a header claims.  It only keeps what has
arrived, and raises :class:`RecordTooLarge` as soon as the claimed size of
the record being assembled exceeds ``max_record``, so the transport can
close the connection before reading the rest.  Fragments are copied into
one buffer rather than kept as objects (a million 1-byte fragments would
cost 40 bytes each), and their number is capped: zero-length fragments
are legal (RFC 5531 §11) and add nothing to the size, so without the cap a
client could send them forever without completing a record.  pynfs sends a
1 MiB WRITE as about 513 fragments; the cap is far above that.
"""

from __future__ import annotations

import struct
from collections.abc import Sized
from typing import TypeVar

from nfsd.native import fastcall

LAST_FRAGMENT = 0x80000000
_HEADER = struct.Struct(">I")
_P = TypeVar("_P", bound=Sized)
DEFAULT_MAX_RECORD = 1024 * 1024 + 64 * 1024  # a 1 MiB WRITE (refused) still fits
DEFAULT_MAX_FRAGMENTS = 8192
STRAIGHT_MIN = 64 * 1024  # a fragment this large is received into the record's buffer
_ZEROS = memoryview(bytes(1 << 20))  # what a record's buffer grows by, a slice of it


class RecordTooLarge(Exception):
    """The peer announced a record larger than the server accepts."""


class RecordReader:
    """Turns a TCP byte stream into complete RPC records."""

    __slots__ = (
        "_buf",
        "_count",
        "_free",
        "_last",
        "_need",
        "_part",
        "max_fragments",
        "max_record",
    )

    def __init__(
        self, max_record: int = DEFAULT_MAX_RECORD, max_fragments: int = DEFAULT_MAX_FRAGMENTS
    ) -> None:
        self.max_record = max_record
        self.max_fragments = max_fragments
        self._buf = bytearray()
        self._part = bytearray()
        self._count = 0
        self._need = 0
        self._free = 0
        self._last = False

    def space(self) -> memoryview | None:
        """Where the next bytes received belong, while a large fragment is
        being received (None otherwise): a view of the record's buffer, to
        be released before :meth:`filled` says how much of it was filled."""
        need = self._need
        if not need:
            return None
        part = self._part
        if not self._free:
            held = len(part)
            grow = min(need, max(held, STRAIGHT_MIN), len(_ZEROS))
            part += _ZEROS[:grow]
            self._free = grow
        end = len(part) - self._free
        return memoryview(part)[end : end + min(self._free, need)]

    def filled(self, n: int) -> list[bytes | bytearray]:
        """``n`` bytes were received into :meth:`space`: the record they
        complete, if they do (a record of one large last fragment, or ending
        with one)."""
        self._need -= n
        self._free -= n
        if self._need or not self._last:
            return []
        return [self._take()]

    def _take(self) -> bytes | bytearray:
        """The record assembled in ``_part``, a new one begun."""
        part = self._part
        record: bytes | bytearray = part if len(part) >= STRAIGHT_MIN else bytes(part)
        self._part = bytearray()
        self._count = 0
        self._last = False
        return record

    def _absorb(self, view: memoryview, records: list[bytes | bytearray]) -> int:
        """Copy the start of ``view`` into the large fragment being received;
        how many bytes it took."""
        taken = 0
        while self._need and taken < len(view):
            space = self.space()
            assert space is not None
            with space:
                n = min(len(space), len(view) - taken)
                space[:n] = view[taken : taken + n]
            taken += n
            records.extend(self.filled(n))
        return taken

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | bytearray]:
        """Add received bytes; return the records they complete, in order.

        With nothing held from before (the common case: a read that ends on
        a record boundary), records are cut straight from ``data``, and
        only an incomplete tail is kept.
        """
        records: list[bytes | bytearray] = []
        if self._need:
            with memoryview(data) as whole:
                taken = self._absorb(whole, records)
                if taken == len(whole):
                    return records
                data = whole[taken:].tobytes()  # the rare case: a TLS or test feed
        buf = self._buf
        if buf or self._count:
            buf += data
            src: bytes | bytearray | memoryview = buf
        else:
            src = data
        pos = 0
        end = len(src)
        with memoryview(src) as view:  # released before ``buf`` is resized
            if fastcall is not None and not self._count:
                # No fragment held: the common records in one C call; the loop
                # below (their twin, as ``cut_records_py`` is) takes the rest.
                cut, pos = fastcall.cut_records(view, 0, self.max_record)
                records += cut
            while end - pos >= 4:
                (header,) = _HEADER.unpack_from(view, pos)
                length = header & ~LAST_FRAGMENT
                size = len(self._part) + length
                if size > self.max_record:
                    raise RecordTooLarge(
                        f"record of at least {size} bytes exceeds {self.max_record}"
                    )
                if end - pos - 4 < length:
                    if length >= STRAIGHT_MIN:
                        self._straight(header, view[pos + 4 : end])
                        pos = end
                    break
                start = pos + 4
                pos = start + length
                if not header & LAST_FRAGMENT:
                    self._one_more()
                    self._part += view[start:pos]
                elif self._count:
                    self._part += view[start:pos]
                    records.append(self._take())
                else:
                    # One copy, not two (a bytearray slice, then bytes of it): for a
                    # 1 MiB WRITE, 961 -> 657 µs of CPU a record fed in 64 KiB reads.
                    records.append(view[start:pos].tobytes())
            if src is not buf and pos < end:
                buf += view[pos:]  # the start of a record: kept for the next read
        if src is buf and pos:
            del buf[:pos]
        return records

    def _straight(self, header: int, body: memoryview) -> None:
        """A large fragment begins with ``body``: the rest of it will be
        received straight into ``_part`` (its size already checked)."""
        if not header & LAST_FRAGMENT:
            self._one_more()
        self._part += body
        self._need = (header & ~LAST_FRAGMENT) - len(body)
        self._last = bool(header & LAST_FRAGMENT)

    def _one_more(self) -> None:
        """Count a fragment that does not end its record, against ``max_fragments``."""
        self._count += 1
        if self._count >= self.max_fragments:
            raise RecordTooLarge(f"record of more than {self.max_fragments} fragments")

    @property
    def pending(self) -> int:
        """Bytes held for records not yet complete."""
        held = len(self._buf) + len(self._part) - self._free
        # A fragment received straight still counts its header, as it did
        # when held in ``_buf``: ``max_buffered`` bites exactly as before.
        return held + 4 if self._need else held

    @property
    def begun(self) -> bool:
        """Whether a record is begun and not complete, even one that holds no
        byte yet (empty fragments): the transport times it from its start."""
        return bool(self._buf or self._count or self._need)


def cut_records_py(
    data: bytes | bytearray | memoryview, pos: int, max_record: int
) -> tuple[list[bytes], int]:
    """The complete records of one last fragment each from ``pos`` of ``data``,
    as bytes, up to the first that is not one (a fragment that does not end
    its record, one over ``max_record`` bytes, one not all there); and the
    offset where it stopped.  The twin of ``nfsd._fastcall.cut_records``."""
    records = []
    end = len(data)
    with memoryview(data) as view:
        while end - pos >= 4:
            (header,) = _HEADER.unpack_from(view, pos)
            length = header & ~LAST_FRAGMENT
            if not header & LAST_FRAGMENT or length > max_record or end - pos - 4 < length:
                break
            records.append(view[pos + 4 : pos + 4 + length].tobytes())
            pos += 4 + length
    return records, pos


def frame(parts: list[_P]) -> list[bytes | _P]:
    """Prefix a reply, given as parts (buffers, or ``nfsd.rpc.FileRun``: anything
    with a length), with one last-fragment header."""
    total = sum(map(len, parts))
    return [_HEADER.pack(LAST_FRAGMENT | total), *parts]
