"""xdr.base: the strict XDR primitives every protocol module builds on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit import xdr_strategies as xs
from xdr.base import Packer, Unpacker, XdrError


def packed(fn: Callable[[Packer], None]) -> bytes:
    p = Packer()
    fn(p)
    return p.get_buffer()


SCALARS = [
    ("uint", xs.uint32s),
    ("int", xs.int32s),
    ("enum", xs.int32s),
    ("uhyper", xs.uint64s),
    ("hyper", xs.int64s),
    ("bool", xs.bools),
]


@pytest.mark.parametrize(("kind", "values"), SCALARS, ids=[k for k, _ in SCALARS])
@given(data=st.data())
def test_scalar_roundtrip(kind: str, values: st.SearchStrategy[Any], data: st.DataObject) -> None:
    v = data.draw(values)
    wire = packed(lambda p: getattr(p, f"pack_{kind}")(v))
    assert len(wire) == (8 if "hyper" in kind else 4)
    u = Unpacker(wire)
    assert getattr(u, f"unpack_{kind}")() == v
    u.done()


def test_known_scalars() -> None:
    assert packed(lambda p: p.pack_int(-2)) == bytes.fromhex("fffffffe")
    assert packed(lambda p: p.pack_uhyper(2**32 + 1)) == bytes.fromhex("0000000100000001")
    assert Unpacker(bytes.fromhex("ffffffffffffffff")).unpack_hyper() == -1
    assert Unpacker(bytes.fromhex("ffffffffffffffff")).unpack_uhyper() == 2**64 - 1
    assert Unpacker(bytes.fromhex("80000000")).unpack_int() == -(2**31)


@given(st.integers(2, 2**32 - 1))
def test_bool_other_than_0_or_1_is_refused(v: int) -> None:
    with pytest.raises(XdrError, match="bool"):
        Unpacker(v.to_bytes(4, "big")).unpack_bool()
    with pytest.raises(XdrError):
        Unpacker(v.to_bytes(4, "big")).unpack_optional(Unpacker(b"").unpack_uint)
    with pytest.raises(XdrError):
        Unpacker(v.to_bytes(4, "big")).unpack_list(Unpacker(b"").unpack_uint)


@pytest.mark.parametrize(
    ("name", "call", "wire"),
    [
        ("uint", lambda u: u.unpack_uint(), "000000"),
        ("int", lambda u: u.unpack_int(), ""),
        ("enum", lambda u: u.unpack_enum(), "00"),
        ("bool", lambda u: u.unpack_bool(), "000000"),
        ("uhyper", lambda u: u.unpack_uhyper(), "00000000000000"),
        ("hyper", lambda u: u.unpack_hyper(), "00000000"),
        ("fopaque", lambda u: u.unpack_fopaque(5), "0102030405"),  # padding missing
        ("opaque", lambda u: u.unpack_opaque(), "00000004 010203"),
        ("string", lambda u: u.unpack_string(), "000000"),
        ("opaque_max", lambda u: u.unpack_opaque_max(8), "00000002"),
        ("array", lambda u: u.unpack_array(u.unpack_uint), "00000002 00000001"),
        ("array_max", lambda u: u.unpack_array_max(4, u.unpack_uint), "00000001"),
        ("farray", lambda u: u.unpack_farray(1, u.unpack_uint), "0000"),
        ("list", lambda u: u.unpack_list(u.unpack_uint), "00000001 00000007"),
        ("optional", lambda u: u.unpack_optional(u.unpack_uint), "00000001"),
    ],
)
def test_short_input_is_one_exception_type(name: str, call: Any, wire: str) -> None:
    with pytest.raises(XdrError):
        call(Unpacker(bytes.fromhex(wire)))


def test_fixed_opaque_is_padded() -> None:
    assert packed(lambda p: p.pack_fopaque(3, b"abc")) == b"abc\0"
    u = Unpacker(b"abc\0rest")
    assert u.unpack_fopaque(3) == b"abc"
    assert u.get_position() == 4
    assert u.remaining() == 4


@given(st.binary(max_size=40))
def test_opaque_max_roundtrip(data: bytes) -> None:
    wire = packed(lambda p: p.pack_opaque_max(data, 40))
    assert wire == len(data).to_bytes(4, "big") + data + b"\0" * (-len(data) % 4)
    u = Unpacker(wire)
    assert u.unpack_opaque_max(40) == data
    u.done()


def test_opaque_longer_than_its_bound_is_refused() -> None:
    with pytest.raises(XdrError, match="exceeds"):
        packed(lambda p: p.pack_opaque_max(b"12345", 4))
    with pytest.raises(XdrError, match="exceeds"):
        Unpacker(bytes.fromhex("00000005 3132333435000000")).unpack_opaque_max(4)


def test_array_longer_than_its_bound_is_refused() -> None:
    wire = bytes.fromhex("00000003 00000001 00000002 00000003")
    u = Unpacker(wire)
    assert u.unpack_array_max(3, u.unpack_uint) == [1, 2, 3]
    u = Unpacker(wire)
    with pytest.raises(XdrError, match="maximum"):
        u.unpack_array_max(2, u.unpack_uint)


@pytest.mark.parametrize("count", [2**32 - 1, 2**31, 1000])
def test_huge_counts_are_refused_without_allocating(count: int) -> None:
    wire = count.to_bytes(4, "big") + bytes(16)
    u, v = Unpacker(wire), Unpacker(wire)
    xs.check_refused_without_allocating(lambda: u.unpack_array(u.unpack_uint), v.unpack_opaque)


@given(st.lists(xs.uint32s, max_size=10), st.none() | xs.uint32s)
def test_list_and_optional_roundtrip(items: list[int], opt: int | None) -> None:
    p = Packer()
    p.pack_list(items, p.pack_uint)
    p.pack_optional(opt, p.pack_uint)
    wire = p.get_buffer()
    assert len(wire) == 4 + 8 * len(items) + (8 if opt is not None else 4)
    u = Unpacker(wire)
    assert u.unpack_list(u.unpack_uint) == items
    assert u.unpack_optional(u.unpack_uint) == opt
    u.done()


def test_done_refuses_trailing_bytes() -> None:
    u = Unpacker(bytes(8))
    u.unpack_uint()
    with pytest.raises(XdrError, match="4 bytes left"):
        u.done()


@given(st.binary(max_size=64).map(lambda b: b[: len(b) - len(b) % 4]))
def test_pack_raw_writes_aligned_bytes_as_they_are(data: bytes) -> None:
    p = Packer()
    p.pack_uint(7)
    p.pack_raw(data)
    assert p.get_buffer() == b"\0\0\0\x07" + data


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_pack_raw_refuses_unaligned_bytes(size: int) -> None:
    with pytest.raises(XdrError, match="aligned"):
        packed(lambda p: p.pack_raw(bytes(size)))


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_unpacker_reads_other_buffers_as_bytes(kind: type) -> None:
    u = Unpacker(kind(bytes.fromhex("00000003 61626300")))
    value = u.unpack_opaque()
    assert value == b"abc"
    assert type(value) is bytes
