"""xdr.rpc: ONC-RPC v2 call and reply headers (RFC 5531)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit import xdr_strategies as xs
from xdr import rpc
from xdr.base import XdrError
from xdr.rpc import RpcPacker, RpcUnpacker

test_roundtrip, test_truncated_encoding_is_refused, _ = xs.protocol_tests(
    RpcPacker, RpcUnpacker, xs.RPC_TYPES
)


def _call(xid: int, body: rpc.call_body) -> bytes:
    p = RpcPacker()
    p.pack_call_header(xid, body)
    return p.get_buffer()


@given(xs.uint32s, xs.call_bodies)
def test_call_header_roundtrip(xid: int, body: rpc.call_body) -> None:
    u = RpcUnpacker(_call(xid, body))
    assert u.unpack_uint() == xid
    assert u.unpack_enum() == rpc.CALL
    assert u.unpack_call_body() == body
    u.done()


@given(xs.uint32s, xs.call_bodies, st.data())
def test_truncated_call_header_is_refused(
    xid: int, body: rpc.call_body, data: st.DataObject
) -> None:
    wire = _call(xid, body)
    cut = data.draw(st.integers(8, len(wire) - 1))
    with pytest.raises(XdrError):
        RpcUnpacker(wire[8:cut]).unpack_call_body()


def test_known_call_with_auth_sys() -> None:
    cred = RpcPacker()
    cred.pack_authsys_parms(rpc.authsys_parms(0x11223344, b"host", 1000, 100, [100, 27]))
    body = rpc.call_body(
        2, 100003, 3, 1, rpc.opaque_auth(rpc.AUTH_SYS, cred.get_buffer()), rpc.NULL_AUTH
    )
    wire = bytes.fromhex(
        "deadbeef 00000000 00000002 000186a3 00000003 00000001"
        "00000001 00000020"  # AUTH_SYS, 32 bytes of authsys_parms:
        "11223344 00000004 686f7374 000003e8 00000064 00000002 00000064 0000001b"
        "00000000 00000000"  # AUTH_NONE verifier
    )
    assert _call(0xDEADBEEF, body) == wire
    u = RpcUnpacker(wire[8:])
    got = u.unpack_call_body()
    assert got == body
    assert RpcUnpacker(got.cred.body).unpack_authsys_parms().gids == [100, 27]


def _reply(pack: Any) -> RpcUnpacker:
    p = RpcPacker()
    pack(p)
    return RpcUnpacker(p.get_buffer())


def test_accepted_reply_header() -> None:
    u = _reply(lambda p: p.pack_accepted_header(7, rpc.NULL_AUTH, rpc.SUCCESS))
    assert u.get_buffer() == bytes.fromhex("00000007 00000001 00000000 00000000 00000000 00000000")
    assert u.unpack_reply_header() == (7, rpc.MSG_ACCEPTED, rpc.SUCCESS)
    u.done()


def test_prog_mismatch_reply() -> None:
    u = _reply(lambda p: p.pack_prog_mismatch(9, 3, 3))
    assert u.unpack_reply_header() == (9, rpc.MSG_ACCEPTED, rpc.PROG_MISMATCH)
    assert (u.unpack_uint(), u.unpack_uint()) == (3, 3)
    u.done()


def test_rpc_mismatch_reply() -> None:
    u = _reply(lambda p: p.pack_rpc_mismatch(1))
    assert u.get_buffer() == bytes.fromhex("00000001 00000001 00000001 00000000 00000002 00000002")
    assert u.unpack_reply_header() == (1, rpc.MSG_DENIED, rpc.RPC_MISMATCH)


def test_auth_error_reply() -> None:
    u = _reply(lambda p: p.pack_auth_error(2, rpc.AUTH_TOOWEAK))
    assert u.unpack_reply_header() == (2, rpc.MSG_DENIED, rpc.AUTH_ERROR)
    assert u.unpack_enum() == rpc.AUTH_TOOWEAK
    u.done()


def test_a_call_is_not_a_reply() -> None:
    with pytest.raises(XdrError, match="not a reply"):
        RpcUnpacker(
            _call(1, rpc.call_body(2, 1, 1, 0, rpc.NULL_AUTH, rpc.NULL_AUTH))
        ).unpack_reply_header()


def test_bounds() -> None:
    with pytest.raises(XdrError):
        RpcPacker().pack_opaque_auth(rpc.opaque_auth(rpc.AUTH_SYS, bytes(401)))
    with pytest.raises(XdrError):
        RpcPacker().pack_authsys_parms(rpc.authsys_parms(0, b"h" * 256, 0, 0, []))
    with pytest.raises(XdrError):
        RpcPacker().pack_authsys_parms(rpc.authsys_parms(0, b"h", 0, 0, list(range(17))))
    with pytest.raises(XdrError, match="exceeds"):
        RpcUnpacker(
            (1).to_bytes(4, "big") + (401).to_bytes(4, "big") + bytes(404)
        ).unpack_opaque_auth()
    seventeen = bytes.fromhex("00000000 00000000 00000000 00000000 00000011") + bytes(68)
    with pytest.raises(XdrError, match="maximum"):
        RpcUnpacker(seventeen).unpack_authsys_parms()
