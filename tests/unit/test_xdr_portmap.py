"""xdr.portmap: port mapper v2 and rpcbind v3/v4 (RFC 1833) types, both directions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit import xdr_strategies as xs
from xdr import portmap as pm
from xdr.base import XdrError
from xdr.portmap import PortmapPacker, PortmapUnpacker

enc, dec, known = xs.codec(PortmapPacker, PortmapUnpacker)


(
    test_roundtrip,
    test_truncated_encoding_is_refused,
    test_every_type_has_pack_unpack_and_a_strategy,
) = xs.protocol_tests(PortmapPacker, PortmapUnpacker, xs.PORTMAP_TYPES)


def test_constants() -> None:
    assert (pm.PMAP_PROG, pm.PMAP_VERS, pm.PMAP_PORT) == (100000, 2, 111)
    assert (pm.IPPROTO_TCP, pm.IPPROTO_UDP) == (6, 17)
    procs = [pm.PMAPPROC_NULL, pm.PMAPPROC_SET, pm.PMAPPROC_UNSET, pm.PMAPPROC_GETPORT]
    assert [*procs, pm.PMAPPROC_DUMP, pm.PMAPPROC_CALLIT] == list(range(6))
    assert (pm.RPCBPROG, pm.RPCBVERS, pm.RPCBVERS4) == (100000, 3, 4)
    assert (pm.RPCBPROC_SET, pm.RPCBPROC_UNSET, pm.RPCBPROC_GETADDR, pm.RPCBPROC_DUMP) == (
        1,
        2,
        3,
        4,
    )
    assert (pm.RPCBPROC_GETVERSADDR, pm.RPCBPROC_GETSTAT) == (9, 12)


def test_known_mapping() -> None:
    mp = pm.mapping(100003, 3, pm.IPPROTO_TCP, 2049)
    wire = bytes.fromhex("000186a3 00000003 00000006 00000801")
    known("mapping", mp, wire)


def test_known_pmaplist() -> None:
    maps = [pm.mapping(100000, 2, 17, 111), pm.mapping(100005, 3, 6, 20048)]
    wire = bytes.fromhex(
        "00000001 000186a0 00000002 00000011 0000006f"
        "00000001 000186a5 00000003 00000006 00004e50"
        "00000000"
    )
    known("pmaplist", maps, wire)
    assert enc("pmaplist", []) == bytes(4)


def test_known_rpcb() -> None:
    r = pm.rpcb(100003, 3, b"tcp", b"0.0.0.0.8.1", b"superuser")
    wire = bytes.fromhex(
        "000186a3 00000003  00000003 74637000  0000000b 302e302e302e302e382e3100"
        "00000009 7375706572757365 72000000"
    )
    known("rpcb", r, wire)


def test_known_rpcblist() -> None:
    r = pm.rpcb(1, 2, b"", b"", b"")
    wire = bytes.fromhex("00000001 00000001 00000002 00000000 00000000 00000000 00000000")
    assert enc("rpcblist", [r]) == wire
    assert dec("rpcblist", wire) == [r]


@given(st.integers(2, 2**32 - 1))
def test_list_bool_other_than_0_or_1_is_refused(v: int) -> None:
    with pytest.raises(XdrError):
        dec("pmaplist", v.to_bytes(4, "big") + bytes(16))
    with pytest.raises(XdrError):
        dec("rpcblist", v.to_bytes(4, "big") + bytes(20))


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("rpcb", "00000001 00000002"),  # r_netid
        ("call_args", "00000001 00000002 00000003"),  # args
        ("rpcb_rmtcallres", ""),  # addr
    ],
)
def test_huge_length_is_refused_without_allocating(name: str, prefix: str) -> None:
    wire = bytes.fromhex(prefix + "ffffffff") + bytes(16)
    xs.check_refused_without_allocating(lambda: dec(name, wire))
