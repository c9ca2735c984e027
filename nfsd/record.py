"""Record marking for RPC over TCP (RFC 5531 §11), sans IO.

A record is one RPC message sent as one or more fragments, each preceded
by a 4-byte big-endian header: the top bit marks the last fragment, the
other 31 bits give the fragment's length.

=================  ==========================================================
state              what the reader holds
=================  ==========================================================
``_buf``           bytes received and not yet consumed
``_frags``         fragments of the record being assembled (last bit unset)
``_size``          their total length, checked against ``max_record``
=================  ==========================================================

A client can claim up to 2 GiB per fragment and chain fragments forever:
the reader never allocates what a header claims.  It only keeps what has
arrived, and raises :class:`RecordTooLarge` as soon as the claimed size of
the record being assembled exceeds ``max_record``, so the transport can
close the connection before reading the rest.
"""

from __future__ import annotations

import struct

LAST_FRAGMENT = 0x80000000
DEFAULT_MAX_RECORD = 1024 * 1024 + 64 * 1024  # a 1 MiB WRITE (refused) still fits


class RecordTooLarge(Exception):
    """The peer announced a record larger than the server accepts."""


class RecordReader:
    """Turns a TCP byte stream into complete RPC records."""

    __slots__ = ("_buf", "_frags", "_size", "max_record")

    def __init__(self, max_record: int = DEFAULT_MAX_RECORD) -> None:
        self.max_record = max_record
        self._buf = bytearray()
        self._frags: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return the records they complete, in order."""
        self._buf += data
        records: list[bytes] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (header,) = struct.unpack_from(">I", buf, pos)
            length = header & ~LAST_FRAGMENT
            if self._size + length > self.max_record:
                raise RecordTooLarge(
                    f"record of at least {self._size + length} bytes exceeds {self.max_record}"
                )
            if len(buf) - pos - 4 < length:
                break
            fragment = bytes(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
            if header & LAST_FRAGMENT:
                if self._frags:
                    self._frags.append(fragment)
                    fragment = b"".join(self._frags)
                    self._frags = []
                    self._size = 0
                records.append(fragment)
            else:
                self._frags.append(fragment)
                self._size += length
        if pos:
            del buf[:pos]
        return records

    @property
    def pending(self) -> int:
        """Bytes held for records not yet complete."""
        return len(self._buf) + self._size


def frame(parts: list[bytes | bytearray | memoryview]) -> list[bytes | bytearray | memoryview]:
    """Prefix a reply, given as buffers, with one last-fragment header."""
    total = sum(len(p) for p in parts)
    return [struct.pack(">I", LAST_FRAGMENT | total), *parts]
