"""decode_call (the fast path) agrees with the RpcUnpacker it stands in for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xdr.base import XdrError
from xdr.rpc import (
    AUTH_BADCRED,
    CALL,
    BadAuthLength,
    RpcPacker,
    RpcUnpacker,
    call_body,
    decode_call,
    opaque_auth,
)

u32 = st.integers(0, 2**32 - 1)
auth = st.builds(opaque_auth, st.integers(0, 10), st.binary(max_size=400))
bodies = st.builds(call_body, u32, u32, u32, u32, auth, auth)


@given(xid=u32, body=bodies, args=st.binary(max_size=64))
def test_decode_call_matches_the_unpacker(xid: int, body: call_body, args: bytes) -> None:
    p = RpcPacker()
    p.pack_call_header(xid, body)
    record = p.get_buffer() + args
    got_xid, mtype, got, at = decode_call(record)
    u = RpcUnpacker(record)
    assert (u.unpack_uint(), u.unpack_enum()) == (got_xid, mtype) == (xid, CALL)
    assert u.unpack_call_body() == got == body
    assert at == u.get_position()
    assert record[at:] == args


@given(xid=u32, body=bodies, cut=st.integers(0, 1000))
def test_any_truncated_header_is_an_xdr_error(xid: int, body: call_body, cut: int) -> None:
    p = RpcPacker()
    p.pack_call_header(xid, body)
    record = p.get_buffer()
    cut = cut % len(record)
    with pytest.raises(XdrError):
        decode_call(record[:cut])


def test_an_overlong_credential_is_a_bad_auth_length_naming_xid_and_stat() -> None:
    record = b"\0\0\0\7" + bytes(20) + b"\0\0\0\1" + (401).to_bytes(4, "big") + bytes(500)
    with pytest.raises(BadAuthLength) as e:
        decode_call(record)
    assert (e.value.xid, e.value.stat) == (7, AUTH_BADCRED)
