"""Strict XDR primitives (RFC 4506) on top of xdrlib3.

xdrlib3 is lenient where a server must not be: it takes any integer as a
bool, raises three unrelated exception types on short input, and has no
bounded variable-length items.  These subclasses make every decoding failure
one :class:`XdrError`, so the RPC layer can answer ``GARBAGE_ARGS`` for all
of them, and never allocate more than the message holds.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

import xdrlib3

T = TypeVar("T")


class XdrError(Exception):
    """The bytes are not a valid encoding of the expected type."""


class Packer(xdrlib3.Packer):
    """xdrlib3's packer with bounds-checked opaque data."""

    def pack_opaque_max(self, data: bytes, maxlen: int) -> None:
        """``opaque<maxlen>`` / ``string<maxlen>``."""
        if len(data) > maxlen:
            raise XdrError(f"opaque of {len(data)} bytes exceeds {maxlen}")
        self.pack_opaque(data)

    def pack_raw(self, data: bytes) -> None:
        """Bytes already in XDR form (a multiple of 4 long), written as they are."""
        if len(data) & 3:
            raise XdrError(f"raw XDR data of {len(data)} bytes is not 4-byte aligned")
        # An aligned bytes object goes through pack_fopaque without a copy.
        self.pack_fopaque(len(data), data)

    def pack_optional(self, value: T | None, pack_item: Callable[[T], None]) -> None:
        """``T *`` (XDR optional-data)."""
        if value is None:
            self.pack_bool(False)
        else:
            self.pack_bool(True)
            pack_item(value)


class Unpacker(xdrlib3.Unpacker):
    """xdrlib3's unpacker, strict, with one exception type for bad input."""

    def unpack_uint(self) -> int:
        try:
            return super().unpack_uint()
        except (EOFError, struct.error) as e:
            raise XdrError("message too short") from e

    def unpack_int(self) -> int:
        try:
            return super().unpack_int()
        except (EOFError, struct.error) as e:
            raise XdrError("message too short") from e

    unpack_enum = unpack_int

    def unpack_bool(self) -> bool:
        v = self.unpack_uint()
        if v > 1:
            raise XdrError(f"bool must be 0 or 1, got {v}")
        return v == 1

    def unpack_uhyper(self) -> int:
        hi = self.unpack_uint()
        return hi << 32 | self.unpack_uint()

    def unpack_hyper(self) -> int:
        x = self.unpack_uhyper()
        return x - (1 << 64) if x >= 1 << 63 else x

    def unpack_fopaque(self, n: int) -> bytes:
        try:
            return bytes(super().unpack_fopaque(n))
        except (EOFError, ValueError) as e:
            raise XdrError("message too short") from e

    unpack_fstring = unpack_fopaque

    def unpack_opaque(self) -> bytes:
        return self.unpack_fopaque(self.unpack_uint())

    unpack_string = unpack_opaque
    unpack_bytes = unpack_opaque

    def unpack_opaque_view(self) -> memoryview:
        """``opaque<>`` as a view of the message, not a copy (a WRITE's data):
        it keeps the message alive, and the message must not change while it
        is held (a record buffer is never reused: ``nfsd.transport.record``)."""
        n = self.unpack_uint()
        i = self.get_position()
        buf = self.get_buffer()
        end = i + ((n + 3) & ~3)
        if end > len(buf):
            raise XdrError("message too short")
        self.set_position(end)
        return memoryview(buf)[i : i + n]

    def unpack_opaque_max(self, maxlen: int) -> bytes:
        """``opaque<maxlen>`` / ``string<maxlen>``: longer is an error."""
        n = self.unpack_uint()
        if n > maxlen:
            raise XdrError(f"length {n} exceeds the maximum {maxlen}")
        return self.unpack_fopaque(n)

    def unpack_optional(self, unpack_item: Callable[[], T]) -> T | None:
        """``T *`` (XDR optional-data)."""
        return unpack_item() if self.unpack_bool() else None

    def unpack_list(self, unpack_item: Callable[[], T]) -> list[T]:
        out: list[T] = []
        while self.unpack_bool():
            out.append(unpack_item())
        return out

    def unpack_farray(self, n: int, unpack_item: Callable[[], T]) -> list[T]:
        # Every XDR item takes at least 4 bytes: a count larger than what is
        # left cannot be honest, and is refused before looping over it.
        if n * 4 > self.remaining():
            raise XdrError(f"array of {n} items exceeds the message")
        return [unpack_item() for _ in range(n)]

    def unpack_array(self, unpack_item: Callable[[], T]) -> list[T]:
        return self.unpack_farray(self.unpack_uint(), unpack_item)

    def unpack_array_max(self, maxlen: int, unpack_item: Callable[[], T]) -> list[T]:
        """``T<maxlen>``: a longer array is an error."""
        n = self.unpack_uint()
        if n > maxlen:
            raise XdrError(f"array of {n} items exceeds the maximum {maxlen}")
        return self.unpack_farray(n, unpack_item)

    def remaining(self) -> int:
        """Bytes not yet consumed."""
        return len(self.get_buffer()) - self.get_position()

    def done(self) -> None:
        if self.remaining() != 0:
            raise XdrError(f"{self.remaining()} bytes left after the arguments")
